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
#include <optional>

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
// Called first thing in main, before any thread exists (threads inherit it), this moves the
// process into the background (SCHED_IDLE: it runs when a CPU would idle, and a waking poller
// preempts it at once) and returns the policy to come back to at commit
// (handover_options::policy_after_commit; the poller's too: poller::set_policy) — the
// thread's own, or SCHED_OTHER for a process started in the background already (`chrt --idle
// 0`, which keeps the exec and the dynamic loader there too). Nothing changes, and nullopt is
// returned, when the process could not come back (may_leave_idle_policy).
inline std::optional<thread_policy> prepare_in_background() noexcept {
    if (!may_leave_idle_policy()) return std::nullopt;
    thread_policy back = thread_policy::of(pthread_self());
    if (back.policy == SCHED_IDLE) back = {};
    step_aside();
    return back;
}

// The hand-over's critical stretch — from the new process's `ready` to `commit` — is a few
// record exchanges between two threads that block on a socket. On a small machine whose CPUs
// are taken by busy-polling data paths, each wake-up could wait for a scheduler slice
// (milliseconds). For that stretch the exchanging threads run SCHED_FIFO when the process may
// (root, CAP_SYS_NICE; else they run as they are), and go back to their policy after (or to
// the one given to end()).
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
    void end(const thread_policy& after) noexcept {
        (void)after.apply(pthread_self());
        active_ = false;
    }

private:
    thread_policy before_;
    bool active_ = false;
};

} // namespace vvu::runtime
