// The transport layer's framing (framed_socket) and error messages: recvmsg/sendmsg with
// SCM_RIGHTS, shared by the main socket and the back-end channel.
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/handover_socket.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/scm_rights.hpp>

#include <fmt/format.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

namespace vvu::transport {
namespace {

using clock = std::chrono::steady_clock;

class deadline {
public:
    explicit deadline(std::chrono::milliseconds timeout) {
        if (timeout.count() >= 0) at_ = clock::now() + timeout;
    }
    // Milliseconds left for poll(): -1 forever, 0 when passed.
    int remaining() const noexcept {
        if (!at_) return -1;
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*at_ - clock::now()).count();
        return static_cast<int>(std::clamp<std::int64_t>(left, 0, INT_MAX));
    }

private:
    std::optional<clock::time_point> at_;
};

error system_error(const char* op, int err = errno) { return error(std::error_code(err, std::system_category()), op); }

// Waits until fd has `events` ready; stop (wake readable) wins over readiness, and readiness
// over an interrupt (`interrupt` readable: -1 where a message has begun and must be finished).
expected<void, error> wait_ready(int fd, short events, int wake, const deadline& dl, int interrupt = -1) {
    for (;;) {
        pollfd p[3] = {{fd, events, 0}, {wake, POLLIN, 0}, {interrupt, POLLIN, 0}};
        const int r = ::poll(p, 3, dl.remaining()); // negative fds are ignored by poll
        if (r < 0) {
            if (errno == EINTR) continue;
            return unexpected(system_error("poll"));
        }
        if (wake >= 0 && (p[1].revents & POLLIN) != 0) return unexpected(error(errc::stopped));
        if (p[0].revents == 0 && interrupt >= 0 && (p[2].revents & POLLIN) != 0) return unexpected(error(errc::interrupted));
        if (r == 0) return unexpected(error(errc::timed_out));
        if (p[0].revents != 0) return {}; // ready, or HUP/ERR that the next call reports
    }
}

// One recvmsg: up to len bytes into buf, SCM_RIGHTS fds into fds. Sets `overflow` when more
// fds came than fit (MSG_CTRUNC, or over max_fds across the reads of one message); the fds
// that did not fit are closed (by the kernel, or by owned_fds::push_back).
ssize_t recv_some(int fd, std::byte* buf, std::size_t len, owned_fds& fds, bool& overflow) noexcept {
    return scm::recv_some(
        fd, buf, len, wire::max_fds, [&](int v) { overflow |= !fds.push_back(unique_fd(v)); }, overflow);
}

// Reads exactly len bytes of a stream message: `wait(between)` blocks until readable (between:
// nothing of this message read yet, where an interrupt may stop the wait), `receive(buf, n,
// mid)` is one recvmsg that may take fds. A peer that goes before the message's first byte is
// errc::disconnected, inside it errc::truncated. `started`: bytes of the message came before.
template <class Wait, class Receive>
expected<void, error> read_exact(std::byte* buf, std::size_t len, bool started, Wait&& wait, Receive&& receive) {
    std::size_t got = 0;
    while (got < len) {
        const bool mid = started || got > 0;
        if (auto w = wait(!mid); !w) return w;
        const ssize_t n = receive(buf + got, len - got, mid);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            if (errno == ECONNRESET) return unexpected(error(mid ? errc::truncated : errc::disconnected));
            return unexpected(system_error("recvmsg"));
        }
        if (n == 0) return unexpected(error(mid ? errc::truncated : errc::disconnected));
        got += static_cast<std::size_t>(n);
    }
    return {};
}

// framed_socket's reads: fds of any part of the message are kept (vhost-user allows them with
// any byte); more than wire::max_fds is an error.
struct reader {
    int fd;
    int wake;
    int interrupt;
    const deadline& dl;
    owned_fds& fds;
    bool overflow = false;

    expected<void, error> read_exact(std::byte* buf, std::size_t len, bool started) {
        auto r = transport::read_exact(
            buf, len, started,
            [&](bool between_messages) { return wait_ready(fd, POLLIN, wake, dl, between_messages ? interrupt : -1); },
            [&](std::byte* b, std::size_t n, bool) { return recv_some(fd, b, n, fds, overflow); });
        if (!r) return r;
        if (overflow) return unexpected(error(errc::too_many_fds));
        return {};
    }
};

} // namespace

std::string error::message() const {
    if (code.category() == wire::wire_category()) return wire.message();
    if (!detail.empty()) return detail;
    if (op != nullptr) return fmt::format("{}: {}", op, code.message());
    return code.message();
}

expected<framed_socket_pair, error> open_framed_socket_pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return unexpected(error(std::error_code(errno, std::system_category()), "socketpair"));
    return framed_socket_pair{framed_socket(unique_fd(sv[0])), unique_fd(sv[1])};
}

expected<received_message, error> framed_socket::receive(wire::channel chan, std::chrono::milliseconds timeout) {
    if (!fd_) return unexpected(error(errc::not_connected));
    const deadline dl(timeout);
    received_message m;
    reader r{fd_.get(), wake_, interrupt_, dl, m.fds};
    if (auto h = r.read_exact(m.storage.data(), wire::header_size, false); !h) return unexpected(h.error());
    m.header = wire::load_header(m.storage);
    // Refuse before reading a byte of payload: an oversize size is never trusted.
    auto ok = chan == wire::channel::front ? wire::check_header<wire::front_request>(m.header)
                                           : wire::check_header<wire::back_request>(m.header);
    if (!ok) return unexpected(error(ok.error()));
    if (auto p = r.read_exact(m.storage.data() + wire::header_size, m.header.size, true); !p)
        return unexpected(p.error());
    return m;
}

expected<void, error> framed_socket::send(std::span<const std::byte> bytes, std::span<const int> fds,
                                          std::chrono::milliseconds timeout) {
    if (!fd_) return unexpected(error(errc::not_connected));
    if (fds.size() > wire::max_fds) return unexpected(error(errc::too_many_fds));
    const deadline dl(timeout);
    std::size_t sent = 0;
    bool fds_sent = fds.empty();
    while (sent < bytes.size() || !fds_sent) {
        const iovec iov{const_cast<std::byte*>(bytes.data() + sent), bytes.size() - sent};
        // The fds ride with the first bytes of the message (SCM_RIGHTS needs at least one).
        const ssize_t n = scm::send_some(fd_.get(), std::span(&iov, 1), fds_sent ? std::span<const int>{} : fds);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (auto w = wait_ready(fd_.get(), POLLOUT, wake_, dl); !w) return w;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET)
                return unexpected(error(sent == 0 ? errc::disconnected : errc::truncated));
            return unexpected(system_error("sendmsg"));
        }
        fds_sent = true;
        sent += static_cast<std::size_t>(n);
    }
    return {};
}

// ------------------------------------------------------------------ handover_socket
namespace {

void put32(std::byte* p, std::uint32_t v) noexcept { le::store<std::uint32_t>(p, v); }
void put16(std::byte* p, std::uint16_t v) noexcept { le::store<std::uint16_t>(p, v); }

} // namespace

expected<handover_socket, error> handover_socket::connect(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) return unexpected(error(std::error_code(ENAMETOOLONG, std::system_category()), "connect"));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    const deadline dl(timeout);
    for (;;) {
        unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) return unexpected(system_error("socket"));
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return handover_socket(std::move(fd));
        const int e = errno;
        // The old process may be starting: a missing path or a refusal is retried to the deadline.
        if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || dl.remaining() == 0)
            return unexpected(error(std::error_code(e, std::system_category()), "connect"));
        ::poll(nullptr, 0, std::min(dl.remaining() < 0 ? 10 : dl.remaining(), 10));
    }
}

expected<void, error> handover_socket::send(std::uint16_t type, std::span<const std::byte> payload,
                                            std::span<const int> fds, std::chrono::milliseconds timeout) {
    if (!fd_) return unexpected(error(errc::not_connected));
    if (fds.size() > max_fds || payload.size() > max_payload) return unexpected(error(errc::malformed, std::string("record too large")));
    std::array<std::byte, header_size> h{};
    put32(h.data(), magic);
    put16(h.data() + 4, version);
    put16(h.data() + 6, type);
    put32(h.data() + 8, static_cast<std::uint32_t>(payload.size()));
    put32(h.data() + 12, static_cast<std::uint32_t>(fds.size()));
    const deadline dl(timeout);
    std::size_t sent = 0;
    const std::size_t total = h.size() + payload.size();
    while (sent < total) {
        iovec iov[2];
        int n_iov = 0;
        if (sent < h.size()) iov[n_iov++] = {h.data() + sent, h.size() - sent};
        const std::size_t p_off = sent > h.size() ? sent - h.size() : 0;
        if (p_off < payload.size()) iov[n_iov++] = {const_cast<std::byte*>(payload.data() + p_off), payload.size() - p_off};
        // The fds ride with the record's first byte.
        const ssize_t n = scm::send_some(fd_.get(), std::span(iov, static_cast<std::size_t>(n_iov)),
                                         sent == 0 ? fds : std::span<const int>{});
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (auto w = wait_ready(fd_.get(), POLLOUT, -1, dl); !w) return w;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET) return unexpected(error(sent == 0 ? errc::disconnected : errc::truncated));
            return unexpected(system_error("sendmsg"));
        }
        sent += static_cast<std::size_t>(n);
    }
    return {};
}

expected<handover_socket::record, error> handover_socket::receive(std::chrono::milliseconds timeout) {
    if (!fd_) return unexpected(error(errc::not_connected));
    const deadline dl(timeout);
    record rec;
    bool overflow = false;
    auto take = [&](int v) {
        unique_fd fd(v);
        if (rec.fds.size() < max_fds) rec.fds.push_back(std::move(fd));
        else overflow = true;
    };
    // Reads exactly len bytes; fds may come with the record's first byte only.
    bool fds_inside = false;
    auto read_exact = [&](std::byte* buf, std::size_t len, bool started) -> expected<void, error> {
        auto r = transport::read_exact(
            buf, len, started, [&](bool) { return wait_ready(fd_.get(), POLLIN, -1, dl); },
            [&](std::byte* b, std::size_t n, bool mid) {
                const std::size_t before = rec.fds.size();
                const ssize_t got = scm::recv_some(fd_.get(), b, n, max_fds, take, overflow);
                if (mid && rec.fds.size() != before) fds_inside = true;
                return got;
            });
        if (!r) return r;
        if (fds_inside) return unexpected(error(errc::malformed, std::string("file descriptors in the middle of a record")));
        if (overflow) return unexpected(error(errc::malformed, std::string("more file descriptors than a record may carry")));
        return {};
    };
    std::array<std::byte, header_size> h{};
    if (auto r = read_exact(h.data(), h.size(), false); !r) return unexpected(r.error());
    if (le::load<std::uint32_t>(h.data()) != magic) return unexpected(error(errc::malformed, std::string("not a vvu hand-over record (bad magic)")));
    rec.version = le::load<std::uint16_t>(h.data() + 4);
    rec.type = le::load<std::uint16_t>(h.data() + 6);
    const std::uint32_t size = le::load<std::uint32_t>(h.data() + 8);
    const std::uint32_t nfds = le::load<std::uint32_t>(h.data() + 12);
    if (rec.version != version)
        return unexpected(error(errc::unsupported_version,
                                fmt::format("hand-over protocol version {} (this build speaks version {})", rec.version, version)));
    if (size > max_payload) return unexpected(error(errc::malformed, fmt::format("record of {} bytes (at most {})", size, max_payload)));
    if (nfds != rec.fds.size())
        return unexpected(error(errc::malformed, fmt::format("record announces {} fds, {} came", nfds, rec.fds.size())));
    rec.payload.resize(size);
    if (auto r = read_exact(rec.payload.data(), size, true); !r) return unexpected(r.error());
    return rec;
}

} // namespace vvu::transport
