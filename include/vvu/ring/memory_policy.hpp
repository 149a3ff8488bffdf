// The memory policy concept: how ring code reaches the memory the other side shares with it.
//
// A ring never dereferences a guest address itself. It asks its memory policy to translate a
// (guest address, length) pair into a local pointer, and the policy either returns a pointer to
// `len` contiguous, accessible bytes or nullptr. The same ring code therefore runs over
// front-end memory mapped from SET_MEM_TABLE (vvu::memory), over a PCI BAR window (VVU), or
// over a plain buffer in tests and benchmarks (local_memory below).
//
// Requirements on a type M modelling memory_policy, for an lvalue m of type M:
//
//     std::byte* p = m.translate(addr, len);   // noexcept
//
//   * p points to `len` bytes that stay valid and accessible while the ring uses them, all
//     inside ONE contiguous mapping; nullptr when any byte of [addr, addr + len) is not.
//   * addr + len overflowing 64 bits yields nullptr.
//   * len == 0 yields a non-null pointer when addr lies inside a mapping (or one past its end),
//     nullptr otherwise. Rings never access bytes of a zero-length element.
//   * translate is called once per ring structure at setup and once per descriptor on the data
//     path, so it should be cheap (a compare or a short region lookup).
//
// Example: a policy over one region mapped at `base` for guest addresses [gpa, gpa + size):
//
//     struct one_region {
//         std::byte* base; std::uint64_t gpa, size;
//         std::byte* translate(std::uint64_t a, std::uint64_t len) noexcept {
//             if (a < gpa || !vvu::range_within(a - gpa, len, size)) return nullptr; // util/range.hpp
//             return base + (a - gpa);
//         }
//     };
//     static_assert(vvu::ring::memory_policy<one_region>);
#pragma once

#include <vvu/util/range.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

namespace vvu::ring {

template <class M>
concept memory_policy = requires(M& m, std::uint64_t addr, std::uint64_t len) {
    { m.translate(addr, len) } noexcept -> std::same_as<std::byte*>;
};

// A memory policy that also logs the device's writes (dirty-page logging of a live migration,
// memory/dirty_log.hpp). The device rings then record, for each chain they take, where its
// writable part lies, and when the chain is pushed they log the first `len` bytes of it (the
// bytes the device says it wrote) and the ring bytes they wrote themselves:
//
//   m.logging()          noexcept -> bool   is a log attached (fixed while a ring uses m)
//   m.log_write(a, len)  noexcept           mark [a, a + len) of guest memory written
//
// Policies without these (local_memory) cost nothing: the rings' logging compiles away.
template <class M>
concept write_logging_policy = memory_policy<M> && requires(M& m, std::uint64_t addr, std::uint64_t len) {
    { m.logging() } noexcept -> std::same_as<bool>;
    { m.log_write(addr, len) } noexcept;
};

// A memory policy over a caller-provided buffer: guest address `base` is buffer[0].
// The default base is deliberately not 0 so that a zero address (a common driver bug) fails.
class local_memory {
public:
    static constexpr std::uint64_t default_base = 0x1'0000'0000ULL;

    explicit local_memory(std::span<std::byte> buffer, std::uint64_t base = default_base) noexcept
        : data_(buffer.data()), size_(buffer.size()), base_(base) {}

    std::byte* translate(std::uint64_t addr, std::uint64_t len) noexcept {
        if (addr < base_) return nullptr;
        const std::uint64_t off = addr - base_;
        if (!range_within(off, len, size_)) return nullptr;
        return data_ + off;
    }

    // Guest address of a byte of the buffer (tests use it to build descriptors).
    std::uint64_t guest_address(const std::byte* p) const noexcept {
        return base_ + static_cast<std::uint64_t>(p - data_);
    }
    std::uint64_t base() const noexcept { return base_; }
    std::uint64_t size() const noexcept { return size_; }
    std::byte* data() const noexcept { return data_; }

private:
    std::byte* data_;
    std::uint64_t size_;
    std::uint64_t base_;
};

static_assert(memory_policy<local_memory>);

} // namespace vvu::ring
