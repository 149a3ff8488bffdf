// Virtio device status bits (virtio 1.2 §2.1), as SET_STATUS / GET_STATUS carry them: the
// front-end sets the driver's, the back-end adds DEVICE_NEEDS_RESET when a ring broke.
#pragma once

#include <cstdint>

namespace vvu::protocol::device_status {
inline constexpr std::uint8_t acknowledge = 1;
inline constexpr std::uint8_t driver = 2;
inline constexpr std::uint8_t driver_ok = 4;
inline constexpr std::uint8_t features_ok = 8;
inline constexpr std::uint8_t needs_reset = 0x40;
} // namespace vvu::protocol::device_status
