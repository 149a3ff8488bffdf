// vvu-forward: a vhost-user back-end that forwards frames between its ports (virtio-net).
// A thin main over the library: options, one runtime::server per port (its control thread runs
// the state machine over the port's transport), one runtime::poller running the forwarding
// engine (device::net::forwarder), live update (runtime/live_update.hpp), stats on exit.
#include "../common/command_line.hpp"
#include "../common/live_update.hpp"
#include "../common/stop_signals.hpp"
#include "txonly_template.hpp"

#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/runtime/live_update.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>
#include <vvu/transport/vfio_pci.hpp>
#include <vvu/transport/vvu_pci.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
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
  --port vfio:BDF           the same over a VVU function of this machine's PCI bus, bound to
                            vfio-pci (e.g. vfio:0000:00:03.0, in a guest); needs a free 2 MiB
                            huge page (vm.nr_hugepages) for its queues; not handed over

Options:
  --mode MODE        xconnect (default): port 0<->1, 2<->3, ...
                     learn:    an L2 switch (MAC learning, flooding of unknown destinations)
                     rxonly:   count and drop what the front-ends send (--rx says how)
                     txonly:   send 64-byte UDP test frames to every front-end
                     loopback: send every frame back on the port it came from
  --queues N         queue pairs per port (default 1)
  --threads N        forwarding threads (default 1, at most --queues): thread i moves the
                     frames of queue pairs i, i+N, i+2N, ... of every port (not with learn)
  --size BYTES       frame size for txonly (default 64)
  --check testpmd-txonly
                     rxonly: read every frame and check it is what DPDK testpmd's txonly
                     mode sends by default (one Ethernet/IPv4/UDP template, 198.18.0.1:9 ->
                     198.18.0.2:9, valid IPv4 checksum, --size bytes); the port lines then
                     count "checked" and "check_failed" frames, and the first failure is
                     described on stderr
  --rx discard|copy  rxonly: discard (default) gives the transmit chains back unread; copy
                     first copies every frame into the back-end's own memory, as DPDK's vhost
                     dequeue does into its mbufs (the equal-work comparison with it).
                     xconnect, learn: frames are copied once, from the sending front-end's
                     buffer into the receiving one's; copy takes them into the back-end's
                     memory on the way, two copies, as DPDK's io forwarding does
  --stats SECONDS    print every port's counters to stderr every SECONDS
  --cpu LIST         pin the forwarding threads to these CPUs (like DPDK lcores), e.g. 1 or
                     1,0: thread i to the i-th, round robin
  --poll MODE        busy (default): poll every vring without pause, like a DPDK PMD;
                     event: poll while frames flow, and after --idle-us without any, sleep until
                     a front-end kicks (frees the core of idle ports)
  --idle-us N        event mode: idle time before sleeping (default 200)
  --idle-sleep-us N  busy mode: sleep N microseconds after a pass that moved nothing (default 0)
  --control PATH     live update: listen on PATH for a new vvu-forward that takes the ports over
  --takeover PATH    live update: take every port's session over from the vvu-forward whose
                     --control socket is PATH (same --port arguments, in the same order); the
                     front-ends see no message and no disconnect. With --control too, the new
                     process takes the control socket over as well (for the next update).
                     Until the old process commits, the new one runs SCHED_IDLE (where it may
                     come back from it: root, CAP_SYS_NICE), so that its start-up takes no CPU
                     from the data path — for at most 250 ms, should no CPU ever idle.
  --takeover-go now|sigusr2
                     sigusr2: prepare the take-over while the old process serves on (connect,
                     map the memory), say "ready to take over" on stderr and wait for SIGUSR2
                     before the outage starts, so that it holds none of this process's start
                     (send it within 5 s, or the old process gives up and serves on)
  --help             this text

On SIGINT or SIGTERM it prints one JSON object per port on stdout and exits 0:
  {"port":N,"rx_packets":..,"rx_bytes":..,"tx_packets":..,"tx_bytes":..,"tx_dropped":..,"rx_discarded":..}
(rx: frames taken from the front-end; tx: frames given to it; rx_discarded: frames it queued on
a disabled TX ring, dropped as the vhost-user spec asks). Counters are the port's: a
process that took the port over goes on counting from where the old one handed over. After
handing its ports over, a process prints the same lines plus {"handed_over":true,"paused_us":..}
and exits 0. A take-over that fails exits 1 (the old process serves on).
)";

struct options {
    struct port_spec {
        enum class kind { unix_server, unix_client, vvu, vfio } how = kind::unix_server;
        std::string path;
    };
    std::vector<port_spec> ports;
    forward_mode mode = forward_mode::xconnect;
    std::uint32_t queues = 1;
    std::size_t frame_size = 64;
    bool check_txonly_template = false; // --check testpmd-txonly
    bool copy_received = false;         // --rx copy
    unsigned stats_seconds = 0;
    unsigned idle_sleep_us = 0;
    bool event_mode = false;
    unsigned idle_us = 200;
    std::vector<int> cpus; // --cpu LIST
    std::uint32_t threads = 1;
    std::string control;  // --control PATH
    std::string takeover; // --takeover PATH
    bool takeover_on_signal = false; // --takeover-go sigusr2
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
            else if (kind == "vfio") o.ports.push_back({k::vfio, path});
            else return fail(fmt::format("--port {}: unknown kind '{}' (unix, unix-client, vvu, vfio)", *v, kind));
        } else if (arg == "--mode") {
            auto m = device::net::parse_forward_mode(*v);
            if (!m) return fail(fmt::format("unknown mode '{}'", *v));
            o.mode = *m;
        } else if (arg == "--queues") {
            if (!examples::parse_number(*v, o.queues) || o.queues == 0 || o.queues > 128) return fail("--queues takes 1..128");
        } else if (arg == "--size") {
            if (!examples::parse_number(*v, o.frame_size) || o.frame_size < 64 || o.frame_size > 9000)
                return fail("--size takes 64..9000");
        } else if (arg == "--check") {
            if (*v != "testpmd-txonly") return fail("--check takes testpmd-txonly");
            o.check_txonly_template = true;
        } else if (arg == "--rx") {
            if (*v != "discard" && *v != "copy") return fail("--rx takes discard or copy");
            o.copy_received = *v == "copy";
        } else if (arg == "--stats") {
            if (!examples::parse_number(*v, o.stats_seconds)) return fail("--stats takes a number of seconds");
        } else if (arg == "--cpu") {
            std::string_view list = *v;
            while (!list.empty()) {
                const auto comma = list.find(',');
                int cpu = -1;
                if (!examples::parse_number(list.substr(0, comma), cpu) || cpu < 0 || cpu >= CPU_SETSIZE)
                    return fail("--cpu takes CPU numbers, separated by commas");
                o.cpus.push_back(cpu);
                list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            }
            if (o.cpus.empty()) return fail("--cpu takes CPU numbers, separated by commas");
        } else if (arg == "--threads") {
            if (!examples::parse_number(*v, o.threads) || o.threads == 0 || o.threads > 128) return fail("--threads takes 1..128");
        } else if (arg == "--poll") {
            if (*v == "event") o.event_mode = true;
            else if (*v != "busy") return fail("--poll is busy or event");
        } else if (arg == "--idle-us") {
            if (!examples::parse_number(*v, o.idle_us)) return fail("--idle-us takes a number");
        } else if (arg == "--idle-sleep-us") {
            if (!examples::parse_number(*v, o.idle_sleep_us)) return fail("--idle-sleep-us takes a number");
        } else if (arg == "--control") {
            o.control = std::string(*v);
        } else if (arg == "--takeover") {
            o.takeover = std::string(*v);
        } else if (arg == "--takeover-go") {
            if (*v == "sigusr2") o.takeover_on_signal = true;
            else if (*v != "now") return fail("--takeover-go is now or sigusr2");
        } else {
            return fail(fmt::format("unknown option {}", arg));
        }
    }
    if (o.ports.empty()) return fail("at least one --port is needed");
    if (o.takeover_on_signal && o.takeover.empty()) return fail("--takeover-go sigusr2 needs --takeover");
    if (o.check_txonly_template && o.mode != forward_mode::rxonly) return fail("--check needs --mode rxonly");
    if (o.copy_received && o.mode == forward_mode::txonly) return fail("--rx copy: txonly receives nothing");
    if (o.threads > o.queues) return fail("--threads takes at most --queues threads (a thread per queue pair at most)");
    if (o.threads > 1 && o.mode == forward_mode::learn) return fail("--mode learn runs on one thread");
    return o;
}

std::string stats_json(std::size_t port, const device::net::net_port& p,
                       const std::optional<device::net::forwarder::check_counts>& checks = std::nullopt) {
    const device::net::port_stats s = p.stats();
    return fmt::format(R"({{"port":{},"rx_packets":{},"rx_bytes":{},"tx_packets":{},"tx_bytes":{},"tx_dropped":{},"rx_discarded":{}{}}})",
                       port, s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, s.tx_dropped, p.discarded(),
                       checks ? fmt::format(R"(,"checked":{},"check_failed":{})", checks->checked, checks->failed) : "");
}

// The forwarding threads' cost per frame (runtime::busy_time, summed: TSC cycles on
// x86-64), and with several threads the frames each moved.
std::string data_path_json(const std::vector<runtime::busy_time>& threads) {
    runtime::busy_time b;
    std::vector<std::uint64_t> frames;
    for (const auto& t : threads) {
        b.frames += t.frames;
        b.cycles += t.cycles;
        frames.push_back(t.frames);
    }
    return fmt::format(R"({{"data_path":{{"frames":{},"busy_cycles":{},"cycles_per_frame":{:.1f}{}}}}})", b.frames, b.cycles,
                       b.per_frame(), threads.size() > 1 ? fmt::format(R"(,"thread_frames":[{}])", fmt::join(frames, ",")) : "");
}

// How the port appears in a hand-over: the same string in the old and the new process.
std::string describe(const options::port_spec& p) {
    using k = options::port_spec::kind;
    const char* kind = p.how == k::unix_server ? "unix" : p.how == k::unix_client ? "unix-client" : p.how == k::vvu ? "vvu" : "vfio";
    return fmt::format("{}:{}", kind, p.path);
}

// One port: a runtime::server over the port's transport. The same server<Transport, net_port>
// serves a UNIX socket and a VVU function.
struct port {
    virtual ~port() = default;
    virtual device::net::net_port& device() = 0;
    virtual runtime::handover_port& handover() = 0;
    virtual void guard_data_path(const runtime::data_path_control& d) = 0;
    virtual void start() = 0;
    virtual void stop() = 0;
};

template <class Transport>
struct server_port final : port {
    runtime::server<Transport, device::net::net_port> server;

    server_port(Transport t, device::net::net_port::options o, std::size_t index) : server(std::move(t), o) {
        server.on_event([index](const runtime::session_event& e) {
            using kind = runtime::session_event::kind;
            if (e.what == kind::connected)
                fmt::print(stderr, "vvu-forward: port {}: front-end connected{}\n", index, e.text.empty() ? "" : " (" + e.text + ")");
            else if (e.what == kind::ended)
                fmt::print(stderr, "vvu-forward: port {}: session ended: {}\n", index, e.text);
            else
                fmt::print(stderr, "vvu-forward: port {}: {}\n", index, e.text);
        });
    }
    device::net::net_port& device() override { return server.device(); }
    runtime::handover_port& handover() override { return server; }
    void guard_data_path(const runtime::data_path_control& d) override { server.guard_data_path(d.pause, d.resume); }
    void start() override { server.start(); }
    void stop() override { server.stop(); }
};

} // namespace

int main(int argc, char** argv) {
    const auto opts = parse(argc, argv);
    if (!opts) return 2;

    // Every thread inherits the blocked signals; main waits for them with sigwait. SIGUSR1 is
    // how the hand-over thread says the ports are gone to a new process.
    const sigset_t stop_signals = examples::block_stop_signals({SIGUSR1});
    // --takeover-go sigusr2: the go-ahead, blocked here (before any thread) and waited for.
    sigset_t go_signal;
    sigemptyset(&go_signal);
    sigaddset(&go_signal, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &go_signal, nullptr);

    const bool taking_over = !opts->takeover.empty();
    // A new process prepares in the background (before any thread: they inherit it), so that
    // its start-up takes no CPU from the data path it replaces; commit brings it back (or, on a
    // machine without an idle CPU, a watchdog after 250 ms).
    runtime::background_preparation background;
    if (taking_over) background = runtime::background_preparation(std::chrono::milliseconds(250));
    const std::optional<runtime::thread_policy> after_commit = background.policy();
    std::vector<std::unique_ptr<port>> ports;
    std::vector<std::string> descriptions;
    for (const auto& spec : opts->ports) {
        device::net::net_port::options o;
        o.queue_pairs = opts->queues;
        o.mac[5] = static_cast<std::uint8_t>(ports.size() + 1);
        const std::size_t index = ports.size();
        descriptions.push_back(describe(spec));
        // A port over an opened transport, or why it could not be opened (false: exit 1).
        auto add = [&]<class Transport>(expected<Transport, transport::error> t) {
            if (!t) {
                fmt::print(stderr, "vvu-forward: {}: {}\n", spec.path, t.error().message());
                return false;
            }
            ports.push_back(std::make_unique<server_port<Transport>>(std::move(*t), o, index));
            return true;
        };
        using k = options::port_spec::kind;
        bool added = true;
        if (spec.how == k::unix_client || (taking_over && spec.how == k::unix_server)) {
            // Taking over: a placeholder that opens nothing; the hand-over brings the sockets.
            ports.push_back(std::make_unique<server_port<transport::unix_socket>>(transport::unix_socket::connect(spec.path), o, index));
        } else if (spec.how == k::unix_server) {
            added = add(transport::unix_socket::listen(spec.path));
        } else if (spec.how == k::vfio) {
            added = add(transport::vfio_pci::open(spec.path));
        } else if (taking_over) {
            // The hand-over brings the vfio-user connection and the driver's state.
            ports.push_back(std::make_unique<server_port<transport::vvu_pci>>(transport::vvu_pci::unattached(spec.path), o, index));
        } else {
            added = add(transport::vvu_pci::connect(spec.path));
        }
        if (!added) return 1;
    }

    std::vector<device::net::net_port*> devices;
    std::vector<runtime::handover_port*> handover_ports;
    for (auto& p : ports) {
        devices.push_back(&p->device());
        handover_ports.push_back(&p->handover());
    }
    // The data path: an engine and a polling thread per --threads, each on its share of the
    // queue pairs.
    examples::txonly_template_check txonly_template(opts->frame_size);
    std::vector<std::unique_ptr<device::net::forwarder>> engines;
    std::vector<std::unique_ptr<runtime::poller<device::net::forwarder>>> pollers;
    for (std::uint32_t t = 0; t < opts->threads; ++t) {
        auto& fwd = *engines.emplace_back(std::make_unique<device::net::forwarder>(
            devices, opts->mode, opts->frame_size, device::net::queue_share{t, opts->threads}));
        if (opts->copy_received) fwd.copy_received();
        if (opts->check_txonly_template)
            fwd.check_received([&txonly_template, reported = false](device::net::frame f) mutable {
                const auto why = txonly_template.mismatch(f);
                if (why && !std::exchange(reported, true))
                    fmt::print(stderr, "vvu-forward: first frame unlike testpmd's txonly template: {} (headers {})\n", *why,
                               examples::txonly_template_check::headers_hex(f));
                return !why;
            });
        runtime::poller_options po;
        po.cpu = opts->cpus.empty() ? -1 : opts->cpus[t % opts->cpus.size()];
        po.event_mode = opts->event_mode;
        po.idle = std::chrono::microseconds(opts->idle_us);
        po.idle_sleep = std::chrono::microseconds(opts->idle_sleep_us);
        pollers.push_back(std::make_unique<runtime::poller<device::net::forwarder>>(fwd, po));
    }
    auto busy = [&] {
        std::vector<runtime::busy_time> each;
        for (const auto& p : pollers) each.push_back(p->busy());
        return each;
    };

    runtime::data_path_control data_path;
    data_path.pause = [&](std::chrono::milliseconds t) {
        for (std::size_t i = 0; i < pollers.size(); ++i) {
            if (pollers[i]->pause(t)) continue;
            while (i-- > 0) pollers[i]->resume();
            return false;
        }
        return true;
    };
    data_path.resume = [&] {
        for (auto& p : pollers) {
            if (after_commit) (void)p->set_policy(*after_commit);
            p->resume();
        }
    };
    // One engine's state as it always was; several: a count and each one's (a new process with
    // another --threads refuses it).
    constexpr std::uint32_t threads_state_magic = 0x53524854; // "THRS"
    data_path.save_state = [&] {
        if (engines.size() == 1) return engines.front()->save_state();
        byte_writer w;
        w.put<std::uint32_t>(threads_state_magic);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(engines.size()));
        for (const auto& e : engines) w.put_bytes(e->save_state());
        return w.take();
    };
    data_path.load_state = [&](std::span<const std::byte> b) {
        if (engines.size() == 1) return engines.front()->load_state(b);
        byte_reader r(b);
        if (r.get<std::uint32_t>() != threads_state_magic || r.get<std::uint32_t>() != engines.size()) return false;
        for (auto& e : engines)
            if (!e->load_state(r.get_bytes(b.size())) || !r.ok()) return false;
        return r.done();
    };
    for (auto& p : ports) p->guard_data_path(data_path);

    // Taking over: the forwarding threads exist (created, pinned) but hold until the sessions
    // are ours, so resuming the rings (data_path.resume, at commit) is a wake-up.
    for (auto& p : pollers)
        if (auto w = p->start(taking_over); !w.empty()) fmt::print(stderr, "vvu-forward: {}\n", w);
    std::optional<unique_fd> inherited_control;
    if (taking_over) {
        inherited_control = examples::take_over_sessions(
            "vvu-forward", fmt::format("{} ports", handover_ports.size()), opts->takeover, handover_ports, descriptions,
            data_path, [&] {
                if (opts->takeover_on_signal) {
                    fmt::print(stderr, "vvu-forward: ready to take over from {}: waiting for SIGUSR2\n", opts->takeover);
                    int sig = 0;
                    sigwait(&go_signal, &sig);
                }
                // The outage starts: back to the normal policy (take_over then makes the thread
                // urgent where it may), and no watchdog to change it meanwhile.
                background.finish();
                if (background.expired())
                    fmt::print(stderr, "vvu-forward: no idle CPU: the take-over was prepared in the foreground after 250 ms\n");
            });
        if (!inherited_control) return 1;
    }
    for (auto& p : ports) p->start();

    // Live update: a thread serves take-over attempts; one that succeeds ends this process.
    std::atomic<bool> handover_done{false}; // before `control`, whose thread sets it
    examples::handover_service control;
    if (!opts->control.empty()) {
        const pthread_t main_thread = pthread_self();
        const bool serving = control.start("vvu-forward", opts->control, std::move(inherited_control),
                                           handover_ports, descriptions, data_path, [&handover_done, main_thread] {
                                               handover_done.store(true);
                                               pthread_kill(main_thread, SIGUSR1);
                                           });
        if (!serving) {
            for (auto& p : ports) p->stop();
            return 1;
        }
    }

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
                    fmt::print(stderr, "{}\n", stats_json(i, ports[i]->device()));
                fmt::print(stderr, "{}\n", data_path_json(busy()));
            }
        });
    }

    int sig = 0;
    for (;;) {
        sigwait(&stop_signals, &sig);
        if (sig != SIGUSR1 || handover_done.load()) break; // a stray SIGUSR1 is not a hand-over
    }
    if (handover_done.load()) runtime::step_aside(); // winding down must not slow the new process

    stats_running = false;
    if (stats.joinable()) stats.join();
    control.stop();
    const auto& handed_over = control.handed_over();
    if (!handed_over) {
        for (auto& p : ports) p->stop();
    } // else: the ports are retired, their sessions live on in the new process
    for (auto& p : pollers) p->stop(); // after a hand-over they are paused and end without another pass
    for (std::size_t i = 0; i < ports.size(); ++i) {
        std::optional<device::net::forwarder::check_counts> checks;
        if (opts->check_txonly_template) {
            checks.emplace();
            for (const auto& e : engines) {
                checks->checked += e->checks(i).checked;
                checks->failed += e->checks(i).failed;
            }
        }
        fmt::print("{}\n", stats_json(i, ports[i]->device(), checks));
    }
    fmt::print("{}\n", data_path_json(busy()));
    if (handed_over) {
        const auto& h = *handed_over;
        fmt::print("{{\"handed_over\":true,\"paused_us\":{},\"park_us\":{},\"pause_us\":{},\"send_us\":{},\"import_us\":{}}}\n",
                   h.paused.count(), h.park.count(), h.pause.count(), h.send.count(), h.import.count());
        fmt::print(stderr, "vvu-forward: handed {} ports over ({} us from pause to commit)\n", handed_over->ports,
                   handed_over->paused.count());
    }
    std::fflush(stdout);
    return 0;
}
