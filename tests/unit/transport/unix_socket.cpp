#include <vvu/transport/unix_socket.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

using namespace vvu;
using namespace std::chrono_literals;
using transport::errc;
using transport::unix_socket;

static_assert(transport::transport<unix_socket>);

namespace {

struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        char tmpl[] = "/tmp/vvu-transport-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string sock(const char* name = "vhost.sock") const { return (path / name).string(); }
};

sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    return a;
}

// A front-end: a plain connected socket, framed.
transport::framed_socket connect_frontend(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    auto a = address(path);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return transport::framed_socket(std::move(fd));
}

// A listening socket standing in for a front-end in server mode (QEMU's server=on).
unique_fd listen_at(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    auto a = address(path);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 4) == 0);
    return fd;
}

unique_fd accept_within(const unique_fd& listener, std::chrono::milliseconds timeout) {
    pollfd p{listener.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, static_cast<int>(timeout.count())) == 1);
    unique_fd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(fd.valid());
    return fd;
}

wire::frame get_features() { return *wire::encode(wire::message<wire::front_request::get_features>{}); }

wire::frame features_reply(std::uint64_t v) {
    wire::reply<wire::front_request::get_features> r;
    r.payload.value = v;
    return *wire::encode(r);
}

} // namespace

TEST_CASE("server mode: request, reply, fds, and a second front-end after a disconnect", "[transport]") {
    temp_dir dir;
    auto server = unix_socket::listen(dir.sock());
    REQUIRE(server);
    CHECK(server->role() == unix_socket::mode::server);
    CHECK_FALSE(server->connected());
    CHECK(server->receive().error().code == errc::not_connected);

    for (int round = 0; round < 2; ++round) {
        auto front = connect_frontend(dir.sock()); // queued in the backlog before accept
        REQUIRE(server->wait_for_frontend());
        CHECK(server->connected());
        CHECK(server->native_handle() >= 0);

        REQUIRE(front.send(get_features()));
        auto m = server->receive(2s);
        REQUIRE(m);
        CHECK(m->header.request == static_cast<std::uint32_t>(wire::front_request::get_features));
        REQUIRE(server->send(features_reply(0x1234 + static_cast<unsigned>(round))));
        auto r = front.receive(wire::channel::front, 2s);
        REQUIRE(r);
        auto d = wire::decode_reply<wire::front_request::get_features>(r->bytes(), r->fds.span());
        REQUIRE(d);
        CHECK(d->payload.value == 0x1234u + static_cast<unsigned>(round));

        // SET_VRING_CALL with an eventfd: the back-end's call reaches the front-end.
        auto call = eventfd_notifier::create();
        REQUIRE(call);
        wire::message<wire::front_request::set_vring_call> sc;
        sc.fds = {call->native_handle()};
        REQUIRE(front.send(*wire::encode(sc)));
        auto cm = server->receive(2s);
        REQUIRE(cm);
        auto n = server->make_call_notifier(0, cm->fds.take(0));
        REQUIRE(n);
        n->signal();
        CHECK(call->wait(2s));

        front.close();
        auto end = server->receive(2s);
        REQUIRE_FALSE(end);
        CHECK(end.error().disconnected());
        server->close_session();
        CHECK_FALSE(server->connected());
    }
}

TEST_CASE("server mode: stale socket file replaced, live one refused, file removed after", "[transport]") {
    temp_dir dir;
    const auto path = dir.sock();
    { auto stale = listen_at(path); } // closed: the file stays, nobody accepts
    REQUIRE(std::filesystem::exists(path));
    {
        auto server = unix_socket::listen(path);
        REQUIRE(server);
        auto second = unix_socket::listen(path);
        REQUIRE_FALSE(second);
        CHECK(second.error().code == errc::address_in_use);
        unix_socket moved(std::move(*server));
        auto front = connect_frontend(path);
        REQUIRE(moved.wait_for_frontend());
    }
    CHECK_FALSE(std::filesystem::exists(path));

    // A regular file in the way is not deleted.
    { std::ofstream(path) << "not a socket"; }
    auto blocked = unix_socket::listen(path);
    REQUIRE_FALSE(blocked);
    CHECK(blocked.error().code == std::errc::address_in_use);
    CHECK(std::filesystem::exists(path));
}

TEST_CASE("server mode: stop() wakes a blocked accept", "[transport]") {
    temp_dir dir;
    auto server = unix_socket::listen(dir.sock());
    REQUIRE(server);
    auto waiting = std::async(std::launch::async, [&] { return server->wait_for_frontend(); });
    CHECK(waiting.wait_for(50ms) == std::future_status::timeout);
    server->stop();
    REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
    CHECK(waiting.get().error().code == errc::stopped);
    CHECK(server->wait_for_frontend().error().code == errc::stopped); // sticky
}

TEST_CASE("server mode: stop() wakes a blocked receive", "[transport]") {
    temp_dir dir;
    auto server = unix_socket::listen(dir.sock());
    REQUIRE(server);
    auto front = connect_frontend(dir.sock());
    REQUIRE(server->wait_for_frontend());
    auto waiting = std::async(std::launch::async, [&] { return server->receive(); });
    server->stop();
    REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
    CHECK(waiting.get().error().code == errc::stopped);
}

TEST_CASE("client mode: reconnects with back-off to a front-end that listens late", "[transport]") {
    temp_dir dir;
    const auto path = dir.sock();
    auto client = unix_socket::connect(path, {1ms, 20ms, 10s});
    CHECK(client.role() == unix_socket::mode::client);
    auto connecting = std::async(std::launch::async, [&] { return client.wait_for_frontend(); });
    // Nobody listens yet: the client keeps retrying.
    CHECK(connecting.wait_for(30ms) == std::future_status::timeout);
    auto listener = listen_at(path);
    auto front = transport::framed_socket(accept_within(listener, 5s));
    REQUIRE(connecting.wait_for(5s) == std::future_status::ready);
    REQUIRE(connecting.get());
    REQUIRE(front.send(get_features()));
    REQUIRE(client.receive(2s));

    // The front-end goes away and comes back (a QEMU restart): the client reconnects.
    front.close();
    CHECK(client.receive(2s).error().disconnected());
    listener.reset();
    ::unlink(path.c_str());
    auto again = std::async(std::launch::async, [&] { return client.wait_for_frontend(); });
    CHECK(again.wait_for(30ms) == std::future_status::timeout);
    auto listener2 = listen_at(path);
    auto front2 = transport::framed_socket(accept_within(listener2, 5s));
    REQUIRE(again.wait_for(5s) == std::future_status::ready);
    REQUIRE(again.get());
    REQUIRE(client.send(features_reply(7)));
    auto r = front2.receive(wire::channel::front, 2s);
    REQUIRE(r);
    CHECK(r->header.is_reply());
}

TEST_CASE("client mode: gives up after the bound, stops on stop()", "[transport]") {
    temp_dir dir;
    auto client = unix_socket::connect(dir.sock(), {1ms, 10ms, 50ms});
    const auto t0 = std::chrono::steady_clock::now();
    auto r = client.wait_for_frontend();
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);

    auto forever = unix_socket::connect(dir.sock());
    auto waiting = std::async(std::launch::async, [&] { return forever.wait_for_frontend(); });
    forever.stop();
    REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
    CHECK(waiting.get().error().code == errc::stopped);
}

TEST_CASE("make_* turn received fds into transport objects", "[transport]") {
    temp_dir dir;
    auto server = unix_socket::listen(dir.sock());
    REQUIRE(server);
    CHECK(server->make_kick_notifier(0, unique_fd{}).error().code == errc::bad_fd);
    CHECK(server->make_call_notifier(0, unique_fd{}).error().code == errc::bad_fd);
    unique_fd ev(::eventfd(0, EFD_CLOEXEC));
    CHECK(server->make_backend_channel(std::move(ev)).error().code == errc::bad_fd);

    unique_fd mem(::memfd_create("vvu", MFD_CLOEXEC));
    REQUIRE(::ftruncate(mem.get(), 8192) == 0);
    auto r = server->map_region({0x1000, 8192, 0x7000, 0}, std::move(mem));
    REQUIRE(r);
    CHECK(r->size() == 8192);
}

TEST_CASE("backend channel: requests out, replies in, same framing", "[transport]") {
    temp_dir dir;
    auto server = unix_socket::listen(dir.sock());
    REQUIRE(server);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    transport::framed_socket frontend_end{unique_fd(sv[0])};
    auto chan = server->make_backend_channel(unique_fd(sv[1]));
    REQUIRE(chan);
    CHECK(chan->is_open());

    bool front_ok = false;
    std::thread front([&] {
        auto m = frontend_end.receive(wire::channel::back, 5s);
        if (!m || !wire::decode<wire::back_request>(m->bytes(), m->fds.span()) || !m->header.need_reply()) return;
        wire::reply<wire::back_request::config_change_msg> ack;
        ack.payload.value = 0;
        front_ok = frontend_end.send(*wire::encode(ack)).has_value();
    });
    wire::message<wire::back_request::config_change_msg> req;
    req.flags |= wire::flags::need_reply;
    auto reply = chan->transact(*wire::encode(req), 5s);
    front.join();
    CHECK(front_ok);
    REQUIRE(reply);
    auto ack = wire::decode_reply<wire::back_request::config_change_msg>(reply->bytes(), reply->fds.span());
    REQUIRE(ack);
    CHECK(ack->payload.value == 0);

    CHECK(chan->receive(10ms).error().code == errc::timed_out);
    transport::backend_channel none;
    CHECK(none.send(*wire::encode(req)).error().code == errc::not_connected);
}

TEST_CASE("transport error messages", "[transport]") {
    CHECK(transport::error(errc::truncated).message() == "peer closed the connection in the middle of a message");
    CHECK(transport::error(std::error_code(ECONNRESET, std::system_category()), "recvmsg").message() ==
          "recvmsg: Connection reset by peer");
    CHECK(transport::make_error_code(errc::stopped).message() == "transport stopped");
}
