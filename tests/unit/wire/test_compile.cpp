#include <vvu/wire/wire.hpp>
#include <catch2/catch.hpp>
using namespace vvu::wire;
TEST_CASE("wire smoke") {
    message<front_request::get_features> m;
    auto f = encode(m);
    REQUIRE(f);
    auto d = decode<front_request>(f->bytes(), {});
    REQUIRE(d);
    CHECK(std::get<0>(*d) == m);
}
