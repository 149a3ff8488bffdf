// vfio_function: a PCI function bound to Linux's vfio-pci driver, reached through VFIO
// (linux/vfio.h; the kernel's Documentation/driver-api/vfio.rst) — the binding a VVU driver
// uses inside a guest, where the function is a real PCI device of the guest's bus (QEMU's
// vfio-user-pci in front of a vvu-device). Models pci::pci_function (pci/function.hpp); the
// same transport and state machine run on it as on vfio_user::client.
//
//   auto f = vvu::pci::vfio_function::open("0000:00:03.0");   // bound to vfio-pci beforehand
//   auto t = vvu::transport::basic_vvu_pci<vfio_function>::attach(std::make_unique<...>(*f), o);
//
// What open() does: the function's IOMMU group (/sys/bus/pci/devices/BDF/iommu_group) gets a
// container of its own with the type-1 IOMMU (v2 when offered); the device fd comes from the
// group. Memory space and bus mastering are switched on in the command register (a DMA-capable
// function needs both; vfio-pci leaves them to the user). The function must already be bound
// to vfio-pci (driver_override, as dpdk-devbind does): binding is the operator's decision.
// No-IOMMU groups (/dev/vfio/noiommu-N) are refused: their bus addresses are physical, and the
// pci_function concept lets the driver choose its iovas.
//
//   config / BARs   pread/pwrite on the device fd at the region's offset.
//   map_window      mmap of the device fd (the region must offer VFIO_REGION_INFO_FLAG_MMAP).
//   doorbell        a 16-bit store into a mapped page of the BAR when it can be mapped (one
//                   mapping per page, shared by its doorbells), else a pwrite.
//   dma_map         the fd's pages are mapped here and given to the IOMMU (VFIO_IOMMU_MAP_DMA,
//                   which pins them) at the iova the driver chose; dma_unmap undoes both.
//   interrupts      VFIO_DEVICE_SET_IRQS with eventfds. MSI-X is enabled with every vector the
//                   function has on the first call (kernels before 6.5 cannot add vectors to an
//                   enabled MSI-X block), the vectors not given yet without a trigger.
//   reset           VFIO_DEVICE_RESET, when the device offers one.
//
// Threads: control calls from one thread; doorbells from any. Movable, not copyable.
#pragma once

#include <vvu/pci/function.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace vvu::pci {

class vfio_function {
public:
    // Opens the function at `bdf` (domain:bus:slot.function, e.g. "0000:00:03.0").
    [[nodiscard]] static expected<vfio_function, error> open(const std::string& bdf);

    vfio_function(vfio_function&&) noexcept = default;
    vfio_function& operator=(vfio_function&&) noexcept = default;
    ~vfio_function();

    [[nodiscard]] const std::string& address() const noexcept;

    [[nodiscard]] expected<void, error> config_read(std::uint64_t off, std::span<std::byte> out);
    [[nodiscard]] expected<void, error> config_write(std::uint64_t off, std::span<const std::byte> in);
    [[nodiscard]] expected<void, error> region_read(std::uint32_t bar, std::uint64_t off, std::span<std::byte> out);
    [[nodiscard]] expected<void, error> region_write(std::uint32_t bar, std::uint64_t off, std::span<const std::byte> in);
    [[nodiscard]] expected<window, error> map_window(std::uint32_t bar, std::uint64_t off, std::uint64_t len);
    [[nodiscard]] expected<pci::doorbell, error> doorbell(std::uint32_t bar, std::uint64_t off, std::uint16_t value);
    [[nodiscard]] expected<void, error> dma_map(int fd, std::uint64_t file_off, std::uint64_t iova, std::uint64_t len);
    [[nodiscard]] expected<void, error> dma_unmap(std::uint64_t iova, std::uint64_t len);
    [[nodiscard]] expected<std::uint32_t, error> irq_count(irq_kind kind);
    [[nodiscard]] expected<void, error> set_irq_eventfds(irq_kind kind, std::uint32_t first, std::span<const int> fds);
    [[nodiscard]] expected<void, error> reset();

    struct state; // fds, regions, DMA maps, doorbell pages (shared with the doorbells)

private:
    explicit vfio_function(std::shared_ptr<state> s) noexcept : s_(std::move(s)) {}
    std::shared_ptr<state> s_;
};

static_assert(pci_function<vfio_function>);

} // namespace vvu::pci
