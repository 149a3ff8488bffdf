// transport::handover_socket: records with fds cross intact; a peer that sends garbage, another
// version, a lying fd count, an oversized payload or half a record gets a precise error, and
// every fd that came with a refused record is closed.
#include <vvu/transport/handover_socket.hpp>
#include <vvu/util/endian.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <array>

using namespace vvu;
using namespace std::chrono_literals;
using transport::handover_socket;

namespace {

std::pair<unique_fd, unique_fd> pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    return {unique_fd(sv[0]), unique_fd(sv[1])};
}

// A raw record header: magic, version, type, size, fds.
std::array<std::byte, 16> header(std::uint32_t magic, std::uint16_t version, std::uint16_t type, std::uint32_t size,
                                 std::uint32_t fds) {
    std::array<std::byte, 16> h{};
    le::store<std::uint32_t>(h.data(), magic);
    le::store<std::uint16_t>(h.data() + 4, version);
    le::store<std::uint16_t>(h.data() + 6, type);
    le::store<std::uint32_t>(h.data() + 8, size);
    le::store<std::uint32_t>(h.data() + 12, fds);
    return h;
}

void send_raw(int sock, std::span<const std::byte> bytes, std::span<const int> fds = {}) {
    const iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    REQUIRE(scm::send_some(sock, std::span(&iov, 1), fds) == static_cast<ssize_t>(bytes.size()));
}

// Open fds of this process (to check that refused records leak none).
std::size_t open_fds() {
    std::size_t n = 0;
    for (int fd = 0; fd < 4096; ++fd)
        if (::fcntl(fd, F_GETFD) != -1) ++n;
    return n;
}

} // namespace

TEST_CASE("a hand-over record with fds crosses intact", "[runtime][handover_socket]") {
    auto [a, b] = pair();
    handover_socket sa(std::move(a)), sb(std::move(b));
    unique_fd e1(::eventfd(5, EFD_CLOEXEC)), e2(::eventfd(7, EFD_CLOEXEC));
    const std::array<int, 2> fds{e1.get(), e2.get()};
    std::vector<std::byte> payload(100000, std::byte{0x5a});
    REQUIRE(sa.send(3, payload, fds, 1s));
    auto r = sb.receive(1s);
    REQUIRE(r);
    CHECK(r->type == 3);
    CHECK(r->payload == payload);
    REQUIRE(r->fds.size() == 2);
    std::uint64_t v = 0;
    REQUIRE(::read(r->fds[1].get(), &v, sizeof v) == sizeof v);
    CHECK(v == 7); // the same eventfd, not a copy
}

TEST_CASE("hostile hand-over records are refused", "[runtime][handover_socket][hostile]") {
    auto [a, b] = pair();
    handover_socket receiver(std::move(b));
    const std::size_t fds_before = open_fds();
    SECTION("garbage") {
        const std::string text = "GET / HTTP/1.1\r\n\r\n";
        send_raw(a.get(), std::as_bytes(std::span(text)));
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::malformed);
        CHECK(r.error().message() == "not a vvu hand-over record (bad magic)");
    }
    SECTION("another version") {
        auto h = header(handover_socket::magic, 9, 1, 0, 0);
        send_raw(a.get(), h);
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::unsupported_version);
        CHECK(r.error().message() == "hand-over protocol version 9 (this build speaks version 2)");
    }
    SECTION("fewer fds than announced") {
        unique_fd e(::eventfd(0, EFD_CLOEXEC));
        const int fd = e.get();
        auto h = header(handover_socket::magic, handover_socket::version, 1, 0, 2);
        send_raw(a.get(), h, std::span(&fd, 1));
        e.reset();
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::malformed);
        CHECK(r.error().message() == "record announces 2 fds, 1 came");
    }
    SECTION("fds in the middle of a record") {
        auto h = header(handover_socket::magic, handover_socket::version, 1, 8, 0);
        send_raw(a.get(), h);
        unique_fd e(::eventfd(0, EFD_CLOEXEC));
        const int fd = e.get();
        const std::array<std::byte, 8> rest{};
        send_raw(a.get(), rest, std::span(&fd, 1));
        e.reset();
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().message() == "file descriptors in the middle of a record");
    }
    SECTION("a payload over the limit") {
        auto h = header(handover_socket::magic, handover_socket::version, 1, handover_socket::max_payload + 1, 0);
        send_raw(a.get(), h);
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::malformed);
    }
    SECTION("half a record, then the peer goes") {
        auto h = header(handover_socket::magic, handover_socket::version, 1, 64, 0);
        send_raw(a.get(), h);
        a.reset();
        auto r = receiver.receive(1s);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::truncated);
    }
    SECTION("half a record, then silence: bounded") {
        auto h = header(handover_socket::magic, handover_socket::version, 1, 64, 0);
        send_raw(a.get(), h);
        auto r = receiver.receive(100ms);
        REQUIRE(!r);
        CHECK(r.error().code == transport::errc::timed_out);
    }
    CHECK(open_fds() <= fds_before); // every fd of a refused record was closed
}
