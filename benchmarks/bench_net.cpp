// The net data path's per-frame work, over a split and a packed ring in one thread (no
// cross-core cache traffic, no notifications), 64 B frames in bursts of 32:
//   to_frontend:   net::transmit_burst — take a receive buffer (2 KiB, one descriptor), write
//                  the net header and the frame into it, complete it; the driver reaps and
//                  posts the buffer again.
//   from_frontend: net::receive_burst — take a transmit chain (header + frame, one
//                  descriptor), copy the frame into the back-end's staging slot, complete it;
//                  the driver reaps it and transmits again.
// items = frames, so "ns/frame" reads directly as nanoseconds per frame, driver side included.
#include "vvu/device/net.hpp"
#include "vvu/ring/ring.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <memory>
#include <vector>

using namespace vvu;
using namespace vvu::ring;
namespace net = vvu::device::net;

namespace {

constexpr std::uint32_t qsize = 256;
constexpr std::size_t burst = 32, frame_len = 64, rx_buffer_len = 2048, slot = 2048;

template <bool Packed>
struct rings {
    std::vector<std::byte> bytes = std::vector<std::byte>(2u << 20);
    local_memory mem{bytes};
    std::uint64_t base = mem.base();
    using driver_t = std::conditional_t<Packed, packed_driver<local_memory>, split_driver<local_memory>>;
    using device_t = std::conditional_t<Packed, packed_device<local_memory>, split_device<local_memory>>;
    static auto config(std::uint64_t b) {
        if constexpr (Packed) return packed_config{qsize, b, b + 16 * qsize, b + 16 * qsize + 4, {}, 0};
        else return split_config{qsize, b, b + 16 * qsize, b + 32 * qsize, {}, 0};
    }
    driver_t driver = *driver_t::create(mem, config(base));
    device_t device = *device_t::create(mem, config(base));
    std::uint64_t buffer(std::size_t i) const { return base + (64u << 10) + i * slot; }
};

// items = frames, and "ns/frame" their inverse rate.
void count_frames(benchmark::State& state) {
    const auto frames = static_cast<std::int64_t>(state.iterations() * burst);
    state.SetItemsProcessed(frames);
    state.counters["ns/frame"] =
        benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <bool Packed>
void bm_to_frontend(benchmark::State& state) {
    rings<Packed> r;
    std::array<buffer, qsize> bufs;
    for (std::size_t i = 0; i < qsize; ++i) {
        bufs[i] = {r.buffer(i), static_cast<std::uint32_t>(rx_buffer_len)};
        if (!r.driver.add({}, {&bufs[i], 1}, i)) state.SkipWithError("posting receive buffers");
    }
    std::array<std::byte, frame_len> payload{};
    std::array<net::frame, burst> frames;
    frames.fill(net::frame(payload));
    net::port_stats stats;
    net::burst_scratch scratch;
    std::array<used_buffer, burst> reaped;
    const bool mrg_rxbuf = state.range(0) != 0;
    for (auto _ : state) {
        const std::size_t sent = net::transmit_burst(r.device, frames, mrg_rxbuf, stats, scratch);
        const std::size_t n = r.driver.reap_burst(reaped);
        for (std::size_t i = 0; i < n; ++i) (void)r.driver.add({}, {&bufs[reaped[i].token], 1}, reaped[i].token);
        if (sent != burst || n != burst) state.SkipWithError("ring stalled");
    }
    count_frames(state);
}

template <bool Packed>
void bm_from_frontend(benchmark::State& state) {
    rings<Packed> r;
    std::array<buffer, qsize> bufs;
    for (std::size_t i = 0; i < qsize; ++i) bufs[i] = {r.buffer(i), static_cast<std::uint32_t>(net::net_hdr_size + frame_len)};
    auto staging = std::make_unique<std::byte[]>(burst * net::max_frame_size);
    std::array<net::frame, burst> out;
    std::array<used_element, burst> taken;
    net::port_stats stats;
    net::burst_scratch scratch;
    std::array<used_buffer, burst> reaped;
    std::size_t next = 0;
    for (auto _ : state) {
        for (std::size_t i = 0; i < burst; ++i, next = (next + 1) % qsize)
            (void)r.driver.add({&bufs[next], 1}, {}, next);
        const auto got = net::receive_burst(r.device, std::span(staging.get(), burst * net::max_frame_size), out, taken,
                                            stats, scratch);
        r.device.push_burst(std::span(taken).first(got.chains));
        const std::size_t n = r.driver.reap_burst(reaped);
        benchmark::DoNotOptimize(out);
        if (got.frames != burst || n != burst) state.SkipWithError("ring stalled");
    }
    count_frames(state);
}

} // namespace

BENCHMARK(bm_to_frontend<false>)->Name("net_to_frontend/split")->ArgName("mrg_rxbuf")->Arg(0)->Arg(1);
BENCHMARK(bm_to_frontend<true>)->Name("net_to_frontend/packed")->ArgName("mrg_rxbuf")->Arg(0)->Arg(1);
BENCHMARK(bm_from_frontend<false>)->Name("net_from_frontend/split");
BENCHMARK(bm_from_frontend<true>)->Name("net_from_frontend/packed");
BENCHMARK_MAIN();
