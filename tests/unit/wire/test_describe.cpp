// describe_entry: the one-line form of each message of a transcript, as vvu-decode and
// vvu-trace print it. A request id this codec does not know is printed raw and is not a
// failure; a known request that breaks the rules is printed raw as MALFORMED; the back-end
// channel's messages ("b<" / "b>") decode against the back-end's request set.
#include "bytes.hpp"

#include <vvu/wire/format.hpp>
#include <vvu/wire/transcript.hpp>

#include <catch2/catch.hpp>

#include <string>

using namespace vvu::wire;
using vvu::test::le_bytes;

namespace {

using verdict = entry_description::verdict;

std::string hex(const std::vector<std::byte>& bytes) {
    std::string s;
    static constexpr char digits[] = "0123456789abcdef";
    for (std::byte b : bytes) {
        s += digits[static_cast<unsigned>(b) >> 4];
        s += digits[static_cast<unsigned>(b) & 0xf];
    }
    return s;
}

} // namespace

TEST_CASE("a transcript with an unknown request decodes and prints it raw", "[wire][describe]") {
    const auto unknown = le_bytes{}.header(99, 1, 4).u32(0xdeadbeef).get();
    const auto get_features = le_bytes{}.header(1, 1, 0).get();
    const auto reply = le_bytes{}.header(1, 5, 8).u64(0x1'0000'0000).get();
    const std::string text = "# a newer front-end\n> 0 " + hex(get_features) + "\n< 0 " + hex(reply) + "\n> 2 " +
                             hex(unknown) + "\n";
    auto entries = parse_transcript(text);
    REQUIRE(entries);
    REQUIRE(entries->size() == 3);

    const auto first = describe_entry((*entries)[0]);
    CHECK(first.result == verdict::decoded);
    CHECK(first.re_encodes);
    CHECK(first.text == "-> GET_FEATURES");
    CHECK(describe_entry((*entries)[1]).text == "<- reply GET_FEATURES u64=0x100000000");

    const auto raw = describe_entry((*entries)[2]);
    CHECK(raw.result == verdict::unknown_request);
    CHECK(raw.text == "-> UNKNOWN request=99 flags=0x1 size=4 fds=2 raw=6300000001000000040000" "00efbeadde");
}

TEST_CASE("a known request that breaks the rules is printed raw as MALFORMED", "[wire][describe]") {
    // SET_VRING_KICK without its fd and without NOFD.
    const auto kick = le_bytes{}.header(12, 1, 8).u64(0).get();
    const auto d = describe_entry(transcript_entry::from::front_end, transcript_entry::channel::main, kick, 0);
    CHECK(d.result == verdict::malformed);
    CHECK(d.text == "-> MALFORMED (" + d.reason + ") request=12 flags=0x1 size=8 fds=0 raw=" + hex(kick));
    CHECK(d.reason.find("SET_VRING_KICK") != std::string::npos);
    // Fewer than 12 bytes: no header to show.
    const auto stub = le_bytes{}.u32(1).get();
    CHECK(describe_entry(transcript_entry::from::front_end, transcript_entry::channel::main, stub, 0).text ==
          "-> MALFORMED (" + describe_entry(transcript_entry::from::front_end, transcript_entry::channel::main, stub, 0).reason +
              ") short=4 fds=0 raw=01000000");
}

TEST_CASE("the back-end channel: b< requests and b> replies, with their own arrows", "[wire][describe]") {
    const auto unmap = le_bytes{}.header(10, 1 | 8, 40).u8(1).zeros(7).u64(0).u64(0x1000).u64(0x1000).u64(0).get();
    const auto ack = le_bytes{}.header(10, 5, 8).u64(0).get();
    const std::string text = "b< 0 " + hex(unmap) + "\nb> 0 " + hex(ack) + "\n";
    auto entries = parse_transcript(text);
    REQUIRE(entries);
    REQUIRE(entries->size() == 2);
    CHECK((*entries)[0].chan == transcript_entry::channel::backend);
    CHECK((*entries)[0].sender == transcript_entry::from::back_end);
    CHECK((*entries)[1].sender == transcript_entry::from::front_end);
    CHECK(describe_entry((*entries)[0]).text ==
          "<= BACKEND_SHMEM_UNMAP need_reply shmid=1 fd_offset=0x0 shm_offset=0x1000 len=0x1000 flags=0x0");
    CHECK(describe_entry((*entries)[1]).text == "=> reply BACKEND_SHMEM_UNMAP u64=0x0");
    // Written back, each entry gives its own line.
    CHECK(transcript_line((*entries)[0].sender, 0, (*entries)[0].bytes, (*entries)[0].chan) == "b< 0 " + hex(unmap));
    CHECK(transcript_line((*entries)[1].sender, 0, (*entries)[1].bytes, (*entries)[1].chan) == "b> 0 " + hex(ack));
    CHECK(transcript_line(transcript_entry::from::front_end, 1, ack) == "> 1 " + hex(ack));
    // The main channel's requests are not the back-end channel's: id 10 there is SET_VRING_BASE.
    CHECK(describe_entry(transcript_entry::from::front_end, transcript_entry::channel::main,
                         le_bytes{}.header(10, 1, 8).u32(0).u32(5).get(), 0)
              .text == "-> SET_VRING_BASE index=0 num=5");
}

TEST_CASE("a direction tag the format does not have is refused", "[wire][describe]") {
    CHECK(parse_transcript("c< 0 00\n").error().line == 1);
    CHECK(parse_transcript("\n\nb 0 00\n").error().line == 3);
}
