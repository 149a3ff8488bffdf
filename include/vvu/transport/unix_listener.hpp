// unix_listener: a listening UNIX stream socket at a path, for every vvu server that accepts
// connections — the vhost-user server transport (unix_socket), and vvu-device's two sockets
// (the front-end's vhost-user socket and the driver's vfio-user socket).
//
//   auto l = vvu::transport::unix_listener::listen("/tmp/vhost0.sock");
//   // poll l->native_handle() for POLLIN, then:
//   auto fd = l->try_accept();        // expected<unique_fd, error>; an invalid fd: none pending
//
// A socket file at the path that nobody accepts on is stale and is replaced; a live one is
// errc::address_in_use. The path is unlinked on destruction if it is still this listener's
// socket (another server may have replaced it since). Uses Boost.Asio's local::stream_protocol.
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <memory>
#include <string>

namespace vvu::transport {

class unix_listener {
public:
    [[nodiscard]] static expected<unix_listener, error> listen(const std::string& path);
    // A listening socket bound to `path` by another process (live update): errc::bad_fd when
    // `fd` is not a listening socket. The path is unlinked on destruction, as by listen().
    [[nodiscard]] static expected<unix_listener, error> adopt(const std::string& path, unique_fd fd);
    // Gives the listening socket up without unlinking the path (it lives on in the process
    // that took it over). The listener is empty afterwards.
    [[nodiscard]] unique_fd release() noexcept;

    unix_listener(unix_listener&&) noexcept;
    unix_listener& operator=(unix_listener&&) noexcept;
    ~unix_listener();

    // The next pending connection (close-on-exec, blocking mode), or an invalid fd when none
    // is pending. Never blocks.
    [[nodiscard]] expected<unique_fd, error> try_accept();

    // The listening socket (non-blocking), to poll for POLLIN.
    [[nodiscard]] int native_handle() const noexcept;
    [[nodiscard]] const std::string& path() const noexcept;

private:
    struct impl;
    explicit unix_listener(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> impl_;
};

} // namespace vvu::transport
