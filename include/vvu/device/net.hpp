// virtio-net data path on the device side (virtio 1.2 §5.1): frames leave the front-end through
// its transmit queues and reach it through its receive queues. Built on the ring layer only: a
// queue is any device-side ring (split_device, packed_device) over any memory policy.
//
// Direction words follow the port, not the guest: the back-end *receives* what the front-end
// transmitted (its TX queue, odd vring index) and *transmits* into the front-end's RX queue
// (even vring index).
#pragma once

#include <vvu/ring/chain.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace vvu::device::net {

// struct virtio_net_hdr (§5.1.6) with num_buffers: 12 bytes for VERSION_1 devices, whether or
// not MRG_RXBUF was negotiated (§5.1.6.1).
struct virtio_net_hdr {
    std::uint8_t flags = 0;
    std::uint8_t gso_type = 0;
    std::uint16_t hdr_len = 0;
    std::uint16_t gso_size = 0;
    std::uint16_t csum_start = 0;
    std::uint16_t csum_offset = 0;
    std::uint16_t num_buffers = 0;
};
static_assert(sizeof(virtio_net_hdr) == 12 && offsetof(virtio_net_hdr, num_buffers) == 10);

inline constexpr std::size_t net_hdr_size = sizeof(virtio_net_hdr);
// The header of a received frame in one buffer, as bytes: no offloads, num_buffers 1
// (little-endian, §5.1.6).
inline constexpr std::array<std::byte, net_hdr_size> one_buffer_header = [] {
    std::array<std::byte, net_hdr_size> h{};
    h[offsetof(virtio_net_hdr, num_buffers)] = std::byte{1};
    return h;
}();
// The largest frame vvu moves: 64 KiB of GSO payload plus an Ethernet header (§5.1.6.3).
inline constexpr std::size_t max_frame_size = 65550;

// How much of each frame in a burst is asked for ahead of the copies, with its header
// (ring::chain::prefetch_*): a small frame whole; a larger one streams once its copy starts.
inline constexpr std::size_t prefetch_bytes = 128;

// Per-port counters, as vvu-forward prints them.
struct port_stats {
    std::uint64_t rx_packets = 0; // frames taken from the front-end's transmit queues
    std::uint64_t rx_bytes = 0;
    std::uint64_t tx_packets = 0; // frames put into the front-end's receive queues
    std::uint64_t tx_bytes = 0;
    std::uint64_t tx_dropped = 0; // frames that found no (or too small) receive buffer
    std::uint64_t rx_errors = 0;  // transmit chains too short to hold a net header
};

// A frame without its net header.
using frame = std::span<const std::byte>;

// Per-burst working arrays, kept by the caller across bursts: a data path polls empty queues
// millions of times a second, and constructing these on each call would cost more than the
// poll itself.
struct burst_scratch {
    std::array<ring::chain, ring::max_burst> chains;
    // Used entries outlive the chain views (a pop invalidates the views, not the ids), so a
    // received frame may continue into a new burst of chains.
    std::array<ring::used_element, 2 * ring::max_burst> used;
};

// The length of the frame a transmit chain carries, counted in the port's receive counters;
// nullopt (counted as an error) when the chain cannot even hold a net header.
inline std::optional<std::size_t> take_frame(const ring::chain& c, port_stats& stats) noexcept {
    if (c.readable_bytes() < net_hdr_size) {
        ++stats.rx_errors;
        return std::nullopt;
    }
    const std::size_t len = std::min<std::size_t>(c.readable_bytes() - net_hdr_size, max_frame_size);
    ++stats.rx_packets;
    stats.rx_bytes += len;
    return len;
}

// What receive_burst took: frames copied out, and chains taken (a chain too short for a net
// header is taken without a frame).
struct received_chains {
    std::size_t frames = 0;
    std::size_t chains = 0;
};

// Where receive_burst leaves a frame.
enum class frame_placement {
    // Copied into the caller's staging area: the frame outlives its chain.
    staged,
    // Left in the front-end's buffer, viewed there, when its net header and frame lie in one
    // segment (the usual layout); staged otherwise. The view is valid while the chain is
    // taken, and the front-end may still write the bytes: for a caller that passes the frame
    // on (one copy, buffer to buffer) without deciding anything on bytes it read twice, and
    // whose destination is never the same mapping (the copy's source and target could overlap).
    in_place,
};

// Takes up to min(out.size(), taken.size()) chains from a transmit queue and returns their
// frames through `out`, each copied into `staging` (room for max_frame_size per frame; the
// frames are packed one after the other) or left where it is (frame_placement). The chains
// stay taken: their used entries are in `taken`, for the caller to give back
// (txq.push_burst(taken.first(chains))) once the frames are where they go — the front-end may
// reuse a completed chain, so completing it first would lose its frame to a crash in between.
template <class Queue>
received_chains receive_burst(Queue& txq, std::span<std::byte> staging, std::span<frame> out,
                              std::span<ring::used_element> taken, port_stats& stats, burst_scratch& scratch,
                              frame_placement placement = frame_placement::staged) {
    auto& chains = scratch.chains;
    const std::size_t want = std::min({out.size(), taken.size(), chains.size(), staging.size() / max_frame_size});
    const std::size_t n = txq.pop_burst(std::span(chains).first(want));
    for (std::size_t i = 0; i < n; ++i) chains[i].prefetch_readable(net_hdr_size + prefetch_bytes);
    std::size_t frames = 0, staged = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const ring::chain& c = chains[i];
        taken[i] = {c.id(), 0};
        const auto len = take_frame(c, stats);
        if (!len) continue;
        if (placement == frame_placement::in_place) {
            const ring::segment& first = c.readable().front(); // (take_frame: a header's worth)
            if (first.len >= net_hdr_size + *len) {
                out[frames++] = frame(first.data + net_hdr_size, *len);
                continue;
            }
        }
        // Frames follow each other in `staging`: a burst of small frames stays within a few
        // pages and cache sets (a max_frame_size stride put each one on its own page, every
        // one in the same L1 set). Sized for `want` frames of max_frame_size, it always fits.
        std::span<std::byte> slot = staging.subspan(staged, *len);
        staged += *len;
        c.copy_from(net_hdr_size, slot);
        out[frames++] = slot;
    }
    return {frames, n};
}

// Counts and drops up to max_burst frames from a transmit queue without copying them.
template <class Queue>
std::size_t drop_burst(Queue& txq, port_stats& stats, burst_scratch& scratch) {
    auto& chains = scratch.chains;
    auto& used = scratch.used;
    const std::size_t n = txq.pop_burst(chains);
    for (std::size_t i = 0; i < n; ++i) {
        used[i] = {chains[i].id(), 0};
        (void)take_frame(chains[i], stats);
    }
    txq.push_burst(std::span(used).first(n));
    return n;
}

namespace detail {
// Writes byte i of the header wherever the (possibly split) writable segments put it.
inline std::byte* writable_byte(const ring::chain& c, std::size_t offset) noexcept {
    for (const ring::segment& s : c.writable()) {
        if (offset < s.len) return s.data + offset;
        offset -= s.len;
    }
    return nullptr;
}
} // namespace detail

// Puts frames into a receive queue, each behind a net header; with MRG_RXBUF a frame may span
// several buffers (num_buffers says how many). Frames that find no buffer are dropped and
// counted. Returns how many frames were delivered.
template <class Queue>
std::size_t transmit_burst(Queue& rxq, std::span<const frame> frames, bool mrg_rxbuf, port_stats& stats,
                           burst_scratch& scratch) {
    auto& chains = scratch.chains;
    // Nothing is pushed while a frame is half written: its num_buffers is known at its end.
    auto& used = scratch.used;
    std::size_t popped = 0, next = 0, n_used = 0, delivered = 0;

    // The next receive chain, for frame f; a pop takes up to `want` at once.
    auto next_chain = [&](std::size_t f, std::size_t want) -> const ring::chain* {
        if (next == popped) {
            popped = rxq.pop_burst(std::span(chains).first(std::min(want, chains.size())));
            next = 0;
            if (popped == 0) return nullptr;
            // Chain i takes frame f + i (unless a frame spans buffers): ask for the lines its
            // header and frame will be written to, and no more.
            for (std::size_t i = 0; i < popped; ++i) {
                const std::size_t len = f + i < frames.size() ? frames[f + i].size() : 0;
                chains[i].prefetch_writable(net_hdr_size + std::min(len, prefetch_bytes));
            }
        }
        return &chains[next++];
    };

    for (std::size_t f = 0; f < frames.size(); ++f) {
        if (n_used >= ring::max_burst) {
            rxq.push_burst(std::span(used).first(n_used));
            n_used = 0;
        }
        const frame data = frames[f];
        const ring::chain* first = next_chain(f, frames.size() - f);
        if (!first) {
            stats.tx_dropped += frames.size() - f;
            break;
        }
        if (!mrg_rxbuf && first->writable_bytes() < net_hdr_size + data.size()) {
            used[n_used++] = {first->id(), 0};
            ++stats.tx_dropped;
            continue;
        }
        // The header and as much of the frame as the chain holds (chain::copy_to is one copy
        // each when the first buffer holds them, the usual case).
        const std::size_t written = first->copy_to(one_buffer_header);
        std::size_t sent = first->copy_to(written, data);
        used[n_used++] = {first->id(), static_cast<std::uint32_t>(written + sent)};
        if (mrg_rxbuf && sent < data.size()) {
            // The frame goes on in more buffers, and num_buffers says how many. It may sit in
            // any segment of the first chain: keep its bytes' addresses, which stay valid until
            // the chain is pushed (the chain view itself does not, past the next pop).
            std::byte* num_lo = detail::writable_byte(*first, offsetof(virtio_net_hdr, num_buffers));
            std::byte* num_hi = detail::writable_byte(*first, offsetof(virtio_net_hdr, num_buffers) + 1);
            std::uint16_t buffers = 1;
            while (sent < data.size() && n_used < used.size()) {
                const ring::chain* more = next_chain(f, 1);
                if (!more) break;
                const std::size_t n = more->copy_to(data.subspan(sent));
                used[n_used++] = {more->id(), static_cast<std::uint32_t>(n)};
                sent += n;
                ++buffers;
            }
            if (num_lo && num_hi) {
                *num_lo = static_cast<std::byte>(buffers & 0xff);
                *num_hi = static_cast<std::byte>(buffers >> 8);
            }
        }
        if (written < net_hdr_size || sent < data.size()) {
            ++stats.tx_dropped; // out of buffers mid-frame: the driver sees a short packet
            continue;
        }
        ++delivered;
        ++stats.tx_packets;
        stats.tx_bytes += data.size();
    }
    rxq.push_burst(std::span(used).first(n_used));
    return delivered;
}

} // namespace vvu::device::net
