// unique_fd: sole owner of a file descriptor (closed on destruction).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <utility>

namespace vvu {

class unique_fd {
public:
    constexpr unique_fd() noexcept = default;
    constexpr explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    ~unique_fd() { reset(); }

    [[nodiscard]] constexpr int get() const noexcept { return fd_; }
    [[nodiscard]] constexpr bool valid() const noexcept { return fd_ >= 0; }
    constexpr explicit operator bool() const noexcept { return valid(); }

    // Gives up ownership without closing.
    [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

// A second descriptor for the same open file, close-on-exec (an fd handed on must not leak into
// children). Invalid on failure, with errno saying why (EBADF for an invalid `fd`).
[[nodiscard]] inline unique_fd dup_cloexec(int fd) noexcept {
    return unique_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

} // namespace vvu
