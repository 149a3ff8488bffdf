// The Transport concept: everything the back-end state machine (protocol::backend) needs from
// whatever carries vhost-user to it, and nothing more. Models: unix_socket (a vhost-user
// socket; this directory) and, later, vvu_pci (the virtio-vhost-user driver over PCI BARs).
//
// Three things travel, and each transport carries them its own way:
//
//   messages      UNIX: bytes on the socket; VVU: buffers on the device's rxq/txq.
//   memory        UNIX: fds in SET_MEM_TABLE / ADD_MEM_REG, mmap()ed; VVU: no fds — windows of
//                 the shared-memory BAR.
//   notifications UNIX: eventfds in SET_VRING_KICK / SET_VRING_CALL; VVU: no fds — kicks are
//                 MSI-X vectors, calls are doorbell writes.
//
// So the state machine never interprets an fd itself. It decodes a message, and where the
// message carries a resource it hands the message's fd (possibly none, on VVU) back to the
// transport, which turns it into a transport-neutral object:
//
//   SET_MEM_TABLE/ADD_MEM_REG  t.map_region(desc, fd)          -> memory::region
//   SET_VRING_KICK             t.make_kick_notifier(vring, fd) -> T::kick_notifier
//   SET_VRING_CALL             t.make_call_notifier(vring, fd) -> T::call_notifier
//   SET_VRING_ERR              t.make_error_notifier(vring, fd) -> T::call_notifier
//   SET_BACKEND_REQ_FD         t.make_backend_channel(fd)      -> T::backend_channel
//
// SET_LOG_BASE's log is mapped with t.map_log(log_description, fd) -> memory::region where the
// transport has it (VVU: the log is an area of the window), else with t.map_region over a
// region of mmap_size bytes at mmap_offset of the fd.
//
// (SET_VRING_KICK with the NOFD flag means "no notifier, poll the ring": the state machine
// then calls nothing.) Fds the state machine does not take are closed with the
// received_message. A transport that keeps the fds itself (VVU: the device consumed them)
// delivers an invalid fd wherever a message names one (wire::named_fds), and the state
// machine hands it back like any other.
//
// Requirements on a type T modelling `transport`, for an lvalue t of type T, a wire::frame f,
// a unique_fd fd, a wire::memory_region d, and a vring index q (std::uint32_t):
//
//   t.wait_for_frontend()        expected<void, error>: block until a front-end is there
//                                (server: accept; client: connect, retrying; VVU: the device
//                                reports a connected front-end). Starts a session.
//   t.receive()                  expected<received_message, error>: the next front-end
//                                request, header already checked (wire::check_header), fds
//                                owned by the message. error::disconnected() ends the session.
//   t.send(f)                    expected<void, error>: a reply on the main channel.
//   t.close_session()            drops the session (after an error or a disconnect); the next
//                                wait_for_frontend() starts another.
//   t.map_region(d, fd)          expected<memory::region, memory::error>
//   t.make_kick_notifier(q, fd)  expected<T::kick_notifier, error>; models kick_notifier
//   t.make_call_notifier(q, fd)  expected<T::call_notifier, error>; models call_notifier
//   t.make_error_notifier(q, fd) expected<T::call_notifier, error> (SET_VRING_ERR)
//   t.make_backend_channel(fd)   expected<T::backend_channel, error>; models backend_channel_type
//
// receive/send happen on the control thread; notifiers and the back-end channel are used from
// ring threads too, each notifier by one thread. A transport also offers stop() (thread-safe,
// makes blocked calls return errc::stopped) for the application's shutdown; the state machine
// does not need it.
//
// Example — the skeleton of a back-end's control loop over any transport:
//
//   template <vvu::transport::transport T>
//   void serve(T& t) {
//       while (t.wait_for_frontend()) {
//           for (;;) {
//               auto m = t.receive();
//               if (!m) break;                        // disconnected, protocol error, stopped
//               auto msg = vvu::wire::decode<vvu::wire::front_request>(m->bytes(), m->fds.span());
//               if (!msg) break;
//               // … handle; SET_VRING_KICK: auto k = t.make_kick_notifier(idx, m->fds.take(0));
//           }
//           t.close_session();
//       }
//   }
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/transport/error.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/codec.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>

namespace vvu::transport {

// How a ring thread learns of a kick: wait (bounded) or check without waiting; both consume it.
template <class N>
concept kick_notifier = std::movable<N> && requires(const N& n, std::chrono::milliseconds timeout) {
    { n.wait(timeout) } noexcept -> std::same_as<bool>;
    { n.drain() } noexcept -> std::same_as<bool>;
};

// How a ring thread signals a call (used buffers, or an error on SET_VRING_ERR's notifier).
template <class N>
concept call_notifier = std::movable<N> && requires(const N& n) {
    { n.signal() } noexcept;
};

// A notifier an event loop can poll()/epoll() on (optional: not every transport has fds).
template <class N>
concept pollable_notifier = requires(const N& n) {
    { n.native_handle() } noexcept -> std::same_as<int>;
};

// The back-end channel: back-end requests out, their replies in.
template <class C>
concept backend_channel_type = std::movable<C> && requires(C& c, const wire::frame& f, std::chrono::milliseconds t) {
    { c.send(f, t) } -> std::same_as<expected<void, error>>;
    { c.transact(f, t) } -> std::same_as<expected<received_message, error>>;
};

template <class T>
concept transport = requires(T& t, const wire::frame& f, unique_fd fd, const wire::memory_region& d, std::uint32_t q) {
    typename T::kick_notifier;
    typename T::call_notifier;
    typename T::backend_channel;
    requires kick_notifier<typename T::kick_notifier>;
    requires call_notifier<typename T::call_notifier>;
    requires backend_channel_type<typename T::backend_channel>;
    { t.wait_for_frontend() } -> std::same_as<expected<void, error>>;
    { t.receive() } -> std::same_as<expected<received_message, error>>;
    { t.send(f) } -> std::same_as<expected<void, error>>;
    { t.close_session() } noexcept;
    { t.map_region(d, std::move(fd)) } -> std::same_as<expected<memory::region, memory::error>>;
    { t.make_kick_notifier(q, std::move(fd)) } -> std::same_as<expected<typename T::kick_notifier, error>>;
    { t.make_call_notifier(q, std::move(fd)) } -> std::same_as<expected<typename T::call_notifier, error>>;
    { t.make_error_notifier(q, std::move(fd)) } -> std::same_as<expected<typename T::call_notifier, error>>;
    { t.make_backend_channel(std::move(fd)) } -> std::same_as<expected<typename T::backend_channel, error>>;
};

// A transport that makes its regions, call/error notifiers and back-end channel from the
// session alone — no fd needed (the VVU transport: regions are areas of its BAR window, calls
// are doorbells). A live update hands such resources over as "made by the transport"
// (protocol/session_image.hpp) and the importing transport makes them again.
template <class T>
inline constexpr bool remakes_resources = requires { requires T::remakes_resources_from_session; };

} // namespace vvu::transport
