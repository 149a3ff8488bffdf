// The net data path's two loops over one ring in one thread, shared by vvu-bench-net (timed)
// and vvu-frame-work (instructions counted): a driver and a device on a ring of 256 in local
// memory, 64 B frames in bursts of 32.
//   to_frontend_loop:   the driver posts 2 KiB receive buffers (one descriptor each); a burst is
//                       the device's transmit (net::transmit_burst), then the driver reaps the
//                       buffers and posts them again.
//   from_frontend_loop: the driver posts 32 transmit buffers (net header + frame, one
//                       descriptor each); a burst is the device's receive (net::receive_burst
//                       into a staging area, push_burst), then the driver reaps them.
// burst() takes the device's step as a callable, so that a caller can keep it out of line.
#pragma once

#include "vvu/device/net.hpp"
#include "vvu/ring/ring.hpp"

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

namespace vvu::bench {

inline constexpr std::uint32_t queue_size = 256;
inline constexpr std::size_t burst_frames = 32, frame_len = 64, rx_buffer_len = 2048, buffer_stride = 2048;

template <bool Packed>
struct net_rings {
    using driver_t = std::conditional_t<Packed, ring::packed_driver<ring::local_memory>, ring::split_driver<ring::local_memory>>;
    using device_t = std::conditional_t<Packed, ring::packed_device<ring::local_memory>, ring::split_device<ring::local_memory>>;

    explicit net_rings(ring::ring_features f) : features(f) {}

    ring::ring_features features;
    std::vector<std::byte> bytes = std::vector<std::byte>(2u << 20);
    ring::local_memory mem{bytes};
    std::uint64_t base = mem.base();
    driver_t driver = *driver_t::create(mem, config());
    device_t device = *device_t::create(mem, config());

    auto config() const {
        if constexpr (Packed)
            return ring::packed_config{queue_size, base, base + 16 * queue_size, base + 16 * queue_size + 4, features, 0};
        else
            return ring::split_config{queue_size, base, base + 16 * queue_size, base + 32 * queue_size, features, 0};
    }
    std::uint64_t buffer(std::size_t i) const { return base + (64u << 10) + i * buffer_stride; }
};

template <bool Packed>
class to_frontend_loop {
public:
    using device_t = typename net_rings<Packed>::device_t;

    explicit to_frontend_loop(ring::ring_features f = {}, bool mrg_rxbuf = false) : rings_(f), mrg_rxbuf_(mrg_rxbuf) {
        for (std::size_t i = 0; i < queue_size; ++i) {
            bufs_[i] = {rings_.buffer(i), static_cast<std::uint32_t>(rx_buffer_len)};
            ready_ = ready_ && rings_.driver.add({}, {&bufs_[i], 1}, i);
        }
        frames_.fill(device::net::frame(payload_));
    }
    bool ready() const { return ready_; }

    // One burst; false when the ring stalled. transmit(device, frames, mrg_rxbuf, stats, scratch)
    // returns the frames sent, as net::transmit_burst does.
    template <class Transmit>
    bool burst(Transmit&& transmit) {
        const std::size_t sent = transmit(rings_.device, std::span<const device::net::frame>(frames_), mrg_rxbuf_, stats_, scratch_);
        const std::size_t n = rings_.driver.reap_burst(reaped_);
        for (std::size_t i = 0; i < n; ++i) (void)rings_.driver.add({}, {&bufs_[reaped_[i].token], 1}, reaped_[i].token);
        return sent == burst_frames && n == burst_frames;
    }
    bool burst() { return burst(device::net::transmit_burst<device_t>); }

private:
    net_rings<Packed> rings_;
    bool mrg_rxbuf_;
    bool ready_ = true;
    std::array<ring::buffer, queue_size> bufs_;
    std::array<std::byte, frame_len> payload_{};
    std::array<device::net::frame, burst_frames> frames_;
    device::net::port_stats stats_;
    device::net::burst_scratch scratch_;
    std::array<ring::used_buffer, burst_frames> reaped_;
};

template <bool Packed>
class from_frontend_loop {
public:
    using device_t = typename net_rings<Packed>::device_t;

    explicit from_frontend_loop(ring::ring_features f = {}) : rings_(f) {
        for (std::size_t i = 0; i < queue_size; ++i)
            bufs_[i] = {rings_.buffer(i), static_cast<std::uint32_t>(device::net::net_hdr_size + frame_len)};
    }

    // One burst; false when the ring stalled. receive(device, staging, out, taken, stats,
    // scratch) takes and completes the chains and returns the frames received.
    template <class Receive>
    bool burst(Receive&& receive) {
        for (std::size_t i = 0; i < burst_frames; ++i, next_ = (next_ + 1) % queue_size)
            if (!rings_.driver.add({&bufs_[next_], 1}, {}, next_)) return false;
        const std::size_t got = receive(rings_.device, std::span(staging_.get(), staging_size), std::span(out_),
                                        std::span(taken_), stats_, scratch_);
        const std::size_t n = rings_.driver.reap_burst(reaped_);
        return got == burst_frames && n == burst_frames;
    }
    bool burst() { return burst(receive_and_complete); }

    // What the last burst received (views into the staging area).
    const std::array<device::net::frame, burst_frames>& frames() const { return out_; }

    static std::size_t receive_and_complete(device_t& d, std::span<std::byte> staging, std::span<device::net::frame> out,
                                            std::span<ring::used_element> taken, device::net::port_stats& stats,
                                            device::net::burst_scratch& scratch) {
        const auto got = device::net::receive_burst(d, staging, out, taken, stats, scratch);
        d.push_burst(taken.first(got.chains));
        return got.frames;
    }

private:
    static constexpr std::size_t staging_size = burst_frames * device::net::max_frame_size;
    net_rings<Packed> rings_;
    std::array<ring::buffer, queue_size> bufs_;
    std::unique_ptr<std::byte[]> staging_ = std::make_unique<std::byte[]>(staging_size);
    std::array<device::net::frame, burst_frames> out_;
    std::array<ring::used_element, burst_frames> taken_;
    device::net::port_stats stats_;
    device::net::burst_scratch scratch_;
    std::array<ring::used_buffer, burst_frames> reaped_;
    std::size_t next_ = 0;
};

} // namespace vvu::bench
