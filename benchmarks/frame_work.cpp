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
#include "vvu/device/net.hpp"
#include "vvu/ring/ring.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

using namespace vvu::ring;
namespace net = vvu::device::net;

namespace {

constexpr std::uint32_t queue_size = 256;
constexpr std::size_t burst = 32, frame_len = 64, rx_buffer_len = 2048, buffer_stride = 2048;

template <bool Packed>
struct rings {
    explicit rings(ring_features f) : features(f) {}
    ring_features features;
    std::vector<std::byte> bytes = std::vector<std::byte>(2u << 20);
    local_memory mem{bytes};
    std::uint64_t base = mem.base();
    using driver_t = std::conditional_t<Packed, packed_driver<local_memory>, split_driver<local_memory>>;
    using device_t = std::conditional_t<Packed, packed_device<local_memory>, split_device<local_memory>>;
    auto config() const {
        if constexpr (Packed) return packed_config{queue_size, base, base + 16 * queue_size, base + 16 * queue_size + 4, features, 0};
        else return split_config{queue_size, base, base + 16 * queue_size, base + 32 * queue_size, features, 0};
    }
    driver_t driver = *driver_t::create(mem, config());
    device_t device = *device_t::create(mem, config());
    std::uint64_t buffer(std::size_t i) const { return base + (64u << 10) + i * buffer_stride; }
};

// The counted functions: out of line, so that callgrind's inclusive cost of each is the device
// side alone.
template <class Device>
[[gnu::noinline]] std::size_t device_transmit(Device& d, std::span<const net::frame> frames, net::port_stats& stats,
                                              net::burst_scratch& scratch) {
    return net::transmit_burst(d, frames, false, stats, scratch);
}
template <class Device>
[[gnu::noinline]] std::size_t device_receive(Device& d, std::span<std::byte> staging, std::span<net::frame> out,
                                             std::span<used_element> taken, net::port_stats& stats,
                                             net::burst_scratch& scratch) {
    const auto got = net::receive_burst(d, staging, out, taken, stats, scratch);
    d.push_burst(taken.first(got.chains));
    return got.frames;
}

template <bool Packed>
bool to_frontend(ring_features f, long bursts) {
    rings<Packed> r(f);
    std::array<buffer, queue_size> bufs;
    for (std::size_t i = 0; i < queue_size; ++i) {
        bufs[i] = {r.buffer(i), static_cast<std::uint32_t>(rx_buffer_len)};
        if (!r.driver.add({}, {&bufs[i], 1}, i)) return false;
    }
    std::array<std::byte, frame_len> payload{};
    std::array<net::frame, burst> frames;
    frames.fill(net::frame(payload));
    net::port_stats stats;
    net::burst_scratch scratch;
    std::array<used_buffer, burst> reaped;
    for (long b = 0; b < bursts; ++b) {
        const std::size_t sent = device_transmit(r.device, frames, stats, scratch);
        const std::size_t n = r.driver.reap_burst(reaped);
        for (std::size_t i = 0; i < n; ++i) (void)r.driver.add({}, {&bufs[reaped[i].token], 1}, reaped[i].token);
        if (sent != burst || n != burst) return false;
    }
    return true;
}

template <bool Packed>
bool from_frontend(ring_features f, long bursts) {
    rings<Packed> r(f);
    std::array<buffer, queue_size> bufs;
    for (std::size_t i = 0; i < queue_size; ++i)
        bufs[i] = {r.buffer(i), static_cast<std::uint32_t>(net::net_hdr_size + frame_len)};
    auto staging = std::make_unique<std::byte[]>(burst * net::max_frame_size);
    std::array<net::frame, burst> out;
    std::array<used_element, burst> taken;
    net::port_stats stats;
    net::burst_scratch scratch;
    std::array<used_buffer, burst> reaped;
    std::size_t next = 0;
    for (long b = 0; b < bursts; ++b) {
        for (std::size_t i = 0; i < burst; ++i, next = (next + 1) % queue_size)
            if (!r.driver.add({&bufs[next], 1}, {}, next)) return false;
        const std::size_t got = device_receive(r.device, std::span(staging.get(), burst * net::max_frame_size),
                                               std::span(out), std::span(taken), stats, scratch);
        const std::size_t n = r.driver.reap_burst(reaped);
        if (got != burst || n != burst) return false;
    }
    return true;
}

} // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: vvu-frame-work to-frontend|from-frontend split|packed [--in-order] [--bursts N]\n";
    if (argc < 3) { std::fputs(usage, stderr); return 2; }
    const std::string_view direction = argv[1], ring = argv[2];
    ring_features features{};
    long bursts = 10000;
    for (int i = 3; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--in-order") features.in_order = true;
        else if (a == "--bursts" && i + 1 < argc) bursts = std::strtol(argv[++i], nullptr, 10);
        else { std::fputs(usage, stderr); return 2; }
    }
    if (bursts <= 0 || (ring != "split" && ring != "packed") || (direction != "to-frontend" && direction != "from-frontend")) {
        std::fputs(usage, stderr);
        return 2;
    }
    const bool packed = ring == "packed";
    const bool ok = direction == "to-frontend" ? (packed ? to_frontend<true>(features, bursts) : to_frontend<false>(features, bursts))
                                               : (packed ? from_frontend<true>(features, bursts) : from_frontend<false>(features, bursts));
    if (!ok) { std::fputs("vvu-frame-work: the ring stalled\n", stderr); return 1; }
    std::printf("%ld frames\n", bursts * static_cast<long>(burst));
    return 0;
}
