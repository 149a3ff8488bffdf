#include "vvu/runtime/poller.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

using namespace std::chrono_literals;

namespace {

// Moves 3 frames a pass for `busy_passes` passes, then nothing; counts the passes.
struct scripted_work {
    std::atomic<int> passes{0};
    int busy_passes = 0;
    std::size_t poll() {
        const int n = passes.fetch_add(1) + 1;
        if (n > busy_passes) return 0;
        // Some work to time: a pass that moves frames is never free.
        volatile std::uint64_t sink = 0;
        for (int i = 0; i < 100; ++i) sink = sink + static_cast<std::uint64_t>(i);
        return 3;
    }
};

} // namespace

TEST_CASE("poller: busy time counts the frames moved and only the passes that moved them", "[runtime][poller]") {
    scripted_work work;
    work.busy_passes = 1000;
    vvu::runtime::poller<scripted_work> p(work, {});
    CHECK(p.busy().frames == 0);
    CHECK(p.busy().per_frame() == 0.0);
    p.start();
    // Until well past the busy passes: the idle ones that follow add nothing.
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (work.passes.load() < 5 * work.busy_passes && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    REQUIRE(p.pause(5s));
    const auto first = p.busy();
    CHECK(first.frames == 3000);
    CHECK(first.cycles > 0);
    CHECK(first.per_frame() > 0.0);
    p.resume();
    while (work.passes.load() < 6 * work.busy_passes && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    p.stop();
    CHECK(work.passes.load() >= 6 * work.busy_passes);
    const auto later = p.busy();
    CHECK(later.frames == first.frames); // idle passes: no frame, no cycle
    CHECK(later.cycles == first.cycles);
}
