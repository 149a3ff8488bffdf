// vvu_pci: the PCI-BAR transport over its first binding, a vfio-user client — what
// `vvu-forward --port vvu:PATH` uses to serve the front-end connected to a vvu-device.
//
//   auto t = vvu::transport::vvu_pci::connect("/tmp/vvu0.pci");   // attach + virtio bring-up
//   vvu::protocol::backend<vvu::transport::vvu_pci, Device> b(*t, device);
//   while (t->wait_for_frontend()) { b.serve(); t->close_session(); }
//
// basic_vvu_pci.hpp has the transport itself; a VFIO binding for a guest would be another F.
#pragma once

#include <vvu/transport/basic_vvu_pci.hpp>
#include <vvu/vfio_user/client.hpp>

#include <memory>
#include <string>

namespace vvu::transport {

class vvu_pci : public basic_vvu_pci<vfio_user::client> {
public:
    // Connects to a vfio-user server at `path` and brings its VVU function up.
    [[nodiscard]] static expected<vvu_pci, error> connect(const std::string& path, const vvu_pci_options& o = {}) {
        auto c = vfio_user::client::connect(path);
        if (!c) return unexpected(error(c.error().code, path + ": " + c.error().message()));
        auto t = attach(std::make_unique<vfio_user::client>(std::move(*c)), o);
        if (!t) return unexpected(t.error());
        return vvu_pci(std::move(*t));
    }

private:
    explicit vvu_pci(basic_vvu_pci&& b) noexcept : basic_vvu_pci(std::move(b)) {}
};

static_assert(transport<vvu_pci>);

} // namespace vvu::transport
