// The front-end's message channel: what protocol::frontend needs to talk to a back-end, and the
// model over a UNIX socket (socket_channel). Tests model it with a scripted back-end.
//
// Requirements on a type C modelling frontend_channel, for an lvalue c, a wire::frame f and a
// timeout t (std::chrono::milliseconds, negative: forever):
//
//   c.send(f, t)        expected<void, transport::error>: one request with its fds
//   c.receive(t)        expected<transport::received_message, transport::error>: the next
//                       message on the main channel (a reply), header checked
//   c.native_handle()   int: an fd that poll() reports readable when receive() has something,
//                       or -1 (then the front-end cannot serve the back-end channel while it
//                       waits for a reply, and simply waits)
//
// socket_channel::connect(path) connects to a back-end in server mode (retrying for a bounded
// time while the socket is missing or refuses: the back-end may still be starting);
// socket_channel::listen(path) serves a back-end in client mode (binds, accepts one connection
// within a bounded time, unlinks the path); socket_channel(fd) adopts a connected socket (a
// socketpair in tests).
#pragma once

#include <vvu/protocol/frontend_error.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <concepts>
#include <string>
#include <system_error>
#include <thread>

namespace vvu::protocol {

template <class C>
concept frontend_channel = requires(C& c, const wire::frame& f, std::chrono::milliseconds t) {
    { c.send(f, t) } -> std::same_as<expected<void, transport::error>>;
    { c.receive(t) } -> std::same_as<expected<transport::received_message, transport::error>>;
    { c.native_handle() } -> std::same_as<int>;
};

class socket_channel {
public:
    socket_channel() = default;
    explicit socket_channel(unique_fd fd) noexcept : socket_(std::move(fd)) {}

    // Connects to `path`, retrying every 10 ms while it is missing or refuses, up to `timeout`.
    [[nodiscard]] static expected<socket_channel, frontend_error> connect(const std::string& path,
                                                                          std::chrono::milliseconds timeout) {
        sockaddr_un addr{};
        if (path.size() >= sizeof addr.sun_path)
            return unexpected(frontend_error{frontend_errc::invalid_argument, std::nullopt, "socket path too long: " + path});
        addr.sun_family = AF_UNIX;
        path.copy(addr.sun_path, path.size());
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
            if (!fd) return unexpected(system_failure("socket"));
            if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0)
                return socket_channel(std::move(fd));
            const int err = errno;
            if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN) return unexpected(system_failure("connect", err));
            if (std::chrono::steady_clock::now() >= until)
                return unexpected(frontend_error{frontend_errc::timed_out, std::nullopt,
                                                 "connect " + path + ": " + std::error_code(err, std::system_category()).message()});
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    // Listens on `path` (a stale file there is replaced) and accepts one back-end within
    // `timeout`; the path is unlinked once a back-end is connected (or on failure).
    [[nodiscard]] static expected<socket_channel, frontend_error> listen(const std::string& path,
                                                                         std::chrono::milliseconds timeout) {
        sockaddr_un addr{};
        if (path.size() >= sizeof addr.sun_path)
            return unexpected(frontend_error{frontend_errc::invalid_argument, std::nullopt, "socket path too long: " + path});
        addr.sun_family = AF_UNIX;
        path.copy(addr.sun_path, path.size());
        unique_fd lfd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!lfd) return unexpected(system_failure("socket"));
        ::unlink(path.c_str());
        if (::bind(lfd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
            return unexpected(system_failure("bind"));
        struct unlinker {
            const std::string& p;
            ~unlinker() { ::unlink(p.c_str()); }
        } cleanup{path};
        if (::listen(lfd.get(), 1) != 0) return unexpected(system_failure("listen"));
        pollfd p{lfd.get(), POLLIN, 0};
        int r;
        do {
            r = ::poll(&p, 1, timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
        } while (r < 0 && errno == EINTR);
        if (r < 0) return unexpected(system_failure("poll"));
        if (r == 0)
            return unexpected(frontend_error{frontend_errc::timed_out, std::nullopt,
                                             "no back-end connected to " + path + " within " +
                                                 std::to_string(timeout.count()) + " ms"});
        unique_fd fd(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd) return unexpected(system_failure("accept"));
        return socket_channel(std::move(fd));
    }

    [[nodiscard]] expected<void, transport::error> send(const wire::frame& f, std::chrono::milliseconds t) {
        return socket_.send(f, t);
    }
    [[nodiscard]] expected<transport::received_message, transport::error> receive(std::chrono::milliseconds t) {
        return socket_.receive(wire::channel::front, t);
    }
    [[nodiscard]] int native_handle() const noexcept { return socket_.native_handle(); }
    void close() noexcept { socket_.close(); }

private:
    static frontend_error system_failure(const char* op, int err = errno) {
        return {frontend_errc::transport, std::nullopt,
                std::string(op) + ": " + std::error_code(err, std::system_category()).message()};
    }
    transport::framed_socket socket_;
};

static_assert(frontend_channel<socket_channel>);

} // namespace vvu::protocol
