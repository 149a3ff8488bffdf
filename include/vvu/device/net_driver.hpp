// net_driver: the driver side of virtio-net (virtio 1.2 §5.1) over protocol::frontend — what a
// guest's virtio-net driver does, for any vhost-user net back-end (vvu-forward, DPDK net_vhost).
//
//   auto nd = device::net::net_driver<>::open(std::move(*channel), {.queue_size = 256});
//   (*nd)->send(0, frames);                         // transmit on queue pair 0
//   (*nd)->receive(0, [](const virtio_net_hdr& h, std::span<const std::byte> f) { … });
//   (*nd)->close();                                 // stop the rings (GET_VRING_BASE)
//
// Layout: queue pair q is vring 2q (receive) and 2q + 1 (transmit). Transmit buffers are slots
// of tx_buffer_size bytes in the shared memory (a zero 12-byte net header, then the frame,
// one descriptor each); receive buffers are rx_buffer_size-byte slots, all posted at open. With
// MRG_RXBUF a frame may span several receive buffers (num_buffers in the first one's header,
// §5.1.6.4) and is reassembled. The net header is 12 bytes: VERSION_1 is required (§5.1.6.1).
//
// One thread per queue pair at a time (send/receive of different pairs may run in parallel).
#pragma once

#include <vvu/device/net.hpp>
#include <vvu/protocol/frontend.hpp>
#include <vvu/util/endian.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace vvu::device::net {

struct driver_options {
    std::uint32_t queue_pairs = 1;
    std::uint32_t queue_size = 256;
    bool packed = false;            // VIRTIO_F_RING_PACKED (must be offered)
    bool mrg_rxbuf = true;          // take VIRTIO_NET_F_MRG_RXBUF when offered
    bool event_idx = false;         // take VIRTIO_RING_F_EVENT_IDX when offered
    std::uint32_t rx_buffer_size = 2048; // bytes per receive buffer, header included
    std::uint32_t tx_buffer_size = 2048; // bytes per transmit slot, header included
    std::size_t memory_regions = 1; // memfds the shared memory is split into
    bool use_mem_slots = true;      // ADD_MEM_REG when CONFIGURE_MEM_SLOTS is offered
    std::chrono::milliseconds timeout{5000};
};

struct driver_stats {
    std::uint64_t tx_packets = 0;   // frames posted on transmit queues
    std::uint64_t tx_bytes = 0;
    std::uint64_t tx_completed = 0; // transmit buffers the back-end gave back
    std::uint64_t rx_packets = 0;   // frames received (reassembled)
    std::uint64_t rx_bytes = 0;
    std::uint64_t rx_errors = 0;    // receive buffers shorter than a net header, bad num_buffers
};

// The virtio feature bits the driver asks for with these options.
[[nodiscard]] inline std::uint64_t driver_features(const driver_options& o) noexcept {
    using namespace wire;
    std::uint64_t f = virtio_feature::version_1 | net_feature::mac | net_feature::status;
    if (o.mrg_rxbuf) f |= net_feature::mrg_rxbuf;
    if (o.packed) f |= virtio_feature::ring_packed;
    if (o.event_idx) f |= virtio_feature::ring_event_idx;
    // A multiqueue driver needs the control queue (to set the number of pairs, §5.1.6.5.5); it
    // stays in the front-end like in QEMU and DPDK virtio-user, never reaching the back-end.
    if (o.queue_pairs > 1) f |= net_feature::mq | net_feature::ctrl_vq;
    return f;
}

template <protocol::frontend_channel Channel = protocol::socket_channel>
class net_driver {
public:
    using frontend_type = protocol::frontend<Channel>;

    // Negotiates, shares memory, sets every vring up and sets DRIVER_OK.
    [[nodiscard]] static expected<std::unique_ptr<net_driver>, protocol::frontend_error> open(Channel channel,
                                                                                             driver_options o) {
        using protocol::frontend_errc;
        if (o.queue_pairs == 0 || o.queue_pairs > 128)
            return unexpected(protocol::frontend_error{frontend_errc::invalid_argument, std::nullopt, "queue pairs not in [1, 128]"});
        if (o.rx_buffer_size < net_hdr_size + 1 || o.tx_buffer_size < net_hdr_size + 1)
            return unexpected(protocol::frontend_error{frontend_errc::invalid_argument, std::nullopt, "buffers smaller than a net header"});
        protocol::frontend_options fo;
        fo.features = driver_features(o);
        fo.required_features = wire::virtio_feature::version_1 | (o.packed ? wire::virtio_feature::ring_packed : 0) |
                               (o.queue_pairs > 1 ? wire::net_feature::mq : 0);
        fo.timeout = o.timeout;
        fo.use_mem_slots = o.use_mem_slots;
        std::unique_ptr<net_driver> d(new net_driver(std::move(channel), std::move(fo), o));
        if (auto r = d->start(); !r) return unexpected(r.error());
        return d;
    }

    // Transmits up to frames.size() frames on queue pair q (as many as there are free slots);
    // kicks the back-end if it wants a kick. Returns how many were posted.
    std::size_t send(std::uint32_t q, std::span<const frame> frames) {
        auto& tq = tx_[q];
        if (tq.free.size() < frames.size()) reap_tx(q);
        std::array<ring::buffer, ring::max_burst> bufs;
        std::array<ring::request, ring::max_burst> reqs;
        std::size_t sent = 0;
        while (sent < frames.size() && !tq.free.empty()) {
            std::size_t n = 0;
            while (n < ring::max_burst && sent + n < frames.size() && !tq.free.empty()) {
                const frame f = frames[sent + n];
                if (f.size() > options_.tx_buffer_size - net_hdr_size) break; // too large: stop here
                const std::uint16_t slot = tq.free.back();
                tq.free.pop_back();
                std::byte* p = tq.host + std::size_t{slot} * options_.tx_buffer_size;
                std::memcpy(p + net_hdr_size, f.data(), f.size());
                bufs[n] = {tq.gpa + std::uint64_t{slot} * options_.tx_buffer_size,
                           static_cast<std::uint32_t>(net_hdr_size + f.size())};
                reqs[n] = {std::span(&bufs[n], 1), {}, slot, false};
                ++n;
            }
            if (n == 0) break;
            const std::size_t added = tq.vring->add_burst(std::span(reqs).first(n));
            for (std::size_t i = added; i < n; ++i) tq.free.push_back(static_cast<std::uint16_t>(reqs[i].token));
            for (std::size_t i = 0; i < added; ++i) stats_.tx_bytes += bufs[i].len - net_hdr_size;
            stats_.tx_packets += added;
            sent += added;
            if (added < n) break;
        }
        if (sent != 0) tq.vring->kick_if_needed();
        return sent;
    }

    // Takes back the transmit buffers the back-end has used. Returns how many.
    std::size_t reap_tx(std::uint32_t q) {
        auto& tq = tx_[q];
        std::array<ring::used_buffer, ring::max_burst> used;
        std::size_t total = 0;
        for (;;) {
            const std::size_t n = tq.vring->reap_burst(used);
            for (std::size_t i = 0; i < n; ++i) tq.free.push_back(static_cast<std::uint16_t>(used[i].token));
            total += n;
            if (n < used.size()) break;
        }
        stats_.tx_completed += total;
        return total;
    }

    // Transmit buffers the back-end still holds on queue pair q.
    [[nodiscard]] std::size_t tx_outstanding(std::uint32_t q) const noexcept {
        return tx_[q].slots - tx_[q].free.size();
    }

    // Receives up to `max` frames from queue pair q: f(const virtio_net_hdr&, span of the frame)
    // for each (the span is valid during the call only); the buffers are posted again.
    template <class F>
    std::size_t receive(std::uint32_t q, F&& f, std::size_t max = ring::max_burst) {
        auto& rq = rx_[q];
        std::array<ring::used_buffer, ring::max_burst> used;
        std::array<ring::buffer, ring::max_burst> bufs;
        std::array<ring::request, ring::max_burst> reqs;
        const std::size_t n = rq.vring->reap_burst(std::span(used).first(std::min(max, used.size())));
        std::size_t frames = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const auto slot = static_cast<std::uint32_t>(used[i].token);
            const std::byte* p = rq.host + std::size_t{slot} * options_.rx_buffer_size;
            const std::uint32_t len = std::min(used[i].len, options_.rx_buffer_size);
            if (rq.remaining != 0) { // continuation of a merged frame: no header of its own
                rq.assembly.insert(rq.assembly.end(), p, p + len);
                if (--rq.remaining == 0) {
                    deliver(rq.header, rq.assembly, f);
                    ++frames;
                }
            } else if (len < net_hdr_size) {
                ++stats_.rx_errors;
            } else {
                virtio_net_hdr h;
                std::memcpy(&h, p, net_hdr_size);
                h.hdr_len = le::load<std::uint16_t>(p + 2);
                h.gso_size = le::load<std::uint16_t>(p + 4);
                h.csum_start = le::load<std::uint16_t>(p + 6);
                h.csum_offset = le::load<std::uint16_t>(p + 8);
                h.num_buffers = le::load<std::uint16_t>(p + 10);
                const std::uint16_t buffers = mrg_rxbuf_ ? h.num_buffers : 1;
                if (buffers == 0) {
                    ++stats_.rx_errors;
                } else if (buffers == 1) {
                    deliver(h, std::span(p + net_hdr_size, len - net_hdr_size), f);
                    ++frames;
                } else {
                    rq.header = h;
                    rq.assembly.assign(p + net_hdr_size, p + len);
                    rq.remaining = buffers - 1u;
                }
            }
            bufs[i] = {rq.gpa + std::uint64_t{slot} * options_.rx_buffer_size, options_.rx_buffer_size};
            reqs[i] = {{}, std::span(&bufs[i], 1), slot, false};
        }
        if (n != 0) {
            rq.vring->add_burst(std::span(reqs).first(n));
            rq.vring->kick_if_needed();
        }
        return frames;
    }

    // Busy-polling drivers need no calls: asks the back-end not to signal (it may anyway).
    void disable_interrupts() {
        for (auto& t : tx_) t.vring->disable_interrupts();
        for (auto& r : rx_) r.vring->disable_interrupts();
    }

    // Stops every vring (SET_VRING_ENABLE 0, GET_VRING_BASE) and resets the status.
    expected<void, protocol::frontend_error> close() { return frontend_.stop(); }

    [[nodiscard]] const driver_stats& stats() const noexcept { return stats_; }
    [[nodiscard]] frontend_type& frontend() noexcept { return frontend_; }
    [[nodiscard]] bool mrg_rxbuf() const noexcept { return mrg_rxbuf_; }
    [[nodiscard]] std::uint32_t queue_pairs() const noexcept { return options_.queue_pairs; }
    [[nodiscard]] std::uint32_t queue_size() const noexcept { return options_.queue_size; }
    [[nodiscard]] protocol::driver_vring& rx_vring(std::uint32_t q) noexcept { return *rx_[q].vring; }
    [[nodiscard]] protocol::driver_vring& tx_vring(std::uint32_t q) noexcept { return *tx_[q].vring; }

    // The config space (MAC, status, max pairs, MTU) when CONFIG is negotiated.
    [[nodiscard]] expected<std::vector<std::uint8_t>, protocol::frontend_error> config() {
        return frontend_.get_config(0, 12); // mac, status, max_virtqueue_pairs, mtu (§5.1.4)
    }

private:
    struct tx_queue {
        protocol::driver_vring* vring = nullptr;
        std::uint64_t gpa = 0;
        std::byte* host = nullptr;
        std::size_t slots = 0;
        std::vector<std::uint16_t> free;
    };
    struct rx_queue {
        protocol::driver_vring* vring = nullptr;
        std::uint64_t gpa = 0;
        std::byte* host = nullptr;
        virtio_net_hdr header{};         // of the merged frame being reassembled
        std::vector<std::byte> assembly;
        std::uint32_t remaining = 0;     // buffers still to come for it
    };

    net_driver(Channel channel, protocol::frontend_options fo, const driver_options& o)
        : frontend_(std::move(channel), std::move(fo)), options_(o) {}

    template <class F>
    void deliver(const virtio_net_hdr& h, std::span<const std::byte> data, F& f) {
        ++stats_.rx_packets;
        stats_.rx_bytes += data.size();
        f(h, data);
    }

    expected<void, protocol::frontend_error> start() {
        using protocol::frontend_errc;
        if (auto r = frontend_.negotiate(); !r) return r;
        mrg_rxbuf_ = wire::has(frontend_.features(), wire::net_feature::mrg_rxbuf);
        if (options_.queue_pairs > 1 && frontend_.queue_num() != 0 && frontend_.queue_num() < options_.queue_pairs)
            return unexpected(protocol::frontend_error{frontend_errc::not_offered, wire::front_request::get_queue_num,
                                                       "back-end has " + std::to_string(frontend_.queue_num()) +
                                                           " queue pairs, " + std::to_string(options_.queue_pairs) +
                                                           " wanted"});
        // Rings, transmit slots and receive buffers, with room to spare for alignment.
        const std::uint64_t per_pair = 2 * (std::uint64_t{options_.queue_size} * 16 * 2 + 3 * 4096) +
                                       std::uint64_t{options_.queue_size} * (options_.rx_buffer_size + options_.tx_buffer_size);
        const std::uint64_t need = per_pair * options_.queue_pairs + (std::uint64_t{1} << 20);
        const std::uint64_t per_region = (need + options_.memory_regions - 1) / options_.memory_regions + per_pair;
        // Populated: the memory is sized to what the rings and buffers need, all of it used.
        auto mem = protocol::frontend_memory::create({options_.memory_regions, per_region, 0x4000'0000, true, true});
        if (!mem) return unexpected(mem.error());
        if (auto r = frontend_.set_memory(std::move(*mem)); !r) return r;
        if (auto r = frontend_.share_inflight(static_cast<std::uint16_t>(2 * options_.queue_pairs),
                                              static_cast<std::uint16_t>(options_.queue_size));
            !r)
            return r;
        auto& memory = frontend_.memory();
        rx_.resize(options_.queue_pairs);
        tx_.resize(options_.queue_pairs);
        for (std::uint32_t q = 0; q < options_.queue_pairs; ++q) {
            auto rxv = frontend_.setup_vring(2 * q, {options_.queue_size, 0, true});
            if (!rxv) return unexpected(rxv.error());
            auto txv = frontend_.setup_vring(2 * q + 1, {options_.queue_size, 0, true});
            if (!txv) return unexpected(txv.error());
            auto rxb = memory.allocate(std::uint64_t{options_.queue_size} * options_.rx_buffer_size, 4096);
            if (!rxb) return unexpected(rxb.error());
            auto txb = memory.allocate(std::uint64_t{options_.queue_size} * options_.tx_buffer_size, 4096);
            if (!txb) return unexpected(txb.error());
            rx_[q] = {*rxv, *rxb, memory.translate(*rxb, 0), {}, {}, 0};
            tx_[q] = {*txv, *txb, memory.translate(*txb, 0), options_.queue_size, {}};
            tx_[q].free.reserve(options_.queue_size);
            for (std::uint32_t s = options_.queue_size; s-- > 0;) tx_[q].free.push_back(static_cast<std::uint16_t>(s));
            // Every receive buffer posted up front; the back-end fills them as frames come.
            for (std::uint32_t s = 0; s < options_.queue_size; ++s) {
                const ring::buffer b{*rxb + std::uint64_t{s} * options_.rx_buffer_size, options_.rx_buffer_size};
                if (!(*rxv)->add({}, std::span(&b, 1), s))
                    return unexpected(protocol::frontend_error{frontend_errc::ring_setup, std::nullopt,
                                                               "cannot post receive buffer " + std::to_string(s)});
            }
            (*rxv)->kick();
        }
        return frontend_.driver_ok();
    }

    frontend_type frontend_;
    driver_options options_;
    bool mrg_rxbuf_ = false;
    std::vector<rx_queue> rx_;
    std::vector<tx_queue> tx_;
    driver_stats stats_;
};

} // namespace vvu::device::net
