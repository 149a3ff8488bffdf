#include <vvu/wire/error.hpp>
#include <vvu/wire/request.hpp>

#include <fmt/format.h>

namespace vvu::wire {
namespace {

const char* describe(errc e) noexcept {
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

class category final : public std::error_category {
public:
    const char* name() const noexcept override { return "vvu.wire"; }
    std::string message(int ev) const override { return describe(static_cast<errc>(ev)); }
};

} // namespace

const std::error_category& wire_category() noexcept {
    static const category instance;
    return instance;
}

std::string error::message() const {
    std::string_view request_name = "?";
    if (request != 0) {
        request_name = chan == channel::front ? name(static_cast<front_request>(request))
                                              : name(static_cast<back_request>(request));
    }
    std::string text = request == 0 ? std::string(describe(code))
                                    : fmt::format("{}: {}", request_name, describe(code));
    if (request != 0 && request_name == "UNKNOWN") text += fmt::format(" (id {})", request);
    if (got != 0 || want != 0) text += fmt::format(" (got {}, want {})", got, want);
    return text;
}

} // namespace vvu::wire
