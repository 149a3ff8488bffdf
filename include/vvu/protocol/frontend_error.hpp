// Errors of the front-end (protocol::frontend): an error enum registered as a std::error_category,
// and `frontend_error`, which names the request that failed and the reason in one line
// ("GET_FEATURES: reply payload of 4 bytes where 8 are expected",
//  "SET_MEM_TABLE: no ack within 2000 ms"). A misbehaving back-end produces one of these, never
// a crash or a hang.
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/util/error_category.hpp>
#include <vvu/wire/error.hpp>
#include <vvu/wire/request.hpp>

#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace vvu::protocol {

enum class frontend_errc : int {
    disconnected = 1, // the back-end closed the socket
    timed_out,        // no reply (or ack) within the bound
    transport,        // a socket error (system call), or a header the framing refused
    malformed_reply,  // a reply that breaks the framing rules (flags, fds, unknown request)
    wrong_reply_size, // a reply whose payload size does not fit the request's reply
    mismatched_reply, // a reply to another request than the one awaited
    rejected,         // a failure ack (non-zero u64), or GET_CONFIG answered with size 0
    not_offered,      // the back-end lacks a feature the caller requires
    invalid_argument, // the caller's configuration is out of range
    out_of_memory,    // memfd/mmap failed, or the shared memory is too small for the rings
    ring_setup,       // the ring layer refused the ring configuration
    backend_channel,  // the back-end channel (SET_BACKEND_REQ_FD) broke or sent nonsense
    bad_state,        // a call out of order (a queue before memory, a stopped queue)
};

[[nodiscard]] constexpr const char* describe(frontend_errc e) noexcept {
    switch (e) {
    case frontend_errc::disconnected: return "back-end closed the connection";
    case frontend_errc::timed_out: return "no reply within the time limit";
    case frontend_errc::transport: return "transport error";
    case frontend_errc::malformed_reply: return "malformed reply";
    case frontend_errc::wrong_reply_size: return "reply of the wrong size";
    case frontend_errc::mismatched_reply: return "reply to another request";
    case frontend_errc::rejected: return "request rejected by the back-end";
    case frontend_errc::not_offered: return "feature not offered by the back-end";
    case frontend_errc::invalid_argument: return "invalid argument";
    case frontend_errc::out_of_memory: return "shared memory unavailable or too small";
    case frontend_errc::ring_setup: return "ring setup failed";
    case frontend_errc::backend_channel: return "back-end channel error";
    case frontend_errc::bad_state: return "call out of order";
    }
    return "unknown front-end error";
}

[[nodiscard]] inline const std::error_category& frontend_category() noexcept {
    return enum_category<frontend_errc, "vvu.frontend">::instance();
}

[[nodiscard]] inline std::error_code make_error_code(frontend_errc e) noexcept {
    return {static_cast<int>(e), frontend_category()};
}

struct frontend_error {
    frontend_errc code{};
    std::optional<wire::front_request> request; // the request being made, where one was
    std::string detail;                         // the specifics (sizes, values, system error)

    frontend_error() = default;
    frontend_error(frontend_errc c, std::optional<wire::front_request> r, std::string d)
        : code(c), request(r), detail(std::move(d)) {}

    [[nodiscard]] std::error_code ec() const noexcept { return make_error_code(code); }
    // "<REQUEST>: <detail>" (or the category's text when there is no detail).
    [[nodiscard]] std::string message() const {
        std::string text = request ? std::string(wire::name(*request)) + ": " : std::string();
        text += detail.empty() ? ec().message() : detail;
        return text;
    }
};

namespace detail {

// A transport failure while waiting for (or sending) `r`.
inline frontend_error from_transport(wire::front_request r, const transport::error& e, const char* what) {
    using transport::errc;
    if (e.code == errc::disconnected || e.code == errc::truncated)
        return {frontend_errc::disconnected, r, std::string(what) + ": " + e.message()};
    if (e.code == errc::timed_out) return {frontend_errc::timed_out, r, std::string(what) + ": " + e.message()};
    if (e.code.category() == wire::wire_category())
        return {frontend_errc::malformed_reply, r, std::string(what) + ": " + e.message()};
    return {frontend_errc::transport, r, std::string(what) + ": " + e.message()};
}

// A reply the codec refused.
inline frontend_error from_wire(wire::front_request r, const wire::error& e) {
    frontend_errc c = frontend_errc::malformed_reply;
    if (e.code == wire::errc::bad_payload_size) c = frontend_errc::wrong_reply_size;
    else if (e.code == wire::errc::mismatched_reply) c = frontend_errc::mismatched_reply;
    std::string text = e.message();
    if (e.code == wire::errc::mismatched_reply) {
        const auto got = static_cast<std::uint32_t>(e.got);
        text = "reply to " +
               std::string(wire::is_known<wire::front_request>(got) ? wire::name(static_cast<wire::front_request>(got))
                                                                    : std::string_view("an unknown request")) +
               " (request " + std::to_string(got) + ") while awaiting this one";
    } else if (e.code == wire::errc::bad_payload_size) {
        text = "reply payload of " + std::to_string(e.got) + " bytes where " + std::to_string(e.want) +
               " are expected";
    }
    return {c, r, std::move(text)};
}

} // namespace detail
} // namespace vvu::protocol

template <>
struct std::is_error_code_enum<vvu::protocol::frontend_errc> : std::true_type {};
