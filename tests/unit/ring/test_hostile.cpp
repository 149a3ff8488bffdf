#include "vvu/ring/error.hpp"

#include "harness.hpp"

#include <catch2/catch.hpp>

#include <optional>

using namespace ringtest;
using vvu::le::store;

namespace {

constexpr std::uint16_t F_NEXT = 1, F_WRITE = 2, F_IND = 4, F_AVAIL = 1 << 7, F_USED = 1 << 15;

// A split ring whose driver side is written by hand, as a hostile driver would.
struct split_rig {
    guest g{64 * 1024};
    split_config c;
    std::uint64_t buf;
    std::optional<split_device<local_memory>> dev;
    explicit split_rig(ring_features f = {true, true, false}, std::uint32_t max_chain = 0) {
        c = place_split(g, 8, f);
        c.max_chain_len = max_chain;
        buf = g.alloc(4096);
        dev.emplace(*split_device<local_memory>::create(g.mem(), c));
    }
    std::byte* desc(std::uint64_t table, std::uint32_t i) { return g.at(table) + 16 * i; }
    void put(std::uint64_t table, std::uint32_t i, std::uint64_t addr, std::uint32_t len,
             std::uint16_t flags, std::uint16_t next = 0) {
        std::byte* d = desc(table, i);
        store<std::uint64_t>(d, addr);
        store<std::uint32_t>(d + 8, len);
        store<std::uint16_t>(d + 12, flags);
        store<std::uint16_t>(d + 14, next);
    }
    void put(std::uint32_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags, std::uint16_t next = 0) {
        put(c.desc_addr, i, addr, len, flags, next);
    }
    std::uint16_t avail_idx = 0;
    void publish(std::uint16_t head) {
        store<std::uint16_t>(g.at(c.avail_addr) + 4 + 2 * (avail_idx % 8), head);
        ++avail_idx;
        store<std::uint16_t>(g.at(c.avail_addr) + 2, avail_idx);
    }
    std::error_code pop_error() {
        chain ch;
        const bool got = dev->pop(ch);
        CHECK_FALSE(got);
        CHECK(dev->broken());
        CHECK_FALSE(dev->pop(ch));   // stays broken: the device stops using the ring
        CHECK(g.guards_intact());
        return dev->error();
    }
};

} // namespace

TEST_CASE("hostile split: avail index more than the queue size ahead", "[hostile][split]") {
    split_rig r;
    store<std::uint16_t>(r.g.at(r.c.avail_addr) + 2, 9);
    CHECK(r.pop_error() == errc::avail_index_too_far);
    CHECK(r.dev->error().message() == "available index moved more than the queue size");
}

TEST_CASE("hostile split: head out of range", "[hostile][split]") {
    split_rig r;
    r.publish(8);
    CHECK(r.pop_error() == errc::head_out_of_range);
}

TEST_CASE("hostile split: next out of range, direct and inside an indirect table", "[hostile][split]") {
    split_rig r;
    r.put(0, r.buf, 8, F_NEXT, 8);
    r.publish(0);
    CHECK(r.pop_error() == errc::next_out_of_range);
    split_rig r2;
    const std::uint64_t t = r2.buf + 1024;
    r2.put(t, 0, r2.buf, 8, F_NEXT, 2);   // table has 2 entries
    r2.put(t, 1, r2.buf, 8, 0);
    r2.put(0, t, 32, F_IND);
    r2.publish(0);
    CHECK(r2.pop_error() == errc::next_out_of_range);
}

TEST_CASE("hostile split: chain loops, direct and indirect", "[hostile][split]") {
    split_rig r;
    r.put(0, r.buf, 8, F_NEXT, 1);
    r.put(1, r.buf, 8, F_NEXT, 0);
    r.publish(0);
    CHECK(r.pop_error() == errc::chain_loops);
    CHECK(r.dev->error().message() == "descriptor chain loops");
    split_rig r2;
    const std::uint64_t t = r2.buf + 1024;
    r2.put(t, 0, r2.buf, 8, F_NEXT, 1);
    r2.put(t, 1, r2.buf, 8, F_NEXT, 1);   // self loop
    r2.put(0, t, 32, F_IND);
    r2.publish(0);
    CHECK(r2.pop_error() == errc::chain_loops);
}

TEST_CASE("hostile split: chain longer than the limit", "[hostile][split]") {
    split_rig r({true, true, false}, 2);
    r.put(0, r.buf, 8, F_NEXT, 1);
    r.put(1, r.buf, 8, F_NEXT, 2);
    r.put(2, r.buf, 8, 0);
    r.publish(0);
    CHECK(r.pop_error() == errc::chain_too_long);
}

TEST_CASE("hostile split: buffers outside guest memory, including address overflow", "[hostile][split]") {
    const std::uint64_t cases[][2] = {
        {0, 8},                                    // below the base
        {local_memory::default_base - 4, 8},       // straddles the start
        {local_memory::default_base + 64 * 1024 - 4, 8},   // straddles the end
        {~0ULL - 3, 16},                           // addr + len overflows
        {local_memory::default_base, 0xffff'ffff}, // length beyond memory
    };
    for (const auto& cs : cases) {
        split_rig r;
        r.put(0, cs[0], static_cast<std::uint32_t>(cs[1]), 0);
        r.publish(0);
        CHECK(r.pop_error() == errc::buffer_out_of_memory);
    }
}

TEST_CASE("hostile split: total length overflows 32 bits", "[hostile][split]") {
    // A policy that maps a huge window onto a small scratch page for addresses >= 2^48, so the
    // lengths pass translation and only the sum is wrong. The device never touches the bytes.
    struct wide {
        local_memory* real;
        std::byte* scratch;
        std::byte* translate(std::uint64_t a, std::uint64_t len) noexcept {
            if (a >= (1ULL << 48) && len <= (1ULL << 40)) return scratch;
            return real->translate(a, len);
        }
    };
    guest g(64 * 1024);
    std::byte scratch[16]{};
    wide w{&g.mem(), scratch};
    auto c = place_split(g, 8);
    auto dev = split_device<wide>::create(w, c);
    REQUIRE(dev);
    std::byte* d = g.at(c.desc_addr);
    for (int i = 0; i < 2; ++i) {
        store<std::uint64_t>(d + 16 * i, 1ULL << 48);
        store<std::uint32_t>(d + 16 * i + 8, 0x8000'0000u);
        store<std::uint16_t>(d + 16 * i + 12, static_cast<std::uint16_t>(i == 0 ? F_NEXT : 0));
        store<std::uint16_t>(d + 16 * i + 14, 1);
    }
    store<std::uint16_t>(g.at(c.avail_addr) + 2, 1);
    chain ch;
    CHECK_FALSE(dev->pop(ch));
    CHECK(dev->error() == errc::length_overflow);
    CHECK(g.guards_intact());
}

TEST_CASE("hostile split: readable descriptor after a writable one", "[hostile][split]") {
    split_rig r;
    r.put(0, r.buf, 8, F_NEXT | F_WRITE, 1);
    r.put(1, r.buf, 8, 0);
    r.publish(0);
    CHECK(r.pop_error() == errc::readable_after_writable);
}

TEST_CASE("hostile split: indirect descriptor rules", "[hostile][split]") {
    SECTION("not negotiated") {
        split_rig r({true, false, false});
        r.put(0, r.buf, 16, F_IND);
        r.publish(0);
        CHECK(r.pop_error() == errc::indirect_not_negotiated);
    }
    SECTION("nested") {
        split_rig r;
        const std::uint64_t t = r.buf + 1024;
        r.put(t, 0, r.buf + 2048, 16, F_IND);
        r.put(0, t, 16, F_IND);
        r.publish(0);
        CHECK(r.pop_error() == errc::nested_indirect);
    }
    SECTION("with next") {
        split_rig r;
        r.put(0, r.buf + 1024, 16, F_IND | F_NEXT, 1);
        r.publish(0);
        CHECK(r.pop_error() == errc::indirect_with_next);
    }
    SECTION("length not a multiple of 16, or zero") {
        for (std::uint32_t len : {0u, 8u, 24u}) {
            split_rig r;
            r.put(0, r.buf + 1024, len, F_IND);
            r.publish(0);
            CHECK(r.pop_error() == errc::bad_indirect_length);
        }
    }
    SECTION("longer than the limit") {
        split_rig r;
        r.put(0, r.buf, 16 * 9, F_IND);   // queue size 8
        r.publish(0);
        CHECK(r.pop_error() == errc::indirect_too_long);
    }
    SECTION("table outside guest memory") {
        split_rig r;
        r.put(0, r.g.end() - 16, 32, F_IND);
        r.publish(0);
        CHECK(r.pop_error() == errc::indirect_out_of_memory);
    }
    SECTION("direct descriptors followed by one indirect table are accepted (§2.7.5.3.2)") {
        split_rig r;
        const std::uint64_t t = r.buf + 1024;
        r.put(t, 0, r.buf + 64, 4, F_WRITE);
        r.put(0, r.buf, 4, F_NEXT, 1);
        r.put(1, t, 16, F_IND);
        r.publish(0);
        chain ch;
        REQUIRE(r.dev->pop(ch));
        CHECK(ch.readable().size() == 1);
        CHECK(ch.writable().size() == 1);
        CHECK(ch.indirect());
    }
}

TEST_CASE("hostile split: the same head made available twice while in flight", "[hostile][split]") {
    split_rig r;
    r.put(0, r.buf, 8, 0);
    r.publish(0);
    r.publish(0);
    chain ch[2];
    CHECK(r.dev->pop_burst(ch) == 1);   // the first is good and stays usable
    CHECK(r.dev->error() == errc::head_in_use);
    CHECK(r.g.guards_intact());
}

TEST_CASE("hostile split: driver side rejects a bad used ring", "[hostile][split]") {
    guest g(64 * 1024);
    auto c = place_split(g, 8);
    auto drv = split_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    const buffer b{g.alloc(64), 8};
    REQUIRE(drv->add({&b, 1}, {}, 1));
    SECTION("used idx too far") {
        store<std::uint16_t>(g.at(c.used_addr) + 2, 9);
        used_buffer u;
        CHECK_FALSE(drv->reap(u));
        CHECK(drv->error() == errc::used_index_too_far);
    }
    SECTION("used id not in flight") {
        store<std::uint32_t>(g.at(c.used_addr) + 4, 5);
        store<std::uint16_t>(g.at(c.used_addr) + 2, 1);
        used_buffer u;
        CHECK_FALSE(drv->reap(u));
        CHECK(drv->error() == errc::bad_used_id);
    }
    CHECK(g.guards_intact());
}

namespace {

struct packed_rig {
    guest g{64 * 1024};
    packed_config c;
    std::uint64_t buf;
    std::optional<packed_device<local_memory>> dev;
    explicit packed_rig(ring_features f = {true, true, false}, std::uint32_t max_chain = 0) {
        c = place_packed(g, 8, f);
        c.max_chain_len = max_chain;
        buf = g.alloc(4096);
        dev.emplace(*packed_device<local_memory>::create(g.mem(), c));
    }
    // Descriptor i, made available for wrap counter 1 unless `avail` is false.
    void put(std::uint64_t table, std::uint32_t i, std::uint64_t addr, std::uint32_t len,
             std::uint16_t flags, std::uint16_t id = 0, bool avail = true) {
        std::byte* d = g.at(table) + 16 * i;
        store<std::uint64_t>(d, addr);
        store<std::uint32_t>(d + 8, len);
        store<std::uint16_t>(d + 12, id);
        store<std::uint16_t>(d + 14, static_cast<std::uint16_t>(flags | (avail ? F_AVAIL : 0)));
    }
    void put(std::uint32_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
             std::uint16_t id = 0, bool avail = true) {
        put(c.desc_addr, i, addr, len, flags, id, avail);
    }
    std::error_code pop_error() {
        chain ch;
        CHECK_FALSE(dev->pop(ch));
        CHECK(dev->broken());
        CHECK_FALSE(dev->pop(ch));
        CHECK(g.guards_intact());
        return dev->error();
    }
};

} // namespace

TEST_CASE("hostile packed: chained descriptor not available", "[hostile][packed]") {
    packed_rig r;
    r.put(0, r.buf, 8, F_NEXT);
    r.put(1, r.buf, 8, 0, 0, false);
    CHECK(r.pop_error() == errc::chain_unavailable);
}

TEST_CASE("hostile packed: a NEXT list running around the whole ring", "[hostile][packed]") {
    packed_rig r;
    for (std::uint32_t i = 0; i < 8; ++i) r.put(i, r.buf, 8, F_NEXT);
    CHECK(r.pop_error() == errc::chain_too_long);   // more descriptors than the ring holds
    packed_rig r2({true, true, false}, 3);
    for (std::uint32_t i = 0; i < 8; ++i) r2.put(i, r2.buf, 8, F_NEXT);
    CHECK(r2.pop_error() == errc::chain_too_long);
}

TEST_CASE("hostile packed: buffer id out of range and id reuse", "[hostile][packed]") {
    packed_rig r;
    r.put(0, r.buf, 8, 0, 8);
    CHECK(r.pop_error() == errc::id_out_of_range);
    packed_rig r2;
    r2.put(0, r2.buf, 8, 0, 3);
    r2.put(1, r2.buf, 8, 0, 3);
    chain ch[2];
    CHECK(r2.dev->pop_burst(ch) == 1);
    CHECK(r2.dev->error() == errc::head_in_use);
}

TEST_CASE("hostile packed: readable after writable and buffers outside memory", "[hostile][packed]") {
    packed_rig r;
    r.put(0, r.buf, 8, F_NEXT | F_WRITE);
    r.put(1, r.buf, 8, 0);
    CHECK(r.pop_error() == errc::readable_after_writable);
    packed_rig r2;
    r2.put(0, r2.g.end() - 4, 8, 0);
    CHECK(r2.pop_error() == errc::buffer_out_of_memory);
}

TEST_CASE("hostile packed: indirect descriptor rules", "[hostile][packed]") {
    SECTION("not negotiated") {
        packed_rig r({true, false, false});
        r.put(0, r.buf, 16, F_IND);
        CHECK(r.pop_error() == errc::indirect_not_negotiated);
    }
    SECTION("inside a NEXT list (§2.8.7)") {
        packed_rig r;
        r.put(0, r.buf, 8, F_NEXT);
        r.put(1, r.buf + 1024, 16, F_IND);
        CHECK(r.pop_error() == errc::indirect_with_next);
    }
    SECTION("nested") {
        packed_rig r;
        const std::uint64_t t = r.buf + 1024;
        r.put(t, 0, r.buf, 16, F_IND, 0, false);
        r.put(0, t, 16, F_IND);
        CHECK(r.pop_error() == errc::nested_indirect);
    }
    SECTION("bad length") {
        packed_rig r;
        r.put(0, r.buf + 1024, 40, F_IND);
        CHECK(r.pop_error() == errc::bad_indirect_length);
    }
    SECTION("too long") {
        packed_rig r;
        r.put(0, r.buf, 16 * 9, F_IND);
        CHECK(r.pop_error() == errc::indirect_too_long);
    }
    SECTION("outside memory") {
        packed_rig r;
        r.put(0, local_memory::default_base - 16, 32, F_IND);
        CHECK(r.pop_error() == errc::indirect_out_of_memory);
    }
}

TEST_CASE("hostile packed: driver side rejects a used id not in flight", "[hostile][packed]") {
    guest g(64 * 1024);
    auto c = place_packed(g, 8);
    auto drv = packed_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    const buffer b{g.alloc(64), 8};
    REQUIRE(drv->add({&b, 1}, {}, 1));
    std::byte* d = g.at(c.desc_addr);
    store<std::uint16_t>(d + 12, 6);
    store<std::uint16_t>(d + 14, static_cast<std::uint16_t>(F_AVAIL | F_USED));
    used_buffer u;
    CHECK_FALSE(drv->reap(u));
    CHECK(drv->error() == errc::bad_used_id);
    CHECK(g.guards_intact());
}

TEST_CASE("error: codes convert to std::error_code with readable messages", "[hostile]") {
    const std::error_code ec = errc::chain_loops;
    CHECK(ec.category().name() == std::string("vvu.ring"));
    CHECK(ec.message() == "descriptor chain loops");
    for (int e = 1; e <= static_cast<int>(errc::bad_used_id); ++e)
        CHECK(make_error_code(static_cast<errc>(e)).message() != "unknown ring error");
}
