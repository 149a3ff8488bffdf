#include "vvu/ring/notify.hpp"

#include "harness.hpp"

#include <catch2/catch.hpp>

#include <optional>

using namespace ringtest;

TEST_CASE("notify: need_event arithmetic including the 16-bit wrap", "[notify][split]") {
    STATIC_REQUIRE(need_event(0, 1, 0));
    STATIC_REQUIRE_FALSE(need_event(1, 1, 0));
    STATIC_REQUIRE(need_event(5, 8, 3));
    STATIC_REQUIRE_FALSE(need_event(8, 8, 3));
    STATIC_REQUIRE_FALSE(need_event(2, 8, 3));
    // wrap: old 0xfffe, new 2 covers 0xfffe, 0xffff, 0, 1
    STATIC_REQUIRE(need_event(0xffff, 2, 0xfffe));
    STATIC_REQUIRE(need_event(0, 2, 0xfffe));
    STATIC_REQUIRE(need_event(1, 2, 0xfffe));
    STATIC_REQUIRE_FALSE(need_event(2, 2, 0xfffe));
    STATIC_REQUIRE_FALSE(need_event(0xfffd, 2, 0xfffe));
    STATIC_REQUIRE_FALSE(need_event(0, 5, 5));   // nothing new: never
}

TEST_CASE("notify: packed descriptor event positions with wrap counters", "[notify][packed]") {
    constexpr std::uint32_t n = 4;
    // positions: wrap 1 -> offset, wrap 0 -> offset + n
    STATIC_REQUIRE(packed_need_event(0 | 0x8000, 0, 1, n));              // (0, wrap 1) made avail
    STATIC_REQUIRE_FALSE(packed_need_event(1 | 0x8000, 0, 1, n));
    STATIC_REQUIRE(packed_need_event(0, packed_position(3, true, n), packed_position(1, false, n), n));
    STATIC_REQUIRE_FALSE(packed_need_event(0 | 0x8000, packed_position(3, true, n), packed_position(1, false, n), n));
    // second lap back to wrap 1
    STATIC_REQUIRE(packed_need_event(0 | 0x8000, packed_position(3, false, n), packed_position(1, true, n), n));
    STATIC_REQUIRE(packed_need_event(7, 0, 1, n));   // garbage offset: notify
}

namespace {

template <class Layout>
struct pair_fixture {
    guest g{1 << 20};
    std::uint64_t buf = g.alloc(64);
    std::optional<typename Layout::template driver<local_memory>> drv;
    std::optional<typename Layout::template device<local_memory>> dev;
    decltype(Layout::place(g, 1, {})) config;
    pair_fixture(std::uint32_t size, ring_features f) : config(Layout::place(g, size, f)) {
        drv.emplace(*Layout::template driver<local_memory>::create(g.mem(), config));
        dev.emplace(*Layout::template device<local_memory>::create(g.mem(), config));
    }
    // The device side starts again where it stopped (a vring restarted, a hand-over, the
    // destination of a migration): a new object over the same ring.
    void restart_device() {
        const auto st = dev->state();
        dev.reset();
        dev.emplace(*Layout::template device<local_memory>::create(g.mem(), config, st));
    }
    bool add() {
        const buffer b{buf, 8};
        return drv->add({&b, 1}, {}, 0);
    }
    void take_all_and_return() {
        chain c[max_burst];
        std::size_t n;
        while ((n = dev->pop_burst(c)) != 0)
            for (std::size_t i = 0; i < n; ++i) REQUIRE(dev->push(c[i].id(), 0));
    }
    void reap_all() {
        used_buffer u[max_burst];
        while (drv->reap_burst(u) != 0) {}
    }
};

// A device that sleeps between kicks: per round it enables notifications; the driver adds two
// buffers one at a time, asking needs_kick after each. Exactly the first of each round kicks.
template <class Layout>
void kicks_per_round(std::uint32_t size, bool event_idx, int rounds) {
    pair_fixture<Layout> p(size, {event_idx, false, false});
    int kicks = 0, irqs = 0;
    for (int r = 0; r < rounds; ++r) {
        REQUIRE_FALSE(p.dev->enable_notifications());   // nothing pending: sleep
        REQUIRE(p.add());
        kicks += p.drv->needs_kick();
        p.dev->disable_notifications();   // woken: poll without kicks
        if (size >= 2) {
            REQUIRE(p.add());
            kicks += p.drv->needs_kick();
        }
        // driver waits for interrupts; device returns buffers one at a time
        REQUIRE_FALSE(p.drv->enable_interrupts());
        chain c;
        while (p.dev->pop(c)) {
            REQUIRE(p.dev->push(c.id(), 0));
            irqs += p.dev->needs_interrupt();
            p.drv->disable_interrupts();   // driver woken on the first; polls the rest
        }
        p.reap_all();
    }
    CHECK(kicks == rounds);
    CHECK(irqs == rounds);
    CHECK_FALSE(p.drv->needs_kick());        // nothing new: no kick
    CHECK_FALSE(p.dev->needs_interrupt());   // nothing new: no interrupt
}

} // namespace

TEST_CASE("notify: split kicks and interrupts without event idx (flags)", "[notify][split]") {
    kicks_per_round<split_layout_t>(8, false, 1000);
}

TEST_CASE("notify: split kicks and interrupts with event idx across the 16-bit wrap", "[notify][split]") {
    kicks_per_round<split_layout_t>(4, true, 70000);   // 140 000 buffers: indices wrap twice
}

TEST_CASE("notify: packed kicks and interrupts without event idx", "[notify][packed]") {
    kicks_per_round<packed_layout_t>(3, false, 1000);
}

TEST_CASE("notify: packed kicks and interrupts with descriptor events and wrap counters", "[notify][packed]") {
    kicks_per_round<packed_layout_t>(3, true, 20000);
    kicks_per_round<packed_layout_t>(5, true, 20000);
    kicks_per_round<packed_layout_t>(1, true, 2000);
}

TEST_CASE("notify: split event idx scripted sequence", "[notify][split]") {
    pair_fixture<split_layout_t> p(8, {true, false, false});
    CHECK_FALSE(p.dev->enable_notifications());   // avail_event = 0
    REQUIRE(p.add());
    CHECK(p.drv->needs_kick());        // index 0 published: the device asked for it
    REQUIRE(p.add());
    CHECK_FALSE(p.drv->needs_kick());  // device already kicked, has not re-armed
    REQUIRE(p.add());
    REQUIRE(p.add());
    CHECK_FALSE(p.drv->needs_kick());
    CHECK(p.dev->enable_notifications());   // re-arming sees pending work: no sleep
    p.take_all_and_return();
    CHECK_FALSE(p.dev->enable_notifications());   // avail_event = 4
    buffer b{p.buf, 8};
    request r[3] = {{{&b, 1}, {}, 0, false}, {{&b, 1}, {}, 0, false}, {{&b, 1}, {}, 0, false}};
    REQUIRE(p.drv->add_burst(r) == 3);
    CHECK(p.drv->needs_kick());   // one kick for the burst
    // interrupts: driver asks for the next used entry only
    p.reap_all();
    CHECK_FALSE(p.drv->enable_interrupts());   // used_event = 4
    chain c[3];
    REQUIRE(p.dev->pop_burst(c) == 3);
    REQUIRE(p.dev->push(c[0].id(), 0));
    CHECK(p.dev->needs_interrupt());
    REQUIRE(p.dev->push(c[1].id(), 0));
    CHECK_FALSE(p.dev->needs_interrupt());
    used_buffer u[4];
    CHECK(p.drv->reap_burst(u) == 2);
    CHECK_FALSE(p.drv->enable_interrupts());   // used_event = 6
    used_element e{c[2].id(), 0};
    REQUIRE(p.dev->push_burst({&e, 1}) == 1);
    CHECK(p.dev->needs_interrupt());
}

TEST_CASE("notify: packed flags DISABLE suppress, ENABLE restores", "[notify][packed]") {
    pair_fixture<packed_layout_t> p(4, {false, false, false});
    REQUIRE(p.add());
    CHECK(p.drv->needs_kick());
    p.dev->disable_notifications();
    REQUIRE(p.add());
    CHECK_FALSE(p.drv->needs_kick());
    CHECK(p.dev->enable_notifications());   // work arrived while disabled
    p.take_all_and_return();
    CHECK(p.dev->needs_interrupt());
    p.drv->disable_interrupts();
    REQUIRE(p.add());
    CHECK(p.drv->needs_kick());
    p.take_all_and_return();
    CHECK_FALSE(p.dev->needs_interrupt());
    CHECK(p.drv->enable_interrupts());   // used buffers arrived while disabled
}

namespace {

// The driver asked for an interrupt at the next used entry; the device pushed it and decided to
// interrupt, but the interrupt never reached the driver (it went to a call fd being replaced,
// or to a migration source about to stop). The device side starts again: its first push must
// interrupt, although the driver's event index lies behind the new used entries — otherwise
// the driver waits for good (it only re-arms after an interrupt).
template <class Layout>
void first_push_after_restart_interrupts() {
    pair_fixture<Layout> p(8, {true, false, false});
    REQUIRE(p.add());
    REQUIRE(p.add());
    CHECK_FALSE(p.drv->enable_interrupts());   // interrupt me at the first used entry
    p.take_all_and_return();
    CHECK(p.dev->needs_interrupt());           // decided... and lost
    p.restart_device();
    REQUIRE(p.add());
    p.take_all_and_return();
    CHECK(p.dev->needs_interrupt());           // the event index lies behind: interrupt anyway
    REQUIRE(p.add());
    p.take_all_and_return();
    CHECK_FALSE(p.dev->needs_interrupt());     // from then on the event index rules again
    p.reap_all();
    CHECK_FALSE(p.drv->enable_interrupts());
    REQUIRE(p.add());
    p.take_all_and_return();
    CHECK(p.dev->needs_interrupt());
}

} // namespace

TEST_CASE("notify: split event idx: the first push after a restart interrupts", "[notify][split]") {
    first_push_after_restart_interrupts<split_layout_t>();
}

TEST_CASE("notify: packed descriptor events: the first push after a restart interrupts", "[notify][packed]") {
    first_push_after_restart_interrupts<packed_layout_t>();
}
