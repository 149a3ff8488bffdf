// Errors of the wire codec: an error enum registered as a std::error_category, and
// `wire::error`, which adds the request and the numbers involved so that a log line can
// name the request and the reason ("SET_MEM_TABLE: 3 fds where 2 are expected").
#pragma once

#include <vvu/util/error_category.hpp>

#include <cstdint>
#include <string>
#include <system_error>

namespace vvu::wire {

enum class errc : int {
    short_header = 1,      // fewer than 12 bytes
    bad_version,           // flags bits 0-1 are not 0x1
    unknown_request,       // no such request on this channel
    unexpected_reply_flag, // REPLY set on a request
    missing_reply_flag,    // a reply without REPLY
    mismatched_reply,      // a reply for another request than the one awaited
    payload_too_large,     // header size above the largest payload of any request
    truncated_payload,     // fewer payload bytes than the header announces
    trailing_bytes,        // more bytes than the header announces
    bad_payload_size,      // size does not fit the request's payload
    bad_count,             // a count inside the payload is out of range
    empty_region,          // a memory region of size 0
    region_wraps,          // address + size overflows 64 bits
    unexpected_fds,        // fds on a message that takes none
    missing_fd,            // fewer fds than the message requires
    too_many_fds,          // more fds than the message allows
};

[[nodiscard]] constexpr const char* describe(errc e) noexcept {
    switch (e) {
    case errc::short_header: return "message shorter than the 12-byte header";
    case errc::bad_version: return "unsupported version in flags (must be 0x1)";
    case errc::unknown_request: return "unknown request";
    case errc::unexpected_reply_flag: return "REPLY flag set on a request";
    case errc::missing_reply_flag: return "reply without the REPLY flag";
    case errc::mismatched_reply: return "reply to another request";
    case errc::payload_too_large: return "payload size above the maximum";
    case errc::truncated_payload: return "payload shorter than its header announces";
    case errc::trailing_bytes: return "bytes after the announced payload";
    case errc::bad_payload_size: return "payload size does not match the request";
    case errc::bad_count: return "count in payload out of range";
    case errc::empty_region: return "memory region of size 0";
    case errc::region_wraps: return "address range wraps around 2^64";
    case errc::unexpected_fds: return "file descriptors where none are allowed";
    case errc::missing_fd: return "missing file descriptor";
    case errc::too_many_fds: return "too many file descriptors";
    }
    return "unknown wire error";
}

[[nodiscard]] inline const std::error_category& wire_category() noexcept {
    return enum_category<errc, "vvu.wire">::instance();
}

[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), wire_category()};
}

// Which request set a request id refers to.
enum class channel : std::uint8_t {
    front, // front-end requests (main socket)
    back,  // back-end requests (back-end channel)
};

struct error {
    errc code{};
    channel chan = channel::front;
    std::uint32_t request = 0; // request id from the header (0 before it was read)
    std::uint64_t got = 0;     // the offending number (bytes, fds, count), where one applies
    std::uint64_t want = 0;    // what the spec requires instead, where one applies

    [[nodiscard]] std::error_code ec() const noexcept { return make_error_code(code); }
    // "<REQUEST>: <reason> (<got> vs <want>)", e.g. "SET_MEM_TABLE: wrong number of fds (got 3, want 2)".
    [[nodiscard]] std::string message() const;
    friend bool operator==(const error&, const error&) = default;
};

} // namespace vvu::wire

template <>
struct std::is_error_code_enum<vvu::wire::errc> : std::true_type {};
