// Notification-suppression arithmetic (virtio 1.2 §2.7.10 and §2.8.10 / §2.8.14).
//
// Split ring with VIRTIO_RING_F_EVENT_IDX: the peer publishes an index (used_event /
// avail_event) and wants a notification when the other side's index moves past it. With
// 16-bit free-running indices, "event lies in [old, new)" is written in modular arithmetic.
//
// Packed ring: a position is (offset, wrap counter). Mapping it to [0, 2N) — wrap 1 → offset,
// wrap 0 → offset + N — makes positions advance by one per descriptor modulo 2N, so the same
// "event lies in [old, new)" test applies as long as fewer than 2N descriptors were published
// between two decisions (at most N can be outstanding, so that always holds).
#pragma once

#include <cstdint>

namespace vvu::ring {

// True when `event` lies in [old_idx, new_idx) modulo 2^16 (§2.7.10, vring_need_event).
constexpr bool need_event(std::uint16_t event, std::uint16_t new_idx, std::uint16_t old_idx) noexcept {
    return static_cast<std::uint16_t>(new_idx - event - 1) <
           static_cast<std::uint16_t>(new_idx - old_idx);
}

// Packed event suppression flags (§2.8.10).
inline constexpr std::uint16_t ring_event_flags_enable = 0;
inline constexpr std::uint16_t ring_event_flags_disable = 1;
inline constexpr std::uint16_t ring_event_flags_desc = 2;

// A packed ring position in [0, 2N).
constexpr std::uint32_t packed_position(std::uint32_t offset, bool wrap, std::uint32_t n) noexcept {
    return wrap ? offset : offset + n;
}

// Descriptor-specific event test for packed rings: did [old_pos, new_pos) (positions from
// packed_position) pass the descriptor named by off_wrap (bit 15 = wrap, 0..14 = offset)?
// A garbage offset (>= N) asks for a notification: a spurious one is harmless, a lost one not.
constexpr bool packed_need_event(std::uint16_t off_wrap, std::uint32_t old_pos,
                                 std::uint32_t new_pos, std::uint32_t n) noexcept {
    const std::uint32_t off = off_wrap & 0x7fffu;
    if (off >= n) return true;
    const std::uint32_t m = 2 * n;
    const std::uint32_t ev = packed_position(off, (off_wrap >> 15) != 0, n);
    return (ev + m - old_pos) % m < (new_pos + m - old_pos) % m;
}

// The notification decision of both packed-ring sides (§2.8.10): the peer's event suppression
// word `event` (off_wrap in bits 0-15, flags in 16-17) against the move of our position from
// old_pos to new_pos since the last decision.
constexpr bool packed_should_notify(std::uint32_t event, std::uint32_t old_pos, std::uint32_t new_pos,
                                    std::uint32_t n, bool event_idx) noexcept {
    if (new_pos == old_pos) return false;
    const std::uint16_t flags = (event >> 16) & 3;
    if (flags == ring_event_flags_disable) return false;
    if (flags == ring_event_flags_desc && event_idx)
        return packed_need_event(static_cast<std::uint16_t>(event), old_pos, new_pos, n);
    return true;
}

} // namespace vvu::ring
