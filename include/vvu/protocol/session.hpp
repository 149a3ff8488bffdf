// The state of one vhost-user session, kept explicit and small: what the front-end has set,
// nothing derived. Live update (design.md, "What comes after") hands this object, together with
// the session's fds, to a new process, which resumes from it.
#pragma once

#include <vvu/wire/payload.hpp>

#include <cstdint>
#include <vector>

namespace vvu::protocol {

// One vring as the front-end configured it (SET_VRING_NUM / ADDR / BASE / ENABLE / KICK).
struct vring_settings {
    std::uint32_t size = 0;     // SET_VRING_NUM (0 = not set)
    wire::vring_addr addr{};    // SET_VRING_ADDR (front-end virtual addresses)
    bool addr_set = false;
    std::uint32_t base = 0;     // SET_VRING_BASE num: split next avail index, or packed indices
    bool base_exact = false;    // base came from this back-end's own ring (packed: always the
                                // full form), not from SET_VRING_BASE (maybe the 16-bit form)
    bool enabled = false;       // SET_VRING_ENABLE
    bool kick_set = false;      // SET_VRING_KICK seen (with an fd, or "no fd": polling)
    bool started = false;       // running on the device's data path
    friend bool operator==(const vring_settings&, const vring_settings&) = default;
};

struct session_state {
    bool owner = false;                   // SET_OWNER
    std::uint64_t features = 0;           // SET_FEATURES (virtio features acked)
    bool features_set = false;
    std::uint64_t protocol_features = 0;  // SET_PROTOCOL_FEATURES
    std::uint64_t status = 0;             // SET_STATUS (virtio device status)
    std::vector<vring_settings> vrings;   // one per vring the device has
    friend bool operator==(const session_state&, const session_state&) = default;
};

} // namespace vvu::protocol
