// vvu-rng-server: a vhost-user back-end for a virtio entropy device (device::rng), the example
// that docs/write-a-backend.md walks through. The whole back-end is three objects: the port
// (runtime::server: transport + device + state machine, on its control thread), the data path
// (runtime::poller calling device::rng::poll), and the handshake between them.
#include "../common/command_line.hpp"
#include "../common/stop_signals.hpp"

#include <vvu/device/rng.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>
#include <vvu/transport/vvu_pci.hpp>

#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <string>

namespace {

using namespace vvu;

constexpr const char* usage_text = R"(usage: vvu-rng-server --port unix:PATH|vvu:PATH [--stats SECONDS]

A vhost-user back-end for a virtio-rng device: the guest's random bytes come from getrandom(2).
  --port unix:PATH   listen on PATH; a front-end (QEMU's vhost-user-rng-pci) connects
  --port vvu:PATH    serve the front-end of a vvu-device whose PCI function is at PATH
  --stats SECONDS    print the counters to stderr every SECONDS
On SIGINT or SIGTERM it prints {"requests":N,"bytes":N} on stdout and exits 0.
)";

std::string stats_json(const device::rng& d) {
    return fmt::format(R"({{"requests":{},"bytes":{}}})", d.requests(), d.bytes());
}

// Serves one port until SIGINT or SIGTERM; the same code for either transport.
template <class Transport>
int serve(Transport transport, unsigned stats_seconds, const sigset_t& stop_signals) {
    runtime::server<Transport, device::rng> port(std::move(transport));
    runtime::poller_options po;
    po.event_mode = true; // sleep on the kick eventfd between requests: entropy is not a hot path
    runtime::poller<device::rng> data_path(port.device(), po);
    // The control thread holds the data path whenever it starts or stops the vring.
    port.guard_data_path([&](auto timeout) { return data_path.pause(timeout); }, [&] { data_path.resume(); });
    port.on_event([](const runtime::session_event& e) {
        using kind = runtime::session_event::kind;
        if (e.what == kind::connected) fmt::print(stderr, "vvu-rng-server: front-end connected\n");
        else if (e.what == kind::ended) fmt::print(stderr, "vvu-rng-server: session ended: {}\n", e.text);
        else fmt::print(stderr, "vvu-rng-server: {}\n", e.text);
    });
    port.start();
    data_path.start();

    const timespec period{stats_seconds != 0 ? static_cast<time_t>(stats_seconds) : 3600, 0};
    while (sigtimedwait(&stop_signals, nullptr, &period) < 0)
        if (errno == EAGAIN && stats_seconds != 0) fmt::print(stderr, "{}\n", stats_json(port.device()));

    port.stop();      // ends the session: the vring goes back to the state machine
    data_path.stop();
    fmt::print("{}\n", stats_json(port.device()));
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::string port;
    unsigned stats_seconds = 0;
    examples::command_line args(argc, argv);
    while (const auto arg = args.next()) {
        if (*arg == "--port" && args.text(port)) continue;
        if (*arg == "--stats" && args.number(stats_seconds)) continue;
        if (*arg == "--help" || *arg == "-h") {
            std::fputs(usage_text, stdout);
            return 0;
        }
        fmt::print(stderr, "vvu-rng-server: bad option {} (see --help)\n", *arg);
        return 2;
    }

    // Blocked in every thread (they inherit it); main takes them with sigtimedwait.
    const sigset_t stop_signals = examples::block_stop_signals();

    const auto colon = port.find(':');
    const std::string kind = port.substr(0, colon), path = colon == std::string::npos ? "" : port.substr(colon + 1);
    std::string error = "--port unix:PATH or --port vvu:PATH is needed (see --help)";
    if (kind == "unix" && !path.empty()) {
        auto t = transport::unix_socket::listen(path);
        if (t) return serve(std::move(*t), stats_seconds, stop_signals);
        error = path + ": " + t.error().message();
    } else if (kind == "vvu" && !path.empty()) {
        auto t = transport::vvu_pci::connect(path);
        if (t) return serve(std::move(*t), stats_seconds, stop_signals);
        error = path + ": " + t.error().message();
    }
    fmt::print(stderr, "vvu-rng-server: {}\n", error);
    return 1;
}
