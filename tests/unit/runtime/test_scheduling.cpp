// The scheduling a live update relies on: a new process prepares in the background (SCHED_IDLE,
// inherited by the threads it makes), and commit brings its threads — the one that exchanged
// the records and the data path's — back to their policy. Each case runs on a thread of its own,
// so the test runner's threads keep their policy; results are checked on the main thread.
#include "vvu/runtime/poller.hpp"
#include "vvu/runtime/scheduling.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include <unistd.h>

using namespace std::chrono_literals;
using vvu::runtime::thread_policy;

namespace {

int policy_of_self() { return thread_policy::of(pthread_self()).policy; }

// Records the policy its poller thread runs under, pass by pass.
struct policy_probe {
    std::atomic<int> seen{-1};
    std::atomic<int> passes{0};
    std::size_t poll() {
        seen.store(policy_of_self());
        passes.fetch_add(1);
        std::this_thread::sleep_for(100us);
        return 0;
    }
};

bool wait_passes(const policy_probe& probe, int at_least) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (probe.passes.load() < at_least)
        if (std::chrono::steady_clock::now() > until) return false;
        else std::this_thread::sleep_for(1ms);
    return true;
}

} // namespace

TEST_CASE("scheduling: a process prepared in the background returns to its policy at commit", "[runtime][scheduling]") {
    struct seen {
        bool may_leave = false;
        std::optional<thread_policy> back;
        int during = -1, child = -1, finished = -1, urgent = -1, after = -1;
    } s;
    std::thread([&s] {
        s.may_leave = vvu::runtime::may_leave_idle_policy();
        vvu::runtime::background_preparation background(10s);
        s.back = background.policy();
        s.during = policy_of_self();
        std::thread([&s] { s.child = policy_of_self(); }).join(); // made in the background: inherits it
        background.finish(); // the outage starts: the thread's own policy, no watchdog
        s.finished = policy_of_self();
        vvu::runtime::urgent_scope urgent;
        s.urgent = policy_of_self();
        urgent.end();
        s.after = policy_of_self();
    }).join();

    if (!s.may_leave) {
        // A process that could not come back out of SCHED_IDLE never goes there.
        CHECK_FALSE(s.back);
        CHECK(s.during == SCHED_OTHER);
        CHECK(s.child == SCHED_OTHER);
        return;
    }
    REQUIRE(s.back);
    CHECK(s.back->policy == SCHED_OTHER);
    CHECK(s.during == SCHED_IDLE);
    CHECK(s.child == SCHED_IDLE);
    CHECK(s.finished == SCHED_OTHER);
    // The outage runs SCHED_FIFO where the process may (root may).
    if (geteuid() == 0) CHECK(s.urgent == SCHED_FIFO);
    CHECK(s.after == SCHED_OTHER);
}

TEST_CASE("scheduling: a process started in the background (chrt --idle 0) comes back to SCHED_OTHER",
          "[runtime][scheduling]") {
    std::optional<thread_policy> back;
    int during = -1, later = -1;
    bool may_leave = false;
    std::thread([&] {
        may_leave = vvu::runtime::may_leave_idle_policy();
        vvu::runtime::step_aside(); // as if started so
        vvu::runtime::background_preparation background(50ms);
        back = background.policy();
        during = policy_of_self();
        // Its watchdog, made by a SCHED_IDLE thread, still runs when the limit comes.
        const auto until = std::chrono::steady_clock::now() + 5s;
        while (back && policy_of_self() == SCHED_IDLE && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        later = policy_of_self();
    }).join();
    CHECK(during == SCHED_IDLE);
    if (!may_leave) {
        CHECK_FALSE(back);
        return;
    }
    REQUIRE(back);
    CHECK(back->policy == SCHED_OTHER); // not the SCHED_IDLE it started with
    CHECK(later == SCHED_OTHER);
}

TEST_CASE("scheduling: a held poller made in the background runs under the policy set before its resume",
          "[runtime][scheduling][poller]") {
    policy_probe probe;
    vvu::runtime::poller<policy_probe> p(probe, {});
    std::optional<thread_policy> back;
    int before_resume = -1;
    std::thread([&] {
        vvu::runtime::background_preparation background(10s);
        back = background.policy();
        p.start(true); // created held, in the background
        if (back) (void)p.set_policy(*back);
        before_resume = probe.passes.load();
        p.resume();
    }).join();
    CHECK(before_resume == 0); // held: no pass before resume
    REQUIRE(wait_passes(probe, 3));
    CHECK(probe.seen.load() == SCHED_OTHER); // whether it went to the background or not
    if (back) {
        // And back to the background on request: the policy really is the poller thread's.
        thread_policy idle;
        idle.policy = SCHED_IDLE;
        REQUIRE(p.set_policy(idle));
        const int now = probe.passes.load();
        REQUIRE(wait_passes(probe, now + 3));
        CHECK(probe.seen.load() == SCHED_IDLE);
    }
    p.stop();
}

TEST_CASE("scheduling: where no CPU idles, a watchdog brings the preparing thread back after its limit",
          "[runtime][scheduling]") {
    struct seen {
        std::optional<thread_policy> back;
        int during = -1, later = -1;
        bool expired = false, expired_early = true;
    } s;
    std::thread([&s] {
        vvu::runtime::background_preparation background(50ms);
        s.back = background.policy();
        s.during = policy_of_self();
        s.expired_early = background.expired();
        // Bounded wait for the watchdog (it fires after 50 ms).
        const auto until = std::chrono::steady_clock::now() + 5s;
        while (s.back && policy_of_self() == SCHED_IDLE && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        s.later = policy_of_self();
        background.end();
        s.expired = background.expired();
    }).join();
    if (!s.back) {
        CHECK(s.during == SCHED_OTHER); // never went to the background
        return;
    }
    CHECK(s.during == SCHED_IDLE);
    CHECK_FALSE(s.expired_early);
    CHECK(s.later == SCHED_OTHER);
    CHECK(s.expired);

    // Ended in time: the watchdog leaves the thread alone (its policy is the caller's to set).
    int after_end = -1;
    bool expired = true;
    std::thread([&] {
        vvu::runtime::background_preparation background(50ms);
        background.end();
        std::this_thread::sleep_for(100ms);
        after_end = policy_of_self();
        expired = background.expired();
    }).join();
    CHECK(after_end == SCHED_IDLE);
    CHECK_FALSE(expired);
}
