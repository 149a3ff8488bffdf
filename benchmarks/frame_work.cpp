// vvu-frame-work: the device side of the net data path over a fixed number of 64 B frames, in
// one thread, for counting the instructions it executes per frame (benchmarks/instructions.sh
// runs it under callgrind). An instruction count does not move with the host's load, the
// placement of the vCPUs or their clock, which move every timed figure on a shared VM
// (docs/performance.md); it is not a speed (cache misses are not in it), but it compares two
// versions of the code, or the split and packed rings, exactly.
//
//   vvu-frame-work to-frontend|from-frontend split|packed [--in-order] [--bursts N]
//
//   to-frontend:   net::transmit_burst (take a 2 KiB receive buffer, write the net header and
//                  the frame, complete it: what txonly and forwarding do toward a front-end)
//   from-frontend: net::receive_burst + push_burst (take a transmit chain, copy the frame into
//                  the staging area, complete it: what rxonly --rx copy does)
// Bursts of 32; the driver side (posting and reaping buffers) runs between the bursts but
// outside the counted functions, device_transmit and device_receive.
#include "net_loops.hpp"

#include <cstdio>
#include <cstdlib>
#include <string_view>

using namespace vvu;
namespace net = vvu::device::net;

namespace {

// The counted functions: out of line, so that callgrind's inclusive cost of each is the device
// side alone.
template <bool Packed>
[[gnu::noinline]] std::size_t device_transmit(typename bench::net_rings<Packed>::device_t& d,
                                              std::span<const net::frame> frames, bool mrg_rxbuf,
                                              net::port_stats& stats, net::burst_scratch& scratch) {
    return net::transmit_burst(d, frames, mrg_rxbuf, stats, scratch);
}
template <bool Packed>
[[gnu::noinline]] std::size_t device_receive(typename bench::net_rings<Packed>::device_t& d, std::span<std::byte> staging,
                                             std::span<net::frame> out, std::span<ring::used_element> taken,
                                             net::port_stats& stats, net::burst_scratch& scratch) {
    return bench::from_frontend_loop<Packed>::receive_and_complete(d, staging, out, taken, stats, scratch);
}

template <bool Packed>
bool to_frontend(ring::ring_features f, long bursts) {
    bench::to_frontend_loop<Packed> loop(f);
    if (!loop.ready()) return false;
    for (long b = 0; b < bursts; ++b)
        if (!loop.burst(device_transmit<Packed>)) return false;
    return true;
}

template <bool Packed>
bool from_frontend(ring::ring_features f, long bursts) {
    bench::from_frontend_loop<Packed> loop(f);
    for (long b = 0; b < bursts; ++b)
        if (!loop.burst(device_receive<Packed>)) return false;
    return true;
}

} // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: vvu-frame-work to-frontend|from-frontend split|packed [--in-order] [--bursts N]\n";
    if (argc < 3) { std::fputs(usage, stderr); return 2; }
    const std::string_view direction = argv[1], ring_kind = argv[2];
    ring::ring_features features{};
    long bursts = 10000;
    for (int i = 3; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--in-order") features.in_order = true;
        else if (a == "--bursts" && i + 1 < argc) bursts = std::strtol(argv[++i], nullptr, 10);
        else { std::fputs(usage, stderr); return 2; }
    }
    if (bursts <= 0 || (ring_kind != "split" && ring_kind != "packed") || (direction != "to-frontend" && direction != "from-frontend")) {
        std::fputs(usage, stderr);
        return 2;
    }
    const bool packed = ring_kind == "packed";
    const bool ok = direction == "to-frontend" ? (packed ? to_frontend<true>(features, bursts) : to_frontend<false>(features, bursts))
                                               : (packed ? from_frontend<true>(features, bursts) : from_frontend<false>(features, bursts));
    if (!ok) { std::fputs("vvu-frame-work: the ring stalled\n", stderr); return 1; }
    std::printf("%ld frames\n", bursts * static_cast<long>(bench::burst_frames));
    return 0;
}
