// Every vhost-user payload as a standard-layout type whose object representation is its
// wire image (QEMU docs/interop/vhost-user.rst, "Payload"). Sizes and offsets are checked
// against the spec at compile time; padding is explicit so that a decoded message
// re-encodes to the very same bytes.
//
// Each type lists its integer fields in `fields` so that the codec can put them in
// little-endian order on a big-endian host; on a little-endian host a payload is copied.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>

namespace vvu::wire {

// A payload that carries no bytes (e.g. GET_FEATURES, SET_OWNER).
struct empty_payload {
    static constexpr auto fields = std::tuple{};
    friend constexpr bool operator==(const empty_payload&, const empty_payload&) = default;
};

// "A single 64-bit integer".
struct u64_payload {
    std::uint64_t value = 0;
    static constexpr auto fields = std::tuple{&u64_payload::value};
    friend constexpr bool operator==(const u64_payload&, const u64_payload&) = default;
};
static_assert(sizeof(u64_payload) == 8);

// SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR: "Bits (0-7) of the payload contain the
// vring index. Bit 8 is the invalid FD flag." The same encoding, with bits 0-7 meaning
// success/error, is the reply of SET_DEVICE_STATE_FD.
struct vring_fd_payload {
    static constexpr std::uint64_t index_mask = 0xff;
    static constexpr std::uint64_t nofd_flag = 0x100; // VHOST_USER_VRING_NOFD_MASK

    std::uint64_t value = 0;

    [[nodiscard]] constexpr unsigned index() const noexcept { return static_cast<unsigned>(value & index_mask); }
    [[nodiscard]] constexpr bool no_fd() const noexcept { return (value & nofd_flag) != 0; }
    static constexpr std::tuple fields{&vring_fd_payload::value};
    friend constexpr bool operator==(const vring_fd_payload&, const vring_fd_payload&) = default;
};
static_assert(sizeof(vring_fd_payload) == 8);

// "A vring state description": SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE,
// SET_VRING_ENDIAN, VRING_KICK, and the back-end's VRING_CALL / VRING_ERR.
struct vring_state {
    std::uint32_t index = 0;
    std::uint32_t num = 0;
    static constexpr std::tuple fields{&vring_state::index, &vring_state::num};
    friend constexpr bool operator==(const vring_state&, const vring_state&) = default;
};
static_assert(sizeof(vring_state) == 8 && offsetof(vring_state, num) == 4);

// "Vring descriptor indices for packed virtqueues" (SET/GET_VRING_BASE num field).
struct packed_vring_base {
    std::uint16_t avail_index = 0; // bits 0-14
    bool avail_wrap = true;        // bit 15
    std::uint16_t used_index = 0;  // bits 16-30
    bool used_wrap = true;         // bit 31

    [[nodiscard]] static constexpr packed_vring_base from_num(std::uint32_t num) noexcept {
        return {static_cast<std::uint16_t>(num & 0x7fff), (num & 0x8000) != 0,
                static_cast<std::uint16_t>((num >> 16) & 0x7fff), (num & 0x8000'0000u) != 0};
    }
    [[nodiscard]] constexpr std::uint32_t to_num() const noexcept {
        return (avail_index & 0x7fffu) | (avail_wrap ? 0x8000u : 0u) |
               (std::uint32_t{used_index & 0x7fffu} << 16) | (used_wrap ? 0x8000'0000u : 0u);
    }
    friend constexpr bool operator==(const packed_vring_base&, const packed_vring_base&) = default;
};

// "A vring address description" (SET_VRING_ADDR).
struct vring_addr {
    static constexpr std::uint32_t flag_log = 0x1; // VHOST_VRING_F_LOG

    std::uint32_t index = 0;
    std::uint32_t flags = 0;
    std::uint64_t desc_user_addr = 0;
    std::uint64_t used_user_addr = 0;
    std::uint64_t avail_user_addr = 0;
    std::uint64_t log_guest_addr = 0;
    static constexpr std::tuple fields{&vring_addr::index, &vring_addr::flags, &vring_addr::desc_user_addr,
                                       &vring_addr::used_user_addr, &vring_addr::avail_user_addr,
                                       &vring_addr::log_guest_addr};
    friend constexpr bool operator==(const vring_addr&, const vring_addr&) = default;
};
static_assert(sizeof(vring_addr) == 40);
static_assert(offsetof(vring_addr, flags) == 4 && offsetof(vring_addr, desc_user_addr) == 8 &&
              offsetof(vring_addr, used_user_addr) == 16 && offsetof(vring_addr, avail_user_addr) == 24 &&
              offsetof(vring_addr, log_guest_addr) == 32);

// "Memory region description".
struct memory_region {
    std::uint64_t guest_phys_addr = 0;
    std::uint64_t memory_size = 0;
    std::uint64_t userspace_addr = 0;
    std::uint64_t mmap_offset = 0;
    static constexpr std::tuple fields{&memory_region::guest_phys_addr, &memory_region::memory_size,
                                       &memory_region::userspace_addr, &memory_region::mmap_offset};
    friend constexpr bool operator==(const memory_region&, const memory_region&) = default;
};
static_assert(sizeof(memory_region) == 32 && offsetof(memory_region, memory_size) == 8 &&
              offsetof(memory_region, userspace_addr) == 16 && offsetof(memory_region, mmap_offset) == 24);

// "Multiple Memory regions description" (SET_MEM_TABLE): on the wire only the first
// `nregions` entries are present, so the payload is 8 + 32 * nregions bytes.
struct memory_table {
    static constexpr std::size_t max_regions = 8; // VHOST_MEMORY_BASELINE_NREGIONS
    static constexpr std::size_t fixed_size = 8;

    std::uint32_t nregions = 0;
    std::uint32_t padding = 0;
    std::array<memory_region, max_regions> regions{};
    static constexpr std::tuple fields{&memory_table::nregions, &memory_table::padding};
    friend constexpr bool operator==(const memory_table&, const memory_table&) = default;
};
static_assert(offsetof(memory_table, regions) == 8 && sizeof(memory_table) == 8 + 8 * 32);

// "Single memory region description" (ADD_MEM_REG / REM_MEM_REG).
struct single_memory_region {
    std::uint64_t padding = 0;
    memory_region region{};
    static constexpr std::tuple fields{&single_memory_region::padding, &single_memory_region::region};
    friend constexpr bool operator==(const single_memory_region&, const single_memory_region&) = default;
};
static_assert(sizeof(single_memory_region) == 40 && offsetof(single_memory_region, region) == 8);

// "Log description" (SET_LOG_BASE). The spec's message table says "u64", but the payload
// section and every implementation carry this 16-byte description.
struct log_description {
    std::uint64_t mmap_size = 0;
    std::uint64_t mmap_offset = 0;
    // The log's bytes described as a region to map: mmap_size bytes of its file at mmap_offset
    // (no guest or front-end address).
    [[nodiscard]] constexpr memory_region as_region() const noexcept { return {0, mmap_size, 0, mmap_offset}; }
    static constexpr std::tuple fields{&log_description::mmap_size, &log_description::mmap_offset};
    friend constexpr bool operator==(const log_description&, const log_description&) = default;
};
static_assert(sizeof(log_description) == 16);

// "An IOTLB message" (struct vhost_iotlb_msg): 26 bytes of fields, padded to 32 by its
// 8-byte alignment.
struct iotlb_message {
    enum access : std::uint8_t { no_access = 0, read = 1, write = 2, read_write = 3 };
    enum kind : std::uint8_t { miss = 1, update = 2, invalidate = 3, access_fail = 4 };

    std::uint64_t iova = 0;
    std::uint64_t size = 0;
    std::uint64_t uaddr = 0;
    std::uint8_t perm = 0;
    std::uint8_t type = 0;
    std::array<std::uint8_t, 6> padding{};
    static constexpr std::tuple fields{&iotlb_message::iova, &iotlb_message::size, &iotlb_message::uaddr};
    friend constexpr bool operator==(const iotlb_message&, const iotlb_message&) = default;
};
static_assert(sizeof(iotlb_message) == 32 && offsetof(iotlb_message, perm) == 24 &&
              offsetof(iotlb_message, type) == 25);

// "Virtio device config space" (GET_CONFIG / SET_CONFIG): 12 bytes, then `size` bytes.
struct config_space {
    static constexpr std::size_t max_size = 256; // VHOST_USER_MAX_CONFIG_SIZE
    static constexpr std::size_t fixed_size = 12;
    static constexpr std::uint32_t flag_writable = 0;  // front-end writes a writable field
    static constexpr std::uint32_t flag_migration = 1; // live migration restores the space

    std::uint32_t offset = 0;
    std::uint32_t size = 0;
    std::uint32_t flags = 0;
    std::array<std::uint8_t, max_size> region{};
    static constexpr std::tuple fields{&config_space::offset, &config_space::size, &config_space::flags};
    friend constexpr bool operator==(const config_space&, const config_space&) = default;
};
static_assert(offsetof(config_space, region) == 12);

// CREATE_CRYPTO_SESSION: the spec names the payload without a layout. This is the 632-byte
// layout that both QEMU 7.2 (VhostUserCryptoSession) and DPDK 22.11
// (VhostUserCryptoSessionParam) put on the wire: a session id, 48 bytes of symmetric
// session parameters (implementation-defined, carried opaquely), a 64-byte cipher key and a
// 512-byte authentication key.
struct crypto_session {
    std::int64_t session_id = 0;
    std::array<std::uint8_t, 48> parameters{};
    std::array<std::uint8_t, 64> cipher_key{};
    std::array<std::uint8_t, 512> auth_key{};
    static constexpr std::tuple fields{&crypto_session::session_id};
    friend constexpr bool operator==(const crypto_session&, const crypto_session&) = default;
};
static_assert(sizeof(crypto_session) == 632 && offsetof(crypto_session, cipher_key) == 56 &&
              offsetof(crypto_session, auth_key) == 120);

// "Vring area description" (back-end VRING_HOST_NOTIFIER_MSG).
struct vring_area {
    static constexpr std::uint64_t index_mask = 0xff;
    static constexpr std::uint64_t nofd_flag = 0x100;

    std::uint64_t u64 = 0; // vring index and flags
    std::uint64_t size = 0;
    std::uint64_t offset = 0;
    [[nodiscard]] constexpr unsigned index() const noexcept { return static_cast<unsigned>(u64 & index_mask); }
    [[nodiscard]] constexpr bool no_fd() const noexcept { return (u64 & nofd_flag) != 0; }
    static constexpr std::tuple fields{&vring_area::u64, &vring_area::size, &vring_area::offset};
    friend constexpr bool operator==(const vring_area&, const vring_area&) = default;
};
static_assert(sizeof(vring_area) == 24);

// "Inflight description" (GET_INFLIGHT_FD / SET_INFLIGHT_FD): 20 bytes of fields, padded
// to 24 by the 8-byte alignment of the C struct every implementation sends.
struct inflight_description {
    std::uint64_t mmap_size = 0;
    std::uint64_t mmap_offset = 0;
    std::uint16_t num_queues = 0;
    std::uint16_t queue_size = 0;
    std::uint32_t padding = 0;
    static constexpr std::tuple fields{&inflight_description::mmap_size, &inflight_description::mmap_offset,
                                       &inflight_description::num_queues, &inflight_description::queue_size,
                                       &inflight_description::padding};
    friend constexpr bool operator==(const inflight_description&, const inflight_description&) = default;
};
static_assert(sizeof(inflight_description) == 24 && offsetof(inflight_description, num_queues) == 16 &&
              offsetof(inflight_description, queue_size) == 18);

// "VhostUserShared": a 16-byte UUID (its first fields big-endian, so kept as bytes).
struct shared_object {
    std::array<std::uint8_t, 16> uuid{};
    static constexpr auto fields = std::tuple{};
    friend constexpr bool operator==(const shared_object&, const shared_object&) = default;
};
static_assert(sizeof(shared_object) == 16);

// "Device state transfer parameters" (SET_DEVICE_STATE_FD).
struct device_state_transfer {
    enum direction_t : std::uint32_t { save = 0, load = 1 };
    enum phase_t : std::uint32_t { stopped = 0 };

    std::uint32_t direction = save;
    std::uint32_t phase = stopped;
    static constexpr std::tuple fields{&device_state_transfer::direction, &device_state_transfer::phase};
    friend constexpr bool operator==(const device_state_transfer&, const device_state_transfer&) = default;
};
static_assert(sizeof(device_state_transfer) == 8);

// "MMAP request" (back-end SHMEM_MAP, with the fd to map; SHMEM_UNMAP, without): a range of
// VIRTIO Shared Memory Region `shmid`. 8-bit shmid, 7 bytes of padding, four 64-bit fields.
struct shmem_mapping {
    static constexpr std::uint64_t flag_read_write = 0x1; // 0: read-only, 1: read-write

    std::uint8_t shmid = 0;
    std::array<std::uint8_t, 7> padding{};
    std::uint64_t fd_offset = 0;  // in the fd that comes with SHMEM_MAP
    std::uint64_t shm_offset = 0; // in the shared memory region
    std::uint64_t len = 0;
    std::uint64_t flags = 0;
    static constexpr std::tuple fields{&shmem_mapping::fd_offset, &shmem_mapping::shm_offset, &shmem_mapping::len,
                                       &shmem_mapping::flags};
    friend constexpr bool operator==(const shmem_mapping&, const shmem_mapping&) = default;
};
static_assert(sizeof(shmem_mapping) == 40 && offsetof(shmem_mapping, fd_offset) == 8 &&
              offsetof(shmem_mapping, shm_offset) == 16 && offsetof(shmem_mapping, len) == 24 &&
              offsetof(shmem_mapping, flags) == 32);

// "VIRTIO Shared Memory Region configuration" (the reply to GET_SHMEM_CONFIG): the number of
// regions and each one's size, the shmid being the index. The layout shows all 256 sizes
// ("mem size 0 .. mem size 255"), and the whole array travels: the payload has a fixed size.
struct shmem_config {
    static constexpr std::size_t max_regions = 256; // one per 8-bit shmid

    std::uint32_t nregions = 0;
    std::uint32_t padding = 0;
    std::array<std::uint64_t, max_regions> memory_sizes{};
    static constexpr std::tuple fields{&shmem_config::nregions, &shmem_config::padding};
    friend constexpr bool operator==(const shmem_config&, const shmem_config&) = default;
};
static_assert(sizeof(shmem_config) == 8 + 256 * 8 && offsetof(shmem_config, memory_sizes) == 8);

// What makes a payload type: standard layout, no hidden padding (so the object
// representation is the wire image), and a field list for byte order.
template <class T>
concept payload = std::is_standard_layout_v<T> && std::is_trivially_copyable_v<T> &&
                  (std::is_empty_v<T> || std::has_unique_object_representations_v<T>) &&
                  requires { T::fields; };

static_assert(payload<empty_payload> && payload<u64_payload> && payload<vring_fd_payload> &&
              payload<vring_state> && payload<vring_addr> && payload<memory_region> &&
              payload<memory_table> && payload<single_memory_region> && payload<log_description> &&
              payload<iotlb_message> && payload<config_space> && payload<crypto_session> &&
              payload<vring_area> && payload<inflight_description> && payload<shared_object> &&
              payload<device_state_transfer> && payload<shmem_mapping> && payload<shmem_config>);

// The largest payload any valid message carries (the reply to GET_SHMEM_CONFIG; before it,
// CREATE_CRYPTO_SESSION). A transport can refuse a header announcing more before reading a
// byte of payload.
inline constexpr std::size_t max_payload_size =
    sizeof(shmem_config) > sizeof(crypto_session) ? sizeof(shmem_config) : sizeof(crypto_session);

} // namespace vvu::wire
