// transport::frontend_socket: the front-end's end of a vhost-user UNIX socket — connect with
// retries, listen for one back-end, and the errors of each.
#include <vvu/transport/frontend_socket.hpp>

#include <vvu/protocol/frontend_channel.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>
#include <future>
#include <string>
#include <system_error>
#include <thread>

using namespace vvu;
using namespace std::chrono_literals;
using transport::errc;
using transport::frontend_socket;

static_assert(protocol::frontend_channel<frontend_socket>);

namespace {

struct scratch_dir {
    std::filesystem::path path;
    scratch_dir() {
        char tmpl[] = "/tmp/vvu-frontend-socket-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    [[nodiscard]] std::string sock() const { return (path / "vhost.sock").string(); }
};

} // namespace

TEST_CASE("frontend_socket: connect gives up after its timeout when nothing listens", "[transport]") {
    scratch_dir dir;
    auto s = frontend_socket::connect(dir.sock(), 50ms);
    REQUIRE_FALSE(s);
    CHECK(s.error().code == errc::timed_out);
    CHECK(s.error().message().find(dir.sock()) != std::string::npos);
}

TEST_CASE("frontend_socket: a path longer than sockaddr_un allows is refused", "[transport]") {
    const std::string long_path = "/tmp/" + std::string(200, 'x');
    auto c = frontend_socket::connect(long_path, 10ms);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == std::errc::filename_too_long);
    auto l = frontend_socket::listen(long_path, 10ms);
    REQUIRE_FALSE(l);
    CHECK(l.error().code == std::errc::filename_too_long);
}

TEST_CASE("frontend_socket: listen accepts one back-end, then unlinks the path", "[transport]") {
    scratch_dir dir;
    auto accepted = std::async(std::launch::async, [&] { return frontend_socket::listen(dir.sock(), 5s); });
    // connect retries while the listener is not bound yet.
    auto peer = frontend_socket::connect(dir.sock(), 5s);
    REQUIRE(peer);
    auto s = accepted.get();
    REQUIRE(s);
    CHECK(s->native_handle() >= 0);
    CHECK_FALSE(std::filesystem::exists(dir.sock()));
}

TEST_CASE("frontend_socket: listen times out without a back-end", "[transport]") {
    scratch_dir dir;
    auto s = frontend_socket::listen(dir.sock(), 20ms);
    REQUIRE_FALSE(s);
    CHECK(s.error().code == errc::timed_out);
    CHECK_FALSE(std::filesystem::exists(dir.sock()));
}
