// vfio-user wire format (QEMU docs/interop/vfio-user.rst, "Protocol Specification").
//
// Every message is a 16-byte header followed by a command-specific payload; payloads here are
// standard-layout structs whose sizes and offsets are static_asserted against the spec's
// tables. The spec says "all data is in the endianness of the host system": vvu supports
// little-endian hosts only (the assertion below), so a struct is read with one memcpy.
//
// Also here: the VERSION capabilities JSON (parse_capabilities / format_capabilities), with a
// small strict JSON reader — the string comes from the peer and is hostile.
#pragma once

#include <vvu/pci/function.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <bit>
#include <chrono>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace vvu::vfio_user {

static_assert(std::endian::native == std::endian::little,
              "vfio-user messages are in host byte order; vvu reads them as little-endian");

// Errors of the vfio-user client and server: an errno-style code and what was being done
// (e.g. "REGION_READ: region 7 [0x100, +8) is outside the region (size 0x100)").
using error = pci::error;

// The protocol version vvu speaks ("VFIO_USER_VERSION"): 0.0 — the base protocol; none of the
// optional later messages (REGION_WRITE_MULTI, DEVICE_FEATURE, migration) are used.
inline constexpr std::uint16_t version_major = 0;
inline constexpr std::uint16_t version_minor = 0;

// "Commands" table.
enum class command : std::uint16_t {
    version = 1,
    dma_map = 2,
    dma_unmap = 3,
    device_get_info = 4,
    device_get_region_info = 5,
    device_get_region_io_fds = 6,
    device_get_irq_info = 7,
    device_set_irqs = 8,
    region_read = 9,
    region_write = 10,
    dma_read = 11,
    dma_write = 12,
    device_reset = 13,
    region_write_multi = 15,
    device_feature = 16,
    mig_data_read = 17,
    mig_data_write = 18,
};

// The spec's name of a command number, for error messages ("UNKNOWN" for others).
[[nodiscard]] constexpr std::string_view command_name(std::uint16_t cmd) noexcept {
    switch (static_cast<command>(cmd)) {
    case command::version: return "VERSION";
    case command::dma_map: return "DMA_MAP";
    case command::dma_unmap: return "DMA_UNMAP";
    case command::device_get_info: return "DEVICE_GET_INFO";
    case command::device_get_region_info: return "DEVICE_GET_REGION_INFO";
    case command::device_get_region_io_fds: return "DEVICE_GET_REGION_IO_FDS";
    case command::device_get_irq_info: return "DEVICE_GET_IRQ_INFO";
    case command::device_set_irqs: return "DEVICE_SET_IRQS";
    case command::region_read: return "REGION_READ";
    case command::region_write: return "REGION_WRITE";
    case command::dma_read: return "DMA_READ";
    case command::dma_write: return "DMA_WRITE";
    case command::device_reset: return "DEVICE_RESET";
    case command::region_write_multi: return "REGION_WRITE_MULTI";
    case command::device_feature: return "DEVICE_FEATURE";
    case command::mig_data_read: return "MIG_DATA_READ";
    case command::mig_data_write: return "MIG_DATA_WRITE";
    }
    return "UNKNOWN";
}
[[nodiscard]] constexpr std::string_view command_name(command c) noexcept {
    return command_name(static_cast<std::uint16_t>(c));
}

// "Header".
struct header {
    std::uint16_t msg_id = 0;
    std::uint16_t cmd = 0;
    std::uint32_t msg_size = 0; // including this header
    std::uint32_t flags = 0;
    std::uint32_t error_no = 0; // valid in a reply with flags & error
};
static_assert(std::is_standard_layout_v<header> && sizeof(header) == 16);
static_assert(offsetof(header, msg_id) == 0 && offsetof(header, cmd) == 2 && offsetof(header, msg_size) == 4 &&
              offsetof(header, flags) == 8 && offsetof(header, error_no) == 12);
inline constexpr std::size_t header_size = sizeof(header);

namespace header_flags {
inline constexpr std::uint32_t type_mask = 0xf; // bits 0-3
inline constexpr std::uint32_t type_command = 0x0;
inline constexpr std::uint32_t type_reply = 0x1;
inline constexpr std::uint32_t no_reply = 1u << 4;
inline constexpr std::uint32_t error = 1u << 5;
} // namespace header_flags

// "VFIO_USER_VERSION" request and reply: followed by optional NUL-terminated UTF-8 JSON.
struct version_payload {
    std::uint16_t major = 0;
    std::uint16_t minor = 0;
};
static_assert(std::is_standard_layout_v<version_payload> && sizeof(version_payload) == 4);
static_assert(offsetof(version_payload, major) == 0 && offsetof(version_payload, minor) == 2);

// "VFIO_USER_DMA_MAP" request (the reply has no payload). One fd when the server may mmap it.
struct dma_map_payload {
    std::uint32_t argsz = sizeof(dma_map_payload);
    std::uint32_t flags = 0; // dma_flags
    std::uint64_t offset = 0; // file offset in the fd
    std::uint64_t addr = 0;   // DMA (bus) address
    std::uint64_t size = 0;
};
static_assert(std::is_standard_layout_v<dma_map_payload> && sizeof(dma_map_payload) == 32);
static_assert(offsetof(dma_map_payload, argsz) == 0 && offsetof(dma_map_payload, flags) == 4 &&
              offsetof(dma_map_payload, offset) == 8 && offsetof(dma_map_payload, addr) == 16 &&
              offsetof(dma_map_payload, size) == 24);

namespace dma_flags {
inline constexpr std::uint32_t read = 1u << 0;
inline constexpr std::uint32_t write = 1u << 1;
} // namespace dma_flags

// "VFIO_USER_DMA_UNMAP" request; the reply repeats it.
struct dma_unmap_payload {
    std::uint32_t argsz = sizeof(dma_unmap_payload);
    std::uint32_t flags = 0; // unused ("unused in this version"); vvu requires 0
    std::uint64_t addr = 0;
    std::uint64_t size = 0;
};
static_assert(std::is_standard_layout_v<dma_unmap_payload> && sizeof(dma_unmap_payload) == 24);
static_assert(offsetof(dma_unmap_payload, flags) == 4 && offsetof(dma_unmap_payload, addr) == 8 &&
              offsetof(dma_unmap_payload, size) == 16);

// "VFIO_USER_DEVICE_GET_INFO" request and reply (struct vfio_device_info's first fields).
struct device_info_payload {
    std::uint32_t argsz = sizeof(device_info_payload);
    std::uint32_t flags = 0; // VFIO_DEVICE_FLAGS_*
    std::uint32_t num_regions = 0;
    std::uint32_t num_irqs = 0;
};
static_assert(std::is_standard_layout_v<device_info_payload> && sizeof(device_info_payload) == 16);
static_assert(offsetof(device_info_payload, flags) == 4 && offsetof(device_info_payload, num_regions) == 8 &&
              offsetof(device_info_payload, num_irqs) == 12);

namespace device_flags {
inline constexpr std::uint32_t reset = 1u << 0; // VFIO_DEVICE_FLAGS_RESET
inline constexpr std::uint32_t pci = 1u << 1;   // VFIO_DEVICE_FLAGS_PCI
} // namespace device_flags

// "VFIO_USER_DEVICE_GET_REGION_INFO" request and reply (struct vfio_region_info); in the reply,
// capabilities follow at cap_offset (relative to this struct) when flags has region_flags::caps.
struct region_info_payload {
    std::uint32_t argsz = sizeof(region_info_payload);
    std::uint32_t flags = 0;
    std::uint32_t index = 0;
    std::uint32_t cap_offset = 0;
    std::uint64_t size = 0;
    std::uint64_t offset = 0; // mmap() offset of the region in the fd
};
static_assert(std::is_standard_layout_v<region_info_payload> && sizeof(region_info_payload) == 32);
static_assert(offsetof(region_info_payload, flags) == 4 && offsetof(region_info_payload, index) == 8 &&
              offsetof(region_info_payload, cap_offset) == 12 && offsetof(region_info_payload, size) == 16 &&
              offsetof(region_info_payload, offset) == 24);

// "VFIO cap header format" (struct vfio_info_cap_header); `next` is relative to the region info.
struct cap_header {
    std::uint16_t id = 0;
    std::uint16_t version = 0;
    std::uint32_t next = 0;
};
static_assert(std::is_standard_layout_v<cap_header> && sizeof(cap_header) == 8);
static_assert(offsetof(cap_header, version) == 2 && offsetof(cap_header, next) == 4);

inline constexpr std::uint16_t cap_sparse_mmap = 1; // VFIO_REGION_INFO_CAP_SPARSE_MMAP
inline constexpr std::uint16_t cap_sparse_mmap_version = 1;

// "VFIO sparse mmap cap header" + "VFIO region info cap sparse mmap": nr_areas areas follow.
struct sparse_mmap_cap {
    cap_header header{cap_sparse_mmap, cap_sparse_mmap_version, 0};
    std::uint32_t nr_areas = 0;
    std::uint32_t reserved = 0;
};
static_assert(std::is_standard_layout_v<sparse_mmap_cap> && sizeof(sparse_mmap_cap) == 16);
static_assert(offsetof(sparse_mmap_cap, nr_areas) == 8 && offsetof(sparse_mmap_cap, reserved) == 12);

// struct vfio_region_sparse_mmap_area.
struct sparse_mmap_area {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};
static_assert(std::is_standard_layout_v<sparse_mmap_area> && sizeof(sparse_mmap_area) == 16);

inline constexpr std::uint16_t cap_type = 2; // VFIO_REGION_INFO_CAP_TYPE
inline constexpr std::uint16_t cap_type_version = 1;

// struct vfio_region_info_cap_type: the region's type and subtype.
struct type_cap {
    cap_header header{cap_type, cap_type_version, 0};
    std::uint32_t type = 0;
    std::uint32_t subtype = 0;
};
static_assert(std::is_standard_layout_v<type_cap> && sizeof(type_cap) == 16);
static_assert(offsetof(type_cap, type) == 8 && offsetof(type_cap, subtype) == 12);

inline constexpr std::uint32_t region_type_pci_vendor_type = 1u << 31; // VFIO_REGION_TYPE_PCI_VENDOR_TYPE

// vvu's marking of a region whose sparse areas each come with their own fd (the shared-memory
// window of BAR 2, device.hpp region_info::fd_per_area): a TYPE capability with a PCI vendor
// type of the virtio vendor id (0x1af4) and the VVU device id (43) as subtype. With it, and
// only with it, the reply's fds pair with the sparse areas — area i is mmap()ed from fds[i]
// at file offset 0 ("each sparse area is its own fd, mapped from file offset 0"); without it
// the standard rule holds (area i from fds[0] at the region's mmap offset + area offset).
inline constexpr std::uint32_t vvu_fd_per_area_type = region_type_pci_vendor_type | 0x1af4;
inline constexpr std::uint32_t vvu_fd_per_area_subtype = 0x2b;

// "VFIO_USER_DEVICE_GET_REGION_IO_FDS" request and reply head; the reply's sub-regions follow.
struct region_io_fds_payload {
    std::uint32_t argsz = sizeof(region_io_fds_payload);
    std::uint32_t flags = 0; // must be 0
    std::uint32_t index = 0;
    std::uint32_t count = 0; // reply: number of sub-regions
};
static_assert(std::is_standard_layout_v<region_io_fds_payload> && sizeof(region_io_fds_payload) == 16);
static_assert(offsetof(region_io_fds_payload, flags) == 4 && offsetof(region_io_fds_payload, index) == 8 &&
              offsetof(region_io_fds_payload, count) == 12);

inline constexpr std::uint32_t io_fd_type_ioeventfd = 0;  // VFIO_USER_IO_FD_TYPE_IOEVENTFD
inline constexpr std::uint32_t io_fd_type_ioregionfd = 1; // VFIO_USER_IO_FD_TYPE_IOREGIONFD
inline constexpr std::uint32_t ioeventfd_flag_datamatch = 1u << 0; // KVM_IOEVENTFD_FLAG_DATAMATCH

// "Sub-Region IO FD info format (ioeventfd)": 40 bytes in the spec. libvfio-user (at efd091b)
// sends 48-byte entries (shadow_mem_fd_index at 28, shadow_offset at 32, datamatch at 40); the
// spec says the entry size is (argsz - head) / count, "not to be relied on" — vvu's client
// reads both; vvu's server sends this one.
struct sub_region_ioeventfd {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    std::uint32_t fd_index = 0;
    std::uint32_t type = io_fd_type_ioeventfd;
    std::uint32_t flags = 0;
    std::uint32_t padding = 0;
    std::uint64_t datamatch = 0;
};
static_assert(std::is_standard_layout_v<sub_region_ioeventfd> && sizeof(sub_region_ioeventfd) == 40);
static_assert(offsetof(sub_region_ioeventfd, size) == 8 && offsetof(sub_region_ioeventfd, fd_index) == 16 &&
              offsetof(sub_region_ioeventfd, type) == 20 && offsetof(sub_region_ioeventfd, flags) == 24 &&
              offsetof(sub_region_ioeventfd, padding) == 28 && offsetof(sub_region_ioeventfd, datamatch) == 32);
inline constexpr std::size_t libvfio_user_sub_region_size = 48;
inline constexpr std::size_t libvfio_user_datamatch_offset = 40;

// "VFIO_USER_DEVICE_GET_IRQ_INFO" request and reply (struct vfio_irq_info).
struct irq_info_payload {
    std::uint32_t argsz = sizeof(irq_info_payload);
    std::uint32_t flags = 0; // VFIO_IRQ_INFO_*
    std::uint32_t index = 0;
    std::uint32_t count = 0;
};
static_assert(std::is_standard_layout_v<irq_info_payload> && sizeof(irq_info_payload) == 16);
static_assert(offsetof(irq_info_payload, flags) == 4 && offsetof(irq_info_payload, index) == 8 &&
              offsetof(irq_info_payload, count) == 12);

namespace irq_info_flags {
inline constexpr std::uint32_t eventfd = 1u << 0;
inline constexpr std::uint32_t maskable = 1u << 1;
inline constexpr std::uint32_t automasked = 1u << 2;
inline constexpr std::uint32_t noresize = 1u << 3;
} // namespace irq_info_flags

// "VFIO_USER_DEVICE_SET_IRQS" request (struct vfio_irq_set); DATA_BOOL: count bytes follow;
// DATA_EVENTFD: count fds (or none: de-assign) travel as SCM_RIGHTS. The reply is empty.
struct irq_set_payload {
    std::uint32_t argsz = sizeof(irq_set_payload);
    std::uint32_t flags = 0; // one irq_set_flags::data_* | one irq_set_flags::action_*
    std::uint32_t index = 0;
    std::uint32_t start = 0;
    std::uint32_t count = 0;
};
static_assert(std::is_standard_layout_v<irq_set_payload> && sizeof(irq_set_payload) == 20);
static_assert(offsetof(irq_set_payload, flags) == 4 && offsetof(irq_set_payload, index) == 8 &&
              offsetof(irq_set_payload, start) == 12 && offsetof(irq_set_payload, count) == 16);

namespace irq_set_flags {
inline constexpr std::uint32_t data_none = 1u << 0;
inline constexpr std::uint32_t data_bool = 1u << 1;
inline constexpr std::uint32_t data_eventfd = 1u << 2;
inline constexpr std::uint32_t action_mask = 1u << 3;
inline constexpr std::uint32_t action_unmask = 1u << 4;
inline constexpr std::uint32_t action_trigger = 1u << 5;
inline constexpr std::uint32_t data_mask = data_none | data_bool | data_eventfd;
inline constexpr std::uint32_t action_mask_all = action_mask | action_unmask | action_trigger;
} // namespace irq_set_flags

// "VFIO_USER_REGION_READ" / "VFIO_USER_REGION_WRITE" request and reply head: the data follows
// in a READ reply and a WRITE request.
struct region_access_payload {
    std::uint64_t offset = 0;
    std::uint32_t region = 0;
    std::uint32_t count = 0;
};
static_assert(std::is_standard_layout_v<region_access_payload> && sizeof(region_access_payload) == 16);
static_assert(offsetof(region_access_payload, region) == 8 && offsetof(region_access_payload, count) == 12);

// Reads a payload struct from the front of `bytes` (which must hold sizeof(T)).
template <class T>
[[nodiscard]] T load(std::span<const std::byte> bytes) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    T v{};
    std::memcpy(&v, bytes.data(), sizeof(T));
    return v;
}
template <class T>
void store(std::span<std::byte> bytes, const T& v) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(bytes.data(), &v, sizeof(T));
}

// ---- VERSION capabilities ("Version": the JSON object's "capabilities" member) ---------------

struct capabilities {
    std::uint64_t max_msg_fds = 1;                // fds the sender can receive in one message
    std::uint64_t max_data_xfer_size = 1 << 20;   // largest REGION/DMA READ/WRITE count
    std::uint64_t max_dma_maps = 65535;
    std::uint64_t pgsizes = 4096;
    // vvu's own capability "vvu_fd_per_area": 1 when the client takes a region whose sparse
    // areas each come with their own fd (vvu_fd_per_area_type below). vvu's client sends it; a
    // client without it (QEMU) is never given such a region: it reaches the area by
    // REGION_READ/WRITE instead.
    std::uint64_t vvu_fd_per_area = 0;
};

namespace detail {

// A strict, bounded JSON reader (RFC 8259 grammar; depth ≤ 16). It keeps only what vvu reads:
// the unsigned integers directly inside the top-level object's "capabilities" object.
class json_reader {
public:
    explicit json_reader(std::string_view s) noexcept : s_(s) {}

    // Fills `caps` from the document; an error string says what is wrong.
    std::optional<std::string> read(capabilities& caps) {
        caps_ = &caps;
        skip_ws();
        if (peek() != '{') return "the document is not a JSON object";
        if (auto e = value(0, where::top)) return e;
        skip_ws();
        if (pos_ != s_.size()) return "trailing bytes after the JSON object";
        return std::nullopt;
    }

private:
    enum class where { top, capabilities_member, capability_value, other };

    char peek() const noexcept { return pos_ < s_.size() ? s_[pos_] : '\0'; }
    void skip_ws() noexcept {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    bool literal(std::string_view w) noexcept {
        if (s_.substr(pos_, w.size()) != w) return false;
        pos_ += w.size();
        return true;
    }

    std::optional<std::string> string(std::string* out) {
        if (peek() != '"') return "expected a string at byte " + std::to_string(pos_);
        ++pos_;
        while (pos_ < s_.size()) {
            const auto c = static_cast<unsigned char>(s_[pos_++]);
            if (c == '"') return std::nullopt;
            if (c < 0x20) return "control character in a string";
            if (c == '\\') {
                if (pos_ >= s_.size()) break;
                const char e = s_[pos_++];
                if (e == 'u') {
                    for (int i = 0; i < 4; ++i, ++pos_)
                        if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_])))
                            return "bad \\u escape";
                    if (out) out->push_back('?'); // names vvu looks for are plain ASCII
                    continue;
                }
                static constexpr std::string_view simple = "\"\\/bfnrt";
                if (simple.find(e) == std::string_view::npos) return "bad escape in a string";
                if (out) out->push_back(e);
                continue;
            }
            if (out) out->push_back(static_cast<char>(c));
        }
        return "unterminated string";
    }

    // A number; `out` gets it when it is an unsigned integer that fits 64 bits.
    std::optional<std::string> number(std::optional<std::uint64_t>* out) {
        const std::size_t start = pos_;
        bool integer = true, negative = false;
        if (peek() == '-') { negative = true; ++pos_; }
        if (peek() == '0') ++pos_;
        else if (peek() >= '1' && peek() <= '9') while (peek() >= '0' && peek() <= '9') ++pos_;
        else return "bad number at byte " + std::to_string(start);
        if (peek() == '.') {
            integer = false;
            ++pos_;
            if (!(peek() >= '0' && peek() <= '9')) return "bad number at byte " + std::to_string(start);
            while (peek() >= '0' && peek() <= '9') ++pos_;
        }
        if (peek() == 'e' || peek() == 'E') {
            integer = false;
            ++pos_;
            if (peek() == '+' || peek() == '-') ++pos_;
            if (!(peek() >= '0' && peek() <= '9')) return "bad number at byte " + std::to_string(start);
            while (peek() >= '0' && peek() <= '9') ++pos_;
        }
        if (out) {
            out->reset();
            if (integer && !negative) {
                std::uint64_t v = 0;
                for (std::size_t i = start; i < pos_; ++i) {
                    const auto d = static_cast<std::uint64_t>(s_[i] - '0');
                    if (v > (UINT64_MAX - d) / 10) return "number out of range at byte " + std::to_string(start);
                    v = v * 10 + d;
                }
                *out = v;
            }
        }
        return std::nullopt;
    }

    std::optional<std::string> value(int depth, where w, std::string_view key = {}) {
        if (depth > 16) return "JSON nested too deeply";
        skip_ws();
        const char c = peek();
        if (w == where::capability_value && known(key) && c != '-' && !(c >= '0' && c <= '9'))
            return "capability \"" + std::string(key) + "\" is not an unsigned integer";
        if (c == '{') {
            ++pos_;
            skip_ws();
            if (peek() == '}') { ++pos_; return std::nullopt; }
            for (;;) {
                skip_ws();
                std::string name;
                if (auto e = string(&name)) return e;
                skip_ws();
                if (peek() != ':') return "expected ':' at byte " + std::to_string(pos_);
                ++pos_;
                where inner = where::other;
                if (w == where::top && name == "capabilities") inner = where::capabilities_member;
                else if (w == where::capabilities_member) inner = where::capability_value;
                if (auto e = value(depth + 1, inner, name)) return e;
                skip_ws();
                if (peek() == ',') { ++pos_; continue; }
                if (peek() == '}') { ++pos_; return std::nullopt; }
                return "expected ',' or '}' at byte " + std::to_string(pos_);
            }
        }
        if (w == where::capabilities_member) return "\"capabilities\" is not an object";
        if (c == '[') {
            ++pos_;
            skip_ws();
            if (peek() == ']') { ++pos_; return std::nullopt; }
            for (;;) {
                if (auto e = value(depth + 1, where::other)) return e;
                skip_ws();
                if (peek() == ',') { ++pos_; continue; }
                if (peek() == ']') { ++pos_; return std::nullopt; }
                return "expected ',' or ']' at byte " + std::to_string(pos_);
            }
        }
        if (c == '"') return string(nullptr);
        if (literal("true") || literal("false") || literal("null")) return known_number(w, key, std::nullopt, false);
        if (c == '-' || (c >= '0' && c <= '9')) {
            std::optional<std::uint64_t> v;
            if (auto e = number(&v)) return e;
            return known_number(w, key, v, true);
        }
        return "unexpected character at byte " + std::to_string(pos_);
    }

    static bool known(std::string_view key) noexcept {
        return key == "max_msg_fds" || key == "max_data_xfer_size" || key == "max_dma_maps" || key == "pgsizes" ||
               key == "vvu_fd_per_area";
    }

    std::optional<std::string> known_number(where w, std::string_view key, std::optional<std::uint64_t> v,
                                            bool is_number) {
        if (w != where::capability_value) return std::nullopt;
        std::uint64_t* slot = nullptr;
        if (key == "max_msg_fds") slot = &caps_->max_msg_fds;
        else if (key == "max_data_xfer_size") slot = &caps_->max_data_xfer_size;
        else if (key == "max_dma_maps") slot = &caps_->max_dma_maps;
        else if (key == "pgsizes") slot = &caps_->pgsizes;
        else if (key == "vvu_fd_per_area") slot = &caps_->vvu_fd_per_area;
        if (!slot) return std::nullopt; // a capability vvu does not use
        if (!is_number || !v) return "capability \"" + std::string(key) + "\" is not an unsigned integer";
        *slot = *v;
        return std::nullopt;
    }

    std::string_view s_;
    std::size_t pos_ = 0;
    capabilities* caps_ = nullptr;
};

// Socket I/O shared by vfio_user::server and vfio_user::client (src/vfio_user_server.cpp).
// The socket's file status flags are never changed: every call uses MSG_DONTWAIT and waits in
// poll() until `deadline`.

// Reads exactly out.size() bytes, keeping every SCM_RIGHTS fd that arrives (MSG_CMSG_CLOEXEC)
// in `fds`. Errors: ECONNRESET when the peer closed the stream before the first byte (and
// EPIPE after it), ETIMEDOUT at the deadline, EMSGSIZE when the kernel truncated the fds
// (more than max_fds_per_read in one read), or recvmsg's errno. Fds received are kept in
// `fds` whatever the result, so that the caller closes them.
inline constexpr std::size_t max_fds_per_read = 253; // SCM_MAX_FD
[[nodiscard]] expected<void, std::error_code> read_exact(int sock, std::span<std::byte> out,
                                                         std::vector<unique_fd>& fds,
                                                         std::chrono::steady_clock::time_point deadline);
// Sends head + payload with `fds` (SCM_RIGHTS, on the first byte), completing partial
// writes; MSG_NOSIGNAL. ETIMEDOUT at the deadline, or sendmsg's errno.
[[nodiscard]] expected<void, std::error_code> send_message(int sock, std::span<const std::byte> head,
                                                           std::span<const std::byte> payload,
                                                           std::span<const int> fds,
                                                           std::chrono::steady_clock::time_point deadline);

} // namespace detail

// The capabilities in a VERSION payload's data (after major/minor): empty data means the
// defaults; otherwise it must be NUL-terminated JSON, without earlier NULs, and an object.
[[nodiscard]] inline expected<capabilities, std::string> parse_capabilities(std::span<const std::byte> data) {
    capabilities caps;
    if (data.empty()) return caps;
    if (data.back() != std::byte{0}) return unexpected(std::string("version data is not NUL-terminated"));
    const std::string_view json(reinterpret_cast<const char*>(data.data()), data.size() - 1);
    if (json.find('\0') != std::string_view::npos) return unexpected(std::string("version data has a NUL inside"));
    detail::json_reader r(json);
    if (auto e = r.read(caps)) return unexpected(std::move(*e));
    return caps;
}

// {"capabilities":{...}} with the four values above, and vvu_fd_per_area when set (no NUL; the
// sender appends it).
[[nodiscard]] inline std::string format_capabilities(const capabilities& c) {
    return "{\"capabilities\":{\"max_msg_fds\":" + std::to_string(c.max_msg_fds) +
           ",\"max_data_xfer_size\":" + std::to_string(c.max_data_xfer_size) +
           ",\"max_dma_maps\":" + std::to_string(c.max_dma_maps) + ",\"pgsizes\":" + std::to_string(c.pgsizes) +
           (c.vvu_fd_per_area ? ",\"vvu_fd_per_area\":" + std::to_string(c.vvu_fd_per_area) : std::string()) + "}}";
}

} // namespace vvu::vfio_user
