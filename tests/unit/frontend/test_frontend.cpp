// protocol::frontend and device::net::net_driver against vvu's own back-end (protocol::backend +
// net_port) in one process over a socketpair — both ring layouts, multiqueue, both ways of
// sharing memory — and against a scripted back-end that misbehaves in one precise way per test.
#include <vvu/protocol/frontend.hpp>

#include "harness.hpp"

#include <vvu/device/l2.hpp>
#include <vvu/device/net_driver.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <deque>

using namespace vvu;
using namespace std::chrono_literals;
using fr = wire::front_request;
using protocol::frontend_errc;

namespace {

using driver = device::net::net_driver<protocol::socket_channel>;

// Sends `count` numbered frames on each queue pair and receives them back through a loopback
// back-end; returns the sequence numbers received, in order.
std::vector<std::uint64_t> echo(driver& nd, std::uint64_t count) {
    std::vector<std::uint64_t> got;
    std::vector<std::byte> buf(64);
    std::uint64_t sent = 0;
    const auto until = std::chrono::steady_clock::now() + 20s;
    const std::uint32_t pairs = nd.queue_pairs();
    while (got.size() < count * pairs && std::chrono::steady_clock::now() < until) {
        for (std::uint32_t q = 0; q < pairs; ++q) {
            // Never more in flight than one receive ring holds (the back-end answers on pair 0).
            if (sent < count * pairs && sent - got.size() < nd.queue_size() / 2) {
                device::net::make_test_frame(buf, 64, sent, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
                const device::net::frame f(buf);
                sent += nd.send(q, std::span(&f, 1));
            }
            nd.reap_tx(q);
            nd.receive(q, [&](const device::net::virtio_net_hdr& h, std::span<const std::byte> frame) {
                CHECK(frame.size() == 64);
                CHECK(h.gso_type == 0);
                got.push_back(device::net::test_frame_sequence(frame).value_or(~0ULL));
            });
        }
    }
    return got;
}

// A net driver with one queue pair of 64 descriptors, opened on `be`.
std::unique_ptr<driver> open_loopback_driver(test::vvu_backend& be, bool packed) {
    device::net::driver_options o;
    o.packed = packed;
    o.queue_size = 64;
    o.timeout = 5000ms;
    auto nd = driver::open(protocol::socket_channel(be.take_frontend_end()), o);
    if (!nd) FAIL(nd.error().message());
    return std::move(*nd);
}

} // namespace

TEST_CASE("net driver against vvu's back-end, split and packed, 1 and 2 queue pairs",
          "[frontend][net]") {
    const bool packed = GENERATE(false, true);
    const std::uint32_t pairs = GENERATE(1u, 2u);
    const bool mem_slots = GENERATE(true, false);
    CAPTURE(packed, pairs, mem_slots);
    test::vvu_backend be(pairs, device::net::forward_mode::loopback);
    {
        device::net::driver_options o;
        o.packed = packed;
        o.queue_pairs = pairs;
        o.queue_size = 64;
        o.memory_regions = mem_slots ? 3 : 2;
        o.use_mem_slots = mem_slots;
        o.timeout = 5000ms;
        auto nd = driver::open(protocol::socket_channel(be.take_frontend_end()), o);
        if (!nd) FAIL(nd.error().message());
        auto& fe = (*nd)->frontend();
        CHECK(fe.negotiated(wire::protocol_feature::reply_ack));
        CHECK(fe.negotiated(wire::protocol_feature::configure_mem_slots));
        CHECK(fe.negotiated(wire::protocol_feature::backend_req));
        CHECK(fe.negotiated(wire::protocol_feature::status));
        CHECK(wire::has(fe.features(), wire::virtio_feature::ring_packed) == packed);
        CHECK(fe.queue_num() == pairs);
        CHECK((*nd)->mrg_rxbuf());

        // GET_CONFIG: the port's MAC and its queue pairs.
        auto cfg = (*nd)->config();
        if (!cfg) FAIL(cfg.error().message());
        CHECK((*cfg)[0] == 0x52);
        CHECK((*cfg)[5] == 0x01);
        CHECK((*cfg)[8] == pairs);

        const auto got = echo(**nd, 300);
        REQUIRE(got.size() == 300 * pairs);
        if (pairs == 1)
            for (std::uint64_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == i);
        CHECK((*nd)->stats().rx_errors == 0);

        // GET_VRING_BASE stops every ring; the back-end reports where it stopped.
        auto stopped = fe.stop_vring(1);
        if (!stopped) FAIL(stopped.error().message());
        if (pairs == 1) { // (with two pairs the frames split between the queues as the loop went)
            if (packed) CHECK((*stopped & 0x7fff) == 300 % 64);
            else CHECK(*stopped == 300);
        }
        // INFLIGHT_SHMFD with either ring layout: the back-end recorded vring 1 in its part of the
        // area the front-end keeps (QueueRegionPacked / QueueRegionSplit), all completed.
        CHECK(fe.negotiated(wire::protocol_feature::inflight_shmfd));
        REQUIRE(fe.inflight_fd());
        REQUIRE(fe.inflight().num_queues == 2 * pairs);
        REQUIRE(fe.inflight().mmap_offset == 0);
        auto* area = static_cast<std::byte*>(
            ::mmap(nullptr, fe.inflight().mmap_size, PROT_READ, MAP_SHARED, fe.inflight_fd().get(), 0));
        REQUIRE(area != MAP_FAILED);
        const std::byte* q1 = area + protocol::inflight_area::stride(fe.inflight().queue_size);
        CHECK(le::load<std::uint16_t>(q1 + 8) == 1);  // version
        CHECK(le::load<std::uint16_t>(q1 + 10) == 64); // desc_num
        if (pairs == 1 && packed) {
            using L = ring::packed_inflight_layout;
            CHECK(le::load<std::uint16_t>(q1 + L::used_idx_off) == 300 % 64);
            CHECK(le::load<std::uint16_t>(q1 + L::old_used_idx_off) == 300 % 64);
            CHECK(q1[L::used_wrap_off] == std::byte{1}); // four laps from 1
            for (std::uint32_t e = 0; e < 64; ++e) CHECK(q1[L::header_size + L::entry_size * e] == std::byte{0});
        } else if (pairs == 1) {
            CHECK(le::load<std::uint16_t>(q1 + ring::split_inflight_layout::used_idx_off) == 300);
        }
        ::munmap(area, fe.inflight().mmap_size);
        auto all = (*nd)->close();
        if (!all) FAIL(all.error().message());
        CHECK(be.port().stats().rx_packets == 300 * pairs);
    }
    CHECK(be.join() == "peer closed the connection");
    CHECK(be.final_state().owner == false); // the session was reset after the disconnect
}

TEST_CASE("a ring the front-end breaks: the back-end signals its SET_VRING_ERR eventfd once and GET_STATUS "
          "says DEVICE_NEEDS_RESET",
          "[frontend][net][hostile]") {
    const bool packed = GENERATE(false, true);
    CAPTURE(packed);
    test::vvu_backend be(1, device::net::forward_mode::loopback);
    {
        auto nd = open_loopback_driver(be, packed);
        auto& fe = nd->frontend();
        REQUIRE(echo(*nd, 10).size() == 10);
        auto& tx = nd->tx_vring(0);
        CHECK(!tx.wait_error(0ms));
        auto before = fe.status();
        if (!before) FAIL(before.error().message());
        CHECK((*before & protocol::device_status::needs_reset) == 0);

        // One transmit buffer where no region is: the back-end must refuse the ring and say so.
        const ring::buffer outside{0xfff0'0000'0000, 64};
        REQUIRE(tx.add({&outside, 1}, {}, 1000));
        tx.kick();
        CHECK(tx.wait_error(5000ms));
        auto after = fe.status();
        if (!after) FAIL(after.error().message());
        CHECK((*after & protocol::device_status::needs_reset) != 0);
        CHECK((*after & 0x0f) == (*before & 0x0f));
        CHECK(!tx.wait_error(50ms)); // reported once

        auto all = nd->close(); // the broken ring still stops (GET_VRING_BASE answers)
        if (!all) FAIL(all.error().message());
        CHECK(be.port().stats().rx_packets == 10); // the foreign buffer was never taken
    }
    CHECK(be.join() == "peer closed the connection");
}

TEST_CASE("MRG_RXBUF reassembles frames larger than one receive buffer", "[frontend][net]") {
    test::vvu_backend be(1, device::net::forward_mode::loopback);
    device::net::driver_options o;
    o.queue_size = 64;
    o.rx_buffer_size = 512; // a 1500-byte frame and its 12-byte header take 3 buffers
    o.tx_buffer_size = 2048;
    auto nd = driver::open(protocol::socket_channel(be.take_frontend_end()), o);
    if (!nd) FAIL(nd.error().message());
    std::vector<std::byte> buf(1500);
    device::net::make_test_frame(buf, 1500, 42, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
    const device::net::frame f(buf);
    REQUIRE((*nd)->send(0, std::span(&f, 1)) == 1);
    std::vector<std::byte> back;
    std::uint16_t buffers = 0;
    for (auto until = std::chrono::steady_clock::now() + 10s; back.empty() && std::chrono::steady_clock::now() < until;)
        (*nd)->receive(0, [&](const device::net::virtio_net_hdr& h, std::span<const std::byte> frame) {
            back.assign(frame.begin(), frame.end());
            buffers = h.num_buffers;
        });
    REQUIRE(back == buf);
    CHECK(buffers == 3);
}

// ------------------------------------------------------------------ misbehaving back-ends
namespace {

using action = test::scripted_backend::action;

protocol::frontend_options quick_options() {
    protocol::frontend_options o;
    o.timeout = 300ms;
    return o;
}

// Runs negotiate() + set_memory() + one vring against the scripted back-end.
expected<void, protocol::frontend_error> run_setup(test::scripted_backend& sb, protocol::frontend_options o = quick_options()) {
    sb.start();
    protocol::frontend<> fe(protocol::socket_channel(sb.take_frontend_end()), std::move(o));
    if (auto r = fe.negotiate(); !r) return r;
    auto mem = protocol::frontend_memory::create({.regions = 1, .region_size = 1 << 20});
    if (!mem) return unexpected(mem.error());
    if (auto r = fe.set_memory(std::move(*mem)); !r) return r;
    if (auto r = fe.setup_vring(0, {.size = 64}); !r) return unexpected(r.error());
    if (auto r = fe.get_config(0, 8); !r) return unexpected(r.error());
    return fe.stop();
}

} // namespace

TEST_CASE("the scripted back-end is well-behaved by default", "[frontend][misbehave]") {
    test::scripted_backend sb(nullptr);
    auto r = run_setup(sb);
    if (!r) FAIL(r.error().message());
    const auto seen = sb.seen();
    CHECK(seen.front() == fr::get_features);
    CHECK(std::count(seen.begin(), seen.end(), fr::set_mem_table) == 1); // no CONFIGURE_MEM_SLOTS
    CHECK(std::count(seen.begin(), seen.end(), fr::get_vring_base) == 1);
}

TEST_CASE("a reply of the wrong size", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::get_features)) return action{};
        const std::array<std::byte, 4> four{};
        return action{action::raw, test::scripted_backend::reply_bytes(h.request, four)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::wrong_reply_size);
    CHECK(r.error().request == fr::get_features);
    CHECK(r.error().message() == "GET_FEATURES: reply payload of 4 bytes where 8 are expected");
}

TEST_CASE("a missing ack times out, bounded", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        return h.request == static_cast<std::uint32_t>(fr::set_vring_addr) ? action{action::silent, {}} : action{};
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(r.error().code == frontend_errc::timed_out);
    CHECK(r.error().request == fr::set_vring_addr);
    CHECK(r.error().message() == "SET_VRING_ADDR: no ack within 300 ms");
}

TEST_CASE("a reply to another request", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::get_protocol_features)) return action{};
        return action{action::raw, test::scripted_backend::u64_reply(static_cast<std::uint32_t>(fr::get_features), 1)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::mismatched_reply);
    CHECK(r.error().request == fr::get_protocol_features);
    CHECK(r.error().message() ==
          "GET_PROTOCOL_FEATURES: reply to GET_FEATURES (request 1) while awaiting this one");
}

TEST_CASE("an ack for a request that did not ask for one is a reply to another request",
          "[frontend][misbehave]") {
    // SET_PROTOCOL_FEATURES goes without NEED_REPLY; a stray ack arrives where GET_QUEUE_NUM's
    // reply is awaited... after SET_OWNER's own ack, the stray one is read for GET_QUEUE_NUM.
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::set_protocol_features)) return action{};
        return action{action::raw, test::scripted_backend::u64_reply(h.request, 0)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::mismatched_reply);
    CHECK(r.error().request == fr::set_owner);
}

TEST_CASE("a failure ack", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::set_features)) return action{};
        return action{action::raw, test::scripted_backend::u64_reply(h.request, 1)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::rejected);
    CHECK(r.error().message() == "SET_FEATURES: back-end acked with failure (1)");
}

TEST_CASE("a reply without the REPLY flag", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::get_features)) return action{};
        return action{action::raw, test::scripted_backend::u64_reply(h.request, 1ULL << 32, wire::flags::version)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::malformed_reply);
    CHECK(r.error().request == fr::get_features);
}

TEST_CASE("disconnect in the middle of the setup", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        return h.request == static_cast<std::uint32_t>(fr::set_mem_table) ? action{action::close, {}} : action{};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::disconnected);
    CHECK(r.error().request == fr::set_mem_table);
}

TEST_CASE("GET_CONFIG answered with size 0 is an error", "[frontend][misbehave]") {
    test::scripted_backend sb([](const wire::header& h, transport::framed_socket*) {
        if (h.request != static_cast<std::uint32_t>(fr::get_config)) return action{};
        std::array<std::byte, 12> empty{}; // offset 0, size 0, flags 0
        return action{action::raw, test::scripted_backend::reply_bytes(h.request, empty)};
    });
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::rejected);
    CHECK(r.error().request == fr::get_config);
}

TEST_CASE("a required feature the back-end lacks", "[frontend][misbehave]") {
    test::scripted_backend sb(nullptr);
    sb.features &= ~wire::virtio_feature::version_1;
    auto r = run_setup(sb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == frontend_errc::not_offered);
}

TEST_CASE("CONFIG_CHANGE_MSG with NEED_REPLY is served while a reply is awaited",
          "[frontend][backend-channel]") {
    // The back-end sends CONFIG_CHANGE_MSG and waits for its ack before answering GET_CONFIG:
    // a front-end that only read the main socket would deadlock here.
    std::atomic<bool> acked{false};
    test::scripted_backend sb([&](const wire::header& h, transport::framed_socket* chan) {
        if (h.request != static_cast<std::uint32_t>(fr::get_config) || chan == nullptr) return action{};
        wire::message<wire::back_request::config_change_msg> m;
        m.flags |= wire::flags::need_reply;
        auto f = wire::encode(m);
        if (!f || !chan->send(*f, 1s)) return action{action::close, {}};
        auto reply = chan->receive(wire::channel::back, 2s);
        if (!reply) return action{action::close, {}};
        auto ack = wire::decode_reply<wire::back_request::config_change_msg>(reply->bytes(), reply->fds.span());
        acked = ack && ack->payload.value == 0;
        return action{};
    });
    int callbacks = 0;
    auto o = quick_options();
    o.timeout = 3s;
    o.on_config_change = [&] { ++callbacks; };
    sb.start();
    protocol::frontend<> fe(protocol::socket_channel(sb.take_frontend_end()), std::move(o));
    auto n = fe.negotiate();
    if (!n) FAIL(n.error().message());
    REQUIRE(fe.backend_channel_open());
    auto cfg = fe.get_config(0, 4);
    if (!cfg) FAIL(cfg.error().message());
    CHECK(acked);
    CHECK(callbacks == 1);
    CHECK(fe.config_changes() == 1);
}

// ------------------------------------------------------------------ an in-memory channel
namespace {
// A channel that answers from a queue of prepared replies (no fd: native_handle() is -1).
struct memory_channel {
    std::vector<wire::frame> sent;
    std::deque<std::vector<std::byte>> replies;
    expected<void, transport::error> send(const wire::frame& f, std::chrono::milliseconds) {
        sent.push_back(f);
        return {};
    }
    expected<transport::received_message, transport::error> receive(std::chrono::milliseconds) {
        if (replies.empty()) return unexpected(transport::error(transport::errc::timed_out));
        transport::received_message m;
        const auto bytes = replies.front();
        replies.pop_front();
        std::copy(bytes.begin(), bytes.end(), m.storage.begin());
        m.header = wire::load_header(m.storage);
        return m;
    }
    int native_handle() const noexcept { return -1; }
};
static_assert(protocol::frontend_channel<memory_channel>);
} // namespace

TEST_CASE("over any channel — without PROTOCOL_FEATURES no acks are awaited", "[frontend][channel]") {
    memory_channel ch;
    ch.replies.push_back(test::scripted_backend::u64_reply(1, wire::virtio_feature::version_1 | wire::net_feature::mrg_rxbuf));
    protocol::frontend_options o;
    o.features = wire::virtio_feature::version_1 | wire::virtio_feature::ring_packed;
    protocol::frontend<memory_channel> fe(std::move(ch), o);
    auto r = fe.negotiate();
    if (!r) FAIL(r.error().message());
    CHECK(fe.features() == wire::virtio_feature::version_1); // wanted ∩ offered
    CHECK(fe.protocol_features() == 0);
    const auto& sent = fe.channel().sent;
    REQUIRE(sent.size() == 3); // GET_FEATURES, SET_OWNER, SET_FEATURES
    CHECK(wire::load_header(sent[1].bytes()).request == static_cast<std::uint32_t>(fr::set_owner));
    CHECK_FALSE(wire::load_header(sent[2].bytes()).need_reply());
}

TEST_CASE("front-end dirty logging: start_logging, the pages the back-end wrote, stop_logging", "[frontend][log]") {
    const bool packed = GENERATE(false, true);
    CAPTURE(packed);
    test::vvu_backend be(1, device::net::forward_mode::loopback);
    {
        auto nd = open_loopback_driver(be, packed);
        auto& fe = nd->frontend();
        REQUIRE(fe.negotiated(wire::protocol_feature::log_shmfd));
        REQUIRE(echo(*nd, 10).size() == 10); // receive buffers posted, rings running
        if (auto r = fe.start_logging(); !r) FAIL(r.error().message());
        CHECK(wire::has(fe.features(), wire::vhost_feature::log_all));
        (void)fe.take_dirty_pages(); // what the restarts wrote

        REQUIRE(echo(*nd, 100).size() == 100);
        const auto pages = fe.take_dirty_pages();
        // The frames went into receive buffers and both used rings: pages of the shared memory.
        REQUIRE_FALSE(pages.empty());
        const auto& regions = fe.memory().regions();
        for (std::uint64_t page : pages) {
            const std::uint64_t at = page * 4096;
            CHECK(std::any_of(regions.begin(), regions.end(),
                              [&](const auto& r) { return at >= r.gpa && at < r.gpa + r.size; }));
        }
        CHECK(fe.take_dirty_pages().empty()); // taken means cleared

        if (auto r = fe.stop_logging(); !r) FAIL(r.error().message());
        CHECK_FALSE(wire::has(fe.features(), wire::vhost_feature::log_all));
        REQUIRE(echo(*nd, 100).size() == 100);
        CHECK(fe.take_dirty_pages().empty());
        auto all = nd->close();
        if (!all) FAIL(all.error().message());
    }
    CHECK(be.join() == "peer closed the connection");
}
