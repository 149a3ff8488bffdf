// Live update by hand-over: a running back-end gives every port's session — sockets, memory,
// notifiers, ring positions, device state — to a freshly started process of the same
// configuration, which resumes the rings exactly where the old one stopped. The front-ends see
// no message and no disconnect. docs/live-update.md describes the exchange and the bytes.
//
// Old process:
//   runtime::handover_listener hl = *runtime::handover_listener::listen(path, ports, data_path);
//   auto r = hl.run();          // serves take-over attempts; returns once one succeeded
//   // r: the ports are retired, the data path is paused for good: print stats and exit 0
// New process (ports constructed but not started):
//   auto r = runtime::take_over(path, ports, data_path);
//   // r: the ports hold the sessions and the data path runs again (data_path.resume at
//   // commit): start the ports' control threads
//
// The exchange (records of transport::handover_socket):
//   new -> old  hello      version is in every record; payload: the new process's port list
//   old -> new  refuse     why (and the old process serves on), or:
//   old -> new  memory ×N  each port's memory regions (descriptions and fds), then memory_end
//   new         maps them with their page tables filled, while the old process still serves
//   new -> old  ready
//   old         parks every port's control thread, pauses the data path at a burst boundary,
//               exports every port (fds duplicated: nothing changes on its side)
//   old -> new  port ×N    each port's image; its fds, more than fit one record in port_fds
//   old -> new  app_state  the application's own state (e.g. a MAC table), then sent_all
//                          with the control socket itself (the new process serves the next update)
//   new         imports every port (maps memory, builds rings) without running anything
//   new -> old  accept     or abort(why): the old process resumes and serves on
//   old -> new  commit     the old process lets go of everything and will never touch the rings
//                          again; only now does the new one start. If the old process gets no
//                          accept in time, or cannot send commit, it resumes; the new process,
//                          without commit, exits — so exactly one process runs the rings.
#pragma once

#include <vvu/runtime/error.hpp>
#include <vvu/runtime/handover_port.hpp>
#include <vvu/runtime/scheduling.hpp>
#include <vvu/transport/handover_socket.hpp>
#include <vvu/transport/unix_listener.hpp>
#include <vvu/util/byte_io.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace vvu::runtime {

// What a live update needs of the application besides its ports: its data path (paused at a
// pass boundary and resumed, e.g. runtime::poller) and its own state, if any.
struct data_path_control {
    std::function<bool(std::chrono::milliseconds)> pause; // false: could not pause in time
    std::function<void()> resume; // old process: after an abort; new process: at commit
    std::function<std::vector<std::byte>()> save_state;                // old process, while paused
    std::function<bool(std::span<const std::byte>)> load_state;        // new process
};

struct handover_options {
    std::chrono::milliseconds hello_timeout{2000};  // old: the new process says hello
    std::chrono::milliseconds park_timeout{1000};   // old: control threads reach a boundary
    std::chrono::milliseconds accept_timeout{5000}; // old: the new process imports everything
    std::chrono::milliseconds commit_timeout{10000}; // new: the old process lets go
    // New: heap touched before the outage (warm_heap), so that importing allocates from
    // resident pages; 0 leaves the heap alone.
    std::size_t warm_heap_bytes = 4u << 20;
    // New: called once all that can be done while the old process serves is done (connected,
    // port lists agreed, memory mapped, heap warm), right before `ready` starts the outage —
    // an operator's go-ahead, so that the outage holds none of the new process's start-up
    // (vvu-forward --takeover-go sigusr2 waits for a signal here). It must return within the
    // old process's accept_timeout, or the old process gives up and serves on.
    std::function<void()> before_outage;
};

// What a successful hand-over measured (old process: from parking the ports to commit sent;
// new process: from connecting to commit received), and, in the new process, the old one's
// control socket (so that it can serve the next update on the same path).
struct handover_result {
    std::chrono::microseconds paused{0};
    std::size_t ports = 0;
    unique_fd control;
    // Old process: where the time went — parking the control threads, pausing the data path,
    // exporting and sending the sessions, waiting for the new process to import them.
    std::chrono::microseconds park{0}, pause{0}, send{0}, import{0};
};

namespace handover_record {
enum : std::uint16_t { hello = 1, refuse, port, port_fds, app_state, sent_all, accept, abort, commit, memory, memory_end, ready };
} // namespace handover_record

// Touches `bytes` of heap and gives it back to the allocator, which keeps it: a process about
// to allocate inside an outage (the new process of a live update imports its sessions there)
// then reuses resident pages instead of faulting fresh ones in — a page fault apiece, measured
// at 8-60 us on this project's VM, 1-2 ms for an import. With glibc: allocated in pieces below
// the mmap threshold (heap, not mappings of their own), and the heap's top kept
// (M_TRIM_THRESHOLD raised to `bytes` at least). Elsewhere it does nothing.
// The pages are filled in by MADV_POPULATE_WRITE (Linux 5.14), one call per piece, not by a
// fault per page: 8 MiB touched page by page took about 100 ms of CPU there, stolen from the
// busy pollers of the data path the hand-over means to spare.
inline void warm_heap(std::size_t bytes) {
#ifdef __GLIBC__
    constexpr std::size_t piece = 120u << 10; // below the default 128 KiB mmap threshold
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    (void)::mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min<std::size_t>(2 * bytes, INT_MAX)));
    std::vector<void*> pieces;
    pieces.reserve(bytes / piece);
    for (std::size_t done = 0; done < bytes; done += piece) {
        void* p = std::malloc(piece);
        if (p == nullptr) break;
        const auto first = (reinterpret_cast<std::uintptr_t>(p) + page - 1) & ~(page - 1);
        const auto last = (reinterpret_cast<std::uintptr_t>(p) + piece) & ~(page - 1);
        if (last <= first || ::madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE) != 0)
            std::memset(p, 0, piece); // an older kernel: fault the pages in
        pieces.push_back(p);
    }
    for (void* p : pieces) std::free(p);
#else
    (void)bytes;
#endif
}

namespace detail {

inline std::vector<std::byte> string_payload(std::string_view s) {
    byte_writer w;
    w.put_string(s);
    return w.take();
}
inline std::string string_of(std::span<const std::byte> payload) {
    byte_reader r(payload);
    auto s = r.get_string(4096);
    return r.done() ? s : std::string("(malformed reason)");
}
inline error fail(errc e, std::string text) { return error{make_error_code(e), std::move(text)}; }

} // namespace detail

class handover_listener {
public:
    // Listens on `path` for take-over attempts. `descriptions[i]` names ports[i] ("unix:/tmp/a");
    // a new process must list the same ports in the same order.
    static expected<handover_listener, error> listen(const std::string& path, std::vector<handover_port*> ports,
                                                     std::vector<std::string> descriptions, data_path_control data_path,
                                                     handover_options o = {}) {
        auto l = transport::unix_listener::listen(path);
        if (!l) return unexpected(detail::fail(errc::transport_failed, fmt::format("control socket {}: {}", path, l.error().message())));
        return handover_listener(std::move(*l), std::move(ports), std::move(descriptions), std::move(data_path), o);
    }
    // The same, on a control socket a previous process handed over (handover_result::control).
    static expected<handover_listener, error> adopt(const std::string& path, unique_fd fd, std::vector<handover_port*> ports,
                                                    std::vector<std::string> descriptions, data_path_control data_path,
                                                    handover_options o = {}) {
        auto l = transport::unix_listener::adopt(path, std::move(fd));
        if (!l) return unexpected(detail::fail(errc::transport_failed, fmt::format("control socket {}: {}", path, l.error().message())));
        return handover_listener(std::move(*l), std::move(ports), std::move(descriptions), std::move(data_path), o);
    }

    // Serves take-over attempts one at a time until one succeeds (the ports are then retired
    // and the data path stays paused), or stop() (errc::stopped). A failed attempt is logged
    // through on_log and changes nothing.
    expected<handover_result, error> run() {
        for (;;) {
            pollfd p[2] = {{listener_.native_handle(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
            if (::poll(p, 2, -1) < 0 && errno != EINTR) return unexpected(detail::fail(errc::transport_failed, "poll"));
            if ((p[1].revents & POLLIN) != 0) return unexpected(detail::fail(errc::stopped, "stopped"));
            if ((p[0].revents & POLLIN) == 0) continue;
            auto fd = listener_.try_accept();
            if (!fd || !*fd) continue;
            transport::handover_socket peer(std::move(*fd));
            auto r = serve(peer);
            if (r) return r;
            log(fmt::format("take-over refused: {}", r.error().message()));
        }
    }

    void stop() noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    }
    void on_log(std::function<void(const std::string&)> f) { log_ = std::move(f); }

private:
    handover_listener(transport::unix_listener l, std::vector<handover_port*> ports, std::vector<std::string> descriptions,
                      data_path_control d, handover_options o)
        : listener_(std::move(l)), ports_(std::move(ports)), descriptions_(std::move(descriptions)), data_path_(std::move(d)),
          options_(o), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

    void log(const std::string& s) const {
        if (log_) log_(s);
    }

    // Tells the new process why not (best effort) and returns the error.
    unexpected<error> refuse(transport::handover_socket& peer, errc e, std::string why) {
        const auto payload = detail::string_payload(why);
        (void)peer.send(handover_record::refuse, payload, {}, std::chrono::milliseconds(200));
        return unexpected(detail::fail(e, std::move(why)));
    }

    expected<handover_result, error> serve(transport::handover_socket& peer) {
        auto hello = peer.receive(options_.hello_timeout);
        if (!hello) {
            const bool version = hello.error().code == transport::errc::unsupported_version;
            return refuse(peer, version ? errc::refused : errc::protocol, "hello: " + hello.error().message());
        }
        if (hello->type != handover_record::hello || !hello->fds.empty())
            return refuse(peer, errc::protocol, fmt::format("expected hello, got record type {}", hello->type));
        byte_reader r(hello->payload);
        const auto n = r.get<std::uint32_t>();
        std::vector<std::string> theirs;
        for (std::uint32_t i = 0; i < n && i < 1024 && r.ok(); ++i) theirs.push_back(r.get_string(4096));
        if (!r.done()) return refuse(peer, errc::protocol, "malformed hello");
        if (theirs != descriptions_)
            return refuse(peer, errc::refused,
                          fmt::format("port lists differ: this process serves [{}], the new one asks for [{}]",
                                      fmt::join(descriptions_, ", "), fmt::join(theirs, ", ")));

        // The memory first, while everything runs: the new process maps it (page tables filled)
        // before the outage, which then holds no mmap and no page fault.
        if (auto m = send_memory(peer); !m) return unexpected(m.error());
        urgent_scope urgent; // `ready` came: the outage starts here

        // Control threads aside first (no ring starts or stops meanwhile), then the data path.
        const auto parked_from = std::chrono::steady_clock::now();
        std::size_t parked = 0;
        auto unwind = [&](bool data_path_paused) {
            if (data_path_paused) data_path_.resume();
            for (std::size_t i = 0; i < parked; ++i) ports_[i]->unpark();
        };
        for (; parked < ports_.size(); ++parked) {
            if (auto p = ports_[parked]->park(options_.park_timeout); !p) {
                unwind(false);
                return refuse(peer, errc::refused, fmt::format("port {}: {}", parked, p.error()));
            }
        }
        using clock = std::chrono::steady_clock;
        const auto paused_at = clock::now();
        auto since = [](clock::time_point t) { return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t); };
        handover_result result;
        result.park = since(parked_from);
        if (!data_path_.pause(options_.park_timeout)) {
            unwind(false);
            return refuse(peer, errc::refused, "the data path did not pause in time");
        }
        result.pause = since(paused_at);
        const auto sending_at = clock::now();
        std::vector<port_image> images;
        for (std::size_t i = 0; i < ports_.size(); ++i) {
            auto img = ports_[i]->export_port();
            if (!img) {
                unwind(true);
                return refuse(peer, errc::refused, fmt::format("port {}: {}", i, img.error()));
            }
            images.push_back(std::move(*img));
        }
        auto sent = send_all(peer, images);
        if (!sent) {
            unwind(true);
            return unexpected(sent.error());
        }
        result.send = since(sending_at);
        const auto waiting_at = clock::now();
        auto answer = peer.receive(options_.accept_timeout);
        result.import = since(waiting_at);
        if (!answer || answer->type != handover_record::accept) {
            unwind(true);
            if (!answer) return unexpected(detail::fail(errc::protocol, "waiting for accept: " + answer.error().message()));
            if (answer->type == handover_record::abort)
                return unexpected(detail::fail(errc::refused, "the new process aborted: " + detail::string_of(answer->payload)));
            return unexpected(detail::fail(errc::protocol, fmt::format("expected accept, got record type {}", answer->type)));
        }
        if (auto c = peer.send(handover_record::commit, {}, {}, std::chrono::milliseconds(500)); !c) {
            unwind(true);
            return unexpected(detail::fail(errc::protocol, "sending commit: " + c.error().message()));
        }
        // From here on the sessions — and the control socket — are the new process's.
        result.paused = since(paused_at);
        result.ports = ports_.size();
        // What is left to do here — letting go, exiting — must not take a CPU from the new
        // process resuming the rings (on a small machine it would, for milliseconds).
        urgent.end();
        step_aside();
        for (auto* p : ports_) p->retire();
        (void)listener_.release();
        return result;
    }

    expected<void, error> send_memory(transport::handover_socket& peer) {
        constexpr auto t = std::chrono::milliseconds(2000);
        for (std::uint32_t i = 0; i < ports_.size(); ++i) {
            auto m = ports_[i]->preview_memory(options_.park_timeout);
            if (!m) return refuse(peer, errc::refused, fmt::format("port {}: {}", i, m.error()));
            if (m->fds.size() > transport::handover_socket::max_fds) continue; // too many to preview: mapped at import
            std::vector<int> fds;
            for (auto& fd : m->fds) fds.push_back(fd.get());
            byte_writer w;
            w.put<std::uint32_t>(i);
            w.put_bytes(m->bytes);
            if (auto s = peer.send(handover_record::memory, w.bytes(), fds, t); !s)
                return unexpected(detail::fail(errc::protocol, "sending memory: " + s.error().message()));
        }
        if (auto s = peer.send(handover_record::memory_end, {}, {}, t); !s)
            return unexpected(detail::fail(errc::protocol, "sending memory: " + s.error().message()));
        auto ready = peer.receive(options_.accept_timeout);
        if (!ready) return unexpected(detail::fail(errc::protocol, "waiting for ready: " + ready.error().message()));
        if (ready->type == handover_record::abort)
            return unexpected(detail::fail(errc::refused, "the new process aborted: " + detail::string_of(ready->payload)));
        if (ready->type != handover_record::ready || !ready->fds.empty() || !ready->payload.empty())
            return unexpected(detail::fail(errc::protocol, fmt::format("expected ready, got record type {}", ready->type)));
        return {};
    }

    expected<void, error> send_all(transport::handover_socket& peer, std::vector<port_image>& images) {
        constexpr auto t = std::chrono::milliseconds(2000);
        auto failed = [](const transport::error& e) { return unexpected(detail::fail(errc::protocol, "sending: " + e.message())); };
        for (std::uint32_t i = 0; i < images.size(); ++i) {
            auto& img = images[i];
            std::vector<int> fds;
            for (auto& fd : img.fds) fds.push_back(fd.get());
            const std::size_t first = std::min(fds.size(), transport::handover_socket::max_fds);
            byte_writer w;
            w.put<std::uint32_t>(i);
            w.put<std::uint32_t>(static_cast<std::uint32_t>(fds.size()));
            w.put_bytes(img.bytes);
            if (auto s = peer.send(handover_record::port, w.bytes(), std::span(fds).first(first), t); !s) return failed(s.error());
            for (std::size_t at = first; at < fds.size(); at += transport::handover_socket::max_fds) {
                const std::size_t n = std::min(fds.size() - at, transport::handover_socket::max_fds);
                byte_writer c;
                c.put<std::uint32_t>(i);
                if (auto s = peer.send(handover_record::port_fds, c.bytes(), std::span(fds).subspan(at, n), t); !s)
                    return failed(s.error());
            }
        }
        const auto app = data_path_.save_state ? data_path_.save_state() : std::vector<std::byte>{};
        if (auto s = peer.send(handover_record::app_state, app, {}, t); !s) return failed(s.error());
        // sent_all carries the control socket: the new process serves the next update on it.
        const int control = listener_.native_handle();
        if (auto s = peer.send(handover_record::sent_all, {}, std::span(&control, 1), t); !s) return failed(s.error());
        return {};
    }

    transport::unix_listener listener_;
    std::vector<handover_port*> ports_;
    std::vector<std::string> descriptions_;
    data_path_control data_path_;
    handover_options options_;
    unique_fd stop_;
    std::function<void(const std::string&)> log_;
};

// The new process's side: connects to the old process's control socket at `path`, asks for
// the sessions of `ports` (described as the old process describes its own), imports them and
// returns once the old process has let go. On failure (errc::refused with the old process's
// reason, errc::protocol, errc::transport_failed) every port is retired — nothing adopted is
// unlinked — and the old process serves on.
inline expected<handover_result, error> take_over(const std::string& path, std::vector<handover_port*> ports,
                                                 const std::vector<std::string>& descriptions, data_path_control data_path,
                                                 handover_options o = {}) {
    const auto started = std::chrono::steady_clock::now();
    auto give_up = [&](error e) {
        for (auto* p : ports) p->retire();
        return unexpected(std::move(e));
    };
    auto peer = transport::handover_socket::connect(path, std::chrono::milliseconds(2000));
    if (!peer) return give_up(detail::fail(errc::transport_failed, fmt::format("control socket {}: {}", path, peer.error().message())));
    byte_writer hello;
    hello.put<std::uint32_t>(static_cast<std::uint32_t>(descriptions.size()));
    for (const auto& d : descriptions) hello.put_string(d);
    if (auto s = peer->send(handover_record::hello, hello.bytes(), {}, std::chrono::milliseconds(2000)); !s)
        return give_up(detail::fail(errc::protocol, "sending hello: " + s.error().message()));

    auto abort = [&](errc e, std::string why) {
        const auto payload = detail::string_payload(why);
        (void)peer->send(handover_record::abort, payload, {}, std::chrono::milliseconds(200));
        return give_up(detail::fail(e, std::move(why)));
    };
    // The memory, mapped while the old process still serves.
    for (;;) {
        auto rec = peer->receive(o.accept_timeout);
        if (!rec) return abort(errc::protocol, "receiving the memory: " + rec.error().message());
        if (rec->type == handover_record::refuse) return give_up(detail::fail(errc::refused, detail::string_of(rec->payload)));
        if (rec->type == handover_record::memory_end) break;
        if (rec->type != handover_record::memory) return abort(errc::protocol, fmt::format("unexpected record type {}", rec->type));
        byte_reader r(rec->payload);
        const auto index = r.get<std::uint32_t>();
        const auto bytes = r.get_bytes(transport::handover_socket::max_payload);
        if (!r.done() || index >= ports.size()) return abort(errc::protocol, "malformed memory record");
        ports[index]->premap(bytes, rec->fds);
    }
    if (o.warm_heap_bytes != 0) warm_heap(o.warm_heap_bytes);
    if (o.before_outage) o.before_outage();
    urgent_scope urgent; // from `ready` to `commit`: the outage
    if (auto s = peer->send(handover_record::ready, {}, {}, std::chrono::milliseconds(2000)); !s)
        return give_up(detail::fail(errc::protocol, "sending ready: " + s.error().message()));

    // Port records arrive in order; a port's fds may continue in port_fds records.
    std::vector<bool> imported(ports.size(), false);
    bool have_app_state = false;
    unique_fd control;
    for (;;) {
        auto rec = peer->receive(o.accept_timeout);
        if (!rec) return abort(errc::protocol, "receiving the sessions: " + rec.error().message());
        if (rec->type == handover_record::refuse) return give_up(detail::fail(errc::refused, detail::string_of(rec->payload)));
        if (rec->type == handover_record::sent_all) {
            if (rec->fds.size() != 1 || !rec->payload.empty()) return abort(errc::protocol, "malformed sent_all record");
            control = std::move(rec->fds[0]);
            break;
        }
        if (rec->type == handover_record::app_state) {
            if (!rec->fds.empty() || have_app_state) return abort(errc::protocol, "malformed app_state record");
            have_app_state = true;
            if (data_path.load_state && !data_path.load_state(rec->payload))
                return abort(errc::refused, "the application refused its saved state");
            continue;
        }
        if (rec->type != handover_record::port) return abort(errc::protocol, fmt::format("unexpected record type {}", rec->type));
        byte_reader r(rec->payload);
        const auto index = r.get<std::uint32_t>();
        const auto total_fds = r.get<std::uint32_t>();
        const auto bytes = r.get_bytes(transport::handover_socket::max_payload);
        if (!r.done() || index >= ports.size() || imported[index] || total_fds > 4096 || rec->fds.size() > total_fds)
            return abort(errc::protocol, "malformed port record");
        std::vector<unique_fd> fds = std::move(rec->fds);
        while (fds.size() < total_fds) {
            auto more = peer->receive(o.accept_timeout);
            if (!more) return abort(errc::protocol, "receiving a port's fds: " + more.error().message());
            byte_reader mr(more->payload);
            if (more->type != handover_record::port_fds || mr.get<std::uint32_t>() != index || !mr.done() ||
                more->fds.size() > total_fds - fds.size())
                return abort(errc::protocol, "malformed port_fds record");
            for (auto& fd : more->fds) fds.push_back(std::move(fd));
        }
        const std::vector<std::byte> port_bytes(bytes.begin(), bytes.end());
        if (auto im = ports[index]->import_port(port_bytes, fds); !im)
            return abort(errc::refused, fmt::format("port {}: {}", index, im.error()));
        imported[index] = true;
    }
    if (std::find(imported.begin(), imported.end(), false) != imported.end())
        return abort(errc::protocol, "the old process did not send every port");
    if (auto s = peer->send(handover_record::accept, {}, {}, std::chrono::milliseconds(2000)); !s)
        return give_up(detail::fail(errc::protocol, "sending accept: " + s.error().message()));
    auto commit = peer->receive(o.commit_timeout);
    if (!commit || commit->type != handover_record::commit)
        return give_up(detail::fail(errc::protocol, commit ? fmt::format("expected commit, got record type {}", commit->type)
                                                           : "waiting for commit: " + commit.error().message()));
    // The rings are ours: the data path resumes now, while this thread is still urgent.
    if (data_path.resume) data_path.resume();
    handover_result result;
    result.paused = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
    result.ports = ports.size();
    result.control = std::move(control);
    return result;
}

} // namespace vvu::runtime
