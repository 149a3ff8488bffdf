// range_within: does [offset, offset + length) lie inside [0, size)? The one bounds check for a
// region, a BAR, an arena or a buffer, written so that offset + length cannot wrap: values
// from a peer are hostile, and a naive `offset + length <= size` accepts a huge length.
//
//   if (!range_within(off, len, region.size())) return nullptr;
//
// An empty range fits anywhere up to and including the end (offset == size).
#pragma once

#include <concepts>
#include <cstdint>

namespace vvu {

template <std::unsigned_integral Offset, std::unsigned_integral Length, std::unsigned_integral Size>
[[nodiscard]] constexpr bool range_within(Offset offset, Length length, Size size) noexcept {
    // Every unsigned type converts to 64 bits losslessly here, so mixed widths compare as values.
    const std::uint64_t o = offset, l = length, s = size;
    return o <= s && l <= s - o;
}

} // namespace vvu
