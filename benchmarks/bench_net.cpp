// The net data path's per-frame work, over a split and a packed ring in one thread (no
// cross-core cache traffic, no notifications), 64 B frames in bursts of 32:
//   to_frontend:   net::transmit_burst — take a receive buffer (2 KiB, one descriptor), write
//                  the net header and the frame into it, complete it; the driver reaps and
//                  posts the buffer again.
//   from_frontend: net::receive_burst — take a transmit chain (header + frame, one
//                  descriptor), copy the frame into the back-end's staging slot, complete it;
//                  the driver reaps it and transmits again.
// items = frames, so "ns/frame" reads directly as nanoseconds per frame, driver side included.
#include "net_loops.hpp"

#include <benchmark/benchmark.h>

namespace {

using vvu::bench::burst_frames;

// items = frames, and "ns/frame" their inverse rate.
void count_frames(benchmark::State& state) {
    const auto frames = static_cast<std::int64_t>(state.iterations() * burst_frames);
    state.SetItemsProcessed(frames);
    state.counters["ns/frame"] =
        benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <bool Packed>
void bm_to_frontend(benchmark::State& state) {
    vvu::bench::to_frontend_loop<Packed> loop({}, state.range(0) != 0);
    if (!loop.ready()) state.SkipWithError("posting receive buffers");
    for (auto _ : state)
        if (!loop.burst()) state.SkipWithError("ring stalled");
    count_frames(state);
}

template <bool Packed>
void bm_from_frontend(benchmark::State& state) {
    vvu::bench::from_frontend_loop<Packed> loop;
    for (auto _ : state) {
        if (!loop.burst()) state.SkipWithError("ring stalled");
        benchmark::DoNotOptimize(loop.frames());
    }
    count_frames(state);
}

} // namespace

BENCHMARK(bm_to_frontend<false>)->Name("net_to_frontend/split")->ArgName("mrg_rxbuf")->Arg(0)->Arg(1);
BENCHMARK(bm_to_frontend<true>)->Name("net_to_frontend/packed")->ArgName("mrg_rxbuf")->Arg(0)->Arg(1);
BENCHMARK(bm_from_frontend<false>)->Name("net_from_frontend/split");
BENCHMARK(bm_from_frontend<true>)->Name("net_from_frontend/packed");
BENCHMARK_MAIN();
