// A forwarder killed mid-burst loses no frame. Two net ports (xconnect: port 0's TX vring
// to port 1's RX vring) run over split rings tracked in inflight areas, in memory shared with
// a child process that plays the back-end and dies by SIGKILL at a chosen step of a burst
// (net_port::received_burst): after receive(), or after transmit() and before the TX chains
// went back. A new back-end over the same memory and areas then forwards what is left, and the
// front-end (this process, driving the other side of the rings) counts each sequence number.
//
// At least once, precisely: killed before transmit(), every frame arrives exactly once; killed
// after transmit(), the burst it had written arrives twice (its RX chains were completed, its
// TX chains were not, so the new back-end sends their frames again), every other frame once.
//
// And the forwarder keeps that order: with a destination port held (its lock, by a burst of
// the test's), a pass stops inside transmit(), and the front-end sees no TX chain back while a
// destination — in learn mode's flood, the last of several — is yet to get the frames.
//
// Over the same rings: txonly's sequence numbers run on without a gap or a repeat, whatever
// room the front-end gives each time, and across a hand-over of the engine's state.
#include <vvu/device/l2.hpp>
#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>

#include <vvu/memory/guest_memory.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/ring/inflight.hpp>
#include <vvu/ring/split.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <thread>
#include <vector>

using namespace vvu;
using namespace vvu::device::net;

namespace {

constexpr std::uint32_t queue_size = 256;
constexpr std::uint32_t buffer_bytes = 2048;
constexpr std::uint64_t frames_sent = 40; // more than one burst (ring::max_burst)
constexpr std::uint32_t rx_buffers = 128; // room for every frame and a burst of duplicates

// Guest memory both processes see (MAP_SHARED): per vring (port p, vring v: slot 2p + v) its
// ring areas, its inflight area, and queue_size buffers.
class shared_guest {
public:
    static constexpr std::size_t bytes = 8 << 20;
    static constexpr std::uint32_t slots = 6; // three ports
    // The layout below holds them: rings under 0x80000, inflight areas under 0x100000.
    static_assert(0x10000 * slots <= 0x80000 && 0x80000 + 0x2000 * slots <= 0x100000);

    shared_guest()
        : base_(static_cast<std::byte*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0))) {
        if (base_ == MAP_FAILED) throw std::runtime_error("mmap failed");
    }
    ~shared_guest() { ::munmap(base_, bytes); }
    shared_guest(const shared_guest&) = delete;
    shared_guest& operator=(const shared_guest&) = delete;

    ring::local_memory& mem() { return mem_; }
    std::uint64_t gpa(std::size_t offset) const { return mem_.base() + offset; }
    std::byte* at(std::uint64_t gpa) { return mem_.translate(gpa, 1); }

    static ring::split_config config(std::uint32_t slot) {
        const std::size_t rings = 0x10000 * std::size_t{slot};
        return {queue_size, ring::local_memory::default_base + rings, ring::local_memory::default_base + rings + 0x1000,
                ring::local_memory::default_base + rings + 0x2000, {}, 0};
    }
    std::span<std::byte> inflight_area(std::uint32_t slot) {
        return {base_ + 0x80000 + 0x2000 * std::size_t{slot}, ring::split_inflight_layout::bytes(queue_size)};
    }
    std::uint64_t buffer(std::uint32_t slot, std::uint32_t i) const {
        return gpa(0x100000 + (std::size_t{slot} * queue_size + i) * buffer_bytes);
    }

    // The back-end's view of the same bytes: one region at the same guest addresses.
    memory::guest_memory::ptr backend_memory() {
        const wire::memory_region desc{mem_.base(), bytes, 0, 0};
        auto m = memory::guest_memory::make({memory::region(desc, base_, nullptr)});
        return m ? *m : nullptr;
    }

private:
    std::byte* base_;
    ring::local_memory mem_{std::span(base_, bytes)};
};

constexpr std::uint32_t tx_slot = 1;                                  // port 0, vring 1: its front-end's TX
constexpr std::uint32_t rx_slot(std::size_t port) { return static_cast<std::uint32_t>(2 * port); } // RX vrings

// A back-end's ports with the vrings the test uses started — port 0's TX, the others' RX —
// what a new process builds from the front-ends' setup. Null when a vring does not start.
struct backend_ports {
    std::vector<std::unique_ptr<net_port>> ports;

    static std::optional<backend_ports> start(shared_guest& g, std::size_t count = 2) {
        backend_ports b;
        auto memory = g.backend_memory();
        if (!memory) return std::nullopt;
        for (std::size_t p = 0; p < count; ++p) {
            b.ports.push_back(std::make_unique<net_port>(net_port::options{}));
            const std::uint32_t slot = p == 0 ? tx_slot : rx_slot(p);
            const auto cfg = shared_guest::config(slot);
            protocol::vring_start s;
            s.index = slot % 2;
            s.size = queue_size;
            s.desc_gpa = cfg.desc_addr;
            s.avail_gpa = cfg.avail_addr;
            s.used_gpa = cfg.used_addr;
            s.inflight = g.inflight_area(slot);
            auto v = protocol::vring::start(s, memory, {}, {});
            if (!v) return std::nullopt;
            (*v)->set_enabled(true);
            b.ports.back()->start_vring(std::move(*v));
        }
        return b;
    }
    std::vector<net_port*> pointers() const {
        std::vector<net_port*> out;
        for (const auto& p : ports) out.push_back(p.get());
        return out;
    }
};

enum class kill_point { after_receive, after_transmit };

// The back-end that dies: one burst from port 0 toward port 1, SIGKILL at `point`.
[[noreturn]] void run_and_die(shared_guest& g, kill_point point) {
    auto ports = backend_ports::start(g);
    if (!ports) ::_exit(3);
    std::vector<std::byte> staging(ring::max_burst * max_frame_size);
    std::array<frame, ring::max_burst> frames;
    auto burst = ports->ports[0]->receive(staging, frames);
    if (burst.size() != ring::max_burst) ::_exit(4);
    if (point == kill_point::after_transmit && ports->ports[1]->transmit(std::span(frames).first(burst.size())) != burst.size())
        ::_exit(5);
    ::kill(::getpid(), SIGKILL);
    ::_exit(6); // not reached
}

// The front-ends: port 0's transmits numbered frames, the others' receive.
struct front_ends {
    using driver = ring::split_driver<ring::local_memory>;
    shared_guest& g;
    driver tx;
    std::vector<driver> rx;                             // rx[q - 1]: port q's
    std::vector<std::map<std::uint64_t, int>> arrivals; // per receiving port: sequence number -> times

    explicit front_ends(shared_guest& guest, std::size_t ports = 2)
        : g(guest), tx(*driver::create(g.mem(), shared_guest::config(tx_slot))), arrivals(ports - 1) {
        for (std::size_t q = 1; q < ports; ++q) rx.push_back(*driver::create(g.mem(), shared_guest::config(rx_slot(q))));
        send_numbered_frames();
        give_receive_buffers();
    }

    void send_numbered_frames() {
        for (std::uint32_t i = 0; i < frames_sent; ++i) {
            const std::uint64_t addr = g.buffer(tx_slot, i);
            std::byte* buf = g.at(addr);
            std::fill_n(buf, net_hdr_size, std::byte{0});
            // To a MAC nobody has: learn mode floods it to every other port.
            const std::size_t len = make_test_frame({buf + net_hdr_size, buffer_bytes - net_hdr_size}, test_frame_min_size, i,
                                                    {0x02, 0, 0, 0, 0, 1}, {0x02, 0, 0, 0, 0, 0x99});
            const ring::buffer b{addr, static_cast<std::uint32_t>(net_hdr_size + len)};
            REQUIRE(tx.add({&b, 1}, {}, i));
        }
    }
    void give_receive_buffers() {
        for (std::size_t q = 1; q <= rx.size(); ++q)
            for (std::uint32_t i = 0; i < rx_buffers; ++i) {
                const ring::buffer b{g.buffer(rx_slot(q), i), buffer_bytes};
                REQUIRE(rx[q - 1].add({}, {&b, 1}, i));
            }
    }
    // Frames that arrived on port q since the last look.
    std::size_t collect_received(std::size_t q = 1) {
        std::size_t n = 0;
        ring::used_buffer u;
        while (rx[q - 1].reap(u)) {
            REQUIRE(u.len > net_hdr_size);
            const std::byte* buf = g.at(g.buffer(rx_slot(q), static_cast<std::uint32_t>(u.token)));
            const auto seq = test_frame_sequence({buf + net_hdr_size, u.len - net_hdr_size});
            REQUIRE(seq);
            ++arrivals[q - 1][*seq];
            ++n;
        }
        return n;
    }
    // TX chains given back since the last look.
    std::size_t collect_sent() {
        std::size_t n = 0;
        ring::used_buffer u;
        while (tx.reap(u)) ++n;
        return n;
    }
    // TX chains the back-end has taken and not completed, as its inflight area records them.
    std::size_t tx_in_flight() {
        using L = ring::split_inflight_layout;
        const auto area = g.inflight_area(tx_slot);
        std::size_t n = 0;
        for (std::uint32_t i = 0; i < queue_size; ++i)
            n += area[L::header_size + L::entry_size * i + L::entry_inflight_off] == std::byte{1};
        return n;
    }
};

} // namespace

TEST_CASE("forwarder: a back-end killed mid-burst loses no frame; a restarted one delivers each at least once",
          "[device][net][forward]") {
    const auto point = GENERATE(kill_point::after_receive, kill_point::after_transmit);
    CAPTURE(point == kill_point::after_receive ? "after receive" : "after transmit");
    shared_guest g;
    front_ends fe(g);

    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) run_and_die(g, point);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);

    // What the front-ends saw of the dead back-end: no TX chain back (the burst it took is in
    // flight), and the burst in their RX ring if it got as far as transmitting.
    CHECK(fe.collect_sent() == 0);
    CHECK(fe.tx_in_flight() == ring::max_burst);
    const std::size_t before_crash = fe.collect_received();
    CHECK(before_crash == (point == kill_point::after_transmit ? ring::max_burst : 0));

    // A new back-end over the same rings and inflight areas takes the burst again, then the rest.
    auto ports = backend_ports::start(g);
    REQUIRE(ports);
    forwarder fwd(ports->pointers(), forward_mode::xconnect);
    for (int pass = 0; pass < 10 && fwd.poll() != 0; ++pass) {
    }
    CHECK(fe.collect_sent() == frames_sent);
    fe.collect_received();

    REQUIRE(fe.arrivals[0].size() == frames_sent);
    for (const auto& [seq, times] : fe.arrivals[0]) {
        CAPTURE(seq);
        const bool in_killed_burst = seq < ring::max_burst;
        CHECK(times == (point == kill_point::after_transmit && in_killed_burst ? 2 : 1));
    }
    CHECK(ports->ports[1]->stats().tx_dropped == 0);
    // A pass ends with nothing in flight (what a live update's export needs).
    CHECK(fe.tx_in_flight() == 0);
    auto tx_vring = ports->ports[0]->stop_vring(1);
    REQUIRE(tx_vring);
    CHECK(tx_vring->inflight_count() == 0);
}

TEST_CASE("forwarder: TX chains go back only once every destination has the frames", "[device][net][forward]") {
    // xconnect: port 0 -> 1, held. learn: a flood from port 0 to 1, then 2; 2 held.
    const auto mode = GENERATE(forward_mode::xconnect, forward_mode::learn);
    CAPTURE(mode == forward_mode::xconnect ? "xconnect" : "learn");
    const std::size_t port_count = mode == forward_mode::xconnect ? 2 : 3;
    const std::size_t held = port_count - 1;
    shared_guest g;
    front_ends fe(g, port_count);
    auto ports = backend_ports::start(g, port_count);
    REQUIRE(ports);
    forwarder fwd(ports->pointers(), mode);

    std::optional<net_port::received_burst> hold(ports->ports[held]->receive({}, {})); // the port's lock, nothing else
    REQUIRE(hold->size() == 0);
    std::thread pass([&] { (void)fwd.poll(); });
    // The pass has taken a burst (its inflight area says so) and stops at the held port.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (fe.tx_in_flight() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50)); // time for a wrong order to show
    CHECK(fe.tx_in_flight() == ring::max_burst);
    CHECK(fe.collect_sent() == 0);
    if (mode == forward_mode::learn) CHECK(fe.collect_received(1) == ring::max_burst); // the flood's first port has them
    CHECK(fe.collect_received(held) == 0);

    hold.reset();
    pass.join();
    CHECK(fe.collect_sent() == ring::max_burst);
    CHECK(fe.tx_in_flight() == 0);
    CHECK(fe.collect_received(held) == ring::max_burst);
    for (std::size_t q = 1; q < port_count; ++q) {
        CAPTURE(q);
        CHECK(fe.arrivals[q - 1].size() == ring::max_burst);
    }
}

TEST_CASE("forwarder: txonly numbers its frames one after another, whatever room the front-end gives, and on "
          "after a hand-over", "[device][net][forward]") {
    shared_guest g;
    auto rx = *ring::split_driver<ring::local_memory>::create(g.mem(), shared_guest::config(rx_slot(1)));
    auto ports = backend_ports::start(g);
    REQUIRE(ports);
    const std::vector<net_port*> port{ports->ports[1].get()};
    auto engine = std::make_unique<forwarder>(port, forward_mode::txonly);
    std::uint64_t next = 0;
    std::uint32_t token = 0;
    // Rooms smaller and larger than a burst, so that bursts start at every offset of the frames.
    for (const std::uint32_t room : {5u, 13u, 1u, 32u, 40u, 31u, 7u}) {
        for (std::uint32_t i = 0; i < room; ++i, ++token) {
            const ring::buffer b{g.buffer(rx_slot(1), token), buffer_bytes};
            REQUIRE(rx.add({}, {&b, 1}, token));
        }
        while (engine->poll() != 0) {
        }
        std::uint32_t arrived = 0;
        ring::used_buffer u;
        while (rx.reap(u)) {
            REQUIRE(u.len == net_hdr_size + test_frame_min_size);
            const std::byte* buf = g.at(g.buffer(rx_slot(1), static_cast<std::uint32_t>(u.token)));
            const auto seq = test_frame_sequence({buf + net_hdr_size, u.len - net_hdr_size});
            REQUIRE(seq);
            CHECK(*seq == next);
            ++next;
            ++arrived;
        }
        CHECK(arrived == room);
        if (room == 13) { // a live update: a new engine goes on from the old one's state
            const auto state = engine->save_state();
            engine = std::make_unique<forwarder>(port, forward_mode::txonly);
            REQUIRE(engine->load_state(state));
        }
    }
    CHECK(next == 129);
}
