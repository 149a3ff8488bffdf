// Inflight I/O tracking of split rings (ring/inflight.hpp): a device "killed" between taking
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
