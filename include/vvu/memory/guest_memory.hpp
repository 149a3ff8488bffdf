// The front-end's memory as the back-end sees it: a table of mapped regions built from
// SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG (QEMU docs/interop/vhost-user.rst, "Memory
// region description", "VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS"), and translation of
// guest physical addresses (descriptors) and front-end virtual addresses (SET_VRING_ADDR).
//
//   region       one mapped front-end region: its description, where it is mapped here, and
//                shared ownership of whatever keeps it mapped (fd + mmap for the UNIX
//                transport, a BAR window for VVU). Cheap to copy.
//   guest_memory an immutable, validated table of regions (no overlap, within max_slots).
//   view         a ring's handle on one table: a memory policy (ring/memory_policy.hpp) with
//                a last-hit cache; one per ring thread.
//
// Replacement contract ("a new table replaces the old one only once the rings stopped using
// it"): a guest_memory never changes after it is built. SET_MEM_TABLE builds a new one;
// ADD_MEM_REG / REM_MEM_REG build a new one from the current one (`with` / `without`), sharing
// the mappings of the regions that stay. The state machine publishes the new
// shared_ptr<const guest_memory>; each ring thread keeps the snapshot it was given (in its
// `view`) and takes the new one only at a point where it holds no translated pointer
// (between bursts, or when the ring is stopped). A mapping is unmapped, and its fd closed, when
// the last table and view holding it are gone — so a ring can never see memory vanish under
// it, and a removed region stays mapped exactly as long as somebody may still use it.
//
// Dirty-page logging (SET_LOG_BASE, memory/dirty_log.hpp): a view may carry the session's log;
// the rings then log what they write through it (ring/memory_policy.hpp, write_logging_policy).
#pragma once

#include <vvu/memory/dirty_log.hpp>
#include <vvu/memory/error.hpp>
#include <vvu/memory/region.hpp>
#include <vvu/ring/memory_policy.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/payload.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace vvu::memory {

class guest_memory {
    struct private_tag {};

public:
    using ptr = std::shared_ptr<const guest_memory>;
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    // What GET_MAX_MEM_SLOTS reports. 509 is libvhost-user's limit and KVM's user memory slot
    // count on x86, so a front-end that works with an in-kernel vhost works here too; each
    // slot holds one fd, and 509 stays well below the default RLIMIT_NOFILE of 1024.
    static constexpr std::size_t max_slots = 509;
    // SET_MEM_TABLE carries at most this many regions (VHOST_MEMORY_BASELINE_NREGIONS).
    static constexpr std::size_t max_table_regions = wire::memory_table::max_regions;

    // An empty table (before SET_MEM_TABLE: every translation fails).
    [[nodiscard]] static ptr empty();
    // Validates and takes a set of already mapped regions (any order): no overlap in guest
    // physical addresses, no empty or wrapping region, at most max_slots.
    [[nodiscard]] static expected<ptr, error> make(std::vector<region> regions);
    // SET_MEM_TABLE: maps table.regions[i] with fds[i] (one fd per region, taken over; fds
    // left in the span are empty afterwards, whether or not it succeeds).
    [[nodiscard]] static expected<ptr, error> from_table(const wire::memory_table& table, std::span<unique_fd> fds);

    // ADD_MEM_REG: a new table with this one's regions and `r`.
    [[nodiscard]] expected<ptr, error> with(region r) const;
    // REM_MEM_REG: a new table without the region whose guest_phys_addr, memory_size and
    // userspace_addr match `desc` (mmap_offset is not compared: the spec identifies a region by
    // its addresses, and some front-ends send 0 there).
    [[nodiscard]] expected<ptr, error> without(const wire::memory_region& desc) const;

    // Guest physical address -> local pointer to len bytes inside ONE region, or nullptr
    // (the ring memory policy: len 0 is fine at any address in a region or one past its end;
    // a range that wraps 2^64 or crosses a region's end fails, even into an adjacent region).
    [[nodiscard]] std::byte* translate(std::uint64_t gpa, std::uint64_t len) const noexcept {
        const std::size_t i = locate(gpa);
        return i == npos ? nullptr : regions_[i].at(gpa - regions_[i].guest_phys_addr(), len);
    }
    // Front-end virtual address (SET_VRING_ADDR's desc/used/avail) -> local pointer, same rules.
    [[nodiscard]] std::byte* translate_user(std::uint64_t uaddr, std::uint64_t len) const noexcept;
    // Front-end virtual address -> guest physical address (nullopt when in no region).
    [[nodiscard]] std::optional<std::uint64_t> user_to_guest(std::uint64_t uaddr) const noexcept;

    // Index of the region that contains gpa or ends exactly at it (then len 0 is the only
    // translation that can succeed), npos when none. Regions are sorted by guest_phys_addr;
    // where one region ends and the next begins, the next one is chosen.
    [[nodiscard]] std::size_t locate(std::uint64_t gpa) const noexcept;

    [[nodiscard]] std::span<const region> regions() const noexcept { return regions_; }
    [[nodiscard]] std::size_t size() const noexcept { return regions_.size(); }
    [[nodiscard]] bool empty_table() const noexcept { return regions_.empty(); }

    // Public for make_shared only.
    guest_memory(private_tag, std::vector<region> sorted) noexcept : regions_(std::move(sorted)) {}

private:
    std::vector<region> regions_; // sorted by guest_phys_addr, non-overlapping
};

static_assert(ring::memory_policy<const guest_memory>);

// A ring thread's handle on a guest_memory snapshot: the memory policy the rings are
// instantiated with. Holds the table alive, remembers the region of the last hit (descriptors
// of one burst almost always fall in the same region). Not shared between threads.
class view {
public:
    view() : mem_(guest_memory::empty()) {}
    explicit view(guest_memory::ptr mem) noexcept : mem_(std::move(mem)) {}

    // Inlined into the rings' descriptor walks (the compiler left it out of line in the packed
    // one, a call per descriptor); a miss on the last region takes the out-of-line search.
    [[gnu::always_inline]] std::byte* translate(std::uint64_t gpa, std::uint64_t len) noexcept {
        const auto regions = mem_->regions();
        if (last_ < regions.size()) {
            const region& r = regions[last_];
            if (gpa >= r.guest_phys_addr()) {
                if (std::byte* p = r.at(gpa - r.guest_phys_addr(), len)) return p;
            }
        }
        return translate_searching(gpa, len);
    }

    // Switch to another snapshot (only where no translated pointer is held).
    void reset(guest_memory::ptr mem) noexcept {
        mem_ = std::move(mem);
        last_ = 0;
    }
    [[nodiscard]] const guest_memory& memory() const noexcept { return *mem_; }
    [[nodiscard]] const guest_memory::ptr& snapshot() const noexcept { return mem_; }

    // The dirty log the rings over this view log their writes in (null: not logging). Set
    // before a ring is made over the view; it stays while the ring runs.
    void set_log(std::shared_ptr<const dirty_log> log) noexcept { log_ = std::move(log); }
    [[nodiscard]] bool logging() const noexcept { return log_ != nullptr; }
    void log_write(std::uint64_t gpa, std::uint64_t len) noexcept { log_->mark(gpa, len); }

private:
    [[gnu::noinline]] std::byte* translate_searching(std::uint64_t gpa, std::uint64_t len) noexcept {
        const auto regions = mem_->regions();
        const std::size_t i = mem_->locate(gpa);
        if (i == guest_memory::npos) return nullptr;
        last_ = i;
        return regions[i].at(gpa - regions[i].guest_phys_addr(), len);
    }

    guest_memory::ptr mem_;
    std::size_t last_ = 0;
    std::shared_ptr<const dirty_log> log_;
};

static_assert(ring::write_logging_policy<view>);

} // namespace vvu::memory
