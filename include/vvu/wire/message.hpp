// Typed vhost-user messages: one type per request, parameterised by the request id, whose
// enum type says which channel it travels on. `message<front_request::set_mem_table>` can
// only be sent by a front-end on the main socket; `message<back_request::vring_call>` only
// on the back-end channel — a transport that accepts the one rejects the other at compile
// time (see `front_message_type` / `back_message_type`).
#pragma once

#include <vvu/wire/payload.hpp>
#include <vvu/wire/request.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <variant>

namespace vvu::wire {

// vhost-user carries at most 8 fds per message (one per region of SET_MEM_TABLE).
inline constexpr std::size_t max_fds = 8;

// The fds that travel with a message. Not an owner: whoever received them (a transport)
// owns them; the wire layer only counts and orders them.
class fd_list {
public:
    constexpr fd_list() = default;
    constexpr fd_list(std::initializer_list<int> fds) {
        for (int fd : fds) push_back(fd);
    }
    // Keeps the first max_fds of `fds` (the codec rejects longer lists before).
    constexpr explicit fd_list(std::span<const int> fds) {
        for (int fd : fds.first(std::min(fds.size(), max_fds))) push_back(fd);
    }
    constexpr void push_back(int fd) noexcept {
        if (count_ < max_fds) fds_[count_++] = fd;
    }
    [[nodiscard]] constexpr std::size_t size() const noexcept { return count_; }
    [[nodiscard]] constexpr bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] constexpr int operator[](std::size_t i) const noexcept { return fds_[i]; }
    [[nodiscard]] constexpr std::span<const int> span() const noexcept { return {fds_.data(), count_}; }
    [[nodiscard]] constexpr const int* begin() const noexcept { return fds_.data(); }
    [[nodiscard]] constexpr const int* end() const noexcept { return fds_.data() + count_; }
    friend constexpr bool operator==(const fd_list& a, const fd_list& b) noexcept {
        return std::ranges::equal(a.span(), b.span());
    }

private:
    std::array<int, max_fds> fds_{};
    std::size_t count_ = 0;
};

namespace detail {
template <payload_kind K> struct payload_of;
template <> struct payload_of<payload_kind::none> { using type = empty_payload; };
template <> struct payload_of<payload_kind::u64> { using type = u64_payload; };
template <> struct payload_of<payload_kind::vring_fd> { using type = vring_fd_payload; };
template <> struct payload_of<payload_kind::vring_state> { using type = vring_state; };
template <> struct payload_of<payload_kind::vring_addr> { using type = vring_addr; };
template <> struct payload_of<payload_kind::memory_table> { using type = memory_table; };
template <> struct payload_of<payload_kind::single_region> { using type = single_memory_region; };
template <> struct payload_of<payload_kind::log> { using type = log_description; };
template <> struct payload_of<payload_kind::iotlb> { using type = iotlb_message; };
template <> struct payload_of<payload_kind::config> { using type = config_space; };
template <> struct payload_of<payload_kind::crypto_session> { using type = crypto_session; };
template <> struct payload_of<payload_kind::vring_area> { using type = vring_area; };
template <> struct payload_of<payload_kind::inflight> { using type = inflight_description; };
template <> struct payload_of<payload_kind::shared_object> { using type = shared_object; };
template <> struct payload_of<payload_kind::device_state> { using type = device_state_transfer; };
template <> struct payload_of<payload_kind::shmem_config> { using type = shmem_config; };
template <> struct payload_of<payload_kind::shmem_mapping> { using type = shmem_mapping; };

template <auto R>
constexpr payload_kind reply_kind() {
    const auto& r = rules(R);
    return r.reply == reply_rule::ack ? payload_kind::u64 : r.reply_payload;
}
} // namespace detail

template <payload_kind K>
using payload_type_t = typename detail::payload_of<K>::type;

// A request of either channel. `flags` is the header's flags word (version 1, NEED_REPLY
// when an ack is wanted); decoding keeps it bit for bit.
template <auto R>
    requires request_id<decltype(R)>
struct message {
    using request_type = decltype(R);
    using payload_type = payload_type_t<rules(R).payload>;
    static constexpr request_type request = R;

    std::uint32_t flags = flags::version;
    payload_type payload{};
    fd_list fds{};

    [[nodiscard]] constexpr bool need_reply() const noexcept { return (flags & flags::need_reply) != 0; }
    friend constexpr bool operator==(const message&, const message&) = default;
};

// The answer to request R: its own reply payload, or the u64 of REPLY_ACK (0 = success).
template <auto R>
    requires request_id<decltype(R)>
struct reply {
    using request_type = decltype(R);
    using payload_type = payload_type_t<detail::reply_kind<R>()>;
    static constexpr request_type request = R;

    std::uint32_t flags = flags::version | flags::reply;
    payload_type payload{};
    fd_list fds{};

    friend constexpr bool operator==(const reply&, const reply&) = default;
};

template <class M> struct is_message : std::false_type {};
template <auto R> struct is_message<message<R>> : std::true_type {};
template <class M> struct is_reply : std::false_type {};
template <auto R> struct is_reply<reply<R>> : std::true_type {};

// A front-end request (sent on the main socket).
template <class M>
concept front_message_type = is_message<M>::value && std::same_as<typename M::request_type, front_request>;
// A back-end request (sent on the back-end channel).
template <class M>
concept back_message_type = is_message<M>::value && std::same_as<typename M::request_type, back_request>;

namespace detail {
template <request_id R, class Seq> struct any_message_of;
template <request_id R, std::size_t... I>
struct any_message_of<R, std::index_sequence<I...>> {
    using type = std::variant<message<static_cast<R>(I + 1)>...>;
};
} // namespace detail

// Every request of channel R; the variant's index is the request id minus one.
template <request_id R>
using any_message = typename detail::any_message_of<R, std::make_index_sequence<request_count<R>>>::type;

namespace detail {
template <request_id R, class Seq> struct any_reply_of;
template <request_id R, std::size_t... I>
struct any_reply_of<R, std::index_sequence<I...>> {
    using type = std::variant<reply<static_cast<R>(I + 1)>...>;
};
} // namespace detail

// The reply to any request of channel R; the variant's index is the request id minus one.
template <request_id R>
using any_reply = typename detail::any_reply_of<R, std::make_index_sequence<request_count<R>>>::type;

using any_front_message = any_message<front_request>;
using any_back_message = any_message<back_request>;

// The request id of whatever message or reply a variant (any_message, any_reply) holds.
template <class M, class... Ms>
[[nodiscard]] constexpr auto request_of(const std::variant<M, Ms...>& m) noexcept {
    return std::visit([](const auto& typed) { return typed.request; }, m);
}

} // namespace vvu::wire
