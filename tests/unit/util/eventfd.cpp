#include <vvu/util/eventfd.hpp>

#include <vvu/transport/transport.hpp>

#include <catch2/catch.hpp>

#include <thread>

using namespace std::chrono_literals;
using vvu::eventfd_notifier;

static_assert(vvu::transport::kick_notifier<eventfd_notifier>);
static_assert(vvu::transport::call_notifier<eventfd_notifier>);
static_assert(vvu::transport::pollable_notifier<eventfd_notifier>);

TEST_CASE("eventfd_notifier: signal, drain, wait", "[util]") {
    auto n = eventfd_notifier::create();
    REQUIRE(n);
    CHECK(n->valid());
    CHECK_FALSE(n->drain());
    CHECK_FALSE(n->wait(10ms));
    n->signal();
    n->signal();
    CHECK(n->drain()); // both signals count as one notification
    CHECK_FALSE(n->drain());

    std::thread t([&] { n->signal(); });
    CHECK(n->wait(5s));
    t.join();

    eventfd_notifier moved(std::move(*n));
    CHECK_FALSE(n->valid());
    CHECK(moved.valid());
    auto fd = moved.release();
    CHECK(fd.valid());
    CHECK_FALSE(moved.valid());
}
