// Errors of the transport layer. `transport::error` carries a std::error_code whose category
// says where it came from — transport_category() (this enum), std::system_category() (a
// failed system call, with `op` naming it), or wire::wire_category() (a header refused by
// wire::check_header, with the details in `wire`) — and prints one readable line.
#pragma once

#include <vvu/util/error_category.hpp>
#include <vvu/wire/error.hpp>

#include <string>
#include <system_error>

namespace vvu::transport {

enum class errc : int {
    disconnected = 1, // the peer closed the connection between two messages
    truncated,        // the peer closed the connection in the middle of a message
    too_many_fds,     // more fds arrived with a message than vhost-user allows (MSG_CTRUNC)
    stopped,          // stop() was called
    timed_out,        // a bounded wait ran out
    not_connected,    // no session (call wait_for_frontend first)
    address_in_use,   // another server listens on the socket path
    bad_fd,           // an fd given to the transport is not usable for this purpose
    interrupted,      // the interrupt fd became readable while waiting between messages
    malformed,        // a hand-over record that breaks its format (handover_socket)
    unsupported_version, // a hand-over record of a version this build does not speak
};

[[nodiscard]] constexpr const char* describe(errc e) noexcept {
    switch (e) {
    case errc::disconnected: return "peer closed the connection";
    case errc::truncated: return "peer closed the connection in the middle of a message";
    case errc::too_many_fds: return "more file descriptors than a vhost-user message may carry";
    case errc::stopped: return "transport stopped";
    case errc::timed_out: return "timed out";
    case errc::not_connected: return "no front-end connected";
    case errc::address_in_use: return "another server is listening on the socket path";
    case errc::bad_fd: return "unusable file descriptor";
    case errc::interrupted: return "interrupted between messages";
    case errc::malformed: return "malformed hand-over record";
    case errc::unsupported_version: return "hand-over record of an unsupported version";
    }
    return "unknown transport error";
}

[[nodiscard]] inline const std::error_category& transport_category() noexcept {
    return enum_category<errc, "vvu.transport">::instance();
}

[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), transport_category()};
}

} // namespace vvu::transport

template <>
struct std::is_error_code_enum<vvu::transport::errc> : std::true_type {};

namespace vvu::transport {

struct error {
    std::error_code code;
    const char* op = nullptr; // the system call that failed, for system errors
    wire::error wire{};       // the refused header, when code is a wire error
    std::string detail;       // what a lower layer said (e.g. a PCI function's error), if anything

    error() = default;
    error(errc e) : code(make_error_code(e)) {} // NOLINT: implicit on purpose
    error(std::error_code c, const char* what) : code(c), op(what) {}
    error(const wire::error& w) : code(w.ec()), wire(w) {}
    error(std::error_code c, std::string text) : code(c), detail(std::move(text)) {}

    // The session is over (peer gone, cleanly or not): wait for the next front-end.
    [[nodiscard]] bool disconnected() const noexcept {
        return code == errc::disconnected || code == errc::truncated;
    }
    // e.g. "peer closed the connection", "recvmsg: Connection reset by peer",
    // "SET_MEM_TABLE: payload size above the maximum (got 5000, want 632)".
    [[nodiscard]] std::string message() const;
};

} // namespace vvu::transport
