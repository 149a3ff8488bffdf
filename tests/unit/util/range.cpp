#include <vvu/util/range.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

using vvu::range_within;

namespace {
constexpr std::uint64_t max64 = std::numeric_limits<std::uint64_t>::max();
}

// Compile-time: the helper is usable where bounds are checked statically.
static_assert(range_within(0u, 16u, 16u));
static_assert(!range_within(1u, 16u, 16u));

TEST_CASE("range_within: inside, at the end, past the end", "[util]") {
    CHECK(range_within(0u, 0u, 0u));                  // nothing in nothing
    CHECK(range_within(0u, 4096u, 4096u));            // the whole area
    CHECK(range_within(4095u, 1u, 4096u));            // the last byte
    CHECK_FALSE(range_within(4095u, 2u, 4096u));      // one byte past the end
    CHECK_FALSE(range_within(0u, 4097u, 4096u));
    CHECK_FALSE(range_within(0u, 1u, 0u));            // anything in an empty area
}

TEST_CASE("range_within: an empty range fits up to and including the end", "[util]") {
    CHECK(range_within(4096u, 0u, 4096u));
    CHECK_FALSE(range_within(4097u, 0u, 4096u));
}

TEST_CASE("range_within: offset + length wrapping 64 bits is refused", "[util]") {
    // offset + length wraps to a small value: a naive `offset + length <= size` would accept.
    CHECK_FALSE(range_within(std::uint64_t{16}, max64, std::uint64_t{4096}));
    CHECK_FALSE(range_within(max64, std::uint64_t{2}, std::uint64_t{4096}));
    CHECK_FALSE(range_within(max64, std::uint64_t{1}, max64));
    CHECK(range_within(max64, std::uint64_t{0}, max64));
    CHECK(range_within(std::uint64_t{0}, max64, max64));
    CHECK(range_within(std::uint64_t{1}, max64 - 1, max64));
    CHECK_FALSE(range_within(std::uint64_t{2}, max64 - 1, max64));
}

TEST_CASE("range_within: mixed widths compare as values", "[util]") {
    const std::uint16_t small_size = 64;
    const std::size_t len = 8;
    CHECK(range_within(std::uint64_t{56}, len, small_size));
    CHECK_FALSE(range_within(std::uint64_t{0x1'0000'0038}, len, small_size)); // not truncated to 0x38
    CHECK_FALSE(range_within(std::uint32_t{60}, len, small_size));
}
