// vvu-device: the virtio-vhost-user device as a process. A front-end (QEMU, DPDK virtio-user,
// vvu-traffic) connects to --vhost-user; a VVU driver (vvu-forward --port vvu:PATH) attaches
// to --pci over vfio-user. Logs connections and disconnects to stderr; on SIGINT/SIGTERM exits
// 0 and prints its counters as one JSON line.
#include <vvu/vvu/device_model.hpp>

#include "../common/command_line.hpp"
#include "../common/stop_signals.hpp"

#include <fmt/format.h>

#include <signal.h>

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <thread>

namespace {

constexpr const char* usage = R"(usage: vvu-device --vhost-user PATH --pci PATH [options]

  --vhost-user PATH   listen on PATH for the front-end's vhost-user connection
  --pci PATH          listen on PATH for the driver's vfio-user connection
  --max-queues N      vhost-user vrings the device serves (1-1024; default 64)
  --uuid HEX          32 hex digits for the device config's uuid (default all zero)
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

    // Signals are taken by a waiting thread, not a handler: the device loop is told to stop.
    const sigset_t stop_signals = vvu::examples::block_stop_signals();

    auto device = vvu::vvu_device::device_model::create(std::move(o));
    if (!device) {
        fmt::print(stderr, "vvu-device: {}\n", device.error());
        return 1;
    }
    std::thread waiter([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        (*device)->stop();
    });
    auto r = (*device)->run();
    if (!r) {
        fmt::print(stderr, "vvu-device: {}\n", r.error());
        ::kill(::getpid(), SIGTERM); // releases the waiter
        waiter.join();
        return 1;
    }
    waiter.join();
    const auto c = (*device)->counters();
    fmt::print("{{\"frontends\":{},\"disconnects\":{},\"drivers\":{},\"to_driver\":{},\"to_frontend\":{},"
               "\"backend_requests\":{},\"kicks\":{},\"doorbells\":{},\"config_interrupts\":{},"
               "\"driver_restarts\":{},\"replayed\":{}}}\n",
               c.frontends, c.disconnects, c.drivers, c.to_driver, c.to_frontend, c.backend_requests, c.kicks,
               c.doorbells, c.config_interrupts, c.driver_restarts, c.replayed);
    std::fflush(stdout);
    return 0;
}
