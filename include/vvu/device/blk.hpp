// virtio-blk definitions (virtio 1.2 §5.2): feature bits, the config space, the request header
// and status values — what a driver (blk_driver.hpp) and, later, a back-end device share.
#pragma once

#include <vvu/util/endian.hpp>
#include <vvu/wire/features.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace vvu::device::blk {

// Feature bits (§5.2.3).
namespace feature {
inline constexpr std::uint64_t size_max = wire::bit(1);
inline constexpr std::uint64_t seg_max = wire::bit(2);
inline constexpr std::uint64_t geometry = wire::bit(4);
inline constexpr std::uint64_t ro = wire::bit(5);
inline constexpr std::uint64_t blk_size = wire::bit(6);
inline constexpr std::uint64_t flush = wire::bit(9);
inline constexpr std::uint64_t topology = wire::bit(10);
inline constexpr std::uint64_t config_wce = wire::bit(11);
inline constexpr std::uint64_t mq = wire::bit(12);
inline constexpr std::uint64_t discard = wire::bit(13);
inline constexpr std::uint64_t write_zeroes = wire::bit(14);
inline constexpr std::uint64_t lifetime = wire::bit(15);
inline constexpr std::uint64_t secure_erase = wire::bit(16);
} // namespace feature

// Capacity and offsets count 512-byte sectors whatever the block size (§5.2.4).
inline constexpr std::uint64_t sector_size = 512;

// struct virtio_blk_config (§5.2.4): the fields up to and including num_queues.
struct config {
    std::uint64_t capacity = 0;   // in 512-byte sectors
    std::uint32_t size_max = 0;   // SIZE_MAX
    std::uint32_t seg_max = 0;    // SEG_MAX
    std::uint16_t cylinders = 0;  // GEOMETRY
    std::uint8_t heads = 0;
    std::uint8_t sectors = 0;
    std::uint32_t blk_size = 0;   // BLK_SIZE
    std::uint16_t num_queues = 0; // MQ

    static constexpr std::size_t blk_size_offset = 20;
    static constexpr std::size_t num_queues_offset = 34;
    static constexpr std::size_t size = 36; // bytes read with GET_CONFIG

    // Parses the little-endian image; nullopt when it is shorter than the capacity.
    [[nodiscard]] static std::optional<config> parse(std::span<const std::uint8_t> b) noexcept {
        if (b.size() < 8) return std::nullopt;
        auto at = [&](std::size_t off) { return reinterpret_cast<const std::byte*>(b.data() + off); };
        config c;
        c.capacity = le::load<std::uint64_t>(at(0));
        if (b.size() >= 16) {
            c.size_max = le::load<std::uint32_t>(at(8));
            c.seg_max = le::load<std::uint32_t>(at(12));
        }
        if (b.size() >= 20) {
            c.cylinders = le::load<std::uint16_t>(at(16));
            c.heads = b[18];
            c.sectors = b[19];
        }
        if (b.size() >= 24) c.blk_size = le::load<std::uint32_t>(at(blk_size_offset));
        if (b.size() >= 36) c.num_queues = le::load<std::uint16_t>(at(num_queues_offset));
        return c;
    }
};

// Request types (§5.2.6).
enum class request_type : std::uint32_t {
    in = 0,       // read
    out = 1,      // write
    flush = 4,
    get_id = 8,   // 20 bytes of device id string
    get_lifetime = 10,
    discard = 11,
    write_zeroes = 13,
    secure_erase = 14,
};

// struct virtio_blk_req's device-readable head: type, reserved (ioprio in legacy), sector.
struct request_header {
    std::uint32_t type = 0;
    std::uint32_t reserved = 0;
    std::uint64_t sector = 0;
};
static_assert(sizeof(request_header) == 16);
inline constexpr std::size_t header_size = 16;
inline constexpr std::size_t id_bytes = 20; // VIRTIO_BLK_ID_BYTES

inline void store_header(const request_header& h, std::byte* out) noexcept {
    le::store(out, h.type);
    le::store(out + 4, h.reserved);
    le::store(out + 8, h.sector);
}

// The status byte the device writes last (§5.2.6).
enum class status : std::uint8_t { ok = 0, ioerr = 1, unsupp = 2 };

[[nodiscard]] constexpr const char* describe(status s) noexcept {
    switch (s) {
    case status::ok: return "ok";
    case status::ioerr: return "I/O error";
    case status::unsupp: return "unsupported request";
    }
    return "unknown status";
}

} // namespace vvu::device::blk
