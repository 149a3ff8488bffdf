// Scheduling for live update on a small machine: a thread's policy read and put back, the old
// process stepping aside after commit, the new one preparing in the background and running the
// outage urgent. Why each exists: docs/live-update.md ("The exchange").
#pragma once

#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace vvu::runtime {

// A thread's scheduling policy and priority, read to be put back.
struct thread_policy {
    int policy = SCHED_OTHER;
    sched_param param{};

    static thread_policy of(pthread_t thread) noexcept {
        thread_policy p;
        if (pthread_getschedparam(thread, &p.policy, &p.param) != 0) p = {};
        return p;
    }
    bool apply(pthread_t thread) const noexcept { return pthread_setschedparam(thread, policy, &param) == 0; }
};

// The calling thread runs only when a CPU would otherwise idle (SCHED_IDLE): what the old
// process does after commit must not delay the new one. The application calls it in its own
// threads that wind down after a hand-over (vvu-forward: its main thread).
inline void step_aside() noexcept {
    sched_param p{};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &p);
}

// Whether this process may leave SCHED_IDLE again (sched(7): an unprivileged thread may only
// if RLIMIT_NICE allows its nice value; CAP_SYS_NICE may always).
inline bool may_leave_idle_policy() noexcept {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, 2> caps{};
    if (::syscall(SYS_capget, &header, caps.data()) == 0 &&
        (caps[CAP_SYS_NICE / 32].effective & (1u << (CAP_SYS_NICE % 32))) != 0)
        return true;
    rlimit limit{};
    errno = 0;
    const int nice = ::getpriority(PRIO_PROCESS, 0);
    return errno == 0 && ::getrlimit(RLIMIT_NICE, &limit) == 0 &&
           (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= static_cast<rlim_t>(20 - nice));
}

// The new process of a live update starts, maps the memory and imports while the data path
// it replaces keeps running, on the same CPUs. On a small machine every slice the start-up
// takes from a poller is an outage of that poller's rings (a scheduler tick, ~4 ms, at a time).
// A background_preparation, made first thing in main before any other thread exists (threads
// inherit it), moves the process into the background: SCHED_IDLE, where it runs when a CPU
// would idle and a waking poller preempts it at once. Where no CPU ever idles (busy pollers on
// every core) it would hardly run at all, so a watchdog thread puts the calling thread back
// after `limit`: the preparation then goes on at its normal priority, as without this. When
// the preparation is over (finish(), before the outage) the thread comes back to policy(), and
// the data-path thread is given it too (poller::set_policy) — the thread's own, or SCHED_OTHER
// for a thread started in the background. Nothing changes,
// and policy() is nullopt, when the process could not come back (may_leave_idle_policy).
class background_preparation {
public:
    background_preparation() = default;
    explicit background_preparation(std::chrono::milliseconds limit) {
        if (!may_leave_idle_policy()) return;
        thread_policy back = thread_policy::of(pthread_self());
        if (back.policy == SCHED_IDLE) back = {};
        back_ = back;
        state_ = std::make_shared<watch>();
        // Made before the step aside, and given `back` itself (the process may have been
        // started in the background): the watchdog must run when the limit comes.
        watchdog_ = std::thread([state = state_, thread = pthread_self(), back, limit] {
            (void)back.apply(pthread_self());
            std::unique_lock lock(state->mutex);
            if (!state->cv.wait_for(lock, limit, [&] { return state->ended; })) {
                (void)back.apply(thread);
                state->expired = true;
            }
        });
        step_aside();
    }
    background_preparation(background_preparation&&) noexcept = default;
    background_preparation& operator=(background_preparation&& other) noexcept {
        if (this != &other) {
            end();
            back_ = std::move(other.back_);
            state_ = std::move(other.state_);
            watchdog_ = std::move(other.watchdog_);
        }
        return *this;
    }
    ~background_preparation() { end(); }

    [[nodiscard]] const std::optional<thread_policy>& policy() const noexcept { return back_; }
    // Whether the watchdog had to bring the thread back before the preparation ended.
    [[nodiscard]] bool expired() const {
        if (!state_) return false;
        std::scoped_lock lock(state_->mutex);
        return state_->expired;
    }
    // The preparation is over — the outage is about to start: stops the watchdog and puts the
    // calling thread (the one that made this) back to policy(), so that no part of the outage
    // runs SCHED_IDLE, even where the thread cannot be made urgent (urgent_scope).
    void finish() {
        end();
        if (back_) (void)back_->apply(pthread_self());
    }
    // Stops the watchdog (the thread's policy is the caller's business from now on).
    void end() {
        if (!state_) return;
        {
            std::scoped_lock lock(state_->mutex);
            state_->ended = true;
        }
        state_->cv.notify_all();
        if (watchdog_.joinable()) watchdog_.join();
    }

private:
    struct watch {
        std::mutex mutex;
        std::condition_variable cv;
        bool ended = false, expired = false;
    };
    std::optional<thread_policy> back_;
    std::shared_ptr<watch> state_;
    std::thread watchdog_;
};

// The hand-over's critical stretch — from the new process's `ready` to `commit` — is a few
// record exchanges between two threads that block on a socket. On a small machine whose CPUs
// are taken by busy-polling data paths, each wake-up could wait for a scheduler slice
// (milliseconds). For that stretch the exchanging threads run SCHED_FIFO when the process may
// (root, CAP_SYS_NICE; else they run as they are), and go back to their policy after.
class urgent_scope {
public:
    urgent_scope() noexcept : before_(thread_policy::of(pthread_self())) {
        sched_param p{};
        p.sched_priority = 1;
        active_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0;
    }
    urgent_scope(const urgent_scope&) = delete;
    urgent_scope& operator=(const urgent_scope&) = delete;
    ~urgent_scope() { end(); }
    void end() noexcept {
        if (active_) (void)before_.apply(pthread_self());
        active_ = false;
    }

private:
    thread_policy before_;
    bool active_ = false;
};

} // namespace vvu::runtime
