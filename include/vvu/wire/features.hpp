// Feature bits: virtio device-independent bits (virtio 1.2 §6 "Reserved Feature Bits"),
// virtio-net bits (§5.1.3), the vhost-user extension bit and the protocol feature bits
// (QEMU docs/interop/vhost-user.rst, "Protocol features").
#pragma once

#include <cstdint>

namespace vvu::wire {

[[nodiscard]] constexpr std::uint64_t bit(unsigned n) noexcept { return std::uint64_t{1} << n; }

[[nodiscard]] constexpr bool has(std::uint64_t features, std::uint64_t mask) noexcept {
    return (features & mask) == mask;
}

// Virtio feature bits, as carried by GET_FEATURES / SET_FEATURES.
namespace virtio_feature {
inline constexpr std::uint64_t notify_on_empty = bit(24);
inline constexpr std::uint64_t any_layout = bit(27);
inline constexpr std::uint64_t ring_indirect_desc = bit(28);
inline constexpr std::uint64_t ring_event_idx = bit(29);
inline constexpr std::uint64_t version_1 = bit(32);
inline constexpr std::uint64_t access_platform = bit(33); // VIRTIO_F_IOMMU_PLATFORM
inline constexpr std::uint64_t ring_packed = bit(34);
inline constexpr std::uint64_t in_order = bit(35);
inline constexpr std::uint64_t order_platform = bit(36);
inline constexpr std::uint64_t sr_iov = bit(37);
inline constexpr std::uint64_t notification_data = bit(38);
inline constexpr std::uint64_t notif_config_data = bit(39);
inline constexpr std::uint64_t ring_reset = bit(40);
} // namespace virtio_feature

// vhost-specific bits that share the virtio feature word.
namespace vhost_feature {
inline constexpr std::uint64_t log_all = bit(26);           // VHOST_F_LOG_ALL
inline constexpr std::uint64_t protocol_features = bit(30); // VHOST_USER_F_PROTOCOL_FEATURES
} // namespace vhost_feature

// virtio-net device feature bits (virtio 1.2 §5.1.3).
namespace net_feature {
inline constexpr std::uint64_t csum = bit(0);
inline constexpr std::uint64_t guest_csum = bit(1);
inline constexpr std::uint64_t ctrl_guest_offloads = bit(2);
inline constexpr std::uint64_t mtu = bit(3);
inline constexpr std::uint64_t mac = bit(5);
inline constexpr std::uint64_t guest_tso4 = bit(7);
inline constexpr std::uint64_t guest_tso6 = bit(8);
inline constexpr std::uint64_t guest_ecn = bit(9);
inline constexpr std::uint64_t guest_ufo = bit(10);
inline constexpr std::uint64_t host_tso4 = bit(11);
inline constexpr std::uint64_t host_tso6 = bit(12);
inline constexpr std::uint64_t host_ecn = bit(13);
inline constexpr std::uint64_t host_ufo = bit(14);
inline constexpr std::uint64_t mrg_rxbuf = bit(15);
inline constexpr std::uint64_t status = bit(16);
inline constexpr std::uint64_t ctrl_vq = bit(17);
inline constexpr std::uint64_t ctrl_rx = bit(18);
inline constexpr std::uint64_t ctrl_vlan = bit(19);
inline constexpr std::uint64_t guest_announce = bit(21);
inline constexpr std::uint64_t mq = bit(22);
inline constexpr std::uint64_t ctrl_mac_addr = bit(23);
} // namespace net_feature

// VHOST_USER_PROTOCOL_F_* (vhost-user.rst "Protocol features").
namespace protocol_feature {
inline constexpr std::uint64_t mq = bit(0);
inline constexpr std::uint64_t log_shmfd = bit(1);
inline constexpr std::uint64_t rarp = bit(2);
inline constexpr std::uint64_t reply_ack = bit(3);
inline constexpr std::uint64_t net_mtu = bit(4);
inline constexpr std::uint64_t backend_req = bit(5);
inline constexpr std::uint64_t cross_endian = bit(6);
inline constexpr std::uint64_t crypto_session = bit(7);
inline constexpr std::uint64_t pagefault = bit(8);
inline constexpr std::uint64_t config = bit(9);
inline constexpr std::uint64_t backend_send_fd = bit(10);
inline constexpr std::uint64_t host_notifier = bit(11);
inline constexpr std::uint64_t inflight_shmfd = bit(12);
inline constexpr std::uint64_t reset_device = bit(13);
inline constexpr std::uint64_t inband_notifications = bit(14);
inline constexpr std::uint64_t configure_mem_slots = bit(15);
inline constexpr std::uint64_t status = bit(16);
inline constexpr std::uint64_t xen_mmap = bit(17);
inline constexpr std::uint64_t shared_object = bit(18);
inline constexpr std::uint64_t device_state = bit(19);
// GET_VRING_BASE may leave in-flight requests unfinished (recorded in the inflight area, see
// "Inflight I/O tracking") instead of draining them; only with INFLIGHT_SHMFD.
inline constexpr std::uint64_t get_vring_base_inflight = bit(20);
// Ring and region addresses the front-end sends are guest physical, not its own virtual ones.
inline constexpr std::uint64_t gpa_addresses = bit(21);
// VIRTIO Shared Memory Regions: GET_SHMEM_CONFIG, back-end SHMEM_MAP / SHMEM_UNMAP.
inline constexpr std::uint64_t shmem = bit(22);
} // namespace protocol_feature

} // namespace vvu::wire
