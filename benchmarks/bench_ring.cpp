// Ring round trip: driver adds a burst of 32 one-descriptor 64 B buffers, the device pops
// them, copies the 64 B out, pushes them back, the driver reaps them. One thread, so this
// measures the ring code path (no cross-core cache traffic). items = descriptors, so the
// "ns/desc" counter reads directly as nanoseconds per descriptor round trip.
#include "vvu/ring/ring.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <vector>

using namespace vvu::ring;

namespace {

constexpr std::uint32_t qsize = 256;
constexpr std::size_t burst = 32, buf_len = 64;

template <class Driver, class Device>
void round_trips(benchmark::State& state, Driver& drv, Device& dev, std::uint64_t data) {
    std::array<buffer, burst> bufs;
    std::array<request, burst> reqs;
    for (std::size_t i = 0; i < burst; ++i) {
        bufs[i] = {data + i * buf_len, static_cast<std::uint32_t>(buf_len)};
        reqs[i] = {std::span<const buffer>(&bufs[i], 1), {}, i, false};
    }
    std::array<chain, burst> chains;
    std::array<used_element, burst> used;
    std::array<used_buffer, burst> reaped;
    std::array<std::byte, buf_len> sink{};
    for (auto _ : state) {
        const std::size_t a = drv.add_burst(reqs);
        benchmark::DoNotOptimize(drv.needs_kick());
        const std::size_t n = dev.pop_burst(chains);
        for (std::size_t i = 0; i < n; ++i) {
            chains[i].copy_from(sink);
            used[i] = {chains[i].id(), 0};
        }
        dev.push_burst(std::span<const used_element>(used.data(), n));
        benchmark::DoNotOptimize(dev.needs_interrupt());
        const std::size_t r = drv.reap_burst(reaped);
        benchmark::DoNotOptimize(sink);
        if (a != burst || n != burst || r != burst) state.SkipWithError("ring stalled");
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * burst));
    state.counters["ns/desc"] = benchmark::Counter(
        static_cast<double>(state.iterations() * burst),
        benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void bm_split_roundtrip_burst32_64B(benchmark::State& state) {
    std::vector<std::byte> mem_buf(256 * 1024);
    local_memory mem(mem_buf);
    const std::uint64_t b = mem.base();
    split_config c{qsize, b, b + 16 * qsize, b + 32 * qsize, {state.range(0) != 0, false, false}, 0};
    auto drv = split_driver<local_memory>::create(mem, c);
    auto dev = split_device<local_memory>::create(mem, c);
    round_trips(state, *drv, *dev, b + 64 * 1024);
}

void bm_packed_roundtrip_burst32_64B(benchmark::State& state) {
    std::vector<std::byte> mem_buf(256 * 1024);
    local_memory mem(mem_buf);
    const std::uint64_t b = mem.base();
    packed_config c{qsize, b, b + 16 * qsize, b + 16 * qsize + 4, {state.range(0) != 0, false, false}, 0};
    auto drv = packed_driver<local_memory>::create(mem, c);
    auto dev = packed_device<local_memory>::create(mem, c);
    round_trips(state, *drv, *dev, b + 64 * 1024);
}

// The same with inflight tracking (ring/packed_inflight.hpp): what recording each take and
// completion in the region costs.
void bm_packed_tracked_roundtrip_burst32_64B(benchmark::State& state) {
    std::vector<std::byte> mem_buf(256 * 1024);
    local_memory mem(mem_buf);
    const std::uint64_t b = mem.base();
    packed_config c{qsize, b, b + 16 * qsize, b + 16 * qsize + 4, {state.range(0) != 0, false, false}, 0};
    std::vector<std::byte> region(packed_inflight_layout::bytes(qsize));
    auto drv = packed_driver<local_memory>::create(mem, c);
    auto tracker = packed_inflight::attach(region.data(), region.size(), qsize, 0, true);
    auto dev = packed_device<local_memory>::create_tracked(mem, c, std::move(*tracker));
    round_trips(state, *drv, *dev, b + 64 * 1024);
}

} // namespace

BENCHMARK(bm_split_roundtrip_burst32_64B)->ArgName("event_idx")->Arg(0)->Arg(1);
BENCHMARK(bm_packed_roundtrip_burst32_64B)->ArgName("event_idx")->Arg(0)->Arg(1);
BENCHMARK(bm_packed_tracked_roundtrip_burst32_64B)->ArgName("event_idx")->Arg(0)->Arg(1);
BENCHMARK_MAIN();
