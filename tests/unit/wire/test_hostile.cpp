// Hostile input: one test per class of malformed message, each asserting the precise error.
#include <vvu/wire/codec.hpp>

#include "bytes.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace vvu::wire;
using vvu::test::le_bytes;

namespace {

constexpr std::uint32_t v1 = flags::version;

template <request_id R = front_request>
error decode_error(const std::vector<std::byte>& bytes, std::vector<int> fds = {}) {
    auto m = decode<R>(bytes, fds);
    REQUIRE_FALSE(m);
    return m.error();
}

le_bytes mem_table_header(std::uint32_t nregions, std::uint32_t size) {
    le_bytes b;
    b.header(5, v1, size).u32(nregions).u32(0);
    return b;
}

} // namespace

TEST_CASE("hostile: a message shorter than the header", "[wire][hostile]") {
    const std::vector<std::byte> full = le_bytes{}.header(1, v1, 0);
    for (std::size_t n = 0; n < header_size; ++n) {
        auto e = decode_error({full.begin(), full.begin() + static_cast<long>(n)});
        CHECK(e.code == errc::short_header);
        CHECK(e.got == n);
    }
}

TEST_CASE("hostile: version bits other than 1", "[wire][hostile]") {
    for (std::uint32_t version : {0u, 2u, 3u}) {
        auto e = decode_error(le_bytes{}.header(1, version, 0));
        CHECK(e.code == errc::bad_version);
        CHECK(e.got == version);
        CHECK(e.message() == "GET_FEATURES: unsupported version in flags (must be 0x1) (got " + std::to_string(version) +
                                 ", want 1)");
    }
}

TEST_CASE("hostile: REPLY flag on a request", "[wire][hostile]") {
    auto e = decode_error(le_bytes{}.header(1, v1 | flags::reply, 0));
    CHECK(e.code == errc::unexpected_reply_flag);
    CHECK(e.request == 1);
    auto b = decode_error<back_request>(le_bytes{}.header(2, v1 | flags::reply, 0));
    CHECK(b.code == errc::unexpected_reply_flag);
    CHECK(b.chan == channel::back);
}

TEST_CASE("hostile: a reply without REPLY, or for another request", "[wire][hostile]") {
    auto missing = decode_reply<front_request::get_features>(le_bytes{}.header(1, v1, 8).u64(0).get(), {});
    REQUIRE_FALSE(missing);
    CHECK(missing.error().code == errc::missing_reply_flag);
    auto other = decode_reply<front_request::get_features>(le_bytes{}.header(15, v1 | flags::reply, 8).u64(0).get(), {});
    REQUIRE_FALSE(other);
    CHECK(other.error().code == errc::mismatched_reply);
    CHECK(other.error().got == 15);
    CHECK(other.error().want == 1);
}

TEST_CASE("hostile: unknown request ids", "[wire][hostile]") {
    for (std::uint32_t id : {0u, 45u, 46u, 1000u, 0xffff'ffffu}) {
        auto e = decode_error(le_bytes{}.header(id, v1, 0));
        CHECK(e.code == errc::unknown_request);
        CHECK(e.request == id);
    }
    CHECK(decode_error<back_request>(le_bytes{}.header(11, v1, 0)).code == errc::unknown_request);
    CHECK(decode_error(le_bytes{}.header(45, v1, 0)).message() == "UNKNOWN: unknown request (id 45)");
}

TEST_CASE("hostile: payload size above the maximum is refused from the header alone", "[wire][hostile]") {
    for (std::uint32_t size : {static_cast<std::uint32_t>(max_payload_size + 1), 0x10000u, 0xffff'ffffu}) {
        auto e = decode_error(le_bytes{}.header(5, v1, size));
        CHECK(e.code == errc::payload_too_large);
        CHECK(e.got == size);
        CHECK(e.want == max_payload_size);
        auto h = check_header<front_request>(header{5, v1, size});
        REQUIRE_FALSE(h);
        CHECK(h.error().code == errc::payload_too_large);
    }
    CHECK(check_header<front_request>(header{5, v1, 8 + 32}));
}

TEST_CASE("hostile: fewer or more bytes than the header announces", "[wire][hostile]") {
    auto truncated = decode_error(le_bytes{}.header(2, v1, 8).u32(0));
    CHECK(truncated.code == errc::truncated_payload);
    CHECK(truncated.got == 4);
    CHECK(truncated.want == 8);
    auto trailing = decode_error(le_bytes{}.header(2, v1, 8).u64(0).u8(0));
    CHECK(trailing.code == errc::trailing_bytes);
}

TEST_CASE("hostile: payload size that does not fit the request", "[wire][hostile]") {
    struct sized {
        std::uint32_t id;
        std::uint32_t bad_size;
        std::uint64_t want;
    };
    for (auto [id, size, want] : {sized{1, 8, 0}, sized{2, 4, 8}, sized{2, 16, 8}, sized{8, 4, 8}, sized{9, 32, 40},
                                  sized{12, 4, 8}, sized{22, 26, 32}, sized{26, 600, 632}, sized{31, 20, 24},
                                  sized{37, 32, 40}, sized{41, 8, 16}, sized{42, 4, 8}, sized{3, 8, 0}}) {
        INFO("request " << id << " size " << size);
        le_bytes b;
        b.header(id, v1, size).zeros(size);
        // Fds that the request would want, so that only the size is wrong.
        std::vector<int> fds;
        if (id == 37 || id == 42) fds = {5};
        if (id == 12) fds = {5};
        auto e = decode_error(b, fds);
        CHECK(e.code == errc::bad_payload_size);
        CHECK(e.got == size);
        CHECK(e.want == want);
    }
}

TEST_CASE("hostile: SET_MEM_TABLE size inconsistent with nregions", "[wire][hostile]") {
    // Says two regions, carries one.
    auto b = mem_table_header(2, 8 + 32);
    b.u64(0).u64(0x1000).u64(0x7000'0000).u64(0);
    auto e = decode_error(b, {3, 4});
    CHECK(e.code == errc::bad_payload_size);
    CHECK(e.got == 40);
    CHECK(e.want == 72);
    CHECK(e.message() == "SET_MEM_TABLE: payload size does not match the request (got 40, want 72)");
    // Shorter than its fixed part.
    CHECK(decode_error(le_bytes{}.header(5, v1, 4).u32(1)).code == errc::bad_payload_size);
}

TEST_CASE("hostile: more than 8 memory regions", "[wire][hostile]") {
    auto b = mem_table_header(9, 8 + 9 * 32);
    for (int i = 0; i < 9; ++i) b.u64(i * 0x1000ull).u64(0x1000).u64(0x7000'0000ull + i * 0x1000ull).u64(0);
    auto e = decode_error(b, {3, 4, 5, 6, 7, 8, 9, 10});
    CHECK(e.code == errc::bad_count);
    CHECK(e.got == 9);
    CHECK(e.want == 8);
}

TEST_CASE("hostile: config size over 256 or inconsistent with the payload", "[wire][hostile]") {
    auto over = decode_error(le_bytes{}.header(25, v1, 12 + 300).u32(0).u32(300).u32(0).zeros(300));
    CHECK(over.code == errc::bad_count);
    CHECK(over.got == 300);
    auto mismatch = decode_error(le_bytes{}.header(25, v1, 12 + 8).u32(0).u32(6).u32(0).zeros(8));
    CHECK(mismatch.code == errc::bad_payload_size);
    CHECK(mismatch.want == 18);
}

TEST_CASE("hostile: memory regions that wrap the address space or are empty", "[wire][hostile]") {
    auto table = [](std::uint64_t gpa, std::uint64_t size, std::uint64_t uaddr, std::uint64_t offset) {
        auto b = mem_table_header(1, 40);
        b.u64(gpa).u64(size).u64(uaddr).u64(offset);
        return b.get();
    };
    CHECK(decode_error(table(0xffff'ffff'ffff'f000, 0x2000, 0x1000, 0), {3}).code == errc::region_wraps);
    CHECK(decode_error(table(0, 0x2000, 0xffff'ffff'ffff'f000, 0), {3}).code == errc::region_wraps);
    CHECK(decode_error(table(0, 0x2000, 0x1000, 0xffff'ffff'ffff'ffff), {3}).code == errc::region_wraps);
    CHECK(decode_error(table(0, 0, 0x1000, 0), {3}).code == errc::empty_region);
    // The last byte of the address space is a valid end.
    CHECK(decode<front_request>(table(0xffff'ffff'ffff'f000, 0x1000, 0x1000, 0), std::vector<int>{3}));
    // ADD_MEM_REG is held to the same rule.
    auto add = decode_error(le_bytes{}.header(37, v1, 40).u64(0).u64(0xffff'ffff'ffff'ffff).u64(2).u64(0).u64(0), {3});
    CHECK(add.code == errc::region_wraps);
    CHECK(add.message() == "ADD_MEM_REG: address range wraps around 2^64");
    // As are the log, inflight and IOTLB ranges.
    CHECK(decode_error(le_bytes{}.header(6, v1, 16).u64(2).u64(~0ull), {3}).code == errc::region_wraps);
    CHECK(decode_error(le_bytes{}.header(22, v1, 32).u64(~0ull).u64(2).u64(0).u8(1).u8(2).zeros(6)).code ==
          errc::region_wraps);
}

TEST_CASE("hostile: fds where none are allowed", "[wire][hostile]") {
    auto e = decode_error(le_bytes{}.header(1, v1, 0), {5});
    CHECK(e.code == errc::unexpected_fds);
    CHECK(e.got == 1);
    CHECK(e.message() == "GET_FEATURES: file descriptors where none are allowed (got 1, want 0)");
    // SET_VRING_KICK that says "no fd" but brings one.
    CHECK(decode_error(le_bytes{}.header(12, v1, 8).u64(0x100), {5}).code == errc::unexpected_fds);
}

TEST_CASE("hostile: too few fds", "[wire][hostile]") {
    auto b = mem_table_header(2, 72);
    b.u64(0).u64(0x1000).u64(0x7000'0000).u64(0).u64(0x1000).u64(0x1000).u64(0x7000'1000).u64(0);
    auto e = decode_error(b, {3});
    CHECK(e.code == errc::missing_fd);
    CHECK(e.got == 1);
    CHECK(e.want == 2);
    CHECK(decode_error(le_bytes{}.header(12, v1, 8).u64(0)).code == errc::missing_fd);
    CHECK(decode_error(le_bytes{}.header(21, v1, 0)).code == errc::missing_fd);
    CHECK(decode_error(le_bytes{}.header(37, v1, 40).u64(0).u64(0).u64(0x1000).u64(0x1000).u64(0)).code ==
          errc::missing_fd);
}

TEST_CASE("hostile: too many fds", "[wire][hostile]") {
    auto b = mem_table_header(2, 72);
    b.u64(0).u64(0x1000).u64(0x7000'0000).u64(0).u64(0x1000).u64(0x1000).u64(0x7000'1000).u64(0);
    CHECK(decode_error(b, {3, 4, 5}).code == errc::too_many_fds);
    CHECK(decode_error(le_bytes{}.header(13, v1, 8).u64(0), {3, 4}).code == errc::too_many_fds);
    CHECK(decode_error(le_bytes{}.header(38, v1, 40).u64(0).u64(0).u64(0x1000).u64(0x1000).u64(0), {3, 4}).code ==
          errc::too_many_fds);
    // More than any message may carry.
    auto nine = decode_error(le_bytes{}.header(7, v1, 0), {1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(nine.code == errc::too_many_fds);
    CHECK(nine.want == max_fds);
}

TEST_CASE("hostile: encode refuses what decode would refuse", "[wire][hostile]") {
    message<front_request::set_mem_table> too_many;
    too_many.payload.nregions = 9;
    CHECK(encode(too_many).error().code == errc::bad_count);

    message<front_request::set_mem_table> missing;
    missing.payload.nregions = 1;
    missing.payload.regions[0] = {0, 0x1000, 0x1000, 0};
    CHECK(encode(missing).error().code == errc::missing_fd);

    message<front_request::set_vring_kick> kick; // index 0 with an fd, but none given
    CHECK(encode(kick).error().code == errc::missing_fd);

    message<front_request::get_features> with_reply_flag;
    with_reply_flag.flags |= flags::reply;
    CHECK(encode(with_reply_flag).error().code == errc::unexpected_reply_flag);

    reply<front_request::get_features> without_reply_flag;
    without_reply_flag.flags = flags::version;
    CHECK(encode(without_reply_flag).error().code == errc::missing_reply_flag);

    message<front_request::set_config> big;
    big.payload.size = 257;
    CHECK(encode(big).error().code == errc::bad_count);
}

TEST_CASE("errors travel as std::error_code", "[wire][hostile]") {
    std::error_code ec = errc::too_many_fds;
    CHECK(ec.category().name() == std::string("vvu.wire"));
    CHECK(ec.message() == "too many file descriptors");
    error e{errc::missing_fd, channel::back, 3, 0, 1};
    CHECK(e.ec() == errc::missing_fd);
    CHECK(e.message() == "BACKEND_VRING_HOST_NOTIFIER_MSG: missing file descriptor (got 0, want 1)");
}
