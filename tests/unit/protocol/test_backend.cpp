// The back-end state machine driven by a scripted in-memory transport (no socket): the real
// opening sequences of QEMU 7.2 and DPDK 22.11, reply-ack, GET_VRING_BASE, multiqueue, memory
// table replacement, and every protocol violation ending the session.
#include <vvu/protocol/backend.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/util/eventfd.hpp>

#include <vvu/device/l2.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/ring/packed.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/wire/transcript.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

using namespace vvu;
using namespace vvu::wire;
using fr = front_request;

namespace {

using scripted_message = transport::received_message;

// One message as a transport hands it over: bytes and owned fds.
scripted_message make_message(std::span<const std::byte> bytes, std::vector<unique_fd> fds) {
    scripted_message m;
    REQUIRE(bytes.size() >= header_size);
    REQUIRE(bytes.size() <= m.storage.size());
    m.header = load_header(bytes);
    std::copy(bytes.begin(), bytes.end(), m.storage.begin());
    for (auto& fd : fds) REQUIRE(m.fds.push_back(std::move(fd)));
    return m;
}

// A transport that replays a script and records what the back-end sends; resources are made
// the way the UNIX transport makes them (mmap of the fd, eventfds).
struct scripted_transport {
    using kick_notifier = eventfd_notifier;
    using call_notifier = eventfd_notifier;
    using backend_channel = transport::backend_channel;

    std::deque<scripted_message> script;
    std::vector<std::vector<std::byte>> sent;

    expected<void, transport::error> wait_for_frontend() { return {}; }
    expected<scripted_message, transport::error> receive() {
        if (script.empty()) return unexpected(transport::error(transport::errc::disconnected));
        auto m = std::move(script.front());
        script.pop_front();
        return m;
    }
    expected<void, transport::error> send(const frame& f) {
        sent.emplace_back(f.bytes().begin(), f.bytes().end());
        return {};
    }
    void close_session() noexcept {}
    expected<memory::region, memory::error> map_region(const memory_region& d, unique_fd fd) {
        return memory::region::map(d, std::move(fd));
    }
    expected<kick_notifier, transport::error> make_kick_notifier(std::uint32_t, unique_fd fd) {
        return kick_notifier(std::move(fd));
    }
    expected<call_notifier, transport::error> make_call_notifier(std::uint32_t, unique_fd fd) {
        return call_notifier(std::move(fd));
    }
    expected<call_notifier, transport::error> make_error_notifier(std::uint32_t, unique_fd fd) {
        return call_notifier(std::move(fd));
    }
    expected<backend_channel, transport::error> make_backend_channel(unique_fd fd) {
        return backend_channel(std::move(fd));
    }
};
static_assert(transport::transport<scripted_transport>);

unique_fd make_eventfd() { return unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

// A memfd of `size` bytes: front-end memory the test can also reach.
struct shared_memory {
    unique_fd fd;
    std::byte* data = nullptr;
    std::size_t size = 0;
    explicit shared_memory(std::size_t bytes) : fd(::memfd_create("vvu-test", MFD_CLOEXEC)), size(bytes) {
        REQUIRE(fd);
        REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(bytes)) == 0);
        data = static_cast<std::byte*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
        REQUIRE(data != MAP_FAILED);
    }
    ~shared_memory() { ::munmap(data, size); }
    unique_fd dup() const { return dup_cloexec(fd.get()); }
};

template <auto R>
scripted_message msg(typename message<R>::payload_type payload, std::vector<unique_fd> fds = {},
                     std::uint32_t flags = flags::version) {
    message<R> m;
    m.flags = flags;
    m.payload = payload;
    for (auto& fd : fds) m.fds.push_back(fd.get());
    auto f = encode(m);
    if (!f) FAIL(f.error().message());
    return make_message(f->bytes(), std::move(fds));
}

struct fixture {
    device::net::net_port port{{.queue_pairs = 2}};
    scripted_transport transport;
    protocol::backend<scripted_transport, device::net::net_port> backend{transport, port};

    // Runs one message through handle(); returns the reply bytes, if any.
    protocol::backend<scripted_transport, device::net::net_port>::result run(scripted_message m) {
        return backend.handle(m);
    }
    template <auto R>
    reply<R> expect_reply(scripted_message m) {
        auto r = run(std::move(m));
        if (!r) FAIL(r.error().message());
        REQUIRE(r->has_value());
        auto decoded = decode_reply<R>((*r)->bytes(), (*r)->fds.span());
        if (!decoded) FAIL(decoded.error().message());
        return *decoded;
    }
    void expect_ok(scripted_message m) {
        auto r = run(std::move(m));
        if (!r) FAIL(r.error().message());
    }
    std::string expect_violation(scripted_message m) {
        auto r = run(std::move(m));
        REQUIRE_FALSE(r);
        return r.error().message();
    }
};

std::vector<transcript_entry> load_capture(const std::string& name) {
    std::ifstream in(std::filesystem::path(VVU_TEST_DATA_DIR) / "captures" / name);
    REQUIRE(in);
    std::stringstream text;
    text << in.rdbuf();
    auto entries = parse_transcript(text.str());
    REQUIRE(entries);
    return *entries;
}

} // namespace

TEST_CASE("backend: QEMU 7.2's opening sequence is answered like the capture's peer", "[protocol][backend]") {
    fixture f;
    std::size_t answered = 0;
    for (const auto& e : load_capture("qemu-7.2-net-opening.vhu")) {
        if (e.sender != transcript_entry::from::front_end) continue;
        std::vector<unique_fd> fds;
        for (std::size_t i = 0; i < e.fd_count; ++i) fds.push_back(make_eventfd());
        auto r = f.run(make_message(e.bytes, std::move(fds)));
        if (!r) FAIL("line " << e.line << ": " << r.error().message());
        if (r->has_value()) ++answered;
    }
    // GET_FEATURES x2, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM and the SET_BACKEND_REQ_FD ack.
    CHECK(answered == 5);
    CHECK(f.backend.state().owner);
    CHECK(f.backend.state().vrings[0].enabled);
    CHECK(f.backend.state().vrings[1].enabled);
}

namespace {
// Replays a DPDK capture. Its addresses point into DPDK's memory: the replay keeps them but
// backs SET_MEM_TABLE's region with a memfd of our own of the captured size.
void replay_dpdk(fixture& f, std::optional<shared_memory>& mem, const std::string& capture) {
    for (const auto& e : load_capture(capture)) {
        if (e.sender != transcript_entry::from::front_end) continue;
        std::vector<unique_fd> fds;
        std::vector<int> raw(e.fd_count, 100);
        auto decoded = decode<front_request>(e.bytes, raw);
        REQUIRE(decoded);
        scripted_message m;
        if (auto* table = std::get_if<message<fr::set_mem_table>>(&*decoded)) {
            // One region of the captured size, backed by a memfd we own.
            auto t = *table;
            REQUIRE(t.payload.nregions == 1);
            mem.emplace(t.payload.regions[0].memory_size);
            t.fds = {mem->fd.get()};
            std::vector<unique_fd> owned;
            owned.push_back(mem->dup());
            auto again = encode(t);
            REQUIRE(again);
            m = make_message(again->bytes(), std::move(owned));
        } else {
            for (std::size_t i = 0; i < e.fd_count; ++i) fds.push_back(make_eventfd());
            m = make_message(e.bytes, std::move(fds));
        }
        auto r = f.run(std::move(m));
        if (!r) FAIL(capture << ":" << e.line << ": " << r.error().message());
    }
}
} // namespace

TEST_CASE("backend: DPDK 22.11's full setup starts every vring", "[protocol][backend]") {
    fixture f;
    std::optional<shared_memory> mem;
    replay_dpdk(f, mem, "dpdk-22.11-virtio-user-split.vhu");
    const auto& s = f.backend.state();
    CHECK(s.status == 0xf);
    CHECK(wire::has(s.features, virtio_feature::version_1));
    REQUIRE(s.vrings.size() == 4);
    CHECK(s.vrings[0].started);
    CHECK(s.vrings[1].started);
    CHECK(s.vrings[0].enabled);
    CHECK_FALSE(s.vrings[2].started);
}

TEST_CASE("backend: DPDK 22.11 with two queue pairs runs four vrings; its shutdown stops them",
          "[protocol][backend]") {
    fixture f;
    std::optional<shared_memory> mem;
    replay_dpdk(f, mem, "dpdk-22.11-virtio-user-mq2.vhu");
    for (const auto& v : f.backend.state().vrings) {
        CHECK(v.started);
        CHECK(v.enabled);
        CHECK(v.size == 256);
    }
    fixture g;
    std::optional<shared_memory> mem2;
    replay_dpdk(g, mem2, "dpdk-22.11-virtio-user-split-stop.vhu");
    CHECK_FALSE(g.backend.state().vrings[0].started);
    CHECK_FALSE(g.backend.state().vrings[1].started);
    CHECK_FALSE(g.backend.state().vrings[0].enabled);
}

TEST_CASE("backend: SEND_RARP announces the MAC; NET_SET_MTU shows in the config space", "[protocol][backend]") {
    fixture f;
    f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::rarp | protocol_feature::net_mtu |
                                                protocol_feature::config | protocol_feature::reply_ack}));
    f.expect_ok(msg<fr::send_rarp>({0x0000'5634'1200'5452ull}));
    std::vector<std::byte> staging(device::net::max_frame_size);
    std::array<device::net::frame, 1> out;
    REQUIRE(f.port.receive(staging, out).size() == 1);
    const auto frame = out[0];
    REQUIRE(frame.size() == 60);
    CHECK(device::net::is_group(device::net::destination_of(frame)));
    CHECK(device::net::source_of(frame) == device::net::mac_address{0x52, 0x54, 0x00, 0x12, 0x34, 0x56});
    CHECK(frame[12] == std::byte{0x80});
    CHECK(frame[13] == std::byte{0x35});
    CHECK(f.port.receive(staging, out).size() == 0); // announced once

    auto ack = f.expect_reply<fr::net_set_mtu>(msg<fr::net_set_mtu>({9000}, {}, flags::version | flags::need_reply));
    CHECK(ack.payload.value == 0);
    config_space get;
    get.offset = 10;
    get.size = 2;
    auto cfg = f.expect_reply<fr::get_config>(msg<fr::get_config>(get));
    REQUIRE(cfg.payload.size == 2);
    CHECK((cfg.payload.region[0] | cfg.payload.region[1] << 8) == 9000);
    auto refused = f.expect_reply<fr::net_set_mtu>(msg<fr::net_set_mtu>({10}, {}, flags::version | flags::need_reply));
    CHECK(refused.payload.value == 1);
    // A config range outside the space: the reply has size 0 ("zero length ... indicates an error").
    get.offset = 8;
    get.size = 16;
    CHECK(f.expect_reply<fr::get_config>(msg<fr::get_config>(get)).payload.size == 0);
}

TEST_CASE("backend: packed SET_VRING_BASE in the 16-bit form front-ends send, and the full form",
          "[protocol][backend]") {
    // DPDK 22.11 sends 0x8000 for a new packed ring: avail 0, wrap 1, and "used = avail".
    const auto dpdk = protocol::packed_base(0x8000);
    CHECK(dpdk.avail_idx == 0);
    CHECK(dpdk.avail_wrap);
    CHECK(dpdk.used_idx == 0);
    CHECK(dpdk.used_wrap);
    const auto full = protocol::packed_base(0x8005'0007);
    CHECK(full.avail_idx == 7);
    CHECK_FALSE(full.avail_wrap);
    CHECK(full.used_idx == 5);
    CHECK(full.used_wrap);
    // A packed capture replays to running vrings whose base reads back in the full form.
    fixture f;
    std::optional<shared_memory> mem;
    replay_dpdk(f, mem, "dpdk-22.11-virtio-user-packed.vhu");
    REQUIRE(f.backend.state().vrings[0].started);
    auto base = f.expect_reply<fr::get_vring_base>(msg<fr::get_vring_base>({0, 0}));
    CHECK(base.payload.num == 0x8000'8000u);
}

TEST_CASE("backend: REPLY_ACK answers NEED_REPLY requests with 0", "[protocol][backend]") {
    fixture f;
    f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::reply_ack | protocol_feature::status}));
    auto r = f.expect_reply<fr::set_status>(msg<fr::set_status>({0xb}, {}, flags::version | flags::need_reply));
    CHECK(r.payload.value == 0);
    CHECK(f.expect_reply<fr::get_status>(msg<fr::get_status>({})).payload.value == 0xb);
    // Without NEED_REPLY: no reply.
    auto none = f.run(msg<fr::set_owner>({}));
    REQUIRE(none);
    CHECK_FALSE(none->has_value());
}

TEST_CASE("backend: features offered include the ring layer's and the device's", "[protocol][backend]") {
    fixture f;
    const auto features = f.expect_reply<fr::get_features>(msg<fr::get_features>({})).payload.value;
    CHECK(wire::has(features, virtio_feature::version_1 | virtio_feature::ring_packed | virtio_feature::ring_event_idx |
                                  vhost_feature::protocol_features | net_feature::mrg_rxbuf | net_feature::mq));
    const auto protocol = f.expect_reply<fr::get_protocol_features>(msg<fr::get_protocol_features>({})).payload.value;
    CHECK(wire::has(protocol, protocol_feature::mq | protocol_feature::reply_ack | protocol_feature::backend_req |
                                  protocol_feature::config | protocol_feature::status |
                                  protocol_feature::configure_mem_slots));
    CHECK(f.expect_reply<fr::get_queue_num>(msg<fr::get_queue_num>({})).payload.value == 2);
}

TEST_CASE("backend: a vring runs, GET_VRING_BASE stops it and returns its state", "[protocol][backend]") {
    fixture f;
    shared_memory mem(1 << 20);
    const std::uint64_t gpa = 0x10000000, uaddr = 0x7f0000000000;
    f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
    memory_table t;
    t.nregions = 1;
    t.regions[0] = {gpa, mem.size, uaddr, 0};
    std::vector<unique_fd> fds;
    fds.push_back(mem.dup());
    f.expect_ok(msg<fr::set_mem_table>(t, std::move(fds)));
    f.expect_ok(msg<fr::set_vring_num>({1, 256}));
    f.expect_ok(msg<fr::set_vring_addr>({1, 0, uaddr, uaddr + 0x3000, uaddr + 0x1000, 0}));
    f.expect_ok(msg<fr::set_vring_base>({1, 5}));
    // The ring as a back-end left it: 5 chains taken and completed (used idx 5).
    *reinterpret_cast<std::uint16_t*>(mem.data + 0x3000 + 2) = 5;
    std::vector<unique_fd> kick;
    kick.push_back(make_eventfd());
    f.expect_ok(msg<fr::set_vring_kick>({1}, std::move(kick)));
    CHECK(f.backend.state().vrings[1].started);

    // The front-end publishes 3 buffers (avail idx 5 -> 8): the data path consumes them.
    const auto avail_idx = reinterpret_cast<std::uint16_t*>(mem.data + 0x1000 + 2);
    *avail_idx = 8;
    auto ring_entries = reinterpret_cast<std::uint16_t*>(mem.data + 0x1000 + 4);
    auto desc = mem.data;
    for (std::uint16_t i = 0; i < 3; ++i) {
        ring_entries[5 + i] = i;
        le::store<std::uint64_t>(desc + 16 * i, gpa + 0x8000 + 0x100 * i);
        le::store<std::uint32_t>(desc + 16 * i + 8, 64);
    }
    f.expect_ok(msg<fr::set_vring_enable>({1, 1}));
    // Event mode: with buffers waiting, the data path must not sleep.
    protocol::kick_wait kicks;
    CHECK_FALSE(f.port.arm_kicks(kicks));
    kicks.cancel();
    f.port.disarm_kicks();
    CHECK(f.port.discard() == 3);
    CHECK(f.port.stats().rx_packets == 3);
    // Now idle: it may sleep on the kick fd, and the ring asks the driver for kicks (flags 0).
    CHECK(f.port.arm_kicks(kicks));
    CHECK(kicks.armed() == 1);
    const auto used_flags = reinterpret_cast<std::uint16_t*>(mem.data + 0x3000);
    CHECK(*used_flags == 0);
    kicks.sleep(std::chrono::milliseconds(0), -1);
    f.port.disarm_kicks();
    CHECK(*used_flags == 1); // VIRTQ_USED_F_NO_NOTIFY: busy-polling again

    auto base = f.expect_reply<fr::get_vring_base>(msg<fr::get_vring_base>({1, 0}));
    CHECK(base.payload.index == 1);
    CHECK(base.payload.num == 8);
    CHECK_FALSE(f.backend.state().vrings[1].started);
    CHECK(f.port.discard() == 0); // stopped: the data path no longer sees it
}

TEST_CASE("backend: a new memory table replaces the old one under running rings", "[protocol][backend]") {
    fixture f;
    shared_memory first(1 << 20), second(1 << 20);
    const std::uint64_t gpa = 0x10000000, uaddr = 0x7f0000000000;
    auto table = [&](shared_memory& m) {
        memory_table t;
        t.nregions = 1;
        t.regions[0] = {gpa, m.size, uaddr, 0};
        std::vector<unique_fd> fds;
        fds.push_back(m.dup());
        return msg<fr::set_mem_table>(t, std::move(fds));
    };
    f.expect_ok(table(first));
    f.expect_ok(msg<fr::set_vring_num>({0, 64}));
    f.expect_ok(msg<fr::set_vring_addr>({0, 0, uaddr, uaddr + 0x2000, uaddr + 0x1000, 0}));
    std::vector<unique_fd> kick;
    kick.push_back(make_eventfd());
    f.expect_ok(msg<fr::set_vring_kick>({0}, std::move(kick)));
    REQUIRE(f.backend.state().vrings[0].started);
    f.expect_ok(table(second));
    CHECK(f.backend.state().vrings[0].started);
    // A table that no longer covers the vring's addresses is a violation.
    shared_memory small(1 << 12);
    memory_table t;
    t.nregions = 1;
    t.regions[0] = {0x20000000, small.size, 0x7e0000000000, 0};
    std::vector<unique_fd> fds;
    fds.push_back(small.dup());
    CHECK(f.expect_violation(msg<fr::set_mem_table>(t, std::move(fds))) ==
          "SET_MEM_TABLE: vring 0 addresses are outside the memory table");
}

TEST_CASE("backend: every protocol violation names the request and the reason", "[protocol][backend]") {
    fixture f;
    CHECK(f.expect_violation(msg<fr::set_vring_num>({4, 256})) == "SET_VRING_NUM: vring 4 out of range (4 vrings)");
    CHECK(f.expect_violation(msg<fr::set_vring_num>({0, 0})) == "SET_VRING_NUM: vring size 0 out of range [1, 32768]");
    CHECK(f.expect_violation(msg<fr::set_vring_enable>({0, 2})) == "SET_VRING_ENABLE: enable value 2 is neither 0 nor 1");
    CHECK(f.expect_violation(msg<fr::set_features>({1ull << 63})) ==
          "SET_FEATURES: features 0x8000000000000000 were not offered");
    CHECK(f.expect_violation(msg<fr::set_protocol_features>({protocol_feature::pagefault})) ==
          "SET_PROTOCOL_FEATURES: protocol features 0x100 were not offered");
    CHECK(f.expect_violation(msg<fr::get_status>({})) == "GET_STATUS: requires protocol feature STATUS (not negotiated)");
    CHECK(f.expect_violation(msg<fr::get_max_mem_slots>({})) ==
          "GET_MAX_MEM_SLOTS: requires protocol feature CONFIGURE_MEM_SLOTS (not negotiated)");
    CHECK(f.expect_violation(msg<fr::postcopy_advise>({})) == "POSTCOPY_ADVISE: not supported by this back-end");
    CHECK(f.expect_violation(msg<fr::create_crypto_session>({})) == "CREATE_CRYPTO_SESSION: not supported by this back-end");
    // A malformed message is a violation too: the codec's error, with the request's name.
    auto bad = msg<fr::get_features>({});
    bad.storage[4] = std::byte{2};
    CHECK(f.expect_violation(std::move(bad)) == "GET_FEATURES: unsupported version in flags (must be 0x1) (got 2, want 1)");
    std::vector<unique_fd> two;
    two.push_back(make_eventfd());
    two.push_back(make_eventfd());
    auto extra = msg<fr::set_owner>({});
    for (auto& fd : two) REQUIRE(extra.fds.push_back(std::move(fd)));
    CHECK(f.expect_violation(std::move(extra)) == "SET_OWNER: file descriptors where none are allowed (got 2, want 0)");
}

TEST_CASE("backend: serve() ends the session on a violation, with a failure ack, and resets", "[protocol][backend]") {
    fixture f;
    f.transport.script.push_back(msg<fr::set_owner>({}));
    f.transport.script.push_back(msg<fr::set_protocol_features>({protocol_feature::reply_ack}));
    f.transport.script.push_back(msg<fr::set_vring_num>({9, 256}, {}, flags::version | flags::need_reply));
    f.transport.script.push_back(msg<fr::set_owner>({})); // never read
    const std::string why = f.backend.serve();
    CHECK(why == "SET_VRING_NUM: vring 9 out of range (4 vrings)");
    REQUIRE(f.transport.sent.size() == 1);
    auto ack = decode_reply<fr::set_vring_num>(f.transport.sent[0], {});
    REQUIRE(ack);
    CHECK(ack->payload.value == 1);
    CHECK(f.transport.script.size() == 1);
    CHECK_FALSE(f.backend.state().owner); // reset for the next front-end
}

namespace {

// A split ring for vring 1 in `mem` (desc at 0, avail at 0x1000, used at 0x3000) whose avail
// ring holds `count` chains of one 64-byte buffer, entries [first, first + count) naming heads
// 0, 1, …, and whose used index is `used`.
void fill_ring(shared_memory& mem, std::uint64_t gpa, std::uint16_t first, std::uint16_t count, std::uint16_t used) {
    auto* avail = mem.data + 0x1000;
    le::store<std::uint16_t>(avail + 2, static_cast<std::uint16_t>(first + count));
    for (std::uint16_t i = 0; i < count; ++i) {
        const std::uint16_t head = i % 256;
        le::store<std::uint16_t>(avail + 4 + 2 * ((first + i) % 256), head);
        le::store<std::uint64_t>(mem.data + 16 * head, gpa + 0x8000 + 0x100 * head);
        le::store<std::uint32_t>(mem.data + 16 * head + 8, 64);
        le::store<std::uint16_t>(mem.data + 16 * head + 12, 0);
    }
    le::store<std::uint16_t>(mem.data + 0x3000 + 2, used);
}

// Sets vring 1 up over `mem` (SET_MEM_TABLE, NUM, ADDR, BASE `base`) and starts it with a kick.
void start_vring1(fixture& f, shared_memory& mem, std::uint64_t gpa, std::uint32_t base) {
    const std::uint64_t uaddr = 0x7f0000000000;
    memory_table t;
    t.nregions = 1;
    t.regions[0] = {gpa, mem.size, uaddr, 0};
    std::vector<unique_fd> fds;
    fds.push_back(mem.dup());
    f.expect_ok(msg<fr::set_mem_table>(t, std::move(fds)));
    f.expect_ok(msg<fr::set_vring_num>({1, 256}));
    f.expect_ok(msg<fr::set_vring_addr>({1, 0, uaddr, uaddr + 0x3000, uaddr + 0x1000, 0}));
    f.expect_ok(msg<fr::set_vring_base>({1, base}));
    std::vector<unique_fd> kick;
    kick.push_back(make_eventfd());
    f.expect_ok(msg<fr::set_vring_kick>({1}, std::move(kick)));
    f.expect_ok(msg<fr::set_vring_enable>({1, 1}));
    REQUIRE(f.backend.state().vrings[1].started);
}

} // namespace

TEST_CASE("backend: a front-end that kept its ring running across a reconnect resumes at the used index",
          "[protocol][backend][reconnect]") {
    // DPDK 22.11's virtio-user (server=1) reconnecting: SET_VRING_BASE 0 while its ring is at
    // avail 45792, used 45536 — the old back-end took 256 chains and completed none of them.
    fixture f;
    std::vector<std::string> notices;
    f.backend.on_notice([&](const std::string& s) { notices.push_back(s); });
    shared_memory mem(1 << 20);
    const std::uint64_t gpa = 0x10000000;
    f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
    fill_ring(mem, gpa, 45536, 256, 45536);
    start_vring1(f, mem, gpa, 0);
    REQUIRE(notices.size() == 1);
    CHECK(notices[0] == "vring 1: SET_VRING_BASE 0 but the used ring is at 45536 (avail 45792): resuming at 45536");
    // The chains the old back-end never completed are taken (once) and completed now.
    std::size_t taken = 0;
    for (int i = 0; i < 20; ++i) taken += f.port.discard();
    CHECK(taken == 256);
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 2) == 45792);
}

TEST_CASE("backend: a real index jump still breaks the ring after a reconnect", "[protocol][backend][reconnect][hostile]") {
    fixture f;
    shared_memory mem(1 << 20);
    const std::uint64_t gpa = 0x10000000;
    f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
    fill_ring(mem, gpa, 1000, 16, 1000);
    le::store<std::uint16_t>(mem.data + 0x1000 + 2, 1000 + 300); // avail 300 past used: no ring holds that
    start_vring1(f, mem, gpa, 0);
    CHECK(f.port.discard() == 0);
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 2) == 1000); // nothing completed
}

TEST_CASE("backend: a ring the front-end breaks is reported once — error eventfd, log, DEVICE_NEEDS_RESET — "
          "and the other rings run on",
          "[protocol][backend][hostile]") {
    fixture f;
    std::vector<std::string> notices;
    f.backend.on_notice([&](const std::string& s) { notices.push_back(s); });
    shared_memory mem(1 << 20);
    const std::uint64_t gpa = 0x10000000;
    f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
    f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::status}));
    f.expect_ok(msg<fr::set_status>({0x0f}));
    unique_fd err = make_eventfd();
    std::vector<unique_fd> err_fd;
    err_fd.push_back(dup_cloexec(err.get()));
    f.expect_ok(msg<fr::set_vring_err>({1}, std::move(err_fd)));
    fill_ring(mem, gpa, 0, 16, 0);
    start_vring1(f, mem, gpa, 0);
    CHECK(f.port.discard() == 16); // a sound ring first
    std::uint64_t count = 0;
    CHECK(::read(err.get(), &count, sizeof count) < 0); // nothing signalled yet
    CHECK(f.expect_reply<fr::get_status>(msg<fr::get_status>({})).payload.value == 0x0f);

    // The front-end moves its avail index 5000 past what the ring holds (more than the size).
    le::store<std::uint16_t>(mem.data + 0x1000 + 2, 16 + 5000);
    for (int i = 0; i < 3; ++i) CHECK(f.port.discard() == 0); // the ring takes nothing more
    REQUIRE(::read(err.get(), &count, sizeof count) == sizeof count);
    CHECK(count == 1); // signalled once, however often the data path looked
    REQUIRE(notices.size() == 1);
    CHECK(notices[0].find("vring 1 broken by the front-end") != std::string::npos);
    CHECK(notices[0].find("available index moved more than the queue size") != std::string::npos);
    CHECK(f.expect_reply<fr::get_status>(msg<fr::get_status>({})).payload.value == (0x0f | 0x40));
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 2) == 16); // nothing completed past the jump

    // The other direction's ring (vring 0, the device's RX) still takes buffers and frames.
    // (vring 0 lives in the same table: its rings at 0x40000 of `mem`.)
    auto* base = mem.data + 0x40000;
    for (std::uint16_t i = 0; i < 4; ++i) {
        le::store<std::uint64_t>(base + 16 * i, gpa + 0x50000 + 0x800 * i);
        le::store<std::uint32_t>(base + 16 * i + 8, 0x800);
        le::store<std::uint16_t>(base + 16 * i + 12, 2); // device-writable
        le::store<std::uint16_t>(base + 0x1000 + 4 + 2 * i, i);
    }
    le::store<std::uint16_t>(base + 0x1000 + 2, 4);
    const std::uint64_t uaddr = 0x7f0000000000 + 0x40000;
    f.expect_ok(msg<fr::set_vring_num>({0, 256}));
    f.expect_ok(msg<fr::set_vring_addr>({0, 0, uaddr, uaddr + 0x3000, uaddr + 0x1000, 0}));
    f.expect_ok(msg<fr::set_vring_base>({0, 0}));
    std::vector<unique_fd> kick;
    kick.push_back(make_eventfd());
    f.expect_ok(msg<fr::set_vring_kick>({0}, std::move(kick)));
    f.expect_ok(msg<fr::set_vring_enable>({0, 1}));
    std::array<std::byte, 60> frame{};
    const device::net::frame one(frame);
    CHECK(f.port.transmit(std::span(&one, 1)) == 1);
    CHECK(le::load<std::uint16_t>(base + 0x3000 + 2) == 1);

    // A driver reset (status 0) clears DEVICE_NEEDS_RESET.
    f.expect_ok(msg<fr::set_status>({0}));
    CHECK(f.expect_reply<fr::get_status>(msg<fr::get_status>({})).payload.value == 0);
    CHECK(notices.size() == 1);
}

TEST_CASE("backend: INFLIGHT_SHMFD — a restarted back-end takes the chains in flight again, once",
          "[protocol][backend][inflight]") {
    const std::uint64_t gpa = 0x10000000;
    shared_memory mem(1 << 20);
    wire::inflight_description area{};
    unique_fd area_fd;
    {
        fixture f;
        f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
        f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::inflight_shmfd}));
        auto r = f.run(msg<fr::get_inflight_fd>({0, 0, 4, 256}));
        if (!r) FAIL(r.error().message());
        REQUIRE(r->has_value());
        auto reply = decode_reply<fr::get_inflight_fd>((*r)->bytes(), (*r)->fds.span());
        if (!reply) FAIL(reply.error().message());
        area = reply->payload;
        CHECK(area.num_queues == 4);
        CHECK(area.queue_size == 256);
        CHECK(area.mmap_size >= 4 * (16 + 16 * 256));
        REQUIRE((*r)->fds.span().size() == 1);
        area_fd = dup_cloexec((*r)->fds[0]); // what the front-end keeps
        CHECK((::fcntl(area_fd.get(), F_GET_SEALS) & F_SEAL_SHRINK) != 0);
        std::vector<unique_fd> fds;
        fds.push_back(dup_cloexec(area_fd.get()));
        f.expect_ok(msg<fr::set_inflight_fd>(area, std::move(fds)));
        fill_ring(mem, gpa, 0, 4, 0);
        start_vring1(f, mem, gpa, 0);
        CHECK(f.port.discard() == 4); // taken and completed: nothing in flight
        fill_ring(mem, gpa, 4, 3, 4);
    }
    // A crash between taking and completing: the region says chains 4 and 5 are in flight
    // (taken by the back-end that died: counters 4 and 5), the used ring is at 4.
    {
        auto* q1 = static_cast<std::byte*>(::mmap(nullptr, area.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, area_fd.get(), 0));
        REQUIRE(q1 != MAP_FAILED);
        std::byte* region = q1 + protocol::inflight_area::stride(256); // vring 1's part
        CHECK(le::load<std::uint16_t>(region + 8) == 1);               // initialised by the first back-end
        CHECK(le::load<std::uint16_t>(region + 14) == 4);              // its used index
        for (std::uint16_t head : {0, 1}) {                            // avail entries 4, 5 name heads 0, 1
            le::store<std::uint64_t>(region + 16 + 16 * head + 8, 4 + head);
            region[16 + 16 * head] = std::byte{1};
        }
        ::munmap(q1, area.mmap_size);
    }
    fixture g;
    std::vector<std::string> notices;
    g.backend.on_notice([&](const std::string& s) { notices.push_back(s); });
    g.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features}));
    g.expect_ok(msg<fr::set_protocol_features>({protocol_feature::inflight_shmfd}));
    std::vector<unique_fd> fds;
    fds.push_back(dup_cloexec(area_fd.get()));
    g.expect_ok(msg<fr::set_inflight_fd>(area, std::move(fds)));
    start_vring1(g, mem, gpa, 4); // what QEMU sends after a crash: the used index
    REQUIRE(notices.size() == 1);
    CHECK(notices[0].find("2 chains in flight taken again") != std::string::npos);
    // Heads 0 and 1 again (in their order), then the third new chain (avail 6): 3 in all.
    CHECK(g.port.discard() == 3);
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 2) == 7);
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 4 + 8 * 4) == 0); // used entry 4: head 0
    CHECK(le::load<std::uint16_t>(mem.data + 0x3000 + 4 + 8 * 5) == 1);
}

TEST_CASE("backend: SET_INFLIGHT_FD refuses areas it cannot trust", "[protocol][backend][inflight][hostile]") {
    fixture f;
    f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::inflight_shmfd}));
    auto area = [](std::size_t bytes, bool seal) {
        unique_fd fd(::memfd_create("area", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(bytes)) == 0);
        if (seal) REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) == 0);
        std::vector<unique_fd> v;
        v.push_back(std::move(fd));
        return v;
    };
    const std::uint64_t need = 2 * protocol::inflight_area::stride(256);
    SECTION("not sealed against shrinking") {
        CHECK(f.expect_violation(msg<fr::set_inflight_fd>({need, 0, 2, 256}, area(need, false))) ==
              "SET_INFLIGHT_FD: the file is not sealed against shrinking");
    }
    SECTION("smaller than it claims") {
        CHECK(f.expect_violation(msg<fr::set_inflight_fd>({need, 0, 2, 256}, area(need / 2, true))) ==
              "SET_INFLIGHT_FD: the file is smaller than the area it describes");
    }
    SECTION("too small for its queues") {
        CHECK(f.expect_violation(msg<fr::set_inflight_fd>({need / 2, 0, 2, 256}, area(need, true))).find("mmap size") !=
              std::string::npos);
    }
    SECTION("more queues than vrings: taken, the parts beyond the vrings stay unused") {
        const std::uint64_t need64 = 64 * protocol::inflight_area::stride(256);
        f.expect_ok(msg<fr::set_inflight_fd>({need64, 0, 64, 256}, area(need64, true)));
        CHECK(f.expect_violation(msg<fr::set_inflight_fd>({need, 0, 64, 256}, area(need64, true))).find("mmap size") !=
              std::string::npos);
    }
    SECTION("without the feature") {
        fixture g;
        CHECK(g.expect_violation(msg<fr::set_inflight_fd>({need, 0, 2, 256}, area(need, true))) ==
              "SET_INFLIGHT_FD: requires protocol feature INFLIGHT_SHMFD (not negotiated)");
    }
}

namespace {

// Vring 1 as a packed ring over `mem`: descriptors at 0, driver area at 0x1000, device area at
// 0x3000; SET_VRING_BASE `base` and SET_VRING_KICK (which starts it) answered by the last step.
protocol::backend<scripted_transport, device::net::net_port>::result start_packed_vring1(fixture& f, shared_memory& mem,
                                                                                         std::uint64_t gpa,
                                                                                         std::uint32_t base) {
    const std::uint64_t uaddr = 0x7f0000000000;
    memory_table t;
    t.nregions = 1;
    t.regions[0] = {gpa, mem.size, uaddr, 0};
    std::vector<unique_fd> fds;
    fds.push_back(mem.dup());
    f.expect_ok(msg<fr::set_mem_table>(t, std::move(fds)));
    f.expect_ok(msg<fr::set_vring_num>({1, 256}));
    f.expect_ok(msg<fr::set_vring_addr>({1, 0, uaddr, uaddr + 0x3000, uaddr + 0x1000, 0}));
    f.expect_ok(msg<fr::set_vring_base>({1, base}));
    f.expect_ok(msg<fr::set_vring_enable>({1, 1}));
    std::vector<unique_fd> kick;
    kick.push_back(make_eventfd());
    return f.run(msg<fr::set_vring_kick>({1}, std::move(kick)));
}

// A session with INFLIGHT_SHMFD over a packed ring: the area it is given (or creates: then
// `area` and `area_fd` are set to what the front-end keeps).
void open_packed_inflight_session(fixture& f, wire::inflight_description& area, unique_fd& area_fd) {
    f.expect_ok(msg<fr::set_features>({virtio_feature::version_1 | virtio_feature::ring_packed | vhost_feature::protocol_features}));
    f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::inflight_shmfd}));
    if (!area_fd) {
        auto r = f.run(msg<fr::get_inflight_fd>({0, 0, 4, 256}));
        if (!r) FAIL(r.error().message());
        REQUIRE(r->has_value());
        auto reply = decode_reply<fr::get_inflight_fd>((*r)->bytes(), (*r)->fds.span());
        if (!reply) FAIL(reply.error().message());
        area = reply->payload;
        REQUIRE((*r)->fds.span().size() == 1);
        area_fd = dup_cloexec((*r)->fds[0]);
        CHECK(area.mmap_size >= 4 * ring::packed_inflight_layout::bytes(256));
    }
    std::vector<unique_fd> fds;
    fds.push_back(dup_cloexec(area_fd.get()));
    f.expect_ok(msg<fr::set_inflight_fd>(area, std::move(fds)));
}

} // namespace

TEST_CASE("backend: INFLIGHT_SHMFD with a packed ring — a back-end killed with chains in flight, out of order",
          "[protocol][backend][inflight][packed]") {
    using driver_t = ring::packed_driver<ring::local_memory>;
    using device_t = ring::packed_device<ring::local_memory>;
    const std::uint64_t gpa = 0x10000000;
    shared_memory mem(1 << 20);
    ring::local_memory guest({mem.data, mem.size}, gpa);
    const ring::packed_config cfg{256, gpa, gpa + 0x1000, gpa + 0x3000, {}, 0};
    auto driver = driver_t::create(guest, cfg);
    REQUIRE(driver);
    std::uint64_t next_token = 0;
    auto post = [&](int n) {
        for (int i = 0; i < n; ++i, ++next_token) {
            const ring::buffer w{gpa + 0x8000 + 0x100 * (next_token % 64), 64};
            REQUIRE(driver->add({}, std::span(&w, 1), next_token));
        }
    };
    std::multiset<std::uint64_t> reaped;
    auto reap = [&] {
        std::array<ring::used_buffer, 32> u;
        for (std::size_t k; (k = driver->reap_burst(u)) != 0;)
            for (std::size_t i = 0; i < k; ++i) reaped.insert(u[i].token);
        REQUIRE(!driver->broken());
    };

    wire::inflight_description area{};
    unique_fd area_fd;
    {
        fixture f;
        open_packed_inflight_session(f, area, area_fd);
        post(2);
        auto started = start_packed_vring1(f, mem, gpa, 0x8000); // a new packed ring, as QEMU and DPDK say it
        if (!started) FAIL(started.error().message());
        CHECK(f.port.discard() == 2);
        reap();
        // The session ends without GET_VRING_BASE: the back-end process is gone.
    }
    auto* area_map =
        static_cast<std::byte*>(::mmap(nullptr, area.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, area_fd.get(), 0));
    REQUIRE(area_map != MAP_FAILED);
    std::byte* region = area_map + protocol::inflight_area::stride(256); // vring 1's part
    CHECK(le::load<std::uint16_t>(region + ring::packed_inflight_layout::version_off) == 1);
    CHECK(le::load<std::uint16_t>(region + ring::packed_inflight_layout::used_idx_off) == 2);
    // The next back-end (the ring layer, as a back-end runs it) takes four and completes the
    // second and the fourth, then is killed.
    post(4);
    std::vector<std::uint64_t> in_flight_ids;
    {
        auto t = ring::packed_inflight::attach(region, protocol::inflight_area::stride(256), 256, 0, true);
        REQUIRE(t);
        auto dev = device_t::create_tracked(guest, cfg, std::move(*t));
        REQUIRE(dev);
        std::array<ring::chain, 4> c;
        REQUIRE(dev->pop_burst(c) == 4);
        REQUIRE(dev->push(c[1].id(), 64));
        REQUIRE(dev->push(c[3].id(), 64));
        in_flight_ids = {c[0].id(), c[2].id()};
    }
    reap();
    CHECK(reaped == std::multiset<std::uint64_t>{0, 1, 3, 5});
    post(1);
    // A third back-end, given the area again; the front-end's SET_VRING_BASE is what it knew
    // before (QEMU: the avail half of its last GET_VRING_BASE; here the new ring's 0x8000).
    fixture g;
    std::vector<std::string> notices;
    g.backend.on_notice([&](const std::string& s) { notices.push_back(s); });
    open_packed_inflight_session(g, area, area_fd);
    auto started = start_packed_vring1(g, mem, gpa, 0x8000);
    if (!started) FAIL(started.error().message());
    REQUIRE(notices.size() == 1);
    CHECK(notices[0] == "vring 1: resuming from the inflight area at avail 6/1 used 4/1 (SET_VRING_BASE said avail 0/1 "
                        "used 0/1), 2 chains in flight taken again");
    // The two in flight first, in their order and with their buffer ids, then the new one.
    CHECK(g.port.discard() == 3);
    CHECK(le::load<std::uint16_t>(mem.data + 16 * 4 + 12) == in_flight_ids[0]); // used descriptor 4
    CHECK(le::load<std::uint16_t>(mem.data + 16 * 5 + 12) == in_flight_ids[1]);
    reap();
    CHECK(reaped == std::multiset<std::uint64_t>{0, 1, 2, 3, 4, 5, 6});
    CHECK(driver->outstanding() == 0);
    auto base = g.expect_reply<fr::get_vring_base>(msg<fr::get_vring_base>({1, 0}));
    CHECK(base.payload.num == ring::packed_state{7, true, 7, true}.to_vring_base());
    ::munmap(area_map, area.mmap_size);
}

TEST_CASE("backend: INFLIGHT_SHMFD with a packed ring — positions the area cannot account for are refused",
          "[protocol][backend][inflight][packed][hostile]") {
    const std::uint64_t gpa = 0x10000000;
    shared_memory mem(1 << 20);
    wire::inflight_description area{};
    unique_fd area_fd;
    fixture f;
    open_packed_inflight_session(f, area, area_fd);
    SECTION("a new area with chains in flight by SET_VRING_BASE") {
        // Full form: avail 3 (wrap 1), used 0 (wrap 1) — three chains nobody recorded.
        auto r = start_packed_vring1(f, mem, gpa, ring::packed_state{3, true, 0, true}.to_vring_base());
        REQUIRE(!r);
        CHECK(r.error().message().find("ring position contradicts the inflight region") != std::string::npos);
    }
    SECTION("an index outside the ring") {
        auto r = start_packed_vring1(f, mem, gpa, 0x8000 | 300);
        REQUIRE(!r);
        CHECK(r.error().message().find("vring 1") != std::string::npos);
    }
    SECTION("an area that moved under a ring this back-end stopped itself") {
        auto r = start_packed_vring1(f, mem, gpa, 0x8000);
        if (!r) FAIL(r.error().message());
        auto base = f.expect_reply<fr::get_vring_base>(msg<fr::get_vring_base>({1, 0}));
        CHECK(base.payload.num == ring::packed_state{0, true, 0, true}.to_vring_base());
        auto* map = static_cast<std::byte*>(::mmap(nullptr, area.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, area_fd.get(), 0));
        REQUIRE(map != MAP_FAILED);
        std::byte* region = map + protocol::inflight_area::stride(256);
        le::store<std::uint16_t>(region + ring::packed_inflight_layout::used_idx_off, 5);
        le::store<std::uint16_t>(region + ring::packed_inflight_layout::old_used_idx_off, 5);
        ::munmap(map, area.mmap_size);
        // Started again from its own position (no SET_VRING_BASE since): the area disagrees.
        std::vector<unique_fd> kick;
        kick.push_back(make_eventfd());
        CHECK(f.expect_violation(msg<fr::set_vring_kick>({1}, std::move(kick))).find(
                  "ring position contradicts the inflight region") != std::string::npos);
    }
    SECTION("an area the front-end scribbled on") {
        auto* map = static_cast<std::byte*>(::mmap(nullptr, area.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, area_fd.get(), 0));
        REQUIRE(map != MAP_FAILED);
        std::byte* region = map + protocol::inflight_area::stride(256);
        le::store<std::uint16_t>(region + ring::packed_inflight_layout::version_off, 1);
        le::store<std::uint16_t>(region + ring::packed_inflight_layout::desc_num_off, 256);
        le::store<std::uint16_t>(region + ring::packed_inflight_layout::old_free_head_off, 3);
        le::store<std::uint16_t>(region + 32 + 32 * 5 + ring::packed_inflight_layout::entry_next_off, 3); // a loop
        ::munmap(map, area.mmap_size);
        auto r = start_packed_vring1(f, mem, gpa, 0x8000);
        REQUIRE(!r);
        CHECK(r.error().message().find("inflight region corrupt") != std::string::npos);
    }
}

namespace {
// What a migrating front-end does first: LOG_SHMFD, LOG_ALL, one memory region, and RX vring 0
// (split, 256) with VHOST_VRING_F_LOG: descriptors at +0, avail at +0x1000, used at +0x2000.
struct logging_session {
    static constexpr std::uint64_t gpa = 0x10000000, uaddr = 0x7f0000000000;
    static constexpr std::uint64_t features = virtio_feature::version_1 | vhost_feature::protocol_features;
    fixture f;
    shared_memory mem{1 << 20};

    logging_session() {
        f.expect_ok(msg<fr::set_protocol_features>({protocol_feature::log_shmfd | protocol_feature::reply_ack}));
        f.expect_ok(msg<fr::set_features>({features | vhost_feature::log_all}));
        memory_table t;
        t.nregions = 1;
        t.regions[0] = {gpa, mem.size, uaddr, 0};
        std::vector<unique_fd> fds;
        fds.push_back(mem.dup());
        f.expect_ok(msg<fr::set_mem_table>(t, std::move(fds)));
        f.expect_ok(msg<fr::set_vring_num>({0, 256}));
        f.expect_ok(msg<fr::set_vring_addr>({0, vring_addr::flag_log, uaddr, uaddr + 0x2000, uaddr + 0x1000, gpa + 0x2000}));
        std::vector<unique_fd> kick;
        kick.push_back(make_eventfd());
        f.expect_ok(msg<fr::set_vring_kick>({0}, std::move(kick)));
        f.expect_ok(msg<fr::set_vring_enable>({0, 1}));
        REQUIRE(f.backend.state().vrings[0].started);
    }
    // Posts one receive buffer of two writable descriptors: [+0x8f00, +0x9100) and [+0xc000, +0xd000).
    void post_receive_buffer(std::uint16_t avail_idx) {
        std::byte* desc = mem.data;
        const std::uint16_t head = static_cast<std::uint16_t>(2 * (avail_idx % 128));
        le::store<std::uint64_t>(desc + 16 * head, gpa + 0x8f00);
        le::store<std::uint32_t>(desc + 16 * head + 8, 0x200);
        le::store<std::uint16_t>(desc + 16 * head + 12, 0x1 | 0x2); // NEXT | WRITE
        le::store<std::uint16_t>(desc + 16 * head + 14, static_cast<std::uint16_t>(head + 1));
        le::store<std::uint64_t>(desc + 16 * (head + 1), gpa + 0xc000);
        le::store<std::uint32_t>(desc + 16 * (head + 1) + 8, 0x1000);
        le::store<std::uint16_t>(desc + 16 * (head + 1) + 12, 0x2);
        le::store<std::uint16_t>(mem.data + 0x1000 + 4 + 2 * (avail_idx % 256), head);
        std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(mem.data + 0x1000 + 2))
            .store(static_cast<std::uint16_t>(avail_idx + 1), std::memory_order_release);
    }
    // A frame of `size` bytes into the front-end's RX vring.
    std::size_t deliver(std::size_t size) {
        std::vector<std::byte> bytes(size, std::byte{0x42});
        const device::net::frame fr(bytes);
        return f.port.transmit(std::span(&fr, 1));
    }
};

// A log file of `bytes` and the mapping the test reads it through.
struct log_file {
    shared_memory file;
    explicit log_file(std::size_t bytes) : file(bytes) {}
    std::set<std::uint64_t> marked_pages() const {
        std::set<std::uint64_t> pages;
        for (std::size_t i = 0; i < file.size; ++i)
            for (unsigned b = 0; b < 8; ++b)
                if ((std::to_integer<unsigned>(file.data[i]) >> b) & 1u) pages.insert(i * 8 + b);
        return pages;
    }
    void clear() { std::fill(file.data, file.data + file.size, std::byte{0}); }
};
} // namespace

TEST_CASE("backend: dirty logging — after a burst the log marks exactly the pages written, buffers and used ring",
          "[protocol][backend][log]") {
    logging_session s;
    // The log covers the region's end (gpa + 1 MiB): one bit per 4 KiB page from address 0.
    constexpr std::uint64_t page = 4096, first_page = logging_session::gpa / page;
    log_file log((first_page + 256) / 8);
    std::vector<unique_fd> fds;
    fds.push_back(log.file.dup());
    // LOG_SHMFD: SET_LOG_BASE is answered (0) once the rings use the log.
    CHECK(s.f.expect_reply<fr::set_log_base>(msg<fr::set_log_base>({log.file.size, 0}, std::move(fds))).payload.value == 0);
    CHECK(s.f.backend.state().vrings[0].started); // restarted over the log

    s.post_receive_buffer(0);
    REQUIRE(s.deliver(400) == 1);
    // 12 + 400 bytes from +0x8f00: pages +0x8000 and +0x9000. The second descriptor (+0xc000)
    // was not written; descriptors (+0) and the avail ring (+0x1000) were only read.
    const std::uint16_t used_len = le::load<std::uint16_t>(s.mem.data + 0x2000 + 4 + 4);
    CHECK(used_len == 412);
    CHECK(log.marked_pages() == std::set<std::uint64_t>{first_page + 2, first_page + 8, first_page + 9});

    // A frame of 20 bytes: only its page and the used ring's.
    log.clear();
    s.post_receive_buffer(1);
    REQUIRE(s.deliver(20) == 1);
    CHECK(log.marked_pages() == std::set<std::uint64_t>{first_page + 2, first_page + 8});

    // LOG_ALL off (the migration ended): the rings restart without the log and mark nothing.
    log.clear();
    s.f.expect_ok(msg<fr::set_features>({logging_session::features}));
    CHECK(s.f.backend.state().vrings[0].started);
    s.post_receive_buffer(2);
    REQUIRE(s.deliver(400) == 1);
    CHECK(log.marked_pages().empty());

    // On again: SET_VRING_ADDR without VHOST_VRING_F_LOG logs the buffers, not the used ring.
    s.f.expect_ok(msg<fr::set_features>({logging_session::features | vhost_feature::log_all}));
    s.f.expect_ok(msg<fr::set_vring_addr>({0, 0, logging_session::uaddr, logging_session::uaddr + 0x2000,
                                           logging_session::uaddr + 0x1000, 0}));
    log.clear(); // (the ring, restarted in between with its used ring logged, asked for kicks)
    s.post_receive_buffer(3);
    REQUIRE(s.deliver(400) == 1);
    CHECK(log.marked_pages() == std::set<std::uint64_t>{first_page + 8, first_page + 9});
}

TEST_CASE("backend: SET_LOG_BASE refuses a log it cannot use, with the reason", "[protocol][backend][log][hostile]") {
    logging_session s;
    auto set_log_base = [&](std::uint64_t size, std::uint64_t offset, unique_fd fd) {
        std::vector<unique_fd> fds;
        fds.push_back(std::move(fd));
        return s.f.expect_violation(msg<fr::set_log_base>({size, offset}, std::move(fds)));
    };
    shared_memory file(0x10000);
    CHECK(set_log_base(0, 0, file.dup()) == "SET_LOG_BASE: log size 0 outside [1, 4294967296]");
    CHECK(set_log_base(1ull << 40, 0, file.dup()) == "SET_LOG_BASE: log size 1099511627776 outside [1, 4294967296]");
    // Past the file's end: the offset, or the size.
    CHECK_THAT(set_log_base(0x1000, 0x10000, file.dup()),
               Catch::StartsWith("SET_LOG_BASE: log of 4096 bytes at offset 65536: "));
    CHECK_THAT(set_log_base(0x20000, 0, file.dup()), Catch::StartsWith("SET_LOG_BASE: log of 131072 bytes at offset 0: "));
    // Something that cannot be mapped at all.
    CHECK_THAT(set_log_base(0x1000, 0, make_eventfd()), Catch::StartsWith("SET_LOG_BASE: log of 4096 bytes at offset 0: "));
    // Too small for the memory table: the region's last pages could not be logged.
    CHECK(set_log_base(0x1000, 0, file.dup()) ==
          "SET_LOG_BASE: the log covers guest memory up to 0x8000000, the memory table up to 0x10100000");
    // Without LOG_SHMFD there is no log to share.
    fixture plain;
    std::vector<unique_fd> fds;
    fds.push_back(file.dup());
    CHECK(plain.expect_violation(msg<fr::set_log_base>({0x1000, 0}, std::move(fds))) ==
          "SET_LOG_BASE: requires protocol feature LOG_SHMFD (not negotiated)");
    // A refused log leaves the rings unlogged and running.
    CHECK(s.f.backend.state().vrings[0].started);
}
