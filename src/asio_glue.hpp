// Boost.Asio glue shared by the UNIX-socket sources (internal; not installed).
#pragma once

#include <vvu/transport/error.hpp>

#include <boost/system/error_code.hpp>

#include <fcntl.h>

namespace vvu::transport::detail {

// Asio reports socket errors as errno values of the system category.
inline error from_asio(const boost::system::error_code& ec, const char* op) {
    return error(std::error_code(ec.value(), std::system_category()), op);
}

// Sockets Asio opens or accepts are not close-on-exec; vvu's never leak into children.
inline void set_cloexec(int fd) noexcept { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

} // namespace vvu::transport::detail
