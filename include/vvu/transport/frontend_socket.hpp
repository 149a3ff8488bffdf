// frontend_socket: the front-end's end of a vhost-user UNIX socket, the channel that
// protocol::frontend runs over by default (it models protocol::frontend_channel; the
// requirements are stated in protocol/frontend_channel.hpp).
//
//   auto s = transport::frontend_socket::connect("/tmp/vhost.sock", 5s); // the back-end listens
//   auto s = transport::frontend_socket::listen("/tmp/vhost.sock", 5s);  // the back-end connects
//
// connect() retries every 10 ms while the path is missing or refuses, up to the timeout: the
// back-end may still be starting. listen() replaces a stale file at the path, accepts one
// back-end within the timeout and unlinks the path again (on failure too).
// frontend_socket(fd) adopts a connected socket (a socketpair in tests).
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/codec.hpp>

#include <chrono>
#include <string>

namespace vvu::transport {

class frontend_socket {
public:
    frontend_socket() = default;
    explicit frontend_socket(unique_fd fd) noexcept : socket_(std::move(fd)) {}

    // Errors: errc::timed_out (nothing accepted the connection in time), ENAMETOOLONG (the path
    // does not fit a sockaddr_un), a system error naming the call.
    [[nodiscard]] static expected<frontend_socket, error> connect(const std::string& path,
                                                                  std::chrono::milliseconds timeout);
    // Errors: errc::timed_out (no back-end connected in time), ENAMETOOLONG, a system error.
    [[nodiscard]] static expected<frontend_socket, error> listen(const std::string& path,
                                                                 std::chrono::milliseconds timeout);

    // One request with its fds.
    [[nodiscard]] expected<void, error> send(const wire::frame& f, std::chrono::milliseconds timeout) {
        return socket_.send(f, timeout);
    }
    // The next message on the main channel (a reply), header checked.
    [[nodiscard]] expected<received_message, error> receive(std::chrono::milliseconds timeout) {
        return socket_.receive(wire::channel::front, timeout);
    }
    [[nodiscard]] int native_handle() const noexcept { return socket_.native_handle(); }
    void close() noexcept { socket_.close(); }

private:
    framed_socket socket_;
};

} // namespace vvu::transport
