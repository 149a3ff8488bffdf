// decode and encode: bytes + fds <-> typed messages. Pure functions: no I/O, no
// allocation; every input is treated as hostile and every rejection is a precise
// wire::error (request, reason, numbers).
//
//   auto m = wire::decode<wire::front_request>(bytes, fds);   // expected<any_front_message, error>
//   auto f = wire::encode(wire::message<wire::front_request::get_features>{});  // expected<frame, error>
//   auto r = wire::decode_reply<wire::front_request::get_features>(f->bytes(), {});
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/wire/error.hpp>
#include <vvu/wire/header.hpp>
#include <vvu/wire/message.hpp>

#include <bit>
#include <cstring>
#include <limits>

namespace vvu::wire {

inline constexpr std::size_t max_message_size = header_size + max_payload_size;

// An encoded message: header and payload in one buffer, and the fds to pass with it.
struct frame {
    std::array<std::byte, max_message_size> storage;
    std::uint32_t size = 0;
    fd_list fds;

    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {storage.data(), size}; }
};

namespace detail {

template <request_id R>
constexpr channel channel_of = std::same_as<R, front_request> ? channel::front : channel::back;

template <class T>
void to_wire_order(T& value) noexcept {
    if constexpr (std::endian::native != std::endian::little) {
        std::apply([&](auto... member) { (swap_member(value.*member), ...); }, T::fields);
        if constexpr (std::same_as<T, memory_table>)
            for (auto& region : value.regions) to_wire_order(region);
        if constexpr (std::same_as<T, shmem_config>)
            for (auto& size : value.memory_sizes) size = le::byteswap(size);
    }
}
template <class F>
void swap_member(F& field) noexcept {
    if constexpr (std::is_integral_v<F>) field = le::byteswap(field);
    else to_wire_order(field);
}

// Bytes a payload occupies on the wire (valid counts assumed).
template <payload T>
constexpr std::size_t wire_size(const T& p) noexcept {
    if constexpr (std::is_empty_v<T>) return 0;
    else if constexpr (std::same_as<T, memory_table>) return memory_table::fixed_size + p.nregions * sizeof(memory_region);
    else if constexpr (std::same_as<T, config_space>) return config_space::fixed_size + p.size;
    else return sizeof(T);
}

constexpr bool wraps(std::uint64_t base, std::uint64_t size) noexcept {
    return size != 0 && base > std::numeric_limits<std::uint64_t>::max() - (size - 1);
}

// Why a region is unusable, or {} when it is fine.
constexpr errc check_region(const memory_region& r) noexcept {
    if (r.memory_size == 0) return errc::empty_region;
    if (wraps(r.guest_phys_addr, r.memory_size) || wraps(r.userspace_addr, r.memory_size) ||
        wraps(r.mmap_offset, r.memory_size))
        return errc::region_wraps;
    return {};
}

// The count that sizes a variable payload (regions, config bytes) within its limit.
template <payload T>
constexpr error check_count(const T& p) noexcept {
    if constexpr (std::same_as<T, memory_table>) {
        if (p.nregions > memory_table::max_regions) return {errc::bad_count, {}, 0, p.nregions, memory_table::max_regions};
    } else if constexpr (std::same_as<T, config_space>) {
        if (p.size > config_space::max_size) return {errc::bad_count, {}, 0, p.size, config_space::max_size};
    } else if constexpr (std::same_as<T, shmem_config>) {
        if (p.nregions > shmem_config::max_regions) return {errc::bad_count, {}, 0, p.nregions, shmem_config::max_regions};
    }
    return {};
}

// Checks of a payload's content beyond its size: counts, address ranges.
template <payload T>
constexpr error check_content(const T& p) noexcept {
    if (error e = check_count(p); e.code != errc{}) return e;
    if constexpr (std::same_as<T, memory_table>) {
        for (std::uint32_t i = 0; i < p.nregions; ++i)
            if (errc e = check_region(p.regions[i]); e != errc{}) return {e, {}, 0, i, 0};
    } else if constexpr (std::same_as<T, single_memory_region>) {
        if (errc e = check_region(p.region); e != errc{}) return {e};
    } else if constexpr (std::same_as<T, log_description> || std::same_as<T, inflight_description>) {
        if (wraps(p.mmap_offset, p.mmap_size)) return {errc::region_wraps};
    } else if constexpr (std::same_as<T, iotlb_message>) {
        if (wraps(p.iova, p.size) || wraps(p.uaddr, p.size)) return {errc::region_wraps};
    } else if constexpr (std::same_as<T, vring_area>) {
        if (wraps(p.offset, p.size)) return {errc::region_wraps};
    } else if constexpr (std::same_as<T, shmem_mapping>) {
        if (wraps(p.fd_offset, p.len) || wraps(p.shm_offset, p.len)) return {errc::region_wraps};
    }
    return {};
}

// Parses the payload bytes of a message whose payload type is T.
template <payload T>
expected<T, error> load_payload(std::span<const std::byte> bytes) noexcept {
    T p{};
    std::size_t want = sizeof(T);
    if constexpr (std::is_empty_v<T>) {
        want = 0;
    } else if constexpr (std::same_as<T, memory_table> || std::same_as<T, config_space>) {
        // Variable size: the fixed part says how much follows.
        if (bytes.size() < T::fixed_size) return unexpected(error{errc::bad_payload_size, {}, 0, bytes.size(), T::fixed_size});
        std::memcpy(static_cast<void*>(&p), bytes.data(), T::fixed_size);
        to_wire_order(p);
        if (error e = check_count(p); e.code != errc{}) return unexpected(e);
        want = wire_size(p);
    }
    if (bytes.size() != want) return unexpected(error{errc::bad_payload_size, {}, 0, bytes.size(), want});
    if constexpr (!std::is_empty_v<T>) {
        std::memcpy(static_cast<void*>(&p), bytes.data(), want);
        to_wire_order(p);
    }
    if (error e = check_content(p); e.code != errc{}) return unexpected(e);
    return p;
}

template <payload T>
void store_payload(const T& p, std::byte* out) noexcept {
    if constexpr (!std::is_empty_v<T>) {
        T copy = p;
        to_wire_order(copy);
        std::memcpy(out, &copy, wire_size(p));
    }
}

// How many fds a payload names under its rule (an optional fd: none).
template <class T>
constexpr std::size_t fds_named(fd_rule rule, const T& p) noexcept {
    switch (rule) {
    case fd_rule::none:
    case fd_rule::optional: return 0;
    case fd_rule::one: return 1;
    case fd_rule::per_region:
        if constexpr (std::same_as<T, memory_table>) return p.nregions;
        break;
    case fd_rule::unless_nofd:
        if constexpr (requires { p.no_fd(); }) return p.no_fd() ? 0 : 1;
        break;
    }
    return 0;
}

template <payload T>
constexpr error check_fds(fd_rule rule, const T& p, std::size_t n) noexcept {
    auto exactly = [n](std::size_t want) -> error {
        if (n < want) return {errc::missing_fd, {}, 0, n, want};
        if (n > want) return {want == 0 ? errc::unexpected_fds : errc::too_many_fds, {}, 0, n, want};
        return {};
    };
    if (n > max_fds) return {errc::too_many_fds, {}, 0, n, max_fds};
    switch (rule) {
    case fd_rule::none: return exactly(0);
    case fd_rule::one: return exactly(1);
    case fd_rule::optional: return n <= 1 ? error{} : error{errc::too_many_fds, {}, 0, n, 1};
    case fd_rule::per_region:
        if constexpr (std::same_as<T, memory_table>) return exactly(p.nregions);
        break;
    case fd_rule::unless_nofd:
        if constexpr (requires { p.no_fd(); }) return exactly(p.no_fd() ? 0 : 1);
        break;
    }
    return {};
}

// Header checks shared by decode and decode_reply.
template <request_id R>
expected<header, error> check_framing(std::span<const std::byte> bytes) noexcept {
    constexpr channel chan = channel_of<R>;
    if (bytes.size() < header_size) return unexpected(error{errc::short_header, chan, 0, bytes.size(), header_size});
    const header h = load_header(bytes);
    if (h.version() != flags::version) return unexpected(error{errc::bad_version, chan, h.request, h.version(), flags::version});
    if (!is_known<R>(h.request)) return unexpected(error{errc::unknown_request, chan, h.request});
    if (h.size > max_payload_size) return unexpected(error{errc::payload_too_large, chan, h.request, h.size, max_payload_size});
    const std::size_t body = bytes.size() - header_size;
    if (body < h.size) return unexpected(error{errc::truncated_payload, chan, h.request, body, h.size});
    if (body > h.size) return unexpected(error{errc::trailing_bytes, chan, h.request, body, h.size});
    return h;
}

template <class Msg>
expected<Msg, error> decode_body(const header& h, std::span<const std::byte> payload_bytes, std::span<const int> fds,
                                 payload_kind, fd_rule rule) noexcept {
    constexpr channel chan = channel_of<typename Msg::request_type>;
    auto with_context = [&](error e) {
        e.chan = chan;
        e.request = h.request;
        return unexpected(e);
    };
    auto p = load_payload<typename Msg::payload_type>(payload_bytes);
    if (!p) return with_context(p.error());
    if (error e = check_fds(rule, *p, fds.size()); e.code != errc{}) return with_context(e);
    Msg m;
    m.flags = h.flags;
    m.payload = *p;
    m.fds = fd_list(fds);
    return m;
}

template <request_id R>
using decoder = expected<any_message<R>, error> (*)(const header&, std::span<const std::byte>, std::span<const int>);

template <auto Id>
expected<any_message<decltype(Id)>, error> decode_as(const header& h, std::span<const std::byte> payload_bytes,
                                                     std::span<const int> fds) noexcept {
    auto m = decode_body<message<Id>>(h, payload_bytes, fds, rules(Id).payload, rules(Id).fds);
    if (!m) return unexpected(m.error());
    return any_message<decltype(Id)>(std::in_place_index<static_cast<std::size_t>(Id) - 1>, std::move(*m));
}

template <request_id R>
using reply_decoder = expected<any_reply<R>, error> (*)(std::span<const std::byte>, std::span<const int>);

template <auto Id>
expected<any_reply<decltype(Id)>, error> decode_reply_as(std::span<const std::byte> bytes, std::span<const int> fds) noexcept;

template <request_id R, std::size_t... I>
constexpr auto make_reply_decoders(std::index_sequence<I...>) {
    return std::array<reply_decoder<R>, sizeof...(I)>{&decode_reply_as<static_cast<R>(I + 1)>...};
}

template <request_id R, std::size_t... I>
constexpr auto make_decoders(std::index_sequence<I...>) {
    return std::array<decoder<R>, sizeof...(I)>{&decode_as<static_cast<R>(I + 1)>...};
}
template <request_id R>
inline constexpr auto decoders = make_decoders<R>(std::make_index_sequence<request_count<R>>{});

template <auto Id>
expected<std::size_t, error> fds_named_as(const header& h, std::span<const std::byte> payload_bytes) noexcept {
    auto p = load_payload<typename message<Id>::payload_type>(payload_bytes);
    if (!p) {
        error e = p.error();
        e.chan = channel_of<decltype(Id)>;
        e.request = h.request;
        return unexpected(e);
    }
    return fds_named(rules(Id).fds, *p);
}
template <request_id R, std::size_t... I>
constexpr auto make_fd_counters(std::index_sequence<I...>) {
    using counter = expected<std::size_t, error> (*)(const header&, std::span<const std::byte>);
    return std::array<counter, sizeof...(I)>{&fds_named_as<static_cast<R>(I + 1)>...};
}
template <request_id R>
inline constexpr auto fd_counters = make_fd_counters<R>(std::make_index_sequence<request_count<R>>{});

template <class Msg>
expected<frame, error> encode_any(const Msg& m, payload_kind, fd_rule rule, bool is_reply_msg) noexcept {
    constexpr channel chan = channel_of<typename Msg::request_type>;
    const auto id = static_cast<std::uint32_t>(Msg::request);
    auto fail = [&](error e) {
        e.chan = chan;
        e.request = id;
        return unexpected(e);
    };
    if ((m.flags & flags::version_mask) != flags::version) return fail({errc::bad_version, {}, 0, m.flags & flags::version_mask, flags::version});
    if (is_reply_msg && (m.flags & flags::reply) == 0) return fail({errc::missing_reply_flag});
    if (!is_reply_msg && (m.flags & flags::reply) != 0) return fail({errc::unexpected_reply_flag});
    if (error e = check_content(m.payload); e.code != errc{}) return fail(e);
    if (error e = check_fds(rule, m.payload, m.fds.size()); e.code != errc{}) return fail(e);
    frame f;
    const auto size = static_cast<std::uint32_t>(wire_size(m.payload));
    store_header({id, m.flags, size}, f.storage);
    store_payload(m.payload, f.storage.data() + header_size);
    f.size = static_cast<std::uint32_t>(header_size) + size;
    f.fds = m.fds;
    return f;
}

} // namespace detail

// Validates a header before its payload is read, as a transport does: version, known request,
// size within the maximum. `awaiting` is the request a reply is expected for, if any.
template <request_id R>
[[nodiscard]] expected<header, error> check_header(const header& h) noexcept {
    constexpr channel chan = detail::channel_of<R>;
    if (h.version() != flags::version) return unexpected(error{errc::bad_version, chan, h.request, h.version(), flags::version});
    if (!is_known<R>(h.request)) return unexpected(error{errc::unknown_request, chan, h.request});
    if (h.size > max_payload_size) return unexpected(error{errc::payload_too_large, chan, h.request, h.size, max_payload_size});
    return h;
}

// Decodes one request of channel R from exactly one message's bytes and the fds received
// with it: exactly the fds the request names.
template <request_id R>
[[nodiscard]] expected<any_message<R>, error> decode(std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    auto h = detail::check_framing<R>(bytes);
    if (!h) return unexpected(h.error());
    if (h->is_reply()) return unexpected(error{errc::unexpected_reply_flag, detail::channel_of<R>, h->request});
    return detail::decoders<R>[h->request - 1](*h, bytes.subspan(header_size), fds);
}

// How many fds one request of channel R names (SET_MEM_TABLE: one per region; SET_VRING_KICK:
// none with the NOFD flag, else one; …) — an optional fd counts as none. A transport that
// carries the resources its own way (virtio-vhost-user: the device keeps them) stands in for
// them with as many invalid fds, and resolves each resource itself when the state machine
// hands one back.
template <request_id R>
[[nodiscard]] expected<std::size_t, error> named_fds(std::span<const std::byte> bytes) noexcept {
    auto h = detail::check_framing<R>(bytes);
    if (!h) return unexpected(h.error());
    if (h->is_reply()) return unexpected(error{errc::unexpected_reply_flag, detail::channel_of<R>, h->request});
    return detail::fd_counters<R>[h->request - 1](*h, bytes.subspan(header_size));
}

// Decodes the reply to request R.
template <auto R>
    requires request_id<decltype(R)>
[[nodiscard]] expected<reply<R>, error> decode_reply(std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    using RQ = decltype(R);
    constexpr auto id = static_cast<std::uint32_t>(R);
    auto h = detail::check_framing<RQ>(bytes);
    if (!h) return unexpected(h.error());
    if (h->request != id) return unexpected(error{errc::mismatched_reply, detail::channel_of<RQ>, h->request, h->request, id});
    if (!h->is_reply()) return unexpected(error{errc::missing_reply_flag, detail::channel_of<RQ>, id});
    const fd_rule rule = rules(R).reply == reply_rule::ack ? fd_rule::none : rules(R).reply_fds;
    return detail::decode_body<reply<R>>(*h, bytes.subspan(header_size), fds, detail::reply_kind<R>(), rule);
}

namespace detail {
template <auto Id>
expected<any_reply<decltype(Id)>, error> decode_reply_as(std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    auto r = decode_reply<Id>(bytes, fds);
    if (!r) return unexpected(r.error());
    return any_reply<decltype(Id)>(std::in_place_index<static_cast<std::size_t>(Id) - 1>, std::move(*r));
}
template <request_id R>
inline constexpr auto reply_decoders = make_reply_decoders<R>(std::make_index_sequence<request_count<R>>{});
} // namespace detail

// Decodes a reply to whichever request of channel R its header names — for observers (a
// tracer, a capture reader) that did not send the request themselves.
template <request_id R>
[[nodiscard]] expected<any_reply<R>, error> decode_any_reply(std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    auto h = detail::check_framing<R>(bytes);
    if (!h) return unexpected(h.error());
    return detail::reply_decoders<R>[h->request - 1](bytes, fds);
}

// Encodes a request; fails when the message breaks the rules decode enforces (so vvu never
// sends what it would refuse to receive).
template <auto R>
[[nodiscard]] expected<frame, error> encode(const message<R>& m) noexcept {
    return detail::encode_any(m, rules(R).payload, rules(R).fds, false);
}

template <auto R>
[[nodiscard]] expected<frame, error> encode(const reply<R>& m) noexcept {
    const fd_rule rule = rules(R).reply == reply_rule::ack ? fd_rule::none : rules(R).reply_fds;
    return detail::encode_any(m, detail::reply_kind<R>(), rule, true);
}

// Encodes whichever request or reply a variant (any_message, any_reply) holds.
template <class... Ms>
[[nodiscard]] expected<frame, error> encode(const std::variant<Ms...>& m) noexcept {
    return std::visit([](const auto& typed) { return encode(typed); }, m);
}

} // namespace vvu::wire
