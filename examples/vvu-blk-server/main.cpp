// vvu-blk-server: a vhost-user-blk back-end serving an image file or a block device — one
// runtime::server running device::blk::blk_device over a UNIX socket or a VVU function, and a
// runtime::poller running its data path.
#include "../common/command_line.hpp"
#include "../common/stop_signals.hpp"

#include <vvu/device/blk_device.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>
#include <vvu/transport/vvu_pci.hpp>

#include <fmt/format.h>


#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

namespace {

using namespace vvu;

constexpr const char* usage_text = R"(usage: vvu-blk-server --image FILE --port KIND:PATH [options]

A vhost-user-blk back-end (virtio-blk) over an image file or a block device.

  --image FILE      the disk: a regular file (its size, rounded down to 512-byte sectors, is the
                    capacity) or a block device
  --port unix:PATH  listen on PATH; a front-end (QEMU vhost-user-blk-pci, vvu-blk) connects
  --port vvu:PATH   attach to a vvu-device's PCI function at PATH (vfio-user) and serve the
                    front-end connected to that device (virtio-vhost-user)
  --read-only       offer VIRTIO_BLK_F_RO; writes, discards and write-zeroes fail with IOERR
  --queues N        request queues (default 1, at most 64)
  --serial TEXT     the device id GET_ID returns (default vvu-blk; at most 20 bytes are sent)
  --poll MODE       event (default): poll while requests flow, sleep on kicks when idle;
                    busy: poll without pause (a core of its own, lowest latency)
  --cpu N           pin the data-path thread to CPU N
  --help            this text

It serves one front-end at a time, the next one when that one goes. On SIGINT or SIGTERM it
prints one JSON object on stdout and exits 0:
  {"requests":..,"read_bytes":..,"written_bytes":..,"flushes":..,"io_errors":..,
   "unsupported":..,"no_status":..}
)";

struct options {
    std::string image, port;
    bool read_only = false;
    bool event_mode = true;
    int cpu = -1;
    device::blk::blk_device::options device;
};

std::optional<options> parse(int argc, char** argv) {
    options o;
    auto fail = [](const std::string& why) {
        fmt::print(stderr, "vvu-blk-server: {}\n(see vvu-blk-server --help)\n", why);
        return std::nullopt;
    };
    examples::command_line args(argc, argv);
    while (const auto next = args.next()) {
        const std::string_view arg = *next;
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        }
        if (arg == "--read-only") {
            o.read_only = true;
            continue;
        }
        const auto v = args.next();
        if (!v) return fail(fmt::format("{} needs a value", arg));
        if (arg == "--image") o.image = *v;
        else if (arg == "--port") o.port = *v;
        else if (arg == "--queues") {
            if (!examples::parse_number(*v, o.device.queues) || o.device.queues == 0 || o.device.queues > 64)
                return fail("--queues takes 1..64");
        } else if (arg == "--serial") o.device.serial = *v;
        else if (arg == "--poll") {
            if (*v == "busy") o.event_mode = false;
            else if (*v != "event") return fail("--poll is event or busy");
        } else if (arg == "--cpu") {
            if (!examples::parse_number(*v, o.cpu) || o.cpu < 0 || o.cpu >= CPU_SETSIZE) return fail("--cpu takes a CPU number");
        } else return fail(fmt::format("unknown option {}", arg));
    }
    if (o.image.empty()) return fail("--image is needed");
    if (!o.port.starts_with("unix:") && !o.port.starts_with("vvu:")) return fail("--port is unix:PATH or vvu:PATH");
    return o;
}

// Serves until SIGINT/SIGTERM, then prints the counters.
template <class Transport>
int serve(Transport t, device::blk::image img, const options& o, const sigset_t& stop_signals) {
    using device::blk::blk_device;
    runtime::server<Transport, blk_device> port(std::move(t), std::move(img), o.device);
    port.on_event([](const runtime::session_event& e) {
        using kind = runtime::session_event::kind;
        if (e.what == kind::connected) fmt::print(stderr, "vvu-blk-server: front-end connected\n");
        else if (e.what == kind::ended) fmt::print(stderr, "vvu-blk-server: session ended: {}\n", e.text);
        else fmt::print(stderr, "vvu-blk-server: {}\n", e.text);
    });
    runtime::poller_options po;
    po.cpu = o.cpu;
    po.event_mode = o.event_mode;
    runtime::poller<blk_device> data_path(port.device(), po);
    port.guard_data_path([&](std::chrono::milliseconds timeout) { return data_path.pause(timeout); },
                         [&] { data_path.resume(); });
    if (auto w = data_path.start(); !w.empty()) fmt::print(stderr, "vvu-blk-server: {}\n", w);
    port.start();

    int sig = 0;
    sigwait(&stop_signals, &sig);

    port.stop();
    data_path.stop();
    const auto s = port.device().stats();
    fmt::print(R"({{"requests":{},"read_bytes":{},"written_bytes":{},"flushes":{},"io_errors":{},"unsupported":{},"no_status":{}}})"
               "\n",
               s.requests, s.read_bytes, s.written_bytes, s.flushes, s.io_errors, s.unsupported, s.no_status);
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const auto opts = parse(argc, argv);
    if (!opts) return 2;
    const sigset_t stop_signals = examples::block_stop_signals();

    auto img = device::blk::image::open(opts->image, opts->read_only);
    if (!img) {
        fmt::print(stderr, "vvu-blk-server: {}: {}\n", opts->image, img.error().message());
        return 1;
    }
    fmt::print(stderr, "vvu-blk-server: {}: {} sectors{}\n", opts->image, img->capacity_sectors(), opts->read_only ? ", read-only" : "");
    const std::string path = opts->port.substr(opts->port.find(':') + 1);
    if (opts->port.starts_with("unix:")) {
        auto t = transport::unix_socket::listen(path);
        if (!t) {
            fmt::print(stderr, "vvu-blk-server: {}: {}\n", path, t.error().message());
            return 1;
        }
        return serve(std::move(*t), std::move(*img), *opts, stop_signals);
    }
    auto t = transport::vvu_pci::connect(path);
    if (!t) {
        fmt::print(stderr, "vvu-blk-server: {}: {}\n", path, t.error().message());
        return 1;
    }
    return serve(std::move(*t), std::move(*img), *opts, stop_signals);
}
