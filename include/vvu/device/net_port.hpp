// A virtio-net device for protocol::backend: features, config space, and the started vrings
// of one port, which a forwarding thread polls. It models protocol::device.
//
// Threads: the control thread (the port's backend) starts and stops vrings; data threads poll
// them, each its own queue pairs (queue_share: vvu-forward --threads). A mutex per queue pair,
// taken once per burst by the data thread (from receiving a burst until its TX chains are given
// back), is what makes stop_vring() return only when the data path no longer touches the vring
// or its memory, and never with chains of a burst held — and what lets two threads move frames
// through two queue pairs of one port at once.
#pragma once

#include <vvu/device/net.hpp>
#include <vvu/protocol/kick_wait.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/range.hpp>
#include <vvu/wire/features.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace vvu::device::net {

// virtio_net_config (virtio 1.2 §5.1.4), the fields a vhost-user net back-end can answer.
struct net_config {
    std::array<std::uint8_t, 6> mac{};
    std::uint16_t status = 1; // VIRTIO_NET_S_LINK_UP
    std::uint16_t max_virtqueue_pairs = 1;
    std::uint16_t mtu = 1500;
};
inline constexpr std::size_t net_config_size = 12;

// The queue pairs one data thread serves: q with q % count == index (vvu-forward --threads N
// gives thread i the share {i, N}). Threads with different shares never take the same queue
// pair's lock, and a thread moving frames from queue pair q of one port into another port
// uses that port's queue pair q (so a thread only ever holds locks of its own queue pairs).
struct queue_share {
    std::uint32_t index = 0;
    std::uint32_t count = 1;
    [[nodiscard]] constexpr bool has(std::uint32_t queue) const noexcept { return queue % count == index; }
};

class net_port {
public:
    struct options {
        std::uint32_t queue_pairs = 1;
        std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
    };

    explicit net_port(options o) : options_(o), vrings_(2 * o.queue_pairs) {
        for (std::uint32_t q = 0; q < o.queue_pairs; ++q) pairs_.push_back(std::make_unique<queue_pair>());
    }

    // ---------------------------------------------------------------- protocol::device
    std::uint64_t features() const noexcept {
        using namespace wire::net_feature;
        std::uint64_t f = mrg_rxbuf | status;
        // Multiqueue front-ends (DPDK virtio-user) want a control queue offered; they and QEMU
        // handle it themselves, so it never reaches the back-end.
        if (options_.queue_pairs > 1) f |= mq | ctrl_vq;
        return f;
    }
    std::uint64_t protocol_features() const noexcept {
        return wire::protocol_feature::config | wire::protocol_feature::rarp | wire::protocol_feature::net_mtu;
    }
    std::uint32_t vring_count() const noexcept { return 2 * options_.queue_pairs; }
    std::uint64_t max_queues() const noexcept { return options_.queue_pairs; }
    std::uint32_t queue_pairs() const noexcept { return options_.queue_pairs; }

    void set_features(std::uint64_t acked) noexcept {
        mrg_rxbuf_.store(wire::has(acked, wire::net_feature::mrg_rxbuf), std::memory_order_relaxed);
    }

    bool read_config(std::uint32_t offset, std::span<std::uint8_t> out) const noexcept {
        std::array<std::uint8_t, net_config_size> image{};
        std::copy(options_.mac.begin(), options_.mac.end(), image.begin());
        image[6] = 1; // link up
        image[8] = static_cast<std::uint8_t>(options_.queue_pairs);
        image[9] = static_cast<std::uint8_t>(options_.queue_pairs >> 8);
        const std::uint16_t mtu = mtu_.load(std::memory_order_relaxed);
        image[10] = static_cast<std::uint8_t>(mtu & 0xff);
        image[11] = static_cast<std::uint8_t>(mtu >> 8);
        if (!range_within(offset, out.size(), image.size())) return false;
        std::copy_n(image.begin() + offset, out.size(), out.begin());
        return true;
    }
    bool write_config(std::uint32_t, std::span<const std::uint8_t>) noexcept { return false; } // read-only

    // SEND_RARP: after a migration, announce the guest's MAC (the first 6 bytes of the u64) with
    // a RARP broadcast, sent on as if the guest had sent it, so that switches learn where it is.
    void send_rarp(std::uint64_t mac_bytes) {
        std::array<std::uint8_t, 6> mac{};
        for (std::size_t i = 0; i < 6; ++i) mac[i] = static_cast<std::uint8_t>(mac_bytes >> (8 * i));
        std::lock_guard lock(pending_mutex_);
        pending_.assign(60, std::byte{0});
        auto put = [&](std::size_t off, std::uint8_t v) { pending_[off] = static_cast<std::byte>(v); };
        for (std::size_t i = 0; i < 6; ++i) {
            put(i, 0xff);          // broadcast
            put(6 + i, mac[i]);    // from the guest
            put(22 + i, mac[i]);   // sender hardware address
            put(32 + i, mac[i]);   // target hardware address
        }
        put(12, 0x80), put(13, 0x35);                       // EtherType RARP
        put(15, 1), put(16, 0x08), put(18, 6), put(19, 4);  // Ethernet / IPv4, lengths 6 and 4
        put(21, 3);                                         // op 3: reverse request (RFC 903)
        has_pending_.store(true, std::memory_order_release);
    }
    // NET_SET_MTU: the MTU the device reports in its config space (virtio 1.2 §5.1.4).
    bool set_mtu(std::uint64_t mtu) noexcept {
        if (mtu < 68 || mtu > 65535) return false;
        mtu_.store(static_cast<std::uint16_t>(mtu), std::memory_order_relaxed);
        return true;
    }

    void start_vring(std::unique_ptr<protocol::vring> v) {
        // The data path polls: a front-end need not kick (a syscall per burst on its side)
        // until event mode asks for kicks before sleeping.
        v->visit([](auto& ring) { ring.disable_notifications(); });
        const auto i = v->index();
        std::lock_guard lock(pair_of(i).mutex);
        vrings_[i] = std::move(v);
    }
    std::unique_ptr<protocol::vring> stop_vring(std::uint32_t index) {
        std::lock_guard lock(pair_of(index).mutex);
        return std::move(vrings_[index]);
    }
    void reset() {
        for (std::uint32_t i = 0; i < vrings_.size(); ++i) (void)stop_vring(i);
        mrg_rxbuf_.store(false, std::memory_order_relaxed);
    }

    // ---------------------------------------------------------------------- data path
    // Moving a frame on takes three steps, so that a crash of the back-end loses none: a TX
    // chain given back is the front-end's licence to reuse it, so it is given back only once
    // its frame is in the destination's RX ring (or dropped for a reason that is no crash).
    //
    //   auto burst = port.receive(staging, frames);  // frames copied out, their TX chains kept
    //   other.transmit(frames.first(burst.size()));  // into RX chains, completed there
    //   burst.complete();                            // the TX chains go back (else its destructor)
    //
    // A back-end killed in between leaves the TX chains taken, not completed: the next one takes
    // them again (split rings with an inflight area: ring/inflight.hpp; front-ends that resume
    // at the used index: protocol/vring.hpp) and sends their frames again. So delivery is at
    // least once: killed after transmit() and before complete(), the burst's frames arrive twice.
    //
    // A received_burst holds its queue pair (its mutex) until it completes: a vring does not
    // stop with chains held, and a pass of the data path ends with none in flight (live
    // update). The data thread may meanwhile transmit into this port (loopback) or others.
    class received_burst {
    public:
        received_burst(received_burst&& o) noexcept
            : port_(std::exchange(o.port_, nullptr)), queue_(o.queue_), frames_(o.frames_), lock_(std::move(o.lock_)) {}
        received_burst& operator=(received_burst&&) = delete;
        ~received_burst() { complete(); }

        // Frames received (in the `out` given to receive()).
        std::size_t size() const noexcept { return frames_; }
        // Gives the burst's TX chains back and lets the port go.
        void complete() noexcept {
            if (port_ == nullptr) return;
            std::exchange(port_, nullptr)->complete_received(queue_);
            lock_.unlock();
        }

    private:
        friend class net_port;
        received_burst(net_port& p, std::uint32_t queue, std::unique_lock<std::recursive_mutex> lock,
                       std::size_t frames) noexcept
            : port_(&p), queue_(queue), frames_(frames), lock_(std::move(lock)) {}
        net_port* port_;
        std::uint32_t queue_;
        std::size_t frames_;
        std::unique_lock<std::recursive_mutex> lock_;
    };

    // Frames the front-end transmitted on queue pair `queue` (its TX vring, 2q+1), into `out`
    // (copied into `staging`, room for max_frame_size each, or left in the front-end's buffers:
    // net::frame_placement); their chains stay taken until the burst completes, so frames left
    // in place stay readable until then. Queue pair 0 also brings a pending RARP. A disabled TX
    // vring is drained and its frames discarded ("Ring states").
    [[nodiscard]] received_burst receive(std::span<std::byte> staging, std::span<frame> out, std::uint32_t queue = 0,
                                         frame_placement placement = frame_placement::staged) {
        queue_pair& qp = *pairs_[queue];
        std::unique_lock lock(qp.mutex);
        std::size_t n = 0;
        if (queue == 0 && has_pending_.load(std::memory_order_acquire) && !out.empty() && staging.size() >= max_frame_size) {
            std::lock_guard pending_lock(pending_mutex_); // a RARP to announce
            std::copy(pending_.begin(), pending_.end(), staging.begin());
            out[n++] = staging.first(pending_.size());
            has_pending_.store(false, std::memory_order_relaxed);
        }
        auto& v = vrings_[2 * queue + 1];
        if (!v || n == out.size()) return received_burst(*this, queue, std::move(lock), n);
        if (!v->enabled()) {
            v->visit([&](auto& ring) { drop_burst(ring, qp.discarded, qp.scratch); });
            v->notify();
            return received_burst(*this, queue, std::move(lock), n);
        }
        received_chains got;
        v->visit([&](auto& ring) {
            got = receive_burst(ring, staging.subspan(n * max_frame_size), out.subspan(n), std::span(qp.held), qp.stats,
                                qp.scratch, placement);
        });
        qp.held_chains = got.chains;
        return received_burst(*this, queue, std::move(lock), n + got.frames);
    }

    // Counts and drops what the front-end transmitted on queue pair `queue`, without copying
    // (rxonly).
    std::size_t discard(std::uint32_t queue) {
        queue_pair& qp = *pairs_[queue];
        std::lock_guard lock(qp.mutex);
        auto& v = vrings_[2 * queue + 1];
        if (!v) return 0;
        std::size_t n = 0;
        v->visit([&](auto& ring) { n = drop_burst(ring, v->enabled() ? qp.stats : qp.discarded, qp.scratch); });
        v->notify();
        return n;
    }
    // The same on every queue pair.
    std::size_t discard() {
        std::size_t n = 0;
        for (std::uint32_t q = 0; q < options_.queue_pairs; ++q) n += discard(q);
        return n;
    }

    // Frames for the front-end, into its RX vring of queue pair `queue` (vring 2q). Nothing
    // is supplied to a stopped or disabled RX vring: the frames count as dropped.
    // `count_drops` is false for generated traffic, which is only ever as much as fits.
    std::size_t transmit(std::span<const frame> frames, std::uint32_t queue = 0, bool count_drops = true) {
        queue %= options_.queue_pairs;
        queue_pair& qp = *pairs_[queue];
        std::lock_guard lock(qp.mutex);
        auto& v = vrings_[2 * queue];
        if (!v || !v->enabled()) {
            if (count_drops) qp.stats.tx_dropped += frames.size();
            return 0;
        }
        port_stats burst;
        std::size_t sent = 0;
        const bool mrg_rxbuf = mrg_rxbuf_.load(std::memory_order_relaxed);
        v->visit([&](auto& ring) { sent = transmit_burst(ring, frames, mrg_rxbuf, burst, qp.scratch); });
        qp.stats.tx_packets += burst.tx_packets;
        qp.stats.tx_bytes += burst.tx_bytes;
        if (count_drops) qp.stats.tx_dropped += burst.tx_dropped;
        v->notify();
        return sent;
    }

    // Event mode, before the data thread sleeps: asks the front-end to kick the TX vrings of
    // the thread's queue pairs again and arms their kick fds in `kicks`. False when sleeping
    // would miss work — a frame arrived meanwhile, a frame is pending, or a vring is polled
    // without a kick fd.
    bool arm_kicks(protocol::kick_wait& kicks, queue_share share = {}) {
        if (share.has(0) && has_pending_.load(std::memory_order_acquire)) return false;
        for (std::uint32_t q = share.index; q < options_.queue_pairs; q += share.count) {
            std::lock_guard lock(pairs_[q]->mutex);
            if (auto& v = vrings_[2 * q + 1]; v && !kicks.arm(*v)) return false;
        }
        return true;
    }
    // After waking: back to polling without kicks, and the kicks that woke us consumed.
    void disarm_kicks(queue_share share = {}) {
        for (std::uint32_t q = share.index; q < options_.queue_pairs; q += share.count) {
            std::lock_guard lock(pairs_[q]->mutex);
            if (auto& v = vrings_[2 * q + 1]) protocol::kick_wait::disarm(*v);
        }
    }

    // The port's counters: its queue pairs' summed.
    port_stats stats() const {
        port_stats sum;
        for (const auto& qp : pairs_) {
            std::lock_guard lock(qp->mutex);
            for (auto [total, part] : {std::pair{&sum.rx_packets, qp->stats.rx_packets}, {&sum.rx_bytes, qp->stats.rx_bytes},
                                       {&sum.tx_packets, qp->stats.tx_packets}, {&sum.tx_bytes, qp->stats.tx_bytes},
                                       {&sum.tx_dropped, qp->stats.tx_dropped}, {&sum.rx_errors, qp->stats.rx_errors}})
                *total += part;
        }
        return sum;
    }

    // Frames the front-end sent on a TX vring while it was disabled: drained and discarded, as
    // the vhost-user spec asks ("Ring states"), and not the port's traffic.
    std::uint64_t discarded() const {
        std::uint64_t n = 0;
        for (const auto& qp : pairs_) {
            std::lock_guard lock(qp->mutex);
            n += qp->discarded.rx_packets;
        }
        return n;
    }

    // Live update (protocol::backend::export_session / import_session): the port's counters
    // and MTU, so the port's numbers run on in the new process, and a pending RARP.
    std::vector<std::byte> save_state() const {
        const port_stats s = stats();
        byte_writer w;
        w.put<std::uint32_t>(1); // this layout's version
        for (std::uint64_t v : {s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, s.tx_dropped, s.rx_errors})
            w.put<std::uint64_t>(v);
        w.put<std::uint16_t>(mtu_.load(std::memory_order_relaxed));
        std::lock_guard lock(pending_mutex_);
        const bool pending = has_pending_.load(std::memory_order_acquire);
        w.put_bytes(pending ? std::span<const std::byte>(pending_) : std::span<const std::byte>{});
        return w.take();
    }
    bool load_state(std::span<const std::byte> bytes) {
        byte_reader r(bytes);
        if (r.get<std::uint32_t>() != 1) return false;
        port_stats s;
        for (std::uint64_t* v : {&s.rx_packets, &s.rx_bytes, &s.tx_packets, &s.tx_bytes, &s.tx_dropped, &s.rx_errors})
            *v = r.get<std::uint64_t>();
        const auto mtu = r.get<std::uint16_t>();
        const auto pending = r.get_bytes(max_frame_size);
        if (!r.done() || mtu < 68) return false;
        for (std::size_t q = 0; q < pairs_.size(); ++q) { // the sums, on queue pair 0
            std::lock_guard lock(pairs_[q]->mutex);
            pairs_[q]->stats = q == 0 ? s : port_stats{};
        }
        mtu_.store(mtu, std::memory_order_relaxed);
        std::lock_guard lock(pending_mutex_);
        pending_.assign(pending.begin(), pending.end());
        has_pending_.store(!pending.empty(), std::memory_order_release);
        return true;
    }

private:
    // One queue pair's data-path state: its vrings (vrings_[2q], [2q+1]) are touched only under
    // its mutex.
    struct queue_pair {
        // Recursive: the data thread, holding the pair in a received_burst, may transmit into
        // its RX vring (loopback).
        mutable std::recursive_mutex mutex;
        port_stats stats;
        port_stats discarded;  // frames of a disabled TX vring: not the port's traffic
        burst_scratch scratch; // the data thread's
        // The TX chains of the received_burst in progress.
        std::array<ring::used_element, ring::max_burst> held{};
        std::size_t held_chains = 0;
    };
    queue_pair& pair_of(std::uint32_t vring) noexcept { return *pairs_[vring / 2]; }

    // The end of a received_burst, under its pair's mutex: the TX vring gets its chains back in
    // one push. No other thread can have stopped the vring meanwhile (the burst held the mutex).
    void complete_received(std::uint32_t queue) noexcept {
        queue_pair& qp = *pairs_[queue];
        if (auto& v = vrings_[2 * queue + 1]; v && qp.held_chains != 0) {
            v->visit([&](auto& ring) { ring.push_burst(std::span(qp.held).first(qp.held_chains)); });
            v->notify();
        }
        qp.held_chains = 0;
    }

    options options_;
    std::vector<std::unique_ptr<protocol::vring>> vrings_;
    std::vector<std::unique_ptr<queue_pair>> pairs_;
    std::atomic<bool> mrg_rxbuf_{false};
    mutable std::mutex pending_mutex_;
    std::vector<std::byte> pending_; // a frame to send on as the front-end's (SEND_RARP), under pending_mutex_
    std::atomic<bool> has_pending_{false};
    std::atomic<std::uint16_t> mtu_{1500};
};

} // namespace vvu::device::net
