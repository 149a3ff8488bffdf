// vvu-decode: prints a vhost-user session transcript (tests/captures/*.vhu, vvu-trace --capture)
// in human form, decoding every message with vvu's wire codec and checking that it re-encodes
// to the very same bytes. A request id the codec does not know is printed raw. Exit status 1
// if a known message fails either way.
#include <vvu/wire/wire.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace {

void usage() {
    std::fputs("usage: vvu-decode FILE.vhu...\n"
               "Decodes each message of a vhost-user session transcript ('> NFDS HEX' from the\n"
               "front-end, '< NFDS HEX' from the back-end, 'b<' / 'b>' the same on the back-end\n"
               "channel) and prints it, one line per message; unknown requests are printed raw.\n",
               stderr);
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
    for (const auto& e : *entries) {
        // An unknown request is printed raw and is no failure: a newer peer may send requests
        // this codec does not know yet. A known request that does not decode, or that does not
        // re-encode to the same bytes, is.
        const auto d = vvu::wire::describe_entry(e);
        fmt::print("  {}\n", d.text);
        ok &= d.result != vvu::wire::entry_description::verdict::malformed && d.re_encodes;
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
