// The Transport the state-machine fuzzers run the back-end over: no socket — messages come from
// the fuzzer's input — and every resource fd is taken as the UNIX transport takes it (memory
// mapped, eventfd notifiers, a socket back-end channel), so bad fds fail the way they would.
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/util/eventfd.hpp>

namespace vvu::fuzzing {

struct fuzz_transport {
    using kick_notifier = eventfd_notifier;
    using call_notifier = eventfd_notifier;
    using backend_channel = transport::backend_channel;

    expected<void, transport::error> wait_for_frontend() { return {}; }
    expected<transport::received_message, transport::error> receive() { return unexpected(transport::error(transport::errc::disconnected)); }
    expected<void, transport::error> send(const wire::frame&) { return {}; }
    void close_session() noexcept {}
    expected<memory::region, memory::error> map_region(const wire::memory_region& d, unique_fd fd) {
        return memory::region::map(d, std::move(fd));
    }
    expected<kick_notifier, transport::error> make_kick_notifier(std::uint32_t, unique_fd fd) { return kick_notifier(std::move(fd)); }
    expected<call_notifier, transport::error> make_call_notifier(std::uint32_t, unique_fd fd) { return call_notifier(std::move(fd)); }
    expected<call_notifier, transport::error> make_error_notifier(std::uint32_t, unique_fd fd) { return call_notifier(std::move(fd)); }
    expected<backend_channel, transport::error> make_backend_channel(unique_fd fd) { return backend_channel(std::move(fd)); }
};

static_assert(transport::transport<fuzz_transport>);

} // namespace vvu::fuzzing
