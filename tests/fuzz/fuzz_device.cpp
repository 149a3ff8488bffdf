// libFuzzer target: vvu-device's front-end side fed arbitrary vhost-user streams, with fds,
// while a real driver serves the PCI function behind it (transport::vvu_pci +
// protocol::backend<vvu_pci, net_port>, as vvu-forward --port vvu: runs it).
//
// One input is one front-end connection. The input is cut into chunks, each sent with one
// sendmsg() and 0-2 fds (a fresh eventfd, a fresh sealed 64 KiB memfd):
//
//   chunk := u8 fds | u16le length (low 10 bits) | length bytes
//   fds   := bits 0-1 how many (3 counts as 0), bit 2 memfd first (else eventfd first)
//
// Each connection is made once the driver waits for a front-end (BACKEND_UP), so the device
// connects it and reads what it sends; replies are drained until the device closes the socket
// or 5 ms pass without news, and the socket is closed (the device still reads what was sent
// before the close). The device and the driver live across inputs as they do in production;
// a crash, an ASan/UBSan report or a leak in either is a finding. A stream that stops
// mid-message is dropped by the device after its message timeout (20 ms here).
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/transport/vvu_pci.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/vvu/device_model.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace vvu;
using namespace std::chrono_literals;

namespace {

// The device and the driver, started once and never torn down (their threads run until the
// fuzzer exits; the object stays reachable, so it is not a leak).
struct world {
    std::string fe_path, pci_path;
    std::unique_ptr<vvu_device::device_model> device;
    std::thread device_thread;
    device::net::net_port port{device::net::net_port::options{}};
    std::optional<transport::vvu_pci> driver;
    std::thread control;
    std::atomic<bool> driver_waiting{false}; // inside wait_for_frontend (BACKEND_UP set)
    std::atomic<std::uint64_t> sessions{0};  // front-ends the driver served

    world() {
        ::signal(SIGPIPE, SIG_IGN);
        char dir[] = "/tmp/vvu-fuzz-device.XXXXXX";
        if (::mkdtemp(dir) == nullptr) std::abort();
        fe_path = std::string(dir) + "/fe.sock";
        pci_path = std::string(dir) + "/pci.sock";
        vvu_device::device_options o;
        o.vhost_user_path = fe_path;
        o.pci_path = pci_path;
        o.max_queues = 8;
        o.message_timeout = 20ms;
        if (std::getenv("VVU_FUZZ_DEVICE_LOG") != nullptr) // the device's event log, for a harness check
            o.log = [](std::string_view line) { std::fprintf(stderr, "vvu-device: %.*s\n", int(line.size()), line.data()); };
        auto d = vvu_device::device_model::create(std::move(o));
        if (!d) std::abort();
        device = std::move(*d);
        device_thread = std::thread([this] { (void)device->run(); });
        auto t = transport::vvu_pci::connect(pci_path);
        if (!t) std::abort();
        driver.emplace(std::move(*t));
        control = std::thread([this] {
            protocol::backend<transport::vvu_pci, device::net::net_port> backend(*driver, port);
            for (;;) {
                driver_waiting = true;
                const bool up = driver->wait_for_frontend().has_value();
                driver_waiting = false;
                if (!up) {
                    std::this_thread::sleep_for(1ms);
                    continue;
                }
                ++sessions;
                (void)backend.serve();
                driver->close_session();
            }
        });
    }
};

world& the_world() {
    static world* w = [] {
        auto* made = new world; // see `world`
        // VVU_FUZZ_DEVICE_STATS=1: how many inputs reached the driver (a check of the harness).
        if (std::getenv("VVU_FUZZ_DEVICE_STATS") != nullptr)
            std::atexit([] { std::fprintf(stderr, "fuzz_device: %llu sessions reached the driver\n",
                                          static_cast<unsigned long long>(the_world().sessions.load())); });
        return made;
    }();
    return *w;
}

unique_fd connect_frontend(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) std::abort();
    return fd;
}

unique_fd make_memfd() {
    unique_fd fd(::memfd_create("vvu-fuzz-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd || ::ftruncate(fd.get(), 64 << 10) != 0) std::abort();
    ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    return fd;
}

// Sends one chunk with its fds; false when the device has closed the connection.
bool send_chunk(int sock, std::span<const std::uint8_t> bytes, std::uint8_t fd_spec) {
    std::vector<unique_fd> owned;
    const int count = fd_spec & 3;
    for (int i = 0; i < (count == 3 ? 0 : count); ++i) {
        const bool memfd = ((fd_spec >> 2) & 1) == (i == 0 ? 1 : 0);
        owned.push_back(memfd ? make_memfd() : unique_fd(::eventfd(0, EFD_CLOEXEC)));
    }
    std::array<int, 2> raw{};
    for (std::size_t i = 0; i < owned.size(); ++i) raw[i] = owned[i].get();
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 2)> control{};
    iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!owned.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * owned.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * owned.size());
        std::memcpy(CMSG_DATA(c), raw.data(), sizeof(int) * owned.size());
    }
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        pollfd p{sock, POLLOUT, 0};
        if (::poll(&p, 1, 30) <= 0) return false; // the device stopped reading: it is done with us
        const ssize_t n = ::sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return false;
        }
        sent += static_cast<std::size_t>(n);
        iov = {const_cast<std::uint8_t*>(bytes.data()) + sent, bytes.size() - sent};
        msg.msg_control = nullptr;
        msg.msg_controllen = 0;
    }
    return true;
}

// Reads and drops replies until the device closes the socket or `quiet` passes without news.
void drain(int sock, std::chrono::milliseconds quiet) {
    std::array<char, 4096> sink;
    for (;;) {
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(quiet.count())) <= 0) return;
        const ssize_t n = ::recv(sock, sink.data(), sink.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    world& w = the_world();
    // The previous session winds down (driver: disconnect seen, close_session, BACKEND_UP).
    for (int i = 0; i < 1000 && !w.driver_waiting.load(); ++i) std::this_thread::sleep_for(100us);
    unique_fd sock = connect_frontend(w.fe_path);
    std::span<const std::uint8_t> in(data, size);
    while (in.size() >= 3) {
        const std::uint8_t fd_spec = in[0];
        const std::size_t len = std::min<std::size_t>((in[1] | (in[2] << 8)) & 0x3ff, in.size() - 3);
        if (!send_chunk(sock.get(), in.subspan(3, len), fd_spec)) break;
        in = in.subspan(3 + len);
        drain(sock.get(), 0ms);
    }
    drain(sock.get(), 5ms);
    return 0;
}
