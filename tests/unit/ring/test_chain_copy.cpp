// chain::copy_from / copy_to against a flat picture of the same bytes: every offset and length
// over a chain whose readable and writable parts are each split in three descriptors, so the
// single-segment shortcut and the segment walk are both checked at and across every boundary.
#include "harness.hpp"

#include <catch2/catch.hpp>

using namespace ringtest;

namespace {

constexpr std::uint32_t readable_lens[] = {5, 7, 20};
constexpr std::uint32_t writable_lens[] = {3, 9, 30};
constexpr std::size_t readable_total = 32, writable_total = 42;

struct one_chain {
    guest g{1 << 16};
    split_config cfg = place_split(g, 8);
    std::vector<buffer> readable, writable;
    split_driver<local_memory> drv = *split_driver<local_memory>::create(g.mem(), cfg);
    split_device<local_memory> dev = *split_device<local_memory>::create(g.mem(), cfg);
    chain c;

    one_chain() {
        for (auto len : readable_lens) readable.push_back({g.alloc(len, 1), len});
        for (auto len : writable_lens) writable.push_back({g.alloc(len, 1), len});
        // The readable bytes, numbered in chain order across the descriptors.
        std::size_t k = 0;
        for (const auto& b : readable)
            for (std::uint32_t i = 0; i < b.len; ++i) g.at(b.addr)[i] = std::byte(0x40 + k++);
        const request req{readable, writable, 1, false};
        REQUIRE(drv.add_burst({&req, 1}) == 1);
        REQUIRE(dev.pop_burst({&c, 1}) == 1);
        REQUIRE(c.readable().size() == 3);
        REQUIRE(c.writable().size() == 3);
    }
    // The writable part as one flat array.
    std::vector<std::byte> written() {
        std::vector<std::byte> out;
        for (const auto& b : writable) out.insert(out.end(), g.at(b.addr), g.at(b.addr) + b.len);
        return out;
    }
    void clear_writable() {
        for (const auto& b : writable) std::fill_n(g.at(b.addr), b.len, std::byte{0xee});
    }
};

} // namespace

TEST_CASE("chain: copy_from at every offset and length, within and across descriptors", "[ring][chain]") {
    one_chain t;
    for (std::size_t offset = 0; offset <= readable_total + 1; ++offset) {
        for (std::size_t len = 0; len <= readable_total + 2; ++len) {
            std::vector<std::byte> dst(len, std::byte{0xcc});
            const std::size_t got = t.c.copy_from(offset, dst);
            const std::size_t want = offset >= readable_total ? 0 : std::min(len, readable_total - offset);
            INFO("offset " << offset << ", length " << len);
            REQUIRE(got == want);
            for (std::size_t i = 0; i < got; ++i) REQUIRE(dst[i] == std::byte(0x40 + offset + i));
            for (std::size_t i = got; i < len; ++i) REQUIRE(dst[i] == std::byte{0xcc}); // nothing past the end
        }
    }
}

TEST_CASE("chain: copy_to at every offset and length, within and across descriptors", "[ring][chain]") {
    one_chain t;
    for (std::size_t offset = 0; offset <= writable_total + 1; ++offset) {
        for (std::size_t len = 0; len <= writable_total + 2; ++len) {
            t.clear_writable();
            std::vector<std::byte> src(len);
            for (std::size_t i = 0; i < len; ++i) src[i] = std::byte(0x80 + i);
            const std::size_t got = t.c.copy_to(offset, src);
            const std::size_t want = offset >= writable_total ? 0 : std::min(len, writable_total - offset);
            INFO("offset " << offset << ", length " << len);
            REQUIRE(got == want);
            const auto flat = t.written();
            for (std::size_t i = 0; i < writable_total; ++i) {
                const bool inside = i >= offset && i < offset + got;
                REQUIRE(flat[i] == (inside ? std::byte(0x80 + (i - offset)) : std::byte{0xee}));
            }
        }
    }
    CHECK(t.g.guards_intact());
}
