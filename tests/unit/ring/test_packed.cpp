#include "vvu/ring/packed.hpp"

#include "harness.hpp"

#include <catch2/catch.hpp>

using namespace ringtest;

TEST_CASE("packed: layout sizes and offsets follow virtio 1.2 §2.8", "[packed]") {
    STATIC_REQUIRE(sizeof(packed_desc) == 16);
    STATIC_REQUIRE(sizeof(packed_event_suppress) == 4);
    STATIC_REQUIRE(packed_state{5, true, 7, false}.to_vring_base() == (5u | 1u << 15 | 7u << 16));
    STATIC_REQUIRE(packed_state::from_vring_base(0x8007'8005u).used_idx == 7);
    STATIC_REQUIRE(packed_state::from_avail_only(0x8003).used_wrap);
}

TEST_CASE("packed: setup accepts any size up to 32768 and rejects the rest", "[packed]") {
    guest g(1 << 20);
    for (std::uint32_t n : {1u, 3u, 100u, 1000u, 32768u}) {
        guest gg(std::size_t{n} * 16 + 4096);
        auto c = place_packed(gg, n);
        CHECK(packed_device<local_memory>::create(gg.mem(), c));
        CHECK(packed_driver<local_memory>::create(gg.mem(), c));
    }
    auto c = place_packed(g, 64);
    auto cc = c;
    cc.size = 0;
    CHECK(packed_device<local_memory>::create(g.mem(), cc).error() == errc::bad_queue_size);
    cc.size = 32769;
    CHECK(packed_device<local_memory>::create(g.mem(), cc).error() == errc::bad_queue_size);
    cc = c;
    cc.driver_event_addr += 2;
    CHECK(packed_device<local_memory>::create(g.mem(), cc).error() == errc::ring_misaligned);
    cc = c;
    cc.desc_addr = g.end() - 512;
    CHECK(packed_device<local_memory>::create(g.mem(), cc).error() == errc::ring_out_of_memory);
}

TEST_CASE("packed: driver and device exchange random chains with every byte checked", "[packed]") {
    struct cfg { std::uint32_t size; ring_features f; std::uint64_t ops; };
    const cfg cases[] = {
        {1, {}, 40000},
        {2, {true, true, false}, 40000},
        {3, {false, true, false}, 30000},
        {100, {true, true, false}, 30000},
        {256, {false, false, true}, 30000},
        {1000, {true, true, true}, 30000},
        {1024, {false, true, false}, 30000},
        {32768, {true, true, false}, 40000},
    };
    std::uint64_t total = 0;
    std::uint32_t seed = 100;
    for (const cfg& c : cases) {
        INFO("size " << c.size << " event_idx " << c.f.event_idx << " indirect " << c.f.indirect
                     << " in_order " << c.f.in_order);
        const auto st = run_exchange<packed_layout_t>(c.size, c.f, c.ops, seed++);
        CHECK(st.errors == 0);
        CHECK(st.chains >= c.ops);
        if (c.f.indirect) CHECK(st.indirect > 0);
        total += st.chains;
    }
    CHECK(total > 200000);
}

// An 8-slot IN_ORDER ring with four buffers (16 readable and 16 writable bytes: 2 descriptors
// each, tokens 100-103) taken by the device.
struct four_taken_in_order {
    guest g{1 << 20};
    packed_config c = place_packed(g, 8, {false, false, true});
    vvu::expected<packed_driver<local_memory>, std::error_code> drv = packed_driver<local_memory>::create(g.mem(), c);
    vvu::expected<packed_device<local_memory>, std::error_code> dev = packed_device<local_memory>::create(g.mem(), c);
    chain ch[4];
    four_taken_in_order() {
        REQUIRE((drv && dev));
        const std::uint64_t buf = g.alloc(256);
        for (int i = 0; i < 4; ++i) {
            const buffer r{buf + 64 * i, 16}, w{buf + 64 * i + 16, 16};
            REQUIRE(drv->add({&r, 1}, {&w, 1}, 100 + i));
        }
        REQUIRE(dev->pop_burst(ch) == 4);
    }
};

TEST_CASE("packed: in-order batch is one used descriptor with the last id", "[packed]") {
    four_taken_in_order t;
    auto& [g, c, drv, dev, ch] = t;
    used_element ue[4];
    for (int i = 0; i < 4; ++i) ue[i] = {ch[i].id(), i == 3 ? 5u : 16u};
    REQUIRE(dev->push_burst(ue) == 4);
    // One used descriptor at position 0 carrying the last id; the device skipped 8 slots.
    std::byte* d0 = g.at(c.desc_addr);
    CHECK(vvu::le::load<std::uint16_t>(d0 + 12) == ch[3].id());
    CHECK(vvu::le::load<std::uint32_t>(d0 + 8) == 5);
    CHECK(dev->state().used_idx == 0);
    CHECK(dev->state().used_wrap == false);
    used_buffer u[4];
    REQUIRE(drv->reap_burst(u) == 4);
    for (int i = 0; i < 4; ++i) {
        CHECK(u[i].token == 100u + i);
        CHECK(u[i].len == (i == 3 ? 5u : 16u));
    }
}

TEST_CASE("packed: in-order, a partly written buffer stands alone and a run starts after it", "[packed]") {
    four_taken_in_order t;
    auto& [g, c, drv, dev, ch] = t;
    const std::uint32_t lens[4] = {5, 16, 16, 3};
    used_element ue[4];
    for (int i = 0; i < 4; ++i) ue[i] = {ch[i].id(), lens[i]};
    REQUIRE(dev->push_burst(ue) == 4);
    // Slot 0: the first buffer alone (its length is its own); slot 2: buffers 1-3 as one run
    // with the last id and length; the used side then skipped all 8 slots.
    std::byte* d = g.at(c.desc_addr);
    CHECK(vvu::le::load<std::uint16_t>(d + 12) == ch[0].id());
    CHECK(vvu::le::load<std::uint32_t>(d + 8) == 5);
    CHECK(vvu::le::load<std::uint16_t>(d + 32 + 12) == ch[3].id());
    CHECK(vvu::le::load<std::uint32_t>(d + 32 + 8) == 3);
    CHECK(dev->state().used_idx == 0);
    CHECK(dev->state().used_wrap == false);
    CHECK(dev->inflight_count() == 0);
    used_buffer u[4];
    REQUIRE(drv->reap_burst(u) == 4);
    for (int i = 0; i < 4; ++i) {
        CHECK(u[i].token == 100u + i);
        CHECK(u[i].len == lens[i]);
    }
}

TEST_CASE("packed: device resumes at a given state", "[packed]") {
    guest g(1 << 20);
    auto c = place_packed(g, 5);
    auto drv = packed_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    const std::uint64_t buf = g.alloc(64);
    packed_state saved;
    {
        auto dev = packed_device<local_memory>::create(g.mem(), c);
        REQUIRE(dev);
        for (int round = 0; round < 3; ++round) {   // 12 descriptors: wraps the 5-ring twice
            for (int i = 0; i < 4; ++i) {
                const buffer b{buf, 8};
                REQUIRE(drv->add({&b, 1}, {}, 0));
            }
            chain ch[4];
            REQUIRE(dev->pop_burst(ch) == 4);
            for (auto& x : ch) REQUIRE(dev->push(x.id(), 0));
            used_buffer u[4];
            REQUIRE(drv->reap_burst(u) == 4);
        }
        saved = dev->state();
    }
    CHECK(saved.avail_idx == 2);
    CHECK(saved.avail_wrap == true);
    CHECK(saved.used_idx == 2);
    auto dev = packed_device<local_memory>::create(g.mem(), c, packed_state::from_vring_base(saved.to_vring_base()));
    REQUIRE(dev);
    const buffer b{buf, 8};
    REQUIRE(drv->add({&b, 1}, {}, 9));
    chain ch;
    REQUIRE(dev->pop(ch));
    REQUIRE(dev->push(ch.id(), 0));
    used_buffer u;
    REQUIRE(drv->reap(u));
    CHECK(u.token == 9);
}

TEST_CASE("packed: a tracked ring (inflight region) exchanges random chains like an untracked one",
          "[packed][inflight]") {
    // Every take and completion recorded (packed_inflight.hpp); the data path must not change:
    // indirect tables, IN_ORDER batches of several buffers in one used descriptor, sizes that
    // are not powers of two, a ring of one.
    struct cfg { std::uint32_t size; ring_features f; std::uint64_t ops; };
    const cfg cases[] = {
        {1, {}, 20000},
        {3, {false, true, false}, 20000},
        {100, {true, true, false}, 20000},
        {256, {false, false, true}, 20000},
        {1000, {true, true, true}, 20000},
    };
    std::uint32_t seed = 700;
    for (const cfg& c : cases) {
        INFO("size " << c.size << " event_idx " << c.f.event_idx << " indirect " << c.f.indirect
                     << " in_order " << c.f.in_order);
        const auto st = run_exchange<packed_tracked_layout_t>(c.size, c.f, c.ops, seed++);
        CHECK(st.errors == 0);
        CHECK(st.chains >= c.ops);
        if (c.f.indirect) CHECK(st.indirect > 0);
    }
}
