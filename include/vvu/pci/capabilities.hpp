// The capability list of a PCI function (PCI Local Bus 3.0 §6.7) as a virtio-pci driver needs
// it: every virtio vendor capability (virtio 1.2 §4.1.4: struct virtio_pci_cap, the notify
// cap's multiplier §4.1.4.4, virtio_pci_cap64 for shared memory §4.1.4.7) and the MSI-X
// capability (PCI 3.0 §6.8.2).
//
//   auto caps = vvu::pci::read_capabilities(function);      // expected<capability_list, error>
//   const auto* common = caps->find(vvu::pci::cap_type::common);
//
// Config space comes from the device and is hostile: the list is parsed from one snapshot of the
// 256-byte conventional config space (so the device cannot change it between reads), every
// pointer is checked (dword-aligned, past the 64-byte header, no revisit, at most 48 entries)
// and every capability must lie inside config space. A malformed list is an error naming the
// rule, never a read outside config space or a loop.
#pragma once

#include <vvu/pci/function.hpp>
#include <vvu/pci/virtio_pci.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/expected.hpp>

#include <array>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace vvu::pci {

// One virtio vendor capability, decoded.
struct virtio_capability {
    cap_type type{};              // cfg_type as read (a value this driver does not know is kept)
    std::uint8_t position = 0;    // where the capability sits in config space
    std::uint8_t bar = 0;         // 0–5 (pci_cfg: whatever the device holds there)
    std::uint8_t id = 0;          // distinguishes several caps of one type (shared memory)
    std::uint64_t offset = 0;     // in the BAR; cap64 (shared_memory): offset_hi << 32 | offset
    std::uint64_t length = 0;     // cap64: length_hi << 32 | length
    std::uint32_t multiplier = 0; // notify_off_multiplier (notify) / doorbell_off_multiplier (VVU)
};

// The MSI-X capability, decoded (PCI 3.0 §6.8.2).
struct msix_capability {
    std::uint8_t position = 0;
    std::uint16_t table_size = 0; // vectors: message control bits 10:0, plus one
    bool enabled = false;
    bool function_masked = false;
    std::uint8_t table_bar = 0;   // BIR
    std::uint32_t table_offset = 0;
    std::uint8_t pba_bar = 0;
    std::uint32_t pba_offset = 0;
};

struct capability_list {
    std::vector<virtio_capability> virtio; // in list order
    std::optional<msix_capability> msix;
    std::uint32_t total = 0;               // every capability walked, of any id

    // The first capability of a type: §4.1.4.1 lets a device offer several and tells the
    // driver to use the first it supports.
    [[nodiscard]] const virtio_capability* find(cap_type t) const noexcept {
        for (const auto& c : virtio)
            if (c.type == t) return &c;
        return nullptr;
    }
    // The capability of a type with a given id (shared-memory regions are told apart by id).
    [[nodiscard]] const virtio_capability* find(cap_type t, std::uint8_t id) const noexcept {
        for (const auto& c : virtio)
            if (c.type == t && c.id == id) return &c;
        return nullptr;
    }
};

// 48 = (256 - 64) / 4: one capability per dword after the header, so a longer walk is a loop.
inline constexpr std::uint32_t max_capabilities = 48;
inline constexpr std::uint32_t first_capability_offset = 0x40;
inline constexpr std::uint8_t max_bar = 5;

namespace detail {

inline std::string hex(std::uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

// e, with the step that was being done in front of what the binding said.
inline error in_step(const std::string& step, const error& e) {
    return error{e.code, e.what.empty() ? step : step + ": " + e.what};
}

inline error malformed(std::string what) {
    return error{std::make_error_code(std::errc::protocol_error), "capability list: " + std::move(what)};
}

// The smallest cap_len each known cfg_type needs for the fields this driver reads.
inline std::uint32_t min_virtio_cap_length(cap_type t) noexcept {
    switch (t) {
    case cap_type::notify:
    case cap_type::doorbell: return cap::notify_size;
    case cap_type::shared_memory: return cap::cap64_size;
    default: return cap::size;
    }
}

inline bool known_cap_type(std::uint8_t t) noexcept { return t >= 1 && t <= 8; }

} // namespace detail

// Parses the capability list from a snapshot of conventional config space (>= 256 bytes).
[[nodiscard]] inline expected<capability_list, error> parse_capabilities(std::span<const std::byte> config) {
    using detail::hex;
    using detail::malformed;
    if (config.size() < config::size)
        return unexpected(error{std::make_error_code(std::errc::invalid_argument),
                                "capability list: config space snapshot shorter than 256 bytes"});
    const auto u8 = [&](std::uint32_t off) { return std::to_integer<std::uint8_t>(config[off]); };
    const auto status = le::load<std::uint16_t>(config.data() + config::status);
    if ((status & config::status_capability_list) == 0)
        return unexpected(malformed("status register says the function has none (bit 4 clear)"));

    capability_list out;
    std::bitset<config::size / 4> visited;
    std::uint32_t at = u8(config::capabilities_pointer);
    while (at != 0) {
        if (out.total == max_capabilities)
            return unexpected(malformed("more than 48 capabilities (the list loops)"));
        if (at < first_capability_offset)
            return unexpected(malformed("pointer " + hex(at) + " points into the config header"));
        if (at % 4 != 0) return unexpected(malformed("pointer " + hex(at) + " is not dword-aligned"));
        if (visited[at / 4]) return unexpected(malformed("the list loops back to " + hex(at)));
        visited[at / 4] = true;
        ++out.total;
        // at <= 0xfc here, so the 2-byte header (id, next) is inside config space.
        const std::uint8_t id = u8(at);
        const std::uint8_t next = u8(at + 1);

        if (id == config::cap_id_vendor) {
            const std::uint32_t len = u8(at + cap::len);
            if (len < cap::size)
                return unexpected(malformed("virtio capability at " + hex(at) + " has cap_len " +
                                            std::to_string(len) + " (< 16)"));
            if (at + len > config::size)
                return unexpected(malformed("virtio capability at " + hex(at) + " (cap_len " +
                                            std::to_string(len) + ") extends past config space"));
            virtio_capability c;
            const std::uint8_t raw_type = u8(at + cap::cfg_type);
            c.type = static_cast<cap_type>(raw_type);
            c.position = static_cast<std::uint8_t>(at);
            c.bar = u8(at + cap::bar);
            c.id = u8(at + cap::id);
            c.offset = le::load<std::uint32_t>(config.data() + at + cap::offset);
            c.length = le::load<std::uint32_t>(config.data() + at + cap::length);
            const std::uint32_t need = detail::min_virtio_cap_length(c.type);
            if (detail::known_cap_type(raw_type) && len < need)
                return unexpected(malformed("virtio capability type " + std::to_string(raw_type) + " at " + hex(at) +
                                            " has cap_len " + std::to_string(len) + " (needs " +
                                            std::to_string(need) + ")"));
            if (c.type == cap_type::notify || c.type == cap_type::doorbell)
                c.multiplier = le::load<std::uint32_t>(config.data() + at + cap::multiplier);
            if (c.type == cap_type::shared_memory) {
                c.offset |= std::uint64_t{le::load<std::uint32_t>(config.data() + at + cap::offset_hi)} << 32;
                c.length |= std::uint64_t{le::load<std::uint32_t>(config.data() + at + cap::length_hi)} << 32;
                if (c.length > ~std::uint64_t{0} - c.offset)
                    return unexpected(malformed("shared-memory capability at " + hex(at) +
                                                ": offset + length overflows 64 bits"));
            }
            // §4.1.4: a reserved BAR value (> 5) makes the driver ignore the structure. The
            // pci_cfg window's bar field is a driver-written selector, not a location.
            const bool ignored = c.type != cap_type::pci_cfg && c.bar > max_bar;
            if (!ignored) out.virtio.push_back(c);
        } else if (id == config::cap_id_msix) {
            if (at + msix::cap_size > config::size)
                return unexpected(malformed("MSI-X capability at " + hex(at) + " extends past config space"));
            if (out.msix) return unexpected(malformed("a second MSI-X capability at " + hex(at)));
            msix_capability m;
            m.position = static_cast<std::uint8_t>(at);
            const auto control = le::load<std::uint16_t>(config.data() + at + msix::message_control);
            m.table_size = static_cast<std::uint16_t>((control & 0x7ff) + 1);
            m.enabled = (control & msix::control_enable) != 0;
            m.function_masked = (control & msix::control_function_mask) != 0;
            const auto table = le::load<std::uint32_t>(config.data() + at + msix::table);
            const auto pba = le::load<std::uint32_t>(config.data() + at + msix::pba);
            m.table_bar = static_cast<std::uint8_t>(table & 7);
            m.table_offset = table & ~std::uint32_t{7};
            m.pba_bar = static_cast<std::uint8_t>(pba & 7);
            m.pba_offset = pba & ~std::uint32_t{7};
            if (m.table_bar > max_bar || m.pba_bar > max_bar)
                return unexpected(malformed("MSI-X capability at " + hex(at) + " names a BAR above 5"));
            out.msix = m;
        }
        at = next;
    }
    return out;
}

// Reads config space once and parses its capability list.
template <pci_function F>
[[nodiscard]] expected<capability_list, error> read_capabilities(F& f) {
    std::array<std::byte, config::size> snapshot{};
    auto r = f.config_read(0, snapshot);
    if (!r) return unexpected(detail::in_step("reading config space", r.error()));
    return parse_capabilities(snapshot);
}

} // namespace vvu::pci
