// vvu-decode: prints a vhost-user session transcript (tests/captures/*.vhu) in human form,
// decoding every message with vvu's wire codec and checking that it re-encodes to the very
// same bytes. Exit status 1 if any message fails either way.
#include <vvu/wire/wire.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

void usage() {
    std::fputs("usage: vvu-decode FILE.vhu...\n"
               "Decodes each message of a vhost-user session transcript ('> NFDS HEX' from the\n"
               "front-end, '< NFDS HEX' from the back-end) and prints it, one line per message.\n",
               stderr);
}

// Replies are decoded as the answer to the request named in their header.
template <class Decoded>
bool print(const Decoded& decoded, std::span<const std::byte> bytes, const char* arrow) {
    if (!decoded) {
        fmt::print("  {} INVALID: {}\n", arrow, decoded.error().message());
        return false;
    }
    auto again = vvu::wire::encode(*decoded);
    const bool same = again && std::ranges::equal(again->bytes(), bytes);
    fmt::print("  {} {}{}\n", arrow, vvu::wire::describe(*decoded), same ? "" : "   [re-encoding differs]");
    return same;
}

bool decode_file(const char* path) {
    std::ifstream in(path);
    if (!in) {
        fmt::print(stderr, "vvu-decode: cannot open {}\n", path);
        return false;
    }
    std::stringstream text;
    text << in.rdbuf();
    auto entries = vvu::wire::parse_transcript(text.str());
    if (!entries) {
        fmt::print(stderr, "vvu-decode: {}:{}: {}\n", path, entries.error().line, entries.error().reason);
        return false;
    }
    fmt::print("{}: {} messages\n", path, entries->size());
    bool ok = true;
    std::vector<int> fds;
    for (const auto& e : *entries) {
        fds.assign(e.fd_count, -1); // placeholders: the transcript keeps only the count
        if (e.sender == vvu::wire::transcript_entry::from::front_end)
            ok &= print(vvu::wire::decode<vvu::wire::front_request>(e.bytes, fds), e.bytes, "->");
        else
            ok &= print(vvu::wire::decode_any_reply<vvu::wire::front_request>(e.bytes, fds), e.bytes, "<-");
    }
    return ok;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
        usage();
        return argc < 2 ? 2 : 0;
    }
    bool ok = true;
    for (int i = 1; i < argc; ++i) ok &= decode_file(argv[i]);
    return ok ? 0 : 1;
}
