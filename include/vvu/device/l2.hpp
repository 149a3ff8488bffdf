// Ethernet helpers for forwarding apps: MAC addresses, a MAC-learning table, and the test
// frames vvu's generators send (64-byte UDP/IPv4 frames carrying a sequence number).
#pragma once

#include <vvu/util/endian.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace vvu::device::net {

using mac_address = std::array<std::uint8_t, 6>;

inline constexpr std::size_t ethernet_header_size = 14;

[[nodiscard]] inline mac_address destination_of(std::span<const std::byte> frame) noexcept {
    mac_address m{};
    for (std::size_t i = 0; i < 6 && i < frame.size(); ++i) m[i] = static_cast<std::uint8_t>(frame[i]);
    return m;
}
[[nodiscard]] inline mac_address source_of(std::span<const std::byte> frame) noexcept {
    mac_address m{};
    for (std::size_t i = 0; i < 6 && i + 6 < frame.size(); ++i) m[i] = static_cast<std::uint8_t>(frame[6 + i]);
    return m;
}
// Group addresses (broadcast, multicast) have bit 0 of the first octet set.
[[nodiscard]] constexpr bool is_group(const mac_address& m) noexcept { return (m[0] & 1) != 0; }

// A MAC-learning table for an L2 switch: source address -> port. Fixed capacity, open
// addressing with linear probing; when full, the oldest-learned slot in the probe window is
// replaced, so a flood of random source addresses costs memory once and never grows.
// Used by one forwarding thread: not synchronised.
class mac_table {
public:
    explicit mac_table(std::size_t capacity_pow2 = 4096) : slots_(capacity_pow2), mask_(capacity_pow2 - 1) {}

    void learn(const mac_address& mac, std::uint32_t port) noexcept {
        if (is_group(mac)) return; // a group address is never a source of truth
        const std::size_t h = hash(mac);
        std::size_t victim = h & mask_;
        for (std::size_t i = 0; i < probe_window; ++i) {
            slot& s = slots_[(h + i) & mask_];
            if (!s.used || s.mac == mac) {
                s = {mac, port, ++clock_, true};
                return;
            }
            if (s.stamp < slots_[victim].stamp) victim = (h + i) & mask_;
        }
        slots_[victim] = {mac, port, ++clock_, true};
    }

    // Forgets every entry, keeping the table's memory.
    void clear() noexcept {
        std::fill(slots_.begin(), slots_.end(), slot{});
        clock_ = 0;
    }

    [[nodiscard]] std::optional<std::uint32_t> lookup(const mac_address& mac) const noexcept {
        const std::size_t h = hash(mac);
        for (std::size_t i = 0; i < probe_window; ++i) {
            const slot& s = slots_[(h + i) & mask_];
            if (!s.used) return std::nullopt;
            if (s.mac == mac) return s.port;
        }
        return std::nullopt;
    }

    // The learned entries, oldest first (a live update re-learns them in this order, so the
    // new table ages them as the old one would have).
    [[nodiscard]] std::vector<std::pair<mac_address, std::uint32_t>> entries() const {
        std::vector<const slot*> used;
        for (const auto& s : slots_)
            if (s.used) used.push_back(&s);
        std::sort(used.begin(), used.end(), [](const slot* a, const slot* b) { return a->stamp < b->stamp; });
        std::vector<std::pair<mac_address, std::uint32_t>> out;
        for (const slot* s : used) out.emplace_back(s->mac, s->port);
        return out;
    }

private:
    static constexpr std::size_t probe_window = 8;
    struct slot {
        mac_address mac{};
        std::uint32_t port = 0;
        std::uint64_t stamp = 0;
        bool used = false;
    };
    static std::size_t hash(const mac_address& m) noexcept {
        std::uint64_t v = 0;
        for (auto b : m) v = v << 8 | b;
        return static_cast<std::size_t>((v * 0x9e3779b97f4a7c15ULL) >> 40);
    }
    std::vector<slot> slots_;
    std::size_t mask_;
    std::uint64_t clock_ = 0;
};

// The test frame: Ethernet, IPv4, UDP, then a 64-bit little-endian sequence number at
// `sequence_offset`; 64 bytes in all unless `size` asks for more (padding is zeros).
inline constexpr std::size_t test_frame_min_size = 64;
inline constexpr std::size_t sequence_offset = ethernet_header_size + 20 + 8;

// Renumbers a test frame (at least test_frame_min_size bytes) in place.
inline void set_test_frame_sequence(std::span<std::byte> frame, std::uint64_t sequence) noexcept {
    le::store(frame.data() + sequence_offset, sequence);
}

// Writes a test frame of `size` bytes (>= 64, <= out.size()) into out; returns its length.
inline std::size_t make_test_frame(std::span<std::byte> out, std::size_t size, std::uint64_t sequence,
                                   const mac_address& src, const mac_address& dst) noexcept {
    size = std::max(size, test_frame_min_size);
    if (out.size() < size) return 0;
    std::fill_n(out.begin(), size, std::byte{0});
    auto put8 = [&](std::size_t off, std::uint8_t v) { out[off] = static_cast<std::byte>(v); };
    auto put16be = [&](std::size_t off, std::uint16_t v) {
        put8(off, static_cast<std::uint8_t>(v >> 8));
        put8(off + 1, static_cast<std::uint8_t>(v));
    };
    for (std::size_t i = 0; i < 6; ++i) {
        put8(i, dst[i]);
        put8(6 + i, src[i]);
    }
    put16be(12, 0x0800);                                        // IPv4
    const std::size_t ip = ethernet_header_size;
    put8(ip, 0x45);                                             // version 4, 5-word header
    put16be(ip + 2, static_cast<std::uint16_t>(size - ip));     // total length
    put8(ip + 8, 64);                                           // TTL
    put8(ip + 9, 17);                                           // UDP
    put16be(ip + 12, 0xc612);                                   // 198.18.0.1 -> 198.18.0.2 (RFC 2544
    put16be(ip + 14, 0x0001);                                   // benchmarking range)
    put16be(ip + 16, 0xc612);
    put16be(ip + 18, 0x0002);
    std::uint32_t sum = 0;                                      // IPv4 header checksum
    for (std::size_t i = 0; i < 20; i += 2)
        sum += static_cast<std::uint32_t>(static_cast<std::uint8_t>(out[ip + i])) << 8 |
               static_cast<std::uint8_t>(out[ip + i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    put16be(ip + 10, static_cast<std::uint16_t>(~sum));
    const std::size_t udp = ip + 20;
    put16be(udp, 9);                                            // discard port, both ways
    put16be(udp + 2, 9);
    put16be(udp + 4, static_cast<std::uint16_t>(size - udp));
    set_test_frame_sequence(out, sequence);
    return size;
}

// The sequence number of a test frame (nullopt when the frame is too short to carry one).
[[nodiscard]] inline std::optional<std::uint64_t> test_frame_sequence(std::span<const std::byte> frame) noexcept {
    if (frame.size() < sequence_offset + 8) return std::nullopt;
    return le::load<std::uint64_t>(frame.data() + sequence_offset);
}

} // namespace vvu::device::net
