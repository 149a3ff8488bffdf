// protocol::frontend<Channel>: drives any vhost-user back-end (QEMU docs/interop/vhost-user.rst)
// — negotiates features and protocol features, takes ownership, shares memfd memory, sets vrings
// up (split or packed) and stops them, reads the config space, reports the device status, and
// serves the back-end channel. Device drivers (device::net::net_driver, device::blk::blk_driver)
// sit on top and run the rings.
//
//   auto ch = transport::frontend_socket::connect("/tmp/vhost.sock", 5s);
//   protocol::frontend fe(std::move(*ch), {.features = version_1 | mrg_rxbuf});
//   fe.negotiate();                                  // GET/SET_FEATURES, protocol features, owner
//   fe.set_memory(*protocol::frontend_memory::create({}));   // SET_MEM_TABLE or ADD_MEM_REG
//   driver_vring* rx = *fe.setup_vring(0, {.size = 256});     // NUM, BASE, ADDR, KICK, CALL, ENABLE
//   fe.driver_ok();                                  // SET_STATUS when negotiated
//   …                                                // run the rings
//   fe.stop();                                       // disable, GET_VRING_BASE each, SET_STATUS 0
//
// Every request that has no reply of its own carries NEED_REPLY once REPLY_ACK is negotiated,
// and its ack is checked. Every wait is bounded by options::timeout; any misbehaviour of the
// back-end (a reply of the wrong size, to another request, without the REPLY flag, a failure
// ack, a missing ack, a closed socket) comes back as a frontend_error naming the request.
//
// While it waits for a reply the front-end also serves the back-end channel (the socketpair
// given with SET_BACKEND_REQ_FD): a back-end that sends CONFIG_CHANGE_MSG with NEED_REPLY and
// waits for the ack before answering our request must not deadlock us. Between requests the
// caller serves it with serve_backend_requests().
//
// Not thread-safe: one control thread. The vrings (driver_vring) may be run by other threads.
#pragma once

#include <vvu/memory/dirty_log.hpp>
#include <vvu/protocol/device_status.hpp>
#include <vvu/protocol/frontend_channel.hpp>
#include <vvu/protocol/frontend_error.hpp>
#include <vvu/protocol/frontend_memory.hpp>
#include <vvu/protocol/frontend_vring.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/util/eventfd.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/features.hpp>

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vvu::protocol {

// The protocol features the front-end implements (and takes when offered).
inline constexpr std::uint64_t frontend_protocol_features =
    wire::protocol_feature::mq | wire::protocol_feature::reply_ack | wire::protocol_feature::config |
    wire::protocol_feature::backend_req | wire::protocol_feature::configure_mem_slots | wire::protocol_feature::status |
    wire::protocol_feature::inflight_shmfd | wire::protocol_feature::log_shmfd;

struct frontend_options {
    // Virtio feature bits the device driver can use; the front-end acks (wanted ∩ offered),
    // plus VHOST_USER_F_PROTOCOL_FEATURES when offered.
    std::uint64_t features = wire::virtio_feature::version_1;
    // Bits the back-end must offer, or negotiate() fails with not_offered.
    std::uint64_t required_features = wire::virtio_feature::version_1;
    // Protocol features to take when offered (a subset of frontend_protocol_features).
    std::uint64_t protocol_features = frontend_protocol_features;
    // Bound of every wait for a reply or an ack.
    std::chrono::milliseconds timeout{5000};
    // Share memory with ADD_MEM_REG (one message per region) when CONFIGURE_MEM_SLOTS is
    // negotiated; false: always SET_MEM_TABLE.
    bool use_mem_slots = true;
    // Called on CONFIG_CHANGE_MSG from the back-end channel.
    std::function<void()> on_config_change;
};

// How to set one vring up.
struct vring_options {
    std::uint32_t size = 256;         // descriptors (split: a power of 2)
    std::uint32_t indirect_entries = 0; // per-slot indirect tables (needs INDIRECT_DESC)
    bool enable = true;               // SET_VRING_ENABLE 1 right away
};

template <frontend_channel Channel = socket_channel>
class frontend {
public:
    using error_type = frontend_error;
    template <class T>
    using result = expected<T, frontend_error>;

    frontend(Channel channel, frontend_options options) : channel_(std::move(channel)), options_(std::move(options)) {}
    frontend(const frontend&) = delete;
    frontend& operator=(const frontend&) = delete;

    // ---------------------------------------------------------------- negotiation
    // GET_FEATURES; GET/SET_PROTOCOL_FEATURES when offered; SET_OWNER; GET_QUEUE_NUM with MQ;
    // SET_BACKEND_REQ_FD with BACKEND_REQ; SET_FEATURES; SET_STATUS (features ok) with STATUS.
    result<void> negotiate() {
        auto offered = transact<wire::front_request::get_features>({});
        if (!offered) return unexpected(offered.error());
        offered_features_ = offered->payload.value;
        if (!wire::has(offered_features_, options_.required_features))
            return fail(frontend_errc::not_offered, wire::front_request::get_features,
                        hex("required features 0x", options_.required_features & ~offered_features_, " not offered"));
        if (wire::has(offered_features_, wire::vhost_feature::protocol_features)) {
            auto pf = transact<wire::front_request::get_protocol_features>({});
            if (!pf) return unexpected(pf.error());
            offered_protocol_features_ = pf->payload.value;
            const std::uint64_t take = offered_protocol_features_ & options_.protocol_features & frontend_protocol_features;
            // No NEED_REPLY here: REPLY_ACK is being negotiated by this very message, and
            // back-ends disagree on whether it already applies.
            if (auto r = post<wire::front_request::set_protocol_features>({take}, false); !r) return r;
            protocol_features_ = take;
        }
        if (auto r = request<wire::front_request::set_owner>({}); !r) return r;
        if (negotiated(wire::protocol_feature::mq)) {
            auto q = transact<wire::front_request::get_queue_num>({});
            if (!q) return unexpected(q.error());
            queue_num_ = q->payload.value;
        }
        if (negotiated(wire::protocol_feature::backend_req))
            if (auto r = open_backend_channel(); !r) return r;
        acked_features_ = offered_features_ & (options_.features | wire::vhost_feature::protocol_features);
        if (auto r = request<wire::front_request::set_features>({acked_features_}); !r) return r;
        if (auto r = set_status(device_status::acknowledge | device_status::driver | device_status::features_ok); !r)
            return r;
        return {};
    }

    // ---------------------------------------------------------------- memory
    // Takes the memory and shares it: ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS (and
    // options::use_mem_slots), else one SET_MEM_TABLE.
    result<void> set_memory(frontend_memory memory) {
        memory_.emplace(std::move(memory));
        const auto& regions = memory_->regions();
        if (options_.use_mem_slots && negotiated(wire::protocol_feature::configure_mem_slots)) {
            for (const auto& r : regions) {
                wire::message<wire::front_request::add_mem_reg> m;
                m.payload.region = r.description();
                m.fds.push_back(r.fd.get());
                if (auto s = request_message(m); !s) return s;
            }
            return {};
        }
        wire::message<wire::front_request::set_mem_table> m;
        m.payload.nregions = static_cast<std::uint32_t>(regions.size());
        for (std::size_t i = 0; i < regions.size(); ++i) {
            m.payload.regions[i] = regions[i].description();
            m.fds.push_back(regions[i].fd.get());
        }
        return request_message(m);
    }

    // ---------------------------------------------------------------- inflight tracking
    // With INFLIGHT_SHMFD: GET_INFLIGHT_FD for `num_queues` rings of `queue_size`, then
    // SET_INFLIGHT_FD with the area. The front-end keeps the file: it is what a back-end
    // restarted after a crash is given again, to take what was in flight ("Inflight I/O
    // tracking"). Without the feature, nothing.
    result<void> share_inflight(std::uint16_t num_queues, std::uint16_t queue_size) {
        using fr = wire::front_request;
        if (!negotiated(wire::protocol_feature::inflight_shmfd)) return {};
        wire::message<fr::get_inflight_fd> m;
        m.payload.num_queues = num_queues;
        m.payload.queue_size = queue_size;
        if (auto s = send(m); !s) return s;
        std::vector<unique_fd> fds;
        auto r = await<fr::get_inflight_fd>("no reply", &fds);
        if (!r) return unexpected(r.error());
        if (fds.size() != 1 || !fds[0]) return fail(frontend_errc::malformed_reply, fr::get_inflight_fd, "reply without its fd");
        if (r->payload.num_queues != num_queues || r->payload.queue_size != queue_size || r->payload.mmap_size == 0)
            return fail(frontend_errc::malformed_reply, fr::get_inflight_fd, "an area for other queues than asked");
        inflight_ = r->payload;
        inflight_fd_ = std::move(fds[0]);
        return request<fr::set_inflight_fd>(inflight_, {inflight_fd_.get()});
    }
    // The inflight area's description and file (invalid without INFLIGHT_SHMFD).
    [[nodiscard]] const wire::inflight_description& inflight() const noexcept { return inflight_; }
    [[nodiscard]] const unique_fd& inflight_fd() const noexcept { return inflight_fd_; }

    [[nodiscard]] frontend_memory& memory() { return *memory_; }
    [[nodiscard]] bool has_memory() const noexcept { return memory_.has_value(); }

    // ---------------------------------------------------------------- vrings
    // Places the ring areas in the shared memory, creates the driver side, and tells the
    // back-end: SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL,
    // SET_VRING_ERR, then SET_VRING_ENABLE 1 (with PROTOCOL_FEATURES; rings start disabled) when asked.
    result<driver_vring*> setup_vring(std::uint32_t index, const vring_options& o) {
        using fr = wire::front_request;
        if (!memory_) return fail(frontend_errc::bad_state, fr::set_vring_addr, "no memory shared yet");
        if (index > wire::vring_fd_payload::index_mask)
            return fail(frontend_errc::invalid_argument, fr::set_vring_num, "vring index " + std::to_string(index) + " above 255");
        const bool packed = wire::has(acked_features_, wire::virtio_feature::ring_packed);
        if (o.size == 0 || o.size > ring::max_queue_size || (!packed && (o.size & (o.size - 1)) != 0))
            return fail(frontend_errc::invalid_argument, fr::set_vring_num,
                        "vring size " + std::to_string(o.size) + (packed ? " not in [1, 32768]" : " not a power of 2 in [1, 32768]"));
        const ring::ring_features rf{wire::has(acked_features_, wire::virtio_feature::ring_event_idx),
                                     wire::has(acked_features_, wire::virtio_feature::ring_indirect_desc),
                                     wire::has(acked_features_, wire::virtio_feature::in_order)};
        ring::indirect_area ind{};
        if (o.indirect_entries != 0) {
            auto a = memory_->allocate(16ULL * o.indirect_entries * o.size, 16);
            if (!a) return unexpected(a.error());
            ind = {*a, o.indirect_entries};
        }
        auto kick = eventfd_notifier::create();
        auto call = eventfd_notifier::create();
        auto error = eventfd_notifier::create();
        if (!kick || !call || !error)
            return fail(frontend_errc::transport, fr::set_vring_kick,
                        "eventfd: " + (!kick ? kick.error() : !call ? call.error() : error.error()).message());

        std::unique_ptr<driver_vring> v;
        std::uint64_t desc = 0, avail = 0, used = 0;
        std::uint32_t base = 0;
        if (packed) {
            auto d = memory_->allocate(ring::packed_layout::desc_bytes(o.size), 4096);
            auto drv = memory_->allocate(4, 64), dev = memory_->allocate(4, 64);
            if (!d || !drv || !dev) return fail(frontend_errc::out_of_memory, fr::set_vring_addr, "no room for the ring");
            desc = *d, avail = *drv, used = *dev;
            auto r = driver_vring::packed_ring::create(*memory_, {o.size, desc, avail, used, rf, 0}, ind);
            if (!r) return fail(frontend_errc::ring_setup, fr::set_vring_addr, r.error().message());
            v = std::make_unique<driver_vring>(index, std::move(*r), std::move(*kick), std::move(*call), std::move(*error));
            // A new packed ring: index 0, wrap counter 1 — in the 16-bit form QEMU and DPDK send.
            base = 0x8000;
        } else {
            using L = ring::split_layout;
            auto d = memory_->allocate(L::desc_bytes(o.size), 4096);
            auto a = memory_->allocate(L::avail_bytes(o.size), 64);
            auto u = memory_->allocate(L::used_bytes(o.size), 4096);
            if (!d || !a || !u) return fail(frontend_errc::out_of_memory, fr::set_vring_addr, "no room for the ring");
            desc = *d, avail = *a, used = *u;
            auto r = driver_vring::split_ring::create(*memory_, {o.size, desc, avail, used, rf, 0}, ind);
            if (!r) return fail(frontend_errc::ring_setup, fr::set_vring_addr, r.error().message());
            v = std::make_unique<driver_vring>(index, std::move(*r), std::move(*kick), std::move(*call), std::move(*error));
        }
        if (auto r = request<fr::set_vring_num>({index, o.size}); !r) return unexpected(r.error());
        if (auto r = request<fr::set_vring_base>({index, base}); !r) return unexpected(r.error());
        // Ring addresses are front-end virtual addresses ("Vring address description").
        wire::vring_addr addr{index, 0, memory_->user_address(desc), memory_->user_address(used),
                              memory_->user_address(avail), 0};
        if (log_ && wire::has(acked_features_, wire::vhost_feature::log_all)) {
            addr.flags = wire::vring_addr::flag_log; // a ring set up while logging logs its used ring too
            addr.log_guest_addr = used;
        }
        if (auto r = request<fr::set_vring_addr>(addr); !r) return unexpected(r.error());
        if (auto r = request<fr::set_vring_kick>({index}, {v->kick_fd()}); !r) return unexpected(r.error());
        if (auto r = request<fr::set_vring_call>({index}, {v->call_fd()}); !r) return unexpected(r.error());
        if (auto r = request<fr::set_vring_err>({index}, {v->error_fd()}); !r) return unexpected(r.error());
        if (o.enable && wire::has(acked_features_, wire::vhost_feature::protocol_features))
            if (auto r = request<fr::set_vring_enable>({index, 1}); !r) return unexpected(r.error());
        if (vrings_.size() <= index) vrings_.resize(index + 1), vring_addrs_.resize(index + 1);
        vrings_[index] = std::move(v);
        vring_addrs_[index] = {addr, used};
        return vrings_[index].get();
    }

    result<void> enable_vring(std::uint32_t index, bool on) {
        if (!wire::has(acked_features_, wire::vhost_feature::protocol_features)) return {};
        return request<wire::front_request::set_vring_enable>({index, on ? 1u : 0u});
    }

    // Stops a vring: SET_VRING_ENABLE 0, then GET_VRING_BASE (the back-end stops using the
    // ring before it answers). Returns the base the back-end reports; the driver side is gone.
    result<std::uint32_t> stop_vring(std::uint32_t index) {
        if (index >= vrings_.size() || !vrings_[index])
            return fail(frontend_errc::bad_state, wire::front_request::get_vring_base,
                        "vring " + std::to_string(index) + " is not set up");
        if (auto r = enable_vring(index, false); !r) return unexpected(r.error());
        auto r = transact<wire::front_request::get_vring_base>({index, 0});
        if (!r) return unexpected(r.error());
        if (r->payload.index != index)
            return fail(frontend_errc::malformed_reply, wire::front_request::get_vring_base,
                        "reply names vring " + std::to_string(r->payload.index) + ", not " + std::to_string(index));
        vrings_[index].reset();
        return r->payload.num;
    }

    [[nodiscard]] driver_vring* vring(std::uint32_t index) noexcept {
        return index < vrings_.size() ? vrings_[index].get() : nullptr;
    }

    // SET_STATUS DRIVER_OK (with STATUS): the device is live.
    result<void> driver_ok() {
        return set_status(device_status::acknowledge | device_status::driver | device_status::features_ok |
                          device_status::driver_ok);
    }

    // GET_STATUS (with STATUS): the device status as the back-end has it — DEVICE_NEEDS_RESET
    // (device_status::needs_reset) once it found a ring broken.
    result<std::uint8_t> status() {
        if (!negotiated(wire::protocol_feature::status))
            return fail(frontend_errc::not_offered, wire::front_request::get_status, "protocol feature STATUS not negotiated");
        auto r = transact<wire::front_request::get_status>({});
        if (!r) return unexpected(r.error());
        return static_cast<std::uint8_t>(r->payload.value);
    }

    // Stops every vring that is set up, then SET_STATUS 0 (with STATUS). The connection stays
    // open; destroying the front-end closes it.
    result<void> stop() {
        for (std::uint32_t i = 0; i < vrings_.size(); ++i)
            if (vrings_[i])
                if (auto r = stop_vring(i); !r) return unexpected(r.error());
        return set_status(0);
    }

    // ---------------------------------------------------------------- dirty-page logging
    // Turns the back-end's dirty logging on, the way a migration does ("Migration" in
    // vhost-user.rst; needs LOG_SHMFD negotiated and VHOST_F_LOG_ALL offered): a log covering
    // the shared memory, one bit per 4 KiB page (SET_LOG_BASE with its memfd, answered once the
    // back-end uses it), SET_FEATURES with LOG_ALL, and each ring's SET_VRING_ADDR again with
    // VHOST_VRING_F_LOG (logged at its used ring's address).
    result<void> start_logging() {
        using fr = wire::front_request;
        if (!memory_) return fail(frontend_errc::bad_state, fr::set_log_base, "no memory shared yet");
        if (!negotiated(wire::protocol_feature::log_shmfd))
            return fail(frontend_errc::not_offered, fr::set_log_base, "LOG_SHMFD not negotiated");
        if (!wire::has(offered_features_, wire::vhost_feature::log_all))
            return fail(frontend_errc::not_offered, fr::set_features, "VHOST_F_LOG_ALL not offered");
        std::uint64_t end = 0;
        for (const auto& r : memory_->regions()) end = std::max(end, r.gpa + r.size);
        // Whole u64 words of the bitmap, as front-ends sync it.
        const std::uint64_t pages = (end + memory::dirty_log::page_size - 1) / memory::dirty_log::page_size;
        const std::uint64_t bytes = (pages + 63) / 64 * 8;
        unique_fd fd(::memfd_create("vvu-dirty-log", MFD_CLOEXEC));
        if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0)
            return fail(frontend_errc::transport, fr::set_log_base, std::string("memfd for the log: ") + std::strerror(errno));
        const int sent_fd = fd.get();
        const wire::log_description desc{bytes, 0};
        auto mapped = memory::region::map(desc.as_region(), std::move(fd));
        if (!mapped) return fail(frontend_errc::transport, fr::set_log_base, "mapping the log: " + mapped.error().message());
        log_ = std::make_shared<memory::dirty_log>(std::move(*mapped));
        auto r = transact<fr::set_log_base>(desc, {sent_fd});
        if (!r) return unexpected(r.error());
        if (r->payload.value != 0) return fail(frontend_errc::rejected, fr::set_log_base, "back-end answered " + std::to_string(r->payload.value));
        return set_logging(true);
    }
    // SET_FEATURES without LOG_ALL, each ring's address without VHOST_VRING_F_LOG. The log stays
    // (take_dirty_pages reads what was marked before).
    result<void> stop_logging() { return set_logging(false); }

    // The pages marked since the last call (guest address / 4096, ascending), cleared as they
    // are read — a migration's sync of the bitmap.
    [[nodiscard]] std::vector<std::uint64_t> take_dirty_pages() {
        std::vector<std::uint64_t> pages;
        if (!log_) return pages;
        std::byte* bits = log_->mapped().host();
        for (std::uint64_t i = 0; i < log_->mapped().size(); ++i) {
            std::atomic_ref<std::uint8_t> byte(*reinterpret_cast<std::uint8_t*>(bits + i));
            if (byte.load(std::memory_order_relaxed) == 0) continue;
            const std::uint8_t b = byte.exchange(0, std::memory_order_acquire);
            for (unsigned k = 0; k < 8; ++k)
                if ((b >> k) & 1u) pages.push_back(i * 8 + k);
        }
        return pages;
    }

    // ---------------------------------------------------------------- config space
    // GET_CONFIG of [offset, offset + size) (needs CONFIG); a back-end that answers with size 0
    // ("an error") or another size than asked is an error.
    result<std::vector<std::uint8_t>> get_config(std::uint32_t offset, std::uint32_t size) {
        using fr = wire::front_request;
        if (!negotiated(wire::protocol_feature::config))
            return fail(frontend_errc::not_offered, fr::get_config, "protocol feature CONFIG not negotiated");
        if (size > wire::config_space::max_size)
            return fail(frontend_errc::invalid_argument, fr::get_config, "size above 256");
        wire::config_space c{};
        c.offset = offset;
        c.size = size;
        auto r = transact<fr::get_config>(c);
        if (!r) return unexpected(r.error());
        if (r->payload.size == 0) return fail(frontend_errc::rejected, fr::get_config, "back-end answered with size 0 (error)");
        if (r->payload.size != size)
            return fail(frontend_errc::wrong_reply_size, fr::get_config,
                        "config reply of " + std::to_string(r->payload.size) + " bytes where " + std::to_string(size) +
                            " were asked");
        return std::vector<std::uint8_t>(r->payload.region.begin(), r->payload.region.begin() + size);
    }

    // ---------------------------------------------------------------- back-end channel
    // Serves what the back-end sent on its channel, waiting up to `timeout` for the first
    // message. Returns how many messages were handled.
    result<std::size_t> serve_backend_requests(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
        std::size_t n = 0;
        while (backend_.is_open()) {
            pollfd p{backend_.native_handle(), POLLIN, 0};
            int r;
            do {
                r = ::poll(&p, 1, n == 0 ? clamp_ms(timeout) : 0);
            } while (r < 0 && errno == EINTR);
            if (r <= 0) break;
            if (auto s = serve_backend_one(); !s) return unexpected(s.error());
            ++n;
        }
        return n;
    }
    [[nodiscard]] std::uint64_t config_changes() const noexcept { return config_changes_; }
    [[nodiscard]] bool backend_channel_open() const noexcept { return backend_.is_open(); }

    // ---------------------------------------------------------------- what was negotiated
    [[nodiscard]] std::uint64_t offered_features() const noexcept { return offered_features_; }
    [[nodiscard]] std::uint64_t features() const noexcept { return acked_features_; }
    [[nodiscard]] std::uint64_t offered_protocol_features() const noexcept { return offered_protocol_features_; }
    [[nodiscard]] std::uint64_t protocol_features() const noexcept { return protocol_features_; }
    [[nodiscard]] bool negotiated(std::uint64_t protocol_feature) const noexcept {
        return wire::has(protocol_features_, protocol_feature);
    }
    // GET_QUEUE_NUM's answer (with MQ); 0 when the back-end was not asked.
    [[nodiscard]] std::uint64_t queue_num() const noexcept { return queue_num_; }
    [[nodiscard]] const frontend_options& options() const noexcept { return options_; }
    [[nodiscard]] Channel& channel() noexcept { return channel_; }

    // ---------------------------------------------------------------- raw requests
    // A request with a reply of its own: sends it, returns the decoded reply.
    template <auto R>
    result<wire::reply<R>> transact(typename wire::message<R>::payload_type payload, wire::fd_list fds = {}) {
        static_assert(wire::rules(R).reply != wire::reply_rule::ack, "use request() for requests answered by an ack");
        wire::message<R> m;
        m.payload = payload;
        m.fds = fds;
        if (auto s = send(m); !s) return unexpected(s.error());
        return await<R>("no reply");
    }

    // A request without a reply of its own: with REPLY_ACK, NEED_REPLY is set and the ack
    // awaited and checked (non-zero: rejected).
    template <auto R>
    result<void> request(typename wire::message<R>::payload_type payload, wire::fd_list fds = {}) {
        wire::message<R> m;
        m.payload = payload;
        m.fds = fds;
        return request_message(m);
    }
    template <auto R>
    result<void> request_message(wire::message<R> m) {
        static_assert(wire::rules(R).reply == wire::reply_rule::ack, "use transact() for requests with a reply");
        const bool ack = negotiated(wire::protocol_feature::reply_ack);
        if (ack) m.flags |= wire::flags::need_reply;
        if (auto s = send(m); !s) return s;
        if (!ack) return {};
        auto r = await<R>("no ack");
        if (!r) return unexpected(r.error());
        if (r->payload.value != 0)
            return fail(frontend_errc::rejected, R, "back-end acked with failure (" + std::to_string(r->payload.value) + ")");
        return {};
    }

private:
    template <auto R>
    result<void> post(typename wire::message<R>::payload_type payload, bool want_ack) {
        wire::message<R> m;
        m.payload = payload;
        if (want_ack) return request_message(m);
        return send(m);
    }

    template <auto R>
    result<void> send(const wire::message<R>& m) {
        auto f = wire::encode(m);
        if (!f) return fail(frontend_errc::invalid_argument, R, f.error().message());
        if (auto s = channel_.send(*f, options_.timeout); !s) return unexpected(detail::from_transport(R, s.error(), "send"));
        return {};
    }

    result<void> set_logging(bool on) {
        const std::uint64_t features = on ? acked_features_ | wire::vhost_feature::log_all
                                          : acked_features_ & ~wire::vhost_feature::log_all;
        if (auto r = request<wire::front_request::set_features>({features}); !r) return r;
        acked_features_ = features;
        for (std::size_t i = 0; i < vrings_.size(); ++i) {
            if (!vrings_[i]) continue;
            wire::vring_addr addr = vring_addrs_[i].addr;
            addr.flags = on ? wire::vring_addr::flag_log : 0;
            addr.log_guest_addr = on ? vring_addrs_[i].used_gpa : 0;
            if (auto r = request<wire::front_request::set_vring_addr>(addr); !r) return r;
            vring_addrs_[i].addr = addr;
        }
        return {};
    }

    // Waits (bounded) for the reply to R, serving the back-end channel meanwhile.
    template <auto R>
    result<wire::reply<R>> await(const char* missing, std::vector<unique_fd>* keep_fds = nullptr) {
        using clock = std::chrono::steady_clock;
        const auto until = clock::now() + options_.timeout;
        auto left = [&] {
            return std::max<std::chrono::milliseconds>(
                std::chrono::ceil<std::chrono::milliseconds>(until - clock::now()), std::chrono::milliseconds(0));
        };
        const auto timed_out = [&] {
            return frontend_error{frontend_errc::timed_out, R,
                                  std::string(missing) + " within " + std::to_string(options_.timeout.count()) + " ms"};
        };
        for (;;) {
            const int main_fd = channel_.native_handle();
            if (backend_.is_open() && main_fd >= 0) {
                pollfd p[2] = {{main_fd, POLLIN, 0}, {backend_.native_handle(), POLLIN, 0}};
                const int r = ::poll(p, 2, clamp_ms(left()));
                if (r < 0) {
                    if (errno == EINTR) continue;
                    return fail(frontend_errc::transport, R, "poll: " + std::error_code(errno, std::system_category()).message());
                }
                if (r == 0) return unexpected(timed_out());
                if (p[1].revents != 0)
                    if (auto s = serve_backend_one(); !s) return unexpected(s.error());
                if (p[0].revents == 0) continue;
            }
            auto msg = channel_.receive(left());
            if (!msg) {
                if (msg.error().code == transport::errc::timed_out) return unexpected(timed_out());
                return unexpected(detail::from_transport(R, msg.error(), "awaiting the reply"));
            }
            auto reply = wire::decode_reply<R>(msg->bytes(), msg->fds.span());
            if (!reply) return unexpected(detail::from_wire(R, reply.error()));
            if (keep_fds != nullptr)
                for (std::size_t i = 0; i < msg->fds.size(); ++i) keep_fds->push_back(msg->fds.take(i));
            return std::move(*reply);
        }
    }

    result<void> set_status(std::uint8_t status) {
        if (!negotiated(wire::protocol_feature::status)) return {};
        return request<wire::front_request::set_status>({status});
    }

    result<void> open_backend_channel() {
        auto ends = transport::open_framed_socket_pair();
        if (!ends)
            return fail(frontend_errc::transport, wire::front_request::set_backend_req_fd, ends.error().message());
        // The back-end's end is closed here once sent: the back-end holds its own copy.
        if (auto r = request<wire::front_request::set_backend_req_fd>({}, {ends->remote.get()}); !r) return r;
        backend_ = std::move(ends->local);
        return {};
    }

    // One message of the back-end channel: CONFIG_CHANGE_MSG is taken (and acked when asked);
    // anything else is refused with a failure ack when one is expected. A channel that breaks
    // or sends what does not decode is closed: it is the back-end's to use, and losing it
    // does not stop the main channel.
    result<void> serve_backend_one() {
        auto msg = backend_.receive(wire::channel::back, options_.timeout);
        if (!msg) {
            backend_error_ = msg.error().message();
            backend_.close();
            return {};
        }
        auto decoded = wire::decode<wire::back_request>(msg->bytes(), msg->fds.span());
        if (!decoded) {
            backend_error_ = decoded.error().message();
            backend_.close();
            return {};
        }
        return std::visit([&](const auto& m) -> result<void> {
            constexpr auto R = std::decay_t<decltype(m)>::request;
            bool ok = false;
            if constexpr (R == wire::back_request::config_change_msg) {
                ++config_changes_;
                if (options_.on_config_change) options_.on_config_change();
                ok = true;
            }
            if (!wire::expects_reply(R, m.flags, protocol_features_)) return {};
            wire::reply<R> r;
            r.payload.value = ok ? 0 : 1;
            auto f = wire::encode(r);
            if (!f) return {};
            if (auto s = backend_.send(*f, options_.timeout); !s) {
                backend_error_ = s.error().message();
                backend_.close();
            }
            return {};
        }, *decoded);
    }

    static int clamp_ms(std::chrono::milliseconds t) noexcept {
        if (t.count() < 0) return -1;
        return static_cast<int>(std::min<std::int64_t>(t.count(), INT_MAX));
    }
    static std::string hex(const char* before, std::uint64_t v, const char* after) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
        return std::string(before) + buf + after;
    }
    static unexpected<frontend_error> fail(frontend_errc c, wire::front_request r, std::string detail) {
        return unexpected(frontend_error{c, r, std::move(detail)});
    }

    Channel channel_;
    frontend_options options_;
    std::optional<frontend_memory> memory_;
    std::vector<std::unique_ptr<driver_vring>> vrings_;
    transport::framed_socket backend_;
    std::string backend_error_;
    std::uint64_t offered_features_ = 0;
    std::uint64_t acked_features_ = 0;
    std::uint64_t offered_protocol_features_ = 0;
    std::uint64_t protocol_features_ = 0;
    std::uint64_t queue_num_ = 0;
    struct sent_addresses {
        wire::vring_addr addr;  // SET_VRING_ADDR as last sent
        std::uint64_t used_gpa; // its used ring's guest address (the log address)
    };
    std::vector<sent_addresses> vring_addrs_;
    std::shared_ptr<memory::dirty_log> log_;    // start_logging's log
    wire::inflight_description inflight_{};
    unique_fd inflight_fd_;
    std::uint64_t config_changes_ = 0;

public:
    // Why the back-end channel was closed, if it was ("" while it works).
    [[nodiscard]] const std::string& backend_channel_error() const noexcept { return backend_error_; }
};

} // namespace vvu::protocol
