// The VVU device model (vvu_device::device_model) end to end in one process, over real UNIX
// sockets in a temporary directory: the device runs on a thread; the driver side is either
// vvu's PCI-BAR transport serving protocol::backend<vvu_pci, net_port> (as vvu-forward does)
// or, where a test must see the PCI function itself, a raw vfio_user::client +
// pci::virtio_driver that posts rxq/txq buffers by hand; the front-end is either vvu's own
// (protocol::frontend under device::net::net_driver) or raw vhost-user bytes on a socket.
// Every wait is bounded: a broken device fails a test instead of hanging it.
#include <vvu/vvu/device_model.hpp>

#include <vvu/device/net_driver.hpp>
#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/pci/virtio_driver.hpp>
#include <vvu/pci/vvu_function.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/protocol/frontend.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/vvu_pci.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/vfio_user/client.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/features.hpp>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <fcntl.h>

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace vvu;
using namespace std::chrono_literals;
using fr = wire::front_request;
namespace vf = pci::vvu_function;
namespace dc = pci::vvu_function::device_config;
using vvu_device::device_counters;

namespace {

constexpr auto bound = 5000ms; // every wait for something that should happen

// ------------------------------------------------------------------------------ sockets
unique_fd connect_unix(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    const auto until = std::chrono::steady_clock::now() + bound;
    for (;;) {
        unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (fd && ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
        if (std::chrono::steady_clock::now() > until) return {};
        std::this_thread::sleep_for(10ms);
    }
}

// Waits until the peer closed `fd` (EOF or reset), discarding anything it sent first.
bool wait_eof(int fd, std::chrono::milliseconds timeout = bound) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        std::array<char, 4096> sink;
        const ssize_t n = ::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT);
        if (n == 0) return true;
        if (n < 0 && errno != EAGAIN && errno != EINTR) return true; // ECONNRESET
    }
}

// Still open after `t`: no EOF, no error (data the peer sent is left unread).
bool still_open(int fd, std::chrono::milliseconds t) {
    pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, static_cast<int>(t.count())) == 0;
}

// -------------------------------------------------------------------------- messages
std::vector<std::byte> raw_message(std::uint32_t request, std::uint32_t flags, std::uint32_t size,
                                   std::span<const std::byte> payload = {}) {
    std::vector<std::byte> out(wire::header_size + payload.size());
    wire::store_header({request, flags, size}, out);
    std::copy(payload.begin(), payload.end(), out.begin() + wire::header_size);
    return out;
}
std::vector<std::byte> u64_message(std::uint32_t request, std::uint32_t flags, std::uint64_t v) {
    std::array<std::byte, 8> p{};
    le::store(p.data(), v);
    return raw_message(request, flags, 8, p);
}
template <auto R>
wire::frame encoded(const wire::message<R>& m) {
    auto f = wire::encode(m);
    REQUIRE(f);
    return *f;
}
std::vector<std::byte> to_vector(std::span<const std::byte> b) { return {b.begin(), b.end()}; }

// ----------------------------------------------------------------------- the device
// The device model on a thread, with its log collected.
struct device_fixture {
    std::string dir, fe_path, pci_path;
    std::unique_ptr<vvu_device::device_model> device;
    std::thread thread;
    device_counters final_counts;
    mutable std::mutex mutex;
    std::vector<std::string> lines;
    std::optional<vvu_device::device_progress> progress; // as last published

    explicit device_fixture(std::uint32_t max_queues = 8) {
        ::signal(SIGPIPE, SIG_IGN); // a peer that went away is an error return, not a signal
        char t[] = "/tmp/vvu-dm.XXXXXX";
        REQUIRE(::mkdtemp(t) != nullptr);
        dir = t;
        fe_path = dir + "/fe.sock";
        pci_path = dir + "/pci.sock";
        vvu_device::device_options o;
        o.vhost_user_path = fe_path;
        o.pci_path = pci_path;
        o.max_queues = max_queues;
        o.message_timeout = 1000ms;
        o.log = [this](std::string_view line) {
            std::scoped_lock lock(mutex);
            lines.emplace_back(line);
        };
        o.progress = [this](const vvu_device::device_progress& p) {
            std::scoped_lock lock(mutex);
            progress = p;
        };
        auto d = vvu_device::device_model::create(std::move(o));
        if (!d) FAIL(d.error());
        device = std::move(*d);
        thread = std::thread([this] {
            auto r = device->run();
            if (!r) {
                std::scoped_lock lock(mutex);
                lines.push_back("run() failed: " + r.error());
            }
        });
    }
    // Stops the device (run() returns), reads its counters, destroys it: its sockets close.
    // Tests close their front-ends and drivers first (so that the counters are final); this
    // waits, bounded, for the device to have seen the driver go.
    device_counters finish() {
        if (!device) return final_counts;
        const auto until = std::chrono::steady_clock::now() + 2s;
        while (count("driver attached") > count("driver detached") && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(5ms);
        device->stop();
        thread.join();
        final_counts = device->counters();
        device.reset();
        return final_counts;
    }
    ~device_fixture() {
        finish();
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    std::string log() const {
        std::scoped_lock lock(mutex);
        std::string all;
        for (const auto& l : lines) all += l + "\n";
        return all;
    }
    std::size_t count(std::string_view text) const {
        std::scoped_lock lock(mutex);
        std::size_t n = 0;
        for (const auto& l : lines) n += l.find(text) != std::string::npos;
        return n;
    }
    bool wait_log(std::string_view text, std::size_t times = 1, std::chrono::milliseconds timeout = bound) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (count(text) < times) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(5ms);
        }
        return true;
    }
    // Waits until the device publishes a progress `ok` holds for.
    template <class Pred>
    bool wait_progress(Pred ok, std::chrono::milliseconds timeout = bound) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            {
                std::scoped_lock lock(mutex);
                if (progress && ok(*progress)) return true;
            }
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(5ms);
        }
    }
    // The reason of the n-th (1-based) disconnect in the log.
    std::string disconnect_reason(std::size_t n = 1) const {
        std::scoped_lock lock(mutex);
        const std::string_view key = "front-end disconnected: ";
        for (const auto& l : lines)
            if (l.rfind(key, 0) == 0 && --n == 0) return l.substr(key.size());
        return "(none)";
    }
};

// ------------------------------------------------------------ the driver: vvu_pci + backend
// vvu's PCI-BAR transport serving protocol::backend<vvu_pci, net_port> front-end after
// front-end (vvu-forward's loop), with a loopback forwarding thread over the port. Its
// vfio-user socket is its own (vfio_user::client::over), so that crash() can drop it the way
// a killed process does: no reset, no unmap, the connection just closes.
using pci_transport = transport::basic_vvu_pci<vfio_user::client>;

struct backend_fixture {
    device::net::net_port port{{.queue_pairs = 1}};
    std::optional<pci_transport> t;
    int socket = -1; // the vfio-user connection (owned by the client)
    std::thread control, data;
    std::atomic<bool> running{true};
    std::atomic<int> sessions{0};
    std::mutex mutex;
    std::vector<std::string> ended; // why each session ended
    std::vector<std::string> notices; // the state machine's (e.g. a ring resumed at its used index)

    explicit backend_fixture(const std::string& pci_path) {
        unique_fd fd = connect_unix(pci_path);
        REQUIRE(fd);
        socket = fd.get();
        auto client = vfio_user::client::over(std::move(fd));
        if (!client) FAIL(client.error().message());
        auto c = pci_transport::attach(std::make_unique<vfio_user::client>(std::move(*client)));
        if (!c) FAIL(c.error().message());
        t.emplace(std::move(*c));
        control = std::thread([this] {
            protocol::backend<pci_transport, device::net::net_port> be(*t, port);
            be.on_notice([this](const std::string& n) {
                std::scoped_lock lock(mutex);
                notices.push_back(n);
            });
            while (running.load()) {
                if (auto ready = t->wait_for_frontend(); !ready) {
                    if (ready.error().code == transport::errc::stopped) return;
                    std::this_thread::sleep_for(20ms);
                    continue;
                }
                ++sessions;
                std::string why = be.serve();
                t->close_session();
                std::scoped_lock lock(mutex);
                ended.push_back(std::move(why));
            }
        });
        data = std::thread([this] {
            device::net::forwarder fwd({&port}, device::net::forward_mode::loopback);
            while (running.load(std::memory_order_relaxed))
                if (fwd.poll() == 0) std::this_thread::sleep_for(20us);
        });
    }
    void stop() {
        if (!t) return;
        running = false;
        t->stop();
        control.join();
        if (data.joinable()) data.join();
        t.reset();
    }
    // The driver dies: its data path stops where it is (chains it took stay taken) and its
    // vfio-user connection closes under it — what kill -9 does. What is left of it is then
    // torn down (its calls on the dead connection fail).
    void freeze() {
        running = false;
        if (data.joinable()) data.join();
    }
    void crash() {
        if (!t) return;
        freeze();
        REQUIRE(::shutdown(socket, SHUT_RDWR) == 0);
        t->stop();
        control.join();
        t.reset();
    }
    ~backend_fixture() { stop(); }

    std::string notice_log() {
        std::scoped_lock lock(mutex);
        std::string all;
        for (const auto& n : notices) all += n + "\n";
        return all;
    }

    std::size_t ended_count() {
        std::scoped_lock lock(mutex);
        return ended.size();
    }
    std::string ended_reason(std::size_t i) {
        std::scoped_lock lock(mutex);
        return i < ended.size() ? ended[i] : "(not ended)";
    }
    bool wait_ended(std::size_t n, std::chrono::milliseconds timeout = bound) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (ended_count() < n) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(5ms);
        }
        return true;
    }
};

// ------------------------------------------------------------- the front-end: net_driver
using net_driver = device::net::net_driver<protocol::socket_channel>;

std::unique_ptr<net_driver> open_driver(const std::string& path, device::net::driver_options o = {}) {
    auto ch = protocol::socket_channel::connect(path, bound);
    if (!ch) FAIL(ch.error().message());
    if (o.queue_size == 256) o.queue_size = 64;
    o.timeout = bound;
    auto nd = net_driver::open(std::move(*ch), o);
    if (!nd) FAIL(nd.error().message());
    return std::move(*nd);
}

// Sends `count` numbered frames through the loopback back-end and returns the sequence numbers
// that came back, in order (bounded in time).
std::vector<std::uint64_t> echo(net_driver& nd, std::uint64_t count, std::uint64_t first = 0) {
    std::vector<std::uint64_t> got;
    std::vector<std::byte> buf(64);
    std::uint64_t sent = 0;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (got.size() < count && std::chrono::steady_clock::now() < until) {
        if (sent < count && sent - got.size() < nd.queue_size() / 2) {
            device::net::make_test_frame(buf, 64, first + sent, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
            const device::net::frame f(buf);
            sent += nd.send(0, std::span(&f, 1));
        }
        nd.reap_tx(0);
        nd.receive(0, [&](const device::net::virtio_net_hdr&, std::span<const std::byte> frame) {
            got.push_back(device::net::test_frame_sequence(frame).value_or(~0ULL));
        });
    }
    return got;
}

void check_echo(net_driver& nd, std::uint64_t count, std::uint64_t first = 0) {
    const auto got = echo(nd, count, first);
    REQUIRE(got.size() == count);
    for (std::uint64_t i = 0; i < count; ++i) REQUIRE(got[i] == first + i);
}

// -------------------------------------------------------- the driver, by hand: raw function
// vfio_user::client + pci::virtio_driver on the VVU function; rxq and txq buffers posted by the
// test itself.
struct raw_driver {
    std::unique_ptr<vfio_user::client> fn;
    std::optional<pci::virtio_driver<vfio_user::client>> drv;
    std::uint64_t next_token = 0;
    std::map<std::uint64_t, std::uint64_t> rx_iova; // token → iova

    explicit raw_driver(const std::string& pci_path) {
        auto c = vfio_user::client::connect(pci_path);
        if (!c) FAIL(c.error().message());
        fn = std::make_unique<vfio_user::client>(std::move(*c));
        pci::virtio_driver_options o;
        o.queues = {{.size = 16}, {.size = 16}};
        o.arena_size = 1 << 20;
        auto d = pci::virtio_driver<vfio_user::client>::attach(*fn, o);
        if (!d) FAIL(d.error().message());
        drv.emplace(std::move(*d));
    }
    ~raw_driver() { detach(); }
    // Resets the function, unmaps the arena and closes the connection.
    void detach() {
        drv.reset();
        fn.reset();
    }

    std::uint32_t status() {
        std::array<std::byte, 4> w{};
        auto r = drv->device_config_read(dc::status, w);
        if (!r) FAIL(r.error().message());
        return le::load<std::uint32_t>(w.data());
    }
    void write_status(std::uint32_t v) {
        std::array<std::byte, 4> w{};
        le::store<std::uint32_t>(w.data(), v);
        auto r = drv->device_config_write(dc::status, w);
        if (!r) FAIL(r.error().message());
    }
    bool config_irq(std::chrono::milliseconds t = bound) { return drv->config_interrupt().wait(t); }
    void drain_config() { (void)drv->config_interrupt().drain(); }

    void post_rx(std::uint32_t len = wire::max_message_size) {
        auto iova = drv->arena().allocate(len, 64);
        REQUIRE(iova);
        const ring::buffer b{*iova, len};
        const std::uint64_t token = next_token++;
        REQUIRE(drv->queue(vf::rxq).add({}, std::span(&b, 1), token));
        rx_iova[token] = *iova;
        drv->queue(vf::rxq).kick();
    }
    // The next used rxq buffer's bytes.
    std::optional<std::vector<std::byte>> take_rx(std::chrono::milliseconds t = bound) {
        const auto until = std::chrono::steady_clock::now() + t;
        for (;;) {
            ring::used_buffer u;
            if (drv->queue(vf::rxq).reap(u)) {
                const std::byte* p = drv->arena().translate(rx_iova.at(u.token), u.len);
                REQUIRE(p != nullptr);
                return std::vector<std::byte>(p, p + u.len);
            }
            if (std::chrono::steady_clock::now() > until) return std::nullopt;
            (void)drv->queue(vf::rxq).wait(20ms);
        }
    }
    void post_tx(std::span<const std::byte> bytes) {
        auto iova = drv->arena().allocate(std::max<std::size_t>(bytes.size(), 1), 64);
        REQUIRE(iova);
        std::memcpy(drv->arena().translate(*iova, bytes.size()), bytes.data(), bytes.size());
        const ring::buffer b{*iova, static_cast<std::uint32_t>(bytes.size())};
        REQUIRE(drv->queue(vf::txq).add(std::span(&b, 1), {}, next_token++));
        drv->queue(vf::txq).kick();
    }
    // Waits for the device to give a txq buffer back.
    bool tx_used(std::chrono::milliseconds t = bound) {
        const auto until = std::chrono::steady_clock::now() + t;
        for (;;) {
            ring::used_buffer u;
            if (drv->queue(vf::txq).reap(u)) return true;
            if (std::chrono::steady_clock::now() > until) return false;
            (void)drv->queue(vf::txq).wait(20ms);
        }
    }
    // BACKEND_UP cleared, then set: what the device wants after a front-end went away.
    void reack() {
        write_status(0);
        write_status(dc::backend_up);
    }
};

// A raw front-end: vhost-user bytes on a connected socket.
struct raw_frontend {
    transport::framed_socket s;
    explicit raw_frontend(const std::string& path) : s(connect_unix(path)) { REQUIRE(s.is_open()); }
    void send(std::span<const std::byte> bytes, std::span<const int> fds = {}) {
        auto r = s.send(bytes, fds, bound);
        if (!r) FAIL(r.error().message());
    }
    void send(const wire::frame& f) { send(f.bytes(), f.fds.span()); }
    expected<transport::received_message, transport::error> receive(std::chrono::milliseconds t = bound) {
        return s.receive(wire::channel::front, t);
    }
    int fd() const { return s.native_handle(); }
};

// Decodes a request the device sent the driver: its fds stayed with the device, and invalid
// fds stand in for them, as the driver's transport does.
auto decode_without_fds(std::span<const std::byte> bytes) {
    auto named = wire::named_fds<fr>(bytes);
    REQUIRE(named);
    const std::vector<int> none(*named, -1);
    return wire::decode<fr>(bytes, none);
}

const std::vector<std::byte> get_features_bytes = raw_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version, 0);

// With the raw driver: connects a front-end and waits for FRONTEND_UP and its interrupt.
std::unique_ptr<raw_frontend> connect_up(device_fixture& dev, raw_driver& d) {
    auto fe = std::make_unique<raw_frontend>(dev.fe_path);
    REQUIRE(d.config_irq());
    REQUIRE((d.status() & dc::frontend_up) != 0);
    return fe;
}

// One GET_FEATURES round trip, front-end → rxq → txq → front-end.
void round_trip(raw_frontend& fe, raw_driver& d, std::uint64_t value = 0x1'0000'0000) {
    fe.send(get_features_bytes);
    d.post_rx();
    auto got = d.take_rx();
    REQUIRE(got);
    CHECK(*got == get_features_bytes);
    d.post_tx(u64_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version | wire::flags::reply, value));
    REQUIRE(d.tx_used());
    auto reply = fe.receive();
    if (!reply) FAIL(reply.error().message());
    auto r = wire::decode_reply<fr::get_features>(reply->bytes(), {});
    REQUIRE(r);
    CHECK(r->payload.value == value);
}

} // namespace

// ==================================================================== well-formed sessions
TEST_CASE("device model: a whole session through the device, vvu_pci and vvu's back-end",
          "[vvu][device_model][session]") {
    const bool mem_slots = GENERATE(true, false);
    CAPTURE(mem_slots);
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    {
        device::net::driver_options o;
        o.memory_regions = mem_slots ? 3 : 2;
        o.use_mem_slots = mem_slots;
        auto nd = open_driver(dev.fe_path, o);
        auto& fe = nd->frontend();
        CHECK(fe.negotiated(wire::protocol_feature::reply_ack));
        CHECK(fe.negotiated(wire::protocol_feature::configure_mem_slots));
        CHECK(fe.negotiated(wire::protocol_feature::backend_req));
        CHECK(fe.negotiated(wire::protocol_feature::status));
        CHECK((fe.offered_protocol_features() & ~vvu_device::passthrough_protocol_features()) == 0);
        CHECK(wire::has(fe.features(), wire::virtio_feature::version_1));
        CHECK(nd->mrg_rxbuf());

        // GET_CONFIG crosses the device: the port's MAC.
        auto cfg = nd->config();
        if (!cfg) FAIL(cfg.error().message());
        CHECK((*cfg)[0] == 0x52);
        CHECK((*cfg)[5] == 0x01);

        check_echo(*nd, 300);

        // GET_MAX_MEM_SLOTS: vvu's back-end says 509, the front-end sees the device's limit.
        auto slots = fe.transact<fr::get_max_mem_slots>({});
        if (!slots) FAIL(slots.error().message());
        CHECK(slots->payload.value == vvu_device::max_mem_slots);

        // One more region (ADD_MEM_REG, its fd into the window), traffic, then it goes again.
        const std::uint64_t size = 2 << 20;
        unique_fd memfd(::memfd_create("extra", MFD_CLOEXEC));
        REQUIRE(memfd);
        REQUIRE(::ftruncate(memfd.get(), size) == 0);
        void* host = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
        REQUIRE(host != MAP_FAILED);
        const wire::memory_region extra{0x10'0000'0000, size, reinterpret_cast<std::uint64_t>(host), 0};
        wire::message<fr::add_mem_reg> add;
        add.payload.region = extra;
        add.fds.push_back(memfd.get());
        if (auto r = fe.request_message(add); !r) FAIL(r.error().message());
        check_echo(*nd, 100, 300);
        if (auto r = fe.request<fr::rem_mem_reg>({0, extra}); !r) FAIL(r.error().message());
        check_echo(*nd, 100, 400);
        ::munmap(host, size);

        auto stopped = fe.stop_vring(1);
        if (!stopped) FAIL(stopped.error().message());
        CHECK(*stopped == 500);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
        CHECK(nd->stats().rx_errors == 0);
    } // the front-end closes its socket
    REQUIRE(be.wait_ended(1));
    CHECK(be.ended_reason(0) == transport::error(transport::errc::disconnected).message());
    CHECK(be.port.stats().rx_packets == 500);
    CHECK(be.port.stats().tx_packets == 500);
    be.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 1);
    CHECK(c.disconnects == 1);
    CHECK(c.drivers == 1);
    CHECK(c.config_interrupts == 2); // FRONTEND_UP set, then cleared
    CHECK(c.to_driver > 10);
    CHECK(c.to_frontend > 10);
    CHECK(c.backend_requests == 0);
    CHECK(dev.disconnect_reason() == "front-end closed the socket");
}

TEST_CASE("device model: a ring the front-end breaks reaches its SET_VRING_ERR eventfd through the error doorbell",
          "[vvu][device_model][hostile]") {
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    {
        auto nd = open_driver(dev.fe_path, {});
        check_echo(*nd, 10);
        auto& tx = nd->tx_vring(0);
        CHECK(!tx.wait_error(std::chrono::milliseconds(0)));
        // A transmit buffer where no region is: the driver's back-end refuses the ring.
        const ring::buffer outside{0xfff0'0000'0000, 64};
        REQUIRE(tx.add({&outside, 1}, {}, 1000));
        tx.kick();
        CHECK(tx.wait_error(std::chrono::milliseconds(5000)));
        auto status = nd->frontend().status();
        if (!status) FAIL(status.error().message());
        CHECK((*status & protocol::device_status::needs_reset) != 0);
        CHECK(!tx.wait_error(std::chrono::milliseconds(50))); // once
        if (auto r = nd->close(); !r) FAIL(r.error().message());
    }
    REQUIRE(be.wait_ended(1));
    CHECK(be.port.stats().rx_packets == 10);
    be.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.disconnects == 1);
}

TEST_CASE("device model: a front-end leaves, the next one works without restarting device or driver",
          "[vvu][device_model][lifecycle]") {
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    {
        auto nd = open_driver(dev.fe_path);
        check_echo(*nd, 300);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
    }
    // The back-end's session ends (config interrupt, FRONTEND_UP clear), it re-acknowledges.
    REQUIRE(be.wait_ended(1));
    REQUIRE(dev.wait_log("front-end disconnected: front-end closed the socket"));
    {
        auto nd = open_driver(dev.fe_path);
        CHECK(nd->frontend().negotiated(wire::protocol_feature::reply_ack));
        check_echo(*nd, 300, 1000);
        CHECK(be.sessions.load() == 2);
        // While this front-end is connected: two connects, one disconnect, three interrupts
        // (the device's log; its counters are read once it has stopped).
        CHECK(dev.count("front-end connected to the driver (FRONTEND_UP)") == 2);
        CHECK(dev.count("front-end disconnected") == 1);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
    }
    REQUIRE(be.wait_ended(2));
    CHECK(be.ended_reason(1) == transport::error(transport::errc::disconnected).message());
    CHECK(be.port.stats().rx_packets == 600);
    CHECK(be.port.stats().tx_packets == 600);
    be.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 2);
    CHECK(c.disconnects == 2);
    CHECK(c.drivers == 1);
    CHECK(c.config_interrupts == 4); // up, down, up, down
}

// ===================================================================== hostile front-ends
namespace {

struct hostile_case {
    const char* name;
    const char* reason; // what the device's disconnect log line must contain
};

// Sends the hostile message of case `i` (and, for the truncated one, half-closes).
void send_hostile(std::size_t i, raw_frontend& fe, std::vector<unique_fd>& keep) {
    auto eventfd = [&] {
        keep.emplace_back(::eventfd(0, EFD_CLOEXEC));
        return keep.back().get();
    };
    switch (i) {
    case 0: { // SET_VRING_KICK for a vring the device does not serve (max_queues 8)
        wire::message<fr::set_vring_kick> m;
        m.payload.value = 8;
        m.fds.push_back(eventfd());
        fe.send(encoded(m));
        break;
    }
    case 1: { // SET_MEM_TABLE whose fd is smaller than mmap_offset + memory_size
        keep.emplace_back(::memfd_create("small", MFD_CLOEXEC));
        REQUIRE(::ftruncate(keep.back().get(), 4096) == 0);
        wire::message<fr::set_mem_table> m;
        m.payload.nregions = 1;
        m.payload.regions[0] = {0x4000'0000, 1 << 20, 0x7000'0000'0000, 4096};
        m.fds.push_back(keep.back().get());
        fe.send(encoded(m));
        break;
    }
    case 2: { // SET_PROTOCOL_FEATURES with a bit the device masks
        wire::message<fr::set_protocol_features> m;
        m.payload.value = wire::protocol_feature::reply_ack | wire::protocol_feature::inflight_shmfd;
        fe.send(encoded(m));
        break;
    }
    case 3: { // GET_FEATURES with an fd
        const int fd = eventfd();
        fe.send(get_features_bytes, std::span(&fd, 1));
        break;
    }
    case 4: { // SET_LOG_BASE whose file is smaller than the log
        keep.emplace_back(::memfd_create("log", MFD_CLOEXEC));
        REQUIRE(::ftruncate(keep.back().get(), 4096) == 0);
        wire::message<fr::set_log_base> m;
        m.payload = {8192, 0};
        m.fds.push_back(keep.back().get());
        fe.send(encoded(m));
        break;
    }
    case 5: // the REPLY flag on a request
        fe.send(raw_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version | wire::flags::reply, 0));
        break;
    case 6: // an unknown request id
        fe.send(raw_message(99, wire::flags::version, 0));
        break;
    case 7: // size above the maximum payload (only the header is sent)
        fe.send(raw_message(static_cast<std::uint32_t>(fr::set_features), wire::flags::version,
                            static_cast<std::uint32_t>(wire::max_payload_size + 1)));
        break;
    case 8: { // a truncated message, then the write side closes
        const std::array<std::byte, 3> part{};
        fe.send(raw_message(static_cast<std::uint32_t>(fr::set_features), wire::flags::version, 8, part));
        REQUIRE(::shutdown(fe.fd(), SHUT_WR) == 0);
        break;
    }
    case 9: { // GET_INFLIGHT_FD: the device never offers INFLIGHT_SHMFD to a front-end
        wire::message<fr::get_inflight_fd> m;
        m.payload = {0, 0, 2, 256, 0};
        fe.send(encoded(m));
        break;
    }
    default: FAIL("no such case");
    }
}

const std::array<hostile_case, 10> hostile_cases{{
    {"SET_VRING_KICK for vring >= max_queues", "SET_VRING_KICK: vring 8 beyond max_vhost_queues 8"},
    {"SET_MEM_TABLE with a too small fd", "SET_MEM_TABLE: region needs"},
    {"SET_PROTOCOL_FEATURES with INFLIGHT_SHMFD", "SET_PROTOCOL_FEATURES: protocol features 0x1000 were not offered"},
    {"GET_FEATURES with an fd", "GET_FEATURES"},
    {"SET_LOG_BASE with a too small fd", "SET_LOG_BASE: region needs 8192 bytes of a 4096-byte file"},
    {"REPLY flag on a request", "GET_FEATURES"},
    {"unknown request", "99"},
    {"size above the maximum", "SET_FEATURES"},
    {"truncated message, then close", "front-end closed the socket"},
    {"GET_INFLIGHT_FD", "GET_INFLIGHT_FD: INFLIGHT_SHMFD was not offered (the inflight area is the device's own)"},
}};

} // namespace

TEST_CASE("device model: a hostile front-end is disconnected by the device, the next one works",
          "[vvu][device_model][hostile]") {
    const std::size_t i = GENERATE(range<std::size_t>(0, hostile_cases.size()));
    const hostile_case& hc = hostile_cases[i];
    CAPTURE(hc.name);
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    std::vector<unique_fd> keep;
    {
        raw_frontend fe(dev.fe_path);
        // One well-formed round trip through the back-end first: the session is CONNECTED.
        fe.send(get_features_bytes);
        auto reply = fe.receive();
        if (!reply) FAIL(reply.error().message());
        REQUIRE(wire::decode_reply<fr::get_features>(reply->bytes(), {}));

        send_hostile(i, fe, keep);
        INFO(dev.log());
        REQUIRE(wait_eof(fe.fd())); // the device closed the socket
        REQUIRE(dev.wait_log("front-end disconnected"));
    }
    INFO(dev.log());
    CHECK_THAT(dev.disconnect_reason(), Catch::Contains(hc.reason));
    // The message never reached the driver: the back-end's session ended on the disconnect,
    // not on a protocol violation of its own.
    REQUIRE(be.wait_ended(1));
    CHECK(be.ended_reason(0) == transport::error(transport::errc::disconnected).message());

    // The next front-end: a whole session with traffic.
    {
        auto nd = open_driver(dev.fe_path);
        check_echo(*nd, 50);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
    }
    REQUIRE(be.wait_ended(2));
    be.stop();
    const auto c = dev.finish();
    CHECK(c.frontends == 2);
    CHECK(c.disconnects == 2);
    CHECK(c.config_interrupts == 4);
    CHECK(be.port.stats().rx_packets == 50);
}

TEST_CASE("device model: progress says when a front-end is connected at once and when the device owes nothing",
          "[vvu][device_model]") {
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    using progress = vvu_device::device_progress;
    REQUIRE(dev.wait_progress([](const progress& p) { return p.ready_for_frontend && p.frontend_sockets == 0; }));
    {
        raw_frontend fe(dev.fe_path);
        fe.send(get_features_bytes);
        auto reply = fe.receive();
        if (!reply) FAIL(reply.error().message());
        // The request read, given to the driver and answered: nothing owed; the socket is
        // open, so no other front-end would be connected.
        REQUIRE(dev.wait_progress([](const progress& p) {
            return p.frontend_sockets == 1 && p.frontend_bytes == wire::header_size && p.to_driver == 1 &&
                   !p.driver_owed && !p.ready_for_frontend && p.sessions_ended == 0;
        }));
        // Half a message, then the socket closes.
        const std::array<std::byte, 8> value{};
        const auto set_features = raw_message(static_cast<std::uint32_t>(fr::set_features), wire::flags::version, 8, value);
        fe.send(std::span(set_features).first(wire::header_size));
    }
    // Closed mid-message: the session ends; once the driver has acknowledged it, ready again.
    REQUIRE(dev.wait_progress([](const progress& p) { return p.sessions_ended == 1 && p.ready_for_frontend; }));
    {
        std::scoped_lock lock(dev.mutex);
        CHECK(dev.progress->frontend_bytes == wire::header_size); // the half message is not counted
    }
    REQUIRE(be.wait_ended(1));
    be.stop();
}

// ============================================================ the function, seen by a driver
TEST_CASE("device model: FRONTEND_UP and the config interrupt, as the driver sees them",
          "[vvu][device_model][function]") {
    device_fixture dev;
    raw_driver d(dev.pci_path);
    d.drain_config();
    CHECK(d.status() == 0);

    // SOCKET_OPEN: a front-end without BACKEND_UP is held, nothing is announced.
    auto fe1 = std::make_unique<raw_frontend>(dev.fe_path);
    fe1->send(get_features_bytes);
    CHECK_FALSE(d.config_irq(300ms));
    CHECK((d.status() & dc::frontend_up) == 0);
    CHECK(still_open(fe1->fd(), 10ms));

    // BACKEND_UP → CONNECTED: FRONTEND_UP set and announced.
    d.write_status(dc::backend_up);
    REQUIRE(d.config_irq());
    CHECK(d.status() == (dc::backend_up | dc::frontend_up));

    // The message waiting in the socket reaches the rxq unchanged, header and payload.
    d.post_rx();
    auto got = d.take_rx();
    REQUIRE(got);
    CHECK(*got == get_features_bytes);
    // A reply on the txq reaches the front-end.
    d.post_tx(u64_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version | wire::flags::reply, 0x1234));
    REQUIRE(d.tx_used());
    auto reply = fe1->receive();
    if (!reply) FAIL(reply.error().message());
    CHECK(to_vector(reply->bytes()) ==
          u64_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version | wire::flags::reply, 0x1234));

    // A request with a payload: SET_FEATURES arrives byte for byte.
    const auto set_features = u64_message(static_cast<std::uint32_t>(fr::set_features),
                                          wire::flags::version | wire::flags::need_reply, 0x1'4000'0000);
    fe1->send(set_features);
    d.post_rx();
    got = d.take_rx();
    REQUIRE(got);
    CHECK(*got == set_features);

    // The front-end goes: interrupt, FRONTEND_UP clear.
    d.drain_config();
    fe1.reset();
    REQUIRE(d.config_irq());
    CHECK(d.status() == dc::backend_up);

    // BACKEND_UP still set from the old session: the next front-end is held until the driver
    // clears and sets it again (device_model.hpp). This one gives up waiting.
    {
        raw_frontend fe2(dev.fe_path);
        CHECK(dev.wait_log("front-end socket open", 2)); // SOCKET_OPEN
        CHECK_FALSE(d.config_irq(300ms));
        CHECK((d.status() & dc::frontend_up) == 0);
        CHECK(still_open(fe2.fd(), 10ms));
    }
    REQUIRE(dev.wait_log("front-end disconnected", 2));

    d.reack();
    CHECK_FALSE(d.config_irq(100ms)); // no front-end, nothing to announce
    auto fe3 = connect_up(dev, d);
    CHECK(d.status() == (dc::backend_up | dc::frontend_up));
    round_trip(*fe3, d, 7);
    d.drain_config();
    fe3.reset();
    REQUIRE(d.config_irq());
    CHECK(d.status() == dc::backend_up);
    REQUIRE(dev.wait_log("front-end disconnected", 3));
    d.detach();

    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 2);
    CHECK(c.disconnects == 3); // fe1 and fe3 (announced), fe2 (never connected)
    CHECK(c.config_interrupts == 4);
    CHECK(c.drivers == 1);
    CHECK(c.to_driver == 3);
    CHECK(c.to_frontend == 2);
}

// A front-end that connects after a disconnect, before the driver has re-acknowledged (cleared
// BACKEND_UP), waits in SOCKET_OPEN: the re-acknowledgement must not drop it, the next
// BACKEND_UP connects it. (The race of a front-end that reconnects at once — vvu-traffic run
// after run, QEMU reconnect=1 — against vvu-forward's close_session(); seen 2 times in 20.)
TEST_CASE("device model: a front-end waiting for the driver's re-acknowledgement is connected by it",
          "[vvu][device_model][function]") {
    device_fixture dev;
    raw_driver d(dev.pci_path);
    d.write_status(dc::backend_up);
    auto fe1 = connect_up(dev, d);
    fe1.reset();
    REQUIRE(d.config_irq());
    REQUIRE((d.status() & dc::frontend_up) == 0);

    auto fe2 = std::make_unique<raw_frontend>(dev.fe_path); // before the driver re-acknowledges
    CHECK_FALSE(d.config_irq(200ms));
    d.write_status(0);
    CHECK(still_open(fe2->fd(), 200ms)); // fails: the device closed it
    d.write_status(dc::backend_up);
    REQUIRE(d.config_irq());
    CHECK((d.status() & dc::frontend_up) != 0);
    round_trip(*fe2, d);
    fe2.reset();
    REQUIRE(dev.wait_log("front-end disconnected", 2));
    d.detach();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 2);
}

// The driver's back-end ends a session before it reads that the front-end left: the config
// interrupt announcing it stays pending. The next wait_for_frontend must not take it for a
// session that came and went — it would clear and set BACKEND_UP again, and a front-end that
// connects in between would be dropped.
TEST_CASE("device model: an interrupt left by an ended session does not make the next wait re-acknowledge",
          "[vvu][device_model][vvu_pci]") {
    device_fixture dev;
    unique_fd fd = connect_unix(dev.pci_path);
    REQUIRE(fd);
    auto client = vfio_user::client::over(std::move(fd));
    if (!client) FAIL(client.error().message());
    auto t = pci_transport::attach(std::make_unique<vfio_user::client>(std::move(*client)));
    if (!t) FAIL(t.error().message());

    auto fe1 = std::make_unique<raw_frontend>(dev.fe_path);
    REQUIRE(t->wait_for_frontend());
    fe1.reset();
    REQUIRE(dev.wait_log("front-end disconnected"));
    t->close_session(); // the interrupt of fe1's leaving was never read

    expected<void, transport::error> second = unexpected(transport::error(transport::errc::stopped));
    std::thread waiter([&] { second = t->wait_for_frontend(); });
    CHECK(dev.wait_log("driver ready (BACKEND_UP)", 2));
    // A driver that took the interrupt for a new session's end clears BACKEND_UP and sets it
    // again at once; give it the time to.
    std::this_thread::sleep_for(200ms);
    raw_frontend fe2(dev.fe_path);
    waiter.join();
    INFO(dev.log());
    CHECK(second.has_value());
    CHECK(dev.count("driver ready (BACKEND_UP)") == 2);
    CHECK(still_open(fe2.fd(), 10ms));
    t->close_session();
}

TEST_CASE("device model: GET_PROTOCOL_FEATURES and GET_MAX_MEM_SLOTS replies are lowered on the way",
          "[vvu][device_model][function]") {
    device_fixture dev;
    raw_driver d(dev.pci_path);
    d.write_status(dc::backend_up);
    auto fe = connect_up(dev, d);

    const auto ask = [&](fr request, std::uint64_t driver_says) {
        const auto req = raw_message(static_cast<std::uint32_t>(request), wire::flags::version, 0);
        fe->send(req);
        d.post_rx();
        auto got = d.take_rx();
        REQUIRE(got);
        CHECK(*got == req);
        d.post_tx(u64_message(static_cast<std::uint32_t>(request), wire::flags::version | wire::flags::reply, driver_says));
        REQUIRE(d.tx_used());
        auto reply = fe->receive();
        if (!reply) FAIL(reply.error().message());
        REQUIRE(reply->header.size == 8);
        CHECK(reply->header.request == static_cast<std::uint32_t>(request));
        CHECK(reply->header.flags == (wire::flags::version | wire::flags::reply));
        return le::load<std::uint64_t>(reply->payload().data());
    };
    CHECK(ask(fr::get_protocol_features, ~std::uint64_t{0}) == vvu_device::passthrough_protocol_features());
    CHECK(ask(fr::get_protocol_features, wire::protocol_feature::mq | wire::protocol_feature::inflight_shmfd) ==
          wire::protocol_feature::mq);
    CHECK(ask(fr::get_max_mem_slots, 509) == vvu_device::max_mem_slots);
    CHECK(ask(fr::get_max_mem_slots, 8) == 8);
    CHECK(ask(fr::get_features, ~std::uint64_t{0}) == ~std::uint64_t{0}); // others untouched
    CHECK(still_open(fe->fd(), 10ms));
    fe.reset();
    REQUIRE(dev.wait_log("front-end disconnected"));
    d.detach();
    CHECK(dev.finish().frontends == 1);
}

// ========================================================================= hostile drivers
TEST_CASE("device model: a hostile driver ends the front-end's session, announced",
          "[vvu][device_model][hostile][function]") {
    const int i = GENERATE(range(0, 6));
    device_fixture dev;
    raw_driver d(dev.pci_path);
    d.write_status(dc::backend_up);
    auto fe = connect_up(dev, d);
    d.drain_config();
    const auto gf = static_cast<std::uint32_t>(fr::get_features);
    const char* expect = "";
    if (i == 5) {
        // An rxq buffer smaller than the message.
        CAPTURE("rxq buffer too small");
        fe->send(u64_message(static_cast<std::uint32_t>(fr::set_features), wire::flags::version, 1));
        d.post_rx(8);
        expect = "rxq buffer of 8 bytes is too small for a 20-byte message";
    } else {
        // The front-end's request first, then the driver's bad answer.
        fe->send(get_features_bytes);
        d.post_rx();
        REQUIRE(d.take_rx());
        switch (i) {
        case 0: { // a txq buffer shorter than a header
            const std::array<std::byte, 11> short_buffer{};
            d.post_tx(short_buffer);
            expect = "driver: txq buffer of 11 bytes is not a message";
            break;
        }
        case 1: // version 2
            d.post_tx(u64_message(gf, 0x2 | wire::flags::reply, 0));
            expect = "driver: message version 2";
            break;
        case 2: { // size says 8, the buffer holds 12 + 16
            auto b = u64_message(gf, wire::flags::version | wire::flags::reply, 0);
            b.resize(b.size() + 8);
            d.post_tx(b);
            expect = "driver: a 28-byte buffer holds a message of 12 + 8 bytes";
            break;
        }
        case 3: { // a reply of the wrong size for its request
            const std::array<std::byte, 4> four{};
            d.post_tx(raw_message(gf, wire::flags::version | wire::flags::reply, 4, four));
            expect = "driver: GET_FEATURES";
            break;
        }
        case 4: // a back-end request without a back-end channel
            d.post_tx(raw_message(static_cast<std::uint32_t>(wire::back_request::config_change_msg), wire::flags::version, 0));
            expect = "driver: a back-end request without a back-end channel";
            break;
        }
        CHECK(d.tx_used()); // the bad buffer is given back all the same
    }
    CAPTURE(i);
    REQUIRE(wait_eof(fe->fd()));
    REQUIRE(d.config_irq());
    CHECK((d.status() & dc::frontend_up) == 0);
    REQUIRE(dev.wait_log("front-end disconnected"));
    INFO(dev.log());
    CHECK_THAT(dev.disconnect_reason(), Catch::Contains(expect));
    if (i == 5) { // the small buffer comes back used, with nothing written
        auto small = d.take_rx();
        REQUIRE(small);
        CHECK(small->empty());
    }

    // The driver re-acknowledges; the next front-end works.
    d.reack();
    auto fe2 = connect_up(dev, d);
    round_trip(*fe2, d);
    fe2.reset();
    REQUIRE(dev.wait_log("front-end disconnected", 2));
    d.detach();
    const auto c = dev.finish();
    CHECK(c.frontends == 2);
    CHECK(c.disconnects == 2);
    CHECK(c.config_interrupts == 4);
}

TEST_CASE("device model: the driver unmaps the ring memory while the rings run",
          "[vvu][device_model][hostile][function]") {
    device_fixture dev;
    {
        raw_driver d(dev.pci_path);
        d.write_status(dc::backend_up);
        auto fe = connect_up(dev, d);
        round_trip(*fe, d);
        d.post_rx();
        d.drain_config();
        // The whole arena (rings and buffers) goes away under the device.
        const auto& arena = d.drv->arena();
        auto r = d.fn->dma_unmap(arena.iova(), arena.size());
        if (!r) FAIL(r.error().message());
        // No crash: the rings are dropped, the session ends at once (the driver caused it:
        // no interrupt needed) and the front-end's socket closes; doorbells for the dropped
        // rings are ignored.
        d.drv->queue(vf::rxq).kick();
        d.drv->queue(vf::txq).kick();
        REQUIRE(wait_eof(fe->fd()));
        REQUIRE(dev.wait_log("function queues stopped: the driver unmapped DMA memory"));
        CHECK(dev.disconnect_reason() == "the driver unmapped DMA memory");
        CHECK((d.status() & dc::frontend_up) == 0);
        CHECK_FALSE(d.config_irq(100ms));
    } // the driver detaches
    REQUIRE(dev.wait_log("driver detached"));

    // The device still serves: a new driver attaches, a new front-end runs traffic.
    backend_fixture be(dev.pci_path);
    {
        auto nd = open_driver(dev.fe_path);
        check_echo(*nd, 100);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
    }
    REQUIRE(be.wait_ended(1));
    be.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.drivers == 2);
    CHECK(c.frontends == 2);
    CHECK(c.disconnects == 2);
}

// ========================================================================== driver restart
namespace {

// Something to read on `fd` within `t`?
bool readable(int fd, std::chrono::milliseconds t = 0ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(t.count())) > 0;
}

struct rx_message {
    fr request{};
    std::uint32_t flags = 0;
    std::vector<std::byte> bytes;
    std::uint64_t u64() const { return bytes.size() >= wire::header_size + 8 ? le::load<std::uint64_t>(bytes.data() + wire::header_size) : 0; }
    std::uint32_t vring() const { return bytes.size() >= wire::header_size + 4 ? le::load<std::uint32_t>(bytes.data() + wire::header_size) : ~0u; }
    bool is_vring() const {
        switch (request) {
        case fr::set_vring_num: case fr::set_vring_addr: case fr::set_vring_base: case fr::set_vring_enable:
        case fr::set_vring_kick: case fr::set_vring_call: case fr::set_vring_err: return true;
        default: return false;
        }
    }
};

// Takes rxq messages until none comes for `quiet`; each one that asks for an ack is answered
// with `ack` (0: success) on the txq, unless `ack_them` is false. The rxq is kept stocked.
std::vector<rx_message> take_all(raw_driver& d, std::chrono::milliseconds quiet = 300ms, bool ack_them = true,
                                 std::uint64_t ack = 0) {
    std::vector<rx_message> out;
    for (;;) {
        auto got = d.take_rx(quiet);
        if (!got) return out;
        d.post_rx(512);
        REQUIRE(got->size() >= wire::header_size);
        const auto h = wire::load_header(*got);
        out.push_back({static_cast<fr>(h.request), h.flags, *got});
        if (ack_them && h.need_reply()) {
            d.post_tx(u64_message(h.request, wire::flags::version | wire::flags::reply, ack));
            REQUIRE(d.tx_used());
        }
    }
}

std::string names(const std::vector<rx_message>& ms) {
    std::string all;
    for (const auto& m : ms) {
        all.append(wire::name(m.request));
        if (m.is_vring()) all.append("#").append(std::to_string(m.vring() & 0xff));
        all.append(" ");
    }
    return all;
}

// A raw driver for a kept session: BACKEND_UP, FRONTEND_UP announced, rxq stocked.
void raw_backend_up(raw_driver& d) {
    d.drain_config();
    CHECK((d.status() & dc::frontend_up) == 0); // a new driver starts from a fresh function
    for (int i = 0; i < 8; ++i) d.post_rx(512);
    d.write_status(dc::backend_up);
    REQUIRE(d.config_irq());
    REQUIRE((d.status() & dc::frontend_up) != 0);
}

} // namespace

TEST_CASE("device model: the driver dies mid-session, the front-end's session is replayed to the next one",
          "[vvu][device_model][restart]") {
    const bool mem_slots = GENERATE(true, false);
    CAPTURE(mem_slots);
    device_fixture dev;
    device::net::driver_options o;
    o.memory_regions = mem_slots ? 3 : 2;
    o.use_mem_slots = mem_slots;
    std::unique_ptr<net_driver> nd;
    {
        backend_fixture be(dev.pci_path);
        nd = open_driver(dev.fe_path, o);
        check_echo(*nd, 300);
        be.crash(); // kill -9: the connection closes, no reset
        REQUIRE(dev.wait_log("driver detached"));
        CHECK(be.port.stats().rx_packets == 300);
    }
    const int fe_fd = nd->frontend().channel().native_handle();
    INFO(dev.log());
    CHECK(dev.count("front-end session kept for the next driver: the driver went away") == 1);
    CHECK(dev.count("front-end disconnected") == 0);
    CHECK(still_open(fe_fd, 50ms));

    // A raw driver sees the replay: the front-end's setup, fds turned into the function's
    // routing again, NEED_REPLY on all but SET_OWNER (REPLY_ACK negotiated); its acks never
    // reach the front-end.
    {
        raw_driver d(dev.pci_path);
        raw_backend_up(d);
        const auto replay = take_all(d);
        INFO(names(replay));
        REQUIRE(replay.size() >= 10);
        CHECK(replay.front().request == fr::set_owner);
        CHECK_FALSE(wire::load_header(replay.front().bytes).need_reply());
        CHECK(replay[1].request == fr::set_protocol_features);
        // The driver offered INFLIGHT_SHMFD, so the device added it (for an inflight area of its
        // own, should the rings be packed); the front-end was never offered it.
        CHECK(replay[1].u64() == (nd->frontend().protocol_features() | wire::protocol_feature::inflight_shmfd));
        CHECK_FALSE(wire::has(nd->frontend().protocol_features(), wire::protocol_feature::inflight_shmfd));
        CHECK(replay[2].request == fr::set_features);
        CHECK(replay[2].u64() == nd->frontend().features());
        std::map<fr, int> seen;
        std::map<std::uint32_t, std::vector<fr>> per_vring;
        for (std::size_t i = 0; i < replay.size(); ++i) {
            const auto& m = replay[i];
            ++seen[m.request];
            if (i > 0) CHECK(wire::load_header(m.bytes).need_reply());
            CHECK_FALSE(wire::load_header(m.bytes).is_reply());
            if (m.is_vring()) per_vring[m.vring() & 0xff].push_back(m.request);
        }
        CHECK(seen[fr::get_vring_base] == 0);
        CHECK(seen[fr::get_features] == 0);
        CHECK(seen[fr::set_mem_table] == 1); // the window as it stands, in one table
        CHECK(seen[fr::add_mem_reg] == 0);
        // The table lists the front-end's regions in window order.
        const auto mt = std::ranges::find_if(replay, [](const auto& m) { return m.request == fr::set_mem_table; });
        auto decoded = decode_without_fds(mt->bytes);
        REQUIRE(decoded);
        const auto* table = std::get_if<wire::message<fr::set_mem_table>>(&*decoded);
        REQUIRE(table != nullptr);
        CHECK(table->payload.nregions == o.memory_regions);
        REQUIRE(per_vring.size() == 2);
        for (const auto& [i, reqs] : per_vring) {
            CAPTURE(i);
            CHECK(reqs.back() == fr::set_vring_kick); // the ring starts once all else is set
            CHECK(std::ranges::count(reqs, fr::set_vring_num) == 1);
            CHECK(std::ranges::count(reqs, fr::set_vring_addr) == 1);
            CHECK(std::ranges::count(reqs, fr::set_vring_base) == 1);
            CHECK(std::ranges::count(reqs, fr::set_vring_call) == 1);
        }
        // The acks were swallowed: nothing for the front-end.
        CHECK_FALSE(readable(fe_fd, 100ms));
        CHECK(still_open(fe_fd, 10ms));
        d.drain_config();
    } // this one detaches as a driver does (reset, unmap, close): the session is kept again
    REQUIRE(dev.wait_log("driver detached", 2));
    CHECK(dev.count("front-end session kept for the next driver") == 2);
    CHECK(dev.count("front-end disconnected") == 0);

    // A real back-end resumes the session: the rings carry on from where they were.
    backend_fixture be(dev.pci_path);
    check_echo(*nd, 300, 300);
    auto slots = nd->frontend().transact<fr::get_max_mem_slots>({}); // the socket is read again
    if (!slots) FAIL(slots.error().message());
    CHECK(slots->payload.value == vvu_device::max_mem_slots);
    CHECK(be.port.stats().rx_packets == 300);
    CHECK(be.sessions.load() == 1);
    if (auto r = nd->close(); !r) FAIL(r.error().message());
    nd.reset();
    REQUIRE(be.wait_ended(1));
    CHECK(be.ended_reason(0) == transport::error(transport::errc::disconnected).message());
    be.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 1);
    CHECK(c.disconnects == 1); // the front-end's own close, at the end
    CHECK(c.drivers == 3);
    CHECK(c.driver_restarts == 2);
    CHECK(c.replayed >= 20);
    CHECK(c.config_interrupts == 4); // FRONTEND_UP for each driver, cleared at the end
}

// A vvu: port of runtime::server with its loopback data path: what vvu-forward runs.
struct server_port {
    runtime::server<transport::vvu_pci, device::net::net_port> server;
    device::net::forwarder fwd;
    runtime::poller<device::net::forwarder> poller;

    server_port(transport::vvu_pci t, bool held)
        : server(std::move(t), device::net::net_port::options{.queue_pairs = 1}),
          fwd({&server.device()}, device::net::forward_mode::loopback), poller(fwd, runtime::poller_options{}) {
        server.guard_data_path([this](std::chrono::milliseconds t) { return poller.pause(t); }, [this] { poller.resume(); });
        poller.start(held);
    }
};

TEST_CASE("device model: a vvu: port handed to another back-end object: one driver to the device, no lost frame",
          "[vvu][device_model][handover]") {
    device_fixture dev;
    auto t = transport::vvu_pci::connect(dev.pci_path);
    if (!t) FAIL(t.error().message());
    auto old_port = std::make_unique<server_port>(std::move(*t), false);
    old_port->server.start();
    REQUIRE(dev.wait_log("driver ready"));
    auto nd = open_driver(dev.fe_path);
    check_echo(*nd, 300);

    // The old port parks and exports: its session, its vfio-user connection and its driver.
    REQUIRE(old_port->server.park(1s));
    REQUIRE(old_port->poller.pause(1s));
    auto image = old_port->server.export_port();
    if (!image) FAIL(image.error());

    auto new_port = std::make_unique<server_port>(transport::vvu_pci::unattached(dev.pci_path), true);
    SECTION("a truncated image is refused, and the old port serves on") {
        auto fds = std::move(image->fds);
        auto bytes = image->bytes;
        bytes.resize(bytes.size() / 2);
        auto r = new_port->server.import_port(bytes, fds);
        REQUIRE(!r);
        new_port->server.retire();
        new_port.reset();
        old_port->poller.resume();
        old_port->server.unpark();
        check_echo(*nd, 300, 300);
        CHECK(old_port->server.device().stats().rx_packets == 600);
    }
    SECTION("the new port takes over and the rings run on") {
        auto r = new_port->server.import_port(image->bytes, image->fds);
        if (!r) FAIL(r.error());
        old_port->server.retire();
        old_port.reset(); // no reset, no unmap, no status: the function is the new port's now
        new_port->poller.resume();
        new_port->server.start();
        check_echo(*nd, 300, 300);
        CHECK(new_port->server.device().stats().rx_packets == 600); // the counters came along
        // The control path moved too: a message the front-end sends now is answered.
        auto slots = nd->frontend().transact<fr::get_max_mem_slots>({});
        if (!slots) FAIL(slots.error().message());
        CHECK(dev.count("driver detached") == 0);
    }
    if (auto r = nd->close(); !r) FAIL(r.error().message());
    nd.reset();
    new_port.reset();
    old_port.reset();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 1);
    CHECK(c.drivers == 1);
    CHECK(c.driver_restarts == 0);
    CHECK(c.disconnects == 1); // the front-end's own close
}

TEST_CASE("device model: the device itself handed to a new device object mid-session; neither the front-end nor the "
          "driver sees it",
          "[vvu][device_model][handover]") {
    device_fixture dev;
    auto be = std::make_unique<backend_fixture>(dev.pci_path);
    REQUIRE(dev.wait_log("driver ready"));
    auto nd = open_driver(dev.fe_path);
    check_echo(*nd, 300);

    // The old device parks between two events and exports everything it holds.
    runtime::handover_port& old_port = dev.device->handover();
    if (auto p = old_port.park(1s); !p) FAIL(p.error());
    auto image = old_port.export_port();
    if (!image) FAIL(image.error());

    std::mutex log_mutex;
    std::vector<std::string> fresh_log;
    vvu_device::device_options o;
    o.vhost_user_path = dev.fe_path;
    o.pci_path = dev.pci_path;
    o.max_queues = 8;
    o.listen = false; // the sockets come with the image
    o.log = [&](std::string_view line) {
        std::scoped_lock lock(log_mutex);
        fresh_log.emplace_back(line);
    };
    auto created = vvu_device::device_model::create(o);
    if (!created) FAIL(created.error());
    std::unique_ptr<vvu_device::device_model> fresh = std::move(*created);
    CHECK(fresh->handover_description() == dev.device->handover_description());
    CHECK(!fresh->run()); // nothing to serve before an import

    SECTION("an image the new device cannot take is refused: nothing is unlinked, and the old device serves on") {
        auto fds = std::move(image->fds);
        auto bytes = image->bytes;
        std::string want;
        SECTION("truncated") {
            bytes.resize(bytes.size() - 3);
            want = "short";
        }
        SECTION("another version") {
            le::store<std::uint32_t>(bytes.data() + 4, 99);
            want = "version 99";
        }
        SECTION("an fd short") {
            fds.pop_back();
            want = "short";
        }
        SECTION("another max_queues") {
            le::store<std::uint32_t>(bytes.data() + 8, 9);
            want = "max_queues 9";
        }
        auto r = fresh->handover().import_port(bytes, fds);
        REQUIRE(!r);
        CHECK_THAT(r.error(), Catch::Contains(want));
        fresh->handover().retire();
        fresh.reset();
        CHECK(std::filesystem::exists(dev.fe_path));
        CHECK(std::filesystem::exists(dev.pci_path));
        old_port.unpark();
        check_echo(*nd, 300, 300);
        auto slots = nd->frontend().transact<fr::get_max_mem_slots>({});
        if (!slots) FAIL(slots.error().message());
        if (auto c = nd->close(); !c) FAIL(c.error().message());
        nd.reset();
        REQUIRE(be->wait_ended(1));
        be->stop();
        const auto c = dev.finish();
        INFO(dev.log());
        CHECK(c.frontends == 1);
        CHECK(c.drivers == 1);
        CHECK(c.disconnects == 1);
    }
    SECTION("the new device takes over; the function's queues, the rings and the control path run on") {
        if (auto r = fresh->handover().import_port(image->bytes, image->fds); !r) FAIL(r.error());
        old_port.retire();
        dev.thread.join(); // the old device's run() returns once it let go
        dev.device.reset(); // and its destruction touches nothing: no unlink, no close seen by a peer
        CHECK(std::filesystem::exists(dev.fe_path));
        CHECK(std::filesystem::exists(dev.pci_path));
        std::thread runner([&] {
            if (auto r = fresh->run(); !r) FAIL_CHECK(r.error());
        });
        check_echo(*nd, 300, 300);
        // Messages both ways through the new device's rxq and txq.
        auto slots = nd->frontend().transact<fr::get_max_mem_slots>({});
        if (!slots) FAIL(slots.error().message());
        CHECK(slots->payload.value == vvu_device::max_mem_slots);
        CHECK(be->sessions == 1);
        CHECK(be->ended_count() == 0);
        if (auto c = nd->close(); !c) FAIL(c.error().message());
        nd.reset();
        REQUIRE(be->wait_ended(1));
        CHECK(be->sessions == 1);
        be->stop();
        be.reset();
        fresh->stop();
        runner.join();
        const auto c = fresh->counters(); // carried across the processes
        std::string all;
        for (const auto& l : fresh_log) all += l + "\n";
        INFO(all);
        CHECK(std::ranges::count_if(fresh_log, [](const auto& l) { return l.find("took the device over") == 0; }) == 1);
        CHECK(c.frontends == 1);
        CHECK(c.drivers == 1);
        CHECK(c.driver_restarts == 0);
        CHECK(c.disconnects == 1); // the front-end's own close, seen by the new device
    }
}

TEST_CASE("device model: a driver may make max_dma_maps DMA maps, no more (the device keeps each one's fd)",
          "[vvu][device_model][hostile]") {
    device_fixture dev;
    auto connected = vfio_user::client::connect(dev.pci_path);
    if (!connected) FAIL(connected.error().message());
    auto c = std::make_unique<vfio_user::client>(std::move(*connected));
    CHECK(c->version().server.max_dma_maps == vvu_device::max_dma_maps);
    unique_fd fd(::memfd_create("maps", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), 0x1000) == 0);
    REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) == 0);
    for (std::uint64_t i = 0; i < vvu_device::max_dma_maps; ++i) {
        auto m = c->dma_map(fd.get(), 0, 0x100000 + i * 0x1000, 0x1000);
        if (!m) FAIL(fmt::format("map {}: {}", i, m.error().message()));
    }
    auto refused = c->dma_map(fd.get(), 0, 0x100000 + vvu_device::max_dma_maps * 0x1000, 0x1000);
    REQUIRE(!refused);
    CHECK(refused.error().code == std::error_code(ENOSPC, std::system_category()));
    // The connection serves on, and the maps go with it.
    auto info = c->get_device_info();
    if (!info) FAIL(info.error().message());
    c.reset();
    REQUIRE(dev.wait_log("driver detached"));
}

TEST_CASE("device model: frames sent while no driver is there are echoed by the next one",
          "[vvu][device_model][restart]") {
    device_fixture dev;
    std::unique_ptr<net_driver> nd;
    auto be1 = std::make_unique<backend_fixture>(dev.pci_path);
    nd = open_driver(dev.fe_path);
    check_echo(*nd, 100);
    // Frames the first back-end never sees: its data path stops first, then it dies.
    be1->freeze();
    std::vector<std::byte> buf(64);
    std::uint64_t sent = 0;
    for (; sent < 20; ++sent) {
        device::net::make_test_frame(buf, 64, 100 + sent, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
        const device::net::frame f(buf);
        REQUIRE(nd->send(0, std::span(&f, 1)) == 1);
    }
    be1->crash();
    be1.reset();
    REQUIRE(dev.wait_log("front-end session kept for the next driver"));

    backend_fixture be2(dev.pci_path);
    // The 20 frames waiting in the ring come back first, then new ones.
    std::vector<std::uint64_t> got;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (got.size() < 20 && std::chrono::steady_clock::now() < until) {
        nd->reap_tx(0);
        nd->receive(0, [&](const device::net::virtio_net_hdr&, std::span<const std::byte> frame) {
            got.push_back(device::net::test_frame_sequence(frame).value_or(~0ULL));
        });
    }
    REQUIRE(got.size() == 20);
    for (std::uint64_t i = 0; i < 20; ++i) CHECK(got[i] == 100 + i);
    check_echo(*nd, 100, 120);
    // The front-end's SET_VRING_BASE (0) was replayed; the rings went on at their used index.
    CHECK_THAT(be2.notice_log(), Catch::Contains("vring 0: SET_VRING_BASE 0 but the used ring is at"));
    CHECK_THAT(be2.notice_log(), Catch::Contains("vring 1: SET_VRING_BASE 0 but the used ring is at"));
    if (auto r = nd->close(); !r) FAIL(r.error().message());
    nd.reset();
    REQUIRE(be2.wait_ended(1));
    be2.stop();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.disconnects == 1);
    CHECK(c.driver_restarts == 1);
}

TEST_CASE("device model: requests the lost driver left unanswered are answered after the replay",
          "[vvu][device_model][restart]") {
    device_fixture dev;
    auto d1 = std::make_unique<raw_driver>(dev.pci_path);
    d1->write_status(dc::backend_up);
    auto fe = connect_up(dev, *d1);
    const auto rf = wire::flags::version | wire::flags::reply;
    const auto nr = wire::flags::version | wire::flags::need_reply;
    // REPLY_ACK, acknowledged by the first driver.
    fe->send(u64_message(static_cast<std::uint32_t>(fr::set_protocol_features), nr, wire::protocol_feature::reply_ack));
    d1->post_rx();
    REQUIRE(d1->take_rx());
    d1->post_tx(u64_message(static_cast<std::uint32_t>(fr::set_protocol_features), rf, 0));
    REQUIRE(d1->tx_used());
    auto ack = fe->receive();
    if (!ack) FAIL(ack.error().message());
    CHECK(ack->header.request == static_cast<std::uint32_t>(fr::set_protocol_features));
    // SET_FEATURES (wants an ack) and GET_FEATURES reach the first driver, which dies without
    // answering either.
    fe->send(u64_message(static_cast<std::uint32_t>(fr::set_features), nr, 0x1'4000'0000));
    fe->send(get_features_bytes);
    d1->post_rx();
    d1->post_rx();
    REQUIRE(d1->take_rx());
    REQUIRE(d1->take_rx());
    d1->detach();
    REQUIRE(dev.wait_log("front-end session kept for the next driver"));
    CHECK_FALSE(readable(fe->fd(), 50ms));

    // The next driver: the replay (SET_PROTOCOL_FEATURES, SET_FEATURES), then GET_FEATURES
    // again. The SET_FEATURES ack the front-end waits for comes from the device once the replay
    // is acknowledged; the GET_FEATURES reply from the driver.
    raw_driver d2(dev.pci_path);
    raw_backend_up(d2);
    const auto ms = take_all(d2, 300ms, false);
    INFO(names(ms));
    REQUIRE(ms.size() == 3);
    CHECK(ms[0].request == fr::set_protocol_features);
    CHECK(ms[1].request == fr::set_features);
    CHECK(ms[1].u64() == 0x1'4000'0000);
    CHECK(ms[2].bytes == get_features_bytes);
    CHECK_FALSE(readable(fe->fd(), 50ms)); // nothing yet: the replay is not acknowledged
    d2.post_tx(u64_message(static_cast<std::uint32_t>(fr::set_protocol_features), rf, 0));
    REQUIRE(d2.tx_used());
    CHECK_FALSE(readable(fe->fd(), 50ms));
    d2.post_tx(u64_message(static_cast<std::uint32_t>(fr::set_features), rf, 0));
    REQUIRE(d2.tx_used());
    auto r1 = fe->receive();
    if (!r1) FAIL(r1.error().message());
    CHECK(to_vector(r1->bytes()) == u64_message(static_cast<std::uint32_t>(fr::set_features), rf, 0));
    d2.post_tx(u64_message(static_cast<std::uint32_t>(fr::get_features), rf, 0x1'4000'0000));
    REQUIRE(d2.tx_used());
    auto r2 = fe->receive();
    if (!r2) FAIL(r2.error().message());
    CHECK(to_vector(r2->bytes()) == u64_message(static_cast<std::uint32_t>(fr::get_features), rf, 0x1'4000'0000));
    // And the session goes on.
    round_trip(*fe, d2, 9);
    fe.reset();
    REQUIRE(dev.wait_log("front-end disconnected"));
    d2.detach();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 1);
    CHECK(c.disconnects == 1);
    CHECK(c.driver_restarts == 1);
    CHECK(c.replayed == 3);
}

TEST_CASE("device model: a new driver that misbehaves during the replay ends the front-end's session",
          "[vvu][device_model][restart][hostile]") {
    const int i = GENERATE(range(0, 3));
    CAPTURE(i);
    device_fixture dev;
    std::unique_ptr<net_driver> nd;
    {
        backend_fixture be(dev.pci_path);
        nd = open_driver(dev.fe_path);
        check_echo(*nd, 50);
        be.crash();
    }
    REQUIRE(dev.wait_log("front-end session kept for the next driver"));
    const int fe_fd = nd->frontend().channel().native_handle();
    const char* expect = "";
    {
        raw_driver d(dev.pci_path);
        raw_backend_up(d);
        d.drain_config();
        auto first = d.take_rx();
        REQUIRE(first);
        auto second = d.take_rx();
        REQUIRE(second); // SET_PROTOCOL_FEATURES, NEED_REPLY
        const auto h = wire::load_header(*second);
        REQUIRE(h.need_reply());
        switch (i) {
        case 0: // refuses it
            d.post_tx(u64_message(h.request, wire::flags::version | wire::flags::reply, 1));
            expect = "driver: the replayed SET_PROTOCOL_FEATURES refused (1)";
            break;
        case 1: // answers something else
            d.post_tx(u64_message(static_cast<std::uint32_t>(fr::get_features), wire::flags::version | wire::flags::reply, 0));
            expect = "driver: a GET_FEATURES reply while the replayed SET_PROTOCOL_FEATURES awaits its ack";
            break;
        case 2: // clears BACKEND_UP: it ends the session
            d.write_status(0);
            expect = "the driver cleared BACKEND_UP";
            break;
        }
        REQUIRE(wait_eof(fe_fd));
        if (i != 2) {
            REQUIRE(d.config_irq());
        }
        CHECK((d.status() & dc::frontend_up) == 0);
        REQUIRE(dev.wait_log("front-end disconnected"));
    }
    INFO(dev.log());
    CHECK_THAT(dev.disconnect_reason(), Catch::Contains(expect));
    nd.reset();
    const auto c = dev.finish();
    CHECK(c.disconnects == 1);
    CHECK(c.driver_restarts == 1);
}

TEST_CASE("device model: packed rings outlive their driver through the device's inflight area; a front-end may "
          "leave while kept",
          "[vvu][device_model][restart]") {
    device_fixture dev;
    {
        // A packed ring's position is not in ring memory: the device gives the driver an
        // inflight area of its own, and the next driver's back-end resumes the rings from it.
        device::net::driver_options o;
        o.packed = true;
        std::unique_ptr<net_driver> nd;
        {
            backend_fixture be(dev.pci_path);
            nd = open_driver(dev.fe_path, o);
            check_echo(*nd, 50);
            CHECK(be.port.stats().rx_packets == 50);
            be.crash();
            REQUIRE(dev.wait_log("front-end session kept for the next driver: the driver went away"));
        }
        INFO(dev.log());
        CHECK(dev.count("packed rings: an inflight area for") == 1);
        const int fe_fd = nd->frontend().channel().native_handle();
        CHECK(still_open(fe_fd, 50ms));
        {
            backend_fixture be(dev.pci_path);
            REQUIRE(dev.wait_log("front-end session resumed on a new driver"));
            check_echo(*nd, 300); // sequence-checked: every frame back, in order, once
            CHECK(be.port.stats().rx_packets == 300);
            if (auto r = nd->close(); !r) FAIL(r.error().message());
            nd.reset();
            REQUIRE(be.wait_ended(1));
        }
        REQUIRE(dev.wait_log("front-end disconnected"));
        CHECK(dev.disconnect_reason() == "front-end closed the socket");
        CHECK(dev.count("packed rings: an inflight area for") == 1); // replayed, not made again
    }
    {
        backend_fixture be(dev.pci_path);
        auto nd = open_driver(dev.fe_path);
        check_echo(*nd, 50);
        be.crash();
        REQUIRE(dev.wait_log("front-end session kept for the next driver"));
        // The front-end leaves while no driver is there: an ordinary disconnect.
        nd.reset();
    }
    REQUIRE(dev.wait_log("front-end disconnected", 2));
    CHECK(dev.disconnect_reason(2) == "front-end closed the socket");
    // The next driver and front-end start afresh: no replay.
    {
        backend_fixture be(dev.pci_path);
        auto nd = open_driver(dev.fe_path);
        check_echo(*nd, 50);
        if (auto r = nd->close(); !r) FAIL(r.error().message());
        nd.reset();
        REQUIRE(be.wait_ended(1));
    }
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 3);
    CHECK(c.disconnects == 3);
    CHECK(c.driver_restarts == 1); // the packed session's; the other two start afresh
    CHECK(c.replayed > 0);
}

// The driver's copy of the window layout follows the messages in the order the state machine
// handles them, not the order they are reaped from the rxq: without REPLY_ACK a front-end sends
// REM_MEM_REG right behind SET_MEM_TABLE (or its ADD_MEM_REGs), both can be reaped together,
// and the table's regions must still be found (and mapped) when SET_MEM_TABLE is handled — the
// device must not take them out of the window before. Repeated, so that the messages would be
// reaped together in some rounds.
TEST_CASE("device model: SET_MEM_TABLE then REM_MEM_REG without REPLY_ACK, mapped in message order",
          "[vvu][device_model][memory]") {
    const bool mem_slots = GENERATE(false, true);
    CAPTURE(mem_slots);
    device_fixture dev;
    backend_fixture be(dev.pci_path);
    for (int round = 0; round < 20; ++round) {
        CAPTURE(round);
        auto ch = protocol::socket_channel::connect(dev.fe_path, bound);
        if (!ch) FAIL(ch.error().message());
        protocol::frontend_options fo;
        fo.protocol_features &= ~wire::protocol_feature::reply_ack;
        fo.use_mem_slots = mem_slots; // ADD_MEM_REG per region, or SET_MEM_TABLE
        fo.timeout = bound;
        protocol::frontend<> fe(std::move(*ch), fo);
        if (auto r = fe.negotiate(); !r) FAIL(r.error().message());
        REQUIRE_FALSE(fe.negotiated(wire::protocol_feature::reply_ack));
        REQUIRE(fe.negotiated(wire::protocol_feature::configure_mem_slots));
        auto mem = protocol::frontend_memory::create({3, 2 << 20, 0x4000'0000, true});
        if (!mem) FAIL(mem.error().message());
        const auto second = mem->regions()[1].description();
        if (auto r = fe.set_memory(std::move(*mem)); !r) FAIL(r.error().message()); // no ack: returns at once
        if (auto r = fe.request<fr::rem_mem_reg>({0, second}); !r) FAIL(r.error().message());
        // A request with a reply: answered only after both were handled.
        auto slots = fe.transact<fr::get_max_mem_slots>({});
        if (!slots) {
            be.wait_ended(static_cast<std::size_t>(round) + 1);
            INFO(dev.log());
            FAIL(slots.error().message() << "; the back-end: " << be.ended_reason(static_cast<std::size_t>(round)));
        }
        CHECK(slots->payload.value == vvu_device::max_mem_slots);
        CHECK(be.ended_count() == static_cast<std::size_t>(round)); // the session lives
        if (auto r = fe.stop(); !r) FAIL(r.error().message());
    }
    CHECK(be.wait_ended(20));
    be.stop();
    INFO(dev.log());
    CHECK(be.ended.size() == 20);
    for (const auto& why : be.ended) CHECK(why == transport::error(transport::errc::disconnected).message());
}

// Memory messages reach the driver one at a time: after each, the device reads no more of the
// front-end until the driver has handled it — shown by the front-end's own ack (REPLY_ACK) or
// by the reply to a GET_FEATURES the device puts behind it (swallowed). A driver lost while the
// device waits does not leave the front-end unread: the replay gives the next driver the window
// as it stands, behind it the same wait, then the front-end is read again.
TEST_CASE("device model: memory messages wait for the driver one at a time, across a driver restart",
          "[vvu][device_model][memory][restart]") {
    const bool acks = GENERATE(false, true);
    CAPTURE(acks);
    device_fixture dev;
    const auto rf = wire::flags::version | wire::flags::reply;
    const auto flags = wire::flags::version | (acks ? wire::flags::need_reply : 0u);
    auto d1 = std::make_unique<raw_driver>(dev.pci_path);
    for (int i = 0; i < 8; ++i) d1->post_rx(512);
    d1->write_status(dc::backend_up);
    auto fe = connect_up(dev, *d1);
    if (acks) {
        fe->send(u64_message(static_cast<std::uint32_t>(fr::set_protocol_features),
                             wire::flags::version | wire::flags::need_reply, wire::protocol_feature::reply_ack));
        const auto spf = take_all(*d1);
        REQUIRE(spf.size() == 1);
        REQUIRE(fe->receive());
    }

    // Three regions of 2 MiB, each its own memfd.
    std::vector<unique_fd> fds;
    std::vector<wire::memory_region> regions;
    for (std::uint64_t i = 0; i < 3; ++i) {
        fds.emplace_back(::memfd_create("region", MFD_CLOEXEC));
        REQUIRE(fds.back());
        REQUIRE(::ftruncate(fds.back().get(), 2 << 20) == 0);
        regions.push_back({i << 30, 2 << 20, 0x7f00'0000'0000 + (i << 30), 0});
    }
    auto with_flags = [&](wire::frame f) {
        wire::header h = wire::load_header(f.bytes());
        h.flags = flags;
        std::vector<std::byte> b = to_vector(f.bytes());
        wire::store_header(h, b);
        return b;
    };
    auto add = [&](std::size_t i) {
        wire::message<fr::add_mem_reg> m;
        m.payload.region = regions[i];
        m.fds.push_back(fds[i].get());
        const int fd = fds[i].get();
        fe->send(with_flags(encoded(m)), std::span(&fd, 1));
    };
    auto rem = [&](std::size_t i) {
        wire::message<fr::rem_mem_reg> m;
        m.payload.region = regions[i];
        fe->send(with_flags(encoded(m)));
    };
    // What reaches the driver next: `request`, then (without acks) the device's GET_FEATURES;
    // nothing behind them until answered.
    auto expect = [&](raw_driver& d, fr request) {
        const auto ms = take_all(d, 300ms, false);
        INFO(names(ms));
        REQUIRE(ms.size() == (acks ? 1u : 2u));
        CHECK(ms[0].request == request);
        if (!acks) CHECK(ms[1].bytes == get_features_bytes);
        return ms[0];
    };
    // The driver handles it: the front-end gets its ack, or nothing (the GET_FEATURES reply is
    // the device's).
    auto handle = [&](raw_driver& d, fr request) {
        if (acks) d.post_tx(u64_message(static_cast<std::uint32_t>(request), rf, 0));
        else d.post_tx(u64_message(static_cast<std::uint32_t>(fr::get_features), rf, 0x1234));
        REQUIRE(d.tx_used());
        if (acks) {
            auto ack = fe->receive();
            if (!ack) FAIL(ack.error().message());
            CHECK(ack->header.request == static_cast<std::uint32_t>(request));
        }
    };

    // SET_MEM_TABLE (0, 1) with REM_MEM_REG (1) right behind it.
    {
        wire::message<fr::set_mem_table> m;
        m.payload.nregions = 2;
        m.payload.regions[0] = regions[0];
        m.payload.regions[1] = regions[1];
        m.fds.push_back(fds[0].get());
        m.fds.push_back(fds[1].get());
        const std::array<int, 2> both{fds[0].get(), fds[1].get()};
        fe->send(with_flags(encoded(m)), both);
    }
    rem(1);
    expect(*d1, fr::set_mem_table);
    handle(*d1, fr::set_mem_table);
    CHECK(le::load<std::uint64_t>(expect(*d1, fr::rem_mem_reg).bytes.data() + wire::header_size + 8) ==
          regions[1].guest_phys_addr);
    handle(*d1, fr::rem_mem_reg);
    CHECK_FALSE(readable(fe->fd(), 100ms));

    // ADD_MEM_REG (2) with REM_MEM_REG (2) right behind it; the driver dies before handling it.
    add(2);
    rem(2);
    expect(*d1, fr::add_mem_reg);
    d1->detach();
    d1.reset();
    REQUIRE(dev.wait_log("front-end session kept for the next driver"));

    // The next driver: the window as it stands (0, 2) and behind it the same wait; then the
    // front-end's REM_MEM_REG (2). With acks, the lost driver's ADD_MEM_REG ack comes from the
    // device once the replay is acknowledged.
    raw_driver d2(dev.pci_path);
    raw_backend_up(d2);
    const auto replay = take_all(d2, 300ms, false);
    INFO(names(replay));
    REQUIRE(replay.size() == 2);
    const auto& table_message = replay[acks ? 1 : 0];
    CHECK(table_message.request == fr::set_mem_table);
    auto decoded = decode_without_fds(table_message.bytes);
    REQUIRE(decoded);
    const auto* table = std::get_if<wire::message<fr::set_mem_table>>(&*decoded);
    REQUIRE(table != nullptr);
    REQUIRE(table->payload.nregions == 2);
    CHECK(table->payload.regions[0] == regions[0]);
    CHECK(table->payload.regions[1] == regions[2]);
    if (acks) {
        CHECK(replay[0].request == fr::set_protocol_features);
        d2.post_tx(u64_message(static_cast<std::uint32_t>(fr::set_protocol_features), rf, 0));
        REQUIRE(d2.tx_used());
        CHECK_FALSE(readable(fe->fd(), 100ms));
        CHECK_FALSE(d2.take_rx(100ms)); // REM_MEM_REG still waits
        // The replayed table acknowledged: the device gives the ADD_MEM_REG ack.
        d2.post_tx(u64_message(static_cast<std::uint32_t>(fr::set_mem_table), rf, 0));
        REQUIRE(d2.tx_used());
        auto ack = fe->receive();
        if (!ack) FAIL(ack.error().message());
        CHECK(to_vector(ack->bytes()) == u64_message(static_cast<std::uint32_t>(fr::add_mem_reg), rf, 0));
    } else {
        CHECK(replay[1].bytes == get_features_bytes);
        handle(d2, fr::set_mem_table);
    }
    expect(d2, fr::rem_mem_reg);
    handle(d2, fr::rem_mem_reg);
    CHECK_FALSE(readable(fe->fd(), 100ms));
    round_trip(*fe, d2, 9); // the socket is read as before
    fe.reset();
    REQUIRE(dev.wait_log("front-end disconnected"));
    d2.detach();
    const auto c = dev.finish();
    INFO(dev.log());
    CHECK(c.frontends == 1);
    CHECK(c.disconnects == 1);
    CHECK(c.driver_restarts == 1);
    // Without acks the device's GET_FEATURES count as messages to the driver, not as replayed.
    CHECK(c.replayed == (acks ? 2u : 1u));
    CHECK(c.to_driver == (acks ? 8u : 11u));
    CHECK(c.to_frontend == (acks ? 6u : 1u));
}

// Regression: destroying a device_model while a driver is attached and a front-end is
// connected (vvu-device getting SIGTERM mid-session). At commit 3dbd831 this was a
// use-after-free: ~impl destroyed frontend, kick_fds, call_fds, … before `pci` (the
// vfio_user::server, declared earlier), whose destructor drops the client →
// client_detached() → disconnect(), which then reset kick_fds[i]/call_fds[i] in the freed
// vectors (valgrind: "Invalid read/write of size 4 … disconnect … client_detached …
// server::drop_client … ~server … ~impl; block of size 32 free'd by ~impl"; glibc: "malloc():
// unaligned tcache chunk detected"). The working tree now has ~impl() { pci.reset(); }. Run in
// a child process so that a regression (heap corruption) cannot take the rest of the test
// program with it; the child reports through its exit status.
TEST_CASE("device model: destroying the device while a driver and a front-end are attached",
          "[vvu][device_model]") {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int status = 1;
        try {
            device_fixture dev;
            raw_driver d(dev.pci_path);
            d.write_status(dc::backend_up);
            auto fe = std::make_unique<raw_frontend>(dev.fe_path);
            // A session that carried messages and was ended by the driver, then a new one.
            (void)d.config_irq();
            round_trip(*fe, d);
            d.post_tx(u64_message(1, 0x2 | wire::flags::reply, 0)); // version 2: disconnect
            (void)wait_eof(fe->fd());
            d.drain_config();
            d.reack();
            fe = std::make_unique<raw_frontend>(dev.fe_path);
            if (d.config_irq() && (d.status() & dc::frontend_up) != 0) {
                dev.device->stop();
                dev.thread.join();
                dev.device.reset(); // (was the use-after-free)
                for (int i = 0; i < 64; ++i) std::make_unique<std::array<char, 24>>().reset();
                status = 0;
            }
        } catch (...) {
        }
        ::_exit(status);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK((WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) == 0);
}

TEST_CASE("device model: dirty logging through the device — the log is a window area the driver's back-end marks",
          "[vvu][device_model][log]") {
    const bool mem_slots = GENERATE(true, false);
    CAPTURE(mem_slots);
    device_fixture dev;
    device::net::driver_options o;
    o.memory_regions = mem_slots ? 3 : 2;
    o.use_mem_slots = mem_slots;
    std::unique_ptr<net_driver> nd;
    auto in_memory = [&](const std::vector<std::uint64_t>& pages) {
        const auto& regions = nd->frontend().memory().regions();
        return std::ranges::all_of(pages, [&](std::uint64_t p) {
            return std::ranges::any_of(regions, [&](const auto& r) { return p * 4096 >= r.gpa && p * 4096 < r.gpa + r.size; });
        });
    };
    {
        backend_fixture be(dev.pci_path);
        nd = open_driver(dev.fe_path, o);
        auto& fe = nd->frontend();
        REQUIRE(fe.negotiated(wire::protocol_feature::log_shmfd));
        check_echo(*nd, 50);
        if (auto r = fe.start_logging(); !r) FAIL(r.error().message());
        (void)fe.take_dirty_pages();
        check_echo(*nd, 100, 50);
        // The back-end behind the function marked the front-end's own log file.
        const auto pages = fe.take_dirty_pages();
        CHECK_FALSE(pages.empty());
        CHECK(in_memory(pages));

        // A region added while logging: the log stays where both sides placed it.
        const std::uint64_t size = 2 << 20;
        unique_fd memfd(::memfd_create("extra", MFD_CLOEXEC));
        REQUIRE(memfd);
        REQUIRE(::ftruncate(memfd.get(), size) == 0);
        void* host = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
        REQUIRE(host != MAP_FAILED);
        wire::message<fr::add_mem_reg> add;
        add.payload.region = {0x10'0000'0000, size, reinterpret_cast<std::uint64_t>(host), 0};
        add.fds.push_back(memfd.get());
        // (The log covers up to the highest region it was sized for: a region past it needs a
        // larger log first, which QEMU sends before the table grows; this one is refused.)
        CHECK_FALSE(fe.request_message(add));
        ::munmap(host, size);
        REQUIRE(be.wait_ended(1));
        CHECK_THAT(be.ended_reason(0), Catch::Contains("past the dirty log"));
    }
    INFO(dev.log());
}

TEST_CASE("device model: a driver restart while logging — the log is replayed after the regions and marked again",
          "[vvu][device_model][log][restart]") {
    device_fixture dev;
    std::unique_ptr<net_driver> nd;
    {
        backend_fixture be(dev.pci_path);
        nd = open_driver(dev.fe_path);
        if (auto r = nd->frontend().start_logging(); !r) FAIL(r.error().message());
        check_echo(*nd, 100);
        CHECK_FALSE(nd->frontend().take_dirty_pages().empty());
        be.crash(); // kill -9
        REQUIRE(dev.wait_log("driver detached"));
    }
    INFO(dev.log());
    CHECK(dev.count("front-end session kept for the next driver") == 1);
    backend_fixture be(dev.pci_path);
    check_echo(*nd, 100, 100);
    const auto pages = nd->frontend().take_dirty_pages();
    CHECK_FALSE(pages.empty()); // the new driver's back-end logs into the same file
    INFO(be.notice_log());
    if (auto r = nd->frontend().stop_logging(); !r) FAIL(r.error().message());
    (void)nd->frontend().take_dirty_pages();
    check_echo(*nd, 100, 200);
    CHECK(nd->frontend().take_dirty_pages().empty());
    if (auto r = nd->close(); !r) FAIL(r.error().message());
    nd.reset();
    REQUIRE(be.wait_ended(1));
}
