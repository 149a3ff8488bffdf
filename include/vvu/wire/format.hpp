// Human-readable one-line descriptions of messages, for logs, tracers and vvu-decode:
//   "SET_VRING_ADDR index=0 flags=0x0 desc=0x7f3c… used=… avail=… log=0x0"
#pragma once

#include <vvu/wire/message.hpp>
#include <vvu/wire/transcript.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace vvu::wire {

[[nodiscard]] std::string describe(const any_front_message& m);
[[nodiscard]] std::string describe(const any_back_message& m);
[[nodiscard]] std::string describe(const any_reply<front_request>& r);
[[nodiscard]] std::string describe(const any_reply<back_request>& r);

// A message the codec cannot decode, shown as it came: "request=99 flags=0x1 size=0 fds=0
// raw=630000000100000000000000" (or "short=N ..." under 12 bytes).
[[nodiscard]] std::string describe_raw(std::span<const std::byte> bytes, std::size_t fd_count);

// One line for one message of a session, as vvu-decode and vvu-trace print it: an arrow for
// who sent it on which channel ("->" front-end request, "<-" back-end reply on the main
// socket; "<=" back-end request, "=>" front-end reply on the back-end channel), then the
// decoded message — or, when the codec refuses it, "UNKNOWN" (a request id this codec does
// not know) or "MALFORMED (reason)" and the raw bytes. Never fails.
struct entry_description {
    enum class verdict : std::uint8_t { decoded, unknown_request, malformed };
    std::string text;
    verdict result = verdict::decoded;
    bool re_encodes = true; // decoded, and encode() gives back the very same bytes
    std::string reason;     // why the codec refused it
};
[[nodiscard]] entry_description describe_entry(transcript_entry::from sender, transcript_entry::channel chan,
                                               std::span<const std::byte> bytes, std::size_t fd_count);
[[nodiscard]] inline entry_description describe_entry(const transcript_entry& e) {
    return describe_entry(e.sender, e.chan, e.bytes, e.fd_count);
}

} // namespace vvu::wire
