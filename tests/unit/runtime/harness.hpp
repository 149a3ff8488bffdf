// The runtime tests' back-end "process": what vvu-forward's main wires — a runtime::server on a
// UNIX socket, the forwarding engine under a runtime::poller, and a handover_listener — built
// either fresh or by taking another one's session over, all in this test process (a live
// update in one process exercises the same fds, rings and records as one across two).
#pragma once

#include <vvu/device/net_driver.hpp>
#include <vvu/device/net_forward.hpp>
#include <vvu/runtime/live_update.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace vvu::test {

using namespace std::chrono_literals;

class backend_process {
public:
    using server_type = runtime::server<transport::unix_socket, device::net::net_port>;

    // A back-end listening on `port_path`, serving take-overs on `control_path`.
    static std::unique_ptr<backend_process> fresh(const std::string& port_path, const std::string& control_path) {
        auto t = transport::unix_socket::listen(port_path);
        REQUIRE(t);
        std::unique_ptr<backend_process> p(new backend_process(std::move(*t), port_path, control_path));
        p->poller_.start();
        auto l = runtime::handover_listener::listen(control_path, {p->port_.get()}, {"unix:" + port_path}, p->data_path());
        REQUIRE(l);
        p->serve_takeovers(std::move(*l));
        return p;
    }

    // A back-end that takes the sessions of the one on `control_path` over (nullptr and the
    // reason in `why` when it could not). Safe to call from a helper thread.
    static std::unique_ptr<backend_process> take_over(const std::string& port_path, const std::string& control_path,
                                                      std::string* why = nullptr, runtime::handover_options o = {}) {
        std::unique_ptr<backend_process> p(
            new backend_process(transport::unix_socket::connect(port_path), port_path, control_path));
        p->poller_.start(true);
        auto r = runtime::take_over(control_path, {p->port_.get()}, {"unix:" + port_path}, p->data_path(), std::move(o));
        if (!r) {
            if (why) *why = r.error().message();
            p->failed_ = true;
            return nullptr;
        }
        p->port_->start(); // (the data path resumed at commit)
        auto l = runtime::handover_listener::adopt(control_path, std::move(r->control), {p->port_.get()},
                                                   {"unix:" + port_path}, p->data_path());
        if (!l) { // (runs on a test's helper thread: no Catch assertions here)
            if (why) *why = l.error().message();
            return nullptr;
        }
        p->serve_takeovers(std::move(*l));
        return p;
    }

    ~backend_process() {
        if (listener_) listener_->stop();
        if (control_thread_.joinable()) control_thread_.join();
        if (!handed_over_.load() && !failed_) port_->stop();
        poller_.stop();
    }

    // Waits (bounded) until a take-over of this process has committed.
    bool wait_handed_over(std::chrono::milliseconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (!handed_over_.load()) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(1ms);
        }
        return true;
    }
    device::net::net_port& port() { return port_->device(); }
    // Waits (bounded) until `n` sessions have ended on this port.
    bool wait_sessions_ended(int n, std::chrono::milliseconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (sessions_ended_.load() < n) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(1ms);
        }
        return true;
    }
    // What this back-end's port and hand-over listener reported, one line each with the
    // milliseconds since the back-end was made: printed when a wait above fails.
    std::string history() {
        std::lock_guard lock(log_mutex_);
        std::string all;
        for (const auto& line : log_) all += line + "\n";
        return all.empty() ? "(nothing reported)" : all;
    }

private:
    backend_process(transport::unix_socket t, std::string port_path, std::string control_path)
        : port_(std::make_unique<server_type>(std::move(t), device::net::net_port::options{})),
          fwd_({&port_->device()}, device::net::forward_mode::loopback), poller_(fwd_, {}),
          port_path_(std::move(port_path)), control_path_(std::move(control_path)) {
        port_->on_event([this](const runtime::session_event& e) {
            static constexpr const char* kinds[] = {"connected", "ended", "waiting failed", "notice"};
            note(fmt::format("session {}: {} {}", kinds[static_cast<int>(e.what)], e.text, e.code ? e.code.message() : ""));
            if (e.what == runtime::session_event::kind::ended) sessions_ended_.fetch_add(1);
        });
        if (port_->transport().role() == transport::unix_socket::mode::server) port_->start();
    }

    runtime::data_path_control data_path() {
        runtime::data_path_control d;
        d.pause = [this](std::chrono::milliseconds t) { return poller_.pause(t); };
        d.resume = [this] { poller_.resume(); };
        d.save_state = [this] { return fwd_.save_state(); };
        d.load_state = [this](std::span<const std::byte> b) { return fwd_.load_state(b); };
        return d;
    }

    void serve_takeovers(runtime::handover_listener l) {
        listener_.emplace(std::move(l));
        listener_->on_log([this](const std::string& s) { note("hand-over: " + s); });
        control_thread_ = std::thread([this] {
            if (auto r = listener_->run()) {
                note("handed over");
                handed_over_.store(true);
            } else {
                note("hand-over listener ended: " + r.error().message());
            }
        });
    }

    void note(const std::string& s) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - made_);
        std::lock_guard lock(log_mutex_);
        log_.push_back(fmt::format("{:6} ms  {}", ms.count(), s));
    }

    std::unique_ptr<server_type> port_;
    device::net::forwarder fwd_;
    runtime::poller<device::net::forwarder> poller_;
    std::string port_path_, control_path_;
    std::optional<runtime::handover_listener> listener_;
    std::thread control_thread_;
    std::atomic<bool> handed_over_{false};
    std::atomic<int> sessions_ended_{0};
    bool failed_ = false;
    const std::chrono::steady_clock::time_point made_ = std::chrono::steady_clock::now();
    std::mutex log_mutex_;
    std::vector<std::string> log_;
};

// A front-end that echoes numbered frames through the back-end and checks they come back in
// order, none missing.
class echo_frontend {
public:
    using driver = device::net::net_driver<protocol::socket_channel>;

    echo_frontend(const std::string& path, bool packed) {
        auto ch = protocol::socket_channel::connect(path, 5s);
        REQUIRE(ch);
        device::net::driver_options o;
        o.packed = packed;
        o.queue_size = 256;
        o.timeout = 5000ms;
        auto nd = driver::open(std::move(*ch), o);
        if (!nd) FAIL(nd.error().message());
        driver_ = std::move(*nd);
        driver_->disable_interrupts();
    }

    // Runs until `count` more frames came back or `timeout`; false on a gap or a timeout.
    bool echo(std::uint64_t count, std::chrono::milliseconds timeout = 10s) {
        const std::uint64_t target = received_ + count;
        std::vector<std::byte> buf(64);
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (received_ < target) {
            if (std::chrono::steady_clock::now() > until) return false;
            if (sent_ < target && sent_ - received_ < driver_->queue_size() / 2) {
                device::net::make_test_frame(buf, 64, sent_, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
                const device::net::frame f(buf);
                sent_ += driver_->send(0, std::span(&f, 1));
            }
            driver_->reap_tx(0);
            driver_->receive(0, [&](const device::net::virtio_net_hdr&, std::span<const std::byte> frame) {
                const auto seq = device::net::test_frame_sequence(frame);
                if (!seq || *seq != received_) {
                    if (out_of_order_ == 0) first_bad_ = seq.value_or(~0ULL), first_bad_at_ = received_;
                    ++out_of_order_;
                }
                ++received_;
            });
        }
        return out_of_order_ == 0;
    }
    std::uint64_t sent() const { return sent_; }
    std::uint64_t received() const { return received_; }
    std::uint64_t out_of_order() const { return out_of_order_; }
    // The first frame out of order: its sequence number and where it came.
    std::pair<std::uint64_t, std::uint64_t> first_bad() const { return {first_bad_, first_bad_at_}; }
    driver& nd() { return *driver_; }

private:
    std::unique_ptr<driver> driver_;
    std::uint64_t sent_ = 0, received_ = 0, out_of_order_ = 0, first_bad_ = 0, first_bad_at_ = 0;
};

} // namespace vvu::test
