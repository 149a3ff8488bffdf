#include <vvu/util/error_category.hpp>

#include <vvu/memory/error.hpp>
#include <vvu/protocol/frontend_error.hpp>
#include <vvu/ring/error.hpp>
#include <vvu/runtime/error.hpp>
#include <vvu/transport/error.hpp>
#include <vvu/wire/error.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <system_error>

namespace {

enum class sample_errc : int { first = 1, second };

constexpr const char* describe(sample_errc e) noexcept {
    switch (e) {
    case sample_errc::first: return "the first thing went wrong";
    case sample_errc::second: return "the second thing went wrong";
    }
    return "unknown sample error";
}

const std::error_category& sample_category() noexcept { return vvu::enum_category<sample_errc, "vvu.sample">::instance(); }

} // namespace

TEST_CASE("enum_category: name, messages, one instance", "[util]") {
    const std::error_category& c = sample_category();
    CHECK(std::string(c.name()) == "vvu.sample");
    CHECK(c.message(1) == "the first thing went wrong");
    CHECK(c.message(2) == "the second thing went wrong");
    CHECK(c.message(99) == "unknown sample error"); // a value outside the enum still reads
    CHECK(&c == &sample_category());
    CHECK(std::error_code(1, c) == std::error_code(1, sample_category()));
}

TEST_CASE("enum_category: every layer keeps its category name", "[util]") {
    using namespace vvu;
    CHECK(std::string(std::error_code(wire::errc::short_header).category().name()) == "vvu.wire");
    CHECK(std::string(std::error_code(memory::errc::overlap).category().name()) == "vvu.memory");
    CHECK(std::string(std::error_code(ring::errc::chain_loops).category().name()) == "vvu.ring");
    CHECK(std::string(std::error_code(transport::errc::stopped).category().name()) == "vvu.transport");
    CHECK(std::string(std::error_code(runtime::errc::stopped).category().name()) == "vvu.runtime");
    CHECK(std::string(std::error_code(protocol::frontend_errc::timed_out).category().name()) == "vvu.frontend");
    // The categories are distinct: the same value in two enums is two different errors.
    CHECK(std::error_code(transport::errc::disconnected) != std::error_code(runtime::errc::disconnected));
    CHECK(std::error_code(memory::errc::overlap).message() == "memory regions overlap");
    CHECK(std::error_code(transport::errc::timed_out).message() == "timed out");
}
