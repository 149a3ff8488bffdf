// unix_socket: listening, accepting and connecting with Boost.Asio local::stream_protocol;
// the messages themselves go through framed_socket on the native handle.
#include <vvu/transport/unix_socket.hpp>
#include <vvu/transport/unix_listener.hpp>

#include "asio_glue.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <optional>

namespace vvu::transport {
namespace {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

using detail::from_asio;
using detail::set_cloexec;

bool is_readable(int fd) noexcept {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// Sleeps up to `d`; returns early with errc::stopped or errc::interrupted.
expected<void, error> sleep_unless_woken(int wake, int interrupt, std::chrono::milliseconds d) noexcept {
    pollfd p[2] = {{wake, POLLIN, 0}, {interrupt, POLLIN, 0}};
    const auto until = std::chrono::steady_clock::now() + d;
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
        if (left <= 0) return {};
        const int r = ::poll(p, 2, static_cast<int>(std::min<std::int64_t>(left, INT_MAX)));
        if (r > 0) return unexpected(error((p[0].revents & POLLIN) != 0 ? errc::stopped : errc::interrupted));
        if (r == 0 || errno != EINTR) return {};
    }
}

} // namespace

struct unix_socket::impl {
    mode role;
    std::string path;
    backoff retry;
    unique_fd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    asio::io_context io;                  // client mode: connecting
    std::optional<unix_listener> listener; // server mode
    framed_socket session;
    int interrupt = -1; // not owned (set_interrupt)

    impl(mode m, std::string p, backoff b) : role(m), path(std::move(p)), retry(b) {}

    bool stopped() const noexcept { return is_readable(wake.get()); }

    expected<void, error> open_listener() {
        if (!wake) return unexpected(error(std::error_code(errno, std::system_category()), "eventfd"));
        auto l = unix_listener::listen(path);
        if (!l) return unexpected(l.error());
        listener.emplace(std::move(*l));
        return {};
    }

    expected<void, error> accept() {
        for (;;) {
            pollfd p[3] = {{listener->native_handle(), POLLIN, 0}, {wake.get(), POLLIN, 0}, {interrupt, POLLIN, 0}};
            if (::poll(p, 3, -1) < 0) {
                if (errno == EINTR) continue;
                return unexpected(error(std::error_code(errno, std::system_category()), "poll"));
            }
            if ((p[1].revents & POLLIN) != 0) return unexpected(error(errc::stopped));
            if ((p[2].revents & POLLIN) != 0) return unexpected(error(errc::interrupted));
            if (p[0].revents == 0) continue;
            auto fd = listener->try_accept();
            if (!fd) return unexpected(fd.error());
            if (!*fd) continue;
            adopt_session(std::move(*fd));
            return {};
        }
    }

    expected<void, error> connect() {
        const auto start = std::chrono::steady_clock::now();
        std::chrono::milliseconds delay = retry.initial;
        for (;;) {
            if (stopped()) return unexpected(error(errc::stopped));
            if (interrupt >= 0 && is_readable(interrupt)) return unexpected(error(errc::interrupted));
            stream::socket s(io);
            boost::system::error_code ec;
            s.connect(stream::endpoint(path), ec);
            if (!ec) {
                const int fd = s.release(ec);
                if (ec) return unexpected(from_asio(ec, "connect"));
                set_cloexec(fd);
                adopt_session(unique_fd(fd));
                return {};
            }
            // Missing path or nobody accepting: the front-end is not there (yet, or again).
            // EAGAIN: its backlog is full.
            const int e = ec.value();
            if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) return unexpected(from_asio(ec, "connect"));
            if (retry.give_up_after.count() >= 0) {
                const auto spent = std::chrono::steady_clock::now() - start;
                if (spent >= retry.give_up_after) return unexpected(error(errc::timed_out));
                delay = std::min(delay, std::chrono::ceil<std::chrono::milliseconds>(retry.give_up_after - spent));
            }
            if (auto slept = sleep_unless_woken(wake.get(), interrupt, delay); !slept) return slept;
            delay = std::min(delay * 2, retry.max);
            if (delay.count() <= 0) delay = std::chrono::milliseconds(1);
        }
    }

    void adopt_session(unique_fd fd) {
        session = framed_socket(std::move(fd), wake.get());
        session.set_interrupt(interrupt);
    }
};

unix_socket::unix_socket(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}
unix_socket::unix_socket(unix_socket&&) noexcept = default;
unix_socket& unix_socket::operator=(unix_socket&&) noexcept = default;
unix_socket::~unix_socket() = default;

expected<unix_socket, error> unix_socket::listen(const std::string& path) {
    auto p = std::make_unique<impl>(mode::server, path, backoff{});
    if (auto r = p->open_listener(); !r) return unexpected(r.error());
    return unix_socket(std::move(p));
}

unix_socket unix_socket::connect(const std::string& path, backoff b) {
    return unix_socket(std::make_unique<impl>(mode::client, path, b));
}

expected<unix_socket, error> unix_socket::adopt(endpoint e, backoff b) {
    auto p = std::make_unique<impl>(e.role, e.path, b);
    if (!p->wake) return unexpected(error(std::error_code(errno, std::system_category()), "eventfd"));
    if (e.role == mode::server) {
        auto l = unix_listener::adopt(e.path, std::move(e.listener));
        if (!l) return unexpected(l.error());
        p->listener.emplace(std::move(*l));
    } else if (e.listener) {
        return unexpected(error(errc::bad_fd, std::string("a client-mode endpoint has no listening socket")));
    }
    if (e.session) {
        int type = 0;
        socklen_t len = sizeof type;
        if (::getsockopt(e.session.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            return unexpected(error(errc::bad_fd, std::string("the session fd is not a stream socket")));
        p->adopt_session(std::move(e.session));
    }
    return unix_socket(std::move(p));
}

expected<unix_socket::endpoint, error> unix_socket::export_endpoint() const {
    endpoint e;
    e.role = impl_->role;
    e.path = impl_->path;
    if (impl_->listener) {
        e.listener = dup_cloexec(impl_->listener->native_handle());
        if (!e.listener) return unexpected(error(std::error_code(errno, std::system_category()), "dup"));
    }
    if (impl_->session.is_open()) {
        e.session = dup_cloexec(impl_->session.native_handle());
        if (!e.session) return unexpected(error(std::error_code(errno, std::system_category()), "dup"));
    }
    return e;
}

void unix_socket::abandon() noexcept {
    if (impl_->listener) (void)impl_->listener->release();
    impl_->listener.reset();
    impl_->session.close();
}

void unix_socket::set_interrupt(int fd) noexcept {
    impl_->interrupt = fd;
    impl_->session.set_interrupt(fd);
}

expected<void, error> unix_socket::wait_for_frontend() {
    impl_->session.close();
    if (impl_->stopped()) return unexpected(error(errc::stopped));
    return impl_->role == mode::server ? impl_->accept() : impl_->connect();
}

expected<received_message, error> unix_socket::receive(std::chrono::milliseconds timeout) {
    return impl_->session.receive(wire::channel::front, timeout);
}

expected<void, error> unix_socket::send(const wire::frame& f) { return impl_->session.send(f); }

expected<void, error> unix_socket::send(std::span<const std::byte> bytes, std::span<const int> fds) {
    return impl_->session.send(bytes, fds);
}

void unix_socket::close_session() noexcept { impl_->session.close(); }

expected<memory::region, memory::error> unix_socket::map_region(const wire::memory_region& d, unique_fd fd) {
    return memory::region::map(d, std::move(fd));
}

expected<unix_socket::kick_notifier, error> unix_socket::make_kick_notifier(std::uint32_t, unique_fd fd) {
    if (!fd) return unexpected(error(errc::bad_fd));
    return eventfd_notifier(std::move(fd));
}

expected<unix_socket::call_notifier, error> unix_socket::make_call_notifier(std::uint32_t, unique_fd fd) {
    if (!fd) return unexpected(error(errc::bad_fd));
    return eventfd_notifier(std::move(fd));
}

expected<unix_socket::backend_channel, error> unix_socket::make_backend_channel(unique_fd fd) {
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISSOCK(st.st_mode)) return unexpected(error(errc::bad_fd));
    // No wake fd: the channel may outlive this object in the session state; its callers bound
    // their waits with timeouts instead.
    return backend_channel(std::move(fd));
}

void unix_socket::stop() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(impl_->wake.get(), &one, sizeof one);
}

unix_socket::mode unix_socket::role() const noexcept { return impl_->role; }
const std::string& unix_socket::path() const noexcept { return impl_->path; }
bool unix_socket::connected() const noexcept { return impl_->session.is_open(); }
int unix_socket::native_handle() const noexcept { return impl_->session.native_handle(); }
unique_fd unix_socket::release_session() noexcept { return impl_->session.release(); }

} // namespace vvu::transport
