#include "vvu/ring/split.hpp"

#include "harness.hpp"

#include <catch2/catch.hpp>

using namespace ringtest;

TEST_CASE("split: layout sizes and offsets follow virtio 1.2 §2.7", "[split]") {
    STATIC_REQUIRE(sizeof(split_desc) == 16);
    STATIC_REQUIRE(split_layout::avail_bytes(256) == 6 + 512);
    STATIC_REQUIRE(split_layout::used_bytes(256) == 6 + 2048);
    STATIC_REQUIRE(split_layout::used_event_off(8) == 20);
    STATIC_REQUIRE(split_layout::avail_event_off(8) == 68);
}

TEST_CASE("split: setup rejects bad sizes, misaligned and out-of-memory rings", "[split]") {
    guest g(1 << 20);
    auto c = place_split(g, 256);
    for (std::uint32_t bad : {0u, 3u, 100u, 65536u}) {
        auto cc = c;
        cc.size = bad;
        auto d = split_device<local_memory>::create(g.mem(), cc);
        REQUIRE_FALSE(d);
        CHECK(d.error() == errc::bad_queue_size);
    }
    auto cc = c;
    cc.desc_addr += 8;
    CHECK(split_device<local_memory>::create(g.mem(), cc).error() == errc::ring_misaligned);
    cc = c;
    cc.used_addr += 2;
    CHECK(split_driver<local_memory>::create(g.mem(), cc).error() == errc::ring_misaligned);
    cc = c;
    cc.avail_addr = g.end() - 100;
    CHECK(split_device<local_memory>::create(g.mem(), cc).error() == errc::ring_out_of_memory);
    CHECK(split_device<local_memory>::create(g.mem(), c));
    CHECK(g.guards_intact());
}

TEST_CASE("split: driver and device exchange random chains with every byte checked", "[split]") {
    struct cfg { std::uint32_t size; ring_features f; std::uint64_t ops; };
    const cfg cases[] = {
        {1, {}, 70000},
        {2, {true, true, false}, 70000},
        {256, {false, true, false}, 70000},
        {256, {true, false, true}, 40000},
        {1024, {true, true, false}, 40000},
        {32768, {false, true, false}, 40000},
    };
    std::uint64_t total = 0;
    std::uint32_t seed = 1;
    for (const cfg& c : cases) {
        INFO("size " << c.size << " event_idx " << c.f.event_idx << " indirect " << c.f.indirect
                     << " in_order " << c.f.in_order);
        const auto st = run_exchange<split_layout_t>(c.size, c.f, c.ops, seed++);
        CHECK(st.errors == 0);
        CHECK(st.chains >= c.ops);
        if (c.f.indirect) CHECK(st.indirect > 0);
        total += st.chains;
    }
    CHECK(total > 200000);
}

TEST_CASE("split: device resumes at a given state and reports it", "[split]") {
    guest g(1 << 20);
    auto c = place_split(g, 8);
    auto drv = split_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    const std::uint64_t buf = g.alloc(64);
    // Post 5 buffers; a first device takes 3 and is "stopped" (GET_VRING_BASE).
    for (int i = 0; i < 5; ++i) {
        const buffer b{buf, 8};
        REQUIRE(drv->add({&b, 1}, {}, static_cast<std::uint64_t>(i)));
    }
    split_state saved;
    {
        auto dev = split_device<local_memory>::create(g.mem(), c);
        REQUIRE(dev);
        chain ch[3];
        REQUIRE(dev->pop_burst(ch) == 3);
        for (auto& x : ch) REQUIRE(dev->push(x.id(), 0));
        CHECK(dev->inflight_count() == 0);
        saved = dev->state();
        CHECK(saved.next_avail == 3);
        CHECK(dev->used_index() == 3);
    }
    // A new device (live update / SET_VRING_BASE) continues where the old one stopped.
    auto dev2 = split_device<local_memory>::create(g.mem(), c, saved);
    REQUIRE(dev2);
    CHECK(dev2->used_index() == 3);
    chain ch[8];
    const auto n = dev2->pop_burst(ch);
    REQUIRE(n == 2);
    CHECK(dev2->inflight_count() == 2);
    std::vector<std::uint16_t> heads;
    dev2->for_each_inflight([&](std::uint16_t h) { heads.push_back(h); });
    CHECK(heads.size() == 2);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(dev2->push(ch[i].id(), 0));
    used_buffer u[8];
    CHECK(drv->reap_burst(u) == 5);
    CHECK_FALSE(dev2->push(ch[0].id(), 0));   // not in flight any more
}

TEST_CASE("split: a driver saved mid-stream is restored over the same ring and carries on", "[split][handover]") {
    guest g(1 << 20);
    auto c = place_split(g, 8);
    auto drv = split_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    auto dev = split_device<local_memory>::create(g.mem(), c);
    REQUIRE(dev);
    const std::uint64_t buf = g.alloc(64);
    // 6 buffers posted (tokens 0-5), the device completes 4 of them, the driver reaps 2.
    for (std::uint64_t i = 0; i < 6; ++i) {
        const buffer b{buf + 8 * i, 8};
        REQUIRE(drv->add({&b, 1}, {}, i));
    }
    chain ch[4];
    REQUIRE(dev->pop_burst(ch) == 4);
    for (auto& x : ch) REQUIRE(dev->push(x.id(), 0));
    used_buffer u[8];
    REQUIRE(drv->reap_burst(std::span(u, 2)) == 2);

    vvu::byte_writer w;
    drv->save(w);
    const auto bytes = w.take();
    vvu::byte_reader r(bytes);
    auto restored = split_driver<local_memory>::restore(g.mem(), c, {}, r);
    REQUIRE(restored);
    CHECK(r.done());
    CHECK(restored->outstanding() == 4);
    CHECK(restored->free_descriptors() == 4);
    // What the old driver had not reaped comes to the new one, with its tokens, in order.
    REQUIRE(restored->reap_burst(u) == 2);
    CHECK(u[0].token == 2);
    CHECK(u[1].token == 3);
    // It posts on: the free list continues where the old one left it.
    for (std::uint64_t i = 6; i < 12; ++i) {
        const buffer b{buf, 8};
        REQUIRE(restored->add({&b, 1}, {}, i));
    }
    const buffer extra{buf, 8};
    CHECK_FALSE(restored->add({&extra, 1}, {}, 99)); // the ring of 8 is full: 4, 5 and six new
    chain more[8];
    const auto n = dev->pop_burst(more);
    REQUIRE(n == 8);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(dev->push(more[i].id(), 0));
    REQUIRE(restored->reap_burst(u) == 8);
    for (std::size_t i = 0; i < 8; ++i) CHECK(u[i].token == 4 + i);
    CHECK(restored->outstanding() == 0);
}

TEST_CASE("split: a saved driver state that does not add up is refused", "[split][handover][hostile]") {
    guest g(1 << 20);
    auto c = place_split(g, 8);
    auto drv = split_driver<local_memory>::create(g.mem(), c);
    REQUIRE(drv);
    const std::uint64_t buf = g.alloc(64);
    for (std::uint64_t i = 0; i < 3; ++i) {
        const buffer b{buf, 8};
        REQUIRE(drv->add({&b, 1}, {}, i));
    }
    vvu::byte_writer w;
    drv->save(w);
    const auto good = w.take();
    auto restore = [&](std::vector<std::byte> bytes) {
        vvu::byte_reader r(bytes);
        return split_driver<local_memory>::restore(g.mem(), c, {}, r);
    };
    REQUIRE(restore(good));
    // Every truncation, and every single byte set to 0xff, is refused or yields a driver whose
    // state still adds up; none may crash (this runs under ASan/UBSan in CI).
    for (std::size_t n = 0; n < good.size(); ++n) CHECK_FALSE(restore({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)}));
    std::size_t refused = 0;
    for (std::size_t i = 0; i < good.size(); ++i) {
        auto b = good;
        b[i] = std::byte{0xff};
        auto d = restore(b);
        if (!d) {
            CHECK(d.error() == errc::bad_saved_state);
            ++refused;
        } else {
            CHECK(d->outstanding() + d->free_descriptors() >= 3); // tokens and flags may change, counts not
        }
    }
    CHECK(refused > good.size() / 4);
    // Another ring size.
    auto c16 = place_split(g, 16);
    vvu::byte_reader r(good);
    CHECK(split_driver<local_memory>::restore(g.mem(), c16, {}, r).error() == errc::bad_saved_state);
}
