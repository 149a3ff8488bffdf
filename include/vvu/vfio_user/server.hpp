// vfio_user::server: serves one vfio_user::device to one client at a time over a UNIX socket
// (QEMU docs/interop/vfio-user.rst), driven by the caller's event loop:
//
//     auto srv = vfio_user::server::listen("/run/vvu/pci.sock", dev);      // binds, listens
//     epoll: srv->listen_fd() readable  -> srv->accept_one()
//            srv->native_handle() readable -> if (!srv->serve_one()) srv->drop_client();
//
// serve_one() reads exactly one message with its SCM_RIGHTS fds and answers it. Every field is
// checked before the device is called (device.hpp says what a device may rely on):
//   * framing: msg_size ≥ 16 and ≤ max_message_size(); a short read, a client that stalls
//     mid-message longer than receive_timeout, more fds than the kernel buffer holds, or a
//     message over the cap → serve_one() fails and the client must be dropped;
//   * VERSION first (major 0; minor: ours or lower; NUL-terminated JSON capabilities) — a
//     bad one gets an error reply and the client is dropped, as the spec allows;
//   * per command: exact payload size, argsz, region/irq index, offset + count inside the
//     region without wrap-around, count ≤ max_data_xfer_size, irq start + count within the
//     irq's count, exactly the fds the command takes (surplus or missing: EINVAL, all closed);
//   * a reply-type message or a command vvu does not serve: an error reply (EINVAL / ENOSYS).
// A request-level rejection is an error reply (header only, as the spec says) and serving
// goes on; options.log hears each one ("REGION_READ: region 7 [0xfc, +8) ends past its size
// 0x100"). No fd a client sends outlives the message unless the dma_space or device keeps it.
//
// Dropping a client closes its socket, clears the dma_space and calls
// device.client_detached(); the next connection then starts again at VERSION. A connection
// that arrives while a client is attached is accepted and closed at once (EBUSY).
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/vfio_user/device.hpp>
#include <vvu/vfio_user/dma.hpp>
#include <vvu/vfio_user/protocol.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace vvu::vfio_user {

struct server_options {
    // Advertised in the VERSION reply: fds we take in one message (SET_IRQS with many vectors
    // is split by the client), the largest REGION_READ/WRITE count, DMA maps at once.
    // 16: QEMU's client (11.1) refuses a server that offers more ("malformed max_msg_fds").
    std::uint32_t max_msg_fds = 16;
    std::uint32_t max_data_xfer_size = 1u << 20;
    std::size_t max_dma_maps = dma_space::default_max_maps;
    // DMA_MAP only of fds sealed against shrinking (F_SEAL_SHRINK), else EINVAL: a client that
    // truncates a mapped file cannot make the server's accesses SIGBUS (dma.hpp).
    bool require_sealed = false;
    // How long a started message (or a reply that does not fit the socket) may take.
    std::chrono::milliseconds io_timeout{2000};
    // Hears every rejected request and every reason a client is dropped.
    std::function<void(std::string_view)> log;
};

class server {
public:
    // Binds and listens on `path` (a stale socket file there is removed first). The device
    // must outlive the server.
    [[nodiscard]] static expected<std::unique_ptr<server>, error> listen(const std::string& path, device& dev,
                                                                         server_options opts = {});
    // A server without a listening socket, fed through attach() (tests, fuzzing, a socket
    // handed over by another process).
    [[nodiscard]] static std::unique_ptr<server> unlistened(device& dev, server_options opts = {});

    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server(); // drops the client, closes and unlinks the listening socket

    [[nodiscard]] int listen_fd() const noexcept { return listen_fd_.get(); }
    // Accepts one pending connection. With a client already attached, the new connection is
    // closed at once and the result is EBUSY.
    [[nodiscard]] expected<void, error> accept_one();
    // Serves an already connected stream socket (replaces nothing: EBUSY with a client).
    [[nodiscard]] expected<void, error> attach(unique_fd connected);

    [[nodiscard]] bool has_client() const noexcept { return client_.valid(); }
    // The connected client's socket (-1 without one).
    [[nodiscard]] int native_handle() const noexcept { return client_.get(); }
    // Reads and answers one message. An error means the connection is unusable (closed by the
    // client, broken framing, stalled, failed VERSION): call drop_client().
    [[nodiscard]] expected<void, error> serve_one();
    void drop_client() noexcept;

    // A live update (vvu-device --takeover): the listening socket, the client's, what VERSION
    // negotiated and the DMA maps (fds duplicated, fd_stream.hpp) into a record; and a server
    // rebuilt from one, which answers the same client's next message as this one would. The
    // device's own state travels on its own.
    void save(byte_writer& w, fd_writer& fds) const;
    [[nodiscard]] static expected<std::unique_ptr<server>, error> restore(device& dev, server_options opts, byte_reader& r,
                                                                       fd_reader& fds);
    // Lets go of both sockets without a trace — its copies closed, but no unlink and no
    // client_detached(): another process serves them now. The server is then empty.
    void abandon() noexcept;

    [[nodiscard]] bool negotiated() const noexcept { return negotiated_; }
    [[nodiscard]] const capabilities& client_capabilities() const noexcept { return client_caps_; }
    [[nodiscard]] dma_space& dma() noexcept { return dma_; }
    [[nodiscard]] const server_options& options() const noexcept { return opts_; }
    // The largest message accepted: a REGION_WRITE of max_data_xfer_size bytes.
    [[nodiscard]] std::size_t max_message_size() const noexcept {
        return header_size + sizeof(region_access_payload) + opts_.max_data_xfer_size;
    }

private:
    server(device& dev, server_options opts);

    struct request;
    struct reply;
    // An error reply's errno and what to log.
    struct rejection {
        int errno_value;
        std::string why;
    };
    using outcome = expected<reply, rejection>;

    outcome handle(request& rq);
    outcome on_version(request& rq);
    outcome on_dma_map(request& rq);
    outcome on_dma_unmap(request& rq);
    outcome on_device_info(request& rq);
    outcome on_region_info(request& rq);
    outcome on_region_io_fds(request& rq);
    outcome on_irq_info(request& rq);
    outcome on_set_irqs(request& rq);
    outcome on_region_read(request& rq);
    outcome on_region_write(request& rq);
    outcome on_reset(request& rq);

    expected<void, error> send(const header& h, std::span<const std::byte> payload, std::span<const int> fds);
    void log(std::string_view what) const;

    device& dev_;
    server_options opts_;
    dma_space dma_;
    std::string path_;
    unique_fd listen_fd_;
    unique_fd client_;
    bool negotiated_ = false;
    capabilities client_caps_;
    std::vector<std::byte> buffer_; // the message being read
};

} // namespace vvu::vfio_user
