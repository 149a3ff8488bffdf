// protocol::kick_wait, the sleep of every device's event mode, over a started vring with an
// eventfd kick and a driver playing the front-end: what the driver sees (whether it must kick),
// when the sleep ends, and that it does not start when work is waiting.
#include <vvu/protocol/kick_wait.hpp>

#include <vvu/memory/guest_memory.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/util/eventfd.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <vector>

using namespace vvu;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t queue_size = 64;

struct rig {
    std::vector<std::byte> bytes = std::vector<std::byte>(1 << 16);
    ring::local_memory mem{bytes};
    ring::split_config cfg{queue_size, mem.base(), mem.base() + 0x1000, mem.base() + 0x2000, {}, 0};
    ring::split_driver<ring::local_memory> driver = *ring::split_driver<ring::local_memory>::create(mem, cfg);
    std::unique_ptr<protocol::vring> vring;
    std::uint32_t posted = 0;

    explicit rig(bool with_kick_fd = true) {
        auto memory = memory::guest_memory::make({memory::region({mem.base(), bytes.size(), 0, 0}, bytes.data(), nullptr)});
        REQUIRE(memory);
        protocol::vring_start s;
        s.size = queue_size;
        s.desc_gpa = cfg.desc_addr;
        s.avail_gpa = cfg.avail_addr;
        s.used_gpa = cfg.used_addr;
        protocol::any_kick_notifier kick;
        if (with_kick_fd) kick = protocol::any_kick_notifier(*eventfd_notifier::create());
        auto v = protocol::vring::start(s, *memory, std::move(kick), {});
        REQUIRE(v);
        vring = std::move(*v);
        vring->set_enabled(true);
        vring->visit([](auto& r) { r.disable_notifications(); }); // polling, as a device starts it
    }
    // The driver posts a buffer; returns whether it must kick the device.
    bool post() {
        const ring::buffer b{mem.base() + 0x4000 + 64 * (posted++ % queue_size), 64};
        REQUIRE(driver.add({}, {&b, 1}, posted));
        return driver.needs_kick();
    }
    void kick() const {
        const std::uint64_t one = 1;
        REQUIRE(::write(vring->kick().native_handle(), &one, sizeof one) == sizeof one);
    }
};

template <class F>
std::chrono::milliseconds timed(F f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

} // namespace

TEST_CASE("kick_wait: armed, the driver must kick; a kick ends the sleep; disarmed, polling again", "[protocol][kick_wait]") {
    rig r;
    CHECK_FALSE(r.post()); // polling: the driver need not kick
    // The device takes that buffer: the ring is idle.
    r.vring->visit([](auto& ring) {
        ring::chain c;
        REQUIRE(ring.pop(c));
        REQUIRE(ring.push(c.id(), 0));
    });

    protocol::kick_wait kicks;
    REQUIRE(kicks.arm(*r.vring));
    CHECK(kicks.armed() == 1);
    CHECK(r.post()); // armed: the driver must kick now
    r.kick();
    CHECK(timed([&] { kicks.sleep(10s, -1); }) < 5s);
    CHECK(kicks.armed() == 0);
    protocol::kick_wait::disarm(*r.vring);
    CHECK_FALSE(r.vring->kick().drain()); // the kick that woke it is consumed
    CHECK_FALSE(r.post());                // polling again
}

TEST_CASE("kick_wait: no sleep while a chain waits, or for a vring without a kick fd", "[protocol][kick_wait]") {
    protocol::kick_wait kicks;
    SECTION("a chain waits") {
        rig r;
        (void)r.post();
        std::array<protocol::vring*, 1> vrings{r.vring.get()};
        bool slept = true;
        CHECK(timed([&] { slept = kicks.wait(vrings, [](protocol::vring&) { return true; }, 10s, -1); }) < 5s);
        CHECK_FALSE(slept);
        CHECK_FALSE(r.post()); // disarmed again after deciding not to sleep
    }
    SECTION("the front-end wants the vring polled") {
        rig r(false);
        CHECK_FALSE(kicks.arm(*r.vring));
        kicks.cancel();
        CHECK(kicks.armed() == 0);
    }
}

TEST_CASE("kick_wait: a vring that is not running is not waited on; the wake fd ends the sleep", "[protocol][kick_wait]") {
    rig r;
    r.vring->set_enabled(false);
    auto wake = eventfd_notifier::create();
    REQUIRE(wake);
    wake->signal();
    protocol::kick_wait kicks;
    std::array<protocol::vring*, 1> vrings{r.vring.get()};
    bool slept = false;
    CHECK(timed([&] { slept = kicks.wait(vrings, [](protocol::vring& v) { return v.enabled(); }, 10s, wake->native_handle()); }) < 5s);
    CHECK(slept);
    CHECK_FALSE(r.post()); // its kicks stayed off
}
