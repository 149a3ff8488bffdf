// No leak across sessions: a front-end connects to a real UNIX-socket back-end, sets up memory
// and a vring, transfers frames and disconnects, 1000 times. After the last cycle the process
// has exactly the open fds and mappings it had after the first. One thread plays both sides in
// turn (the socket buffers the front-end's messages), so every step is deterministic.
#include <vvu/protocol/backend.hpp>

#include <vvu/device/net_port.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/unix_socket.hpp>

#include <catch2/catch.hpp>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace vvu;
using namespace vvu::wire;
using fr = front_request;

namespace {

std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}
std::size_t mappings() {
    std::ifstream maps("/proc/self/maps");
    std::size_t n = 0;
    for (std::string line; std::getline(maps, line);) ++n;
    return n;
}

unique_fd connect_to(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

// The smallest front-end that moves frames: one memfd region, the TX vring (index 1).
struct mini_frontend {
    static constexpr std::uint64_t gpa = 0x40000000, uaddr = 0x7f4000000000;
    static constexpr std::size_t bytes = 1 << 20;
    transport::framed_socket socket;
    unique_fd memfd{::memfd_create("vvu-frontend", MFD_CLOEXEC)};
    std::byte* base = nullptr;

    explicit mini_frontend(const std::string& path) : socket(connect_to(path)) {
        REQUIRE(::ftruncate(memfd.get(), bytes) == 0);
        base = static_cast<std::byte*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0));
        REQUIRE(base != MAP_FAILED);
    }
    ~mini_frontend() { ::munmap(base, bytes); }

    std::size_t sent = 0;

    template <auto R>
    void send(typename message<R>::payload_type payload, fd_list fds = {}) {
        message<R> m;
        m.payload = payload;
        m.fds = fds;
        auto f = encode(m);
        REQUIRE(f);
        REQUIRE(socket.send(*f));
        ++sent;
    }

    // Queues the whole setup of the TX vring and posts `frames` frames on it.
    void set_up(std::size_t frames) {
        send<fr::set_owner>({});
        send<fr::set_features>({virtio_feature::version_1 | vhost_feature::protocol_features});
        memory_table t;
        t.nregions = 1;
        t.regions[0] = {gpa, bytes, uaddr, 0};
        send<fr::set_mem_table>(t, {memfd.get()});

        ring::local_memory mem({base, bytes}, gpa);
        const ring::split_config cfg{64, gpa, gpa + 0x1000, gpa + 0x2000, {}, 0};
        auto driver = ring::split_driver<ring::local_memory>::create(mem, cfg);
        REQUIRE(driver);
        send<fr::set_vring_num>({1, 64});
        send<fr::set_vring_addr>({1, 0, uaddr, uaddr + 0x2000, uaddr + 0x1000, 0});
        send<fr::set_vring_base>({1, 0});
        unique_fd call(::eventfd(0, EFD_CLOEXEC)), kick(::eventfd(0, EFD_CLOEXEC));
        send<fr::set_vring_call>({1}, {call.get()});
        send<fr::set_vring_kick>({1}, {kick.get()});
        send<fr::set_vring_enable>({1, 1});
        for (std::size_t i = 0; i < frames; ++i) {
            const ring::buffer b{gpa + 0x10000 + i * 2048, 12 + 60};
            REQUIRE(driver->add({&b, 1}, {}, i));
        }
    }
};

} // namespace

TEST_CASE("backend: 1000 connect/transfer/disconnect cycles leave no fd and no mapping behind",
          "[protocol][backend][leak]") {
    const std::string path = (std::filesystem::temp_directory_path() / ("vvu-leak-" + std::to_string(::getpid()))).string();
    auto server = transport::unix_socket::listen(path);
    REQUIRE(server);
    device::net::net_port port({.queue_pairs = 1});
    protocol::backend<transport::unix_socket, device::net::net_port> backend(*server, port);

    std::size_t fds_after_first = 0, maps_after_first = 0;
    constexpr int cycles = 1000;
    constexpr std::size_t frames = 4;
    for (int cycle = 0; cycle < cycles; ++cycle) {
        const auto before = port.stats().rx_packets;
        {
            mini_frontend fe(path);
            REQUIRE(server->wait_for_frontend());
            fe.set_up(frames);
            for (std::size_t i = 0; i < fe.sent; ++i) {
                auto m = server->receive(std::chrono::seconds(5));
                REQUIRE(m);
                auto r = backend.handle(*m);
                if (!r) FAIL(r.error().message());
            }
            REQUIRE(backend.state().vrings[1].started);
            // The data path takes the frames.
            for (int tries = 0; tries < 100 && port.stats().rx_packets < before + frames; ++tries) port.discard();
            REQUIRE(port.stats().rx_packets == before + frames);
        }
        // The front-end is gone: serve() reads the disconnect and tears the session down.
        CHECK(backend.serve() == "peer closed the connection");
        server->close_session();
        REQUIRE_FALSE(backend.state().owner);
        if (cycle == 0) {
            fds_after_first = open_fds();
            maps_after_first = mappings();
        }
    }
    CHECK(port.stats().rx_packets == cycles * frames);
    CHECK(open_fds() == fds_after_first);
    CHECK(mappings() == maps_after_first);
}
