// Transcripts: a vhost-user session written as text, one message per line, so that real
// sessions can be captured, committed, replayed in tests and printed (tests/captures/).
//
//   # comment
//   > NFDS HEX      a message from the front-end (request on the main socket)
//   < NFDS HEX      a message from the back-end (its reply)
//   b< NFDS HEX     a message from the back-end on the back-end channel (SET_BACKEND_REQ_FD)
//   b> NFDS HEX     a message from the front-end on the back-end channel (its reply)
//
// NFDS is how many file descriptors came with the message; HEX the whole message (header and
// payload) in lowercase hex. Parsing is pure: the caller reads the file.
#pragma once

#include <vvu/util/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <span>
#include <string_view>
#include <vector>

namespace vvu::wire {

struct transcript_entry {
    enum class from : std::uint8_t { front_end, back_end };
    enum class channel : std::uint8_t { main, backend }; // the main socket, or the back-end channel
    from sender = from::front_end;
    channel chan = channel::main;
    std::size_t fd_count = 0;
    std::vector<std::byte> bytes;
    std::size_t line = 0; // 1-based line number in the text
};

struct transcript_error {
    std::size_t line = 0;
    std::string reason;
};

// Parses a whole transcript; comment and blank lines are skipped.
[[nodiscard]] expected<std::vector<transcript_entry>, transcript_error> parse_transcript(std::string_view text);

// One transcript line (without newline) for a message.
[[nodiscard]] std::string transcript_line(transcript_entry::from sender, std::size_t fd_count,
                                          std::span<const std::byte> bytes,
                                          transcript_entry::channel chan = transcript_entry::channel::main);

} // namespace vvu::wire
