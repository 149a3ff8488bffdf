// runtime::poller<Work>: the data-path thread of a back-end — it calls work.poll() in a loop,
// the way a DPDK lcore runs a PMD, and can be paused at a pass boundary (live update).
//
//   struct my_work {
//       std::size_t poll();                                      // one pass; frames moved
//       bool wait_for_kicks(std::chrono::milliseconds, int wake); // optional: event mode
//   };
//   runtime::poller<my_work> p(work, {.cpu = 1});
//   p.start();  …  p.pause(1s); /* no pass runs: rings are still */ p.resume();  …  p.stop();
//
// Modes: busy (poll without pause, optionally sleeping `idle_sleep` after an empty pass) and
// event (after `idle` without work, sleep in work.wait_for_kicks until a kick or `wake` — an
// eventfd the poller signals to pause or stop it — is readable).
//
// Busy time: the passes that moved frames are timed (the TSC's cycles on x86-64, as DPDK
// testpmd's --record-core-cycles counts them; nanoseconds elsewhere), so that busy() gives the
// data path's cost per frame whatever the front-end's speed.
//
// pause() returns once the thread is between two passes and guarantees no pass runs until
// resume() or stop(): the moment a live update reads the rings' positions, or a control thread
// starts or stops a vring (runtime::server), so that a device's data path needs no lock of its
// own. A pass is never cut short, so every chain a pass took is completed when pause()
// returns. Pauses nest: the thread runs again when every pause() has had its resume().
#pragma once

#include <vvu/runtime/scheduling.hpp>
#include <vvu/util/unique_fd.hpp>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace vvu::runtime {

// The data path's busy time: frames moved, and the cycles of the passes that moved them.
struct busy_time {
    std::uint64_t frames = 0;
    std::uint64_t cycles = 0;   // TSC cycles on x86-64, nanoseconds elsewhere
    [[nodiscard]] double per_frame() const noexcept { return frames == 0 ? 0.0 : double(cycles) / double(frames); }
};

// A cheap timestamp for busy_time.
inline std::uint64_t busy_clock() noexcept {
#if defined(__x86_64__)
    return __rdtsc();
#else
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
#endif
}

struct poller_options {
    int cpu = -1;                                  // pin the thread to this CPU (-1: no)
    bool event_mode = false;                       // sleep on kicks when idle
    std::chrono::microseconds idle{200};           // event mode: idle time before sleeping
    std::chrono::microseconds idle_sleep{0};       // busy mode: sleep after an empty pass
};

template <class Work>
class poller {
public:
    poller(Work& work, poller_options o) : work_(work), options_(o), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
    poller(const poller&) = delete;
    poller& operator=(const poller&) = delete;
    ~poller() { stop(); }

    // Starts the thread — `held`: paused before its first pass, until resume() (a live update
    // creates and pins the thread before it may touch the rings, so that resuming them costs a
    // wake-up, not a thread creation). Returns a message when pinning failed (it runs unpinned).
    std::string start(bool held = false) {
        std::string warning;
        if (held) {
            std::lock_guard lock(mutex_);
            ++holders_;
            pause_requested_.store(true, std::memory_order_relaxed);
        }
        thread_ = std::thread([this] { loop(); });
        if (options_.cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(options_.cpu, &set);
            if (int e = pthread_setaffinity_np(thread_.native_handle(), sizeof set, &set); e != 0)
                warning = "cannot pin to CPU " + std::to_string(options_.cpu) + ": " + std::strerror(e);
        }
        return warning;
    }

    // Ends the thread after its current pass (a paused thread ends without another pass).
    void stop() {
        {
            std::lock_guard lock(mutex_);
            running_.store(false, std::memory_order_relaxed);
        }
        cv_.notify_all();
        signal_wake();
        if (thread_.joinable()) thread_.join();
    }

    // Holds the thread between two passes. False when it did not get there within `timeout`
    // (it is then resumed as if nothing happened).
    bool pause(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        ++holders_;
        pause_requested_.store(true, std::memory_order_relaxed);
        if (!thread_.joinable()) return true; // never started: nothing runs
        signal_wake();
        if (cv_.wait_for(lock, timeout, [&] { return paused_ || !running_.load(std::memory_order_relaxed); })) return true;
        if (--holders_ == 0) pause_requested_.store(false, std::memory_order_relaxed);
        return false;
    }
    void resume() {
        {
            std::lock_guard lock(mutex_);
            if (holders_ != 0 && --holders_ == 0) pause_requested_.store(false, std::memory_order_relaxed);
        }
        cv_.notify_all();
    }

    // Gives the thread a scheduling policy (e.g. back from SCHED_IDLE, which it inherited from
    // a process that prepared a live update in the background). False if refused or not started.
    bool set_policy(const thread_policy& p) noexcept {
        return thread_.joinable() && p.apply(thread_.native_handle());
    }

    // Passes that moved something, and all passes (for statistics).
    std::uint64_t passes() const noexcept { return passes_.load(std::memory_order_relaxed); }
    // Frames moved and the cycles spent moving them (from any thread; the two are read apart,
    // so a reading during a pass may lag by one pass).
    busy_time busy() const noexcept {
        return {busy_frames_.load(std::memory_order_relaxed), busy_cycles_.load(std::memory_order_relaxed)};
    }

private:
    void signal_wake() noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
    }
    void drain_wake() noexcept {
        std::uint64_t v;
        [[maybe_unused]] auto n = ::read(wake_.get(), &v, sizeof v);
    }

    // The pause point, between passes.
    void hold() {
        std::unique_lock lock(mutex_);
        drain_wake();
        paused_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !pause_requested_.load(std::memory_order_relaxed) || !running_.load(std::memory_order_relaxed); });
        paused_ = false;
    }

    void loop() {
        using clock = std::chrono::steady_clock;
        auto last_work = clock::now();
        while (running_.load(std::memory_order_relaxed)) {
            if (pause_requested_.load(std::memory_order_relaxed)) {
                hold();
                last_work = clock::now();
                continue;
            }
            passes_.store(passes_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            const std::uint64_t began = busy_clock();
            if (const std::size_t moved = work_.poll(); moved != 0) {
                // One writer: plain load and store, no locked add on the data path.
                busy_cycles_.store(busy_cycles_.load(std::memory_order_relaxed) + (busy_clock() - began),
                                   std::memory_order_relaxed);
                busy_frames_.store(busy_frames_.load(std::memory_order_relaxed) + moved, std::memory_order_relaxed);
                if (options_.event_mode) last_work = clock::now();
                continue;
            }
            if (options_.event_mode) {
                if constexpr (requires { work_.wait_for_kicks(std::chrono::milliseconds(1), 0); }) {
                    if (clock::now() - last_work > options_.idle &&
                        work_.wait_for_kicks(std::chrono::milliseconds(100), wake_.get()))
                        last_work = clock::now();
                }
            } else if (options_.idle_sleep.count() != 0) {
                std::this_thread::sleep_for(options_.idle_sleep);
            }
        }
    }

    Work& work_;
    poller_options options_;
    unique_fd wake_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> running_{true};
    std::atomic<bool> pause_requested_{false};
    bool paused_ = false;      // under mutex_
    std::uint32_t holders_ = 0; // pause() calls not yet resumed, under mutex_
    std::atomic<std::uint64_t> passes_{0};
    std::atomic<std::uint64_t> busy_frames_{0};
    std::atomic<std::uint64_t> busy_cycles_{0};
};

} // namespace vvu::runtime
