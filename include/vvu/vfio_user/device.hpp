// vfio_user::device: what a vfio-user server serves — one PCI function as the protocol sees it
// (QEMU docs/interop/vfio-user.rst). vfio_user::server decodes and checks every message of a
// client (sizes, ranges, fds) and then calls exactly one of these; a device never sees a
// malformed request. Errors are errno values, returned to the client in the reply header.
//
// Region indices are VFIO's PCI ones: 0–5 the BARs, 6 the ROM, 7 config space, 8 VGA
// (VFIO_PCI_*_REGION_INDEX); irq indices 0 INTx, 1 MSI, 2 MSI-X, 3 ERR, 4 REQ.
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace vvu::vfio_user {

inline constexpr std::uint32_t pci_region_count = 9;
inline constexpr std::uint32_t config_region = 7;
inline constexpr std::uint32_t pci_irq_count = 5;

// VFIO_REGION_INFO_FLAG_*
namespace region_flags {
inline constexpr std::uint32_t read = 1u << 0;
inline constexpr std::uint32_t write = 1u << 1;
inline constexpr std::uint32_t mmap = 1u << 2;
inline constexpr std::uint32_t caps = 1u << 3;
} // namespace region_flags

// One directly mappable part of a region (VFIO_REGION_INFO_CAP_SPARSE_MMAP area).
struct sparse_area {
    std::uint64_t offset = 0; // in the region
    std::uint64_t size = 0;
};

// GET_REGION_INFO's answer. `fds` are borrowed (the device keeps them open) and are sent with
// the reply. Without fd_per_area: none, or one for the whole region (the standard case: area
// i is mmap()ed from fds[0] at `mmap_offset + areas[i].offset`). With fd_per_area: exactly
// one per area, and area i is mmap()ed from fds[i] at file offset 0 (vvu's shared-memory
// window — vfio-user has one fd per region, and the window's regions are the front-end's own
// files, each its own fd); the server then marks the region with a TYPE capability
// (protocol.hpp vvu_fd_per_area_type/subtype) so that a client never has to guess the rule
// from the fd count. Any other combination is answered with EIO.
struct region_info {
    std::uint32_t flags = 0;
    std::uint64_t size = 0;
    std::uint64_t mmap_offset = 0;
    std::vector<sparse_area> areas;
    std::vector<int> fds;
    bool fd_per_area = false;
};

// One ioeventfd of GET_REGION_IO_FDS: a write of `size` bytes at `offset` of the region may be
// replaced by signalling `fd` (borrowed). `datamatch` is unused by vvu (flags 0).
struct io_eventfd {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    int fd = -1;
};

// VFIO_IRQ_INFO_* flags and GET_IRQ_INFO's answer.
struct irq_info {
    std::uint32_t flags = 0;
    std::uint32_t count = 0;
};

// SET_IRQS, already checked against irq_info (index, start + count within count; one fd per
// vector for DATA_EVENTFD): action is VFIO_IRQ_SET_ACTION_{MASK,UNMASK,TRIGGER}, data
// VFIO_IRQ_SET_DATA_{NONE,BOOL,EVENTFD}. For DATA_EVENTFD, `fds[i]` is vector start + i's
// eventfd, or an invalid fd to detach it; count 0 with DATA_NONE and TRIGGER detaches all.
struct irq_set {
    std::uint32_t flags = 0;
    std::uint32_t index = 0;
    std::uint32_t start = 0;
    std::uint32_t count = 0;
    std::span<unique_fd> fds;      // DATA_EVENTFD
    std::span<const std::byte> bools; // DATA_BOOL: one byte per vector
};

class device {
public:
    virtual ~device() = default;

    // DEVICE_GET_INFO: VFIO_DEVICE_FLAGS_* (PCI, RESET).
    [[nodiscard]] virtual std::uint32_t device_flags() const noexcept = 0;
    [[nodiscard]] virtual std::uint32_t region_count() const noexcept { return pci_region_count; }
    [[nodiscard]] virtual std::uint32_t irq_count() const noexcept { return pci_irq_count; }

    // index < region_count() (checked by the server).
    [[nodiscard]] virtual region_info describe_region(std::uint32_t index) = 0;
    [[nodiscard]] virtual std::vector<io_eventfd> region_io_fds(std::uint32_t index) = 0;
    // index < irq_count().
    [[nodiscard]] virtual irq_info describe_irq(std::uint32_t index) = 0;
    // 0 or an errno.
    [[nodiscard]] virtual int set_irqs(const irq_set& s) = 0;

    // REGION_READ / REGION_WRITE: [offset, offset + data.size()) lies inside the region's
    // size (checked by the server, including wrap-around); 0 or an errno.
    [[nodiscard]] virtual int region_read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) = 0;
    [[nodiscard]] virtual int region_write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> in) = 0;

    // DMA_MAP / DMA_UNMAP are kept by the server in its dma_space (dma.hpp), which the device
    // reads through; these tell the device that the space changed (e.g. to stop using a ring
    // whose memory went away). 0 or an errno (the map is undone when not 0).
    [[nodiscard]] virtual int dma_mapped(std::uint64_t iova, std::uint64_t size) { (void)iova, (void)size; return 0; }
    virtual void dma_unmapped(std::uint64_t iova, std::uint64_t size) { (void)iova, (void)size; }

    // DEVICE_RESET. 0 or an errno.
    [[nodiscard]] virtual int reset() = 0;

    // The client went away (or was dropped for a protocol error): forget its irq eventfds;
    // its DMA mappings are already gone from the dma_space (vfio-user.rst, "Client
    // disconnection"). The device stays ready for the next client.
    virtual void client_detached() = 0;
};

} // namespace vvu::vfio_user
