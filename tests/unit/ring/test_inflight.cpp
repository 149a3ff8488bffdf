// Inflight I/O tracking of split rings (ring/inflight.hpp) and, further down, packed rings
// (ring/packed_inflight.hpp): a device "killed" between taking
// chains and completing them — its object dropped, the memory left as it was — and a new one
// attached to the same inflight region takes exactly the chains that were in flight again,
// oldest first, then goes on with new ones: each request completes once, none is lost. And the
// region, which the front-end can scribble on, is checked before it is trusted.
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <set>

using namespace ringtest;

namespace {

using device_t = split_device<local_memory>;
using driver_t = split_driver<local_memory>;

struct rig {
    guest g{1 << 20};
    split_config cfg;
    std::vector<std::byte> region;
    std::uint64_t buffers = 0;
    driver_t driver;

    explicit rig(std::uint32_t size)
        : cfg(place_split(g, size)), region(split_inflight_layout::bytes(size)),
          buffers(g.alloc(64 * size, 64)), driver(*driver_t::create(g.mem(), cfg)) {}

    // A device over the ring that records in the region (what a restarted back-end builds).
    device_t device() {
        auto used = vvu::le::load<std::uint16_t>(g.at(cfg.used_addr) + split_layout::idx_off);
        auto t = split_inflight::attach(region.data(), region.size(), cfg.size, used);
        REQUIRE(t);
        auto d = device_t::create_tracked(g.mem(), cfg, *t);
        REQUIRE(d);
        return std::move(*d);
    }
    // Posts request `seq` (one writable 64-byte buffer; the token is the sequence number).
    bool post(std::uint64_t seq) {
        const buffer w{buffers + 64 * (seq % cfg.size), 64};
        return driver.add({}, std::span(&w, 1), seq);
    }
};

} // namespace

TEST_CASE("inflight: a crash between taking and completing loses nothing and completes nothing twice",
          "[inflight][split]") {
    rig r(16);
    for (std::uint64_t s = 0; s < 10; ++s) REQUIRE(r.post(s));
    std::map<std::uint16_t, std::uint64_t> seq_of_head; // which request each head carried
    {
        auto dev = r.device();
        std::array<chain, 6> taken;
        REQUIRE(dev.pop_burst(taken) == 6);
        for (std::uint64_t s = 0; s < 6; ++s) seq_of_head[taken[s].id()] = s;
        // Completed out of order: requests 3 and 1; 0, 2, 4, 5 stay in flight.
        REQUIRE(dev.push(taken[3].id(), 64));
        REQUIRE(dev.push(taken[1].id(), 64));
        // The back-end dies here: its object goes, nothing more is written.
    }
    auto dev = r.device();
    std::vector<std::uint16_t> retaken;
    std::array<chain, 16> c;
    const std::size_t n = dev.pop_burst(c);
    for (std::size_t i = 0; i < n; ++i) retaken.push_back(c[i].id());
    // The four in flight first, in the order they were first taken; then requests 6..9.
    REQUIRE(n == 8);
    for (std::size_t i = 0; i < 4; ++i) CHECK(seq_of_head[retaken[i]] == std::vector<std::uint64_t>{0, 2, 4, 5}[i]);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(dev.push(retaken[i], 64));
    std::array<used_buffer, 16> done;
    const std::size_t reaped = r.driver.reap_burst(done);
    REQUIRE(reaped == 10);
    std::multiset<std::uint64_t> tokens;
    for (std::size_t i = 0; i < reaped; ++i) tokens.insert(done[i].token);
    for (std::uint64_t s = 0; s < 10; ++s) CHECK(tokens.count(s) == 1);
    CHECK(!dev.broken());
}

TEST_CASE("inflight: a crash between publishing a batch and clearing it", "[inflight][split]") {
    std::vector<std::byte> region(split_inflight_layout::bytes(8));
    auto t = split_inflight::attach(region.data(), region.size(), 8, 0);
    REQUIRE(t);
    CHECK(t->fresh());
    for (std::uint16_t h : {5, 1, 6}) t->taken(h);
    t->completing(1); // head 1's batch linked; then the used index goes to 1 in the ring...
    // ...and the back-end dies before clearing head 1 in the region.
    auto again = split_inflight::attach(region.data(), region.size(), 8, 1);
    REQUIRE(again);
    CHECK(!again->fresh());
    auto pending = again->recover(1);
    REQUIRE(pending);
    CHECK(*pending == std::vector<std::uint16_t>{5, 6});
    // The region now agrees with the ring; a second recovery finds the same.
    auto twice = again->recover(1);
    REQUIRE(twice);
    CHECK(*twice == std::vector<std::uint16_t>{5, 6});
}

TEST_CASE("inflight: random crash points, many rounds, every request exactly once", "[inflight][split]") {
    std::mt19937 rng(GENERATE(1u, 2u, 3u, 4u));
    rig r(32);
    std::uint64_t next_seq = 0;
    std::multiset<std::uint64_t> completed;
    std::map<std::uint16_t, std::uint64_t> seq_of_head;
    for (int round = 0; round < 50; ++round) {
        auto dev = r.device();
        // Keep the ring busy: post what fits.
        while (r.post(next_seq)) ++next_seq;
        // Take some, complete a random subset in random order, leave the rest in flight.
        std::array<chain, 32> c;
        const std::size_t n = dev.pop_burst(std::span(c).first(std::uniform_int_distribution<std::size_t>(0, 32)(rng)));
        std::vector<std::uint16_t> heads;
        for (std::size_t i = 0; i < n; ++i) heads.push_back(c[i].id());
        std::shuffle(heads.begin(), heads.end(), rng);
        const std::size_t done = std::uniform_int_distribution<std::size_t>(0, heads.size())(rng);
        for (std::size_t i = 0; i < done; ++i) REQUIRE(dev.push(heads[i], 64));
        std::array<used_buffer, 32> u;
        for (std::size_t k; (k = r.driver.reap_burst(u)) != 0;)
            for (std::size_t i = 0; i < k; ++i) completed.insert(u[i].token);
        REQUIRE(!dev.broken());
        // Crash: dev goes out of scope with heads[done..] in flight.
    }
    // A last back-end completes everything.
    auto dev = r.device();
    std::array<chain, 32> c;
    for (std::size_t n; (n = dev.pop_burst(c)) != 0;)
        for (std::size_t i = 0; i < n; ++i) REQUIRE(dev.push(c[i].id(), 64));
    std::array<used_buffer, 32> u;
    for (std::size_t k; (k = r.driver.reap_burst(u)) != 0;)
        for (std::size_t i = 0; i < k; ++i) completed.insert(u[i].token);
    REQUIRE(completed.size() == next_seq);
    for (std::uint64_t s = 0; s < next_seq; ++s) REQUIRE(completed.count(s) == 1);
}

TEST_CASE("inflight: a region no back-end wrote is refused", "[inflight][split][hostile]") {
    using L = split_inflight_layout;
    std::vector<std::byte> region(L::bytes(8));
    REQUIRE(split_inflight::attach(region.data(), region.size(), 8, 0));
    SECTION("too small") {
        CHECK(split_inflight::attach(region.data(), region.size() - 1, 8, 0).error() == errc::inflight_region_too_small);
    }
    SECTION("another ring size") {
        CHECK(split_inflight::attach(region.data(), region.size(), 4, 0).error() == errc::inflight_region_mismatch);
    }
    SECTION("another version") {
        vvu::le::store<std::uint16_t>(region.data() + L::version_off, 2);
        CHECK(split_inflight::attach(region.data(), region.size(), 8, 0).error() == errc::inflight_region_mismatch);
    }
    SECTION("a last batch longer than the ring") {
        auto t = split_inflight::attach(region.data(), region.size(), 8, 0);
        CHECK(t->recover(100).error() == errc::inflight_region_corrupt);
    }
    SECTION("a batch list that leaves the ring") {
        vvu::le::store<std::uint16_t>(region.data() + L::last_batch_head_off, 9);
        auto t = split_inflight::attach(region.data(), region.size(), 8, 0);
        CHECK(t->recover(1).error() == errc::inflight_region_corrupt);
    }
    SECTION("an inflight flag that is neither 0 nor 1") {
        region[L::header_size + 3 * L::entry_size] = std::byte{7};
        auto t = split_inflight::attach(region.data(), region.size(), 8, 0);
        CHECK(t->recover(0).error() == errc::inflight_region_corrupt);
    }
}

// ============================================================================ packed rings
// Inflight tracking of packed rings (ring/packed_inflight.hpp). A packed device writes used
// elements over descriptor slots, so the chains in flight must come back from the region's
// copies. Requests are sequence numbered: request `seq` is one readable buffer holding seq and
// one or two writable buffers (some requests indirect); the device reads seq from the chain it
// was given and writes it into the first writable buffer, so the driver checks that each
// completion it reaps carries the chain it posted under that token.
//
// Crashes are staged at the points the region's store order defines: a device object dropped
// (between pop and push), and the region (and ring) put back to the state a process killed
// inside pop_burst or push_burst leaves — the stores after the kill point undone, knowing which
// they are (packed_inflight.hpp: take = copies, head, free_head, old_free_head; complete =
// links, free_head + used_idx + used_wrap_counter, the ring's RELEASE store of the first used
// descriptor's flags, inflight flags cleared, old_*).

namespace {

using pdevice_t = packed_device<local_memory>;
using pdriver_t = packed_driver<local_memory>;
using PL = packed_inflight_layout;

struct packed_rig {
    static constexpr std::uint32_t slot = 32; // per request: readable 8 B, writable 8 + 8 B
    guest g{1 << 20};
    packed_config cfg;
    std::vector<std::byte> region;
    std::uint64_t buffers = 0;
    pdriver_t driver;

    explicit packed_rig(std::uint32_t size, ring_features f = {false, true, false})
        : cfg(place_packed(g, size, f)), region(PL::bytes(size), std::byte{0}),
          buffers(g.alloc(std::size_t{slot} * 4096, 64)), driver(make_driver(g, cfg)) {}

    static pdriver_t make_driver(guest& g, const packed_config& c) {
        const indirect_area ind{g.alloc(16ULL * 3 * c.size, 16), 3};
        auto d = pdriver_t::create(g.mem(), c, ind);
        REQUIRE(d);
        return std::move(*d);
    }

    vvu::expected<pdevice_t, std::error_code> try_device() {
        auto t = packed_inflight::attach(region.data(), region.size(), cfg.size, 0, true);
        if (!t) return vvu::unexpected(t.error());
        return pdevice_t::create_tracked(g.mem(), cfg, std::move(*t));
    }
    pdevice_t device() {
        auto d = try_device();
        INFO((d ? std::string() : d.error().message()));
        REQUIRE(d);
        return std::move(*d);
    }

    std::uint64_t rd(std::uint64_t seq) const { return buffers + slot * seq; }
    bool post(std::uint64_t seq) {
        REQUIRE(seq < 4096);
        vvu::le::store<std::uint64_t>(g.at(rd(seq)), seq);
        vvu::le::store<std::uint64_t>(g.at(rd(seq) + 8), ~0ULL);
        const buffer r{rd(seq), 8};
        const buffer w[2] = {{rd(seq) + 8, 8}, {rd(seq) + 16, 8}};
        return driver.add(std::span(&r, 1), std::span(w, 1 + seq % 2), seq, seq % 5 == 0);
    }
    // The device's work on a chain: which request it is, and the answer written back.
    static std::uint64_t serve(const chain& c) {
        std::array<std::byte, 8> b{};
        REQUIRE(c.readable_bytes() == 8);
        REQUIRE(c.copy_from(b) == 8);
        const auto seq = vvu::le::load<std::uint64_t>(b.data());
        std::array<std::byte, 8> answer{};
        vvu::le::store<std::uint64_t>(answer.data(), seq);
        REQUIRE(c.copy_to(answer) == 8);
        return seq;
    }
    // Reaps what the driver sees; each completion must carry its own request's answer.
    void reap(std::multiset<std::uint64_t>& completed) {
        std::array<used_buffer, 32> u;
        for (std::size_t k; (k = driver.reap_burst(u)) != 0;)
            for (std::size_t i = 0; i < k; ++i) {
                CHECK(u[i].len == 8);
                CHECK(vvu::le::load<std::uint64_t>(g.at(rd(u[i].token) + 8)) == u[i].token);
                completed.insert(u[i].token);
            }
        REQUIRE(!driver.broken());
    }
    std::byte* flags_at(std::uint16_t idx) { return g.at(cfg.desc_addr) + 16 * std::size_t{idx} + 14; }
};

std::uint8_t inflight_flag(const std::vector<std::byte>& r, std::uint32_t e) {
    return static_cast<std::uint8_t>(r[PL::header_size + PL::entry_size * e + PL::entry_inflight_off]);
}

// The region as a process killed after the ring's release store of a batch and before the
// inflight flags were cleared leaves it: the flags cleared since `before` set again, the old_*
// fields as they were.
void undo_clearing(std::vector<std::byte>& region, const std::vector<std::byte>& before, std::uint32_t size) {
    for (std::uint32_t e = 0; e < size; ++e)
        if (inflight_flag(before, e) == 1 && inflight_flag(region, e) == 0)
            region[PL::header_size + PL::entry_size * e + PL::entry_inflight_off] = std::byte{1};
    std::copy_n(before.begin() + PL::old_free_head_off, 2, region.begin() + PL::old_free_head_off);
    std::copy_n(before.begin() + PL::old_used_idx_off, 2, region.begin() + PL::old_used_idx_off);
    region[PL::old_used_wrap_off] = before[PL::old_used_wrap_off];
}

enum class crash { after_pop, mid_take, between_free_heads, before_publish, after_publish };

} // namespace

TEST_CASE("packed inflight: out-of-order completion, then a crash at each point; nothing lost or twice",
          "[inflight][packed]") {
    const crash point = GENERATE(crash::after_pop, crash::mid_take, crash::between_free_heads, crash::before_publish,
                                 crash::after_publish);
    const std::uint32_t size = GENERATE(16u, 21u);
    INFO("crash point " << int(point) << " size " << size);
    packed_rig r(size);
    std::uint64_t next_seq = 0;
    while (r.post(next_seq)) ++next_seq;
    std::multiset<std::uint64_t> completed;
    {
        auto dev = r.device();
        CHECK(dev.resubmitting() == 0);
        std::array<chain, 32> c;
        const std::size_t n = dev.pop_burst(std::span(c).first(5));
        REQUIRE(n == 5);
        std::vector<used_element> done;
        for (std::size_t i : {3u, 0u, 4u}) { // out of order; 1 and 2 stay in flight
            r.serve(c[i]);
            done.push_back({c[i].id(), 8});
        }
        const auto before = r.region;
        const std::uint16_t used_before = dev.state().used_idx;
        const auto ring_flags_before = vvu::le::load<std::uint16_t>(r.flags_at(used_before));
        switch (point) {
        case crash::after_pop: REQUIRE(dev.push_burst(done) == 3); break;
        case crash::mid_take:
        case crash::between_free_heads: {
            REQUIRE(dev.push_burst(done) == 3);
            const auto taking = r.region;
            std::array<chain, 2> more;
            REQUIRE(dev.pop_burst(more) == 2);
            // Killed before the burst's take was committed: its chains are read from the ring again.
            std::copy_n(taking.begin() + PL::old_free_head_off, 2, r.region.begin() + PL::old_free_head_off);
            if (point == crash::mid_take)
                std::copy_n(taking.begin() + PL::free_head_off, 2, r.region.begin() + PL::free_head_off);
            break;
        }
        case crash::before_publish:
            REQUIRE(dev.push_burst(done) == 3);
            undo_clearing(r.region, before, size);
            vvu::le::store<std::uint16_t>(r.flags_at(used_before), ring_flags_before);
            break;
        case crash::after_publish:
            REQUIRE(dev.push_burst(done) == 3);
            undo_clearing(r.region, before, size);
            break;
        }
    }
    r.reap(completed);
    // The driver goes on meanwhile: new requests in the slots it got back.
    while (r.post(next_seq)) ++next_seq;
    auto dev = r.device();
    CHECK(dev.resubmitting() == (point == crash::before_publish ? 5u : 2u));
    std::array<chain, 32> c;
    for (std::size_t n; (n = dev.pop_burst(c)) != 0;) {
        std::vector<used_element> done;
        for (std::size_t i = 0; i < n; ++i) {
            r.serve(c[i]);
            done.push_back({c[i].id(), 8});
        }
        REQUIRE(dev.push_burst(done) == n);
        r.reap(completed);
        while (next_seq < 40 && r.post(next_seq)) ++next_seq;
    }
    REQUIRE(!dev.broken());
    CHECK(dev.inflight_count() == 0);
    CHECK(r.driver.outstanding() == 0);
    REQUIRE(completed.size() == next_seq);
    for (std::uint64_t s = 0; s < next_seq; ++s) CHECK(completed.count(s) == 1);
    CHECK(r.g.guards_intact());
}

TEST_CASE("packed inflight: random crash points over many laps, every request exactly once", "[inflight][packed]") {
    const std::uint32_t seed = GENERATE(1u, 2u, 3u, 4u, 5u, 6u);
    const std::uint32_t size = seed % 2 ? 16u : 21u;
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t lo, std::size_t hi) { return std::uniform_int_distribution<std::size_t>(lo, hi)(rng); };
    packed_rig r(size);
    std::uint64_t next_seq = 0;
    std::multiset<std::uint64_t> completed;
    std::size_t resubmitted = 0;
    for (int round = 0; round < 60; ++round) {
        auto dev = r.device();
        resubmitted += dev.resubmitting();
        while (next_seq < 3000 && r.post(next_seq)) ++next_seq;
        std::array<chain, 32> c;
        const std::size_t n = dev.pop_burst(std::span(c).first(pick(0, 32)));
        std::vector<used_element> todo;
        for (std::size_t i = 0; i < n; ++i) {
            r.serve(c[i]);
            todo.push_back({c[i].id(), 8});
        }
        std::shuffle(todo.begin(), todo.end(), rng);
        todo.resize(pick(0, todo.size()));
        // Completed in batches of random size; the last batch may be the one the crash hits.
        const auto point = static_cast<crash>(pick(0, 4));
        std::size_t at = 0;
        while (at < todo.size()) {
            const std::size_t k = pick(1, todo.size() - at);
            const bool last = at + k == todo.size();
            const auto before = r.region;
            const std::uint16_t used_before = dev.state().used_idx;
            const auto ring_flags_before = vvu::le::load<std::uint16_t>(r.flags_at(used_before));
            REQUIRE(dev.push_burst(std::span(todo).subspan(at, k)) == k);
            at += k;
            if (last && point == crash::before_publish) {
                undo_clearing(r.region, before, size);
                vvu::le::store<std::uint16_t>(r.flags_at(used_before), ring_flags_before);
            } else if (last && point == crash::after_publish) {
                undo_clearing(r.region, before, size);
            }
        }
        if (point == crash::mid_take || point == crash::between_free_heads) {
            const auto taking = r.region;
            std::array<chain, 32> more;
            dev.pop_burst(std::span(more).first(pick(1, 32)));
            std::copy_n(taking.begin() + PL::old_free_head_off, 2, r.region.begin() + PL::old_free_head_off);
            if (point == crash::mid_take)
                std::copy_n(taking.begin() + PL::free_head_off, 2, r.region.begin() + PL::free_head_off);
        }
        REQUIRE(!dev.broken());
        // Killed: dev goes; the driver reaps what was published and posts again next round.
        r.reap(completed);
    }
    auto dev = r.device();
    std::array<chain, 32> c;
    for (std::size_t n; (n = dev.pop_burst(c)) != 0;) {
        std::vector<used_element> done;
        for (std::size_t i = 0; i < n; ++i) {
            r.serve(c[i]);
            done.push_back({c[i].id(), 8});
        }
        REQUIRE(dev.push_burst(done) == n);
    }
    r.reap(completed);
    REQUIRE(!dev.broken());
    CHECK(resubmitted > 0);
    CHECK(r.driver.outstanding() == 0);
    REQUIRE(completed.size() == next_seq);
    for (std::uint64_t s = 0; s < next_seq; ++s) REQUIRE(completed.count(s) == 1);
    CHECK(r.g.guards_intact());
}

TEST_CASE("packed inflight: a driver that reaped a published batch and reused its slot before the restart",
          "[inflight][packed]") {
    packed_rig r(4);
    std::multiset<std::uint64_t> completed;
    REQUIRE(r.post(2)); // two descriptors each: the ring's 4 slots
    REQUIRE(r.post(4));
    {
        auto dev = r.device();
        std::array<chain, 2> c;
        REQUIRE(dev.pop_burst(c) == 2);
        r.serve(c[0]);
        const auto before = r.region;
        REQUIRE(dev.push(c[0].id(), 8));
        undo_clearing(r.region, before, 4); // killed after publishing
    }
    r.reap(completed);
    CHECK(completed == std::multiset<std::uint64_t>{2});
    REQUIRE(r.post(6)); // the slot at the old used index is available again, in the next lap
    auto dev = r.device();
    CHECK(dev.resubmitting() == 1);
    std::array<chain, 4> c;
    for (std::size_t n; (n = dev.pop_burst(c)) != 0;)
        for (std::size_t i = 0; i < n; ++i) {
            r.serve(c[i]);
            REQUIRE(dev.push(c[i].id(), 8));
        }
    r.reap(completed);
    CHECK(completed == std::multiset<std::uint64_t>{2, 4, 6});
}

TEST_CASE("packed inflight: the resumed ring goes on after the chains in flight, with their buffer ids",
          "[inflight][packed]") {
    packed_rig r(8, {});
    for (std::uint64_t s = 1; s <= 3; ++s) REQUIRE(r.post(s)); // 3 + 2 + 3 descriptors: the whole ring
    std::vector<std::uint16_t> ids;
    {
        auto dev = r.device();
        std::array<chain, 3> c;
        REQUIRE(dev.pop_burst(c) == 3);
        for (auto& ch : c) ids.push_back(ch.id());
        REQUIRE(dev.push(c[1].id(), 8)); // the 2-descriptor chain, written over slot 0
        CHECK(dev.state().used_idx == 2);
    }
    auto dev = r.device();
    // used 2 (lap 1), 6 descriptors in flight: avail at 0, lap 0.
    CHECK(dev.state().used_idx == 2);
    CHECK(dev.state().used_wrap);
    CHECK(dev.state().avail_idx == 0);
    CHECK(!dev.state().avail_wrap);
    std::array<chain, 3> c;
    REQUIRE(dev.pop_burst(c) == 2);
    CHECK(c[0].id() == ids[0]);
    CHECK(c[1].id() == ids[2]);
    CHECK(c[0].ring_descriptors() == 3);
    CHECK(c[1].ring_descriptors() == 3);
    CHECK(r.serve(c[0]) == 1);
    CHECK(r.serve(c[1]) == 3);
    CHECK(dev.resubmitting() == 0);
}

TEST_CASE("packed inflight: a region no back-end wrote is refused", "[inflight][packed][hostile]") {
    // Requests 1 (3 descriptors: entries 0-2) and 2 (2 descriptors: entries 3-4) left in flight;
    // request 3 (entries 5-7) completed, its entries free again: free list 5, 6, 7, end (8).
    packed_rig r(8, {});
    for (std::uint64_t s = 1; s <= 3; ++s) REQUIRE(r.post(s));
    {
        auto dev = r.device();
        std::array<chain, 3> c;
        REQUIRE(dev.pop_burst(c) == 3);
        REQUIRE(dev.push(c[2].id(), 8));
    }
    REQUIRE(inflight_flag(r.region, 0) == 1);
    REQUIRE(inflight_flag(r.region, 3) == 1);
    REQUIRE(inflight_flag(r.region, 5) == 0);
    auto put16 = [&](std::size_t off, std::uint16_t v) { vvu::le::store<std::uint16_t>(r.region.data() + off, v); };
    auto get16 = [&](std::size_t off) { return vvu::le::load<std::uint16_t>(r.region.data() + off); };
    auto entry = [](std::uint32_t e, std::size_t off) { return PL::header_size + PL::entry_size * e + off; };
    auto refused = [&](errc why) {
        auto d = r.try_device();
        REQUIRE(!d);
        CHECK(d.error() == why);
    };
    SECTION("untouched, it is accepted") {
        auto d = r.try_device();
        REQUIRE(d);
        CHECK(d->resubmitting() == 2);
    }
    SECTION("too small") {
        CHECK(packed_inflight::attach(r.region.data(), r.region.size() - 1, 8, 0, true).error() ==
              errc::inflight_region_too_small);
    }
    SECTION("another ring size") {
        put16(PL::desc_num_off, 16);
        refused(errc::inflight_region_mismatch);
    }
    SECTION("another version") {
        put16(PL::version_off, 2);
        refused(errc::inflight_region_mismatch);
    }
    SECTION("a free head beyond the list end") {
        put16(PL::old_free_head_off, 9);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a used index outside the ring") {
        put16(PL::old_used_idx_off, 8);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a used wrap counter that is neither 0 nor 1") {
        r.region[PL::old_used_wrap_off] = std::byte{2};
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a free list that loops") {
        put16(entry(7, PL::entry_next_off), 5);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a free list that runs into a chain in flight") {
        put16(entry(7, PL::entry_next_off), 3);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a free list that drops entries") {
        put16(entry(6, PL::entry_next_off), 8);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("an inflight flag that is neither 0 nor 1") {
        r.region[entry(1, PL::entry_inflight_off)] = std::byte{7};
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a chain of no descriptors") {
        put16(entry(0, PL::entry_num_off), 0);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a chain longer than the ring") {
        put16(entry(3, PL::entry_num_off), 60000);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a chain whose last entry is not where its list ends") {
        put16(entry(3, PL::entry_last_off), 3);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a chain that leaves the ring") {
        put16(entry(3, PL::entry_next_off), 300);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("two chains sharing an entry") {
        put16(entry(3, PL::entry_num_off), 3);
        put16(entry(4, PL::entry_next_off), 1);
        put16(entry(3, PL::entry_last_off), 1);
        refused(errc::inflight_region_corrupt);
    }
    SECTION("two chains with one buffer id") {
        put16(entry(2, PL::entry_id_off), get16(entry(4, PL::entry_id_off)));
        refused(errc::inflight_region_corrupt);
    }
    SECTION("a buffer id outside the ring") {
        put16(entry(4, PL::entry_id_off), 8);
        refused(errc::inflight_region_corrupt);
    }
    // The copies of the descriptors go through the ring's checks when they are resubmitted.
    auto broken_on_pop = [&](errc why) {
        auto d = r.try_device();
        REQUIRE(d);
        std::array<chain, 4> c;
        CHECK(d->pop_burst(c) == 0);
        CHECK(d->broken());
        CHECK(d->error() == why);
    };
    SECTION("a descriptor outside guest memory") {
        vvu::le::store<std::uint64_t>(r.region.data() + entry(0, PL::entry_addr_off), r.g.end() - 4);
        broken_on_pop(errc::buffer_out_of_memory);
    }
    SECTION("a list whose NEXT flags disagree with its length") {
        put16(entry(0, PL::entry_flags_off), 0);
        broken_on_pop(errc::inflight_region_corrupt);
    }
    SECTION("an indirect descriptor inside a list") {
        put16(entry(0, PL::entry_flags_off), 4 | 1); // INDIRECT | NEXT
        broken_on_pop(errc::indirect_with_next);
    }
    SECTION("a readable buffer after a writable one") {
        put16(entry(0, PL::entry_flags_off), 2 | 1); // WRITE | NEXT, then a readable one
        put16(entry(1, PL::entry_flags_off), 1);
        broken_on_pop(errc::readable_after_writable);
    }
    CHECK(r.g.guards_intact());
}

TEST_CASE("packed inflight: a new region starts where the ring is, and only with nothing in flight",
          "[inflight][packed]") {
    guest g(1 << 16);
    const auto cfg = place_packed(g, 8);
    std::vector<std::byte> region(PL::bytes(8));
    auto t = packed_inflight::attach(region.data(), region.size(), 8, 5, false);
    REQUIRE(t);
    CHECK(t->fresh());
    CHECK(pdevice_t::create_tracked(g.mem(), cfg, std::move(*t), {6, false, 5, false}).error() ==
          errc::inflight_position_mismatch);
    std::fill(region.begin(), region.end(), std::byte{0});
    auto again = packed_inflight::attach(region.data(), region.size(), 8, 5, false);
    REQUIRE(again);
    auto d = pdevice_t::create_tracked(g.mem(), cfg, std::move(*again), {5, false, 5, false});
    REQUIRE(d);
    CHECK(d->state().to_vring_base() == packed_state{5, false, 5, false}.to_vring_base());
    // Attached again, the region is not new: it is where the position comes from.
    auto third = packed_inflight::attach(region.data(), region.size(), 8, 0, true);
    REQUIRE(third);
    CHECK(!third->fresh());
    auto e = pdevice_t::create_tracked(g.mem(), cfg, std::move(*third), {});
    REQUIRE(e);
    CHECK(e->state().to_vring_base() == packed_state{5, false, 5, false}.to_vring_base());
}
