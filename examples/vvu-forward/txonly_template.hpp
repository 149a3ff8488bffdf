// vvu-forward --check testpmd-txonly: what DPDK testpmd's txonly forwarding mode sends with its
// defaults, checked field by field. Every frame is built from one template, so all must be
// byte-identical in their headers (the payload bytes testpmd never writes, so they are not
// looked at):
//   Ethernet  destination 02:00:00:00:00:00 (testpmd's default peer address of port 0), source
//             the sender's port MAC (whatever the first frame carries, then the same in all),
//             type IPv4
//   IPv4      version 4, IHL 5, TOS 0, total length = frame - 14, id 0, no fragment, TTL 64,
//             protocol UDP, a valid header checksum, 198.18.0.1 -> 198.18.0.2 (RFC 2544's
//             benchmarking range, testpmd's --tx-ip default)
//   UDP       port 9 -> 9 (testpmd's --tx-udp default), length = frame - 34, checksum 0
//   size      --size bytes (testpmd's default --txpkts is 64)
#pragma once

#include <vvu/device/net.hpp>

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace vvu::examples {

class txonly_template_check {
public:
    explicit txonly_template_check(std::size_t frame_size) : frame_size_(frame_size) {}

    // Why `f` is not such a frame, or nullopt when it is.
    std::optional<std::string> mismatch(vvu::device::net::frame f) {
        if (f.size() != frame_size_) return fmt::format("{} bytes, not {}", f.size(), frame_size_);
        auto u8 = [&](std::size_t at) { return std::to_integer<std::uint8_t>(f[at]); };
        auto be16 = [&](std::size_t at) { return static_cast<std::uint16_t>(u8(at) << 8 | u8(at + 1)); };
        constexpr std::size_t ip = 14, udp = ip + 20;
        for (std::size_t i = 0; i < 6; ++i)
            if (u8(i) != (i == 0 ? 0x02 : 0x00)) return std::string("destination MAC is not 02:00:00:00:00:00");
        if (!source_) {
            source_.emplace();
            for (std::size_t i = 0; i < 6; ++i) (*source_)[i] = u8(6 + i);
        }
        for (std::size_t i = 0; i < 6; ++i)
            if (u8(6 + i) != (*source_)[i]) return std::string("source MAC differs from the first frame's");
        if (be16(12) != 0x0800) return fmt::format("EtherType {:#06x}, not IPv4", be16(12));
        if (u8(ip) != 0x45 || u8(ip + 1) != 0) return std::string("IPv4 version/IHL/TOS are not 0x45 00");
        if (be16(ip + 2) != frame_size_ - ip) return fmt::format("IPv4 total length {}", be16(ip + 2));
        if (be16(ip + 4) != 0 || be16(ip + 6) != 0) return std::string("IPv4 id or fragment field is not 0");
        if (u8(ip + 8) != 64 || u8(ip + 9) != 17) return std::string("IPv4 TTL/protocol are not 64/UDP");
        std::uint32_t sum = 0; // RFC 1071: the header's one's-complement sum, checksum included, is 0xffff
        for (std::size_t i = 0; i < 20; i += 2) sum += be16(ip + i);
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
        if (sum != 0xffff) return std::string("bad IPv4 header checksum");
        constexpr std::array<std::uint8_t, 8> addresses{198, 18, 0, 1, 198, 18, 0, 2};
        for (std::size_t i = 0; i < addresses.size(); ++i)
            if (u8(ip + 12 + i) != addresses[i]) return std::string("IPv4 addresses are not 198.18.0.1 -> 198.18.0.2");
        if (be16(udp) != 9 || be16(udp + 2) != 9) return fmt::format("UDP ports {} -> {}", be16(udp), be16(udp + 2));
        if (be16(udp + 4) != frame_size_ - udp) return fmt::format("UDP length {}", be16(udp + 4));
        if (be16(udp + 6) != 0) return std::string("UDP checksum is not 0");
        return std::nullopt;
    }

    // The first 42 bytes (the headers) in hex, for a report.
    static std::string headers_hex(vvu::device::net::frame f) {
        std::string s;
        for (std::size_t i = 0; i < f.size() && i < 42; ++i) s += fmt::format("{:02x}", std::to_integer<unsigned>(f[i]));
        return s;
    }

private:
    std::size_t frame_size_;
    std::optional<std::array<std::uint8_t, 6>> source_;
};

} // namespace vvu::examples
