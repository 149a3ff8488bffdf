#include <vvu/wire/format.hpp>

#include <fmt/format.h>

namespace vvu::wire {
namespace {

std::string text(const empty_payload&) { return {}; }
std::string text(const u64_payload& p) { return fmt::format("u64=0x{:x}", p.value); }
std::string text(const vring_fd_payload& p) {
    return fmt::format("index={}{}", p.index(), p.no_fd() ? " nofd" : "");
}
std::string text(const vring_state& p) { return fmt::format("index={} num={}", p.index, p.num); }
std::string text(const vring_addr& p) {
    return fmt::format("index={} flags=0x{:x} desc=0x{:x} used=0x{:x} avail=0x{:x} log=0x{:x}", p.index, p.flags,
                       p.desc_user_addr, p.used_user_addr, p.avail_user_addr, p.log_guest_addr);
}
std::string text(const memory_region& r) {
    return fmt::format("[gpa=0x{:x} size=0x{:x} uaddr=0x{:x} offset=0x{:x}]", r.guest_phys_addr, r.memory_size,
                       r.userspace_addr, r.mmap_offset);
}
std::string text(const memory_table& p) {
    std::string s = fmt::format("nregions={}", p.nregions);
    for (std::uint32_t i = 0; i < p.nregions && i < memory_table::max_regions; ++i)
        s += fmt::format(" {}", text(p.regions[i]));
    return s;
}
std::string text(const single_memory_region& p) { return text(p.region); }
std::string text(const log_description& p) {
    return fmt::format("size=0x{:x} offset=0x{:x}", p.mmap_size, p.mmap_offset);
}
std::string text(const iotlb_message& p) {
    return fmt::format("iova=0x{:x} size=0x{:x} uaddr=0x{:x} perm={} type={}", p.iova, p.size, p.uaddr, p.perm, p.type);
}
std::string text(const config_space& p) {
    return fmt::format("offset={} size={} flags={}", p.offset, p.size, p.flags);
}
std::string text(const crypto_session& p) { return fmt::format("session_id={}", p.session_id); }
std::string text(const vring_area& p) {
    return fmt::format("index={}{} size=0x{:x} offset=0x{:x}", p.index(), p.no_fd() ? " nofd" : "", p.size, p.offset);
}
std::string text(const inflight_description& p) {
    return fmt::format("size=0x{:x} offset=0x{:x} queues={} queue_size={}", p.mmap_size, p.mmap_offset,
                       p.num_queues, p.queue_size);
}
std::string text(const shared_object& p) {
    std::string s = "uuid=";
    for (auto b : p.uuid) s += fmt::format("{:02x}", b);
    return s;
}
std::string text(const device_state_transfer& p) {
    return fmt::format("direction={} phase={}", p.direction == device_state_transfer::save ? "save" : "load", p.phase);
}

template <class M>
std::string line(const M& m, std::string_view prefix) {
    std::string s = fmt::format("{}{}", prefix, name(M::request));
    if (m.flags & flags::need_reply) s += " need_reply";
    if (std::string p = text(m.payload); !p.empty()) s += fmt::format(" {}", p);
    if (!m.fds.empty()) s += fmt::format(" fds={}", m.fds.size());
    return s;
}

} // namespace

std::string describe(const any_front_message& m) {
    return std::visit([](const auto& typed) { return line(typed, ""); }, m);
}
std::string describe(const any_back_message& m) {
    return std::visit([](const auto& typed) { return line(typed, ""); }, m);
}
std::string describe(const any_reply<front_request>& r) {
    return std::visit([](const auto& typed) { return line(typed, "reply "); }, r);
}
std::string describe(const any_reply<back_request>& r) {
    return std::visit([](const auto& typed) { return line(typed, "reply "); }, r);
}

} // namespace vvu::wire
