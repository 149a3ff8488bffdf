// virtio-net data path over real rings: a driver side in the same process plays the front-end
// (as a virtio-net driver would: net header + frame on TX, empty buffers on RX) and every byte
// is checked on the other side. Both ring layouts.
#include <vvu/device/net.hpp>

#include <vvu/ring/memory_policy.hpp>
#include <vvu/ring/packed.hpp>
#include <vvu/ring/split.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

using namespace vvu;
using namespace vvu::device::net;

namespace {

constexpr std::uint32_t queue_size = 256;
constexpr std::uint64_t buffer_bytes = 2048;

// Guest memory laid out as: ring areas at the start, then one buffer per ring slot.
struct guest {
    std::vector<std::byte> bytes = std::vector<std::byte>(1 << 22);
    ring::local_memory mem{bytes};
    std::uint64_t area(std::uint64_t offset) const { return mem.base() + offset; }
    std::byte* at(std::uint64_t gpa) { return mem.translate(gpa, 1); }
    std::uint64_t buffer(std::uint32_t i) const { return area(0x100000 + i * buffer_bytes); }
};

template <bool Packed>
struct queue_pair_fixture {
    guest g;
    using driver_t = std::conditional_t<Packed, ring::packed_driver<ring::local_memory>, ring::split_driver<ring::local_memory>>;
    using device_t = std::conditional_t<Packed, ring::packed_device<ring::local_memory>, ring::split_device<ring::local_memory>>;
    driver_t driver;
    device_t device;
    burst_scratch scratch;

    static auto config(guest& g) {
        if constexpr (Packed) return ring::packed_config{queue_size, g.area(0), g.area(0x10000), g.area(0x11000), {}, 0};
        else return ring::split_config{queue_size, g.area(0), g.area(0x10000), g.area(0x11000), {}, 0};
    }
    queue_pair_fixture()
        : driver(*driver_t::create(g.mem, config(g))), device(*device_t::create(g.mem, config(g))) {}
};

std::vector<std::byte> make_frame(std::size_t len, std::uint8_t seed) {
    std::vector<std::byte> f(len);
    for (std::size_t i = 0; i < len; ++i) f[i] = static_cast<std::byte>(seed + i * 7);
    return f;
}

} // namespace

TEMPLATE_TEST_CASE("net: frames the driver transmits arrive intact (split and packed)", "[device][net]",
                   std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    std::vector<std::vector<std::byte>> sent;
    for (std::uint32_t i = 0; i < 40; ++i) {
        auto f = make_frame(60 + i * 13, static_cast<std::uint8_t>(i));
        std::byte* buf = q.g.at(q.g.buffer(i));
        std::fill_n(buf, net_hdr_size, std::byte{0});
        std::copy(f.begin(), f.end(), buf + net_hdr_size);
        const ring::buffer b{q.g.buffer(i), static_cast<std::uint32_t>(net_hdr_size + f.size())};
        REQUIRE(q.driver.add({&b, 1}, {}, i));
        sent.push_back(std::move(f));
    }
    std::vector<std::byte> staging(ring::max_burst * max_frame_size);
    std::array<frame, ring::max_burst> frames;
    std::array<ring::used_element, ring::max_burst> taken;
    port_stats stats;
    std::size_t got = 0;
    ring::used_buffer u;
    std::size_t reaped = 0;
    while (got < sent.size()) {
        const auto r = receive_burst(q.device, staging, frames, taken, stats, q.scratch);
        REQUIRE(r.frames > 0);
        CHECK(r.chains == r.frames);
        for (std::size_t i = 0; i < r.frames; ++i, ++got) CHECK(std::ranges::equal(frames[i], sent[got]));
        // Packed one after the other from the start of the staging area.
        CHECK(frames[0].data() == staging.data());
        for (std::size_t i = 1; i < r.frames; ++i) CHECK(frames[i].data() == frames[i - 1].data() + frames[i - 1].size());
        // The chains stay taken until the caller gives them back.
        CHECK_FALSE(q.driver.reap(u));
        CHECK(q.device.push_burst(std::span(taken).first(r.chains)) == r.chains);
        while (q.driver.reap(u)) ++reaped;
    }
    CHECK(stats.rx_packets == 40);
    CHECK(reaped == 40);
}

TEMPLATE_TEST_CASE("net: frames the device transmits land behind a net header (split and packed)", "[device][net]",
                   std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    const bool mrg = GENERATE(false, true);
    for (std::uint32_t i = 0; i < 64; ++i) {
        std::fill_n(q.g.at(q.g.buffer(i)), buffer_bytes, std::byte{0xaa}); // what the device must overwrite
        const ring::buffer b{q.g.buffer(i), static_cast<std::uint32_t>(buffer_bytes)};
        REQUIRE(q.driver.add({}, {&b, 1}, i));
    }
    std::vector<std::vector<std::byte>> frames_data;
    std::vector<frame> frames;
    for (int i = 0; i < 20; ++i) frames_data.push_back(make_frame(64 + i, static_cast<std::uint8_t>(3 * i)));
    for (auto& f : frames_data) frames.emplace_back(f);
    port_stats stats;
    CHECK(transmit_burst(q.device, frames, mrg, stats, q.scratch) == 20);
    CHECK(stats.tx_packets == 20);
    for (std::size_t i = 0; i < 20; ++i) {
        ring::used_buffer u;
        REQUIRE(q.driver.reap(u));
        CHECK(u.token == i);
        REQUIRE(u.len == net_hdr_size + frames_data[i].size());
        const std::byte* buf = q.g.at(q.g.buffer(static_cast<std::uint32_t>(u.token)));
        CHECK(std::all_of(buf, buf + 10, [](std::byte x) { return x == std::byte{0}; })); // no offloads
        CHECK(le::load<std::uint16_t>(buf + 10) == 1); // num_buffers
        CHECK(std::equal(frames_data[i].begin(), frames_data[i].end(), buf + net_hdr_size));
        CHECK(buf[net_hdr_size + frames_data[i].size()] == std::byte{0xaa}); // and no further
    }
}

TEMPLATE_TEST_CASE("net: a receive buffer in several descriptors, the header split between two", "[device][net]",
                   std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    const bool mrg = GENERATE(false, true);
    // 5 + 7 + 100 bytes: num_buffers (bytes 10-11) lies in the second descriptor.
    const std::uint32_t lens[] = {5, 7, 100};
    std::vector<ring::buffer> parts;
    for (std::uint32_t i = 0; i < 3; ++i) {
        std::fill_n(q.g.at(q.g.buffer(i)), buffer_bytes, std::byte{0xaa});
        parts.push_back({q.g.buffer(i), lens[i]});
    }
    REQUIRE(q.driver.add({}, parts, 9));
    const auto data = make_frame(64, 5);
    const frame f(data);
    port_stats stats;
    REQUIRE(transmit_burst(q.device, std::span(&f, 1), mrg, stats, q.scratch) == 1);
    ring::used_buffer u;
    REQUIRE(q.driver.reap(u));
    CHECK(u.token == 9);
    REQUIRE(u.len == net_hdr_size + data.size());
    std::vector<std::byte> joined;
    for (std::uint32_t i = 0; i < 3; ++i) joined.insert(joined.end(), q.g.at(parts[i].addr), q.g.at(parts[i].addr) + lens[i]);
    CHECK(std::all_of(joined.begin(), joined.begin() + 10, [](std::byte x) { return x == std::byte{0}; }));
    CHECK(le::load<std::uint16_t>(joined.data() + 10) == 1);
    CHECK(std::equal(data.begin(), data.end(), joined.begin() + net_hdr_size));
    CHECK(joined[net_hdr_size + data.size()] == std::byte{0xaa});
}

TEMPLATE_TEST_CASE("net: a transmit chain with its header and frame in separate descriptors arrives intact",
                   "[device][net]", std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    const auto data = make_frame(90, 11);
    std::byte* hdr = q.g.at(q.g.buffer(0));
    std::fill_n(hdr, net_hdr_size, std::byte{0});
    std::copy_n(data.begin(), 30, q.g.at(q.g.buffer(1)));
    std::copy(data.begin() + 30, data.end(), q.g.at(q.g.buffer(2)));
    const ring::buffer parts[] = {{q.g.buffer(0), static_cast<std::uint32_t>(net_hdr_size)},
                                  {q.g.buffer(1), 30},
                                  {q.g.buffer(2), 60}};
    REQUIRE(q.driver.add(parts, {}, 4));
    std::vector<std::byte> staging(ring::max_burst * max_frame_size);
    std::array<frame, ring::max_burst> frames;
    std::array<ring::used_element, ring::max_burst> taken;
    port_stats stats;
    const auto r = receive_burst(q.device, staging, frames, taken, stats, q.scratch);
    REQUIRE(r.frames == 1);
    CHECK(std::ranges::equal(frames[0], data));
    CHECK(stats.rx_bytes == data.size());
}

TEMPLATE_TEST_CASE("net: frames left in place are viewed in the front-end's buffers, split ones are staged",
                   "[device][net]", std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    // Chain 0: header and frame in one buffer. Chain 1: header, then the frame in two more.
    // Chain 2: a longer frame in one buffer. Chain 3: too short for a header (an error, no frame).
    const auto one = make_frame(70, 1), split = make_frame(90, 2), long_one = make_frame(200, 3);
    std::fill_n(q.g.at(q.g.buffer(0)), net_hdr_size, std::byte{0});
    std::copy(one.begin(), one.end(), q.g.at(q.g.buffer(0)) + net_hdr_size);
    std::fill_n(q.g.at(q.g.buffer(1)), net_hdr_size, std::byte{0});
    std::copy_n(split.begin(), 40, q.g.at(q.g.buffer(2)));
    std::copy(split.begin() + 40, split.end(), q.g.at(q.g.buffer(3)));
    std::fill_n(q.g.at(q.g.buffer(4)), net_hdr_size, std::byte{0});
    std::copy(long_one.begin(), long_one.end(), q.g.at(q.g.buffer(4)) + net_hdr_size);
    const ring::buffer b0{q.g.buffer(0), static_cast<std::uint32_t>(net_hdr_size + one.size())};
    const ring::buffer b1[] = {{q.g.buffer(1), static_cast<std::uint32_t>(net_hdr_size)}, {q.g.buffer(2), 40}, {q.g.buffer(3), 50}};
    const ring::buffer b2{q.g.buffer(4), static_cast<std::uint32_t>(net_hdr_size + long_one.size())};
    const ring::buffer b3{q.g.buffer(5), 6};
    REQUIRE(q.driver.add({&b0, 1}, {}, 0));
    REQUIRE(q.driver.add(b1, {}, 1));
    REQUIRE(q.driver.add({&b2, 1}, {}, 2));
    REQUIRE(q.driver.add({&b3, 1}, {}, 3));
    std::vector<std::byte> staging(ring::max_burst * max_frame_size);
    std::array<frame, ring::max_burst> frames;
    std::array<ring::used_element, ring::max_burst> taken;
    port_stats stats;
    const auto r = receive_burst(q.device, staging, frames, taken, stats, q.scratch, frame_placement::in_place);
    REQUIRE(r.chains == 4);
    REQUIRE(r.frames == 3);
    CHECK(stats.rx_errors == 1);
    CHECK(frames[0].data() == q.g.at(q.g.buffer(0)) + net_hdr_size); // the front-end's bytes
    CHECK(std::ranges::equal(frames[0], one));
    CHECK(frames[1].data() == staging.data()); // gathered into the first staging slot
    CHECK(std::ranges::equal(frames[1], split));
    CHECK(frames[2].data() == q.g.at(q.g.buffer(4)) + net_hdr_size);
    CHECK(std::ranges::equal(frames[2], long_one));
    // A view, not a copy: what the front-end writes (it still owns the bytes) shows through.
    q.g.at(q.g.buffer(0))[net_hdr_size] = std::byte{0x5a};
    CHECK(frames[0][0] == std::byte{0x5a});
    CHECK(q.device.push_burst(std::span(taken).first(r.chains)) == 4);
}

TEMPLATE_TEST_CASE("net: with MRG_RXBUF a large frame spans several receive buffers", "[device][net]",
                   std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    for (std::uint32_t i = 0; i < 8; ++i) {
        const ring::buffer b{q.g.buffer(i), 1000};
        REQUIRE(q.driver.add({}, {&b, 1}, i));
    }
    const auto big = make_frame(2500, 9); // 12 + 2500 bytes = 3 buffers of 1000
    const frame f(big);
    port_stats stats;
    CHECK(transmit_burst(q.device, std::span(&f, 1), true, stats, q.scratch) == 1);
    std::vector<std::byte> joined;
    for (std::uint32_t i = 0; i < 3; ++i) {
        ring::used_buffer u;
        REQUIRE(q.driver.reap(u));
        CHECK(u.token == i);
        const std::byte* buf = q.g.at(q.g.buffer(i));
        joined.insert(joined.end(), buf, buf + u.len);
    }
    CHECK(le::load<std::uint16_t>(joined.data() + 10) == 3);
    CHECK(std::equal(big.begin(), big.end(), joined.begin() + net_hdr_size));
    // Without MRG_RXBUF the same frame does not fit one buffer: dropped, buffer returned empty.
    port_stats no_mrg;
    CHECK(transmit_burst(q.device, std::span(&f, 1), false, no_mrg, q.scratch) == 0);
    CHECK(no_mrg.tx_dropped == 1);
    ring::used_buffer u;
    REQUIRE(q.driver.reap(u));
    CHECK(u.len == 0);
}

TEMPLATE_TEST_CASE("net: frames with no receive buffer are counted as dropped", "[device][net]", std::false_type,
                   std::true_type) {
    queue_pair_fixture<TestType::value> q;
    const ring::buffer b{q.g.buffer(0), static_cast<std::uint32_t>(buffer_bytes)};
    REQUIRE(q.driver.add({}, {&b, 1}, 0));
    const auto data = make_frame(64, 1);
    std::vector<frame> frames(5, frame(data));
    port_stats stats;
    CHECK(transmit_burst(q.device, frames, false, stats, q.scratch) == 1);
    CHECK(stats.tx_dropped == 4);
}

TEMPLATE_TEST_CASE("net: a transmit chain shorter than the net header is an error, not a frame", "[device][net]",
                   std::false_type, std::true_type) {
    queue_pair_fixture<TestType::value> q;
    const ring::buffer b{q.g.buffer(0), 6};
    REQUIRE(q.driver.add({&b, 1}, {}, 0));
    port_stats stats;
    CHECK(drop_burst(q.device, stats, q.scratch) == 1);
    CHECK(stats.rx_errors == 1);
    CHECK(stats.rx_packets == 0);
}
