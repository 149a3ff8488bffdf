// The dirty-page log of a live migration (QEMU docs/interop/vhost-user.rst, "Migration" and
// VHOST_USER_SET_LOG_BASE): a bitmap in memory the front-end shares, one bit per 4 KiB page of
// guest physical address space (bit `page % 8` of byte `page / 8`). While VHOST_F_LOG_ALL is
// negotiated, the back-end sets the bit of every page it writes — buffers it fills and, for
// rings whose SET_VRING_ADDR carried VHOST_VRING_F_LOG, the used ring — and the front-end
// copies those pages again. The front-end clears bits as it syncs, concurrently, so every
// update is an atomic OR.
//
// The log is a memory::region (what the transport made of SET_LOG_BASE's fd: an mmap over a
// UNIX socket, a window of the BAR over VVU) read as that bitmap. A page past the log's end is
// the front-end's error (its log is too small for its memory): it cannot be marked, and is
// counted instead (missed()).
#pragma once

#include <vvu/memory/region.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace vvu::memory {

class dirty_log {
public:
    static constexpr std::uint64_t page_size = 0x1000; // VHOST_LOG_PAGE
    // A log larger than this is refused: it would cover 2^47 bytes (128 TiB) of guest memory.
    static constexpr std::uint64_t max_bytes = std::uint64_t{1} << 32;

    // A log over `r`'s bytes (region::map of SET_LOG_BASE's fd at its offset and size). The
    // region stays mapped while the log lives.
    explicit dirty_log(region r) noexcept : region_(std::move(r)) {}

    // Marks the pages of [gpa, gpa + len) dirty (len 0: none).
    void mark(std::uint64_t gpa, std::uint64_t len) const noexcept {
        if (len == 0) return;
        const std::uint64_t first = gpa / page_size;
        // A range that wraps 2^64 ends at the last page.
        const std::uint64_t last = (gpa + (len - 1) < gpa ? UINT64_MAX : gpa + (len - 1)) / page_size;
        for (std::uint64_t page = first;; ++page) {
            if (page / 8 >= region_.size()) {
                missed_.fetch_add(last - page + 1, std::memory_order_relaxed);
                return;
            }
            const auto bit = static_cast<std::uint8_t>(1u << (page % 8));
            std::atomic_ref<std::uint8_t> byte(*reinterpret_cast<std::uint8_t*>(region_.host() + page / 8));
            // Always the RMW, never "load, and skip when set": the front-end may clear the bit
            // between such a load and our data reaching memory, and then copy the page stale.
            // RELEASE: the data written before is visible to whoever sees the bit.
            byte.fetch_or(bit, std::memory_order_release);
            if (page == last) return;
        }
    }

    // Is the page of `gpa` marked? (tests, the front-end's reading of the log)
    [[nodiscard]] bool marked(std::uint64_t gpa) const noexcept {
        const std::uint64_t page = gpa / page_size;
        if (page / 8 >= region_.size()) return false;
        std::atomic_ref<std::uint8_t> byte(*reinterpret_cast<std::uint8_t*>(region_.host() + page / 8));
        return (byte.load(std::memory_order_relaxed) >> (page % 8)) & 1u;
    }

    // Guest memory the log covers: [0, covered()).
    [[nodiscard]] std::uint64_t covered() const noexcept { return region_.size() * 8 * page_size; }
    // Pages that could not be marked because they lie past the log's end.
    [[nodiscard]] std::uint64_t missed() const noexcept { return missed_.load(std::memory_order_relaxed); }
    [[nodiscard]] const region& mapped() const noexcept { return region_; }

private:
    region region_;
    mutable std::atomic<std::uint64_t> missed_{0};
};

} // namespace vvu::memory
