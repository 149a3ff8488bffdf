// vvu-trace: a live vhost-user tracer. It sits between a front-end (which connects to
// --listen) and a back-end (which vvu-trace connects to, at --connect, when a front-end
// arrives), passes every message and every fd through unchanged, and prints each message as
// vvu-decode prints a transcript (or as JSON lines with --json); --capture writes the session
// as a transcript that vvu-decode reads.
//
// Only the control plane crosses the tracer: memory, kick and call fds are passed on as they
// came (SCM_RIGHTS), so the data path runs between the peers. The back-end channel is traced
// too: on SET_BACKEND_REQ_FD the back-end gets one end of a socketpair of the tracer's, and the
// tracer relays between its other end and the front-end's fd.
//
// A message the codec refuses (an unknown request id, a known one breaking the rules) is
// printed raw and forwarded all the same. What cannot be forwarded faithfully ends the session:
// a header announcing more than the largest payload of any request, more fds than vhost-user
// allows, a message cut short or stalled for more than 2 s after its first byte. A session ends
// when either side closes: the tracer closes the other side and waits for the next front-end
// (--once: exits instead). SIGINT / SIGTERM end the tracer with status 0.
#include "../common/command_line.hpp"
#include "../common/stop_signals.hpp"

#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/transport/unix_listener.hpp>
#include <vvu/util/scm_rights.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/wire.hpp>

#include <fmt/format.h>

#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace {

using namespace std::chrono_literals;
using vvu::unique_fd;
using vvu::transport::framed_socket;
using vvu::transport::owned_fds;
using entry = vvu::wire::transcript_entry;
using verdict = vvu::wire::entry_description::verdict;

constexpr auto message_deadline = 2s;  // from a message's first byte to its last
constexpr auto forward_timeout = 5s;   // a peer that takes no bytes for this long is stuck
constexpr auto backend_connect_timeout = 5s;

struct options {
    std::string listen_path;
    std::string connect_path;
    std::string capture_path;
    bool json = false;
    bool once = false;
};

void usage() {
    std::fputs("usage: vvu-trace --listen PATH --connect PATH [--capture FILE] [--json] [--once]\n"
               "A vhost-user proxy that prints every message: the front-end connects to --listen, vvu-trace\n"
               "connects to the back-end at --connect. --capture writes a transcript for vvu-decode;\n"
               "--json prints JSON lines; --once exits when the first session ends.\n",
               stderr);
}

std::optional<options> parse(int argc, char** argv) {
    options o;
    vvu::examples::command_line cl(argc, argv);
    while (auto arg = cl.next()) {
        bool ok = true;
        if (*arg == "--listen") ok = cl.text(o.listen_path);
        else if (*arg == "--connect") ok = cl.text(o.connect_path);
        else if (*arg == "--capture") ok = cl.text(o.capture_path);
        else if (*arg == "--json") o.json = true;
        else if (*arg == "--once") o.once = true;
        else ok = false;
        if (!ok) return std::nullopt;
    }
    if (o.listen_path.empty() || o.connect_path.empty()) return std::nullopt;
    return o;
}

std::string json_escaped(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += fmt::format("\\{}", c);
        else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else out += c;
    }
    return out;
}

// Where the trace goes: stdout (text or JSON lines, flushed per line so that a reader sees
// each message as it passes) and the capture file.
class printer {
public:
    printer(bool json, std::FILE* capture) : json_(json), capture_(capture) {}

    void message(entry::from sender, entry::channel chan, std::span<const std::byte> bytes, std::size_t fd_count,
                 const vvu::wire::entry_description& d) {
        const double t = seconds();
        if (json_) {
            const auto h = bytes.size() >= vvu::wire::header_size ? vvu::wire::load_header(bytes) : vvu::wire::header{};
            fmt::print("{{\"t\":{:.6f},\"channel\":\"{}\",\"from\":\"{}\",\"request\":\"{}\",\"id\":{},\"flags\":{},"
                       "\"size\":{},\"fds\":{},\"status\":\"{}\",\"text\":\"{}\"}}\n",
                       t, chan == entry::channel::main ? "main" : "backend",
                       sender == entry::from::front_end ? "front-end" : "back-end", request_name(chan, h.request),
                       h.request, h.flags, h.size, fd_count, status_name(d.result), json_escaped(d.text));
        } else {
            fmt::print("{:11.6f} {}\n", t, d.text);
        }
        std::fflush(stdout);
        if (capture_) {
            fmt::print(capture_, "{}\n", vvu::wire::transcript_line(sender, fd_count, bytes, chan));
            std::fflush(capture_);
        }
    }

    // What the tracer itself has to say: "# ..." lines (a comment in a transcript too).
    void note(std::string_view what) {
        if (json_) fmt::print("{{\"t\":{:.6f},\"note\":\"{}\"}}\n", seconds(), json_escaped(what));
        else fmt::print("# {}\n", what);
        std::fflush(stdout);
        if (capture_) {
            fmt::print(capture_, "# {}\n", what);
            std::fflush(capture_);
        }
    }

private:
    static std::string_view request_name(entry::channel chan, std::uint32_t id) {
        if (chan == entry::channel::main)
            return vvu::wire::is_known<vvu::wire::front_request>(id)
                       ? vvu::wire::name(static_cast<vvu::wire::front_request>(id))
                       : "UNKNOWN";
        return vvu::wire::is_known<vvu::wire::back_request>(id) ? vvu::wire::name(static_cast<vvu::wire::back_request>(id))
                                                                : "UNKNOWN";
    }
    static std::string_view status_name(verdict v) {
        switch (v) {
        case verdict::decoded: return "decoded";
        case verdict::unknown_request: return "unknown";
        case verdict::malformed: return "malformed";
        }
        return "?";
    }
    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

    bool json_;
    std::FILE* capture_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// One message as it came off a socket, header checks aside: the tracer forwards what it
// cannot decode, so it frames messages itself rather than through framed_socket::receive,
// which refuses an unknown request before reading its payload.
struct raw_message {
    std::array<std::byte, vvu::wire::max_message_size> storage{};
    std::size_t size = 0;
    owned_fds fds;

    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {storage.data(), size}; }
};

struct read_outcome {
    enum class kind { message, closed, failed } what = kind::message;
    std::string why; // for failed
};

// Reads exactly `want` more bytes into m (fds with them), waiting at most until `deadline`.
read_outcome read_exactly(int fd, raw_message& m, std::size_t want, std::chrono::steady_clock::time_point deadline) {
    const std::size_t end = m.size + want;
    while (m.size < end) {
        bool truncated = false;
        bool fd_overflow = false;
        const ssize_t n = vvu::scm::recv_some(
            fd, m.storage.data() + m.size, end - m.size, vvu::wire::max_fds,
            [&](int received) {
                if (!m.fds.push_back(unique_fd(received))) fd_overflow = true;
            },
            truncated);
        if (truncated || fd_overflow)
            return {read_outcome::kind::failed, fmt::format("more than {} fds with one message", vvu::wire::max_fds)};
        if (n > 0) {
            m.size += static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) {
            if (m.size == 0) return {read_outcome::kind::closed, {}};
            return {read_outcome::kind::failed, fmt::format("connection closed inside a message ({} bytes read)", m.size)};
        }
        if (errno == EINTR) continue;
        if (errno == ECONNRESET && m.size == 0) return {read_outcome::kind::closed, {}};
        if (errno != EAGAIN && errno != EWOULDBLOCK) return {read_outcome::kind::failed, fmt::format("recvmsg: {}", std::strerror(errno))};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return {read_outcome::kind::failed, fmt::format("message stalled after {} bytes", m.size)};
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
    }
    return {};
}

// One whole message from a socket that poll() found readable: the header, then no more payload
// than the largest any request has — a header that announces more is refused unread.
read_outcome read_message(int fd, raw_message& m) {
    m.size = 0;
    m.fds.clear();
    const auto deadline = std::chrono::steady_clock::now() + message_deadline;
    if (auto r = read_exactly(fd, m, vvu::wire::header_size, deadline); r.what != read_outcome::kind::message) return r;
    const auto h = vvu::wire::load_header(m.bytes());
    if (h.size > vvu::wire::max_payload_size)
        return {read_outcome::kind::failed, fmt::format("header announces {} payload bytes, at most {} are valid: {}",
                                                        h.size, vvu::wire::max_payload_size,
                                                        vvu::wire::describe_raw(m.bytes(), m.fds.size()))};
    return read_exactly(fd, m, h.size, deadline);
}

// The back-end's socket, retried while nobody listens yet (a back-end that starts late).
vvu::expected<unique_fd, std::string> connect_backend(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return vvu::unexpected(std::string("socket path too long"));
    std::memcpy(addr.sun_path, path.data(), path.size());
    const auto deadline = std::chrono::steady_clock::now() + backend_connect_timeout;
    while (true) {
        unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd.valid()) return vvu::unexpected(fmt::format("socket: {}", std::strerror(errno)));
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
        const int err = errno;
        if ((err != ENOENT && err != ECONNREFUSED) || std::chrono::steady_clock::now() >= deadline)
            return vvu::unexpected(fmt::format("connect {}: {}", path, std::strerror(err)));
        std::this_thread::sleep_for(10ms);
    }
}

enum class loop_end { session_over, stop_signal };

// One front-end's session: the main socket's two sides and, once SET_BACKEND_REQ_FD has
// passed, the back-end channel's two sides.
class session {
public:
    session(unsigned number, unique_fd front, unique_fd back, printer& out)
        : number_(number), front_(std::move(front)), back_(std::move(back)), out_(out) {}

    loop_end run(int stop_fd) {
        while (true) {
            std::array<pollfd, 5> p{{{stop_fd, POLLIN, 0},
                                     {front_.native_handle(), POLLIN, 0},
                                     {back_.native_handle(), POLLIN, 0},
                                     {channel_back_.native_handle(), POLLIN, 0},
                                     {channel_front_.native_handle(), POLLIN, 0}}};
            if (::poll(p.data(), p.size(), -1) < 0) {
                if (errno == EINTR) continue;
                end(fmt::format("poll: {}", std::strerror(errno)));
                return loop_end::session_over;
            }
            if (p[0].revents != 0) {
                end("stopped");
                return loop_end::stop_signal;
            }
            if (p[1].revents != 0 && !relay(front_, back_, entry::from::front_end, entry::channel::main))
                return loop_end::session_over;
            if (p[2].revents != 0 && !relay(back_, front_, entry::from::back_end, entry::channel::main))
                return loop_end::session_over;
            // The back-end channel's end ends that channel only; the session goes on.
            if (channel_back_.is_open() && p[3].revents != 0)
                relay(channel_back_, channel_front_, entry::from::back_end, entry::channel::backend);
            if (channel_front_.is_open() && p[4].revents != 0)
                relay(channel_front_, channel_back_, entry::from::front_end, entry::channel::backend);
        }
    }

private:
    // Reads one message from `from`, prints it, forwards it to `to`. False when the session
    // (or, on the back-end channel, the channel) is over.
    bool relay(framed_socket& from, framed_socket& to, entry::from sender, entry::channel chan) {
        const std::string_view who = sender == entry::from::front_end ? "front-end" : "back-end";
        const std::string_view where = chan == entry::channel::main ? "" : " on the back-end channel";
        raw_message m;
        const auto r = read_message(from.native_handle(), m);
        if (r.what != read_outcome::kind::message) {
            const std::string why = r.what == read_outcome::kind::closed
                                        ? fmt::format("{} closed{}", who, where)
                                        : fmt::format("{} sent a malformed message{}: {}", who, where, r.why);
            if (chan == entry::channel::backend) {
                out_.note(fmt::format("session {}: back-end channel closed ({})", number_, why));
                channel_back_.close();
                channel_front_.close();
                return false;
            }
            end(why);
            return false;
        }
        ++messages_;
        const auto d = vvu::wire::describe_entry(sender, chan, m.bytes(), m.fds.size());
        out_.message(sender, chan, m.bytes(), m.fds.size(), d);
        if (d.result == verdict::unknown_request) ++unknown_;
        if (d.result == verdict::malformed) {
            ++malformed_;
            out_.note(fmt::format("session {}: malformed message from the {}{} forwarded unchanged: {}", number_, who,
                                  where, d.reason));
        }

        std::array<int, vvu::wire::max_fds> fds{};
        std::copy(m.fds.span().begin(), m.fds.span().end(), fds.begin());
        unique_fd channel_for_backend;
        if (chan == entry::channel::main && sender == entry::from::front_end && d.result == verdict::decoded &&
            m.size >= vvu::wire::header_size &&
            vvu::wire::load_header(m.bytes()).request ==
                static_cast<std::uint32_t>(vvu::wire::front_request::set_backend_req_fd)) {
            // The back-end gets a socket of the tracer's instead; the front-end's fd is kept to
            // relay to.
            auto pair = vvu::transport::open_framed_socket_pair();
            if (!pair) {
                end(fmt::format("socketpair for the back-end channel: {}", pair.error().message()));
                return false;
            }
            channel_front_ = framed_socket(m.fds.take(0));
            channel_back_ = std::move(pair->local);
            channel_for_backend = std::move(pair->remote);
            fds[0] = channel_for_backend.get();
            out_.note(fmt::format("session {}: back-end channel proxied", number_));
        }
        if (!to.is_open()) return true; // the back-end channel's other side is gone: dropped
        if (auto s = to.send(m.bytes(), std::span<const int>(fds.data(), m.fds.size()), forward_timeout); !s) {
            const std::string why = fmt::format("forwarding to the {}{} failed: {}",
                                                sender == entry::from::front_end ? "back-end" : "front-end", where,
                                                s.error().message());
            if (chan == entry::channel::backend) {
                out_.note(fmt::format("session {}: back-end channel closed ({})", number_, why));
                channel_back_.close();
                channel_front_.close();
                return false;
            }
            end(why);
            return false;
        }
        return true; // m's fds (our copies) close here: they live on in the receiver
    }

    void end(std::string_view why) {
        out_.note(fmt::format("session {} ended ({}): {} messages, {} unknown, {} malformed", number_, why, messages_,
                              unknown_, malformed_));
    }

    unsigned number_;
    framed_socket front_;
    framed_socket back_;
    framed_socket channel_back_;  // the tracer's end of the socketpair the back-end was given
    framed_socket channel_front_; // the front-end's back-end channel fd
    printer& out_;
    std::size_t messages_ = 0;
    std::size_t unknown_ = 0;
    std::size_t malformed_ = 0;
};

} // namespace

int main(int argc, char** argv) {
    const auto opt = parse(argc, argv);
    if (!opt) {
        usage();
        return 2;
    }
    const sigset_t stop_set = vvu::examples::block_stop_signals();
    unique_fd stop_fd(::signalfd(-1, &stop_set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!stop_fd.valid()) {
        fmt::print(stderr, "vvu-trace: signalfd: {}\n", std::strerror(errno));
        return 1;
    }
    std::FILE* capture = nullptr;
    if (!opt->capture_path.empty()) {
        capture = std::fopen(opt->capture_path.c_str(), "we");
        if (!capture) {
            fmt::print(stderr, "vvu-trace: cannot write {}: {}\n", opt->capture_path, std::strerror(errno));
            return 1;
        }
        fmt::print(capture, "# vvu-trace capture: front-end at {}, back-end at {}\n", opt->listen_path,
                   opt->connect_path);
    }
    printer out(opt->json, capture);
    auto listener = vvu::transport::unix_listener::listen(opt->listen_path);
    if (!listener) {
        fmt::print(stderr, "vvu-trace: listen {}: {}\n", opt->listen_path, listener.error().message());
        return 1;
    }
    out.note(fmt::format("listening on {}, back-end at {}", opt->listen_path, opt->connect_path));

    unsigned sessions = 0;
    bool stopped = false;
    while (!stopped) {
        std::array<pollfd, 2> p{{{stop_fd.get(), POLLIN, 0}, {listener->native_handle(), POLLIN, 0}}};
        if (::poll(p.data(), p.size(), -1) < 0) {
            if (errno == EINTR) continue;
            fmt::print(stderr, "vvu-trace: poll: {}\n", std::strerror(errno));
            break;
        }
        if (p[0].revents != 0) {
            stopped = true;
            break;
        }
        auto front = listener->try_accept();
        if (!front) {
            out.note(fmt::format("accept: {}", front.error().message()));
            continue;
        }
        if (!front->valid()) continue;
        ++sessions;
        auto back = connect_backend(opt->connect_path);
        if (!back) {
            out.note(fmt::format("session {}: no back-end ({}); front-end closed", sessions, back.error()));
        } else {
            out.note(fmt::format("session {}: front-end connected, back-end connected", sessions));
            session s(sessions, std::move(*front), std::move(*back), out);
            stopped = s.run(stop_fd.get()) == loop_end::stop_signal;
        }
        if (opt->once) break;
    }
    out.note(stopped ? "tracer stopped by a signal" : "tracer done");
    if (capture) std::fclose(capture);
    return 0;
}
