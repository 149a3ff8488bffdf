// The virtio-over-PCI modern interface (virtio 1.2, §4.1 "Virtio Over PCI Bus"): the vendor
// capability that locates each structure, the common configuration layout, status bits and
// ISR bits — what a virtio-pci device model exposes and a virtio-pci driver reads. Shared by
// the VVU device model (vvu/) and the VVU driver (transport/vvu_pci.hpp), so both read one
// table. Everything is little-endian on the bus (§4.1.3).
#pragma once

#include <cstddef>
#include <cstdint>

namespace vvu::pci {

// PCI configuration space header (PCI Local Bus 3.0, §6.1) — the offsets a driver reads.
namespace config {
inline constexpr std::uint32_t vendor_id = 0x00;         // le16
inline constexpr std::uint32_t device_id = 0x02;         // le16
inline constexpr std::uint32_t command = 0x04;           // le16
inline constexpr std::uint32_t status = 0x06;            // le16; bit 4: capability list
inline constexpr std::uint32_t revision_id = 0x08;       // u8
inline constexpr std::uint32_t class_code = 0x09;        // 3 bytes: prog-if, subclass, class
inline constexpr std::uint32_t header_type = 0x0e;       // u8
inline constexpr std::uint32_t bar0 = 0x10;              // six le32 BARs
inline constexpr std::uint32_t subsystem_vendor_id = 0x2c; // le16
inline constexpr std::uint32_t subsystem_id = 0x2e;      // le16
inline constexpr std::uint32_t capabilities_pointer = 0x34; // u8
inline constexpr std::uint32_t interrupt_pin = 0x3d;     // u8
inline constexpr std::uint32_t size = 256;               // conventional config space
inline constexpr std::uint16_t status_capability_list = 1u << 4;
inline constexpr std::uint16_t command_memory = 1u << 1;
inline constexpr std::uint16_t command_bus_master = 1u << 2;
inline constexpr std::uint16_t command_intx_disable = 1u << 10;
inline constexpr std::uint8_t cap_id_vendor = 0x09; // vendor-specific: virtio_pci_cap
inline constexpr std::uint8_t cap_id_msix = 0x11;   // MSI-X (PCI 3.0 §6.8.2)
} // namespace config

// BAR flags in the low bits of a memory BAR (PCI 3.0 §6.2.5.1).
namespace bar_flags {
inline constexpr std::uint32_t memory_64 = 0x4;
inline constexpr std::uint32_t prefetchable = 0x8;
} // namespace bar_flags

// MSI-X capability (PCI 3.0 §6.8.2): after the 2-byte header, le16 message control, le32
// table offset | BIR, le32 PBA offset | BIR. Table entries are 16 bytes.
namespace msix {
inline constexpr std::uint32_t message_control = 2;
inline constexpr std::uint32_t table = 4;
inline constexpr std::uint32_t pba = 8;
inline constexpr std::uint32_t cap_size = 12;
inline constexpr std::uint16_t control_enable = 1u << 15;
inline constexpr std::uint16_t control_function_mask = 1u << 14;
inline constexpr std::uint32_t entry_size = 16;
inline constexpr std::uint16_t no_vector = 0xffff; // VIRTIO_MSI_NO_VECTOR (§4.1.4.3)
} // namespace msix

// virtio 1.2 §4.1.4: struct virtio_pci_cap and its cfg_type values. 1–5 and 8 are the
// standard's; VVU adds 6 (doorbells) and 7 (notifications) — shared/vvu-spec.md.
enum class cap_type : std::uint8_t {
    common = 1,        // VIRTIO_PCI_CAP_COMMON_CFG
    notify = 2,        // VIRTIO_PCI_CAP_NOTIFY_CFG (virtio_pci_notify_cap: + le32 multiplier)
    isr = 3,           // VIRTIO_PCI_CAP_ISR_CFG
    device = 4,        // VIRTIO_PCI_CAP_DEVICE_CFG
    pci_cfg = 5,       // VIRTIO_PCI_CAP_PCI_CFG
    doorbell = 6,      // VVU DOORBELL_CFG (+ le32 doorbell_off_multiplier)
    notification = 7,  // VVU NOTIFICATION_CFG
    shared_memory = 8, // VIRTIO_PCI_CAP_SHARED_MEMORY_CFG (virtio_pci_cap64: 64-bit offset/length)
};

// struct virtio_pci_cap (§4.1.4): byte offsets inside the capability.
namespace cap {
inline constexpr std::uint32_t vndr = 0;     // u8, 0x09
inline constexpr std::uint32_t next = 1;     // u8
inline constexpr std::uint32_t len = 2;      // u8
inline constexpr std::uint32_t cfg_type = 3; // u8
inline constexpr std::uint32_t bar = 4;      // u8
inline constexpr std::uint32_t id = 5;       // u8
inline constexpr std::uint32_t offset = 8;   // le32
inline constexpr std::uint32_t length = 12;  // le32
inline constexpr std::uint32_t size = 16;
// virtio_pci_notify_cap and the VVU doorbell cap: + le32 multiplier
inline constexpr std::uint32_t multiplier = 16;
inline constexpr std::uint32_t notify_size = 20;
// virtio_pci_cap64: + le32 offset_hi, le32 length_hi
inline constexpr std::uint32_t offset_hi = 16;
inline constexpr std::uint32_t length_hi = 20;
inline constexpr std::uint32_t cap64_size = 24;
} // namespace cap

// struct virtio_pci_common_cfg (§4.1.4.3): byte offsets.
namespace common {
inline constexpr std::uint32_t device_feature_select = 0; // le32
inline constexpr std::uint32_t device_feature = 4;        // le32
inline constexpr std::uint32_t driver_feature_select = 8; // le32
inline constexpr std::uint32_t driver_feature = 12;       // le32
inline constexpr std::uint32_t config_msix_vector = 16;   // le16
inline constexpr std::uint32_t num_queues = 18;           // le16
inline constexpr std::uint32_t device_status = 20;        // u8
inline constexpr std::uint32_t config_generation = 21;    // u8
inline constexpr std::uint32_t queue_select = 22;         // le16
inline constexpr std::uint32_t queue_size = 24;           // le16
inline constexpr std::uint32_t queue_msix_vector = 26;    // le16
inline constexpr std::uint32_t queue_enable = 28;         // le16
inline constexpr std::uint32_t queue_notify_off = 30;     // le16
inline constexpr std::uint32_t queue_desc = 32;           // le64
inline constexpr std::uint32_t queue_driver = 40;         // le64
inline constexpr std::uint32_t queue_device = 48;         // le64
inline constexpr std::uint32_t queue_notify_data = 56;    // le16
inline constexpr std::uint32_t queue_reset = 58;          // le16
inline constexpr std::uint32_t size = 60;
} // namespace common

// Device status bits (§2.1).
namespace status {
inline constexpr std::uint8_t acknowledge = 1;
inline constexpr std::uint8_t driver = 2;
inline constexpr std::uint8_t driver_ok = 4;
inline constexpr std::uint8_t features_ok = 8;
inline constexpr std::uint8_t device_needs_reset = 64;
inline constexpr std::uint8_t failed = 128;
} // namespace status

// ISR status bits (§4.1.4.5); reading the ISR clears it.
namespace isr {
inline constexpr std::uint8_t queue = 1;
inline constexpr std::uint8_t config = 2;
} // namespace isr

inline constexpr std::uint16_t virtio_vendor_id = 0x1af4;
// Modern (non-transitional) device ids are 0x1040 + the virtio device id (§4.1.2.1).
[[nodiscard]] constexpr std::uint16_t modern_device_id(std::uint16_t virtio_id) noexcept {
    return static_cast<std::uint16_t>(0x1040 + virtio_id);
}

} // namespace vvu::pci
