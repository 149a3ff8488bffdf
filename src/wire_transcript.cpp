#include <vvu/wire/transcript.hpp>

#include <fmt/format.h>

#include <charconv>

namespace vvu::wire {
namespace {

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string_view next_token(std::string_view& rest) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    std::size_t n = 0;
    while (n < rest.size() && rest[n] != ' ' && rest[n] != '\t' && rest[n] != '\r') ++n;
    std::string_view token = rest.substr(0, n);
    rest.remove_prefix(n);
    return token;
}

} // namespace

expected<std::vector<transcript_entry>, transcript_error> parse_transcript(std::string_view text) {
    std::vector<transcript_entry> entries;
    std::size_t line_no = 0;
    while (!text.empty()) {
        const std::size_t eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
        ++line_no;
        std::string_view rest = line;
        const std::string_view tag = next_token(rest);
        if (tag.empty() || tag.front() == '#') continue;
        transcript_entry entry;
        entry.line = line_no;
        if (tag == ">" || tag == "b>") entry.sender = transcript_entry::from::front_end;
        else if (tag == "<" || tag == "b<") entry.sender = transcript_entry::from::back_end;
        else return unexpected(transcript_error{line_no, fmt::format("unknown direction '{}'", tag)});
        entry.chan = tag.front() == 'b' ? transcript_entry::channel::backend : transcript_entry::channel::main;

        const std::string_view count = next_token(rest);
        auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), entry.fd_count);
        if (ec != std::errc{} || end != count.data() + count.size())
            return unexpected(transcript_error{line_no, fmt::format("bad fd count '{}'", count)});

        const std::string_view hex = next_token(rest);
        if (hex.size() % 2 != 0) return unexpected(transcript_error{line_no, "odd number of hex digits"});
        entry.bytes.reserve(hex.size() / 2);
        for (std::size_t i = 0; i < hex.size(); i += 2) {
            const int hi = hex_digit(hex[i]);
            const int lo = hex_digit(hex[i + 1]);
            if (hi < 0 || lo < 0) return unexpected(transcript_error{line_no, "bad hex digit"});
            entry.bytes.push_back(static_cast<std::byte>(hi << 4 | lo));
        }
        if (!next_token(rest).empty()) return unexpected(transcript_error{line_no, "trailing text"});
        entries.push_back(std::move(entry));
    }
    return entries;
}

std::string transcript_line(transcript_entry::from sender, std::size_t fd_count, std::span<const std::byte> bytes,
                            transcript_entry::channel chan) {
    std::string line = fmt::format("{}{} {} ", chan == transcript_entry::channel::backend ? "b" : "",
                                   sender == transcript_entry::from::front_end ? '>' : '<', fd_count);
    for (std::byte b : bytes) line += fmt::format("{:02x}", static_cast<unsigned>(b));
    return line;
}

} // namespace vvu::wire
