// The VVU function's layout: BAR 2 structures and the shared-memory window both sides compute.
#include <vvu/pci/vvu_function.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>

using namespace vvu::pci::vvu_function;
using vvu::wire::memory_region;

namespace {
memory_region region(std::uint64_t gpa, std::uint64_t size, std::uint64_t mmap_offset = 0, std::uint64_t uaddr = 0) {
    return {gpa, size, uaddr == 0 ? 0x7f00'0000'0000 + gpa : uaddr, mmap_offset};
}
} // namespace

TEST_CASE("bar2_layout: doorbells (calls, the log doorbell, errors) rounded to 4 KiB, then notification, then memory",
          "[pci][vvu]") {
    constexpr auto small = bar2_layout::for_queues(64); // 129 doorbells × 4 = 516 bytes
    STATIC_REQUIRE(small.doorbells == 0);
    STATIC_REQUIRE(small.doorbells_size == 0x1000);
    STATIC_REQUIRE(small.notification == 0x1000);
    STATIC_REQUIRE(small.shared_memory == 0x2000);
    STATIC_REQUIRE(small.shared_memory_size == vvu_bar::size - 0x2000);
    STATIC_REQUIRE(small.doorbell(3) == 12);
    STATIC_REQUIRE(small.log_doorbell_index() == 64);
    STATIC_REQUIRE(small.error_doorbell_index(0) == 65);
    STATIC_REQUIRE(small.doorbell(small.error_doorbell_index(63)) == 128 * 4);
    constexpr auto large = bar2_layout::for_queues(1024); // 2049 × 4 = 8196 bytes: three pages
    STATIC_REQUIRE(large.doorbells_size == 0x3000);
    STATIC_REQUIRE(large.notification == 0x3000);
    STATIC_REQUIRE(large.shared_memory == 0x4000);
    STATIC_REQUIRE(device_id == 0x106b);
}

TEST_CASE("window_layout: SET_MEM_TABLE puts regions back to back, each mmap_offset + memory_size long", "[pci][vvu]") {
    window_layout w(1ull << 36);
    const std::array regions{region(0, 0xa0000), region(0xc0000, 0x3ff40000, 0xc0000), region(0x1'0000'0000, 0x4000'0000, 0x4000'0000)};
    REQUIRE(w.set_table(regions));
    REQUIRE(w.areas().size() == 3);
    CHECK(w.areas()[0].offset == 0);
    CHECK(w.areas()[1].offset == 0xa0000);
    CHECK(w.areas()[2].offset == 0xa0000 + 0xc0000 + 0x3ff40000);
    CHECK(w.areas()[2].size() == 0x8000'0000);
    // A new table starts over.
    REQUIRE(w.set_table(std::span(regions).subspan(2)));
    REQUIRE(w.areas().size() == 1);
    CHECK(w.areas()[0].offset == 0);
}

TEST_CASE("window_layout: ADD appends after the highest end, REM leaves a hole, nothing moves", "[pci][vvu]") {
    window_layout w(1ull << 36);
    REQUIRE(w.add(region(0, 0x10000)));
    REQUIRE(w.add(region(0x100000, 0x20000, 0x1000)));
    REQUIRE(w.add(region(0x200000, 0x10000)));
    CHECK(w.find(region(0x100000, 0x20000, 0x1000))->offset == 0x10000);
    CHECK(w.find(region(0x200000, 0x10000))->offset == 0x31000);
    REQUIRE(w.remove(region(0x100000, 0x20000, 0x1000)));
    CHECK_FALSE(w.find(region(0x100000, 0x20000, 0x1000)));
    CHECK(w.find(region(0x200000, 0x10000))->offset == 0x31000); // did not move
    REQUIRE(w.add(region(0x300000, 0x1000)));
    CHECK(w.find(region(0x300000, 0x1000))->offset == 0x41000); // after the highest end, not in the hole
    CHECK_FALSE(w.remove(region(0x900000, 0x1000)));                // unknown region
    // REM matches guest address, size and user address (not mmap_offset).
    CHECK_FALSE(w.remove(region(0, 0x10000, 0, 0x1234)));
    CHECK(w.remove(region(0, 0x10000, 0x5000)));
}

TEST_CASE("window_layout: regions that overflow the window or wrap are refused, the layout unchanged", "[pci][vvu]") {
    window_layout w(0x100000);
    REQUIRE(w.add(region(0, 0x80000)));
    CHECK_FALSE(w.add(region(0x100000, 0x80001)));                        // one byte too many
    CHECK_FALSE(w.add(region(0x200000, 0)));                              // empty
    CHECK_FALSE(w.add(region(0x300000, 0x10, UINT64_MAX - 4)));           // mmap_offset + size wraps
    CHECK_FALSE(w.add(region(0x300000, UINT64_MAX, 0x10)));
    const std::array too_big{region(0, 0x80000), region(0x100000, 0x80001)};
    CHECK_FALSE(w.set_table(too_big));
    REQUIRE(w.areas().size() == 1);
    REQUIRE(w.add(region(0x100000, 0x80000)));                            // exactly full
    CHECK(w.areas().back().offset == 0x80000);
}
