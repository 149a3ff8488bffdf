// runtime::server<Transport, Device>: a vhost-user back-end port that runs itself. It owns the
// transport, the device and the state machine between them — the whole session — and a
// control thread that waits for a front-end, serves it, closes, and waits for the next, until
// stop(). The device's data path runs elsewhere (runtime::poller); the state machine starts
// and stops the device's vrings from the control thread (protocol/device.hpp).
//
//   runtime::server<transport::unix_socket, my_device> port(std::move(*transport), device_args…);
//   port.on_event([](const runtime::session_event& e) { log(e); });
//   port.start();
//   …
//   port.stop();
//
// Why a session ended comes as an error_code of runtime::errc: disconnected, violation (the
// front-end broke the protocol; the text names the request), transport_failed, stopped.
//
// Live update: a server whose transport can be interrupted between messages
// (unix_socket::set_interrupt) and exported (export_endpoint / adopt) is a handover_port
// (runtime/live_update.hpp): park() takes its control thread aside at a message boundary,
// export_port() copies the session out, and then either unpark() (the hand-over failed; it
// serves on as if nothing happened) or retire() (the session lives on in another process: the
// server lets go of every fd without a trace). On the other side, import_port() fills a new
// server with the session before start().
#pragma once

#include <vvu/protocol/backend.hpp>
#include <vvu/protocol/session_image.hpp>
#include <vvu/runtime/error.hpp>
#include <vvu/runtime/handover_port.hpp>
#include <vvu/util/unique_fd.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace vvu::runtime {

// What the control thread reports: a front-end connected, or its session ended (and why).
struct session_event {
    enum class kind { connected, ended, waiting_failed, notice } what = kind::connected;
    std::error_code code; // ended / waiting_failed: why
    std::string text;
};

// A transport whose sessions can be handed over (unix_socket).
template <class T>
concept handover_transport = requires(T& t, const T& ct, typename T::endpoint e, int fd) {
    t.set_interrupt(fd);
    { ct.export_endpoint() };
    { T::adopt(std::move(e)) };
    t.abandon();
};

template <class Transport, class Device>
class server final : public handover_port {
public:
    template <class... DeviceArgs>
    explicit server(Transport t, DeviceArgs&&... device_args)
        : transport_(std::move(t)), device_(std::forward<DeviceArgs>(device_args)...), backend_(transport_, device_),
          interrupt_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
        if constexpr (handover_transport<Transport>) transport_.set_interrupt(interrupt_.get());
        backend_.on_notice([this](const std::string& text) { report(session_event::kind::notice, {}, text); });
    }
    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() override { stop(); }

    Device& device() noexcept { return device_; }
    const Device& device() const noexcept { return device_; }
    Transport& transport() noexcept { return transport_; }
    // The state machine (read it from the control thread, or while parked).
    const protocol::backend<Transport, Device>& backend() const noexcept { return backend_; }

    // Called on the control thread for every connect and session end (logging).
    void on_event(std::function<void(const session_event&)> f) { on_event_ = std::move(f); }

    // The start/stop handshake with the device's data path: around every message (which may
    // start or stop a vring, change memory or features) and every session end, the control
    // thread holds the data path between two passes (runtime::poller::pause / resume). A
    // device then needs no lock of its own between its control calls and its data path.
    // Set before start(). Without it the device synchronises itself (device::net::net_port does).
    void guard_data_path(std::function<bool(std::chrono::milliseconds)> pause, std::function<void()> resume) {
        pause_data_path_ = std::move(pause);
        resume_data_path_ = std::move(resume);
    }

    void start() { control_ = std::thread([this] { run(); }); }

    // Ends the control thread (the session, if any, is closed first). Thread-safe, idempotent.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            if (park_ == park_state::parked) park_ = park_state::stop;
        }
        cv_.notify_all();
        if constexpr (requires { transport_.stop(); }) transport_.stop();
        if (control_.joinable()) control_.join();
    }

    // ---------------------------------------------------------------- handover_port
    expected<void, std::string> park(std::chrono::milliseconds timeout) override {
        if constexpr (!handover_transport<Transport>) {
            return unexpected(std::string("this transport cannot hand its session over"));
        } else {
            std::unique_lock lock(mutex_);
            if (!control_.joinable()) { // not started: nothing runs, nothing to wait for
                park_ = park_state::parked;
                return {};
            }
            park_ = park_state::requested;
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(interrupt_.get(), &one, sizeof one);
            if (cv_.wait_for(lock, timeout, [&] { return park_ == park_state::parked || finished_; }) && !finished_)
                return {};
            park_ = park_state::none;
            drain_interrupt();
            return unexpected(std::string(finished_ ? "the control thread has ended"
                                                    : "the control thread did not reach a message boundary in time"));
        }
    }

    expected<port_image, std::string> preview_memory(std::chrono::milliseconds timeout) override {
        if constexpr (!handover_transport<Transport>) {
            return unexpected(std::string("this transport cannot hand its session over"));
        } else {
            // The table is replaced on the control thread: read it while that thread is aside.
            if (auto p = park(timeout); !p) return unexpected(p.error());
            memory::guest_memory::ptr table = backend_.memory();
            unpark();
            port_image out;
            byte_writer w;
            // Regions the transport maps without an fd (a VVU window) are mapped at import.
            std::vector<const memory::region*> regions;
            if (table)
                for (const auto& r : table->regions())
                    if (r.fd() >= 0 || !transport::remakes_resources<Transport>) regions.push_back(&r);
            w.put<std::uint32_t>(static_cast<std::uint32_t>(regions.size()));
            for (const auto* rp : regions) {
                const auto& r = *rp;
                unique_fd fd = dup_cloexec(r.fd());
                if (!fd) return unexpected(std::string("a region without an fd"));
                for (std::uint64_t v : {r.desc().guest_phys_addr, r.desc().memory_size, r.desc().userspace_addr, r.desc().mmap_offset})
                    w.put<std::uint64_t>(v);
                out.fds.push_back(std::move(fd));
            }
            out.bytes = w.take();
            return out;
        }
    }

    void premap(std::span<const std::byte> bytes, std::span<unique_fd> fds) override {
        byte_reader r(bytes);
        const auto n = r.get<std::uint32_t>();
        if (!r.ok() || n != fds.size() || n > memory::guest_memory::max_slots) return; // not used then
        for (std::uint32_t i = 0; i < n; ++i) {
            wire::memory_region d;
            d.guest_phys_addr = r.get<std::uint64_t>();
            d.memory_size = r.get<std::uint64_t>();
            d.userspace_addr = r.get<std::uint64_t>();
            d.mmap_offset = r.get<std::uint64_t>();
            if (!r.ok()) return;
            // Checked as any region; one that does not map is mapped (and refused) at import.
            if (auto m = memory::region::map(d, std::move(fds[i]), true)) premapped_.push_back(std::move(*m));
        }
    }

    expected<port_image, std::string> export_port() override {
        if constexpr (!handover_transport<Transport>) {
            return unexpected(std::string("this transport cannot hand its session over"));
        } else {
            auto endpoint = transport_.export_endpoint();
            if (!endpoint) return unexpected("exporting the transport: " + endpoint.error().message());
            port_image out;
            byte_writer w;
            std::move(*endpoint).encode(w, out.fds);
            // A port without a front-end has no session to hand on, only its sockets and the
            // device's own state (its counters run on across sessions too).
            const bool has_session = transport_.connected();
            w.put_bool(has_session);
            if (has_session) {
                auto img = backend_.export_session();
                if (!img) return unexpected(img.error());
                auto enc = protocol::encode(std::move(*img));
                w.put<std::uint32_t>(static_cast<std::uint32_t>(enc.fds.size()));
                w.put_bytes(enc.bytes);
                for (auto& fd : enc.fds) out.fds.push_back(std::move(fd));
            } else {
                std::vector<std::byte> state;
                if constexpr (requires { device_.save_state(); }) state = device_.save_state();
                w.put_bytes(state);
            }
            out.bytes = w.take();
            return out;
        }
    }

    expected<void, std::string> import_port(std::span<const std::byte> bytes, std::span<unique_fd> fds) override {
        if constexpr (!handover_transport<Transport>) {
            return unexpected(std::string("this transport cannot take a session over"));
        } else {
            byte_reader r(bytes);
            auto endpoint = Transport::endpoint::decode(r, fds);
            if (!endpoint) return unexpected(endpoint.error());
            const std::size_t used = endpoint->fd_count();
            const bool has_session = r.get_bool();
            std::optional<protocol::session_image> img;
            if (has_session) {
                const auto nfds = r.get<std::uint32_t>();
                const auto image_bytes = r.get_bytes(handover_max_image);
                if (!r.done() || nfds != fds.size() - used) return unexpected(std::string("malformed port record"));
                auto decoded = protocol::decode_image(image_bytes, fds.subspan(used));
                if (!decoded) return unexpected(decoded.error());
                img = std::move(*decoded);
            } else {
                const auto state = r.get_bytes(protocol::session_image::max_device_state);
                if (!r.done() || fds.size() != used) return unexpected(std::string("malformed port record"));
                if constexpr (requires { device_.load_state(state); }) {
                    if (!device_.load_state(state)) return unexpected(std::string("the device refused its saved state"));
                } else if (!state.empty()) {
                    return unexpected(std::string("the port has device state this device cannot load"));
                }
            }
            auto adopted = Transport::adopt(std::move(*endpoint));
            if (!adopted) return unexpected("adopting the sockets: " + adopted.error().message());
            // The state machine refers to transport_: keep the object, replace what it holds.
            transport_ = std::move(*adopted);
            transport_.set_interrupt(interrupt_.get());
            if (img) {
                if (auto imported = backend_.import_session(std::move(*img), std::move(premapped_)); !imported)
                    return unexpected(imported.error());
                resumed_ = true;
            }
            return {};
        }
    }

    void unpark() override {
        {
            std::lock_guard lock(mutex_);
            if (park_ == park_state::parked) park_ = park_state::none;
            if (!control_.joinable()) park_ = park_state::none;
        }
        cv_.notify_all();
    }

    void retire() override {
        if constexpr (handover_transport<Transport>) {
            {
                std::lock_guard lock(mutex_);
                park_ = park_state::retire;
            }
            cv_.notify_all();
            if (control_.joinable()) control_.join();
            transport_.abandon();
        }
    }

private:
    static constexpr std::size_t handover_max_image = 4u << 20;
    enum class park_state { none, requested, parked, retire, stop };

    void report(session_event::kind k, std::error_code c = {}, std::string text = {}) {
        if (on_event_) on_event_({k, c, std::move(text)});
    }

    void drain_interrupt() noexcept {
        std::uint64_t v;
        [[maybe_unused]] auto n = ::read(interrupt_.get(), &v, sizeof v);
    }

    // At a message boundary: park if asked, for as long as asked — an unpark may be followed
    // at once by the next park (a live update parks to read the memory, then to export).
    // Returns false when the thread must end (retired or stopped while parked).
    bool service_park() {
        std::unique_lock lock(mutex_);
        drain_interrupt();
        for (;;) {
            if (park_ == park_state::retire || park_ == park_state::stop) return false;
            if (park_ != park_state::requested) return true;
            park_ = park_state::parked;
            cv_.notify_all();
            cv_.wait(lock, [&] { return park_ != park_state::parked; });
        }
    }

    // Runs f with the data path held (guard_data_path), or as it is.
    template <class F>
    decltype(auto) with_data_path_held(F&& f) {
        struct holder {
            server& s;
            bool held;
            ~holder() {
                if (held) s.resume_data_path_();
            }
        } h{*this, false};
        if (pause_data_path_) {
            // A data path that cannot pause within a second is stuck; going on would race it.
            while (!pause_data_path_(std::chrono::milliseconds(1000)))
                report(session_event::kind::notice, {}, "waiting for the data path to pause");
            h.held = true;
        }
        return f();
    }

    void end_session(std::error_code code, std::string text) {
        with_data_path_held([&] { backend_.end_session(); });
        transport_.close_session();
        report(session_event::kind::ended, code, std::move(text));
    }

    void run() {
        bool connected = resumed_; // an imported session is live already
        if (connected) report(session_event::kind::connected, {}, "session taken over");
        for (;;) {
            if (!connected) {
                auto ready = transport_.wait_for_frontend();
                if (!ready) {
                    if (ready.error().code == transport::errc::interrupted) {
                        if (!service_park()) break;
                        continue;
                    }
                    if (ready.error().code == transport::errc::stopped) break;
                    report(session_event::kind::waiting_failed, errc::transport_failed, ready.error().message());
                    std::unique_lock lock(mutex_); // a failing transport: don't spin (a park request still wakes us)
                    cv_.wait_for(lock, std::chrono::milliseconds(100));
                    continue;
                }
                connected = true;
                report(session_event::kind::connected);
            }
            auto msg = transport_.receive();
            if (!msg) {
                const auto& e = msg.error();
                if (e.code == transport::errc::interrupted) {
                    if (!service_park()) break;
                    continue;
                }
                if (e.code == transport::errc::stopped) break;
                end_session(e.disconnected() ? make_error_code(errc::disconnected) : make_error_code(errc::transport_failed),
                            e.message());
                connected = false;
                continue;
            }
            if (auto r = with_data_path_held([&] { return backend_.serve_message(*msg); }); !r) {
                end_session(errc::violation, r.error().message());
                connected = false;
            }
        }
        std::lock_guard lock(mutex_);
        const bool retired = park_ == park_state::retire;
        if (!retired && connected) {
            with_data_path_held([&] { backend_.end_session(); });
            // A transport that can keep the session without us (VVU: the device holds the
            // front-end for the next driver) leaves it; a socket closes.
            if constexpr (requires { transport_.leave_session(); }) transport_.leave_session();
            else transport_.close_session();
        }
        finished_ = true;
        cv_.notify_all();
        if (!retired && connected) report(session_event::kind::ended, errc::stopped, "server stopped");
    }

    Transport transport_;
    Device device_;
    protocol::backend<Transport, Device> backend_;
    unique_fd interrupt_;
    std::thread control_;
    std::function<void(const session_event&)> on_event_;
    std::function<bool(std::chrono::milliseconds)> pause_data_path_;
    std::function<void()> resume_data_path_;
    std::mutex mutex_;
    std::condition_variable cv_;
    park_state park_ = park_state::none;
    bool finished_ = false;
    bool resumed_ = false;
    std::vector<memory::region> premapped_; // new process: the memory mapped before the outage
};

} // namespace vvu::runtime
