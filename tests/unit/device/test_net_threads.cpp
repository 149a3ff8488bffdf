// Two forwarding threads over the same two ports, each on its share of the queue pairs
// (queue_share, vvu-forward --threads 2): port 0's TX vrings of queue pairs 0 and 1 carry
// numbered frames (a range per queue pair), two threads forward them in xconnect mode at the
// same time, and port 1's RX vring of the same queue pair must receive exactly its range, in
// order — each thread moving its own queue pair's frames and none of the other's.
#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>

#include <vvu/memory/guest_memory.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/ring/split.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace vvu;
using namespace vvu::device::net;

namespace {

constexpr std::uint32_t queue_size = 256;
constexpr std::uint32_t buffer_bytes = 2048;
constexpr std::uint32_t frames_per_queue = 200;
constexpr std::uint64_t first_sequence[2] = {0, 1'000'000};

// Guest memory for four vrings — port 0's TX of queue pairs 0 and 1 (vrings 1, 3), port 1's RX
// of the same (vrings 0, 2) — each with its ring areas and queue_size buffers.
struct guest {
    static constexpr std::size_t bytes = 8 << 20;
    std::vector<std::byte> memory = std::vector<std::byte>(bytes);
    ring::local_memory mem{std::span(memory)};

    // slot: 0, 1 port 0's TX of queue pair 0, 1; 2, 3 port 1's RX of queue pair 0, 1.
    static ring::split_config config(std::uint32_t slot) {
        const std::uint64_t rings = ring::local_memory::default_base + 0x10000 * std::uint64_t{slot};
        return {queue_size, rings, rings + 0x1000, rings + 0x2000, {}, 0};
    }
    static std::uint64_t buffer(std::uint32_t slot, std::uint32_t i) {
        return ring::local_memory::default_base + 0x100000 + (std::uint64_t{slot} * queue_size + i) * buffer_bytes;
    }
    memory::guest_memory::ptr backend_view() {
        const wire::memory_region desc{mem.base(), bytes, 0, 0};
        auto m = memory::guest_memory::make({memory::region(desc, memory.data(), nullptr)});
        return m ? *m : nullptr;
    }
};

std::unique_ptr<net_port> port_with(const memory::guest_memory::ptr& view, std::uint32_t first_slot,
                                    std::uint32_t vring_parity) {
    auto port = std::make_unique<net_port>(net_port::options{.queue_pairs = 2});
    for (std::uint32_t q = 0; q < 2; ++q) {
        const auto cfg = guest::config(first_slot + q);
        protocol::vring_start s;
        s.index = 2 * q + vring_parity;
        s.size = queue_size;
        s.desc_gpa = cfg.desc_addr;
        s.avail_gpa = cfg.avail_addr;
        s.used_gpa = cfg.used_addr;
        auto v = protocol::vring::start(s, view, {}, {});
        REQUIRE(v);
        (*v)->set_enabled(true);
        port->start_vring(std::move(*v));
    }
    return port;
}

} // namespace

TEST_CASE("forwarder: two threads, each on its own queue pairs of the same ports", "[device][net][forward][threads]") {
    guest g;
    using driver = ring::split_driver<ring::local_memory>;
    std::vector<driver> tx, rx;
    for (std::uint32_t q = 0; q < 2; ++q) {
        tx.push_back(*driver::create(g.mem, guest::config(q)));
        rx.push_back(*driver::create(g.mem, guest::config(2 + q)));
        for (std::uint32_t i = 0; i < frames_per_queue; ++i) {
            const std::uint64_t addr = guest::buffer(q, i);
            std::byte* buf = g.mem.translate(addr, buffer_bytes);
            REQUIRE(buf != nullptr);
            std::memset(buf, 0, net_hdr_size);
            const std::size_t len = make_test_frame({buf + net_hdr_size, buffer_bytes - net_hdr_size}, test_frame_min_size,
                                                    first_sequence[q] + i, {0x02, 0, 0, 0, 0, 1}, {0x02, 0, 0, 0, 0, 2});
            const ring::buffer b{addr, static_cast<std::uint32_t>(net_hdr_size + len)};
            REQUIRE(tx[q].add({&b, 1}, {}, i));
            const ring::buffer r{guest::buffer(2 + q, i), buffer_bytes};
            REQUIRE(rx[q].add({}, {&r, 1}, i));
        }
    }
    auto view = g.backend_view();
    REQUIRE(view);
    auto from = port_with(view, 0, 1); // port 0: TX vrings 1, 3
    auto to = port_with(view, 2, 0);   // port 1: RX vrings 0, 2
    const std::vector<net_port*> ports{from.get(), to.get()};

    // Both threads start together and poll until every frame has moved.
    std::atomic<int> ready{0};
    std::atomic<std::uint64_t> moved_total{0};
    std::uint64_t moved[2] = {0, 0};
    std::vector<std::thread> threads;
    for (std::uint32_t t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
            forwarder fwd(ports, forward_mode::xconnect, test_frame_min_size, queue_share{t, 2});
            ++ready;
            while (ready.load() < 2) std::this_thread::yield();
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (moved_total.load() < 2 * frames_per_queue && std::chrono::steady_clock::now() < until) {
                const std::size_t n = fwd.poll();
                moved[t] += n;
                moved_total += n;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(moved[0] == frames_per_queue); // thread 0 moved queue pair 0's frames, and only them
    CHECK(moved[1] == frames_per_queue);

    for (std::uint32_t q = 0; q < 2; ++q) {
        CAPTURE(q);
        std::vector<std::uint64_t> got;
        ring::used_buffer u;
        while (rx[q].reap(u)) {
            const std::byte* buf = g.mem.translate(guest::buffer(2 + q, static_cast<std::uint32_t>(u.token)), u.len);
            REQUIRE(buf != nullptr);
            got.push_back(test_frame_sequence({buf + net_hdr_size, u.len - net_hdr_size}).value_or(~0ull));
        }
        REQUIRE(got.size() == frames_per_queue);
        for (std::uint32_t i = 0; i < frames_per_queue; ++i) REQUIRE(got[i] == first_sequence[q] + i);
        std::size_t sent_back = 0;
        while (tx[q].reap(u)) ++sent_back;
        CHECK(sent_back == frames_per_queue);
    }
    CHECK(from->stats().rx_packets == 2 * frames_per_queue); // the queue pairs' counters, summed
    CHECK(to->stats().tx_packets == 2 * frames_per_queue);
    CHECK(to->stats().tx_dropped == 0);
}

TEST_CASE("forwarder: queue shares it cannot serve are refused", "[device][net][forward][threads]") {
    net_port one({.queue_pairs = 1}), two({.queue_pairs = 2});
    CHECK_THROWS_AS(forwarder({&two, &two}, forward_mode::learn, test_frame_min_size, queue_share{0, 2}), std::invalid_argument);
    CHECK_THROWS_AS(forwarder({&one, &two}, forward_mode::xconnect, test_frame_min_size, queue_share{1, 2}), std::invalid_argument);
    CHECK_THROWS_AS(forwarder({&two}, forward_mode::rxonly, test_frame_min_size, queue_share{2, 2}), std::invalid_argument);
    CHECK_NOTHROW(forwarder({&two, &two}, forward_mode::xconnect, test_frame_min_size, queue_share{1, 2}));
}
