// vvu-device: the virtio-vhost-user device as a process. A front-end (QEMU, DPDK virtio-user,
// vvu-traffic) connects to --vhost-user; a VVU driver (vvu-forward --port vvu:PATH) attaches
// to --pci over vfio-user. Logs connections and disconnects to stderr; on SIGINT/SIGTERM exits
// 0 and prints its counters as one JSON line. With --control, a new vvu-device started with
// --takeover takes everything over (the device's live update); the old one then prints its
// JSON and exits 0.
#include <vvu/runtime/live_update.hpp>
#include <vvu/runtime/scheduling.hpp>
#include <vvu/vvu/device_model.hpp>

#include "../common/command_line.hpp"
#include "../common/live_update.hpp"
#include "../common/stop_signals.hpp"

#include <fmt/format.h>

#include <signal.h>
#include <sys/resource.h>

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <optional>
#include <thread>

namespace {

constexpr const char* usage = R"(usage: vvu-device --vhost-user PATH --pci PATH [options]

  --vhost-user PATH   listen on PATH for the front-end's vhost-user connection
  --pci PATH          listen on PATH for the driver's vfio-user connection
  --max-queues N      vhost-user vrings the device serves (1-1024; default 64)
  --uuid HEX          32 hex digits for the device config's uuid (default all zero)
  --control PATH      live update: listen on PATH for a new vvu-device that takes over
  --takeover PATH     live update: take the device over — both sockets, the driver's
                      vfio-user connection, the front-end's session — from the vvu-device
                      whose --control socket is PATH (same --vhost-user, --pci and
                      --max-queues). Neither peer sees a message or a disconnect.
  --quiet             no event log on stderr
)";

int fail(const std::string& why) {
    fmt::print(stderr, "vvu-device: {}\n{}", why, usage);
    return 2;
}

bool parse_uuid(std::string_view s, std::array<std::uint8_t, 16>& out) {
    std::string hex;
    for (char c : s)
        if (c != '-') hex.push_back(c);
    if (hex.size() != 32) return false;
    for (std::size_t i = 0; i < 16; ++i) {
        unsigned v = 0;
        auto [end, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, v, 16);
        if (ec != std::errc{} || end != hex.data() + 2 * i + 2) return false;
        out[i] = static_cast<std::uint8_t>(v);
    }
    return true;
}

} // namespace

int main(int argc, char** argv) {
    vvu::vvu_device::device_options o;
    bool quiet = false;
    std::string control_path, takeover_path;
    vvu::examples::command_line args(argc, argv);
    while (auto a = args.next()) {
        if (*a == "--vhost-user") {
            if (!args.text(o.vhost_user_path)) return fail("--vhost-user needs a path");
        } else if (*a == "--pci") {
            if (!args.text(o.pci_path)) return fail("--pci needs a path");
        } else if (*a == "--max-queues") {
            if (!args.number(o.max_queues)) return fail("--max-queues needs a number");
        } else if (*a == "--uuid") {
            const auto v = args.next();
            if (!v || !parse_uuid(*v, o.uuid)) return fail("--uuid needs 32 hex digits");
        } else if (*a == "--control") {
            if (!args.text(control_path)) return fail("--control needs a path");
        } else if (*a == "--takeover") {
            if (!args.text(takeover_path)) return fail("--takeover needs a path");
        } else if (*a == "--quiet") {
            quiet = true;
        } else if (*a == "--help" || *a == "-h") {
            fmt::print("{}", usage);
            return 0;
        } else {
            return fail(fmt::format("unknown option '{}'", *a));
        }
    }
    if (o.vhost_user_path.empty() || o.pci_path.empty()) return fail("--vhost-user and --pci are required");
    if (!quiet) o.log = [](std::string_view line) { fmt::print(stderr, "vvu-device: {}\n", line); };

    // The device holds an fd per kick, call and error notifier of every vring (3 × up to 1 024),
    // per memory region and per DMA map: more than the default soft limit of 1 024 allows.
    if (rlimit l{}; ::getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
        l.rlim_cur = l.rlim_max;
        (void)::setrlimit(RLIMIT_NOFILE, &l);
    }
    const bool taking_over = !takeover_path.empty();
    o.listen = !taking_over; // the sockets come with the hand-over

    // Signals are taken by a waiting thread, not a handler: the device loop is told to stop.
    const sigset_t stop_signals = vvu::examples::block_stop_signals();
    // A new process prepares in the background (vvu-forward does the same, live-update.md).
    vvu::runtime::background_preparation background;
    if (taking_over) background = vvu::runtime::background_preparation(std::chrono::milliseconds(250));

    auto created = vvu::vvu_device::device_model::create(std::move(o));
    if (!created) {
        fmt::print(stderr, "vvu-device: {}\n", created.error());
        return 1;
    }
    auto& device = **created;
    // The device's loop is its whole data path: parking it (its handover port) pauses everything.
    vvu::runtime::data_path_control data_path;
    data_path.pause = [](std::chrono::milliseconds) { return true; };
    data_path.resume = [] {};
    const std::vector<vvu::runtime::handover_port*> ports{&device.handover()};
    const std::vector<std::string> descriptions{device.handover_description()};

    std::optional<vvu::unique_fd> inherited_control;
    if (taking_over) {
        inherited_control = vvu::examples::take_over_sessions(
            "vvu-device", "the device", takeover_path, ports, descriptions, data_path, [&] {
                background.finish();
                if (background.expired())
                    fmt::print(stderr, "vvu-device: no idle CPU: the take-over was prepared in the foreground after 250 ms\n");
            });
        if (!inherited_control) return 1;
    }

    // Live update: a thread serves take-over attempts; one that succeeds makes run() return.
    vvu::examples::handover_service control;
    if (!control_path.empty() &&
        !control.start("vvu-device", control_path, std::move(inherited_control), ports, descriptions, data_path, {}))
        return 1;

    std::atomic<bool> signalled{false};
    std::thread waiter([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        signalled = true;
        device.stop();
    });
    auto r = device.run();
    if (!signalled) ::kill(::getpid(), SIGTERM); // releases the waiter
    waiter.join();
    control.stop();
    const auto& handed_over = control.handed_over();
    if (!r) {
        fmt::print(stderr, "vvu-device: {}\n", r.error());
        return 1;
    }
    const auto c = device.counters();
    fmt::print("{{\"frontends\":{},\"disconnects\":{},\"drivers\":{},\"to_driver\":{},\"to_frontend\":{},"
               "\"backend_requests\":{},\"kicks\":{},\"doorbells\":{},\"config_interrupts\":{},"
               "\"driver_restarts\":{},\"replayed\":{}}}\n",
               c.frontends, c.disconnects, c.drivers, c.to_driver, c.to_frontend, c.backend_requests, c.kicks,
               c.doorbells, c.config_interrupts, c.driver_restarts, c.replayed);
    if (handed_over) {
        fmt::print("{{\"handed_over\":true,\"paused_us\":{}}}\n", handed_over->paused.count());
        fmt::print(stderr, "vvu-device: handed the device over ({} us from pause to commit)\n", handed_over->paused.count());
    }
    std::fflush(stdout);
    return 0;
}
