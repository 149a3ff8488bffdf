// Errors of the back-end runtime, as std::error_code (category "vvu.runtime"): why a session
// ended — the front-end went away, broke the protocol, or the application stopped the server —
// and why a live update did not happen.
#pragma once

#include <vvu/util/error_category.hpp>

#include <string>
#include <system_error>

namespace vvu::runtime {

enum class errc : int {
    disconnected = 1, // the front-end closed the connection (or it broke mid-message)
    violation,        // the front-end broke the protocol; the session was closed
    stopped,          // the application stopped the server
    transport_failed, // the transport failed (waiting for a front-end, sending a reply)
    handed_over,      // the session now lives in another process (live update)
    not_supported,    // this transport cannot hand its session over
    refused,          // the other side of a hand-over refused it (the message says why)
    protocol,         // the other side of a hand-over broke the hand-over protocol
};

[[nodiscard]] constexpr const char* describe(errc e) noexcept {
    switch (e) {
    case errc::disconnected: return "the front-end disconnected";
    case errc::violation: return "the front-end broke the protocol";
    case errc::stopped: return "the server was stopped";
    case errc::transport_failed: return "the transport failed";
    case errc::handed_over: return "the session was handed over to another process";
    case errc::not_supported: return "this transport cannot hand its session over";
    case errc::refused: return "the hand-over was refused";
    case errc::protocol: return "the hand-over protocol was broken";
    }
    return "unknown runtime error";
}

[[nodiscard]] inline const std::error_category& runtime_category() noexcept {
    return enum_category<errc, "vvu.runtime">::instance();
}
[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), runtime_category()}; }

// An error code and the line that explains it ("SET_VRING_NUM: vring 9 out of range").
struct error {
    std::error_code code;
    std::string text;
    [[nodiscard]] const std::string& message() const noexcept { return text; }
};

} // namespace vvu::runtime

template <>
struct std::is_error_code_enum<vvu::runtime::errc> : std::true_type {};
