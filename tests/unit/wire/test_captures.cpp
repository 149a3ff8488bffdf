// Real sessions captured from QEMU 7.2 and DPDK 22.11 (tests/captures/README.md says how):
// every message decodes, re-encodes to the very same bytes, and the sequences are the ones
// those peers are known to send.
#include <vvu/wire/codec.hpp>
#include <vvu/wire/transcript.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

using namespace vvu::wire;

namespace {

const std::filesystem::path captures = std::filesystem::path(VVU_TEST_DATA_DIR) / "captures";

std::vector<transcript_entry> load(const std::string& file) {
    std::ifstream in(captures / file);
    REQUIRE(in);
    std::stringstream text;
    text << in.rdbuf();
    auto entries = parse_transcript(text.str());
    if (!entries) FAIL(file << ":" << entries.error().line << ": " << entries.error().reason);
    REQUIRE_FALSE(entries->empty());
    return *entries;
}

// Decodes every entry, checks the byte-exact round trip, returns the request sequence of the
// front-end's messages.
std::vector<front_request> replay(const std::string& file) {
    std::vector<front_request> requests;
    for (const auto& e : load(file)) {
        INFO(file << ":" << e.line);
        const std::vector<int> fds(e.fd_count, 100); // the transcript keeps only the count
        if (e.sender == transcript_entry::from::front_end) {
            auto m = decode<front_request>(e.bytes, fds);
            if (!m) FAIL(m.error().message());
            auto again = encode(*m);
            REQUIRE(again);
            CHECK(std::ranges::equal(again->bytes(), e.bytes));
            CHECK(again->fds.size() == e.fd_count);
            requests.push_back(request_of(*m));
        } else {
            auto r = decode_any_reply<front_request>(e.bytes, fds);
            if (!r) FAIL(r.error().message());
            auto again = encode(*r);
            REQUIRE(again);
            CHECK(std::ranges::equal(again->bytes(), e.bytes));
            // A reply answers the request just before it.
            REQUIRE_FALSE(requests.empty());
            CHECK(request_of(*r) == requests.back());
        }
    }
    return requests;
}

template <auto R>
std::vector<message<R>> all_of(const std::string& file) {
    std::vector<message<R>> out;
    for (const auto& e : load(file)) {
        if (e.sender != transcript_entry::from::front_end) continue;
        const std::vector<int> fds(e.fd_count, 100);
        auto m = decode<front_request>(e.bytes, fds);
        REQUIRE(m);
        if (auto* typed = std::get_if<message<R>>(&*m)) out.push_back(*typed);
    }
    return out;
}

} // namespace

using fr = front_request;

TEST_CASE("captures: every captured message decodes and re-encodes byte for byte", "[wire][captures]") {
    std::size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(captures)) {
        if (entry.path().extension() != ".vhu") continue;
        ++files;
        replay(entry.path().filename().string());
    }
    CHECK(files >= 5);
}

TEST_CASE("captures: QEMU 7.2 -netdev vhost-user opening sequence", "[wire][captures]") {
    const std::vector<fr> expected{fr::get_features,      fr::get_protocol_features, fr::set_protocol_features,
                                   fr::get_queue_num,     fr::set_backend_req_fd,    fr::set_owner,
                                   fr::get_features,      fr::set_vring_call,        fr::set_vring_err,
                                   fr::set_vring_call,    fr::set_vring_err,         fr::set_vring_enable,
                                   fr::set_vring_enable};
    CHECK(replay("qemu-7.2-net-opening.vhu") == expected);
    // QEMU asks for an ack of SET_BACKEND_REQ_FD (REPLY_ACK was offered).
    auto backend_fd = all_of<fr::set_backend_req_fd>("qemu-7.2-net-opening.vhu");
    REQUIRE(backend_fd.size() == 1);
    CHECK(backend_fd[0].need_reply());
    CHECK(backend_fd[0].fds.size() == 1);
}

TEST_CASE("captures: DPDK 22.11 virtio-user split ring setup", "[wire][captures]") {
    const auto requests = replay("dpdk-22.11-virtio-user-split.vhu");
    REQUIRE(requests.size() >= 2);
    CHECK(requests.front() == fr::set_owner);
    auto tables = all_of<fr::set_mem_table>("dpdk-22.11-virtio-user-split.vhu");
    REQUIRE(tables.size() == 1);
    CHECK(tables[0].payload.nregions >= 1);
    CHECK(tables[0].fds.size() == tables[0].payload.nregions);
    CHECK(tables[0].need_reply());
    for (const auto& kick : all_of<fr::set_vring_kick>("dpdk-22.11-virtio-user-split.vhu")) {
        CHECK_FALSE(kick.payload.no_fd());
        CHECK(kick.fds.size() == 1);
    }
    for (const auto& num : all_of<fr::set_vring_num>("dpdk-22.11-virtio-user-split.vhu")) CHECK(num.payload.num == 256);
    // Split ring: SET_VRING_BASE starts at avail index 0.
    for (const auto& base : all_of<fr::set_vring_base>("dpdk-22.11-virtio-user-split.vhu")) CHECK(base.payload.num == 0);
}

TEST_CASE("captures: DPDK 22.11 packed ring base carries the wrap counters", "[wire][captures]") {
    const auto bases = all_of<fr::set_vring_base>("dpdk-22.11-virtio-user-packed.vhu");
    REQUIRE(bases.size() == 2);
    for (const auto& base : bases) {
        const auto packed = packed_vring_base::from_num(base.payload.num);
        CHECK(packed.avail_index == 0);
        CHECK(packed.avail_wrap);
        CHECK(packed.used_index == 0);
        CHECK_FALSE(packed.used_wrap);
    }
}

TEST_CASE("captures: DPDK 22.11 two queue pairs set up four vrings", "[wire][captures]") {
    replay("dpdk-22.11-virtio-user-mq2.vhu");
    auto addrs = all_of<fr::set_vring_addr>("dpdk-22.11-virtio-user-mq2.vhu");
    std::vector<std::uint32_t> indices;
    for (const auto& a : addrs) indices.push_back(a.payload.index);
    std::ranges::sort(indices);
    CHECK(indices == std::vector<std::uint32_t>{0, 1, 2, 3});
}

TEST_CASE("captures: DPDK 22.11 stopping the port reads each vring base", "[wire][captures]") {
    const auto requests = replay("dpdk-22.11-virtio-user-split-stop.vhu");
    CHECK(std::ranges::count(requests, fr::get_vring_base) == 2);
}

TEST_CASE("transcript: malformed lines are reported with their line number", "[wire][transcript]") {
    CHECK(parse_transcript("# c\n> 0 0100\n")->size() == 1);
    CHECK(parse_transcript("\n\n= 0 00\n").error().line == 3);
    CHECK(parse_transcript("> x 00\n").error().reason == "bad fd count 'x'");
    CHECK(parse_transcript("> 0 0g\n").error().reason == "bad hex digit");
    CHECK(parse_transcript("> 0 012\n").error().reason == "odd number of hex digits");
    CHECK(parse_transcript("> 0 00 extra\n").error().reason == "trailing text");
    const std::vector<std::byte> bytes{std::byte{0x01}, std::byte{0xab}};
    CHECK(transcript_line(transcript_entry::from::back_end, 2, bytes) == "< 2 01ab");
}
