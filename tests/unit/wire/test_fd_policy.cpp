// fd_policy::stripped: messages whose fds a transport kept (virtio-vhost-user) decode without
// them, and a stray fd is still refused.
#include "bytes.hpp"

#include <vvu/wire/codec.hpp>

#include <catch2/catch.hpp>

#include <array>

using namespace vvu::wire;
using vvu::test::le_bytes;

TEST_CASE("stripped fds: SET_VRING_KICK and SET_MEM_TABLE decode without their fds", "[wire][fd_policy]") {
    const auto kick = le_bytes().header(12, 1, 8).u64(3).get(); // vring 3, an fd expected
    CHECK_FALSE(decode<front_request>(kick, {}).has_value());
    auto m = decode<front_request>(kick, {}, fd_policy::stripped);
    REQUIRE(m);
    CHECK(std::get<message<front_request::set_vring_kick>>(*m).payload.index() == 3);

    le_bytes table;
    table.header(5, 1, 8 + 32).u32(1).u32(0).u64(0x1000).u64(0x2000).u64(0x7f00'0000'0000).u64(0);
    const auto bytes = table.get();
    CHECK(decode<front_request>(bytes, {}).error().code == errc::missing_fd);
    REQUIRE(decode<front_request>(bytes, {}, fd_policy::stripped));
}

TEST_CASE("stripped fds: an fd that does arrive is refused", "[wire][fd_policy]") {
    const auto kick = le_bytes().header(12, 1, 8).u64(0).get();
    const std::array<int, 1> one{7};
    auto m = decode<front_request>(kick, one, fd_policy::stripped);
    REQUIRE_FALSE(m);
    CHECK(m.error().code == errc::unexpected_fds);
}
