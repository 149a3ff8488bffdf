#include <vvu/transport/framed_socket.hpp>

#include <vvu/util/eventfd.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

using namespace vvu;
using namespace std::chrono_literals;
using transport::errc;
using transport::framed_socket;

namespace {

int open_fd_count() {
    int n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

std::pair<framed_socket, framed_socket> socket_pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    return {framed_socket(unique_fd(sv[0])), framed_socket(unique_fd(sv[1]))};
}

unique_fd make_memfd(std::size_t size) {
    unique_fd fd(::memfd_create("vvu-transport-test", MFD_CLOEXEC));
    REQUIRE(fd.valid());
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    return fd;
}

// sendmsg with any number of fds, bypassing framed_socket's own limit (no Catch2 assertion:
// it runs on helper threads too).
bool raw_send(int sock, std::span<const std::byte> bytes, const std::vector<int>& fds) {
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

std::array<std::byte, 12> header_bytes(std::uint32_t request, std::uint32_t size, std::uint32_t flags = 1) {
    std::array<std::byte, 12> h{};
    wire::store_header({request, flags, size}, h);
    return h;
}

} // namespace

TEST_CASE("messages with 0, 1 and 8 fds; fd contents survive", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;

    SECTION("no fds") {
        auto f = wire::encode(wire::message<wire::front_request::get_features>{});
        REQUIRE(f);
        REQUIRE(a.send(*f));
        auto m = b.receive(wire::channel::front, 2s);
        REQUIRE(m);
        CHECK(m->header.request == 1);
        CHECK(m->header.size == 0);
        CHECK(m->fds.empty());
        CHECK(wire::decode<wire::front_request>(m->bytes(), m->fds.span()));
    }
    SECTION("one eventfd: a signal on one side is seen on the other") {
        auto kick = eventfd_notifier::create();
        REQUIRE(kick);
        wire::message<wire::front_request::set_vring_kick> msg;
        msg.payload.value = 3;
        msg.fds = {kick->native_handle()};
        auto f = wire::encode(msg);
        REQUIRE(f);
        REQUIRE(a.send(*f));
        auto m = b.receive(wire::channel::front, 2s);
        REQUIRE(m);
        REQUIRE(m->fds.size() == 1);
        auto decoded = wire::decode<wire::front_request>(m->bytes(), m->fds.span());
        REQUIRE(decoded);
        CHECK(m->fds[0] != kick->native_handle());
        eventfd_notifier received(m->fds.take(0));
        CHECK_FALSE(received.drain());
        kick->signal();
        CHECK(received.wait(2s));
        CHECK_FALSE(received.drain());
        CHECK(m->fds.span()[0] == -1);
    }
    SECTION("eight memfds: bytes written through one side are read through the other") {
        wire::message<wire::front_request::set_mem_table> msg;
        msg.payload.nregions = 8;
        std::vector<unique_fd> mine;
        for (std::uint32_t i = 0; i < 8; ++i) {
            mine.push_back(make_memfd(4096));
            REQUIRE(::pwrite(mine.back().get(), &i, sizeof i, 100) == sizeof i);
            msg.payload.regions[i] = {i * 0x10000ull, 4096, 0x7f0000000000ull + i * 0x10000ull, 0};
            msg.fds.push_back(mine.back().get());
        }
        auto f = wire::encode(msg);
        REQUIRE(f);
        REQUIRE(a.send(*f));
        auto m = b.receive(wire::channel::front, 2s);
        REQUIRE(m);
        REQUIRE(m->fds.size() == 8);
        REQUIRE(wire::decode<wire::front_request>(m->bytes(), m->fds.span()));
        for (std::uint32_t i = 0; i < 8; ++i) {
            std::uint32_t v = 99;
            REQUIRE(::pread(m->fds[i], &v, sizeof v, 100) == sizeof v);
            CHECK(v == i);
        }
    }
}

TEST_CASE("no fd leaks across many messages", "[transport]") {
    const int before = open_fd_count();
    {
        auto sockets = socket_pair();
        auto& a = sockets.first;
        auto& b = sockets.second;
        auto ev = eventfd_notifier::create();
        REQUIRE(ev);
        for (int i = 0; i < 50; ++i) {
            wire::message<wire::front_request::set_vring_call> msg;
            msg.fds = {ev->native_handle()};
            REQUIRE(a.send(*wire::encode(msg)));
            auto m = b.receive(wire::channel::front, 2s);
            REQUIRE(m);
            CHECK(m->fds.size() == 1);
        }
    }
    CHECK(open_fd_count() == before);
}

TEST_CASE("more than 8 fds: error and every fd closed", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    std::vector<int> fds;
    for (int i = 0; i < 12; ++i) fds.push_back(::eventfd(0, EFD_CLOEXEC));
    wire::message<wire::front_request::set_mem_table> msg;
    auto f = wire::encode(msg);
    REQUIRE(f);
    const int before = open_fd_count();
    REQUIRE(raw_send(a.native_handle(), f->bytes(), fds));
    {
        auto m = b.receive(wire::channel::front, 2s);
        REQUIRE_FALSE(m);
        CHECK(m.error().code == errc::too_many_fds);
        CHECK(m.error().message() == "more file descriptors than a vhost-user message may carry");
    }
    CHECK(open_fd_count() == before);

    SECTION("also when they come with the second part of a message") {
        // 5 fds with the header, 5 more with the payload: 10 in one message.
        wire::message<wire::front_request::set_features> sf;
        auto g = wire::encode(sf);
        REQUIRE(g);
        auto bytes = g->bytes();
        auto [c, d] = socket_pair();
        const int n = open_fd_count();
        REQUIRE(raw_send(c.native_handle(), bytes.first(12), {fds[0], fds[1], fds[2], fds[3], fds[4]}));
        REQUIRE(raw_send(c.native_handle(), bytes.subspan(12), {fds[5], fds[6], fds[7], fds[8], fds[9]}));
        {
            auto m = d.receive(wire::channel::front, 2s);
            REQUIRE_FALSE(m);
            CHECK(m.error().code == errc::too_many_fds);
        }
        CHECK(open_fd_count() == n);
    }
    SECTION("framed_socket refuses to send more than 8") {
        CHECK(a.send(f->bytes(), fds).error().code == errc::too_many_fds);
    }
    for (int fd : fds) ::close(fd);
}

TEST_CASE("an oversize header is refused before its payload is read", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    auto h = header_bytes(1, 5000);
    REQUIRE(raw_send(a.native_handle(), h, {}));
    const std::array<std::byte, 4> tail{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
    REQUIRE(raw_send(a.native_handle(), tail, {}));
    auto m = b.receive(wire::channel::front, 2s);
    REQUIRE_FALSE(m);
    CHECK(m.error().code == wire::errc::payload_too_large);
    CHECK(m.error().wire.got == 5000);
    CHECK(m.error().message() == m.error().wire.message());
    // The payload bytes are still in the socket.
    std::array<std::byte, 8> rest{};
    CHECK(::recv(b.native_handle(), rest.data(), rest.size(), MSG_DONTWAIT) == 4);

    SECTION("unknown request and bad version are refused too") {
        auto [c, d] = socket_pair();
        REQUIRE(raw_send(c.native_handle(), header_bytes(999, 0), {}));
        CHECK(d.receive(wire::channel::front, 2s).error().code == wire::errc::unknown_request);
        auto [e, g] = socket_pair();
        REQUIRE(raw_send(e.native_handle(), header_bytes(1, 0, 2), {}));
        CHECK(g.receive(wire::channel::front, 2s).error().code == wire::errc::bad_version);
    }
}

TEST_CASE("partial reads: header and payload in pieces with pauses, fds mid-message", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    auto ev = eventfd_notifier::create();
    REQUIRE(ev);
    wire::message<wire::front_request::set_vring_addr> msg;
    msg.payload.index = 1;
    msg.payload.desc_user_addr = 0x1122334455667788;
    auto f = wire::encode(msg);
    REQUIRE(f);
    const auto bytes = f->bytes();
    const int peer = a.native_handle();
    const int efd = ev->native_handle();
    bool sent = true;
    std::thread writer([&] {
        sent = raw_send(peer, bytes.subspan(0, 5), {});
        std::this_thread::sleep_for(20ms);
        sent = sent && raw_send(peer, bytes.subspan(5, 7), {});
        std::this_thread::sleep_for(20ms);
        sent = sent && raw_send(peer, bytes.subspan(12, 10), {efd});
        std::this_thread::sleep_for(20ms);
        sent = sent && raw_send(peer, bytes.subspan(22), {});
    });
    auto m = b.receive(wire::channel::front, 5s);
    writer.join();
    CHECK(sent);
    REQUIRE(m);
    CHECK(m->fds.size() == 1);
    CHECK(std::ranges::equal(m->bytes(), bytes));
    auto d = wire::decode<wire::front_request>(m->bytes(), {});
    REQUIRE(d);
    CHECK(std::get<wire::message<wire::front_request::set_vring_addr>>(*d).payload == msg.payload);
}

TEST_CASE("two messages back to back are split exactly", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    wire::message<wire::front_request::set_features> m1;
    m1.payload.value = 0xabc;
    wire::message<wire::front_request::set_owner> m2;
    auto f1 = wire::encode(m1);
    auto f2 = wire::encode(m2);
    std::vector<std::byte> both(f1->bytes().begin(), f1->bytes().end());
    both.insert(both.end(), f2->bytes().begin(), f2->bytes().end());
    REQUIRE(raw_send(a.native_handle(), both, {}));
    auto r1 = b.receive(wire::channel::front, 2s);
    auto r2 = b.receive(wire::channel::front, 2s);
    REQUIRE(r1);
    REQUIRE(r2);
    CHECK(r1->header.request == 2);
    CHECK(r2->header.request == 3);
    CHECK(b.receive(wire::channel::front, 0ms).error().code == errc::timed_out);
}

TEST_CASE("peer close: disconnected between messages, truncated inside one", "[transport]") {
    SECTION("clean EOF") {
        auto sockets = socket_pair();
        auto& a = sockets.first;
        auto& b = sockets.second;
        a.close();
        auto m = b.receive(wire::channel::front, 2s);
        REQUIRE_FALSE(m);
        CHECK(m.error().code == errc::disconnected);
        CHECK(m.error().disconnected());
        CHECK(m.error().message() == "peer closed the connection");
    }
    SECTION("EOF inside the header") {
        auto sockets = socket_pair();
        auto& a = sockets.first;
        auto& b = sockets.second;
        const auto h = header_bytes(1, 0);
        REQUIRE(raw_send(a.native_handle(), std::span(h).first(6), {}));
        a.close();
        CHECK(b.receive(wire::channel::front, 2s).error().code == errc::truncated);
    }
    SECTION("EOF inside the payload") {
        auto sockets = socket_pair();
        auto& a = sockets.first;
        auto& b = sockets.second;
        REQUIRE(raw_send(a.native_handle(), header_bytes(2, 8), {}));
        a.close();
        auto m = b.receive(wire::channel::front, 2s);
        CHECK(m.error().code == errc::truncated);
        CHECK(m.error().disconnected());
    }
    SECTION("send to a closed peer") {
        auto sockets = socket_pair();
        auto& a = sockets.first;
        auto& b = sockets.second;
        b.close();
        auto f = wire::encode(wire::message<wire::front_request::get_features>{});
        CHECK(a.send(*f).error().code == errc::disconnected);
    }
    SECTION("no socket") {
        framed_socket none;
        CHECK(none.receive(wire::channel::front).error().code == errc::not_connected);
    }
}

TEST_CASE("partial writes: a full socket buffer drains while send() waits", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    int small = 1024;
    REQUIRE(::setsockopt(a.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    REQUIRE(::setsockopt(b.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    wire::message<wire::front_request::set_config> msg;
    msg.payload.size = 256;
    for (std::size_t i = 0; i < 256; ++i) msg.payload.region[i] = static_cast<std::uint8_t>(i);
    auto f = wire::encode(msg);
    REQUIRE(f);
    constexpr int count = 200; // far more than the buffers hold
    int sent = 0;
    std::thread writer([&] {
        for (int i = 0; i < count; ++i)
            if (a.send(*f, 5s)) ++sent;
    });
    int got = 0;
    for (; got < count; ++got) {
        auto m = b.receive(wire::channel::front, 5s);
        REQUIRE(m);
        REQUIRE(std::ranges::equal(m->bytes(), f->bytes()));
    }
    writer.join();
    CHECK(got == count);
    CHECK(sent == count);
}

TEST_CASE("a wake fd interrupts a blocked receive", "[transport]") {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    unique_fd peer(sv[0]);
    auto wake = eventfd_notifier::create();
    REQUIRE(wake);
    framed_socket s(unique_fd(sv[1]), wake->native_handle());
    std::thread stopper([&] { wake->signal(); });
    auto m = s.receive(wire::channel::front);
    stopper.join();
    CHECK(m.error().code == errc::stopped);
}

TEST_CASE("partial writes: a large frame goes out in pieces, its fds only once", "[transport]") {
    auto sockets = socket_pair();
    auto& a = sockets.first;
    auto& b = sockets.second;
    std::vector<std::byte> big(256 * 1024);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7);
    auto ev = eventfd_notifier::create();
    REQUIRE(ev);
    const int efd = ev->native_handle();
    bool sent = false;
    std::thread writer([&] { sent = a.send(big, std::span(&efd, 1), 10s).has_value(); });
    std::vector<std::byte> got;
    int fds_seen = 0;
    while (got.size() < big.size()) {
        pollfd p{b.native_handle(), POLLIN, 0};
        REQUIRE(::poll(&p, 1, 5000) == 1);
        std::array<std::byte, 4096> buf;
        union {
            cmsghdr align;
            char bytes[CMSG_SPACE(sizeof(int) * 8)];
        } control{};
        iovec iov{buf.data(), buf.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes;
        msg.msg_controllen = sizeof control.bytes;
        const ssize_t n = ::recvmsg(b.native_handle(), &msg, MSG_CMSG_CLOEXEC);
        REQUIRE(n > 0);
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
            ::close(fd);
            ++fds_seen;
        }
        got.insert(got.end(), buf.begin(), buf.begin() + n);
    }
    writer.join();
    CHECK(sent);
    CHECK(fds_seen == 1);
    CHECK(got == big);
}
