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
#include <vvu/util/byte_io.hpp>
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
        return vvu_pci(std::move(*t), path);
    }
    // A placeholder for a port a live update will bring (adopt); see basic_vvu_pci::unattached.
    [[nodiscard]] static vvu_pci unattached(const std::string& path, const vvu_pci_options& o = {}) {
        return vvu_pci(basic_vvu_pci::unattached(o), path);
    }

    // Live update: what the port hands to the process that takes it over — the vfio-user
    // connection (its socket, VERSION's outcome, the next message id) and the driver's state
    // with its fds (basic_vvu_pci::save).
    struct endpoint {
        std::string path;
        vfio_user::client::handover connection;
        std::vector<std::byte> state;
        std::vector<unique_fd> fds; // the state's

        // Hand-over bytes: path, next message id (u16), version major and minor (u16 each),
        // the server's capabilities (max_msg_fds, max_data_xfer_size, max_dma_maps, pgsizes:
        // u64 each), the state as a byte run, its fd count (u32). The fds: the socket, then
        // the state's.
        void encode(byte_writer& w, std::vector<unique_fd>& out) && {
            w.put_string(path);
            w.put<std::uint16_t>(connection.next_id);
            w.put<std::uint16_t>(connection.version.major);
            w.put<std::uint16_t>(connection.version.minor);
            const auto& c = connection.version.server;
            for (std::uint64_t v : {c.max_msg_fds, c.max_data_xfer_size, c.max_dma_maps, c.pgsizes}) w.put<std::uint64_t>(v);
            w.put_bytes(state);
            w.put<std::uint32_t>(static_cast<std::uint32_t>(fds.size()));
            out.push_back(std::move(connection.socket));
            for (auto& fd : fds) out.push_back(std::move(fd));
        }
        static expected<endpoint, std::string> decode(byte_reader& r, std::span<unique_fd> in) {
            endpoint e;
            e.path = r.get_string(4096);
            e.connection.next_id = r.get<std::uint16_t>();
            e.connection.version.major = r.get<std::uint16_t>();
            e.connection.version.minor = r.get<std::uint16_t>();
            auto& c = e.connection.version.server;
            for (std::uint64_t* v : {&c.max_msg_fds, &c.max_data_xfer_size, &c.max_dma_maps, &c.pgsizes})
                *v = r.get<std::uint64_t>();
            const auto state = r.get_bytes(max_state);
            const auto nfds = r.get<std::uint32_t>();
            if (!r.ok() || e.path.empty()) return unexpected(std::string("malformed VVU endpoint"));
            if (in.size() < std::size_t{nfds} + 1) return unexpected(std::string("VVU endpoint: missing fds"));
            e.state.assign(state.begin(), state.end());
            e.connection.socket = std::move(in[0]);
            for (std::uint32_t i = 0; i < nfds; ++i) e.fds.push_back(std::move(in[1 + i]));
            return e;
        }
        [[nodiscard]] std::size_t fd_count() const noexcept { return 1 + fds.size(); }
    };
    [[nodiscard]] expected<endpoint, error> export_endpoint() const {
        endpoint e;
        e.path = path_;
        auto c = function().export_connection();
        if (!c) return unexpected(error(c.error().code, c.error().message()));
        e.connection = std::move(*c);
        byte_writer w;
        if (auto r = save(w, e.fds); !r) return unexpected(r.error());
        e.state = w.take();
        return e;
    }
    [[nodiscard]] static expected<vvu_pci, error> adopt(endpoint e, const vvu_pci_options& o = {}) {
        auto c = vfio_user::client::resume(std::move(e.connection));
        if (!c) return unexpected(error(c.error().code, e.path + ": " + c.error().message()));
        byte_reader r(e.state);
        auto t = basic_vvu_pci::adopt(std::make_unique<vfio_user::client>(std::move(*c)), o, r, e.fds);
        if (!t) return unexpected(t.error());
        if (!r.done()) return unexpected(error(std::make_error_code(std::errc::protocol_error), "VVU endpoint: trailing bytes"));
        return vvu_pci(std::move(*t), e.path);
    }

private:
    static constexpr std::size_t max_state = 1u << 20;
    vvu_pci(basic_vvu_pci&& b, std::string path) noexcept : basic_vvu_pci(std::move(b)), path_(std::move(path)) {}
    std::string path_;
};

static_assert(transport<vvu_pci>);

} // namespace vvu::transport
