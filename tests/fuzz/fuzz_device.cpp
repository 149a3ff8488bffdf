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
// What an input does depends on its bytes alone, not on timing (a finding reproduces):
//   - It starts once the last session is over on both sides: the device has closed its socket
//     and a driver has set BACKEND_UP again (device_progress::ready_for_frontend), and the
//     driver waits in wait_for_frontend with a fresh net_port and state machine, having acted
//     on every config interrupt of the last session. So the device connects it at once, and
//     nothing an input set survives into the next. No byte is sent before the driver has
//     taken the session (seen FRONTEND_UP).
//   - The stream is paced by events: at each message boundary (12-byte header + its size)
//     the harness waits until the device has read every byte so far, owes the driver nothing
//     (each message on the rxq, each reply passed on) and the driver has handled each message
//     (device_progress, and a count the driver's loop keeps). A chunk that spans boundaries is
//     sent in pieces, its fds with the first: the device reads exact message bytes, so it sees
//     the fds at the same place. Once the device has ended the session the rest is not sent.
//   - After the last chunk the socket is shut for writing: the device reads what was sent and
//     then EOF (a stream that stops mid-message ends there, not by a timeout). Replies are
//     read on their own thread for the whole input (the device never waits for us) until the
//     device closes the socket.
//   - Every wait is bounded by 10 s; one that runs out is a hang, a finding (abort). The
//     device's message timeout (5 s) decides nothing.
// The device and the driver live across inputs as they do in production; a crash, an
// ASan/UBSan report or a leak in either is a finding.
//
// VVU_FUZZ_DEVICE_DIGEST=1: one line per input, "fuzz_device digest: <input hash> <reply
// bytes> <reply hash> <how the device ended the session>" (FNV-1a 64), so two runs over the
// same inputs can be compared (tests/fuzz/device_digest.sh). VVU_FUZZ_DEVICE_LOG=1: the
// device's event log. VVU_FUZZ_DEVICE_STATS=1: how many inputs reached the driver.
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
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace vvu;
using namespace std::chrono_literals;

namespace {

// How long any wait of the harness may take before it is a hang (a finding).
constexpr auto hang_limit = 10s;


struct fnv1a {
    std::uint64_t value = 0xcbf29ce484222325ULL;
    void add(std::span<const std::uint8_t> bytes) {
        for (std::uint8_t b : bytes) value = (value ^ b) * 0x100000001b3ULL;
    }
};

// The device and the driver, started once and never torn down (their threads run until the
// fuzzer exits; the object stays reachable, so it is not a leak).
struct world {
    std::string fe_path, pci_path;
    std::unique_ptr<vvu_device::device_model> device;
    std::thread device_thread;
    std::optional<transport::vvu_pci> driver;
    std::thread control;
    const bool digest = std::getenv("VVU_FUZZ_DEVICE_DIGEST") != nullptr;

    // What an input waits for, written by the device's thread (progress, log), the driver's
    // (control) and the reply reader; guarded by `m`, announced on `cv`.
    std::mutex m;
    std::condition_variable cv;
    vvu_device::device_progress progress;
    bool driver_waiting = false;      // in wait_for_frontend, the last session closed
    std::uint64_t driver_handled = 0; // messages the driver handled this session
    std::uint64_t sessions = 0;       // front-ends the driver served
    std::string ended_by;             // the device's reason for its last disconnect

    template <class F>
    void update(F f) {
        {
            std::lock_guard lock(m);
            f();
        }
        cv.notify_all();
    }
    template <class Pred>
    void wait(const char* what, Pred ready) {
        std::unique_lock lock(m);
        if (cv.wait_for(lock, hang_limit, ready)) return;
        const auto& p = progress;
        std::fprintf(stderr,
                     "fuzz_device: hang: %s took more than %lld s (device: socket %llu, %llu ended, %llu bytes read, "
                     "%llu messages to the driver, %s, %s; driver: %s, %llu sessions, %llu handled)\n",
                     what, static_cast<long long>(std::chrono::seconds(hang_limit).count()),
                     static_cast<unsigned long long>(p.frontend_sockets), static_cast<unsigned long long>(p.sessions_ended),
                     static_cast<unsigned long long>(p.frontend_bytes), static_cast<unsigned long long>(p.to_driver),
                     p.driver_owed ? "owes the driver" : "owes nothing",
                     p.ready_for_frontend ? "ready for a front-end" : "not ready", driver_waiting ? "waiting" : "serving",
                     static_cast<unsigned long long>(sessions), static_cast<unsigned long long>(driver_handled));
        std::abort();
    }

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
        o.message_timeout = 5s; // below hang_limit: a device stuck on it shows as a hang
        const bool print = std::getenv("VVU_FUZZ_DEVICE_LOG") != nullptr; // the event log, for a harness check
        o.log = [this, print](std::string_view line) {
            if (print) std::fprintf(stderr, "vvu-device: %.*s\n", int(line.size()), line.data());
            constexpr std::string_view disconnected = "front-end disconnected: ";
            if (line.starts_with(disconnected)) update([&] { ended_by = line.substr(disconnected.size()); });
        };
        o.progress = [this](const vvu_device::device_progress& p) { update([&] { progress = p; }); };
        auto d = vvu_device::device_model::create(std::move(o));
        if (!d) std::abort();
        device = std::move(*d);
        device_thread = std::thread([this] { (void)device->run(); });
        auto t = transport::vvu_pci::connect(pci_path);
        if (!t) std::abort();
        driver.emplace(std::move(*t));
        control = std::thread([this] { serve(); });
    }

    // The driver's control thread: protocol::backend::serve() unrolled, so that the harness
    // knows when the driver has handled each message.
    void serve() {
        unique_fd settle(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!settle) std::abort();
        driver->set_interrupt(settle.get());
        auto fail = [](const char* what, const transport::error& e) {
            std::fprintf(stderr, "fuzz_device: the driver's %s failed: %s\n", what, e.message().c_str());
            std::abort();
        };
        for (;;) {
            // A fresh port and state machine per session: nothing an input set (an MTU, the
            // data path's counters) reaches the next.
            device::net::net_port port{device::net::net_port::options{}};
            protocol::backend<transport::vvu_pci, device::net::net_port> backend(*driver, port);
            // The config interrupts of the last session are all sent once the device has closed
            // its socket; a wait_for_frontend that cannot block (`settle` readable) acts on any
            // the driver has not seen (a FRONTEND_UP it saw fall only by the status: BACKEND_UP
            // cleared and set again) and returns. Else it would act on them as the next
            // session begins, and end that one.
            wait("the device ending its session", [&] { return progress.sessions_ended == progress.frontend_sockets; });
            const std::uint64_t one = 1;
            if (::write(settle.get(), &one, sizeof one) != sizeof one) std::abort();
            if (auto r = driver->wait_for_frontend(); r || r.error().code != transport::errc::interrupted)
                fail("settling wait_for_frontend", r ? transport::error(transport::errc::not_connected) : r.error());
            std::uint64_t drained = 0;
            if (::read(settle.get(), &drained, sizeof drained) != sizeof drained) std::abort();
            update([&] {
                driver_waiting = true;
                driver_handled = 0;
            });
            if (auto up = driver->wait_for_frontend(); !up) fail("wait_for_frontend", up.error());
            update([&] {
                driver_waiting = false;
                ++sessions;
            });
            for (;;) {
                auto msg = driver->receive();
                if (!msg || !backend.serve_message(*msg)) break;
                update([&] { ++driver_handled; });
            }
            backend.end_session();
            driver->close_session();
        }
    }
};

world& the_world() {
    static world* w = [] {
        auto* made = new world; // see `world`
        // VVU_FUZZ_DEVICE_STATS=1: how many inputs reached the driver (a check of the harness).
        if (std::getenv("VVU_FUZZ_DEVICE_STATS") != nullptr)
            std::atexit([] {
                world& w = the_world();
                std::lock_guard lock(w.m);
                std::fprintf(stderr, "fuzz_device: %llu sessions reached the driver\n",
                             static_cast<unsigned long long>(w.sessions));
            });
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

struct chunk {
    std::uint8_t fd_spec;
    std::span<const std::uint8_t> bytes;
};

// The input's chunks (see the top of the file).
std::vector<chunk> chunks_of(std::span<const std::uint8_t> in) {
    std::vector<chunk> out;
    while (in.size() >= 3) {
        const std::size_t len = std::min<std::size_t>((in[1] | (in[2] << 8)) & 0x3ff, in.size() - 3);
        out.push_back({in[0], in.subspan(3, len)});
        in = in.subspan(3 + len);
    }
    return out;
}

// Where the messages of the stream (the chunks' bytes in a row) end, as the device frames
// them: a 12-byte header whose last u32 is the payload's size. Only ends inside the stream.
std::vector<std::uint64_t> message_ends(const std::vector<chunk>& chunks) {
    std::vector<std::uint8_t> stream;
    for (const chunk& c : chunks) stream.insert(stream.end(), c.bytes.begin(), c.bytes.end());
    std::vector<std::uint64_t> ends;
    std::uint64_t at = 0;
    while (at + 12 <= stream.size()) {
        const std::uint8_t* size = stream.data() + at + 8;
        at += 12 + (std::uint64_t{size[0]} | std::uint64_t{size[1]} << 8 | std::uint64_t{size[2]} << 16 |
                    std::uint64_t{size[3]} << 24);
        if (at > stream.size()) break;
        ends.push_back(at);
    }
    return ends;
}

// Sends bytes (with `fds`, if any: they ride with the first byte); false once the device has
// closed the connection.
bool send_piece(int sock, std::span<const std::uint8_t> bytes, std::span<const int> fds) {
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 2)> control{};
    iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        // Within a message the device reads on (it owes no one at a boundary): a full socket
        // that stays full is a hang.
        pollfd p{sock, POLLOUT, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(hang_limit).count()));
        if (ready == 0) {
            std::fprintf(stderr, "fuzz_device: hang: the device read no more of a message for %lld s\n",
                         static_cast<long long>(std::chrono::seconds(hang_limit).count()));
            std::abort();
        }
        if (ready < 0 && errno != EINTR) return false;
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

// Reads the device's replies until it closes the socket, hashing them.
struct reply_reader {
    world& w;
    int sock;
    fnv1a hash;
    std::uint64_t bytes = 0;
    bool done = false; // under w.m
    std::thread thread; // last: it starts with the rest made

    reply_reader(world& to, int fd) : w(to), sock(fd), thread([this] { run(); }) {}

    void run() {
        std::array<std::uint8_t, 4096> buf;
        for (;;) {
            const ssize_t n = ::recv(sock, buf.data(), buf.size(), 0);
            if (n > 0) {
                hash.add(std::span(buf).first(static_cast<std::size_t>(n)));
                bytes += static_cast<std::uint64_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            break; // EOF, or ECONNRESET (the device closed with our bytes unread): closed either way
        }
        w.update([&] { done = true; });
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    world& w = the_world();
    const std::vector<chunk> chunks = chunks_of(std::span(data, size));
    const std::vector<std::uint64_t> ends = message_ends(chunks);

    std::uint64_t sessions_ended = 0, socket = 0, driver_sessions = 0;
    w.wait("the last session winding down", [&] {
        sessions_ended = w.progress.sessions_ended;
        socket = w.progress.frontend_sockets + 1;
        driver_sessions = w.sessions + 1;
        return w.progress.ready_for_frontend && w.driver_waiting;
    });
    auto session_over = [&] { return w.progress.sessions_ended != sessions_ended; };

    unique_fd sock = connect_frontend(w.fe_path);
    reply_reader replies(w, sock.get());
    // The driver takes the session before a byte is sent, so that every session ends in its
    // serving loop (one the device ended before the driver saw FRONTEND_UP would leave it an
    // announcement to act on later, as the next session begins).
    w.wait("the driver taking the session", [&] {
        return w.progress.frontend_sockets == socket && w.sessions == driver_sessions && !w.driver_waiting;
    });

    std::uint64_t sent = 0; // bytes of the stream
    auto next_end = ends.begin();
    bool open = true;
    for (const chunk& c : chunks) {
        if (!open) break;
        std::vector<unique_fd> owned;
        const int count = c.fd_spec & 3;
        for (int i = 0; i < (count == 3 ? 0 : count); ++i) {
            const bool memfd = ((c.fd_spec >> 2) & 1) == (i == 0 ? 1 : 0);
            owned.push_back(memfd ? make_memfd() : unique_fd(::eventfd(0, EFD_CLOEXEC)));
        }
        std::array<int, 2> raw{};
        for (std::size_t i = 0; i < owned.size(); ++i) raw[i] = owned[i].get();
        std::span<const int> fds(raw.data(), owned.size());
        std::span<const std::uint8_t> rest = c.bytes;
        while (open && !rest.empty()) {
            // Up to the next message end in this chunk, then wait for the device and driver.
            const bool at_end = next_end != ends.end() && *next_end - sent <= rest.size();
            const std::size_t n = at_end ? static_cast<std::size_t>(*next_end - sent) : rest.size();
            open = send_piece(sock.get(), rest.first(n), fds);
            fds = {};
            rest = rest.subspan(n);
            sent += n;
            if (!open || !at_end) continue;
            const std::uint64_t upto = *next_end++;
            bool over = false;
            w.wait("the device and the driver handling a message", [&] {
                over = session_over();
                return over || (w.progress.frontend_sockets == socket && w.progress.frontend_bytes == upto &&
                                !w.progress.driver_owed &&
                                w.driver_handled == w.progress.to_driver);
            });
            open = !over;
        }
    }
    // The end of the input: EOF for the device, which closes the socket in turn.
    ::shutdown(sock.get(), SHUT_WR);
    w.wait("the device closing the socket after EOF", [&] { return replies.done && session_over(); });
    replies.thread.join();
    if (w.digest) {
        std::string ended_by;
        {
            std::lock_guard lock(w.m);
            ended_by = w.ended_by;
        }
        fnv1a input;
        input.add(std::span(data, size));
        std::fprintf(stderr, "fuzz_device digest: %016llx %llu %016llx %s\n", static_cast<unsigned long long>(input.value),
                     static_cast<unsigned long long>(replies.bytes), static_cast<unsigned long long>(replies.hash.value),
                     ended_by.c_str());
    }
    return 0;
}
