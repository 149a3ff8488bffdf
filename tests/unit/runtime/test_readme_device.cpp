// The device of the README ("A device on the runtime"), compiled and served as written there: a
// sink that completes every chain the front-end transmits, with no lock of its own — the
// runtime holds its data path whenever the control thread starts or stops a vring. Driven by
// vvu's virtio-net front-end over a real UNIX socket.
#include "harness.hpp"

#include <vvu/protocol/device.hpp>
#include <vvu/runtime/poller.hpp>
#include <vvu/runtime/server.hpp>
#include <vvu/transport/unix_socket.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>

namespace readme {
using namespace vvu;

// ---- from README.md, "A device on the runtime"
// Completes every chain the front-end makes available on vring 1, and counts them.
struct sink {
    // protocol::device: what the state machine asks of a device.
    std::uint64_t features() const noexcept { return 0; }          // + VERSION_1, rings: added
    std::uint64_t protocol_features() const noexcept { return 0; } // + MQ, REPLY_ACK, ...: added
    std::uint32_t vring_count() const noexcept { return 2; }
    void set_features(std::uint64_t) noexcept {}
    bool read_config(std::uint32_t, std::span<std::uint8_t>) const noexcept { return false; }
    bool write_config(std::uint32_t, std::span<const std::uint8_t>) noexcept { return false; }
    void start_vring(std::unique_ptr<protocol::vring> v) { vrings[v->index()] = std::move(v); }
    std::unique_ptr<protocol::vring> stop_vring(std::uint32_t i) { return std::move(vrings[i]); }
    void reset() { vrings = {}; }

    // The data path, run by runtime::poller: never at the same time as the calls above.
    std::size_t poll() {
        auto& v = vrings[1];
        if (!v) return 0;
        std::size_t n = 0;
        v->visit([&](auto& ring) {
            std::array<ring::chain, ring::max_burst> chains;
            std::array<ring::used_element, ring::max_burst> done;
            n = ring.pop_burst(chains);
            for (std::size_t i = 0; i < n; ++i) done[i] = {chains[i].id(), 0};
            ring.push_burst(std::span(done).first(n));
        });
        if (n != 0) v->notify();
        completed += n;
        return n;
    }

    std::array<std::unique_ptr<protocol::vring>, 2> vrings;
    std::uint64_t completed = 0;
};
// ---- end of the README's device
} // namespace readme

TEST_CASE("the README's device serves a front-end on the runtime", "[runtime][readme]") {
    using namespace vvu;
    char tmpl[] = "/tmp/vvu-readme.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string path = std::string(tmpl) + "/sink.sock";
    {
        // ---- from README.md
        auto t = transport::unix_socket::listen(path);
        REQUIRE(t); // (the README: if (!t) …)
        runtime::server<transport::unix_socket, readme::sink> port(std::move(*t));
        runtime::poller<readme::sink> data_path(port.device(), {});
        port.guard_data_path([&](auto timeout) { return data_path.pause(timeout); }, [&] { data_path.resume(); });
        port.start();
        data_path.start();
        // ---- end

        test::echo_frontend fe(path, GENERATE(false, true));
        std::vector<std::byte> buf(64);
        std::uint64_t sent = 0;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (sent < 10000 && std::chrono::steady_clock::now() < until) {
            device::net::make_test_frame(buf, 64, sent, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
            const device::net::frame f(buf);
            sent += fe.nd().send(0, std::span(&f, 1));
            fe.nd().reap_tx(0);
        }
        while (fe.nd().tx_outstanding(0) != 0 && std::chrono::steady_clock::now() < until) fe.nd().reap_tx(0);
        CHECK(sent == 10000);
        CHECK(fe.nd().tx_outstanding(0) == 0); // every chain came back completed
        auto closed = fe.nd().close();          // GET_VRING_BASE: the runtime stops the rings
        if (!closed) FAIL(closed.error().message());
        data_path.pause(std::chrono::seconds(1));
        CHECK(port.device().completed == 10000);
        data_path.resume();
        port.stop();
        data_path.stop();
    }
    std::filesystem::remove_all(tmpl);
}
