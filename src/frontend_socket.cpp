// transport::frontend_socket (include/vvu/transport/frontend_socket.hpp): connecting to and
// accepting a back-end.
#include <vvu/transport/frontend_socket.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <system_error>
#include <thread>

namespace vvu::transport {
namespace {

error system_failure(const char* op, int err = errno) { return error(std::error_code(err, std::system_category()), op); }

std::optional<sockaddr_un> address_of(const std::string& path) noexcept {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) return std::nullopt;
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, path.size());
    return addr;
}

error path_too_long(const std::string& path) {
    return error(std::make_error_code(std::errc::filename_too_long), "socket path too long: " + path);
}

} // namespace

expected<frontend_socket, error> frontend_socket::connect(const std::string& path, std::chrono::milliseconds timeout) {
    const auto addr = address_of(path);
    if (!addr) return unexpected(path_too_long(path));
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) return unexpected(system_failure("socket"));
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0)
            return frontend_socket(std::move(fd));
        const int err = errno;
        if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN) return unexpected(system_failure("connect", err));
        if (std::chrono::steady_clock::now() >= until)
            return unexpected(error(make_error_code(errc::timed_out),
                                    "connect " + path + ": " + std::error_code(err, std::system_category()).message()));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

expected<frontend_socket, error> frontend_socket::listen(const std::string& path, std::chrono::milliseconds timeout) {
    const auto addr = address_of(path);
    if (!addr) return unexpected(path_too_long(path));
    unique_fd lfd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!lfd) return unexpected(system_failure("socket"));
    ::unlink(path.c_str());
    if (::bind(lfd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0)
        return unexpected(system_failure("bind"));
    struct unlinker {
        const std::string& p;
        ~unlinker() { ::unlink(p.c_str()); }
    } cleanup{path};
    if (::listen(lfd.get(), 1) != 0) return unexpected(system_failure("listen"));
    pollfd p{lfd.get(), POLLIN, 0};
    int r;
    do {
        r = ::poll(&p, 1, timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
    } while (r < 0 && errno == EINTR);
    if (r < 0) return unexpected(system_failure("poll"));
    if (r == 0)
        return unexpected(error(make_error_code(errc::timed_out), "no back-end connected to " + path + " within " +
                                                                      std::to_string(timeout.count()) + " ms"));
    unique_fd fd(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) return unexpected(system_failure("accept"));
    return frontend_socket(std::move(fd));
}

} // namespace vvu::transport
