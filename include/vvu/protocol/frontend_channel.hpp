// The front-end's message channel: what protocol::frontend needs to talk to a back-end. The
// state machine is written against this concept only; the UNIX-socket model lives in the
// transport layer (transport::frontend_socket, the default channel). Tests model it with a
// scripted back-end.
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
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/transport/frontend_socket.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/wire/codec.hpp>

#include <chrono>
#include <concepts>

namespace vvu::protocol {

template <class C>
concept frontend_channel = requires(C& c, const wire::frame& f, std::chrono::milliseconds t) {
    { c.send(f, t) } -> std::same_as<expected<void, transport::error>>;
    { c.receive(t) } -> std::same_as<expected<transport::received_message, transport::error>>;
    { c.native_handle() } -> std::same_as<int>;
};

// The channel a front-end uses unless told otherwise: a vhost-user UNIX socket. The name stays
// in protocol/ so that device drivers (which never see transports) can default to it.
using socket_channel = transport::frontend_socket;

static_assert(frontend_channel<socket_channel>);

} // namespace vvu::protocol
