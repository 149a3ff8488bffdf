// framed_socket: vhost-user framing over a connected SOCK_STREAM UNIX socket — the one piece of
// code that reads and writes messages with SCM_RIGHTS fds, used by the main socket
// (unix_socket) and the back-end channel (backend_channel) alike.
//
// Reading one message: exactly 12 header bytes (however the kernel splits them), the header
// checked with wire::check_header before a byte of payload is read (an oversize or unknown
// header is refused there), then exactly `size` payload bytes. Every SCM_RIGHTS fd that
// arrives with any part of the message is received (MSG_CMSG_CLOEXEC) into a unique_fd; more
// than wire::max_fds (the kernel reports MSG_CTRUNC) is an error, and every fd received is
// closed — none leaks.
// Writing one message: header + payload and all its fds in one sendmsg; if the kernel takes
// only part of the bytes, the rest follows without the fds.
//
// The socket's file status flags are never changed (the other end may share them): every
// call is made with MSG_DONTWAIT and waits with poll(), which is also how a `wake` fd — an
// eventfd owned by whoever may call stop() — interrupts a blocked call (errc::stopped).
//
// After any receive error other than timed_out the stream is out of step: close it.
// Not thread-safe: one reader and one writer at a time (they may be different threads).
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/codec.hpp>

#include <chrono>
#include <cstddef>
#include <span>

namespace vvu::transport {

// A timeout that never runs out.
inline constexpr std::chrono::milliseconds forever{-1};

class framed_socket {
public:
    framed_socket() = default;
    // `wake`: an fd that becomes readable to interrupt blocked calls (not owned; -1 = none).
    explicit framed_socket(unique_fd fd, int wake = -1) noexcept : fd_(std::move(fd)), wake_(wake) {}

    // Receives one message whose request ids belong to `chan` (front: requests to a back-end
    // or replies to a front-end on the main socket; back: the back-end channel).
    // Errors: errc::disconnected (EOF before the first byte), errc::truncated (EOF or reset
    // inside a message), errc::too_many_fds, errc::stopped, errc::timed_out, a wire error
    // (header refused), a system error.
    [[nodiscard]] expected<received_message, error> receive(wire::channel chan,
                                                            std::chrono::milliseconds timeout = forever);

    // Sends bytes (one whole message) with fds. errc::disconnected when the peer is gone.
    [[nodiscard]] expected<void, error> send(std::span<const std::byte> bytes, std::span<const int> fds = {},
                                             std::chrono::milliseconds timeout = forever);
    [[nodiscard]] expected<void, error> send(const wire::frame& f, std::chrono::milliseconds timeout = forever) {
        return send(f.bytes(), f.fds.span(), timeout);
    }

    // `interrupt`: an fd (not owned; -1 = none) that, readable while receive() waits for the
    // first byte of a message, makes it return errc::interrupted (not consumed; the stream stays
    // in step). A message that has begun is always read to its end.
    void set_interrupt(int interrupt) noexcept { interrupt_ = interrupt; }

    [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
    [[nodiscard]] bool is_open() const noexcept { return fd_.valid(); }
    void close() noexcept { fd_.reset(); }
    [[nodiscard]] unique_fd release() noexcept { return unique_fd(fd_.release()); }

private:
    unique_fd fd_;
    int wake_ = -1;
    int interrupt_ = -1;
};

// A connected pair of UNIX stream sockets: one end framed here, the other an fd for the peer
// (the back-end channel that a front-end hands over with SET_BACKEND_REQ_FD).
struct framed_socket_pair {
    framed_socket local;
    unique_fd remote;
};
[[nodiscard]] expected<framed_socket_pair, error> open_framed_socket_pair();

} // namespace vvu::transport
