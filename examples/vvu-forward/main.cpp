// vvu-forward: a vhost-user back-end that forwards frames between its ports (virtio-net).
// A thin main over the library: options, one control thread per port (protocol::backend over
// the port's transport), one forwarding thread (device::net::forwarder), stats on exit.
#include "../common/command_line.hpp"

#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/transport/unix_socket.hpp>
#include <vvu/transport/vvu_pci.hpp>

#include <fmt/format.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace vvu;
using device::net::forward_mode;

constexpr const char* usage_text = R"(usage: vvu-forward --port KIND:PATH [--port KIND:PATH ...] [options]

A vhost-user back-end (virtio-net) that forwards frames between its ports.

Ports (repeatable; numbered from 0 in the order given):
  --port unix:PATH          listen on PATH; a front-end (QEMU, DPDK virtio-user) connects
  --port unix-client:PATH   connect to a front-end listening on PATH (retrying with back-off)
  --port vvu:PATH           attach to a vvu-device's PCI function at PATH (vfio-user) and serve
                            the front-end connected to that device (virtio-vhost-user)

Options:
  --mode MODE        xconnect (default): port 0<->1, 2<->3, ...
                     learn:    an L2 switch (MAC learning, flooding of unknown destinations)
                     rxonly:   count and drop what the front-ends send
                     txonly:   send 64-byte UDP test frames to every front-end
                     loopback: send every frame back on the port it came from
  --queues N         queue pairs per port (default 1)
  --size BYTES       frame size for txonly (default 64)
  --stats SECONDS    print every port's counters to stderr every SECONDS
  --cpu N            pin the forwarding thread to CPU N (like a DPDK lcore)
  --poll MODE        busy (default): poll every vring without pause, like a DPDK PMD;
                     event: poll while frames flow, and after --idle-us without any, sleep until
                     a front-end kicks (frees the core of idle ports)
  --idle-us N        event mode: idle time before sleeping (default 200)
  --idle-sleep-us N  busy mode: sleep N microseconds after a pass that moved nothing (default 0)
  --help             this text

On SIGINT or SIGTERM it prints one JSON object per port on stdout and exits 0:
  {"port":N,"rx_packets":..,"rx_bytes":..,"tx_packets":..,"tx_bytes":..,"tx_dropped":..}
(rx: frames taken from the front-end; tx: frames given to it).
)";

struct options {
    struct port_spec {
        enum class kind { unix_server, unix_client, vvu } how = kind::unix_server;
        std::string path;
    };
    std::vector<port_spec> ports;
    forward_mode mode = forward_mode::xconnect;
    std::uint32_t queues = 1;
    std::size_t frame_size = 64;
    unsigned stats_seconds = 0;
    unsigned idle_sleep_us = 0;
    bool event_mode = false;
    unsigned idle_us = 200;
    int cpu = -1;
};

// Parses argv; prints why and returns nullopt on a bad command line.
std::optional<options> parse(int argc, char** argv) {
    options o;
    auto fail = [](const std::string& why) {
        fmt::print(stderr, "vvu-forward: {}\n(see vvu-forward --help)\n", why);
        return std::nullopt;
    };
    examples::command_line args(argc, argv);
    while (const auto next = args.next()) {
        const std::string_view arg = *next;
        auto value = [&] { return args.next(); };
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        }
        const auto v = value();
        if (!v) return fail(fmt::format("{} needs a value", arg));
        if (arg == "--port") {
            const auto colon = v->find(':');
            const std::string_view kind = v->substr(0, colon);
            const std::string path(colon == std::string_view::npos ? "" : v->substr(colon + 1));
            if (path.empty()) return fail(fmt::format("--port {}: expected KIND:PATH", *v));
            using k = options::port_spec::kind;
            if (kind == "unix") o.ports.push_back({k::unix_server, path});
            else if (kind == "unix-client") o.ports.push_back({k::unix_client, path});
            else if (kind == "vvu") o.ports.push_back({k::vvu, path});
            else return fail(fmt::format("--port {}: unknown kind '{}' (unix, unix-client, vvu)", *v, kind));
        } else if (arg == "--mode") {
            auto m = device::net::parse_forward_mode(*v);
            if (!m) return fail(fmt::format("unknown mode '{}'", *v));
            o.mode = *m;
        } else if (arg == "--queues") {
            if (!examples::parse_number(*v, o.queues) || o.queues == 0 || o.queues > 128) return fail("--queues takes 1..128");
        } else if (arg == "--size") {
            if (!examples::parse_number(*v, o.frame_size) || o.frame_size < 64 || o.frame_size > 9000)
                return fail("--size takes 64..9000");
        } else if (arg == "--stats") {
            if (!examples::parse_number(*v, o.stats_seconds)) return fail("--stats takes a number of seconds");
        } else if (arg == "--cpu") {
            if (!examples::parse_number(*v, o.cpu) || o.cpu < 0 || o.cpu >= CPU_SETSIZE) return fail("--cpu takes a CPU number");
        } else if (arg == "--poll") {
            if (*v == "event") o.event_mode = true;
            else if (*v != "busy") return fail("--poll is busy or event");
        } else if (arg == "--idle-us") {
            if (!examples::parse_number(*v, o.idle_us)) return fail("--idle-us takes a number");
        } else if (arg == "--idle-sleep-us") {
            if (!examples::parse_number(*v, o.idle_sleep_us)) return fail("--idle-sleep-us takes a number");
        } else {
            return fail(fmt::format("unknown option {}", arg));
        }
    }
    if (o.ports.empty()) return fail("at least one --port is needed");
    return o;
}

std::string stats_json(std::size_t port, const device::net::port_stats& s) {
    return fmt::format(R"({{"port":{},"rx_packets":{},"rx_bytes":{},"tx_packets":{},"tx_bytes":{},"tx_dropped":{}}})",
                       port, s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, s.tx_dropped);
}

// One port: its transport, its virtio-net device, and the state machine between them. The
// same backend<Transport, net_port> serves a UNIX socket and a VVU function.
struct port {
    device::net::net_port device;
    std::thread control;

    explicit port(device::net::net_port::options o) : device(o) {}
    virtual ~port() = default;
    virtual void serve(std::size_t index) = 0;
    virtual void stop() noexcept = 0;
};

template <class Transport>
struct transport_port final : port {
    Transport transport;
    protocol::backend<Transport, device::net::net_port> backend{transport, device};

    transport_port(Transport t, device::net::net_port::options o) : port(o), transport(std::move(t)) {}

    // Serves front-ends one after another until the transport is stopped.
    void serve(std::size_t index) override {
        for (;;) {
            if (auto ready = transport.wait_for_frontend(); !ready) {
                if (ready.error().code == transport::errc::stopped) return;
                fmt::print(stderr, "vvu-forward: port {}: {}\n", index, ready.error().message());
                std::this_thread::sleep_for(std::chrono::milliseconds(100)); // a failing function: don't spin
                continue;
            }
            fmt::print(stderr, "vvu-forward: port {}: front-end connected\n", index);
            const std::string why = backend.serve();
            transport.close_session();
            fmt::print(stderr, "vvu-forward: port {}: session ended: {}\n", index, why);
        }
    }
    void stop() noexcept override { transport.stop(); }
};

} // namespace

int main(int argc, char** argv) {
    const auto opts = parse(argc, argv);
    if (!opts) return 2;

    // Every thread inherits the blocked signals; main waits for them with sigwait.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN); // a front-end that vanishes mid-reply is a closed session, not a crash

    std::vector<std::unique_ptr<port>> ports;
    for (const auto& spec : opts->ports) {
        device::net::net_port::options o;
        o.queue_pairs = opts->queues;
        o.mac[5] = static_cast<std::uint8_t>(ports.size() + 1);
        using k = options::port_spec::kind;
        if (spec.how == k::unix_client) {
            ports.push_back(std::make_unique<transport_port<transport::unix_socket>>(
                transport::unix_socket::connect(spec.path), o));
        } else if (spec.how == k::unix_server) {
            auto t = transport::unix_socket::listen(spec.path);
            if (!t) {
                fmt::print(stderr, "vvu-forward: {}: {}\n", spec.path, t.error().message());
                return 1;
            }
            ports.push_back(std::make_unique<transport_port<transport::unix_socket>>(std::move(*t), o));
        } else {
            auto t = transport::vvu_pci::connect(spec.path);
            if (!t) {
                fmt::print(stderr, "vvu-forward: {}: {}\n", spec.path, t.error().message());
                return 1;
            }
            ports.push_back(std::make_unique<transport_port<transport::vvu_pci>>(std::move(*t), o));
        }
    }

    std::vector<device::net::net_port*> devices;
    for (auto& p : ports) devices.push_back(&p->device);
    std::atomic<bool> running{true};
    std::thread forwarding([&] {
        if (opts->cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(opts->cpu, &set);
            if (int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set); e != 0)
                fmt::print(stderr, "vvu-forward: cannot pin to CPU {}: {}\n", opts->cpu, std::strerror(e));
        }
        device::net::forwarder fwd(devices, opts->mode, opts->frame_size);
        auto last_work = std::chrono::steady_clock::now();
        while (running.load(std::memory_order_relaxed)) {
            if (fwd.poll() != 0) {
                if (opts->event_mode) last_work = std::chrono::steady_clock::now();
                continue;
            }
            if (opts->event_mode) {
                if (std::chrono::steady_clock::now() - last_work > std::chrono::microseconds(opts->idle_us) &&
                    fwd.wait_for_kicks(std::chrono::milliseconds(100)))
                    last_work = std::chrono::steady_clock::now();
            } else if (opts->idle_sleep_us != 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(opts->idle_sleep_us));
            }
        }
    });
    for (std::size_t i = 0; i < ports.size(); ++i) ports[i]->control = std::thread([&, i] { ports[i]->serve(i); });

    std::thread stats;
    std::atomic<bool> stats_running{opts->stats_seconds != 0};
    if (opts->stats_seconds != 0) {
        stats = std::thread([&] {
            auto next = std::chrono::steady_clock::now();
            while (stats_running.load()) {
                next += std::chrono::seconds(opts->stats_seconds);
                while (stats_running.load() && std::chrono::steady_clock::now() < next)
                    std::this_thread::sleep_for(std::chrono::milliseconds(50));
                if (!stats_running.load()) break;
                for (std::size_t i = 0; i < ports.size(); ++i)
                    fmt::print(stderr, "{}\n", stats_json(i, ports[i]->device.stats()));
            }
        });
    }

    int sig = 0;
    sigwait(&stop_signals, &sig);

    stats_running = false;
    if (stats.joinable()) stats.join();
    for (auto& p : ports) p->stop();
    for (auto& p : ports) p->control.join();
    running = false;
    forwarding.join();
    for (std::size_t i = 0; i < ports.size(); ++i) fmt::print("{}\n", stats_json(i, ports[i]->device.stats()));
    std::fflush(stdout);
    return 0;
}
