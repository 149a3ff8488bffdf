// What dirty-page logging (a live migration in progress) costs the data path: the device side of
// a receive ring over front-end memory (memory::view over a memfd, as a back-end runs it) fills
// a burst of 32 buffers with a frame each and pushes them; the driver reaps and re-posts them.
// Each case runs with the log off and on (buffers and used ring logged, VHOST_VRING_F_LOG), in
// the same run, and the program ends with the on/off throughput ratio of each case.
//
//   build/<dir>/benchmarks/vvu-bench-dirty_log [--benchmark_min_time=0.5]
#include <vvu/memory/dirty_log.hpp>
#include <vvu/memory/guest_memory.hpp>
#include <vvu/ring/ring.hpp>

#include <benchmark/benchmark.h>

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace vvu;
using namespace vvu::ring;

namespace {

constexpr std::uint32_t qsize = 256;
constexpr std::size_t burst = 32, buf_len = 2048;
constexpr std::uint64_t gpa = 0x4000'0000, mem_bytes = 4 << 20;

memory::region map_memfd(std::uint64_t guest_addr, std::uint64_t bytes) {
    unique_fd fd(::memfd_create("vvu-bench", MFD_CLOEXEC));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) throw std::runtime_error("memfd");
    auto r = memory::region::map({guest_addr, bytes, 0, 0}, std::move(fd), true);
    if (!r) throw std::runtime_error(r.error().message());
    return *r;
}

// The front-end's memory and, when logging, a log covering it; the device ring's view of both.
struct setup {
    memory::region front = map_memfd(gpa, mem_bytes);
    memory::view device_view;
    local_memory driver_mem{{front.host(), front.size()}, gpa};
    std::shared_ptr<const memory::dirty_log> log;

    explicit setup(bool logging) {
        auto table = memory::guest_memory::make({front});
        if (!table) throw std::runtime_error(table.error().message());
        device_view.reset(*table);
        if (logging) {
            log = std::make_shared<memory::dirty_log>(map_memfd(0, (gpa + mem_bytes) / 4096 / 8));
            device_view.set_log(log);
        }
    }
};

template <class Config>
Config place(std::uint64_t b, bool event_idx, bool log_used);
template <>
split_config place<split_config>(std::uint64_t b, bool event_idx, bool log_used) {
    return {qsize, b, b + 16 * qsize, b + 0x2000, {event_idx, false, false}, 0, log_used};
}
template <>
packed_config place<packed_config>(std::uint64_t b, bool event_idx, bool log_used) {
    return {qsize, b, b + 0x2000, b + 0x2040, {event_idx, false, false}, 0, log_used};
}

template <class Config, template <class> class Driver, template <class> class Device>
void receive_bursts(benchmark::State& state) {
    const bool logging = state.range(0) != 0;
    setup s(logging);
    const auto cfg = place<Config>(gpa, false, logging);
    auto drv = Driver<local_memory>::create(s.driver_mem, cfg, {});
    auto dev = Device<memory::view>::create(s.device_view, cfg);
    if (!drv || !dev) {
        state.SkipWithError("ring setup failed");
        return;
    }
    std::array<buffer, burst> bufs;
    std::array<request, burst> reqs;
    for (std::size_t i = 0; i < burst; ++i) {
        bufs[i] = {gpa + 0x10000 + i * buf_len, static_cast<std::uint32_t>(buf_len)};
        reqs[i] = {{}, std::span<const buffer>(&bufs[i], 1), i, false};
    }
    const std::size_t frame_len = static_cast<std::size_t>(state.range(1));
    const std::vector<std::byte> frame(frame_len, std::byte{0x5a});
    std::array<chain, burst> chains;
    std::array<used_element, burst> used;
    std::array<used_buffer, burst> reaped;
    for (auto _ : state) {
        const std::size_t a = drv->add_burst(reqs);
        const std::size_t n = dev->pop_burst(chains);
        for (std::size_t i = 0; i < n; ++i)
            used[i] = {chains[i].id(), static_cast<std::uint32_t>(chains[i].copy_to(frame))};
        dev->push_burst(std::span<const used_element>(used.data(), n));
        benchmark::DoNotOptimize(dev->needs_interrupt());
        const std::size_t r = drv->reap_burst(reaped);
        if (a != burst || n != burst || r != burst) state.SkipWithError("ring stalled");
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * burst));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * burst * frame_len));
    if (s.log && s.log->missed() != 0) state.SkipWithError("pages past the log's end");
}

void bm_split_receive(benchmark::State& state) { receive_bursts<split_config, split_driver, split_device>(state); }
void bm_packed_receive(benchmark::State& state) { receive_bursts<packed_config, packed_driver, packed_device>(state); }

void args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"log", "frame"});
    for (int frame : {64, 1500})
        for (int log : {0, 1}) b->Args({log, frame});
}
BENCHMARK(bm_split_receive)->Apply(args);
BENCHMARK(bm_packed_receive)->Apply(args);

// Prints the console report and remembers each case's rate, to print the ratios at the end.
class ratio_reporter : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run& r : runs) {
            if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
            const auto it = r.counters.find("items_per_second");
            if (it != r.counters.end()) rates_[r.benchmark_name()] = it->second.value;
        }
    }
    void print_ratios() const {
        std::printf("\nlogging on / off (frames per second):\n");
        for (const auto& [name, off] : rates_) {
            const auto at = name.find("log:0");
            if (at == std::string::npos) continue;
            std::string on_name = name;
            on_name.replace(at, 5, "log:1");
            const auto on = rates_.find(on_name);
            if (on == rates_.end() || off == 0) continue;
            std::printf("  %-40s off %6.2f Mpps  on %6.2f Mpps  ratio %.3f\n", on_name.c_str(), off / 1e6,
                        on->second / 1e6, on->second / off);
        }
    }

private:
    std::map<std::string, double> rates_;
};

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    ratio_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_ratios();
    benchmark::Shutdown();
    return 0;
}
