// The forwarding engine behind vvu-forward: moves frames between net ports in one of five
// modes (design.md, "Example binaries"). One thread calls poll() in a loop; the ports' control
// threads start and stop their vrings meanwhile. Several threads may each run an engine of
// their own over the same ports, each on its share of the queue pairs (queue_share: queue pair
// q of one port goes to queue pair q of another); every port then needs the same number of
// queue pairs, and learn mode (one MAC table) runs on one thread.
#pragma once

#include <vvu/device/l2.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/kick_wait.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/endian.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace vvu::device::net {

enum class forward_mode {
    xconnect, // port 0 <-> 1, 2 <-> 3, ...
    learn,    // an L2 switch: learn source MACs, flood unknown and group destinations
    rxonly,   // count and drop
    txonly,   // send 64-byte test frames as fast as the front-ends take them
    loopback, // send every frame back on the port it came from
};

[[nodiscard]] constexpr std::optional<forward_mode> parse_forward_mode(std::string_view s) noexcept {
    if (s == "xconnect") return forward_mode::xconnect;
    if (s == "learn") return forward_mode::learn;
    if (s == "rxonly") return forward_mode::rxonly;
    if (s == "txonly") return forward_mode::txonly;
    if (s == "loopback") return forward_mode::loopback;
    return std::nullopt;
}

class forwarder {
public:
    // Throws std::invalid_argument for a share the ports cannot be split by (ports with
    // different queue pair counts, or learn mode on more than one thread).
    forwarder(std::vector<net_port*> ports, forward_mode mode, std::size_t txonly_frame_size = test_frame_min_size,
              queue_share share = {})
        : ports_(std::move(ports)), mode_(mode), frame_size_(std::max(txonly_frame_size, test_frame_min_size)),
          share_(share), staging_(new std::byte[staging_size]), sequence_(ports_.size(), 0) {
        if (share_.count == 0 || share_.index >= share_.count) throw std::invalid_argument("forwarder: an empty queue share");
        if (share_.count > 1) {
            if (mode_ == forward_mode::learn) throw std::invalid_argument("forwarder: learn mode runs on one thread");
            for (auto* p : ports_)
                if (p->queue_pairs() != ports_.front()->queue_pairs())
                    throw std::invalid_argument("forwarder: threads share queue pairs of ports with as many each");
        }
        if (mode_ == forward_mode::txonly) make_txonly_frames();
    }

    // One pass over every port, each of this engine's queue pairs. Returns how many frames
    // moved (0: every queue was idle).
    std::size_t poll() {
        std::size_t moved = 0;
        for (std::size_t p = 0; p < ports_.size(); ++p) {
            for (std::uint32_t q = share_.index; q < ports_[p]->queue_pairs(); q += share_.count) {
                switch (mode_) {
                case forward_mode::rxonly: moved += check_ || copy_ ? take(p, q) : ports_[p]->discard(q); break;
                case forward_mode::txonly: moved += generate(p, q); break;
                case forward_mode::loopback: moved += relay(p, q, p); break;
                case forward_mode::xconnect: moved += relay(p, q, p ^ 1); break;
                case forward_mode::learn: moved += switch_frames(p, q); break;
                }
            }
        }
        return moved;
    }

    // Every received frame taken into the engine's memory first, as a back-end that keeps
    // frames does (DPDK's vhost dequeue into mbufs): the work to compare with it. Without
    // this, rxonly gives the chains back unread, and xconnect and learn copy each frame once,
    // from the front-end's transmit buffer straight into the other front-end's receive buffer
    // (frame_placement::in_place).
    void copy_received() noexcept { copy_ = true; }

    // rxonly that looks at the frames: each received frame is read out of the ring and given
    // to `check` (true: as expected).
    using frame_check = std::function<bool(frame)>;
    struct check_counts {
        std::uint64_t checked = 0, failed = 0;
    };
    void check_received(frame_check check) {
        check_ = std::move(check);
        checks_.assign(ports_.size(), {});
    }
    // Port p's counts; read them once poll() no longer runs.
    [[nodiscard]] check_counts checks(std::size_t p) const { return p < checks_.size() ? checks_[p] : check_counts{}; }

    // Event mode: after a pass that moved nothing, sleep until a front-end kicks a TX vring, or
    // `wake` (an fd of the caller's: -1 none) is readable, or `timeout` passes (vrings start and
    // stop meanwhile; the next pass sees them). Returns false without sleeping when a vring may
    // have work (or has no kick fd to wait on), and in txonly mode, whose work is the receive
    // buffers the front-ends give back (they are not kicked).
    bool wait_for_kicks(std::chrono::milliseconds timeout, int wake = -1) {
        if (mode_ == forward_mode::txonly) return false;
        // Each port arms its TX vrings under its own lock (a vring may stop meanwhile).
        bool armed = true;
        for (auto* port : ports_) armed = armed && port->arm_kicks(kicks_, share_);
        if (armed) kicks_.sleep(timeout, wake);
        else kicks_.cancel();
        for (auto* port : ports_) port->disarm_kicks(share_);
        return armed;
    }

    // Live update: what the engine learned (the MAC table) and where txonly's sequence numbers
    // are, so the new process goes on from there.
    std::vector<std::byte> save_state() const {
        byte_writer w;
        w.put<std::uint32_t>(1); // this layout's version
        w.put<std::uint32_t>(static_cast<std::uint32_t>(sequence_.size()));
        for (auto s : sequence_) w.put<std::uint64_t>(s);
        const auto learned = table_.entries();
        w.put<std::uint32_t>(static_cast<std::uint32_t>(learned.size()));
        for (const auto& [mac, port] : learned) {
            for (auto b : mac) w.put<std::uint8_t>(b);
            w.put<std::uint32_t>(port);
        }
        return w.take();
    }
    bool load_state(std::span<const std::byte> bytes) {
        byte_reader r(bytes);
        if (r.get<std::uint32_t>() != 1 || r.get<std::uint32_t>() != sequence_.size()) return false;
        std::vector<std::uint64_t> sequence(sequence_.size());
        for (auto& s : sequence) s = r.get<std::uint64_t>();
        const auto n = r.get<std::uint32_t>();
        if (!r.ok() || n > 1u << 20) return false;
        std::vector<std::pair<mac_address, std::uint32_t>> learned;
        learned.reserve(std::min<std::size_t>(n, r.remaining() / 10));
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            mac_address mac;
            for (auto& b : mac) b = r.get<std::uint8_t>();
            const auto port = r.get<std::uint32_t>();
            if (port >= ports_.size()) return false;
            learned.emplace_back(mac, port);
        }
        if (!r.done()) return false;
        sequence_ = std::move(sequence);
        number_txonly_frames();
        // The table is refilled in place: a live update loads this inside its outage, and a new
        // table's first touch of its pages (page faults, costly in a VM) would lengthen it.
        table_.clear();
        for (const auto& [mac, port] : learned) table_.learn(mac, port);
        return true;
    }

private:
    // How a burst received on port p reaches its destinations: left in place unless asked to
    // copy, or sent back into p itself (its front-end's memory: a transmit buffer the RX chain
    // overlaps would make the copy's source and target overlap).
    frame_placement placement_for(bool back_to_sender) const noexcept {
        return copy_ || back_to_sender ? frame_placement::staged : frame_placement::in_place;
    }

    // Receives a burst on port p and sends it to port `to` (none: dropped). The TX chains go
    // back only after transmit() completed the RX chains: see net_port::received_burst for
    // what a crash in between costs (a duplicate, not a loss).
    std::size_t relay(std::size_t p, std::uint32_t q, std::size_t to) {
        auto burst = ports_[p]->receive(staging(), frames_, q, placement_for(to == p));
        const std::size_t n = burst.size();
        if (n == 0) return 0; // (chains without a frame go back with the burst)
        if (to < ports_.size()) ports_[to]->transmit(std::span(frames_).first(n), q);
        burst.complete();
        return n;
    }

    // learn: every destination (a flood has several) has its frames before the TX chains go back.
    std::size_t switch_frames(std::size_t p, std::uint32_t q) {
        // A frame goes to other ports only; the MAC addresses are each read once per use, and a
        // front-end changing them meanwhile only misroutes its own frame.
        auto burst = ports_[p]->receive(staging(), frames_, q, placement_for(false));
        const std::size_t n = burst.size();
        if (n == 0) return 0;
        // Group the burst by destination port, keeping each port's frames in order.
        std::vector<std::vector<frame>>& out = per_port_;
        out.resize(ports_.size());
        for (auto& v : out) v.clear();
        for (std::size_t i = 0; i < n; ++i) {
            const frame f = frames_[i];
            table_.learn(source_of(f), static_cast<std::uint32_t>(p));
            const mac_address dst = destination_of(f);
            const auto known = is_group(dst) ? std::nullopt : table_.lookup(dst);
            if (known) {
                if (*known != p) out[*known].push_back(f);
            } else {
                for (std::size_t to = 0; to < ports_.size(); ++to)
                    if (to != p) out[to].push_back(f);
            }
        }
        for (std::size_t to = 0; to < ports_.size(); ++to)
            if (!out[to].empty()) ports_[to]->transmit(out[to], q);
        burst.complete();
        return n;
    }

    // rxonly with copy or check: the burst's frames copied out (and checked), then dropped.
    std::size_t take(std::size_t p, std::uint32_t q) {
        auto burst = ports_[p]->receive(staging(), frames_, q);
        const std::size_t n = burst.size();
        if (!check_) return n;
        for (std::size_t i = 0; i < n; ++i) {
            ++checks_[p].checked;
            if (!check_(frames_[i])) ++checks_[p].failed;
        }
        return n;
    }

    // txonly: max_burst test frames per port, written once. Frame j carries the sequence
    // numbers s with s % max_burst == j, so a burst starting at sequence s takes the frames from
    // s % max_burst on (`in_turn` lists them twice: any max_burst of them in a row is one span),
    // and only the frames it sent are renumbered, for their next turn. (The sequence number lies
    // outside every checksum of the frame.)
    struct txonly_set {
        std::array<std::vector<std::byte>, ring::max_burst> frames;
        std::array<frame, 2 * ring::max_burst> in_turn;
    };
    void make_txonly_frames() {
        txonly_ = std::vector<txonly_set>(ports_.size());
        for (std::size_t p = 0; p < ports_.size(); ++p) {
            const mac_address src{0x02, 0x00, 0x00, 0x00, 0x00, static_cast<std::uint8_t>(p)};
            const mac_address dst{0x02, 0x00, 0x00, 0x00, 0x01, static_cast<std::uint8_t>(p)};
            auto& set = txonly_[p];
            for (std::size_t j = 0; j < ring::max_burst; ++j) {
                set.frames[j].resize(frame_size_);
                make_test_frame(set.frames[j], frame_size_, 0, src, dst);
                set.in_turn[j] = set.in_turn[j + ring::max_burst] = set.frames[j];
            }
        }
        number_txonly_frames();
    }
    // Each frame numbered for the next burst, from sequence_ on (at start, and after a
    // hand-over brought another sequence_).
    void number_txonly_frames() noexcept {
        for (std::size_t p = 0; p < txonly_.size(); ++p)
            for (std::uint64_t s = sequence_[p]; s < sequence_[p] + ring::max_burst; ++s)
                set_test_frame_sequence(txonly_[p].frames[s % ring::max_burst], s);
    }

    std::size_t generate(std::size_t p, std::uint32_t q) {
        auto& set = txonly_[p];
        const std::uint64_t first = sequence_[p];
        const std::size_t start = first % ring::max_burst;
        // (A stopped or disabled RX vring takes nothing: 0, not counted as dropped.)
        const std::size_t sent = ports_[p]->transmit(std::span(set.in_turn).subspan(start, ring::max_burst), q, false);
        for (std::uint64_t s = first; s < first + sent; ++s)
            set_test_frame_sequence(set.frames[s % ring::max_burst], s + ring::max_burst);
        sequence_[p] += sent;
        return sent;
    }

    std::vector<net_port*> ports_;
    forward_mode mode_;
    std::size_t frame_size_;
    queue_share share_;
    // Room for a burst of max_frame_size frames (2 MiB), left uninitialised: a burst of short
    // frames, packed one after the other, touches its first pages only, and zero-filling it all
    // would fault in 512 pages at start-up — milliseconds, in the new process of a live update.
    static constexpr std::size_t staging_size = ring::max_burst * max_frame_size;
    std::unique_ptr<std::byte[]> staging_;
    std::span<std::byte> staging() noexcept { return {staging_.get(), staging_size}; }
    std::array<frame, ring::max_burst> frames_{};
    std::vector<txonly_set> txonly_; // per port
    std::vector<std::uint64_t> sequence_;
    mac_table table_;
    std::vector<std::vector<frame>> per_port_;
    protocol::kick_wait kicks_; // event mode's sleep
    frame_check check_;
    bool copy_ = false;
    std::vector<check_counts> checks_;
};

} // namespace vvu::device::net
