// A virtio-net device for protocol::backend: features, config space, and the started vrings
// of one port, which a forwarding thread polls. It models protocol::device.
//
// Threads: the control thread (the port's backend) starts and stops vrings; one data thread
// polls them. A per-port mutex, taken once per burst by the data thread (from receiving a burst
// until its TX chains are given back), is what makes stop_vring() return only when the data
// path no longer touches the vring or its memory, and never with chains of a burst held.
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

class net_port {
public:
    struct options {
        std::uint32_t queue_pairs = 1;
        std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
    };

    explicit net_port(options o) : options_(o), vrings_(2 * o.queue_pairs) {}

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

    void set_features(std::uint64_t acked) noexcept {
        std::lock_guard lock(mutex_);
        mrg_rxbuf_ = wire::has(acked, wire::net_feature::mrg_rxbuf);
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
        std::lock_guard lock(mutex_);
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
        has_pending_ = true;
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
        std::lock_guard lock(mutex_);
        const auto i = v->index();
        vrings_[i] = std::move(v);
    }
    std::unique_ptr<protocol::vring> stop_vring(std::uint32_t index) {
        std::lock_guard lock(mutex_);
        return std::move(vrings_[index]);
    }
    void reset() {
        std::lock_guard lock(mutex_);
        for (auto& v : vrings_) v.reset();
        mrg_rxbuf_ = false;
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
    // A received_burst holds the port (its mutex) until it completes: a vring does not stop
    // with chains held, and a pass of the data path ends with none in flight (live update). The
    // one data thread may meanwhile transmit into this port (loopback) or others.
    class received_burst {
    public:
        received_burst(received_burst&& o) noexcept
            : port_(std::exchange(o.port_, nullptr)), frames_(o.frames_), lock_(std::move(o.lock_)) {}
        received_burst& operator=(received_burst&&) = delete;
        ~received_burst() { complete(); }

        // Frames received (in the `out` given to receive()).
        std::size_t size() const noexcept { return frames_; }
        // Gives the burst's TX chains back and lets the port go.
        void complete() noexcept {
            if (port_ == nullptr) return;
            std::exchange(port_, nullptr)->complete_received();
            lock_.unlock();
        }

    private:
        friend class net_port;
        received_burst(net_port& p, std::unique_lock<std::recursive_mutex> lock, std::size_t frames) noexcept
            : port_(&p), frames_(frames), lock_(std::move(lock)) {}
        net_port* port_;
        std::size_t frames_;
        std::unique_lock<std::recursive_mutex> lock_;
    };

    // Frames the front-end transmitted, from each of its TX vrings in turn (vring 2q+1), into
    // `out` (and `staging`, one max_frame_size slot each); their chains stay taken until the
    // burst completes. A disabled TX vring is drained and its frames discarded ("Ring states").
    [[nodiscard]] received_burst receive(std::span<std::byte> staging, std::span<frame> out) {
        std::unique_lock lock(mutex_);
        std::size_t n = 0;
        if (has_pending_ && !out.empty() && staging.size() >= max_frame_size) { // a RARP to announce
            std::copy(pending_.begin(), pending_.end(), staging.begin());
            out[n++] = staging.first(pending_.size());
            has_pending_ = false;
        }
        for (std::uint32_t q = 0; q < options_.queue_pairs && n < out.size() && held_chains_ < held_.size(); ++q) {
            const std::uint32_t index = 2 * q + 1;
            auto& v = vrings_[index];
            if (!v) continue;
            if (!v->enabled()) {
                v->visit([&](auto& ring) { drop_burst(ring, discarded_, scratch_); });
                v->notify();
                continue;
            }
            received_chains got;
            v->visit([&](auto& ring) {
                got = receive_burst(ring, staging.subspan(n * max_frame_size), out.subspan(n),
                                    std::span(held_).subspan(held_chains_), stats_, scratch_);
            });
            if (got.chains != 0) held_groups_[held_group_count_++] = {index, got.chains};
            held_chains_ += got.chains;
            n += got.frames;
        }
        return received_burst(*this, std::move(lock), n);
    }

    // Counts and drops what the front-end transmitted, without copying (rxonly).
    std::size_t discard() {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (std::uint32_t q = 0; q < options_.queue_pairs; ++q) {
            auto& v = vrings_[2 * q + 1];
            if (!v) continue;
            v->visit([&](auto& ring) { n += drop_burst(ring, v->enabled() ? stats_ : discarded_, scratch_); });
            v->notify();
        }
        return n;
    }

    // Frames for the front-end, into its RX vring of queue pair `queue` (vring 2q). Nothing
    // is supplied to a stopped or disabled RX vring: the frames count as dropped.
    // `count_drops` is false for generated traffic, which is only ever as much as fits.
    std::size_t transmit(std::span<const frame> frames, std::uint32_t queue = 0, bool count_drops = true) {
        std::lock_guard lock(mutex_);
        auto& v = vrings_[2 * (queue % options_.queue_pairs)];
        if (!v || !v->enabled()) {
            if (count_drops) stats_.tx_dropped += frames.size();
            return 0;
        }
        port_stats burst;
        std::size_t sent = 0;
        v->visit([&](auto& ring) { sent = transmit_burst(ring, frames, mrg_rxbuf_, burst, scratch_); });
        stats_.tx_packets += burst.tx_packets;
        stats_.tx_bytes += burst.tx_bytes;
        if (count_drops) stats_.tx_dropped += burst.tx_dropped;
        v->notify();
        return sent;
    }

    // Event mode, before the data thread sleeps: asks the front-end to kick the TX vrings again
    // and arms their kick fds in `kicks`. False when sleeping would miss work — a frame arrived
    // meanwhile, a frame is pending, or a vring is polled without a kick fd.
    bool arm_kicks(protocol::kick_wait& kicks) {
        std::lock_guard lock(mutex_);
        if (has_pending_) return false;
        for (std::uint32_t q = 0; q < options_.queue_pairs; ++q)
            if (auto& v = vrings_[2 * q + 1]; v && !kicks.arm(*v)) return false;
        return true;
    }
    // After waking: back to polling without kicks, and the kicks that woke us consumed.
    void disarm_kicks() {
        std::lock_guard lock(mutex_);
        for (std::uint32_t q = 0; q < options_.queue_pairs; ++q)
            if (auto& v = vrings_[2 * q + 1]) protocol::kick_wait::disarm(*v);
    }

    // Whether the front-end's RX vring of queue pair 0 can take frames now (txonly).
    bool can_transmit() {
        std::lock_guard lock(mutex_);
        return vrings_[0] && vrings_[0]->enabled();
    }

    port_stats stats() const {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    // Live update (protocol::backend::export_session / import_session): the port's counters
    // and MTU, so the port's numbers run on in the new process, and a pending RARP.
    std::vector<std::byte> save_state() const {
        std::lock_guard lock(mutex_);
        byte_writer w;
        w.put<std::uint32_t>(1); // this layout's version
        for (std::uint64_t v : {stats_.rx_packets, stats_.rx_bytes, stats_.tx_packets, stats_.tx_bytes, stats_.tx_dropped,
                                stats_.rx_errors})
            w.put<std::uint64_t>(v);
        w.put<std::uint16_t>(mtu_.load(std::memory_order_relaxed));
        w.put_bytes(has_pending_ ? std::span<const std::byte>(pending_) : std::span<const std::byte>{});
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
        std::lock_guard lock(mutex_);
        stats_ = s;
        mtu_.store(mtu, std::memory_order_relaxed);
        pending_.assign(pending.begin(), pending.end());
        has_pending_ = !pending.empty();
        return true;
    }

private:
    // The end of a received_burst, under mutex_: each TX vring gets its chains back in one push.
    void complete_received() noexcept {
        std::size_t first = 0;
        for (std::size_t g = 0; g < held_group_count_; ++g) {
            // (Named copies, not a structured binding: clang 14 cannot capture one in a lambda.)
            const std::uint32_t index = held_groups_[g].vring;
            const std::size_t count = held_groups_[g].chains;
            // Another thread cannot have stopped the vring meanwhile (the burst held mutex_).
            auto& v = vrings_[index];
            if (!v) {
                first += count;
                continue;
            }
            v->visit([&](auto& ring) { ring.push_burst(std::span(held_).subspan(first, count)); });
            v->notify();
            first += count;
        }
        held_group_count_ = 0;
        held_chains_ = 0;
    }

    options options_;
    // Recursive: the data thread, holding the port in a received_burst, may transmit into it.
    mutable std::recursive_mutex mutex_;
    std::vector<std::unique_ptr<protocol::vring>> vrings_;
    bool mrg_rxbuf_ = false;
    port_stats stats_;
    port_stats discarded_; // frames of disabled vrings: not the port's traffic
    burst_scratch scratch_; // the data thread's, under mutex_
    // The TX chains of the received_burst in progress, and which vring they came from (a run
    // per vring, in the order they were taken).
    struct held_group {
        std::uint32_t vring = 0;
        std::size_t chains = 0;
    };
    std::array<ring::used_element, ring::max_burst> held_{};
    std::array<held_group, ring::max_burst> held_groups_{};
    std::size_t held_group_count_ = 0;
    std::size_t held_chains_ = 0;
    std::vector<std::byte> pending_; // a frame to send on as the front-end's (SEND_RARP)
    bool has_pending_ = false;
    std::atomic<std::uint16_t> mtu_{1500};
};

} // namespace vvu::device::net
