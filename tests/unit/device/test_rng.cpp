// device::rng wired as vvu-rng-server wires it — runtime::server over a UNIX socket, the data
// path on a runtime::poller (event and busy mode) guarding it — and driven by vvu's own
// front-end, split and packed: chains of one or more writable buffers come back filled with
// random bytes and their lengths; chains larger than the per-request cap are filled up to it;
// a hostile chain with nothing writable completes with length 0 and the device serves on.
// And docs/write-a-backend.md, which walks through this device, quotes its code as it is.
#include <vvu/device/rng.hpp>

#include <vvu/protocol/frontend.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace vvu;
using namespace std::chrono_literals;

// A buffer in the front-end's shared memory: its guest address and its bytes here.
struct shared_buffer {
    std::uint64_t gpa = 0;
    std::byte* host = nullptr;
    std::uint32_t len = 0;
    ring::buffer element() const { return {gpa, len}; }
    std::size_t zeros() const { return static_cast<std::size_t>(std::count(host, host + len, std::byte{0})); }
};

class rng_frontend {
public:
    rng_frontend(const std::string& path, bool packed) {
        auto ch = protocol::socket_channel::connect(path, 5s);
        REQUIRE(ch);
        protocol::frontend_options o;
        o.features = wire::virtio_feature::version_1 | (packed ? wire::virtio_feature::ring_packed : 0);
        o.required_features = o.features;
        fe_.emplace(std::move(*ch), o);
        check(fe_->negotiate());
        auto mem = protocol::frontend_memory::create({.regions = 1, .region_size = 4 << 20});
        REQUIRE(mem);
        check(fe_->set_memory(std::move(*mem)));
        auto v = fe_->setup_vring(0, {.size = 64});
        check(v);
        vring_ = *v;
        check(fe_->driver_ok());
    }

    shared_buffer buffer(std::uint32_t len) {
        auto gpa = fe_->memory().allocate(len, 64);
        REQUIRE(gpa);
        shared_buffer b{*gpa, fe_->memory().translate(*gpa, len), len};
        std::memset(b.host, 0, len);
        return b;
    }

    // Posts one chain and returns what the device answered (bounded wait).
    std::uint32_t request(std::span<const ring::buffer> readable, std::span<const ring::buffer> writable) {
        REQUIRE(vring_->add(readable, writable, ++token_));
        vring_->kick_if_needed();
        const auto until = std::chrono::steady_clock::now() + 5s;
        for (;;) {
            ring::used_buffer used;
            if (vring_->reap_burst({&used, 1}) == 1) {
                CHECK(used.token == token_);
                return used.len;
            }
            REQUIRE_FALSE(vring_->broken());
            REQUIRE(std::chrono::steady_clock::now() < until);
            vring_->wait_call(20ms);
        }
    }
    std::uint32_t request(std::initializer_list<ring::buffer> writable) {
        return request({}, std::span(writable.begin(), writable.size()));
    }

    void stop() { check(fe_->stop()); } // GET_VRING_BASE: the device gives the vring back

private:
    template <class R>
    static void check(const R& r) {
        if (!r) FAIL(r.error().message());
    }
    std::optional<protocol::frontend<>> fe_;
    protocol::driver_vring* vring_ = nullptr;
    std::uint64_t token_ = 0;
};

} // namespace

TEST_CASE("rng: a front-end gets random bytes, and a chain with nothing writable gets none", "[device][rng]") {
    const bool packed = GENERATE(false, true);
    const bool event_mode = GENERATE(true, false);
    CAPTURE(packed, event_mode);
    char tmpl[] = "/tmp/vvu-rng.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string path = std::string(tmpl) + "/rng.sock";
    {
        auto t = transport::unix_socket::listen(path);
        REQUIRE(t);
        runtime::server<transport::unix_socket, device::rng> port(std::move(*t));
        runtime::poller<device::rng> data_path(port.device(), {.event_mode = event_mode});
        port.guard_data_path([&](auto timeout) { return data_path.pause(timeout); }, [&] { data_path.resume(); });
        port.start();
        data_path.start();

        rng_frontend fe(path, packed);
        std::uint64_t requests = 0, bytes = 0;

        SECTION("each chain is filled and completed with its length") {
            for (int i = 0; i < 100; ++i) { // more than the ring holds: descriptors are reused
                auto b = fe.buffer(1024);
                REQUIRE(fe.request({b.element()}) == 1024);
                CHECK(b.zeros() < 64); // ~4 expected; all 1024 for a device that wrote nothing
                ++requests, bytes += 1024;
            }
            auto first = fe.buffer(100), second = fe.buffer(200); // one chain, two buffers
            REQUIRE(fe.request({first.element(), second.element()}) == 300);
            CHECK(first.zeros() < 20);
            CHECK(second.zeros() < 20);
            ++requests, bytes += 300;
        }
        SECTION("a chain above the per-request cap is filled up to the cap, no further") {
            constexpr auto cap = device::rng::max_bytes_per_request;
            auto big = fe.buffer(2 * cap);
            REQUIRE(fe.request({big.element()}) == cap);
            const shared_buffer filled{big.gpa, big.host, cap}, rest{big.gpa + cap, big.host + cap, cap};
            CHECK(filled.zeros() < 1024);
            CHECK(rest.zeros() == cap);
            ++requests, bytes += cap;
        }
        SECTION("a readable part is ignored; a chain with nothing writable completes with length 0") {
            auto in = fe.buffer(512), out = fe.buffer(256);
            std::memset(in.host, 0x5a, in.len);
            const std::array readable{in.element()}, writable{out.element()};
            REQUIRE(fe.request(readable, writable) == 256);
            CHECK(std::all_of(in.host, in.host + in.len, [](std::byte b) { return b == std::byte{0x5a}; }));
            ++requests, bytes += 256;

            // Hostile: readable only. The device answers 0 and serves the next request.
            REQUIRE(fe.request(readable, {}) == 0);
            CHECK(std::all_of(in.host, in.host + in.len, [](std::byte b) { return b == std::byte{0x5a}; }));
            ++requests;
            auto after = fe.buffer(64);
            REQUIRE(fe.request({after.element()}) == 64);
            ++requests, bytes += 64;
        }

        fe.stop();
        CHECK(port.device().requests() == requests);
        CHECK(port.device().bytes() == bytes);
        port.stop();
        data_path.stop();
    }
    std::filesystem::remove_all(tmpl);
}

TEST_CASE("rng: the device offers one vring, no features of its own and no config space", "[device][rng]") {
    static_assert(protocol::device<device::rng>);
    device::rng d;
    CHECK(d.vring_count() == 1);
    CHECK(d.features() == 0);
    CHECK(d.protocol_features() == 0);
    std::array<std::uint8_t, 4> config{};
    CHECK_FALSE(d.read_config(0, config));
    CHECK_FALSE(d.write_config(0, config));
    CHECK(d.poll() == 0); // no vring started: nothing to do, and no crash
}

namespace {
std::string read_source_file(const std::string& relative) {
    std::ifstream in(std::string(VVU_TEST_DATA_DIR) + "/../" + relative);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}
} // namespace

TEST_CASE("rng: the write-a-backend page quotes the code as it is", "[device][rng]") {
    const std::string page = read_source_file("docs/write-a-backend.md");
    const std::string device = read_source_file("include/vvu/device/rng.hpp");
    const std::string program = read_source_file("examples/vvu-rng-server/main.cpp");
    REQUIRE_FALSE(page.empty());
    REQUIRE_FALSE(device.empty());
    REQUIRE_FALSE(program.empty());
    // Every ```cpp block of the page is a piece of the device or of the program, verbatim.
    const std::string open = "```cpp\n", close = "\n```";
    std::size_t blocks = 0;
    for (std::size_t at = page.find(open); at != std::string::npos; at = page.find(open, at)) {
        at += open.size();
        const std::size_t end = page.find(close, at);
        REQUIRE(end != std::string::npos);
        const std::string block = page.substr(at, end - at);
        INFO("block " << blocks << " of docs/write-a-backend.md:\n" << block);
        CHECK((device.find(block) != std::string::npos || program.find(block) != std::string::npos));
        ++blocks;
        at = end;
    }
    CHECK(blocks >= 5);
}
