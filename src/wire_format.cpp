#include <vvu/wire/codec.hpp>
#include <vvu/wire/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <vector>

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

std::string text(const shmem_mapping& p) {
    return fmt::format("shmid={} fd_offset=0x{:x} shm_offset=0x{:x} len=0x{:x} flags=0x{:x}", p.shmid, p.fd_offset,
                       p.shm_offset, p.len, p.flags);
}
std::string text(const shmem_config& p) {
    std::string s = fmt::format("nregions={}", p.nregions);
    for (std::uint32_t i = 0; i < p.nregions && i < shmem_config::max_regions; ++i)
        s += fmt::format(" [{}]=0x{:x}", i, p.memory_sizes[i]);
    return s;
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

std::string describe_raw(std::span<const std::byte> bytes, std::size_t fd_count) {
    std::string s;
    if (bytes.size() < header_size) {
        s = fmt::format("short={}", bytes.size());
    } else {
        const header h = load_header(bytes);
        s = fmt::format("request={} flags=0x{:x} size={}", h.request, h.flags, h.size);
    }
    s += fmt::format(" fds={} raw=", fd_count);
    for (std::byte b : bytes) s += fmt::format("{:02x}", static_cast<unsigned>(b));
    return s;
}

namespace {

std::string_view arrow(transcript_entry::from sender, transcript_entry::channel chan) {
    const bool front = sender == transcript_entry::from::front_end;
    if (chan == transcript_entry::channel::main) return front ? "->" : "<-";
    return front ? "=>" : "<=";
}

// Decodes with `decoded` (a decode function's result) and re-encodes, or falls back to raw.
template <class Decoded>
entry_description describe_decoded(const Decoded& decoded, std::string_view prefix, std::span<const std::byte> bytes,
                                   std::size_t fd_count) {
    entry_description d;
    if (!decoded) {
        d.reason = decoded.error().message();
        d.result = decoded.error().code == errc::unknown_request ? entry_description::verdict::unknown_request
                                                                 : entry_description::verdict::malformed;
        d.text = fmt::format("{} {} {}", prefix,
                             d.result == entry_description::verdict::unknown_request
                                 ? "UNKNOWN"
                                 : fmt::format("MALFORMED ({})", d.reason),
                             describe_raw(bytes, fd_count));
        return d;
    }
    auto again = encode(*decoded);
    d.re_encodes = again && std::ranges::equal(again->bytes(), bytes);
    d.text = fmt::format("{} {}{}", prefix, describe(*decoded), d.re_encodes ? "" : "   [re-encoding differs]");
    return d;
}

} // namespace

entry_description describe_entry(transcript_entry::from sender, transcript_entry::channel chan,
                                 std::span<const std::byte> bytes, std::size_t fd_count) {
    // The transcript keeps only the fd count: placeholders stand in for the fds.
    const std::vector<int> fds(fd_count, -1);
    const std::string_view prefix = arrow(sender, chan);
    const bool front = sender == transcript_entry::from::front_end;
    if (chan == transcript_entry::channel::main)
        return front ? describe_decoded(decode<front_request>(bytes, fds), prefix, bytes, fd_count)
                     : describe_decoded(decode_any_reply<front_request>(bytes, fds), prefix, bytes, fd_count);
    return front ? describe_decoded(decode_any_reply<back_request>(bytes, fds), prefix, bytes, fd_count)
                 : describe_decoded(decode<back_request>(bytes, fds), prefix, bytes, fd_count);
}

} // namespace vvu::wire
