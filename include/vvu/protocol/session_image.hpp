// session_image: one vhost-user session, taken out of a running back-end so that another
// process can resume it (live update by hand-over; docs/live-update.md has the format).
//
// It is what backend::export_session() produces and backend::import_session() consumes: the
// session_state (features, ring settings), each ring's exact position, the front-end's memory
// regions, every notifier and the back-end channel as fds, and the device's own state as
// opaque bytes. The transport's own fds (the connected socket, the listening socket) travel
// beside it: they are the transport's business (see unix_socket::export_endpoint).
//
// encode() turns an image into bytes and a list of fds (borrowed from the image); decode()
// rebuilds it from bytes and received fds, and trusts nothing: every count is bounded, every fd
// index must name a received fd and name it once, and a trailing or missing byte is an error.
// The bytes carry a version; a decoder refuses any version it does not know. Version 2 adds one
// thing: a resource "made by the transport" — a region, notifier or back-end channel with no fd
// of its own, which the importing transport makes again from the session (a VVU port maps its
// regions from the BAR window and rings doorbells). An image without such a resource is
// written as version 1, so an older reader takes it.
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/protocol/session.hpp>
#include <vvu/ring/chain.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/payload.hpp>

#include <fmt/format.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vvu::protocol {

// One region of the front-end's memory: its description and the fd it was mapped from.
struct image_region {
    wire::memory_region desc{};
    unique_fd fd;
    bool by_transport = false; // no fd: the transport maps it from `desc`
};

// One vring: its settings (with `base` the ring's exact position, see below) and its fds
// (invalid: none — a polled ring has no kick, a ring may have no call or err).
//
// `settings.base` of a started ring is where it stopped, in the full form of "Vring descriptor
// indices": split rings the next avail index; packed rings avail index | avail wrap << 15 |
// used index << 16 | used wrap << 31 (always the full form, never the 16-bit one some
// front-ends send). A split ring's used index is in the ring itself.
struct image_vring {
    vring_settings settings{};
    unique_fd kick, call, err;
    bool kick_by_transport = false, call_by_transport = false, err_by_transport = false; // no fd: made again
};

struct session_image {
    // The layout in docs/live-update.md. Bump it for any change of the bytes.
    static constexpr std::uint32_t version = 2;
    static constexpr std::uint32_t oldest_version = 1; // read too: version 2 without transport-made resources
    static constexpr std::uint32_t magic = 0x56565553; // "SUVV" little-endian: "vvu session"
    static constexpr std::size_t max_vrings = 2 * 128 + 1;
    static constexpr std::size_t max_device_state = 1 << 20;

    bool owner = false;
    std::uint64_t features = 0;
    bool features_set = false;
    std::uint64_t protocol_features = 0;
    std::uint64_t status = 0;
    std::vector<image_vring> vrings;
    std::vector<image_region> regions; // empty: no memory table yet
    bool has_memory = false;           // a table was set (possibly empty after REM_MEM_REG)
    unique_fd backend_channel;
    bool backend_channel_by_transport = false;
    wire::inflight_description inflight{}; // INFLIGHT_SHMFD: the area, when inflight_fd is valid
    unique_fd inflight_fd;
    bool inflight_by_transport = false;    // no fd: the transport maps the area (VVU: a window area)
    std::vector<std::byte> device_state;

    // The settings part, as session_state.
    [[nodiscard]] session_state state() const {
        session_state s;
        s.owner = owner;
        s.features = features;
        s.features_set = features_set;
        s.protocol_features = protocol_features;
        s.status = status;
        for (const auto& v : vrings) s.vrings.push_back(v.settings);
        return s;
    }
};

// The encoded form: bytes, and the fds they refer to by index (taken from the image).
struct encoded_image {
    std::vector<std::byte> bytes;
    std::vector<unique_fd> fds;
};

namespace detail {
inline constexpr std::uint32_t no_fd_index = 0xffffffffu;
inline constexpr std::uint32_t by_transport_index = 0xfffffffeu; // version 2: made by the transport

inline std::uint32_t add_fd(std::vector<unique_fd>& fds, unique_fd& fd, bool by_transport = false) {
    if (by_transport) return by_transport_index;
    if (!fd) return no_fd_index;
    fds.push_back(std::move(fd));
    return static_cast<std::uint32_t>(fds.size() - 1);
}
} // namespace detail

// Encodes an image; its fds move into the result (the image keeps its other fields).
[[nodiscard]] inline encoded_image encode(session_image&& img) {
    encoded_image out;
    byte_writer w;
    bool by_transport = img.backend_channel_by_transport || img.inflight_by_transport;
    for (const auto& v : img.vrings) by_transport |= v.kick_by_transport || v.call_by_transport || v.err_by_transport;
    for (const auto& r : img.regions) by_transport |= r.by_transport;
    w.put<std::uint32_t>(session_image::magic);
    w.put<std::uint32_t>(by_transport ? session_image::version : session_image::oldest_version);
    w.put_bool(img.owner);
    w.put<std::uint64_t>(img.features);
    w.put_bool(img.features_set);
    w.put<std::uint64_t>(img.protocol_features);
    w.put<std::uint64_t>(img.status);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(img.vrings.size()));
    for (auto& v : img.vrings) {
        const auto& s = v.settings;
        w.put<std::uint32_t>(s.size);
        w.put<std::uint32_t>(s.addr.index);
        w.put<std::uint32_t>(s.addr.flags);
        w.put<std::uint64_t>(s.addr.desc_user_addr);
        w.put<std::uint64_t>(s.addr.used_user_addr);
        w.put<std::uint64_t>(s.addr.avail_user_addr);
        w.put<std::uint64_t>(s.addr.log_guest_addr);
        w.put_bool(s.addr_set);
        w.put<std::uint32_t>(s.base);
        w.put_bool(s.base_exact);
        w.put_bool(s.enabled);
        w.put_bool(s.kick_set);
        w.put_bool(s.started);
        w.put<std::uint32_t>(detail::add_fd(out.fds, v.kick, v.kick_by_transport));
        w.put<std::uint32_t>(detail::add_fd(out.fds, v.call, v.call_by_transport));
        w.put<std::uint32_t>(detail::add_fd(out.fds, v.err, v.err_by_transport));
    }
    w.put_bool(img.has_memory);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(img.regions.size()));
    for (auto& r : img.regions) {
        w.put<std::uint64_t>(r.desc.guest_phys_addr);
        w.put<std::uint64_t>(r.desc.memory_size);
        w.put<std::uint64_t>(r.desc.userspace_addr);
        w.put<std::uint64_t>(r.desc.mmap_offset);
        w.put<std::uint32_t>(detail::add_fd(out.fds, r.fd, r.by_transport));
    }
    w.put<std::uint32_t>(detail::add_fd(out.fds, img.backend_channel, img.backend_channel_by_transport));
    w.put<std::uint64_t>(img.inflight.mmap_size);
    w.put<std::uint64_t>(img.inflight.mmap_offset);
    w.put<std::uint16_t>(img.inflight.num_queues);
    w.put<std::uint16_t>(img.inflight.queue_size);
    w.put<std::uint32_t>(detail::add_fd(out.fds, img.inflight_fd, img.inflight_by_transport));
    w.put_bytes(img.device_state);
    out.bytes = w.take();
    return out;
}

// Rebuilds an image from `bytes`, taking the fds it names out of `fds` (the others stay there,
// and the caller closes them). Every fd received must be named exactly once.
[[nodiscard]] inline expected<session_image, std::string> decode_image(std::span<const std::byte> bytes,
                                                                        std::span<unique_fd> fds) {
    byte_reader r(bytes);
    if (r.get<std::uint32_t>() != session_image::magic || !r.ok()) return unexpected(std::string("not a session image"));
    const auto version = r.get<std::uint32_t>();
    if (version < session_image::oldest_version || version > session_image::version)
        return unexpected(fmt::format("session image version {} (this build reads versions {} to {})", version,
                                      session_image::oldest_version, session_image::version));

    std::vector<bool> taken(fds.size(), false);
    std::string bad_fd;
    // An fd index: a received fd, none, or (version 2) one the transport makes: `by_transport`.
    auto take_fd = [&](std::uint32_t index, bool* by_transport = nullptr) -> unique_fd {
        if (index == detail::no_fd_index) return {};
        if (index == detail::by_transport_index && version >= 2 && by_transport != nullptr) {
            *by_transport = true;
            return {};
        }
        if (index >= fds.size() || taken[index] || !fds[index]) {
            if (bad_fd.empty()) bad_fd = fmt::format("fd index {} is not one received fd ({} received)", index, fds.size());
            r.fail();
            return {};
        }
        taken[index] = true;
        return std::move(fds[index]);
    };

    session_image img;
    img.owner = r.get_bool();
    img.features = r.get<std::uint64_t>();
    img.features_set = r.get_bool();
    img.protocol_features = r.get<std::uint64_t>();
    img.status = r.get<std::uint64_t>();
    const auto nvrings = r.get<std::uint32_t>();
    if (!r.ok() || nvrings > session_image::max_vrings)
        return unexpected(fmt::format("session image: {} vrings (at most {})", nvrings, session_image::max_vrings));
    for (std::uint32_t i = 0; i < nvrings && r.ok(); ++i) {
        image_vring v;
        auto& s = v.settings;
        s.size = r.get<std::uint32_t>();
        s.addr.index = r.get<std::uint32_t>();
        s.addr.flags = r.get<std::uint32_t>();
        s.addr.desc_user_addr = r.get<std::uint64_t>();
        s.addr.used_user_addr = r.get<std::uint64_t>();
        s.addr.avail_user_addr = r.get<std::uint64_t>();
        s.addr.log_guest_addr = r.get<std::uint64_t>();
        s.addr_set = r.get_bool();
        s.base = r.get<std::uint32_t>();
        s.base_exact = r.get_bool();
        s.enabled = r.get_bool();
        s.kick_set = r.get_bool();
        s.started = r.get_bool();
        v.kick = take_fd(r.get<std::uint32_t>(), &v.kick_by_transport);
        v.call = take_fd(r.get<std::uint32_t>(), &v.call_by_transport);
        v.err = take_fd(r.get<std::uint32_t>(), &v.err_by_transport);
        if (s.size > ring::max_queue_size) r.fail();
        img.vrings.push_back(std::move(v));
    }
    img.has_memory = r.get_bool();
    const auto nregions = r.get<std::uint32_t>();
    if (!r.ok() || nregions > memory::guest_memory::max_slots)
        return unexpected(bad_fd.empty() ? fmt::format("session image: malformed vrings or {} regions (at most {})", nregions,
                                                       memory::guest_memory::max_slots)
                                         : bad_fd);
    for (std::uint32_t i = 0; i < nregions && r.ok(); ++i) {
        image_region region;
        region.desc.guest_phys_addr = r.get<std::uint64_t>();
        region.desc.memory_size = r.get<std::uint64_t>();
        region.desc.userspace_addr = r.get<std::uint64_t>();
        region.desc.mmap_offset = r.get<std::uint64_t>();
        region.fd = take_fd(r.get<std::uint32_t>(), &region.by_transport);
        if (r.ok() && !region.fd && !region.by_transport) {
            if (bad_fd.empty()) bad_fd = fmt::format("region {} has no fd", i);
            r.fail();
        }
        img.regions.push_back(std::move(region));
    }
    img.backend_channel = take_fd(r.get<std::uint32_t>(), &img.backend_channel_by_transport);
    img.inflight.mmap_size = r.get<std::uint64_t>();
    img.inflight.mmap_offset = r.get<std::uint64_t>();
    img.inflight.num_queues = r.get<std::uint16_t>();
    img.inflight.queue_size = r.get<std::uint16_t>();
    img.inflight_fd = take_fd(r.get<std::uint32_t>(), &img.inflight_by_transport);
    const auto state = r.get_bytes(session_image::max_device_state);
    img.device_state.assign(state.begin(), state.end());
    if (!r.done()) return unexpected(bad_fd.empty() ? std::string("session image: malformed or trailing bytes") : bad_fd);
    for (std::size_t i = 0; i < fds.size(); ++i)
        if (!taken[i]) return unexpected(fmt::format("session image: received fd {} is not named", i));
    return img;
}

} // namespace vvu::protocol
