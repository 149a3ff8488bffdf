// Request ids of both vhost-user channels and the rules the spec attaches to each one:
// payload, file descriptors, and reply (QEMU docs/interop/vhost-user.rst, "Front-end message
// types", "Back-end message types", "Communication", "REPLY_ACK").
//
// The rules live in one table per channel, indexed by request id, so that every check
// ("fds where none are allowed", "payload size for this request", "does it get a reply")
// is written once for all requests.
#pragma once

#include <vvu/wire/features.hpp>
#include <vvu/wire/header.hpp>

#include <array>
#include <cstdint>
#include <string_view>

namespace vvu::wire {

// Requests the front-end sends on the main socket; the back-end replies on it.
enum class front_request : std::uint32_t {
    get_features = 1,
    set_features = 2,
    set_owner = 3,
    reset_owner = 4,
    set_mem_table = 5,
    set_log_base = 6,
    set_log_fd = 7,
    set_vring_num = 8,
    set_vring_addr = 9,
    set_vring_base = 10,
    get_vring_base = 11,
    set_vring_kick = 12,
    set_vring_call = 13,
    set_vring_err = 14,
    get_protocol_features = 15,
    set_protocol_features = 16,
    get_queue_num = 17,
    set_vring_enable = 18,
    send_rarp = 19,
    net_set_mtu = 20,
    set_backend_req_fd = 21,
    iotlb_msg = 22,
    set_vring_endian = 23,
    get_config = 24,
    set_config = 25,
    create_crypto_session = 26,
    close_crypto_session = 27,
    postcopy_advise = 28,
    postcopy_listen = 29,
    postcopy_end = 30,
    get_inflight_fd = 31,
    set_inflight_fd = 32,
    gpu_set_socket = 33,
    reset_device = 34,
    vring_kick = 35,
    get_max_mem_slots = 36,
    add_mem_reg = 37,
    rem_mem_reg = 38,
    set_status = 39,
    get_status = 40,
    get_shared_object = 41,
    set_device_state_fd = 42,
    check_device_state = 43,
    get_shmem_config = 44, // VHOST_USER_GET_SHMEM_CONFIG (protocol feature SHMEM)
};

// Requests the back-end sends on the back-end channel (SET_BACKEND_REQ_FD); the front-end
// replies on it.
enum class back_request : std::uint32_t {
    iotlb_msg = 1,
    config_change_msg = 2,
    vring_host_notifier_msg = 3,
    vring_call = 4,
    vring_err = 5,
    shared_object_add = 6,
    shared_object_remove = 7,
    shared_object_lookup = 8,
    shmem_map = 9,   // VHOST_USER_BACKEND_SHMEM_MAP (protocol feature SHMEM)
    shmem_unmap = 10, // VHOST_USER_BACKEND_SHMEM_UNMAP (protocol feature SHMEM)
};

template <class R>
concept request_id = std::same_as<R, front_request> || std::same_as<R, back_request>;

// Which wire layout a payload has.
enum class payload_kind : std::uint8_t {
    none,
    u64,
    vring_fd,       // u64: index in bits 0-7, bit 8 = no fd
    vring_state,
    vring_addr,
    memory_table,   // variable: 8 + 32 * nregions
    single_region,
    log,
    iotlb,
    config,         // variable: 12 + size
    crypto_session,
    vring_area,
    inflight,
    shared_object,
    device_state,
    shmem_config,   // 8 + 8 * 256: the whole array travels, whatever nregions says
    shmem_mapping,
};

// How many file descriptors travel with a message.
enum class fd_rule : std::uint8_t {
    none,          // no fd
    one,           // exactly one
    optional,      // zero or one
    per_region,    // SET_MEM_TABLE: exactly one per region
    unless_nofd,   // one, unless bit 8 of the u64 payload says "no fd" (then none)
};

// When the receiver of a request must answer.
enum class reply_rule : std::uint8_t {
    ack,                 // only with NEED_REPLY and REPLY_ACK negotiated; payload u64 (0 = success)
    always,              // the request has a reply of its own
    if_log_shmfd,        // SET_LOG_BASE: a u64 reply when LOG_SHMFD is negotiated
};

struct request_rules {
    std::string_view name; // spec name without the VHOST_USER_ prefix
    payload_kind payload;
    fd_rule fds;
    reply_rule reply;
    payload_kind reply_payload; // for `always` (and `if_log_shmfd`); acks are u64
    fd_rule reply_fds;
};

namespace detail {
using k = payload_kind;
using f = fd_rule;
using r = reply_rule;

// Index = request id; entry 0 is unused.
inline constexpr std::array<request_rules, 45> front_rules{{
    {"", k::none, f::none, r::ack, k::none, f::none},
    {"GET_FEATURES", k::none, f::none, r::always, k::u64, f::none},
    {"SET_FEATURES", k::u64, f::none, r::ack, k::none, f::none},
    {"SET_OWNER", k::none, f::none, r::ack, k::none, f::none},
    {"RESET_OWNER", k::none, f::none, r::ack, k::none, f::none},
    {"SET_MEM_TABLE", k::memory_table, f::per_region, r::ack, k::none, f::none},
    {"SET_LOG_BASE", k::log, f::one, r::if_log_shmfd, k::u64, f::none},
    {"SET_LOG_FD", k::none, f::one, r::ack, k::none, f::none},
    {"SET_VRING_NUM", k::vring_state, f::none, r::ack, k::none, f::none},
    {"SET_VRING_ADDR", k::vring_addr, f::none, r::ack, k::none, f::none},
    {"SET_VRING_BASE", k::vring_state, f::none, r::ack, k::none, f::none},
    {"GET_VRING_BASE", k::vring_state, f::none, r::always, k::vring_state, f::none},
    {"SET_VRING_KICK", k::vring_fd, f::unless_nofd, r::ack, k::none, f::none},
    {"SET_VRING_CALL", k::vring_fd, f::unless_nofd, r::ack, k::none, f::none},
    {"SET_VRING_ERR", k::vring_fd, f::unless_nofd, r::ack, k::none, f::none},
    {"GET_PROTOCOL_FEATURES", k::none, f::none, r::always, k::u64, f::none},
    {"SET_PROTOCOL_FEATURES", k::u64, f::none, r::ack, k::none, f::none},
    {"GET_QUEUE_NUM", k::none, f::none, r::always, k::u64, f::none},
    {"SET_VRING_ENABLE", k::vring_state, f::none, r::ack, k::none, f::none},
    {"SEND_RARP", k::u64, f::none, r::ack, k::none, f::none},
    {"NET_SET_MTU", k::u64, f::none, r::ack, k::none, f::none},
    {"SET_BACKEND_REQ_FD", k::none, f::one, r::ack, k::none, f::none},
    {"IOTLB_MSG", k::iotlb, f::none, r::always, k::u64, f::none},
    {"SET_VRING_ENDIAN", k::vring_state, f::none, r::ack, k::none, f::none},
    {"GET_CONFIG", k::config, f::none, r::always, k::config, f::none},
    {"SET_CONFIG", k::config, f::none, r::ack, k::none, f::none},
    {"CREATE_CRYPTO_SESSION", k::crypto_session, f::none, r::always, k::crypto_session, f::none},
    {"CLOSE_CRYPTO_SESSION", k::u64, f::none, r::ack, k::none, f::none},
    {"POSTCOPY_ADVISE", k::none, f::none, r::always, k::none, f::one}, // reply: the userfaultfd
    {"POSTCOPY_LISTEN", k::none, f::none, r::ack, k::none, f::none},
    {"POSTCOPY_END", k::none, f::none, r::always, k::u64, f::none},
    // The spec's table says "reply payload: N/A" for GET_INFLIGHT_FD, but its purpose is to
    // return the buffer: every implementation replies with the description and one fd.
    {"GET_INFLIGHT_FD", k::inflight, f::none, r::always, k::inflight, f::one},
    {"SET_INFLIGHT_FD", k::inflight, f::one, r::ack, k::none, f::none},
    {"GPU_SET_SOCKET", k::none, f::one, r::ack, k::none, f::none},
    {"RESET_DEVICE", k::none, f::none, r::ack, k::none, f::none},
    {"VRING_KICK", k::vring_state, f::none, r::ack, k::none, f::none},
    {"GET_MAX_MEM_SLOTS", k::none, f::none, r::always, k::u64, f::none},
    {"ADD_MEM_REG", k::single_region, f::one, r::ack, k::none, f::none},
    // "For compatibility with existing incorrect implementations, the back-end MAY accept
    // messages with one file descriptor" (and must close it unused).
    {"REM_MEM_REG", k::single_region, f::optional, r::ack, k::none, f::none},
    {"SET_STATUS", k::u64, f::none, r::ack, k::none, f::none},
    {"GET_STATUS", k::none, f::none, r::always, k::u64, f::none},
    {"GET_SHARED_OBJECT", k::shared_object, f::none, r::always, k::u64, f::optional},
    {"SET_DEVICE_STATE_FD", k::device_state, f::one, r::always, k::vring_fd, f::unless_nofd},
    {"CHECK_DEVICE_STATE", k::none, f::none, r::always, k::u64, f::none},
    {"GET_SHMEM_CONFIG", k::none, f::none, r::always, k::shmem_config, f::none},
}};

inline constexpr std::array<request_rules, 11> back_rules{{
    {"", k::none, f::none, r::ack, k::none, f::none},
    {"BACKEND_IOTLB_MSG", k::iotlb, f::none, r::ack, k::none, f::none},
    {"BACKEND_CONFIG_CHANGE_MSG", k::none, f::none, r::ack, k::none, f::none},
    {"BACKEND_VRING_HOST_NOTIFIER_MSG", k::vring_area, f::unless_nofd, r::ack, k::none, f::none},
    {"BACKEND_VRING_CALL", k::vring_state, f::none, r::ack, k::none, f::none},
    {"BACKEND_VRING_ERR", k::vring_state, f::none, r::ack, k::none, f::none},
    {"BACKEND_SHARED_OBJECT_ADD", k::shared_object, f::none, r::ack, k::none, f::none},
    {"BACKEND_SHARED_OBJECT_REMOVE", k::shared_object, f::none, r::ack, k::none, f::none},
    // Reply: "the fd and a zero when the operation is successful"; no fd on failure.
    {"BACKEND_SHARED_OBJECT_LOOKUP", k::shared_object, f::none, r::always, k::u64, f::optional},
    // "reply payload: N/A", yet "a reply is generated indicating whether mapping succeeded":
    // the REPLY_ACK u64, asked for with NEED_REPLY.
    {"BACKEND_SHMEM_MAP", k::shmem_mapping, f::one, r::ack, k::none, f::none},
    {"BACKEND_SHMEM_UNMAP", k::shmem_mapping, f::none, r::ack, k::none, f::none},
}};
} // namespace detail

template <request_id R>
inline constexpr std::uint32_t request_count = std::same_as<R, front_request> ? 44 : 10;

// Whether `id` names a request of channel R.
template <request_id R>
[[nodiscard]] constexpr bool is_known(std::uint32_t id) noexcept {
    return id >= 1 && id <= request_count<R>;
}

[[nodiscard]] constexpr const request_rules& rules(front_request r) noexcept {
    return detail::front_rules[static_cast<std::uint32_t>(r)];
}
[[nodiscard]] constexpr const request_rules& rules(back_request r) noexcept {
    return detail::back_rules[static_cast<std::uint32_t>(r)];
}

[[nodiscard]] constexpr std::string_view name(front_request r) noexcept {
    return is_known<front_request>(static_cast<std::uint32_t>(r)) ? rules(r).name : "UNKNOWN";
}
[[nodiscard]] constexpr std::string_view name(back_request r) noexcept {
    return is_known<back_request>(static_cast<std::uint32_t>(r)) ? rules(r).name : "UNKNOWN";
}

// Whether the receiver of request `r` with header `flags` must send a reply, given the
// negotiated protocol features ("Communication" and "REPLY_ACK"): requests with a reply of
// their own always get it (NEED_REPLY changes nothing); the others get a u64 ack when the
// sender set NEED_REPLY and REPLY_ACK was negotiated.
template <request_id R>
[[nodiscard]] constexpr bool expects_reply(R r, std::uint32_t header_flags,
                                           std::uint64_t protocol_features) noexcept {
    const auto& rule = rules(r);
    const bool ack_requested = (header_flags & flags::need_reply) != 0 &&
                               has(protocol_features, protocol_feature::reply_ack);
    switch (rule.reply) {
    case reply_rule::always: return true;
    case reply_rule::if_log_shmfd: return has(protocol_features, protocol_feature::log_shmfd) || ack_requested;
    case reply_rule::ack: return ack_requested;
    }
    return false;
}

} // namespace vvu::wire
