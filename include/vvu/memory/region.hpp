// One mapped region of the front-end's memory (a SET_MEM_TABLE / ADD_MEM_REG entry, or any
// other area a front-end shares by fd: the dirty log of SET_LOG_BASE), and the rules mmap puts
// on mapping it (QEMU docs/interop/vhost-user.rst, "Memory region description").
#pragma once

#include <vvu/memory/error.hpp>
#include <vvu/memory/mapping.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/payload.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace vvu::memory {

// Where a region's bytes live in the file and how much to map so that mmap's alignment rules
// hold: mmap wants a page-aligned file offset, and on hugetlbfs a length that is a multiple
// of the huge page size. The region's first byte is at `delta` into the mapping.
struct map_window {
    std::uint64_t file_offset = 0; // mmap_offset rounded down to the page size
    std::uint64_t length = 0;      // delta + memory_size rounded up to the page size
    std::uint64_t delta = 0;       // mmap_offset - file_offset
    friend constexpr bool operator==(const map_window&, const map_window&) = default;
};

// `page` must be a power of two. nullopt when the rounded length overflows 64 bits.
[[nodiscard]] constexpr std::optional<map_window> window_for(std::uint64_t mmap_offset, std::uint64_t size,
                                                             std::uint64_t page) noexcept {
    const std::uint64_t file_offset = mmap_offset & ~(page - 1);
    const std::uint64_t delta = mmap_offset - file_offset;
    if (size > UINT64_MAX - delta) return std::nullopt;
    const std::uint64_t end = delta + size;
    if (end > UINT64_MAX - (page - 1)) return std::nullopt;
    return map_window{file_offset, (end + page - 1) & ~(page - 1), delta};
}

// The page size mmap must respect for `fd`: the huge page size for a hugetlbfs file
// (fstatfs f_bsize when f_type is HUGETLBFS_MAGIC), the system page size otherwise.
[[nodiscard]] expected<std::uint64_t, error> page_size_of(int fd) noexcept;

class region {
public:
    region() = default;
    // A region whose bytes are at `host`, kept alive by `keepalive` (for a transport that maps
    // memory its own way, e.g. a BAR window).
    region(const wire::memory_region& desc, std::byte* host, std::shared_ptr<const void> keepalive) noexcept
        : desc_(desc), host_(host), keepalive_(std::move(keepalive)) {}

    // Maps a region the front-end shared by fd: MAP_SHARED, read/write, from the page-aligned
    // file offset below mmap_offset, length rounded to the (huge) page size. Takes ownership
    // of `fd`: it is closed with the mapping (and kept open until then, so that a live update
    // can hand it on). Refuses an fd whose file is smaller than mmap_offset + memory_size.
    // `prefault`: fill the page tables now (MAP_POPULATE) — a live update maps the memory
    // before the old process pauses, so the rings' first touches in the new process cost no
    // page faults during the outage.
    [[nodiscard]] static expected<region, error> map(const wire::memory_region& desc, unique_fd fd, bool prefault = false);

    [[nodiscard]] const wire::memory_region& desc() const noexcept { return desc_; }
    [[nodiscard]] std::uint64_t guest_phys_addr() const noexcept { return desc_.guest_phys_addr; }
    [[nodiscard]] std::uint64_t userspace_addr() const noexcept { return desc_.userspace_addr; }
    [[nodiscard]] std::uint64_t size() const noexcept { return desc_.memory_size; }
    [[nodiscard]] std::byte* host() const noexcept { return host_; }
    // The region's fd (-1 when the region is not fd-backed); still owned by the region.
    [[nodiscard]] int fd() const noexcept { return fd_ != nullptr ? fd_->get() : -1; }

    // Pointer to [off, off + len) of the region, or nullptr when that leaves the region.
    [[nodiscard]] std::byte* at(std::uint64_t off, std::uint64_t len) const noexcept {
        if (!range_within(off, len, desc_.memory_size)) return nullptr;
        return host_ + off;
    }
    [[nodiscard]] bool contains_gpa(std::uint64_t a) const noexcept {
        return a >= desc_.guest_phys_addr && a - desc_.guest_phys_addr < desc_.memory_size;
    }

private:
    wire::memory_region desc_{};
    std::byte* host_ = nullptr;
    std::shared_ptr<const void> keepalive_;
    const unique_fd* fd_ = nullptr; // inside *keepalive_ when made by map()
};

} // namespace vvu::memory
