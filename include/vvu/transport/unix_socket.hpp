// unix_socket: the vhost-user UNIX-socket transport, the first model of `transport`
// (transport.hpp). One object per port; one session (connected front-end) at a time.
//
//   auto t = vvu::transport::unix_socket::listen("/tmp/vhost0.sock");    // server mode
//   auto t = vvu::transport::unix_socket::connect("/tmp/vhost0.sock");   // client mode
//   while (t->wait_for_frontend()) { … t->receive() … t->send(frame) … t->close_session(); }
//
// Server mode binds and listens on the path (a stale socket file — nobody accepting on it —
// is unlinked first; a live one is errc::address_in_use), accepts one front-end per
// wait_for_frontend(), and unlinks the path when destroyed. Client mode connects, retrying with
// bounded exponential back-off while the path is missing or refuses (the front-end is not
// there yet, or restarting), for up to `give_up_after` (default: forever).
//
// Calls block (the control thread of a port blocks on its socket; a back-end with several
// ports runs one control thread per port). stop() from any thread makes every blocked or
// later call return errc::stopped. native_handle() is the connected socket, for an event
// loop that would rather poll. Listening, accepting and connecting use Boost.Asio's
// local::stream_protocol; messages use recvmsg/sendmsg on the native handle (framed_socket).
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/transport/error.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/eventfd.hpp>

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vvu::transport {

// Client-mode reconnection: wait `initial` after the first failed attempt, doubling up to
// `max` between attempts; give up (errc::timed_out) after `give_up_after` (negative: never).
struct backoff {
    std::chrono::milliseconds initial{10};
    std::chrono::milliseconds max{1000};
    std::chrono::milliseconds give_up_after{-1};
};

class unix_socket {
public:
    using kick_notifier = eventfd_notifier;
    using call_notifier = eventfd_notifier;
    using backend_channel = transport::backend_channel;

    enum class mode { server, client };

    // Server mode: listen on `path` now (so that a front-end may connect before the first
    // wait_for_frontend()).
    [[nodiscard]] static expected<unix_socket, error> listen(const std::string& path);
    // Client mode: connects on wait_for_frontend().
    [[nodiscard]] static unix_socket connect(const std::string& path, backoff b = {});

    // Live update: what a port's transport hands to the process that takes it over — its
    // role and path, the listening socket (server mode) and the connected socket (if any).
    struct endpoint {
        mode role = mode::server;
        std::string path;
        unique_fd listener;
        unique_fd session;

        // Hand-over bytes: role (u8), path, has listener, has session; the fds follow in that
        // order (moved into `fds`).
        void encode(byte_writer& w, std::vector<unique_fd>& fds) && {
            w.put<std::uint8_t>(role == mode::server ? 0 : 1);
            w.put_string(path);
            w.put_bool(listener.valid());
            w.put_bool(session.valid());
            if (listener) fds.push_back(std::move(listener));
            if (session) fds.push_back(std::move(session));
        }
        // Reads what encode() wrote, taking its fds from the front of `fds`.
        static expected<endpoint, std::string> decode(byte_reader& r, std::span<unique_fd> fds) {
            endpoint e;
            const auto role = r.get<std::uint8_t>();
            e.path = r.get_string(4096);
            const bool has_listener = r.get_bool(), has_session = r.get_bool();
            if (!r.ok() || role > 1 || e.path.empty()) return unexpected(std::string("malformed transport endpoint"));
            e.role = role == 0 ? mode::server : mode::client;
            if ((e.role == mode::server) != has_listener)
                return unexpected(std::string("a server endpoint needs its listening socket (and a client has none)"));
            const std::size_t need = std::size_t{has_listener} + std::size_t{has_session};
            if (fds.size() < need) return unexpected(std::string("transport endpoint: missing fds"));
            std::size_t i = 0;
            if (has_listener) e.listener = std::move(fds[i++]);
            if (has_session) e.session = std::move(fds[i++]);
            return e;
        }
        [[nodiscard]] std::size_t fd_count() const noexcept { return std::size_t{listener.valid()} + std::size_t{session.valid()}; }
    };
    // Duplicates of this transport's sockets; it keeps serving with its own.
    [[nodiscard]] expected<endpoint, error> export_endpoint() const;
    // A transport over sockets another process exported (errc::bad_fd when they are not a
    // listening socket / a stream socket). With a session it is connected already.
    [[nodiscard]] static expected<unix_socket, error> adopt(endpoint e, backoff b = {});
    // Lets go of the sockets without a trace: nothing is unlinked or sent (they live on in the
    // process that took the port over).
    void abandon() noexcept;

    unix_socket(unix_socket&&) noexcept;
    unix_socket& operator=(unix_socket&&) noexcept;
    ~unix_socket();

    // Transport concept.
    [[nodiscard]] expected<void, error> wait_for_frontend();
    [[nodiscard]] expected<received_message, error> receive(std::chrono::milliseconds timeout = forever);
    [[nodiscard]] expected<void, error> send(const wire::frame& f);
    [[nodiscard]] expected<void, error> send(std::span<const std::byte> bytes, std::span<const int> fds);
    void close_session() noexcept;
    [[nodiscard]] expected<memory::region, memory::error> map_region(const wire::memory_region& d, unique_fd fd);
    [[nodiscard]] expected<kick_notifier, error> make_kick_notifier(std::uint32_t vring, unique_fd fd);
    [[nodiscard]] expected<call_notifier, error> make_call_notifier(std::uint32_t vring, unique_fd fd);
    [[nodiscard]] expected<call_notifier, error> make_error_notifier(std::uint32_t vring, unique_fd fd) {
        return make_call_notifier(vring, std::move(fd));
    }
    [[nodiscard]] expected<backend_channel, error> make_backend_channel(unique_fd fd);

    // Makes blocked and future calls return errc::stopped. Thread-safe, idempotent.
    void stop() noexcept;
    // `fd` (not owned; -1: none), readable, makes a call that waits *between* messages —
    // accepting, the back-off of connecting, receive() before a message's first byte — return
    // errc::interrupted. Not consumed. A runtime uses it to take the control thread aside at a
    // message boundary (live update). Set it before the calls it is to interrupt.
    void set_interrupt(int fd) noexcept;

    [[nodiscard]] mode role() const noexcept;
    [[nodiscard]] const std::string& path() const noexcept;
    [[nodiscard]] bool connected() const noexcept;
    // The connected socket (-1 without a session).
    [[nodiscard]] int native_handle() const noexcept;
    // Hands the connected socket over (live update); the transport has no session after.
    [[nodiscard]] unique_fd release_session() noexcept;

private:
    struct impl;
    explicit unix_socket(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> impl_;
};

static_assert(transport<unix_socket>);
static_assert(pollable_notifier<eventfd_notifier>);

} // namespace vvu::transport
