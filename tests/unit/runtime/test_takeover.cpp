// Live update in one process: a front-end echoes numbered frames through a back-end while new
// back-ends take its session over again and again (split and packed rings): every frame comes
// back, in order; the front-end never reconnects; the port's counters run on. Then hostile
// take-over clients — garbage, another version, another port list, one that hangs up halfway,
// one that aborts after receiving everything — are refused while the back-end serves on, and a
// real take-over still succeeds after them.
#include "harness.hpp"

#include <vvu/transport/handover_socket.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>

using namespace vvu;
using namespace std::chrono_literals;

namespace {

struct temp_dir {
    std::string path;
    temp_dir() {
        char tmpl[] = "/tmp/vvu-rt.XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~temp_dir() { std::filesystem::remove_all(path); }
};

// Takes the back-end over on a helper thread while the front-end keeps echoing.
std::unique_ptr<test::backend_process> take_over_under_traffic(test::echo_frontend& fe, test::backend_process& old,
                                                               const std::string& port, const std::string& control) {
    std::unique_ptr<test::backend_process> next;
    std::string why;
    std::atomic<bool> done{false};
    std::thread t([&] {
        next = test::backend_process::take_over(port, control, &why);
        done = true;
    });
    bool flowing = true;
    while (!done.load() && flowing) flowing = fe.echo(16);
    t.join(); // (before any assertion: a failed REQUIRE must not leave the thread running)
    INFO("sent " << fe.sent() << ", received " << fe.received() << ", out of order " << fe.out_of_order()
                  << ", first: seq " << fe.first_bad().first << " as frame " << fe.first_bad().second);
    const bool handed_over = next && old.wait_handed_over(5s);
    INFO("the old back-end reported:\n" << old.history());
    REQUIRE(flowing);
    if (!next) FAIL("take-over failed: " << why);
    REQUIRE(handed_over);
    return next;
}

} // namespace

TEST_CASE("take-overs under traffic lose no frame", "[runtime][takeover]") {
    const bool packed = GENERATE(false, true);
    CAPTURE(packed);
    temp_dir dir;
    const std::string port = dir.path + "/port.sock", control = dir.path + "/control.sock";
    auto current = test::backend_process::fresh(port, control);
    test::echo_frontend fe(port, packed);
    REQUIRE(fe.echo(1000));
    for (int k = 0; k < 5; ++k) {
        auto next = take_over_under_traffic(fe, *current, port, control);
        current = std::move(next); // the old one goes: it must leave the sockets alone
        REQUIRE(fe.echo(3000));     // more than a ring's worth, so the indices wrap
    }
    CHECK(fe.out_of_order() == 0);
    CHECK(fe.received() == fe.sent());
    // The port's counters came along: the last back-end counts every frame of the session.
    CHECK(current->port().stats().rx_packets == fe.received());
    CHECK(current->port().stats().tx_packets == fe.received());
    // Stopping the rings cleanly still works against the process that holds them now.
    auto closed = fe.nd().close();
    if (!closed) FAIL(closed.error().message());
}

TEST_CASE("hostile take-over clients are refused and the back-end serves on", "[runtime][takeover][hostile]") {
    temp_dir dir;
    const std::string port = dir.path + "/port.sock", control = dir.path + "/control.sock";
    auto current = test::backend_process::fresh(port, control);
    test::echo_frontend fe(port, false);
    REQUIRE(fe.echo(500));

    auto client = [&] {
        auto s = transport::handover_socket::connect(control, 2s);
        REQUIRE(s);
        return std::move(*s);
    };
    auto hello = [](std::vector<std::string> ports) {
        byte_writer w;
        w.put<std::uint32_t>(static_cast<std::uint32_t>(ports.size()));
        for (auto& p : ports) w.put_string(p);
        return w.take();
    };
    // The answer of the old process: a refuse record, and its reason.
    auto expect_refusal = [](transport::handover_socket& s, std::string_view reason) {
        auto r = s.receive(2s);
        REQUIRE(r);
        CHECK(r->type == runtime::handover_record::refuse);
        byte_reader br(r->payload);
        const std::string why = br.get_string(4096);
        INFO(why);
        CHECK(why.find(reason) != std::string::npos);
    };

    SECTION("garbage") {
        auto s = client();
        const std::string junk = "this is not a hand-over record at all";
        const iovec iov{const_cast<char*>(junk.data()), junk.size()};
        REQUIRE(scm::send_some(s.native_handle(), std::span(&iov, 1), {}) > 0);
        expect_refusal(s, "bad magic");
    }
    SECTION("another version") {
        auto s = client();
        std::array<std::byte, 16> h{};
        le::store<std::uint32_t>(h.data(), transport::handover_socket::magic);
        le::store<std::uint16_t>(h.data() + 4, transport::handover_socket::version + 1);
        le::store<std::uint16_t>(h.data() + 6, runtime::handover_record::hello);
        const iovec iov{h.data(), h.size()};
        REQUIRE(scm::send_some(s.native_handle(), std::span(&iov, 1), {}) == 16);
        expect_refusal(s, fmt::format("version {}", transport::handover_socket::version + 1));
    }
    SECTION("another port list") {
        auto s = client();
        REQUIRE(s.send(runtime::handover_record::hello, hello({"unix:/elsewhere.sock"}), {}, 1s));
        expect_refusal(s, "port lists differ");
    }
    // The memory comes first, while the back-end still runs; `ready` lets it pause.
    auto take_memory = [](transport::handover_socket& s) {
        for (;;) {
            auto r = s.receive(2s);
            REQUIRE(r);
            if (r->type == runtime::handover_record::memory_end) break;
            REQUIRE(r->type == runtime::handover_record::memory);
            CHECK(r->fds.size() == 1); // the front-end's one memory region
        }
    };
    SECTION("a client that hangs up after the memory") {
        auto s = client();
        REQUIRE(s.send(runtime::handover_record::hello, hello({"unix:" + port}), {}, 1s));
        take_memory(s);
        s.close();
    }
    SECTION("a client that hangs up halfway") {
        auto s = client();
        REQUIRE(s.send(runtime::handover_record::hello, hello({"unix:" + port}), {}, 1s));
        take_memory(s);
        REQUIRE(s.send(runtime::handover_record::ready, {}, {}, 1s));
        auto first = s.receive(2s); // the first port's session: the back-end is paused now
        REQUIRE(first);
        CHECK(first->type == runtime::handover_record::port);
        CHECK(first->fds.size() >= 5); // sockets, memory, notifiers
        s.close();
    }
    SECTION("a client that aborts after receiving everything") {
        auto s = client();
        REQUIRE(s.send(runtime::handover_record::hello, hello({"unix:" + port}), {}, 1s));
        take_memory(s);
        REQUIRE(s.send(runtime::handover_record::ready, {}, {}, 1s));
        for (;;) {
            auto r = s.receive(2s);
            REQUIRE(r);
            if (r->type == runtime::handover_record::sent_all) break;
        }
        byte_writer why;
        why.put_string("cannot map the memory");
        REQUIRE(s.send(runtime::handover_record::abort, why.bytes(), {}, 1s));
    }
    SECTION("a client that never says hello") {
        auto s = client();
        // The old process gives up after its hello timeout; meanwhile nothing is paused.
        REQUIRE(fe.echo(2000));
    }
    // Whatever the client did, the back-end serves on with nothing lost...
    REQUIRE(fe.echo(2000));
    CHECK(fe.out_of_order() == 0);
    CHECK(fe.received() == fe.sent());
    // ...and a real take-over still works.
    auto next = take_over_under_traffic(fe, *current, port, control);
    current = std::move(next);
    REQUIRE(fe.echo(1000));
    CHECK(current->port().stats().rx_packets == fe.received());
}

TEST_CASE("a port between two front-ends is handed over with its counters", "[runtime][takeover]") {
    temp_dir dir;
    const std::string port = dir.path + "/port.sock", control = dir.path + "/control.sock";
    auto first = test::backend_process::fresh(port, control);
    {
        test::echo_frontend fe(port, false);
        REQUIRE(fe.echo(700));
    } // the front-end goes: the port waits for the next one
    const bool ended = first->wait_sessions_ended(1, 5s);
    std::string why;
    auto second = ended ? test::backend_process::take_over(port, control, &why) : nullptr;
    const bool handed_over = second && first->wait_handed_over(5s);
    {
        INFO("the first back-end reported:\n" << first->history());
        REQUIRE(ended);
        if (!second) FAIL("take-over failed: " << why);
        REQUIRE(handed_over);
    }
    first.reset();
    INFO("the second back-end reported:\n" << second->history());
    CHECK(second->port().stats().rx_packets == 700); // before any new traffic
    test::echo_frontend fe(port, true);               // the listening socket came along
    REQUIRE(fe.echo(300));
    CHECK(second->port().stats().rx_packets == 1000);
}

TEST_CASE("a prepared take-over: the old process serves on until before_outage returns", "[runtime][takeover]") {
    temp_dir dir;
    const std::string port = dir.path + "/port.sock", control = dir.path + "/control.sock";
    auto first = test::backend_process::fresh(port, control);
    test::echo_frontend fe(port, false);
    REQUIRE(fe.echo(200));
    int calls = 0;
    bool served_meanwhile = false;
    runtime::handover_options o;
    // Connected, memory mapped, heap warm: the outage has not started, the old process echoes.
    o.before_outage = [&] {
        ++calls;
        served_meanwhile = fe.echo(300);
    };
    std::string why;
    auto second = test::backend_process::take_over(port, control, &why, o);
    if (!second) FAIL("take-over failed: " << why);
    CHECK(calls == 1);
    CHECK(served_meanwhile);
    {
        const bool handed_over = first->wait_handed_over(5s);
        INFO("the first back-end reported:\n" << first->history());
        REQUIRE(handed_over);
    }
    first.reset();
    REQUIRE(fe.echo(500)); // the same session, through the new process
    CHECK(second->port().stats().rx_packets == 1000);
}

TEST_CASE("a take-over with nobody to take from fails cleanly", "[runtime][takeover][hostile]") {
    temp_dir dir;
    std::string why;
    auto p = test::backend_process::take_over(dir.path + "/port.sock", dir.path + "/nobody.sock", &why);
    CHECK(p == nullptr);
    CHECK(why.find("control socket") != std::string::npos);
    CHECK(!std::filesystem::exists(dir.path + "/port.sock")); // nothing was created
}
