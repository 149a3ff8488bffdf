// pci_function: how a driver reaches one PCI function — config space, BAR registers, BAR
// windows it can map, doorbells, DMA, MSI-X — whatever binds it to the function. The VVU
// driver (transport/vvu_pci.hpp) is written against this concept only. Bindings:
//
//   vfio_user::client   a software function served over a vfio-user socket (vvu-device on
//                       this host; QEMU docs/interop/vfio-user.rst).
//   (later) a VFIO binding for a real function inside a guest: config space and BARs through
//                       the VFIO device fd, DMA through the IOMMU container, the same calls.
//
// Requirements on a type F modelling `pci_function`, for an lvalue f of type F:
//
//   f.config_read(off, out)            expected<void, pci::error>: read config space
//   f.config_write(off, in)            expected<void, pci::error>
//   f.region_read(bar, off, out)       expected<void, pci::error>: read BAR `bar` (0–5)
//   f.region_write(bar, off, in)       expected<void, pci::error>
//   f.map_window(bar, off, len)        expected<pci::window, pci::error>: [off, off+len) of a BAR
//                                      mapped into this process (the VVU shared-memory window)
//   f.doorbell(bar, off, value)        expected<pci::doorbell, pci::error>: a 16-bit
//                                      write-only register the driver rings (writing `value`)
//                                      from any thread — an ioeventfd when the binding has one
//                                      for that offset, else a register write
//   f.dma_map(fd, file_off, iova, len) expected<void, pci::error>: let the function access
//                                      [file_off, +len) of fd at bus address iova
//   f.dma_unmap(iova, len)             expected<void, pci::error>
//   f.irq_count(kind)                  expected<std::uint32_t, pci::error>: vectors of a kind
//   f.set_irq_eventfds(kind, first, fds) expected<void, pci::error>: eventfds the function
//                                      signals for vectors first…; -1 detaches one
//   f.reset()                          expected<void, pci::error>: function-level reset
//
// Calls are made from the driver's control thread; a doorbell may be rung from any thread.
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>

namespace vvu::pci {

// Why a call on a function failed: an errno-style code and what was being done.
struct error {
    std::error_code code;
    std::string what; // e.g. "REGION_READ bar 4 [0x1000, +4)"
    [[nodiscard]] std::string message() const { return what.empty() ? code.message() : what + ": " + code.message(); }
};

// The interrupt kinds of a PCI function (VFIO_PCI_*_IRQ_INDEX).
enum class irq_kind : std::uint32_t { intx = 0, msi = 1, msix = 2, err = 3, req = 4 };

// BAR memory mapped into this process; the mapping lives as long as any copy of `keepalive`.
struct window {
    std::byte* host = nullptr;
    std::uint64_t length = 0;
    std::shared_ptr<const void> keepalive;
};

// A register the driver writes to notify the function. Cheap to copy; thread-safe to ring.
class doorbell {
public:
    doorbell() = default;
    explicit doorbell(std::function<void()> ring) : ring_(std::move(ring)) {}
    void ring() const {
        if (ring_) ring_();
    }
    [[nodiscard]] explicit operator bool() const noexcept { return static_cast<bool>(ring_); }

private:
    std::function<void()> ring_;
};

template <class F>
concept pci_function = requires(F& f, std::uint64_t off, std::uint32_t bar, std::span<std::byte> out,
                                std::span<const std::byte> in, int fd, std::span<const int> fds) {
    { f.config_read(off, out) } -> std::same_as<expected<void, error>>;
    { f.config_write(off, in) } -> std::same_as<expected<void, error>>;
    { f.region_read(bar, off, out) } -> std::same_as<expected<void, error>>;
    { f.region_write(bar, off, in) } -> std::same_as<expected<void, error>>;
    { f.map_window(bar, off, off) } -> std::same_as<expected<window, error>>;
    { f.doorbell(bar, off, std::uint16_t{}) } -> std::same_as<expected<doorbell, error>>;
    { f.dma_map(fd, off, off, off) } -> std::same_as<expected<void, error>>;
    { f.dma_unmap(off, off) } -> std::same_as<expected<void, error>>;
    { f.irq_count(irq_kind::msix) } -> std::same_as<expected<std::uint32_t, error>>;
    { f.set_irq_eventfds(irq_kind::msix, bar, fds) } -> std::same_as<expected<void, error>>;
    { f.reset() } -> std::same_as<expected<void, error>>;
};

} // namespace vvu::pci
