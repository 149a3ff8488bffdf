// vvu-core-latency: how long one cache line takes to travel from one CPU to another and back.
//
//   vvu-core-latency [CPU-A CPU-B] [--round-trips N]      (default: CPUs 0 and 1, 200000)
//
// Two threads, pinned to CPU-A and CPU-B, hand a counter back and forth through one cache line;
// the figure printed is the median over 9 batches of the nanoseconds per round trip. A
// front-end and a back-end on two CPUs exchange ring indices, descriptors and frames the same
// way, so this bounds how fast any vhost-user back-end can go on the pair of CPUs, whoever wrote
// it. On a virtual machine the figure moves with where the host puts the two vCPUs (two hardware
// threads of one core share their L1 and L2; two cores meet in the L3), and the throughput
// benchmarks print it beside every round (benchmarks/dpdk/).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

namespace {

struct alignas(64) line {
    std::atomic<std::uint64_t> value{0};
};

bool pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// One batch: `trips` round trips. The first thread writes odd values and waits for the next
// even one; the second answers each odd value with the next even one.
double batch_ns_per_trip(int cpu_a, int cpu_b, std::uint64_t trips) {
    line shared;
    std::atomic<bool> pinned_ok{true};
    std::thread answer([&] {
        if (!pin(cpu_b)) pinned_ok = false;
        for (std::uint64_t i = 0; i < trips; ++i) {
            const std::uint64_t want = 2 * i + 1;
            while (shared.value.load(std::memory_order_acquire) != want) {
                if (!pinned_ok.load(std::memory_order_relaxed)) return;
            }
            shared.value.store(want + 1, std::memory_order_release);
        }
    });
    if (!pin(cpu_a)) pinned_ok = false;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < trips && pinned_ok; ++i) {
        shared.value.store(2 * i + 1, std::memory_order_release);
        while (shared.value.load(std::memory_order_acquire) != 2 * i + 2) {
            if (!pinned_ok.load(std::memory_order_relaxed)) break;
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    answer.join();
    if (!pinned_ok) return -1;
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / double(trips);
}

} // namespace

int main(int argc, char** argv) {
    int cpus[2] = {0, 1};
    int n_cpus = 0;
    std::uint64_t trips = 200000;
    const auto usage = [] {
        std::fprintf(stderr, "usage: vvu-core-latency [CPU-A CPU-B] [--round-trips N]\n");
        return 2;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        char* end = nullptr;
        if (a == "--round-trips" && i + 1 < argc) {
            trips = std::strtoull(argv[++i], &end, 10);
            if (*end != '\0' || trips == 0) {
                std::fprintf(stderr, "vvu-core-latency: --round-trips takes a positive number\n");
                return 2;
            }
        } else if (n_cpus < 2) {
            const long cpu = std::strtol(a.c_str(), &end, 10);
            if (a.empty() || *end != '\0' || cpu < 0 || cpu >= CPU_SETSIZE) return usage();
            cpus[n_cpus++] = static_cast<int>(cpu);
        } else {
            return usage();
        }
    }
    if (n_cpus == 1 || cpus[0] == cpus[1]) {
        // On one CPU the two threads take turns at the scheduler's pace: nothing to measure.
        std::fprintf(stderr, "vvu-core-latency: give two different CPUs, or none\n");
        return 2;
    }
    std::vector<double> batches;
    for (int b = 0; b < 9; ++b) {
        const double ns = batch_ns_per_trip(cpus[0], cpus[1], trips / 9 + 1);
        if (ns < 0) {
            std::fprintf(stderr, "vvu-core-latency: cannot run on CPUs %d and %d\n", cpus[0], cpus[1]);
            return 1;
        }
        batches.push_back(ns);
    }
    std::sort(batches.begin(), batches.end());
    std::printf("%.1f\n", batches[batches.size() / 2]);
    return 0;
}
