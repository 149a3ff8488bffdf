// The virtio-vhost-user (VVU) PCI function: its ids, device configuration space, BAR layout
// and shared-memory window (shared/vvu-spec.md, after the VVU device spec draft "Vhost-user
// Device Backend" and the QEMU RFC's hw/virtio/virtio-vhost-user.c). The device model
// (vvu/) lays the function out with these numbers and the driver (transport/vvu_pci.hpp)
// finds everything through the capabilities, then checks it against them.
//
//   BAR 4 (registers, 32 KiB)           BAR 2 (64-bit prefetchable, 2^36 bytes)
//   0x0000 common cfg (virtio 1.2)      0                doorbells, vring i at i × multiplier;
//   0x1000 ISR                                           index max_queues = the log doorbell,
//                                                        max_queues + 1 + i = vring i's error
//   0x2000 device cfg (below)           doorbells_size   notification_select / _msix_vector
//   0x3000 rxq/txq notify (× 4)         shared_memory    the front-end's regions (window_layout)
//   0x4000 MSI-X table, 0x6000 PBA
#pragma once

#include <vvu/pci/virtio_pci.hpp>
#include <vvu/util/range.hpp>
#include <vvu/wire/payload.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace vvu::pci::vvu_function {

inline constexpr std::uint16_t virtio_id = 43; // VIRTIO_ID_VHOST_USER (QEMU RFC)
inline constexpr std::uint16_t device_id = modern_device_id(virtio_id);
inline constexpr std::uint32_t class_code = 0xff0000; // "other" (the RFC: PCI_CLASS_OTHERS)
inline constexpr std::uint8_t revision = 1;           // modern only (§4.1.2.1)
inline constexpr std::uint64_t feature_version_1 = 1ull << 32; // VIRTIO_F_VERSION_1; no device bits

// Virtqueues of the function (not the vhost-user vrings it carries).
inline constexpr std::uint16_t rxq = 0; // device → driver: front-end messages
inline constexpr std::uint16_t txq = 1; // driver → device: replies and back-end requests
inline constexpr std::uint16_t num_queues = 2;
inline constexpr std::uint16_t max_queue_size = 256;

// Device configuration space (le32 status, le32 max_vhost_queues, u8 uuid[16]).
namespace device_config {
inline constexpr std::uint32_t status = 0;
inline constexpr std::uint32_t max_vhost_queues = 4;
inline constexpr std::uint32_t uuid = 8;
inline constexpr std::uint32_t size = 24;
inline constexpr std::uint32_t backend_up = 1u << 0;  // written by the driver (draft: SLAVE_UP)
inline constexpr std::uint32_t frontend_up = 1u << 1; // set by the device (draft: MASTER_UP)
} // namespace device_config

// BAR 4: the virtio-pci structures and the MSI-X table.
namespace registers {
inline constexpr std::uint32_t bar = 4;
inline constexpr std::uint32_t common = 0x0000;
inline constexpr std::uint32_t isr = 0x1000;
inline constexpr std::uint32_t isr_size = 4;
inline constexpr std::uint32_t device = 0x2000;
inline constexpr std::uint32_t notify = 0x3000;
inline constexpr std::uint32_t notify_multiplier = 4; // queue i notifies at notify + i × 4
inline constexpr std::uint32_t msix_table = 0x4000;
inline constexpr std::uint32_t msix_pba = 0x6000;
inline constexpr std::uint32_t size = 0x8000;
inline constexpr std::uint32_t max_msix_vectors = 512; // (0x6000 - 0x4000) / 16
} // namespace registers

// BAR 2: doorbells, notification structure, shared-memory window.
namespace vvu_bar {
inline constexpr std::uint32_t bar = 2;
inline constexpr std::uint64_t size = 1ull << 36; // as QEMU's RFC
inline constexpr std::uint32_t doorbell_multiplier = 4;
inline constexpr std::uint32_t notification_select = 0;       // le16, in the notification structure
inline constexpr std::uint32_t notification_msix_vector = 2;  // le16
inline constexpr std::uint32_t notification_size = 0x1000;
inline constexpr std::uint64_t page = 0x1000;
} // namespace vvu_bar

// Where the BAR 2 structures sit for a device serving `max_queues` vrings. The doorbell array
// (rounded up to 4 KiB) has each vring's doorbell (its call), the dirty-log doorbell, then
// each vring's error doorbell — vvu's addition to the draft: a ring the back-end finds broken
// reaches the front-end's SET_VRING_ERR eventfd through it, as it does without VVU.
struct bar2_layout {
    std::uint32_t max_queues = 0;
    std::uint64_t doorbells = 0;
    std::uint64_t doorbells_size = 0;
    std::uint64_t notification = 0;
    std::uint64_t shared_memory = 0;
    std::uint64_t shared_memory_size = 0;

    [[nodiscard]] static constexpr bar2_layout for_queues(std::uint32_t max_queues) noexcept {
        bar2_layout l;
        l.max_queues = max_queues;
        const std::uint64_t bells = doorbell_count(max_queues) * vvu_bar::doorbell_multiplier;
        l.doorbells_size = (bells + vvu_bar::page - 1) & ~(vvu_bar::page - 1);
        l.notification = l.doorbells + l.doorbells_size;
        l.shared_memory = l.notification + vvu_bar::notification_size;
        l.shared_memory_size = vvu_bar::size - l.shared_memory;
        return l;
    }
    [[nodiscard]] constexpr std::uint64_t doorbell(std::uint32_t vring) const noexcept {
        return doorbells + std::uint64_t{vring} * vvu_bar::doorbell_multiplier;
    }
    [[nodiscard]] constexpr std::uint32_t log_doorbell_index() const noexcept { return max_queues; }
    [[nodiscard]] constexpr std::uint32_t error_doorbell_index(std::uint32_t vring) const noexcept {
        return max_queues + 1 + vring;
    }
    // Calls, the log, errors.
    [[nodiscard]] static constexpr std::uint64_t doorbell_count(std::uint32_t max_queues) noexcept {
        return 2 * std::uint64_t{max_queues} + 1;
    }
};

// The shared-memory window: where each front-end region sits, computed the same way by the
// device (which exposes the region's fd there) and the driver (which maps it), from the
// memory messages both see in the same order.
//
//   SET_MEM_TABLE  the window is reset; regions back to back in message order, region i at
//                  the sum of (mmap_offset + memory_size) over regions 0..i-1 (vvu-spec.md).
//   ADD_MEM_REG    the region goes after the highest end in use (no hole is reused, so
//                  regions never move while they live).
//   REM_MEM_REG    the region matching guest_phys_addr, memory_size and userspace_addr
//                  leaves; the others stay where they are.
//   SET_LOG_BASE   the dirty log (LOG_SHMFD) is an area too, after the highest end in use; a
//                  new log replaces the old one. (A vvu departure: the draft spec has no log
//                  area.)
//   SET_INFLIGHT_FD  the inflight area (INFLIGHT_SHMFD) likewise. vvu-device makes it itself
//                  for a session with packed rings, so that a new driver can resume them after
//                  the old one went away (README, vvu-device); the front-end never sees it.
//                  SET_MEM_TABLE lays the regions out and puts the log, then the inflight area,
//                  after them again.
//
// Each area spans the region's file from offset 0 to mmap_offset + memory_size, so guest
// address guest_phys_addr is at window offset (area offset + mmap_offset). The log's and the
// inflight area are described as regions too (mmap_size bytes of their file at mmap_offset;
// wire::log_description::as_region, inflight_region).
class window_layout {
public:
    struct area {
        wire::memory_region region;
        std::uint64_t offset = 0; // in the window (add bar2_layout::shared_memory for BAR 2)
        [[nodiscard]] std::uint64_t size() const noexcept { return region.mmap_offset + region.memory_size; }
    };
    // The areas that are not front-end memory, in the order SET_MEM_TABLE places them.
    enum class side : std::uint8_t { log, inflight };
    static constexpr std::size_t side_count = 2;

    explicit window_layout(std::uint64_t capacity = bar2_layout::for_queues(0).shared_memory_size) noexcept
        : capacity_(capacity) {}

    // False (layout unchanged) when the regions (and the side areas after them) overflow the
    // window or a size wraps.
    [[nodiscard]] bool set_table(std::span<const wire::memory_region> regions) {
        std::vector<area> next;
        std::uint64_t at = 0;
        for (const auto& r : regions) {
            if (!fits(r, at)) return false;
            next.push_back({r, at});
            at += r.mmap_offset + r.memory_size;
        }
        std::array<std::optional<area>, side_count> sides;
        for (std::size_t i = 0; i < side_count; ++i) {
            if (!sides_[i]) continue;
            if (!fits(sides_[i]->region, at)) return false;
            sides[i] = area{sides_[i]->region, at};
            at += sides_[i]->size();
        }
        areas_ = std::move(next);
        sides_ = sides;
        return true;
    }
    [[nodiscard]] bool add(const wire::memory_region& r) {
        const std::uint64_t at = end();
        if (!fits(r, at)) return false;
        areas_.push_back({r, at});
        return true;
    }
    // SET_LOG_BASE, SET_INFLIGHT_FD: the area goes after the highest end in use (the one it
    // replaces is given up).
    [[nodiscard]] bool set_side(side which, const wire::memory_region& r) {
        auto& slot = sides_[index(which)];
        std::optional<area> old = std::exchange(slot, std::nullopt);
        const std::uint64_t at = end();
        if (!fits(r, at)) {
            slot = old;
            return false;
        }
        slot = area{r, at};
        return true;
    }
    [[nodiscard]] const std::optional<area>& side_area(side which) const noexcept { return sides_[index(which)]; }
    // A live update puts a side area back where it was (place's rules).
    [[nodiscard]] bool place_side(side which, const wire::memory_region& r, std::uint64_t at) {
        if (!place(r, at)) return false;
        sides_[index(which)] = areas_.back();
        areas_.pop_back();
        return true;
    }
    [[nodiscard]] bool set_log(const wire::memory_region& r) { return set_side(side::log, r); }
    [[nodiscard]] const std::optional<area>& log() const noexcept { return side_area(side::log); }
    [[nodiscard]] const std::optional<area>& inflight() const noexcept { return side_area(side::inflight); }

    [[nodiscard]] bool remove(const wire::memory_region& r) {
        auto it = std::ranges::find_if(areas_, [&](const area& a) { return same(a.region, r); });
        if (it == areas_.end()) return false;
        areas_.erase(it);
        return true;
    }
    void clear() noexcept {
        areas_.clear();
        sides_ = {};
    }
    // Puts a region at a known offset (a live update restores a driver's layout): false when
    // it does not fit the window or overlaps an area already placed.
    [[nodiscard]] bool place(const wire::memory_region& r, std::uint64_t at) {
        if (!fits(r, at)) return false;
        const std::uint64_t end = at + r.mmap_offset + r.memory_size;
        auto overlaps = [&](const area& a) { return at < a.offset + a.size() && a.offset < end; };
        if (std::ranges::any_of(areas_, overlaps)) return false;
        for (const auto& s : sides_)
            if (s && overlaps(*s)) return false;
        areas_.push_back({r, at});
        return true;
    }

    [[nodiscard]] std::optional<area> find(const wire::memory_region& r) const {
        auto it = std::ranges::find_if(areas_, [&](const area& a) { return same(a.region, r); });
        if (it == areas_.end()) return std::nullopt;
        return *it;
    }
    // The regions' areas (the side areas are side_area()).
    [[nodiscard]] const std::vector<area>& areas() const noexcept { return areas_; }

    [[nodiscard]] static bool same(const wire::memory_region& a, const wire::memory_region& b) noexcept {
        return a.guest_phys_addr == b.guest_phys_addr && a.memory_size == b.memory_size &&
               a.userspace_addr == b.userspace_addr;
    }
    // The inflight area described as a region to map, as the log's is.
    [[nodiscard]] static constexpr wire::memory_region inflight_region(const wire::inflight_description& d) noexcept {
        return {0, d.mmap_size, 0, d.mmap_offset};
    }

private:
    static constexpr std::size_t index(side which) noexcept { return static_cast<std::size_t>(which); }
    [[nodiscard]] bool fits(const wire::memory_region& r, std::uint64_t at) const noexcept {
        if (r.memory_size == 0 || !range_within(r.mmap_offset, r.memory_size, capacity_)) return false;
        return range_within(at, r.mmap_offset + r.memory_size, capacity_);
    }

    // The highest end in use.
    [[nodiscard]] std::uint64_t end() const noexcept {
        std::uint64_t at = 0;
        for (const auto& s : sides_)
            if (s) at = std::max(at, s->offset + s->size());
        for (const auto& a : areas_) at = std::max(at, a.offset + a.size());
        return at;
    }

    std::uint64_t capacity_;
    std::vector<area> areas_;
    std::array<std::optional<area>, side_count> sides_; // SET_LOG_BASE's, SET_INFLIGHT_FD's
};

} // namespace vvu::pci::vvu_function
