// libFuzzer target for vfio_user::server: a fuzzer-chosen byte stream from a "client" over a
// socketpair, cut into sendmsg() calls, some carrying an fd or two from a small pool (memfds
// that can be DMA-mapped, eventfds for irqs), served by the in-process test device until the
// server drops the client. A crash, a sanitizer report, or an fd left open afterwards is a
// finding (the count of open sockets, eventfds and memfds is checked after every input and
// abort()s on a leak).
//
// Input: repeated [u8 fds][u16 length, little-endian][length bytes], where fds bits 0-1 are how
// many fds go with those bytes (0-3) and bits 2-3 pick the first from the pool (rotating).
#include "../unit/vfio_user/test_device.hpp"

#include <vvu/vfio_user/server.hpp>

#include <dirent.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using namespace vvu;
using namespace vvu::vfio_user;

// Open fds of the kinds this target passes around (sockets, eventfds, memfds). Others are
// not counted: libFuzzer and the sanitizers open pipes and /proc files of their own.
int open_fds(bool print = false) {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char target[256] = {};
        const std::string link = std::string("/proc/self/fd/") + e->d_name;
        if (::readlink(link.c_str(), target, sizeof(target) - 1) <= 0) continue;
        const std::string_view t(target);
        if (t.starts_with("socket:") || t == "anon_inode:[eventfd]" || t.starts_with("/memfd:")) {
            ++n;
            if (print) std::fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
        }
    }
    ::closedir(d);
    return n;
}

struct world {
    vvu_test::register_device dev;
    std::array<unique_fd, 4> pool{vvu_test::make_memfd("dma0", 0x4000), unique_fd(::eventfd(0, EFD_CLOEXEC)),
                                  vvu_test::make_memfd("dma1", 0x1000), unique_fd(::eventfd(0, EFD_CLOEXEC))};
    std::unique_ptr<server> srv;
    world() {
        server_options o;
        // Small transfers keep every reply inside the socket buffer (nobody reads them until
        // the input is served), and a short timeout bounds a message cut off by the input.
        o.max_data_xfer_size = 4096;
        o.io_timeout = std::chrono::milliseconds(20);
        srv = server::unlistened(dev, o);
    }
};

// Reads and discards whatever the server sent (received fds are closed).
void drain(int sock) {
    std::array<std::byte, 8192> buf{};
    std::vector<unique_fd> fds;
    while (vfio_user::detail::read_exact(sock, std::span(buf).first(1), fds, std::chrono::steady_clock::now())) {
        fds.clear();
        (void)::recv(sock, buf.data(), buf.size(), MSG_DONTWAIT);
    }
}

// True when the next message is all queued (or its header is already hopeless), so that
// serve_one() does not wait for bytes this thread has yet to send.
bool message_ready(int sock, std::size_t cap) {
    int queued = 0;
    if (::ioctl(sock, FIONREAD, &queued) != 0 || queued < static_cast<int>(header_size)) return false;
    std::array<std::byte, header_size> head{};
    if (::recv(sock, head.data(), head.size(), MSG_PEEK | MSG_DONTWAIT) != static_cast<ssize_t>(head.size()))
        return false;
    const auto h = load<header>(head);
    return h.msg_size < header_size || h.msg_size > cap || h.msg_size <= static_cast<std::uint32_t>(queued);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static world* w = new world;
    static const int baseline = open_fds();

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    unique_fd peer(sv[0]);
    if (!w->srv->attach(unique_fd(sv[1]))) std::abort();

    std::size_t at = 0;
    bool alive = true;
    while (alive && at + 3 <= size) {
        const std::uint8_t sel = data[at];
        std::size_t len = static_cast<std::size_t>(data[at + 1]) | (static_cast<std::size_t>(data[at + 2]) << 8);
        at += 3;
        len = std::min(len, size - at);
        std::array<int, 3> fds{};
        const std::size_t nfds = sel & 3;
        for (std::size_t i = 0; i < nfds; ++i) fds[i] = w->pool[((sel >> 2) + i) % w->pool.size()].get();
        if (len == 0 && nfds == 0) continue;
        std::vector<std::byte> bytes(len == 0 ? 1 : len); // fds need at least one byte
        std::memcpy(bytes.data(), data + at, len);
        at += len;
        auto sent = vfio_user::detail::send_message(peer.get(), bytes, {}, std::span(fds.data(), nfds),
                                                    std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
        if (!sent) break;
        // Serve every complete message sent so far.
        while (alive && message_ready(w->srv->native_handle(), w->srv->max_message_size())) {
            if (!w->srv->serve_one()) alive = false;
            drain(peer.get());
        }
    }
    // End of input: the client hangs up; the server reads what is left, then drops it.
    ::shutdown(peer.get(), SHUT_WR);
    while (alive) {
        if (!w->srv->serve_one()) alive = false;
        drain(peer.get());
    }
    w->srv->drop_client();
    peer.reset();
    if (open_fds() != baseline) {
        std::fprintf(stderr, "fd leak: %d sockets/eventfds/memfds open, %d before\n", open_fds(true), baseline);
        std::abort();
    }
    return 0;
}
