// Explicit little-endian loads and stores from byte buffers.
//
// vhost-user and virtio 1.x structures are little-endian on the wire and in guest memory
// (virtio 1.2 §1.4). Every access goes through these helpers so that a big-endian host
// would still be correct; on x86 they compile to plain moves.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace vvu::le {

template <class T>
    requires std::is_integral_v<T>
constexpr T byteswap(T v) noexcept {
    if constexpr (sizeof(T) == 1) {
        return v;
    } else {
        using U = std::make_unsigned_t<T>;
        U u = static_cast<U>(v);
        U r = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) {
            r = static_cast<U>((r << 8) | (u & 0xff));
            u = static_cast<U>(u >> 8);
        }
        return static_cast<T>(r);
    }
}

template <class T>
    requires std::is_integral_v<T>
constexpr T to_native(T v) noexcept {
    if constexpr (std::endian::native == std::endian::little) return v;
    else return byteswap(v);
}

template <class T>
    requires std::is_integral_v<T>
constexpr T from_native(T v) noexcept { return to_native(v); }

// Load a little-endian T from p (any alignment).
template <class T>
    requires std::is_integral_v<T>
inline T load(const std::byte* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);
    return to_native(v);
}

// Store v as little-endian at p (any alignment).
template <class T>
    requires std::is_integral_v<T>
inline void store(std::byte* p, T v) noexcept {
    v = from_native(v);
    std::memcpy(p, &v, sizeof v);
}

} // namespace vvu::le
