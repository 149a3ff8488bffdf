// The vhost-user message header (QEMU docs/interop/vhost-user.rst, "Header").
//
//   | request (u32) | flags (u32) | size (u32) | payload (size bytes) |
//
// flags: bits 0-1 version (must be 0x1), bit 2 REPLY, bit 3 NEED_REPLY (see REPLY_ACK).
#pragma once

#include <vvu/util/endian.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace vvu::wire {

inline constexpr std::size_t header_size = 12;

namespace flags {
inline constexpr std::uint32_t version_mask = 0x3;
inline constexpr std::uint32_t version = 0x1;
inline constexpr std::uint32_t reply = 0x4;
inline constexpr std::uint32_t need_reply = 0x8;
} // namespace flags

struct header {
    std::uint32_t request = 0;
    std::uint32_t flags = flags::version;
    std::uint32_t size = 0; // payload bytes that follow

    [[nodiscard]] constexpr std::uint32_t version() const noexcept { return flags & flags::version_mask; }
    [[nodiscard]] constexpr bool is_reply() const noexcept { return (flags & flags::reply) != 0; }
    [[nodiscard]] constexpr bool need_reply() const noexcept { return (flags & flags::need_reply) != 0; }
    friend constexpr bool operator==(const header&, const header&) = default;
};

// Reads a header from the first 12 bytes of `bytes` (caller checks the length).
[[nodiscard]] inline header load_header(std::span<const std::byte> bytes) noexcept {
    return {le::load<std::uint32_t>(bytes.data()), le::load<std::uint32_t>(bytes.data() + 4),
            le::load<std::uint32_t>(bytes.data() + 8)};
}

inline void store_header(const header& h, std::span<std::byte> out) noexcept {
    le::store(out.data(), h.request);
    le::store(out.data() + 4, h.flags);
    le::store(out.data() + 8, h.size);
}

} // namespace vvu::wire
