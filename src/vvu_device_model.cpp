// The VVU device model: the vhost-user side (front-end socket, fds, message checks), the
// connection state machine, and the bridge to the PCI function (function_model) that the
// vfio-user server exposes to the driver. See include/vvu/vvu/device_model.hpp.
#include <vvu/vvu/device_model.hpp>

#include <vvu/pci/vvu_function.hpp>
#include <vvu/protocol/inflight_area.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/unix_listener.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/fd_stream.hpp>
#include <vvu/vfio_user/dma.hpp>
#include <vvu/vfio_user/server.hpp>
#include <vvu/vvu/function_model.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/features.hpp>
#include <vvu/wire/format.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace vvu::vvu_device {

std::uint64_t passthrough_protocol_features() noexcept {
    namespace pf = wire::protocol_feature;
    return pf::mq | pf::rarp | pf::reply_ack | pf::net_mtu | pf::backend_req | pf::config | pf::reset_device |
           pf::configure_mem_slots | pf::status | pf::log_shmfd;
}

namespace {

namespace layout = pci::vvu_function;
using wire::front_request;

// What an epoll event is about: the kind in the high bits, a vring index in the low ones.
enum class source : std::uint64_t { stop = 1, park, pci_listener, pci_client, frontend_listener, frontend, backend_channel, kick };
constexpr std::uint64_t tag(source s, std::uint32_t index = 0) noexcept {
    return (static_cast<std::uint64_t>(s) << 32) | index;
}
constexpr source source_of(std::uint64_t t) noexcept { return static_cast<source>(t >> 32); }
constexpr std::uint32_t index_of(std::uint64_t t) noexcept { return static_cast<std::uint32_t>(t); }

// A message for the driver: header + payload exactly as it will sit in an rxq buffer.
using frame_bytes = std::vector<std::byte>;

frame_bytes copy_bytes(std::span<const std::byte> b) { return {b.begin(), b.end()}; }

// A message the device makes itself (the replay's memory table, a vring stopped by
// GET_VRING_BASE): header + payload, fds left out as on the rxq. `fds` only satisfies the
// codec's count; they are not sent.
template <auto R>
frame_bytes make_frame(typename wire::message<R>::payload_type payload, std::span<const int> fds = {}) {
    wire::message<R> m;
    m.payload = payload;
    m.fds = wire::fd_list(fds);
    auto f = wire::encode(m);
    return f ? copy_bytes(f->bytes()) : frame_bytes{};
}

// The same message with NEED_REPLY set or cleared.
frame_bytes with_need_reply(frame_bytes f, bool need_reply) {
    wire::header h = wire::load_header(f);
    h.flags = need_reply ? (h.flags | wire::flags::need_reply) : (h.flags & ~wire::flags::need_reply);
    wire::store_header(h, f);
    return f;
}

// Who gets the driver's reply to a request on the rxq.
enum class reply_route : std::uint8_t {
    frontend,   // the front-end asked
    replay,     // the device replayed it to a new driver: the ack is swallowed (0 required)
    device_ack, // the front-end waits for an ack the lost driver never gave: the device gives
                // it once the replay ahead of it has been acknowledged
    barrier,    // a GET_FEATURES the device put behind a memory message: the reply is swallowed
};
struct awaited_reply {
    front_request request{};
    reply_route route = reply_route::frontend;
    frame_bytes bytes;      // frontend: the request, to send to a new driver again
    std::uint64_t seq = 0;  // when the device took it (record order)
    bool barrier = false;   // its reply shows the driver has handled the memory message before it
};

// What the front-end set up in its session, the last of each request, as the messages passed
// (bytes as the front-end sent them; fds are the device's own: window, kick_fds, call_fds).
struct vring_record {
    std::optional<frame_bytes> num, addr, base, call, err, enable, kick;
    std::uint64_t kick_seq = 0;
};
struct session_record {
    static constexpr std::size_t max_config_ranges = 32;
    std::optional<frame_bytes> owner, protocol_features, features, backend_req_fd, mtu, status, log_base;
    std::optional<frame_bytes> inflight; // the device's own SET_INFLIGHT_FD (packed rings), replayed too
    std::vector<std::pair<std::uint64_t, frame_bytes>> config; // SET_CONFIG by (offset, size)
    std::map<std::uint32_t, vring_record> vrings;
    std::uint64_t protocol_features_value = 0;
    bool driver_inflight = false; // INFLIGHT_SHMFD added to the SET_PROTOCOL_FEATURES the driver got
    std::uint64_t features_value = 0;
    std::uint64_t seq = 0;     // requests taken so far
    bool overflow = false;     // more SET_CONFIG ranges than kept: the session cannot be resumed
};

} // namespace

struct device_model::impl final : function_owner {
    device_options opt;
    layout::bar2_layout bar2;
    unique_fd epoll;
    unique_fd stop_event;

    // The driver's side: the PCI function and the vfio-user server that exposes it.
    std::unique_ptr<function_model> function;
    std::unique_ptr<vfio_user::server> pci;
    int pci_client = -1; // the attached driver's socket, as watched

    // The front-end's side.
    std::optional<transport::unix_listener> frontend_listener; // (none: a device made for a take-over, until import)
    transport::framed_socket frontend;
    transport::framed_socket backend_channel;
    bool frontend_reading = false; // EPOLLIN on the front-end socket (else hang-up only)

    // What the front-end gave, kept while its session lasts.
    layout::window_layout window;
    std::vector<unique_fd> window_fds; // parallel to window.areas()
    unique_fd log_fd;                  // window.log()'s file (SET_LOG_BASE)
    unique_fd inflight_fd;             // window.inflight()'s file: the device's own (make_inflight_area)
    std::uint64_t driver_protocol_features = 0; // what the driver offered (its GET_PROTOCOL_FEATURES reply)
    std::vector<unique_fd> kick_fds;   // per vring
    std::vector<unique_fd> call_fds;   // per vring: the doorbells' ioeventfds
    std::vector<unique_fd> err_fds;    // per vring: the error doorbells' ioeventfds (SET_VRING_ERR)

    // The function's virtqueues (device side), over the driver's DMA memory.
    std::optional<ring::split_device<vfio_user::dma_space>> rxq;
    std::optional<ring::split_device<vfio_user::dma_space>> txq;
    std::deque<frame_bytes> to_driver; // waiting for an rxq buffer

    // A driver restart (device_model.hpp): the front-end's setup as it passed, the replies
    // requests on the rxq wait for, and whether the session waits for its next driver.
    static constexpr std::size_t max_awaited = 1024;
    session_record record;
    std::deque<awaited_reply> awaited;
    bool kept = false;

    // A memory message is on its way to the driver and the front-end's socket is not read until
    // the driver has handled it (the reply to an awaited entry marked `barrier`): the window
    // already shows the message, and a later one applied to it before the driver maps the
    // regions of this one would take them away under it (a REM_MEM_REG right behind a
    // SET_MEM_TABLE without REPLY_ACK).
    bool memory_barrier = false;

    bool backend_up = false;            // the driver set BACKEND_UP (and DRIVER_OK)
    bool awaiting_backend_reack = false; // after a disconnect: BACKEND_UP must drop first
    bool connected = false;
    bool running = true;
    device_counters counts;
    // device_progress of the current front-end socket, and what was last published.
    std::uint64_t frontend_sockets = 0;
    std::uint64_t frontend_bytes = 0;
    std::uint64_t to_driver_at_accept = 0;
    std::optional<device_progress> published;

    // The server goes first: dropping its client calls back into this object (client_detached),
    // which must still be whole.
    ~impl() override { pci.reset(); }

    impl(device_options o, std::optional<transport::unix_listener> fl)
        : opt(std::move(o)), bar2(layout::bar2_layout::for_queues(opt.max_queues)), frontend_listener(std::move(fl)),
          window(bar2.shared_memory_size), kick_fds(opt.max_queues), call_fds(opt.max_queues), err_fds(opt.max_queues) {}

    template <class... Args>
    void log(fmt::format_string<Args...> f, Args&&... args) {
        if (opt.log) opt.log(fmt::format(f, std::forward<Args>(args)...));
    }

    // ------------------------------------------------------------------ epoll bookkeeping
    bool watch(int fd, std::uint32_t events, std::uint64_t t) {
        epoll_event e{};
        e.events = events;
        e.data.u64 = t;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &e) == 0) return true;
        if (errno == EEXIST) return ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, fd, &e) == 0;
        return false;
    }
    void unwatch(int fd) {
        if (fd >= 0) ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    }

    // Reads the front-end's socket only while CONNECTED, nothing waits for an rxq buffer
    // (back-pressure: a slow driver slows the front-end instead of growing a queue) and no
    // memory message waits for the driver; otherwise only its hang-up is watched. The watch is
    // level-triggered: messages that arrived meanwhile are reported when reading resumes.
    void update_frontend_interest() {
        if (!frontend.is_open()) return;
        const bool want = connected && to_driver.empty() && !memory_barrier;
        if (want == frontend_reading) return;
        frontend_reading = want;
        watch(frontend.native_handle(), want ? EPOLLIN | EPOLLRDHUP : EPOLLRDHUP, tag(source::frontend));
    }

    // ------------------------------------------------------------- connection state machine
    connection_state state() const noexcept {
        if (connected) return connection_state::connected;
        if (frontend.is_open()) return connection_state::socket_open;
        if (backend_up) return connection_state::backend_up;
        return connection_state::initial;
    }

    void notify_config() {
        function->signal_config();
        ++counts.config_interrupts;
    }

    void maybe_connect() {
        if (connected || !frontend.is_open() || !backend_up || awaiting_backend_reack) return;
        connected = true;
        if (kept) {
            resume();
            return;
        }
        ++counts.frontends;
        function->set_frontend_up(true);
        notify_config();
        update_frontend_interest();
        log("front-end connected to the driver (FRONTEND_UP)");
    }

    // Ends the front-end's session. `driver_caused`: the driver asked for it (BACKEND_UP
    // cleared, reset, detach), so it needs no interrupt and no re-acknowledgement.
    void disconnect(std::string_view why, bool driver_caused) {
        const bool was_connected = connected;
        if (frontend.is_open()) {
            unwatch(frontend.native_handle());
            frontend.close();
        }
        frontend_reading = false;
        if (backend_channel.is_open()) {
            unwatch(backend_channel.native_handle());
            backend_channel.close();
        }
        for (std::uint32_t i = 0; i < kick_fds.size(); ++i) {
            unwatch(kick_fds[i].get());
            kick_fds[i].reset();
            call_fds[i].reset();
            err_fds[i].reset();
        }
        window.clear();
        window_fds.clear();
        log_fd.reset();
        inflight_fd.reset();
        driver_protocol_features = 0;
        to_driver.clear();
        record = {};
        awaited.clear();
        memory_barrier = false;
        kept = false;
        connected = false;
        ++counts.disconnects;
        log("front-end disconnected: {}", why);
        if (function) function->set_frontend_up(false);
        if (was_connected && !driver_caused) {
            awaiting_backend_reack = true;
            notify_config();
        }
        if (!frontend.is_open()) watch(frontend_listener->native_handle(), EPOLLIN, tag(source::frontend_listener));
    }

    // --------------------------------------------------------------------- driver restart
    // Why the session cannot outlive its driver, if it cannot.
    std::optional<std::string> not_resumable() const {
        if (record.overflow)
            return fmt::format("the front-end set more than {} config ranges", session_record::max_config_ranges);
        if (wire::has(record.features_value, wire::virtio_feature::ring_packed) && !record.inflight)
            for (const auto& [i, v] : record.vrings)
                if (v.kick)
                    return std::string("a packed ring runs without an inflight area (the driver does not offer "
                                       "INFLIGHT_SHMFD): its position cannot be resumed");
        return std::nullopt;
    }

    // The driver went away (detach, reset) without ending the session: keep it for the next
    // one when it can be resumed, else disconnect as a driver-caused end.
    void lose_driver(std::string_view why) {
        if (rxq || txq) log("function queues stopped: {}", why);
        rxq.reset();
        txq.reset();
        backend_up = false;
        if (!connected) return;
        if (auto no = not_resumable()) {
            disconnect(fmt::format("{} ({})", why, *no), true);
            return;
        }
        connected = false;
        kept = true;
        function->set_frontend_up(false); // the next driver sees it rise after its BACKEND_UP
        for (auto& k : kick_fds) unwatch(k.get()); // kicks wait in their eventfds
        // Front-end requests not yet on the rxq are in the record (or await replies below);
        // replies to the lost driver's back-end requests have no one to go to. A memory
        // barrier goes too: the replay gives the next driver the window as it stands, and
        // resume() puts a barrier behind that.
        to_driver.clear();
        memory_barrier = false;
        std::deque<awaited_reply> still;
        for (auto& a : awaited) {
            if (a.route == reply_route::replay || a.route == reply_route::barrier) continue; // made again
            a.barrier = false;
            if (a.route == reply_route::frontend && wire::rules(a.request).reply != wire::reply_rule::always) {
                a.route = reply_route::device_ack; // its effect is in the record
                a.bytes.clear();
            }
            still.push_back(std::move(a));
        }
        awaited = std::move(still);
        update_frontend_interest();
        log("front-end session kept for the next driver: {}", why);
    }

    // A new driver set BACKEND_UP for a kept session: FRONTEND_UP, then the replay, then the
    // requests the lost driver left unanswered, then the front-end's socket again — once the
    // driver has handled the replayed memory table (a memory barrier, as for the front-end's
    // own memory messages).
    void resume() {
        kept = false;
        ++counts.driver_restarts;
        std::vector<frame_bytes> replay = replay_messages();
        std::deque<awaited_reply> order;
        const std::uint64_t pf = record.protocol_features_value;
        const bool acks = wire::has(pf, wire::protocol_feature::reply_ack);
        std::size_t n = 0;
        for (std::size_t i = 0; i < replay.size(); ++i) {
            if (replay[i].size() < wire::header_size) continue; // (a message the codec refused to make)
            // SET_OWNER goes first, before the back-end knows REPLY_ACK: no ack.
            const auto r = static_cast<front_request>(wire::load_header(replay[i]).request);
            const bool ack = acks && r != front_request::set_owner;
            frame_bytes f = with_need_reply(std::move(replay[i]), ack);
            if (wire::expects_reply(r, wire::load_header(f).flags, ack ? pf : 0))
                order.push_back({r, reply_route::replay, {}, 0});
            to_driver.push_back(std::move(f));
            ++n;
        }
        if (!window.areas().empty() || window.log() || window.inflight()) {
            // The last replayed request comes after the memory messages: its ack will do.
            if (acks && !order.empty()) order.back().barrier = true;
            else queue_barrier(order);
            memory_barrier = true;
        }
        for (auto& a : awaited) {
            if (a.route == reply_route::frontend) {
                to_driver.push_back(a.bytes);
                ++n;
            }
            order.push_back(std::move(a));
        }
        awaited = std::move(order);
        counts.replayed += n;
        for (std::uint32_t i = 0; i < kick_fds.size(); ++i)
            if (kick_fds[i] && !watch(kick_fds[i].get(), EPOLLIN, tag(source::kick, i)))
                log("kick fd of vring {} cannot be polled again", i);
        function->set_frontend_up(true);
        notify_config();
        log("front-end session resumed on a new driver (FRONTEND_UP): {} messages replayed", n);
        deliver_to_driver();
        if (connected) flush_device_acks();
    }

    // The front-end's setup as requests a fresh back-end takes in this order.
    std::vector<frame_bytes> replay_messages() {
        std::vector<frame_bytes> out;
        auto put = [&](const std::optional<frame_bytes>& f) {
            if (f && !f->empty()) out.push_back(*f);
        };
        put(record.owner);
        put(record.protocol_features);
        put(record.features);
        put(record.backend_req_fd);
        put(record.mtu);
        for (const auto& [range, f] : record.config) out.push_back(f);
        if (!window.areas().empty()) {
            // The window compacted, so that the driver's mirror of it (built from these
            // messages) lays the regions out where the device does.
            std::vector<wire::memory_region> regions;
            for (const auto& a : window.areas()) regions.push_back(a.region);
            (void)window.set_table(regions); // packed tighter than a layout that fitted: fits
            std::vector<int> fds;
            for (const auto& fd : window_fds) fds.push_back(fd.get());
            wire::memory_table t;
            const std::size_t first = std::min(regions.size(), wire::memory_table::max_regions);
            t.nregions = static_cast<std::uint32_t>(first);
            std::copy_n(regions.begin(), first, t.regions.begin());
            out.push_back(make_frame<front_request::set_mem_table>(t, std::span(fds).first(first)));
            for (std::size_t i = first; i < regions.size(); ++i)
                out.push_back(make_frame<front_request::add_mem_reg>({0, regions[i]}, std::span(fds).subspan(i, 1)));
        }
        // The log, then the inflight area, after the regions, where the compaction above put them.
        if (window.log()) put(record.log_base);
        if (window.inflight()) put(record.inflight);
        for (const auto& [i, v] : record.vrings) {
            put(v.num);
            put(v.addr);
            put(v.base);
            put(v.call);
            put(v.err);
            put(v.enable);
            put(v.kick);
        }
        put(record.status);
        return out;
    }

    // Puts a GET_FEATURES on the way to the driver, its reply awaited (in `into`) as a memory
    // barrier: the driver answers in order, so the reply comes once it has handled what is ahead.
    void queue_barrier(std::deque<awaited_reply>& into) {
        into.push_back({front_request::get_features, reply_route::barrier, {}, record.seq, true});
        to_driver.push_back(make_frame<front_request::get_features>({}));
    }

    // The reply of an awaited entry marked `barrier` has passed (or been given by the device):
    // the driver has handled the memory message, the front-end is read again.
    void barrier_passed() {
        memory_barrier = false;
        update_frontend_interest();
    }

    // Acks the device owes the front-end, once nothing is ahead of them.
    void flush_device_acks() {
        while (connected && !awaited.empty() && awaited.front().route == reply_route::device_ack) {
            const auto r = awaited.front().request;
            if (awaited.front().barrier) barrier_passed();
            awaited.pop_front();
            std::array<std::byte, wire::header_size + 8> ack{};
            wire::store_header({static_cast<std::uint32_t>(r), wire::flags::version | wire::flags::reply, 8}, ack);
            if (auto s = frontend.send(ack, {}, opt.message_timeout); !s) {
                disconnect(fmt::format("writing to the front-end: {}", s.error().message()), false);
                return;
            }
            ++counts.to_frontend;
        }
    }

    // Keeps the record of the front-end's setup up to date with a request the device took.
    template <auto R>
    void remember(const wire::message<R>& msg, std::span<const std::byte> bytes) {
        ++record.seq;
        auto b = [&] { return copy_bytes(bytes); };
        if constexpr (R == front_request::set_owner) {
            record.owner = b();
        } else if constexpr (R == front_request::set_protocol_features) {
            record.protocol_features = b();
            record.protocol_features_value = msg.payload.value;
        } else if constexpr (R == front_request::set_features) {
            record.features = b();
            record.features_value = msg.payload.value;
        } else if constexpr (R == front_request::set_backend_req_fd) {
            record.backend_req_fd = b();
        } else if constexpr (R == front_request::net_set_mtu) {
            record.mtu = b();
        } else if constexpr (R == front_request::set_status) {
            record.status = b();
        } else if constexpr (R == front_request::set_log_base) {
            record.log_base = b();
        } else if constexpr (R == front_request::set_config) {
            const std::uint64_t range = (std::uint64_t{msg.payload.offset} << 32) | msg.payload.size;
            auto it = std::ranges::find_if(record.config, [&](const auto& c) { return c.first == range; });
            if (it != record.config.end()) it->second = b();
            else if (record.config.size() < session_record::max_config_ranges) record.config.emplace_back(range, b());
            else record.overflow = true;
        } else if constexpr (R == front_request::set_vring_num) {
            record.vrings[msg.payload.index].num = b();
        } else if constexpr (R == front_request::set_vring_addr) {
            record.vrings[msg.payload.index].addr = b();
        } else if constexpr (R == front_request::set_vring_base) {
            record.vrings[msg.payload.index].base = b();
        } else if constexpr (R == front_request::set_vring_enable) {
            record.vrings[msg.payload.index].enable = b();
        } else if constexpr (R == front_request::set_vring_kick) {
            auto& v = record.vrings[msg.payload.index()];
            v.kick = b();
            v.kick_seq = record.seq;
        } else if constexpr (R == front_request::set_vring_call) {
            record.vrings[msg.payload.index()].call = b();
        } else if constexpr (R == front_request::set_vring_err) {
            record.vrings[msg.payload.index()].err = b();
        } else if constexpr (R == front_request::reset_owner) {
            // The back-end disables every ring.
            for (auto& [i, v] : record.vrings) v.enable = make_frame<front_request::set_vring_enable>({i, 0});
        } else if constexpr (R == front_request::reset_device) {
            // The back-end forgets the session but its ownership and protocol features.
            session_record next;
            next.seq = record.seq;
            next.protocol_features = std::move(record.protocol_features);
            next.protocol_features_value = record.protocol_features_value;
            next.driver_inflight = record.driver_inflight; // (the inflight area is made anew)
            next.owner = make_frame<front_request::set_owner>({});
            next.log_base = std::move(record.log_base); // the window keeps the log's area, as its regions
            record = std::move(next);
        }
        // Memory: the window is the record. GET_VRING_BASE: when its reply passes.
    }

    // GET_VRING_BASE answered: the vring stopped at `base`; it starts again only on a kick the
    // front-end sends after it.
    void note_vring_stopped(std::span<const std::byte> reply, std::uint64_t asked_at) {
        if (reply.size() < wire::header_size + 8) return;
        const std::uint32_t index = le::load<std::uint32_t>(reply.data() + wire::header_size);
        const std::uint32_t base = le::load<std::uint32_t>(reply.data() + wire::header_size + 4);
        auto it = record.vrings.find(index);
        if (it == record.vrings.end()) return;
        if (it->second.kick_seq < asked_at) it->second.kick.reset();
        it->second.base = make_frame<front_request::set_vring_base>({index, base});
    }

    // --------------------------------------------------------------------- front-end side
    void accept_frontend() {
        auto fd = frontend_listener->try_accept();
        if (!fd) {
            log("vhost-user accept: {}", fd.error().message());
            return;
        }
        if (!*fd) return;
        frontend = transport::framed_socket(std::move(*fd));
        ++frontend_sockets;
        frontend_bytes = 0;
        to_driver_at_accept = counts.to_driver;
        unwatch(frontend_listener->native_handle()); // one front-end at a time; others wait
        frontend_reading = false;
        watch(frontend.native_handle(), EPOLLRDHUP, tag(source::frontend));
        log("front-end socket open");
        maybe_connect();
    }

    void on_frontend_event(std::uint32_t events) {
        if (!frontend_reading) {
            // Not reading: the only news can be a hang-up (or data we leave for later).
            if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) disconnect("front-end closed the socket", false);
            return;
        }
        auto msg = frontend.receive(wire::channel::front, opt.message_timeout);
        if (!msg) {
            disconnect(msg.error().disconnected() ? std::string("front-end closed the socket") : msg.error().message(),
                       false);
            return;
        }
        frontend_bytes += msg->bytes().size();
        if (auto r = take_frontend_message(*msg); !r) {
            disconnect(r.error(), false);
            return;
        }
    }

    // Checks one front-end request, consumes its fds, and queues it for the driver.
    expected<void, std::string> take_frontend_message(transport::received_message& m) {
        auto decoded = wire::decode<front_request>(m.bytes(), m.fds.span());
        if (!decoded) return unexpected(decoded.error().message());
        const auto request = static_cast<front_request>(m.header.request);
        auto fail = [&](std::string why) { return unexpected(fmt::format("{}: {}", wire::name(request), why)); };
        auto vring_ok = [&](std::uint32_t index) { return index < opt.max_queues; };

        auto r = std::visit(
            [&]<auto R>(const wire::message<R>& msg) -> expected<void, std::string> {
                if constexpr (R == front_request::set_protocol_features) {
                    const std::uint64_t extra = msg.payload.value & ~passthrough_protocol_features();
                    if (extra != 0) return fail(fmt::format("protocol features 0x{:x} were not offered", extra));
                } else if constexpr (R == front_request::get_inflight_fd) {
                    // The driver negotiated INFLIGHT_SHMFD for the device's own area; a
                    // front-end was never offered it, and its area would have no way through.
                    return fail("INFLIGHT_SHMFD was not offered (the inflight area is the device's own)");
                } else if constexpr (R == front_request::set_mem_table) {
                    std::vector<wire::memory_region> regions(msg.payload.regions.begin(),
                                                             msg.payload.regions.begin() + msg.payload.nregions);
                    std::vector<unique_fd> fds;
                    for (std::uint32_t i = 0; i < msg.payload.nregions; ++i) {
                        if (auto c = check_region_fd(regions[i], m.fds[i]); !c) return fail(c.error());
                        fds.push_back(m.fds.take(i));
                    }
                    if (!window.set_table(regions)) return fail("the regions do not fit the shared-memory window");
                    window_fds = std::move(fds);
                } else if constexpr (R == front_request::add_mem_reg) {
                    if (window.areas().size() >= max_mem_slots) return fail(fmt::format("more than {} memory slots", max_mem_slots));
                    if (auto c = check_region_fd(msg.payload.region, m.fds[0]); !c) return fail(c.error());
                    if (!window.add(msg.payload.region)) return fail("the region does not fit the shared-memory window");
                    window_fds.push_back(m.fds.take(0));
                } else if constexpr (R == front_request::rem_mem_reg) {
                    const auto& areas = window.areas();
                    for (std::size_t i = 0; i < areas.size(); ++i) {
                        if (!layout::window_layout::same(areas[i].region, msg.payload.region)) continue;
                        (void)window.remove(msg.payload.region);
                        window_fds.erase(window_fds.begin() + static_cast<std::ptrdiff_t>(i));
                        break;
                    }
                    // An unknown region is the back-end's to refuse.
                } else if constexpr (R == front_request::set_log_base) {
                    // The dirty log: an area of the window after the regions, as for a region
                    // (pci::vvu_function::window_layout); the driver's back-end marks it there.
                    const auto region = msg.payload.as_region();
                    if (auto c = check_region_fd(region, m.fds[0]); !c) return fail(c.error());
                    if (!window.set_log(region)) return fail("the log does not fit the shared-memory window");
                    log_fd = m.fds.take(0);
                } else if constexpr (R == front_request::set_vring_kick) {
                    const std::uint32_t i = msg.payload.index();
                    if (!vring_ok(i)) return fail(fmt::format("vring {} beyond max_vhost_queues {}", i, opt.max_queues));
                    unwatch(kick_fds[i].get());
                    kick_fds[i] = msg.payload.no_fd() ? unique_fd{} : m.fds.take(0);
                    if (kick_fds[i] && !watch(kick_fds[i].get(), EPOLLIN, tag(source::kick, i)))
                        return fail(fmt::format("kick fd of vring {} cannot be polled", i));
                } else if constexpr (R == front_request::set_vring_call) {
                    const std::uint32_t i = msg.payload.index();
                    if (!vring_ok(i)) return fail(fmt::format("vring {} beyond max_vhost_queues {}", i, opt.max_queues));
                    call_fds[i] = msg.payload.no_fd() ? unique_fd{} : m.fds.take(0);
                } else if constexpr (R == front_request::set_vring_err) {
                    // Behind the vring's error doorbell: the driver's back-end rings it when it
                    // finds the ring broken.
                    const std::uint32_t i = msg.payload.index();
                    if (!vring_ok(i)) return fail(fmt::format("vring {} beyond max_vhost_queues {}", i, opt.max_queues));
                    err_fds[i] = msg.payload.no_fd() ? unique_fd{} : m.fds.take(0);
                } else if constexpr (R == front_request::set_vring_num || R == front_request::set_vring_addr ||
                                     R == front_request::set_vring_base || R == front_request::get_vring_base ||
                                     R == front_request::set_vring_enable) {
                    if (!vring_ok(msg.payload.index))
                        return fail(fmt::format("vring {} beyond max_vhost_queues {}", msg.payload.index, opt.max_queues));
                } else if constexpr (R == front_request::set_backend_req_fd) {
                    if (backend_channel.is_open()) unwatch(backend_channel.native_handle());
                    backend_channel = transport::framed_socket(m.fds.take(0));
                    if (!watch(backend_channel.native_handle(), EPOLLIN, tag(source::backend_channel)))
                        return fail("the back-end channel cannot be polled");
                } else {
                    // Anything else that carries an fd needs a feature the device masks.
                    if (!m.fds.empty()) return fail("carries fds the device cannot pass to the driver");
                }
                return {};
            },
            *decoded);
        if (!r) return r;
        frame_bytes bytes = copy_bytes(m.bytes());
        if (request == front_request::set_protocol_features) offer_inflight_to_driver(bytes);
        std::visit([&](const auto& msg) { remember(msg, bytes); }, *decoded);
        const bool memory = request == front_request::set_mem_table || request == front_request::add_mem_reg ||
                            request == front_request::rem_mem_reg || request == front_request::set_log_base;
        const bool replied = wire::expects_reply(request, m.header.flags, record.protocol_features_value);
        if (replied || memory) {
            if (awaited.size() >= max_awaited) return fail(fmt::format("more than {} requests await replies", max_awaited));
        }
        if (is_vring_request(request))
            if (auto made = make_inflight_area(); !made) return fail(made.error());
        if (replied) awaited.push_back({request, reply_route::frontend, bytes, record.seq, memory});
        to_driver.push_back(std::move(bytes));
        if (memory) {
            // One memory message at a time: its reply, or else one to a request right behind
            // it, is the barrier (memory_barrier).
            if (!replied) queue_barrier(awaited);
            memory_barrier = true;
        }
        deliver_to_driver();
        return {};
    }

    // ----------------------------------------------------- the device's own inflight area
    // A split ring a new driver resumes at its used index; a packed ring has no index in ring
    // memory that says where it stood. So for a session with packed rings the device makes an
    // inflight area of its own (INFLIGHT_SHMFD toward the driver only: the front-end is never
    // offered it), an area of the window after the regions and the log. It goes to the driver
    // (SET_INFLIGHT_FD) before the session's first vring message, the driver's back-end records
    // there what it takes, and the replay gives the same area to the next driver, whose
    // back-end resumes the rings from it.
    static bool is_vring_request(front_request r) noexcept {
        switch (r) {
        case front_request::set_vring_num: case front_request::set_vring_addr: case front_request::set_vring_base:
        case front_request::set_vring_kick: case front_request::set_vring_call: case front_request::set_vring_err:
        case front_request::set_vring_enable:
            return true;
        default:
            return false;
        }
    }

    // SET_PROTOCOL_FEATURES on its way to a driver that offered INFLIGHT_SHMFD gains it.
    void offer_inflight_to_driver(frame_bytes& f) {
        namespace pf = wire::protocol_feature;
        record.driver_inflight = wire::has(driver_protocol_features, pf::inflight_shmfd);
        if (!record.driver_inflight || f.size() < wire::header_size + 8) return;
        const auto value = le::load<std::uint64_t>(f.data() + wire::header_size);
        le::store<std::uint64_t>(f.data() + wire::header_size, value | pf::inflight_shmfd);
    }

    expected<void, std::string> make_inflight_area() {
        if (record.inflight || !record.driver_inflight || !wire::has(record.features_value, wire::virtio_feature::ring_packed))
            return {};
        if (awaited.size() >= max_awaited) return unexpected(fmt::format("more than {} requests await replies", max_awaited));
        // Room for every vring the function serves, each of the largest size: the rings' sizes
        // are not known yet, and pages no ring records in stay unallocated.
        wire::inflight_description d{};
        d.num_queues = static_cast<std::uint16_t>(std::min<std::uint32_t>(opt.max_queues, protocol::inflight_area::max_queues));
        d.queue_size = static_cast<std::uint16_t>(ring::max_queue_size);
        d.mmap_size = d.num_queues * protocol::inflight_area::stride(d.queue_size);
        unique_fd fd(::memfd_create("vvu-device-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd) return unexpected(fmt::format("the inflight area: memfd_create: {}", std::strerror(errno)));
        if (::ftruncate(fd.get(), static_cast<off_t>(d.mmap_size)) != 0 ||
            ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
            return unexpected(fmt::format("the inflight area: sizing its file: {}", std::strerror(errno)));
        if (!window.set_side(layout::window_layout::side::inflight, layout::window_layout::inflight_region(d)))
            return unexpected(std::string("the inflight area does not fit the shared-memory window"));
        inflight_fd = std::move(fd);
        const int f = inflight_fd.get();
        record.inflight = make_frame<front_request::set_inflight_fd>(d, std::span(&f, 1));
        to_driver.push_back(*record.inflight);
        // A window change, as a memory message: the front-end is read again once the driver
        // has mapped the area.
        queue_barrier(awaited);
        memory_barrier = true;
        log("packed rings: an inflight area for {} vrings of up to {} descriptors made for the driver", d.num_queues,
            d.queue_size);
        return {};
    }

    // A region's fd must hold the whole region: the driver maps it from file offset 0.
    static expected<void, std::string> check_region_fd(const wire::memory_region& r, int fd) {
        struct stat st {};
        if (::fstat(fd, &st) != 0) return unexpected(fmt::format("region fd: {}", std::strerror(errno)));
        const std::uint64_t need = r.mmap_offset + r.memory_size;
        if (need < r.mmap_offset) return unexpected(std::string("region size wraps"));
        if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) < need)
            return unexpected(fmt::format("region needs {} bytes of a {}-byte file", need, st.st_size));
        return {};
    }

    void on_backend_channel_event() {
        auto msg = backend_channel.receive(wire::channel::back, opt.message_timeout);
        if (!msg) {
            if (msg.error().disconnected()) {
                // The front-end dropped the channel; the session goes on without it.
                unwatch(backend_channel.native_handle());
                backend_channel.close();
                return;
            }
            disconnect(fmt::format("back-end channel: {}", msg.error().message()), false);
            return;
        }
        // Only replies travel this way (to the driver's back-end requests).
        auto reply = wire::decode_any_reply<wire::back_request>(msg->bytes(), msg->fds.span());
        if (!reply) {
            disconnect(fmt::format("back-end channel: {}", reply.error().message()), false);
            return;
        }
        if (!connected) {
            log("back-end channel: a reply for a driver that is gone, dropped");
            return;
        }
        queue_for_driver(copy_bytes(msg->bytes()));
    }

    void on_kick(std::uint32_t vring) {
        std::uint64_t count = 0;
        if (::read(kick_fds[vring].get(), &count, sizeof count) != static_cast<ssize_t>(sizeof count)) return;
        ++counts.kicks;
        function->signal_vring_kick(vring);
    }

    // ------------------------------------------------------------------------ driver side
    void queue_for_driver(frame_bytes f) {
        to_driver.push_back(std::move(f));
        deliver_to_driver();
    }

    void deliver_to_driver() {
        bool delivered = false;
        while (!to_driver.empty() && rxq) {
            ring::chain c;
            if (rxq->pop_burst(std::span(&c, 1)) == 0) break;
            const frame_bytes& f = to_driver.front();
            if (c.writable_bytes() < f.size()) {
                // vvu-spec.md: a buffer too small for a message is a device error.
                rxq->push(c.id(), 0);
                function->signal_queue(layout::rxq);
                disconnect(fmt::format("rxq buffer of {} bytes is too small for a {}-byte message", c.writable_bytes(),
                                       f.size()),
                           false);
                return;
            }
            c.copy_to(f);
            rxq->push(c.id(), static_cast<std::uint32_t>(f.size()));
            to_driver.pop_front();
            ++counts.to_driver;
            delivered = true;
        }
        if (rxq && rxq->broken()) {
            drop_rings("rxq broken by the driver");
            return;
        }
        if (delivered && rxq->needs_interrupt()) function->signal_queue(layout::rxq);
        update_frontend_interest();
    }

    void process_txq() {
        if (!txq) return;
        bool consumed = false;
        std::array<std::byte, wire::max_message_size> buffer;
        for (;;) {
            ring::chain c;
            if (txq->pop_burst(std::span(&c, 1)) == 0) break;
            const std::uint32_t n = c.readable_bytes();
            std::optional<std::string> violation;
            if (n < wire::header_size || n > buffer.size()) {
                violation = fmt::format("txq buffer of {} bytes is not a message", n);
            } else {
                c.copy_from(std::span(buffer).first(n));
                if (auto r = take_driver_message(std::span(buffer).first(n)); !r) violation = r.error();
            }
            txq->push(c.id(), 0);
            consumed = true;
            if (violation) {
                if (txq->needs_interrupt()) function->signal_queue(layout::txq);
                if (connected) disconnect(fmt::format("driver: {}", *violation), false);
                else log("driver: {}", *violation);
                return;
            }
        }
        if (txq->broken()) {
            drop_rings("txq broken by the driver");
            return;
        }
        if (consumed && txq->needs_interrupt()) function->signal_queue(layout::txq);
    }

    // One txq buffer: a reply for the front-end or a back-end request (vvu-spec.md: version 1,
    // exactly 12 + size bytes; replies masked where the device cannot carry a feature).
    expected<void, std::string> take_driver_message(std::span<std::byte> bytes) {
        const wire::header h = wire::load_header(bytes);
        if (h.version() != wire::flags::version) return unexpected(fmt::format("message version {}", h.version()));
        if (wire::header_size + std::size_t{h.size} != bytes.size())
            return unexpected(fmt::format("a {}-byte buffer holds a message of 12 + {} bytes", bytes.size(), h.size));
        if (!connected) return {}; // the session it answered is gone
        if (h.is_reply()) {
            auto reply = wire::decode_any_reply<front_request>(bytes, {});
            if (!reply) return unexpected(reply.error().message());
            const auto r = static_cast<front_request>(h.request);
            bool was_barrier = false; // the front-end's own reply to a memory message
            if (!awaited.empty() && awaited.front().request == r) {
                const awaited_reply a = std::move(awaited.front());
                awaited.pop_front();
                if (a.route == reply_route::barrier) {
                    barrier_passed(); // the device's own question: nothing for the front-end
                    flush_device_acks();
                    return {};
                }
                if (a.route == reply_route::replay) {
                    // An ack of the replay, for the device alone. A back-end that refuses
                    // the front-end's own setup cannot resume its session (an MTU it refused
                    // was answered so before, and the session went on).
                    const std::uint64_t value =
                        h.size >= 8 ? le::load<std::uint64_t>(bytes.data() + wire::header_size) : 0;
                    if (value != 0 && r != front_request::net_set_mtu)
                        return unexpected(fmt::format("the replayed {} refused ({})", wire::name(r), value));
                    if (a.barrier) barrier_passed();
                    flush_device_acks();
                    return {};
                }
                if (r == front_request::get_vring_base) note_vring_stopped(bytes, a.seq);
                was_barrier = a.barrier;
            } else if (!awaited.empty() && awaited.front().route == reply_route::replay) {
                return unexpected(fmt::format("a {} reply while the replayed {} awaits its ack", wire::name(r),
                                              wire::name(awaited.front().request)));
            }
            // (A reply no request waits for is passed on, as it always was.)
            mask_reply(r, bytes);
            if (auto s = frontend.send(bytes, {}, opt.message_timeout); !s) {
                disconnect(fmt::format("writing to the front-end: {}", s.error().message()), false);
                return {};
            }
            ++counts.to_frontend;
            if (was_barrier) barrier_passed();
            flush_device_acks();
            return {};
        }
        // No fd travels from the driver: a back-end request that names one cannot be passed on.
        auto request = wire::decode<wire::back_request>(bytes, {});
        if (!request) return unexpected(request.error().message());
        if (!backend_channel.is_open()) return unexpected(std::string("a back-end request without a back-end channel"));
        if (auto s = backend_channel.send(bytes, {}, opt.message_timeout); !s) {
            unwatch(backend_channel.native_handle());
            backend_channel.close();
            return {};
        }
        ++counts.backend_requests;
        return {};
    }

    // Replies that advertise what the device cannot carry are lowered in place.
    void mask_reply(front_request r, std::span<std::byte> bytes) {
        auto value = [&] { return le::load<std::uint64_t>(bytes.data() + wire::header_size); };
        if (r == front_request::get_protocol_features) {
            driver_protocol_features = value();
            le::store<std::uint64_t>(bytes.data() + wire::header_size, value() & passthrough_protocol_features());
        } else if (r == front_request::get_max_mem_slots) {
            le::store<std::uint64_t>(bytes.data() + wire::header_size, std::min(value(), max_mem_slots));
        }
    }

    // Virtqueue `q` of the function as the driver set it up, from `position` on (a live update
    // goes on where the old process stood); none before DRIVER_OK or while it is disabled.
    std::optional<ring::split_device<vfio_user::dma_space>> make_ring(std::uint16_t q, ring::split_state position = {}) {
        if ((function->device_status() & pci::status::driver_ok) == 0 || !pci) return std::nullopt;
        const auto s = function->queue_state(q);
        if (!s.enabled) return std::nullopt;
        ring::split_config cfg;
        cfg.size = s.size;
        cfg.desc_addr = s.desc;
        cfg.avail_addr = s.driver;
        cfg.used_addr = s.device;
        auto r = ring::split_device<vfio_user::dma_space>::create(pci->dma(), cfg, position);
        if (!r) {
            log("queue {}: {}", q, r.error().message());
            return std::nullopt;
        }
        return std::move(*r);
    }

    void make_rings() {
        if (!rxq) rxq = make_ring(layout::rxq);
        if (!txq) txq = make_ring(layout::txq);
    }

    void drop_rings(std::string_view why) {
        if (rxq || txq) log("function queues stopped: {}", why);
        rxq.reset();
        txq.reset();
        if (backend_up) {
            backend_up = false;
            if (connected) disconnect(why, true);
        }
    }

    void update_backend_up() {
        const bool up = (function->backend_status() & layout::device_config::backend_up) != 0 &&
                        (function->device_status() & pci::status::driver_ok) != 0;
        if (!up) awaiting_backend_reack = false;
        if (up == backend_up) return;
        backend_up = up;
        if (!up) {
            // A front-end still waiting (not CONNECTED) stays: the next BACKEND_UP connects it.
            if (connected) disconnect("the driver cleared BACKEND_UP", true);
            return;
        }
        log("driver ready (BACKEND_UP)");
        maybe_connect();
    }

    // ------------------------------------------------------------- function_model::owner
    void queue_notified(std::uint16_t q) override {
        if (q == layout::rxq) deliver_to_driver();
        else if (q == layout::txq) process_txq();
    }
    void doorbell_rung(std::uint32_t bell) override {
        ++counts.doorbells;
        if (const int fd = doorbell_eventfd(bell); fd >= 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
        }
    }
    void status_changed(std::uint8_t, std::uint8_t now) override {
        if ((now & pci::status::driver_ok) != 0) {
            make_rings();
            deliver_to_driver();
        } else if (now == 0 && connected) {
            // A reset without BACKEND_UP cleared first: the driver instance is gone (a guest
            // reboots, a driver restarts); the session waits for the next BACKEND_UP.
            lose_driver("the driver reset the function");
        } else {
            drop_rings("the driver reset the function");
        }
        update_backend_up();
    }
    void backend_status_written(std::uint32_t) override { update_backend_up(); }
    int window_read(std::uint64_t offset, std::span<std::byte> out) override {
        std::memset(out.data(), 0, out.size());
        return window_io(offset, out.size(), [&](int fd, std::uint64_t at, std::size_t done, std::size_t n) {
            return ::pread(fd, out.data() + done, n, static_cast<off_t>(at));
        });
    }
    int window_write(std::uint64_t offset, std::span<const std::byte> in) override {
        return window_io(offset, in.size(), [&](int fd, std::uint64_t at, std::size_t done, std::size_t n) {
            return ::pwrite(fd, in.data() + done, n, static_cast<off_t>(at));
        });
    }
    std::vector<window_area> window_areas() override {
        std::vector<window_area> out;
        const auto& areas = window.areas();
        for (std::size_t i = 0; i < areas.size(); ++i)
            out.push_back({areas[i].offset, areas[i].size(), window_fds[i].get()});
        if (const auto& l = window.log()) out.push_back({l->offset, l->size(), log_fd.get()});
        if (const auto& i = window.inflight()) out.push_back({i->offset, i->size(), inflight_fd.get()});
        return out;
    }
    int doorbell_eventfd(std::uint32_t bell) override {
        if (bell < call_fds.size()) return call_fds[bell] ? call_fds[bell].get() : -1;
        const std::uint32_t first_error = bar2.error_doorbell_index(0);
        if (bell < first_error || bell - first_error >= err_fds.size()) return -1; // the log doorbell, or none
        return err_fds[bell - first_error] ? err_fds[bell - first_error].get() : -1;
    }
    // The rings point into the driver's DMA memory: any unmap may take it away from them.
    void dma_unmapped(std::uint64_t, std::uint64_t) override { drop_rings("the driver unmapped DMA memory"); }
    void client_detached() override {
        awaiting_backend_reack = false;
        // A front-end still waiting (not CONNECTED) waits for the next driver; a CONNECTED
        // one keeps its session for it (device_model.hpp, driver restart).
        lose_driver("the driver went away");
        log("driver detached");
    }

    // Reads or writes [offset, offset + len) of the window through the regions' files; bytes
    // in no region read as zero and are not written.
    template <class Io>
    int window_io(std::uint64_t offset, std::size_t len, Io io) {
        for (const window_area& a : window_areas()) {
            const std::uint64_t begin = std::max(offset, a.offset);
            const std::uint64_t end = std::min(offset + len, a.offset + a.size);
            if (begin >= end) continue;
            const std::size_t done = begin - offset;
            if (io(a.fd, begin - a.offset, done, end - begin) < 0) return errno;
        }
        return 0;
    }

    // -------------------------------------------------------------------- live update
    // The device as one port of a runtime live update (device_model.hpp). The loop parks
    // between two events; the hand-over thread then reads (export) or the new process fills
    // (import) everything below while no event is served.
    static constexpr std::uint32_t image_magic = 0x44555656; // "VVUD"
    static constexpr std::uint32_t image_version = 1;
    static constexpr std::size_t max_image_frames = 65536;

    unique_fd park_event;
    std::mutex park_mutex;
    std::condition_variable park_changed;
    bool park_requested = false; // the hand-over thread waits for the loop to park
    bool parked = false;         // the loop waits for unpark() or retire()
    bool retired = false;

    struct device_port final : runtime::handover_port {
        impl& d;
        explicit device_port(impl& owner) : d(owner) {}
        expected<void, std::string> park(std::chrono::milliseconds timeout) override { return d.park(timeout); }
        // The device maps no front-end memory itself: nothing to map ahead of the outage.
        expected<runtime::port_image, std::string> preview_memory(std::chrono::milliseconds) override { return runtime::port_image{}; }
        expected<runtime::port_image, std::string> export_port() override { return d.save_image(); }
        void unpark() override { d.unpark(); }
        void retire() override { d.retire(); }
        expected<void, std::string> import_port(std::span<const std::byte> bytes, std::span<unique_fd> fds) override {
            return d.load_image(bytes, fds);
        }
        void premap(std::span<const std::byte>, std::span<unique_fd>) override {}
    };
    device_port port{*this};

    vfio_user::server_options pci_options() const {
        vfio_user::server_options so;
        so.io_timeout = opt.message_timeout;
        // A driver's DMA fds must be sealed against shrinking: a truncated file would SIGBUS us.
        so.require_sealed = true;
        // Each map keeps its fd (for a live update of the device): a driver that mapped the
        // default 1 024 would hold that many of the device's fds. Drivers map a handful (vvu's
        // its arena, QEMU its RAM blocks).
        so.max_dma_maps = max_dma_maps;
        if (opt.log) so.log = [log = opt.log](std::string_view line) { log(fmt::format("vfio-user: {}", line)); };
        return so;
    }

    expected<void, std::string> park(std::chrono::milliseconds timeout) {
        std::unique_lock lock(park_mutex);
        park_requested = true;
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(park_event.get(), &one, sizeof one);
        if (park_changed.wait_for(lock, timeout, [&] { return parked; })) return {};
        park_requested = false;
        return unexpected(fmt::format("the device loop did not stop between two events within {} ms", timeout.count()));
    }
    void unpark() {
        std::lock_guard lock(park_mutex);
        park_requested = false;
        park_changed.notify_all();
    }
    // Old process: the loop, parked, lets go and returns. New process (an import that failed,
    // nothing running): let go at once.
    void retire() {
        std::unique_lock lock(park_mutex);
        retired = true;
        if (parked) {
            park_changed.notify_all();
            return;
        }
        lock.unlock();
        let_go();
    }

    // The park event, on the loop's thread: wait here, between two events, until the hand-over
    // is over.
    void on_park() {
        std::uint64_t count = 0;
        [[maybe_unused]] auto n = ::read(park_event.get(), &count, sizeof count);
        std::unique_lock lock(park_mutex);
        if (!park_requested) return; // a request that timed out
        parked = true;
        park_changed.notify_all();
        park_changed.wait(lock, [&] { return !park_requested || retired; });
        parked = false;
        if (!retired) return;
        lock.unlock();
        let_go();
        running = false;
    }

    // Everything now lives on in another process: close this process's copies without a
    // message, an unlink, an interrupt or a callback.
    void let_go() {
        if (frontend_listener) (void)frontend_listener->release();
        rxq.reset();
        txq.reset();
        if (pci) pci->abandon();
        pci_client = -1;
        (void)frontend.release();
        (void)backend_channel.release();
        for (auto* list : {&kick_fds, &call_fds, &err_fds})
            for (auto& fd : *list) fd.reset();
        window_fds.clear();
        log_fd.reset();
        inflight_fd.reset();
        to_driver.clear();
        awaited.clear();
        connected = kept = backend_up = false;
    }

    static void put_frame(byte_writer& w, const std::optional<frame_bytes>& f) {
        w.put_bool(f.has_value());
        if (f) w.put_bytes(*f);
    }
    static std::optional<frame_bytes> get_frame(byte_reader& r) {
        if (!r.get_bool()) return std::nullopt;
        return copy_bytes(r.get_bytes(wire::max_message_size));
    }
    static void put_region(byte_writer& w, const wire::memory_region& m) {
        for (std::uint64_t v : {m.guest_phys_addr, m.memory_size, m.userspace_addr, m.mmap_offset}) w.put<std::uint64_t>(v);
    }
    static wire::memory_region get_region(byte_reader& r) {
        wire::memory_region m;
        for (std::uint64_t* v : {&m.guest_phys_addr, &m.memory_size, &m.userspace_addr, &m.mmap_offset}) *v = r.get<std::uint64_t>();
        return m;
    }
    auto counter_fields() {
        auto& c = counts;
        return std::array{&c.frontends, &c.disconnects, &c.drivers, &c.to_driver, &c.to_frontend, &c.backend_requests,
                          &c.kicks, &c.doorbells, &c.config_interrupts, &c.driver_restarts, &c.replayed};
    }

    // The image (docs/live-update.md, "vvu-device's image"): while parked, fds duplicated.
    expected<runtime::port_image, std::string> save_image() {
        runtime::port_image img;
        byte_writer w;
        fd_writer fds(img.fds);
        w.put<std::uint32_t>(image_magic);
        w.put<std::uint32_t>(image_version);
        w.put<std::uint32_t>(opt.max_queues);
        w.put_string(frontend_listener ? frontend_listener->path() : std::string());
        fds.put(w, frontend_listener ? frontend_listener->native_handle() : -1);
        pci->save(w, fds);
        function->save(w, fds);
        for (const auto* q : {&rxq, &txq}) {
            w.put_bool(q->has_value());
            w.put<std::uint16_t>(*q ? (*q)->state().next_avail : 0);
        }
        // The front-end's side.
        fds.put(w, frontend.native_handle());
        fds.put(w, backend_channel.native_handle());
        for (std::uint64_t v : {frontend_sockets, frontend_bytes, to_driver_at_accept, driver_protocol_features}) w.put<std::uint64_t>(v);
        for (std::uint32_t i = 0; i < opt.max_queues; ++i)
            for (const auto* list : {&kick_fds, &call_fds, &err_fds}) fds.put(w, (*list)[i].get());
        const auto& areas = window.areas();
        w.put<std::uint32_t>(static_cast<std::uint32_t>(areas.size()));
        for (std::size_t i = 0; i < areas.size(); ++i) {
            put_region(w, areas[i].region);
            w.put<std::uint64_t>(areas[i].offset);
            fds.put(w, window_fds[i].get());
        }
        for (const auto& [which, fd] : {std::pair{layout::window_layout::side::log, log_fd.get()},
                                        std::pair{layout::window_layout::side::inflight, inflight_fd.get()}}) {
            const auto& a = window.side_area(which);
            w.put_bool(a.has_value());
            if (!a) continue;
            put_region(w, a->region);
            w.put<std::uint64_t>(a->offset);
            fds.put(w, fd);
        }
        // The session record.
        for (const auto* f : {&record.owner, &record.protocol_features, &record.features, &record.backend_req_fd,
                              &record.mtu, &record.status, &record.log_base, &record.inflight})
            put_frame(w, *f);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(record.config.size()));
        for (const auto& [range, f] : record.config) {
            w.put<std::uint64_t>(range);
            w.put_bytes(f);
        }
        w.put<std::uint32_t>(static_cast<std::uint32_t>(record.vrings.size()));
        for (const auto& [index, v] : record.vrings) {
            w.put<std::uint32_t>(index);
            for (const auto* f : {&v.num, &v.addr, &v.base, &v.call, &v.err, &v.enable, &v.kick}) put_frame(w, *f);
            w.put<std::uint64_t>(v.kick_seq);
        }
        for (std::uint64_t v : {record.protocol_features_value, record.features_value, record.seq}) w.put<std::uint64_t>(v);
        w.put_bool(record.driver_inflight);
        w.put_bool(record.overflow);
        // What is on its way: messages for the driver, replies awaited.
        w.put<std::uint32_t>(static_cast<std::uint32_t>(to_driver.size()));
        for (const auto& f : to_driver) w.put_bytes(f);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(awaited.size()));
        for (const auto& a : awaited) {
            w.put<std::uint32_t>(static_cast<std::uint32_t>(a.request));
            w.put<std::uint8_t>(static_cast<std::uint8_t>(a.route));
            w.put_bytes(a.bytes);
            w.put<std::uint64_t>(a.seq);
            w.put_bool(a.barrier);
        }
        for (bool b : {kept, memory_barrier, backend_up, awaiting_backend_reack, connected}) w.put_bool(b);
        for (const std::uint64_t* c : counter_fields()) w.put<std::uint64_t>(*c);
        if (!fds.ok()) return unexpected(fmt::format("duplicating the device's fds: {}", std::strerror(errno)));
        img.bytes = w.take();
        return img;
    }

    // The new process, before run(): the device as the image says, watched as the old loop
    // watched it. Every count is bounded and every fd checked; a failure leaves nothing bound.
    expected<void, std::string> load_image(std::span<const std::byte> bytes, std::span<unique_fd> received) {
        byte_reader r(bytes);
        fd_reader fds(received);
        auto malformed = [](std::string_view what) { return unexpected(fmt::format("the device's image: {}", what)); };
        constexpr std::string_view short_image = "short, or without an fd it names";
        if (r.get<std::uint32_t>() != image_magic) return malformed("not a vvu-device image");
        if (const auto v = r.get<std::uint32_t>(); v != image_version)
            return malformed(fmt::format("version {} (this build reads version {})", v, image_version));
        if (const auto q = r.get<std::uint32_t>(); q != opt.max_queues)
            return malformed(fmt::format("max_queues {} (this device serves {})", q, opt.max_queues));
        const std::string path = r.get_string(4096);
        unique_fd listening = fds.take(r);
        if (!r.ok() || path != opt.vhost_user_path || !listening) return malformed("the vhost-user listening socket");
        auto l = transport::unix_listener::adopt(path, std::move(listening));
        if (!l) return malformed(l.error().message());
        frontend_listener.emplace(std::move(*l));
        auto server = vfio_user::server::restore(*function, pci_options(), r, fds);
        if (!server) return malformed(server.error().message());
        pci = std::move(*server);
        if (pci->listen_fd() < 0) return malformed("the vfio-user listening socket");
        if (auto f = function->restore(r, fds); !f) return malformed(f.error());
        std::array<std::optional<std::uint16_t>, 2> positions;
        for (auto& p : positions) {
            const bool present = r.get_bool();
            const auto next = r.get<std::uint16_t>();
            if (present) p = next;
        }
        if (unique_fd f = fds.take(r)) frontend = transport::framed_socket(std::move(f));
        if (unique_fd f = fds.take(r)) backend_channel = transport::framed_socket(std::move(f));
        for (std::uint64_t* v : {&frontend_sockets, &frontend_bytes, &to_driver_at_accept, &driver_protocol_features}) *v = r.get<std::uint64_t>();
        for (std::uint32_t i = 0; i < opt.max_queues; ++i)
            for (auto* list : {&kick_fds, &call_fds, &err_fds}) (*list)[i] = fds.take(r);
        const auto n_areas = r.get<std::uint32_t>();
        if (n_areas > max_mem_slots) return malformed(fmt::format("{} memory regions", n_areas));
        for (std::uint32_t i = 0; i < n_areas && r.ok(); ++i) {
            const auto region = get_region(r);
            const auto at = r.get<std::uint64_t>();
            unique_fd fd = fds.take(r);
            if (!r.ok() || !fd) return malformed(short_image);
            if (!window.place(region, at)) return malformed("a memory region does not fit the window");
            window_fds.push_back(std::move(fd));
        }
        for (auto [which, fd] : {std::pair{layout::window_layout::side::log, &log_fd},
                                 std::pair{layout::window_layout::side::inflight, &inflight_fd}}) {
            if (!r.get_bool()) continue;
            const auto region = get_region(r);
            const auto at = r.get<std::uint64_t>();
            *fd = fds.take(r);
            if (!r.ok() || !*fd) return malformed(short_image);
            if (!window.place_side(which, region, at)) return malformed("a side area does not fit the window");
        }
        for (auto* f : {&record.owner, &record.protocol_features, &record.features, &record.backend_req_fd, &record.mtu,
                        &record.status, &record.log_base, &record.inflight})
            *f = get_frame(r);
        const auto n_config = r.get<std::uint32_t>();
        if (n_config > session_record::max_config_ranges) return malformed(fmt::format("{} config ranges", n_config));
        for (std::uint32_t i = 0; i < n_config && r.ok(); ++i) {
            const auto range = r.get<std::uint64_t>();
            record.config.emplace_back(range, copy_bytes(r.get_bytes(wire::max_message_size)));
        }
        const auto n_vrings = r.get<std::uint32_t>();
        if (n_vrings > opt.max_queues) return malformed(fmt::format("{} vrings", n_vrings));
        for (std::uint32_t i = 0; i < n_vrings && r.ok(); ++i) {
            const auto index = r.get<std::uint32_t>();
            if (index >= opt.max_queues) return malformed(fmt::format("vring {}", index));
            auto& v = record.vrings[index];
            for (auto* f : {&v.num, &v.addr, &v.base, &v.call, &v.err, &v.enable, &v.kick}) *f = get_frame(r);
            v.kick_seq = r.get<std::uint64_t>();
        }
        for (std::uint64_t* v : {&record.protocol_features_value, &record.features_value, &record.seq}) *v = r.get<std::uint64_t>();
        record.driver_inflight = r.get_bool();
        record.overflow = r.get_bool();
        const auto n_frames = r.get<std::uint32_t>();
        if (n_frames > max_image_frames) return malformed(fmt::format("{} messages for the driver", n_frames));
        for (std::uint32_t i = 0; i < n_frames && r.ok(); ++i) to_driver.push_back(copy_bytes(r.get_bytes(wire::max_message_size)));
        const auto n_awaited = r.get<std::uint32_t>();
        if (n_awaited > max_awaited) return malformed(fmt::format("{} awaited replies", n_awaited));
        for (std::uint32_t i = 0; i < n_awaited && r.ok(); ++i) {
            awaited_reply a;
            a.request = static_cast<front_request>(r.get<std::uint32_t>());
            const auto route = r.get<std::uint8_t>();
            if (route > static_cast<std::uint8_t>(reply_route::barrier)) r.fail();
            a.route = static_cast<reply_route>(route);
            a.bytes = copy_bytes(r.get_bytes(wire::max_message_size));
            a.seq = r.get<std::uint64_t>();
            a.barrier = r.get_bool();
            awaited.push_back(std::move(a));
        }
        for (bool* b : {&kept, &memory_barrier, &backend_up, &awaiting_backend_reack, &connected}) *b = r.get_bool();
        for (std::uint64_t* c : counter_fields()) *c = r.get<std::uint64_t>();
        if (!r.done()) return malformed(r.ok() ? "longer than its fields" : short_image);
        if (!fds.all_taken()) return malformed("with fds it does not name");
        if (connected && (!frontend.is_open() || kept)) return malformed("connected without a front-end");

        // The function's queues go on where the old process stood.
        if (positions[0]) rxq = make_ring(layout::rxq, {*positions[0]});
        if (positions[1]) txq = make_ring(layout::txq, {*positions[1]});
        if (positions[0].has_value() != rxq.has_value() || positions[1].has_value() != txq.has_value())
            return malformed("the function's queues cannot be set up again");
        // Watched as the old loop watched them.
        watch(pci->listen_fd(), EPOLLIN, tag(source::pci_listener));
        if (pci->has_client()) {
            pci_client = pci->native_handle();
            watch(pci_client, EPOLLIN, tag(source::pci_client));
        }
        if (frontend.is_open()) {
            watch(frontend.native_handle(), EPOLLRDHUP, tag(source::frontend));
            update_frontend_interest();
        } else {
            watch(frontend_listener->native_handle(), EPOLLIN, tag(source::frontend_listener));
        }
        if (backend_channel.is_open()) watch(backend_channel.native_handle(), EPOLLIN, tag(source::backend_channel));
        if (!kept)
            for (std::uint32_t i = 0; i < kick_fds.size(); ++i)
                if (kick_fds[i] && !watch(kick_fds[i].get(), EPOLLIN, tag(source::kick, i)))
                    return malformed(fmt::format("the kick fd of vring {} cannot be polled", i));
        log("took the device over: {}", connected ? "a front-end session on a driver" : kept ? "a session kept for the next driver"
                                                                             : "no session");
        return {};
    }

    // ------------------------------------------------------------------------- the loop
    // A second driver is turned away by the server (EBUSY); the listener stays watched.
    void accept_driver() {
        if (auto r = pci->accept_one(); !r) {
            log("vfio-user accept: {}", r.error().message());
            return;
        }
        if (!pci->has_client() || pci->native_handle() == pci_client) return;
        pci_client = pci->native_handle();
        ++counts.drivers;
        watch(pci_client, EPOLLIN, tag(source::pci_client));
        log("driver attached");
    }

    void on_driver_event() {
        if (auto r = pci->serve_one(); !r) {
            log("driver dropped: {}", r.error().message());
            unwatch(pci_client);
            pci_client = -1;
            pci->drop_client(); // → client_detached()
        }
    }

    // Tells opt.progress what changed in the last batch of events.
    void publish_progress() {
        if (!opt.progress) return;
        device_progress p;
        p.frontend_sockets = frontend_sockets;
        p.sessions_ended = counts.disconnects;
        p.frontend_bytes = frontend_bytes;
        p.to_driver = counts.to_driver - to_driver_at_accept;
        p.driver_owed = !to_driver.empty() || !awaited.empty() || memory_barrier;
        p.ready_for_frontend = !frontend.is_open() && backend_up && !awaiting_backend_reack;
        if (published == p) return;
        published = p;
        opt.progress(p);
    }

    expected<void, std::string> run() {
        if (!pci) return unexpected(std::string("nothing to serve: a device made for a take-over runs once it is imported"));
        std::array<epoll_event, 64> events;
        while (running) {
            publish_progress();
            const int n = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                return unexpected(fmt::format("epoll_wait: {}", std::strerror(errno)));
            }
            for (int i = 0; i < n && running; ++i) {
                const std::uint64_t t = events[i].data.u64;
                switch (source_of(t)) {
                case source::stop: running = false; break;
                case source::park: on_park(); break;
                case source::pci_listener: accept_driver(); break;
                case source::pci_client: on_driver_event(); break;
                case source::frontend_listener: accept_frontend(); break;
                // (An event of this batch may be for a socket an earlier one closed.)
                case source::frontend:
                    if (frontend.is_open()) on_frontend_event(events[i].events);
                    break;
                case source::backend_channel:
                    if (backend_channel.is_open()) on_backend_channel_event();
                    break;
                case source::kick:
                    if (index_of(t) < kick_fds.size() && kick_fds[index_of(t)]) on_kick(index_of(t));
                    break;
                }
            }
        }
        return {};
    }
};

expected<std::unique_ptr<device_model>, std::string> device_model::create(device_options options) {
    if (options.max_queues == 0 || options.max_queues > 1024)
        return unexpected(fmt::format("max_queues {} out of range [1, 1024]", options.max_queues));
    std::optional<transport::unix_listener> listener;
    if (options.listen) {
        auto l = transport::unix_listener::listen(options.vhost_user_path);
        if (!l) return unexpected(fmt::format("{}: {}", options.vhost_user_path, l.error().message()));
        listener.emplace(std::move(*l));
    }
    auto p = std::make_unique<impl>(std::move(options), std::move(listener));
    p->epoll = unique_fd(::epoll_create1(EPOLL_CLOEXEC));
    p->stop_event = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    p->park_event = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!p->epoll || !p->stop_event || !p->park_event) return unexpected(fmt::format("epoll/eventfd: {}", std::strerror(errno)));
    function_options fo;
    fo.max_queues = p->opt.max_queues;
    fo.uuid = p->opt.uuid;
    p->function = std::make_unique<function_model>(fo, *p);
    p->watch(p->stop_event.get(), EPOLLIN, tag(source::stop));
    p->watch(p->park_event.get(), EPOLLIN, tag(source::park));
    if (!p->opt.listen) return std::unique_ptr<device_model>(new device_model(std::move(p)));
    auto server = vfio_user::server::listen(p->opt.pci_path, *p->function, p->pci_options());
    if (!server) return unexpected(fmt::format("{}: {}", p->opt.pci_path, server.error().message()));
    p->pci = std::move(*server);
    p->watch(p->pci->listen_fd(), EPOLLIN, tag(source::pci_listener));
    p->watch(p->frontend_listener->native_handle(), EPOLLIN, tag(source::frontend_listener));
    return std::unique_ptr<device_model>(new device_model(std::move(p)));
}

device_model::device_model(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}
device_model::~device_model() = default;

expected<void, std::string> device_model::run() { return impl_->run(); }

void device_model::stop() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(impl_->stop_event.get(), &one, sizeof one);
}

device_counters device_model::counters() const noexcept { return impl_->counts; }
runtime::handover_port& device_model::handover() noexcept { return impl_->port; }
std::string device_model::handover_description() const {
    return fmt::format("vvu-device {} {} max_queues={}", impl_->opt.vhost_user_path, impl_->opt.pci_path, impl_->opt.max_queues);
}
connection_state device_model::state() const noexcept { return impl_->state(); }

} // namespace vvu::vvu_device
