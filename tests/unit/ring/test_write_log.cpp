// Dirty logging in the device rings (ring/detail/write_log.hpp): with a memory policy that logs,
// a pushed chain logs exactly the first `len` bytes of its writable part — across descriptors,
// through indirect tables — and, when asked, the ring bytes the device wrote; nothing it only
// read, nothing past `len`, nothing at all while the policy has no log.
#include "vvu/ring/packed.hpp"
#include "vvu/ring/split.hpp"

#include "harness.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <utility>

using namespace ringtest;

namespace {

// local_memory whose log records every byte it is told of.
struct logging_memory {
    local_memory& mem;
    bool on = true;
    std::set<std::uint64_t> bytes; // guest addresses logged

    std::byte* translate(std::uint64_t a, std::uint64_t len) noexcept { return mem.translate(a, len); }
    bool logging() const noexcept { return on; }
    void log_write(std::uint64_t a, std::uint64_t len) noexcept {
        for (std::uint64_t i = 0; i < len; ++i) bytes.insert(a + i);
    }
};
static_assert(write_logging_policy<logging_memory>);

void expect_range(std::set<std::uint64_t>& want, std::uint64_t a, std::uint64_t len) {
    for (std::uint64_t i = 0; i < len; ++i) want.insert(a + i);
}

template <class Ring>
chain pop_one(Ring& r) {
    chain c;
    REQUIRE(r.pop(c));
    return c;
}

} // namespace

TEMPLATE_TEST_CASE("write log: a pushed chain logs the bytes it says it wrote, and the ring's own writes",
                   "[ring][log]", split_layout_t, packed_layout_t) {
    constexpr bool packed = std::is_same_v<TestType, packed_layout_t>;
    using device_ring = std::conditional_t<packed, packed_device<logging_memory>, split_device<logging_memory>>;
    using driver_ring = std::conditional_t<packed, packed_driver<local_memory>, split_driver<local_memory>>;
    const bool log_used = GENERATE(true, false);
    const bool indirect = GENERATE(false, true);
    CAPTURE(packed, log_used, indirect);

    guest g(1 << 20);
    const ring_features f{false, true, false};
    auto cfg = [&] {
        if constexpr (packed) return place_packed(g, 8, f);
        else return place_split(g, 8, f);
    }();
    cfg.log_used = log_used;
    const indirect_area ind{g.alloc(16 * 4 * 8, 16), 4};
    auto drv = driver_ring::create(g.mem(), cfg, ind);
    REQUIRE(drv);
    logging_memory lm{g.mem(), true, {}};
    auto dev = device_ring::create(lm, cfg);
    REQUIRE(dev);

    const std::uint64_t in = g.alloc(64), a = g.alloc(100), b = g.alloc(200), c = g.alloc(50);
    const buffer readable[] = {{in, 64}};
    const buffer writable[] = {{a, 100}, {b, 200}, {c, 50}};
    const request req{readable, writable, 7, indirect};
    REQUIRE(drv->add_burst({&req, 1}) == 1);

    const chain ch = pop_one(*dev);
    CHECK(ch.indirect() == indirect);
    CHECK(lm.bytes.empty()); // taking a chain writes nothing
    REQUIRE(ch.copy_to(std::vector<std::byte>(150, std::byte{0x5a})) == 150);
    REQUIRE(dev->push(ch.id(), 150));

    std::set<std::uint64_t> want;
    expect_range(want, a, 100);
    expect_range(want, b, 50); // the second descriptor in part, the third not at all
    if (log_used) {
        if constexpr (packed) {
            expect_range(want, cfg.desc_addr, 16); // the used descriptor, in slot 0
        } else {
            expect_range(want, cfg.used_addr + split_layout::ring_off, 8); // used element 0
            expect_range(want, cfg.used_addr + split_layout::idx_off, 2);  // used->idx
        }
    }
    CHECK(lm.bytes == want);

    // Asking for notifications writes the ring too (split: used->flags, packed: device event).
    lm.bytes.clear();
    dev->enable_notifications();
    want.clear();
    if (log_used) {
        if constexpr (packed) expect_range(want, cfg.device_event_addr, 4);
        else expect_range(want, cfg.used_addr + split_layout::flags_off, 2);
    }
    CHECK(lm.bytes == want);
    CHECK(g.guards_intact());
}

TEMPLATE_TEST_CASE("write log: a policy without a log logs nothing; chains completed out of order log their own bytes",
                   "[ring][log]", split_layout_t, packed_layout_t) {
    constexpr bool packed = std::is_same_v<TestType, packed_layout_t>;
    using device_ring = std::conditional_t<packed, packed_device<logging_memory>, split_device<logging_memory>>;
    using driver_ring = std::conditional_t<packed, packed_driver<local_memory>, split_driver<local_memory>>;
    const bool on = GENERATE(false, true);
    CAPTURE(packed, on);

    guest g(1 << 20);
    auto cfg = [&] {
        if constexpr (packed) return place_packed(g, 8);
        else return place_split(g, 8);
    }();
    cfg.log_used = true;
    auto drv = driver_ring::create(g.mem(), cfg, {});
    REQUIRE(drv);
    logging_memory lm{g.mem(), on, {}};
    auto dev = device_ring::create(lm, cfg);
    REQUIRE(dev);

    const std::uint64_t first = g.alloc(300), second = g.alloc(300);
    const buffer w1[] = {{first, 300}}, w2[] = {{second, 300}};
    const request reqs[] = {{{}, w1, 1}, {{}, w2, 2}};
    REQUIRE(drv->add_burst(reqs) == 2);
    chain chains[2];
    REQUIRE(dev->pop_burst(chains) == 2);
    const used_element done[] = {{chains[1].id(), 10}, {chains[0].id(), 20}}; // second first
    REQUIRE(dev->push_burst(done) == 2);

    std::set<std::uint64_t> buffers;
    for (std::uint64_t x : lm.bytes)
        if (x >= first && x < second + 300) buffers.insert(x);
    std::set<std::uint64_t> want;
    if (on) {
        expect_range(want, second, 10);
        expect_range(want, first, 20);
    }
    CHECK(buffers == want);
    if (!on) CHECK(lm.bytes.empty());
}
