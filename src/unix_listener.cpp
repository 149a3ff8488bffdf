// unix_listener: bind/listen/accept with Boost.Asio's local::stream_protocol.
#include <vvu/transport/unix_listener.hpp>

#include "asio_glue.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

namespace vvu::transport {
namespace {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

using detail::from_asio;
using detail::set_cloexec;

} // namespace

struct unix_listener::impl {
    std::string path;
    asio::io_context io;
    std::optional<stream::acceptor> acceptor;
    ino_t inode = 0; // of the socket file this listener created

    explicit impl(std::string p) : path(std::move(p)) {}
    ~impl() {
        if (!acceptor) return;
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0 && st.st_ino == inode) ::unlink(path.c_str());
    }

    // A socket file at path nobody accepts on is stale and goes; a live one is in use.
    expected<void, error> clear_stale() {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return {}; // bind reports the rest
        stream::socket probe(io);
        boost::system::error_code ec;
        probe.connect(stream::endpoint(path), ec);
        if (!ec) return unexpected(error(errc::address_in_use));
        if (ec.value() == ECONNREFUSED) ::unlink(path.c_str());
        return {};
    }

    expected<void, error> open() {
        if (auto c = clear_stale(); !c) return c;
        boost::system::error_code ec;
        stream::acceptor a(io);
        if (a.open(stream(), ec); ec) return unexpected(from_asio(ec, "socket"));
        set_cloexec(a.native_handle());
        if (a.bind(stream::endpoint(path), ec); ec) return unexpected(from_asio(ec, "bind"));
        if (a.listen(asio::socket_base::max_listen_connections, ec); ec) return unexpected(from_asio(ec, "listen"));
        if (a.non_blocking(true, ec); ec) return unexpected(from_asio(ec, "fcntl"));
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) inode = st.st_ino;
        acceptor.emplace(std::move(a));
        return {};
    }

    expected<void, error> adopt(unique_fd fd) {
        int listening = 0;
        socklen_t len = sizeof listening;
        if (!fd || ::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
            return unexpected(error(errc::bad_fd));
        boost::system::error_code ec;
        stream::acceptor a(io);
        if (a.assign(stream(), fd.get(), ec); ec) return unexpected(from_asio(ec, "assign"));
        (void)fd.release();
        if (a.non_blocking(true, ec); ec) return unexpected(from_asio(ec, "fcntl"));
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) inode = st.st_ino;
        acceptor.emplace(std::move(a));
        return {};
    }
};

expected<unix_listener, error> unix_listener::listen(const std::string& path) {
    auto p = std::make_unique<impl>(path);
    if (auto r = p->open(); !r) return unexpected(r.error());
    return unix_listener(std::move(p));
}

expected<unix_listener, error> unix_listener::adopt(const std::string& path, unique_fd fd) {
    auto p = std::make_unique<impl>(path);
    if (auto r = p->adopt(std::move(fd)); !r) return unexpected(r.error());
    return unix_listener(std::move(p));
}

unique_fd unix_listener::release() noexcept {
    if (!impl_ || !impl_->acceptor) return {};
    boost::system::error_code ec;
    const int fd = impl_->acceptor->release(ec);
    impl_->acceptor.reset(); // nothing left to unlink: the socket lives on elsewhere
    return unique_fd(ec ? -1 : fd);
}

unix_listener::unix_listener(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}
unix_listener::unix_listener(unix_listener&&) noexcept = default;
unix_listener& unix_listener::operator=(unix_listener&&) noexcept = default;
unix_listener::~unix_listener() = default;

expected<unique_fd, error> unix_listener::try_accept() {
    for (;;) {
        stream::socket s(impl_->io);
        boost::system::error_code ec;
        impl_->acceptor->accept(s, ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) return unique_fd{};
        if (ec.value() == ECONNABORTED || ec.value() == EINTR) continue;
        if (ec) return unexpected(from_asio(ec, "accept"));
        const int fd = s.release(ec);
        if (ec) return unexpected(from_asio(ec, "accept"));
        set_cloexec(fd);
        return unique_fd(fd);
    }
}

int unix_listener::native_handle() const noexcept { return impl_->acceptor->native_handle(); }
const std::string& unix_listener::path() const noexcept { return impl_->path; }

} // namespace vvu::transport
