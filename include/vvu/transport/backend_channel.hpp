// backend_channel: the back-end channel of the UNIX transport (QEMU vhost-user.rst,
// "Back-end communication"): the connected socket that SET_BACKEND_REQ_FD hands over, on which
// the back-end sends its own requests (VRING_CALL, CONFIG_CHANGE_MSG, …) and reads their
// replies. Same framing as the main socket (framed_socket).
//
//   auto f = wire::encode(wire::message<wire::back_request::config_change_msg>{
//                             .flags = wire::flags::version | wire::flags::need_reply});
//   auto r = chan.transact(*f, std::chrono::seconds(1));   // send, then read one reply
//   auto ack = wire::decode_reply<wire::back_request::config_change_msg>(r->bytes(), r->fds.span());
//
// Thread-safe: requests may come from ring threads and the control thread; transact() keeps a
// request and its reply together.
#pragma once

#include <vvu/transport/framed_socket.hpp>

#include <memory>
#include <mutex>

namespace vvu::transport {

class backend_channel {
public:
    backend_channel() = default;
    explicit backend_channel(unique_fd fd, int wake = -1)
        : state_(std::make_unique<state>(framed_socket(std::move(fd), wake))) {}

    // Sends a request that gets no reply (or whose reply the caller reads with receive()).
    [[nodiscard]] expected<void, error> send(const wire::frame& f, std::chrono::milliseconds timeout = forever) {
        if (!state_) return unexpected(error(errc::not_connected));
        std::scoped_lock lock(state_->mutex);
        return state_->socket.send(f, timeout);
    }
    // Sends a request and reads the next message (its reply) — for requests with
    // NEED_REPLY or a reply of their own.
    [[nodiscard]] expected<received_message, error> transact(const wire::frame& f,
                                                             std::chrono::milliseconds timeout = forever) {
        if (!state_) return unexpected(error(errc::not_connected));
        std::scoped_lock lock(state_->mutex);
        if (auto s = state_->socket.send(f, timeout); !s) return unexpected(s.error());
        return state_->socket.receive(wire::channel::back, timeout);
    }
    // Reads one message of the back-end channel (a reply; or, on a front-end, a request).
    [[nodiscard]] expected<received_message, error> receive(std::chrono::milliseconds timeout = forever) {
        if (!state_) return unexpected(error(errc::not_connected));
        std::scoped_lock lock(state_->mutex);
        return state_->socket.receive(wire::channel::back, timeout);
    }

    [[nodiscard]] bool is_open() const noexcept { return state_ && state_->socket.is_open(); }
    [[nodiscard]] int native_handle() const noexcept { return state_ ? state_->socket.native_handle() : -1; }

private:
    struct state {
        explicit state(framed_socket s) : socket(std::move(s)) {}
        std::mutex mutex;
        framed_socket socket;
    };
    std::unique_ptr<state> state_;
};

} // namespace vvu::transport
