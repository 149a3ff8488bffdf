// Live update as the example programs that offer it wire it (vvu-forward, vvu-device): taking
// the sessions over from a running process (--takeover PATH), and a thread serving take-over
// attempts on a control socket (--control PATH). The mechanism is the library's
// (vvu/runtime/live_update.hpp); this is the programs' shared plumbing and messages, which the
// interop tests read.
#pragma once

#include <vvu/runtime/live_update.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace vvu::examples {

// Takes the sessions of `ports` over from the process listening on `path` and prints
// "<program>: took <what> over from <path> in <us> us", or why it failed. On success: the old
// process's control socket, for handover_service::start to go on with.
inline std::optional<unique_fd> take_over_sessions(std::string_view program, std::string_view what,
                                                   const std::string& path,
                                                   const std::vector<runtime::handover_port*>& ports,
                                                   const std::vector<std::string>& descriptions,
                                                   const runtime::data_path_control& data_path,
                                                   std::function<void()> before_outage) {
    runtime::handover_options options;
    options.before_outage = std::move(before_outage);
    auto r = runtime::take_over(path, ports, descriptions, data_path, options);
    if (!r) {
        fmt::print(stderr, "{}: take-over from {} failed: {}\n", program, path, r.error().message());
        return std::nullopt;
    }
    fmt::print(stderr, "{}: took {} over from {} in {} us\n", program, what, path, r->paused.count());
    return std::move(r->control);
}

// Serves take-over attempts on a control socket from its own thread. The first that succeeds
// ends the serving: `on_handed_over` then runs on that thread (to end the program), and
// handed_over() says how it went once stop() has returned.
class handover_service {
public:
    handover_service() = default;
    handover_service(const handover_service&) = delete;
    handover_service& operator=(const handover_service&) = delete;
    ~handover_service() { stop(); }

    // Listens on `path`, or on `inherited` (the socket take_over_sessions brought: the path
    // stays the same from one process to the next). False after printing why it cannot.
    bool start(std::string_view program, const std::string& path, std::optional<unique_fd> inherited,
               const std::vector<runtime::handover_port*>& ports, const std::vector<std::string>& descriptions,
               const runtime::data_path_control& data_path, std::function<void()> on_handed_over) {
        auto l = inherited && *inherited
                     ? runtime::handover_listener::adopt(path, std::move(*inherited), ports, descriptions, data_path)
                     : runtime::handover_listener::listen(path, ports, descriptions, data_path);
        if (!l) {
            fmt::print(stderr, "{}: {}\n", program, l.error().message());
            return false;
        }
        listener_.emplace(std::move(*l));
        listener_->on_log([name = std::string(program)](const std::string& line) {
            fmt::print(stderr, "{}: {}\n", name, line);
        });
        thread_ = std::thread([this, done = std::move(on_handed_over)] {
            auto r = listener_->run();
            if (!r) return; // stopped
            result_ = std::move(*r);
            if (done) done();
        });
        return true;
    }

    // Stops serving (after the exchange under way, if any) and joins the thread. Idempotent.
    void stop() {
        if (listener_) listener_->stop();
        if (thread_.joinable()) thread_.join();
    }

    // The hand-over that ended the serving, if one did; read after stop().
    const std::optional<runtime::handover_result>& handed_over() const noexcept { return result_; }

private:
    std::optional<runtime::handover_listener> listener_;
    std::thread thread_;
    std::optional<runtime::handover_result> result_;
};

} // namespace vvu::examples
