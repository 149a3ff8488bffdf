// vfio_pci: the PCI-BAR transport over a function bound to Linux's vfio-pci — what
// `vvu-forward --port vfio:BDF` uses inside a guest whose PCI bus holds a VVU function (QEMU's
// vfio-user-pci in front of a vvu-device). The same transport and state machine as vvu_pci;
// only the binding (pci/vfio_function.hpp) differs.
//
//   auto t = vvu::transport::vfio_pci::open("0000:00:03.0");   // bound to vfio-pci beforehand
//   vvu::runtime::server<vvu::transport::vfio_pci, Device> s(std::move(*t), ...);
//
// The rxq/txq arena lives in 2 MiB huge pages (vm.nr_hugepages must have one free): behind an
// emulated IOMMU each IOMMU entry reaches the device as one DMA map, and 4 KiB entries would
// split rings and buffers across maps the device cannot join.
// Not handed over by a live update (the container, group and device fds would have to travel).
#pragma once

#include <vvu/pci/vfio_function.hpp>
#include <vvu/transport/basic_vvu_pci.hpp>

#include <memory>
#include <string>

namespace vvu::transport {

class vfio_pci : public basic_vvu_pci<pci::vfio_function> {
public:
    [[nodiscard]] static expected<vfio_pci, error> open(const std::string& bdf, vvu_pci_options o = {}) {
        auto f = pci::vfio_function::open(bdf);
        if (!f) return unexpected(error(f.error().code, f.error().message()));
        o.dma_huge_pages = true;
        auto t = attach(std::make_unique<pci::vfio_function>(std::move(*f)), o);
        if (!t) return unexpected(error(t.error().code, bdf + ": " + t.error().message()));
        return vfio_pci(std::move(*t));
    }

private:
    explicit vfio_pci(basic_vvu_pci&& b) noexcept : basic_vvu_pci(std::move(b)) {}
};

static_assert(transport<vfio_pci>);

} // namespace vvu::transport
