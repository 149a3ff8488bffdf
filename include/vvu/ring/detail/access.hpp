// Shared ring memory accesses, and the memory-ordering rules of the ring layer, written once.
//
// The other side of a ring runs concurrently (another process, another core). Fields it
// updates concurrently — split avail/used `idx` and `flags`, used_event/avail_event, packed
// descriptor `flags`, packed event-suppression structures — go through std::atomic_ref (their
// alignment is checked at ring setup). Everything else goes through vvu::le::load/store, and
// every descriptor field is read once into a local before it is validated and used.
//
// Ordering (virtio 1.2 §2.7.13, §2.7.14, §2.8.21, §2.8.22):
//  * publish:  the writer fills descriptors / ring entries / buffer data, then stores the
//              index (split) or the first descriptor's flags (packed) with RELEASE.
//  * consume:  the reader loads that index / flags word with ACQUIRE before reading anything
//              it covers, so it sees the writer's descriptors and buffer contents.
//  * suppress: before deciding whether to notify, a side has just stored its index/flags and
//              must then load the peer's event field; the peer has stored its event field and
//              then re-checks our index. That is a store→load (Dekker) pattern that
//              release/acquire does not order, so both sides put
//              std::atomic_thread_fence(seq_cst) between their store and their load
//              (store_load_fence below). Without it a kick or an interrupt can be lost.
#pragma once

#include "vvu/util/endian.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vvu::ring::detail {

inline std::uint16_t& as_u16(std::byte* p) noexcept { return *reinterpret_cast<std::uint16_t*>(p); }

inline std::uint16_t load_acquire16(std::byte* p) noexcept {
    return le::to_native(std::atomic_ref<std::uint16_t>(as_u16(p)).load(std::memory_order_acquire));
}
inline std::uint16_t load_relaxed16(std::byte* p) noexcept {
    return le::to_native(std::atomic_ref<std::uint16_t>(as_u16(p)).load(std::memory_order_relaxed));
}
inline void store_release16(std::byte* p, std::uint16_t v) noexcept {
    std::atomic_ref<std::uint16_t>(as_u16(p)).store(le::from_native(v), std::memory_order_release);
}
inline void store_relaxed16(std::byte* p, std::uint16_t v) noexcept {
    std::atomic_ref<std::uint16_t>(as_u16(p)).store(le::from_native(v), std::memory_order_relaxed);
}
inline std::uint32_t load_relaxed32(std::byte* p) noexcept {
    return le::to_native(std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(p))
                             .load(std::memory_order_relaxed));
}
inline void store_relaxed32(std::byte* p, std::uint32_t v) noexcept {
    std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(p))
        .store(le::from_native(v), std::memory_order_relaxed);
}
inline void store_load_fence() noexcept { std::atomic_thread_fence(std::memory_order_seq_cst); }

// A hint to start loading the cache line at p (ForWrite: to own it, for a store). Never faults.
// Written out on x86-64 because GCC 12 deleted __builtin_prefetch calls here: it split a caller,
// found the part holding a prefetch loop free of side effects and dropped the call (vvu-forward
// had no prefetch left). PREFETCHW runs as a no-op on the x86-64 CPUs that lack it.
template <bool ForWrite = false>
inline void prefetch_line(const void* p) noexcept {
#if defined(__x86_64__)
    if constexpr (ForWrite) asm volatile("prefetchw (%0)" : : "r"(p));
    else asm volatile("prefetcht0 (%0)" : : "r"(p));
#else
    __builtin_prefetch(p, ForWrite ? 1 : 0);
#endif
}

inline bool aligned(const void* p, std::size_t a) noexcept {
    return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

// Descriptor flag bits shared by both layouts (§2.7.5, §2.8).
inline constexpr std::uint16_t desc_f_next = 1;
inline constexpr std::uint16_t desc_f_write = 2;
inline constexpr std::uint16_t desc_f_indirect = 4;
inline constexpr std::uint16_t desc_f_avail = 1 << 7;
inline constexpr std::uint16_t desc_f_used = 1 << 15;

} // namespace vvu::ring::detail
