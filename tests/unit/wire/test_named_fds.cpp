// wire::named_fds: how many fds a request names, what a transport that keeps the fds itself
// (virtio-vhost-user) stands in for with invalid fds; decode then takes the message as sent.
#include "bytes.hpp"

#include <vvu/wire/codec.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <vector>

using namespace vvu::wire;
using vvu::test::le_bytes;

TEST_CASE("named fds: per request, from the payload", "[wire][named_fds]") {
    const auto kick = le_bytes().header(12, 1, 8).u64(3).get();              // vring 3, an fd
    const auto kick_nofd = le_bytes().header(12, 1, 8).u64(3 | 0x100).get(); // NOFD: none
    CHECK(named_fds<front_request>(kick).value() == 1u);
    CHECK(named_fds<front_request>(kick_nofd).value() == 0u);
    le_bytes table;
    table.header(5, 1, 8 + 2 * 32).u32(2).u32(0);
    for (int i = 0; i < 2; ++i) table.u64(0x1000 * (i + 1)).u64(0x1000).u64(0x7f00'0000'0000).u64(0);
    CHECK(named_fds<front_request>(table.get()).value() == 2u);
    CHECK(named_fds<front_request>(le_bytes().header(1, 1, 0).get()).value() == 0u); // GET_FEATURES
}

TEST_CASE("named fds: invalid fds stand in for kept ones, and decode takes them", "[wire][named_fds]") {
    const auto kick = le_bytes().header(12, 1, 8).u64(3).get();
    CHECK(decode<front_request>(kick, {}).error().code == errc::missing_fd);
    const std::array<int, 1> stand_in{-1};
    auto m = decode<front_request>(kick, stand_in);
    REQUIRE(m);
    CHECK(std::get<message<front_request::set_vring_kick>>(*m).payload.index() == 3);
    // More fds than named are still refused.
    const std::array<int, 2> two{-1, -1};
    CHECK(decode<front_request>(kick, two).error().code == errc::too_many_fds);
}

TEST_CASE("named fds: malformed bytes are refused as decode refuses them", "[wire][named_fds]") {
    CHECK(named_fds<front_request>(le_bytes().header(12, 1, 4).u32(3).get()).error().code ==
          decode<front_request>(le_bytes().header(12, 1, 4).u32(3).get(), {}).error().code);
    CHECK(named_fds<front_request>(le_bytes().header(999, 1, 0).get()).error().code == errc::unknown_request);
    CHECK(named_fds<front_request>(le_bytes().header(1, 1 | 4, 0).get()).error().code == errc::unexpected_reply_flag);
}
