// protocol::kick_wait: event mode's sleep for a device's data path (runtime::poller calls the
// device's wait_for_kicks after an idle while). A polling data path keeps the front-end's kicks
// off (a busy front-end then posts without a system call); before sleeping it asks for them
// again on every running vring, sleeps on their kick fds and the poller's wake fd, and after
// waking switches them off again and consumes the kicks that came.
//
//   bool wait_for_kicks(std::chrono::milliseconds timeout, int wake) {     // one owner
//       return kicks_.wait(vrings_, [](protocol::vring& v) { return v.enabled(); }, timeout, wake);
//   }
//
// A device whose vrings sit behind locks (device::net::net_port, several ports per data
// thread) runs the steps itself: arm() each vring under its lock, then sleep() — or cancel()
// when an arm() said work is waiting — and disarm() each vring under its lock again.
#pragma once

#include <vvu/protocol/vring.hpp>

#include <poll.h>

#include <chrono>
#include <vector>

namespace vvu::protocol {

class kick_wait {
public:
    // Asks the driver of `v` to kick again and adds its kick fd to the sleep. False when
    // sleeping would miss work: a chain arrived meanwhile (enable_notifications re-reads the
    // ring, so none slips in between), or `v` has no kick fd (its front-end wants it polled).
    bool arm(vring& v) {
        const int fd = v.kick().native_handle();
        if (fd < 0 || v.visit([](auto& ring) { return ring.enable_notifications(); })) return false;
        fds_.push_back({fd, POLLIN, 0});
        return true;
    }
    // Kick fds armed for the next sleep.
    std::size_t armed() const noexcept { return fds_.size(); }

    // Sleeps until an armed vring is kicked, `wake` (-1: none) is readable, or `timeout` passes.
    void sleep(std::chrono::milliseconds timeout, int wake) {
        if (wake >= 0) fds_.push_back({wake, POLLIN, 0});
        ::poll(fds_.data(), fds_.size(), static_cast<int>(timeout.count()));
        fds_.clear(); // (keeps its room: no allocation per sleep)
    }
    // Instead of sleeping, when an arm() said not to.
    void cancel() noexcept { fds_.clear(); }

    // After the sleep (or instead of it), for every vring that may have been armed: back to
    // polling without kicks, and the kicks that came consumed.
    static void disarm(vring& v) noexcept {
        v.visit([](auto& ring) { ring.disable_notifications(); });
        (void)v.kick().drain();
    }

    // The whole sleep over the vrings of a device whose data thread owns them (a range of
    // vring pointers; null ones, and ones `running` refuses, are not waited on). True when it
    // slept, false when work is waiting or a vring must be polled.
    template <class Vrings, class Running>
    bool wait(Vrings&& vrings, Running running, std::chrono::milliseconds timeout, int wake) {
        bool armed = true;
        for (auto& v : vrings)
            if (v && running(*v) && !(armed = arm(*v))) break;
        if (armed) sleep(timeout, wake);
        else cancel();
        for (auto& v : vrings)
            if (v) disarm(*v);
        return armed;
    }

private:
    std::vector<pollfd> fds_; // the armed kick fds, then the wake fd
};

} // namespace vvu::protocol
