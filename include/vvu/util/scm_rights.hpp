// One sendmsg / one recvmsg with SCM_RIGHTS file descriptors (unix(7), cmsg(3)): the piece of
// fd passing every vvu socket protocol shares — vhost-user's framed_socket and vfio-user's
// client and server. Callers keep their own framing, waiting and error mapping; this is only
// the ancillary-data plumbing, written once.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>

namespace vvu::scm {

// The kernel's limit on fds in one message (SCM_MAX_FD).
inline constexpr std::size_t max_fds = 253;

// One non-blocking sendmsg of `parts`, with `fds` attached when not empty (they ride with the
// first byte sent, so a caller sends them once and then the rest of its bytes without).
// Returns sendmsg's result: bytes sent, or -1 with errno (EAGAIN: try again when writable).
inline ssize_t send_some(int sock, std::span<const iovec> parts, std::span<const int> fds) noexcept {
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * max_fds)> control{};
    if (fds.size() > max_fds) {
        errno = EINVAL;
        return -1;
    }
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(parts.data());
    msg.msg_iovlen = parts.size();
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    return ::sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// One non-blocking recvmsg of up to `len` bytes. Each fd received (close-on-exec) is handed to
// `take(int)`, which owns it from then on. `truncated` is set when more than `fd_limit` fds
// came (MSG_CTRUNC: the kernel closed the ones that did not fit). Returns recvmsg's result.
template <class Take>
ssize_t recv_some(int sock, std::byte* buf, std::size_t len, std::size_t fd_limit, Take&& take,
                  bool& truncated) noexcept {
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * max_fds)> control{};
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (fd_limit < max_fds ? fd_limit : max_fds));
    const ssize_t n = ::recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            take(fd);
        }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) truncated = true;
    return n;
}

} // namespace vvu::scm
