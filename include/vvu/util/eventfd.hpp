// eventfd_notifier: a kick or call notifier over an eventfd (what SET_VRING_KICK and
// SET_VRING_CALL carry on the UNIX transport, and what MSI-X vectors fire in the PCI driver).
// Models kick_notifier, call_notifier and pollable_notifier (transport/transport.hpp); it sits
// in util/ so that pci/ and transport/ can both use it without one reaching into the other.
//
//   kick.wait(std::chrono::milliseconds(100));  // blocks until the front-end kicks (or timeout)
//   call.signal();                              // interrupts the guest (via KVM's irqfd)
//
// The fd's flags are shared with the front-end that created it, so they are never changed:
// reads happen only after poll() reported the counter non-zero. One consumer per notifier.
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdint>
#include <system_error>

namespace vvu {

class eventfd_notifier {
public:
    eventfd_notifier() = default;
    explicit eventfd_notifier(unique_fd fd) noexcept : fd_(std::move(fd)) {}

    // A fresh eventfd (a front-end creating kick/call fds, tests).
    [[nodiscard]] static expected<eventfd_notifier, std::error_code> create() noexcept {
        unique_fd fd(::eventfd(0, EFD_CLOEXEC));
        if (!fd) return unexpected(std::error_code(errno, std::system_category()));
        return eventfd_notifier(std::move(fd));
    }

    // Adds 1 to the counter (wakes the waiter). Never blocks in practice: the counter would
    // have to reach 2^64 - 2.
    void signal() const noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
    }

    // Consumes a pending notification without waiting: true when there was one (any number of
    // signals since the last drain count as one).
    bool drain() const noexcept { return wait(std::chrono::milliseconds(0)); }

    // Waits up to `timeout` (negative: forever) for a notification and consumes it.
    bool wait(std::chrono::milliseconds timeout) const noexcept {
        pollfd p{fd_.get(), POLLIN, 0};
        int r;
        do {
            r = ::poll(&p, 1, timeout.count() < 0 ? -1 : static_cast<int>(std::min<std::int64_t>(timeout.count(), INT_MAX)));
        } while (r < 0 && errno == EINTR);
        if (r <= 0 || (p.revents & POLLIN) == 0) return false;
        std::uint64_t count = 0;
        return ::read(fd_.get(), &count, sizeof count) == static_cast<ssize_t>(sizeof count) && count != 0;
    }

    [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
    [[nodiscard]] bool valid() const noexcept { return fd_.valid(); }
    [[nodiscard]] unique_fd release() noexcept { return unique_fd(fd_.release()); }

private:
    unique_fd fd_;
};

} // namespace vvu
