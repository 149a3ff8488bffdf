// The VVU device model: the vhost-user side (front-end socket, fds, message checks), the
// connection state machine, and the bridge to the PCI function (function_model) that the
// vfio-user server exposes to the driver. See include/vvu/vvu/device_model.hpp.
#include <vvu/vvu/device_model.hpp>

#include <vvu/pci/vvu_function.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/unix_listener.hpp>
#include <vvu/vfio_user/dma.hpp>
#include <vvu/vfio_user/server.hpp>
#include <vvu/vvu/function_model.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/features.hpp>
#include <vvu/wire/format.hpp>

#include <fmt/format.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

namespace vvu::vvu_device {

std::uint64_t passthrough_protocol_features() noexcept {
    namespace pf = wire::protocol_feature;
    return pf::mq | pf::rarp | pf::reply_ack | pf::net_mtu | pf::backend_req | pf::config | pf::reset_device |
           pf::configure_mem_slots | pf::status;
}

namespace {

namespace layout = pci::vvu_function;
using wire::front_request;

// What an epoll event is about: the kind in the high bits, a vring index in the low ones.
enum class source : std::uint64_t { stop = 1, pci_listener, pci_client, frontend_listener, frontend, backend_channel, kick };
constexpr std::uint64_t tag(source s, std::uint32_t index = 0) noexcept {
    return (static_cast<std::uint64_t>(s) << 32) | index;
}
constexpr source source_of(std::uint64_t t) noexcept { return static_cast<source>(t >> 32); }
constexpr std::uint32_t index_of(std::uint64_t t) noexcept { return static_cast<std::uint32_t>(t); }

// A message for the driver: header + payload exactly as it will sit in an rxq buffer.
using frame_bytes = std::vector<std::byte>;

frame_bytes copy_bytes(std::span<const std::byte> b) { return {b.begin(), b.end()}; }

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
    transport::unix_listener frontend_listener;
    transport::framed_socket frontend;
    transport::framed_socket backend_channel;
    bool frontend_reading = false; // EPOLLIN on the front-end socket (else hang-up only)

    // What the front-end gave, kept while its session lasts.
    layout::window_layout window;
    std::vector<unique_fd> window_fds; // parallel to window.areas()
    std::vector<unique_fd> kick_fds;   // per vring
    std::vector<unique_fd> call_fds;   // per vring: the doorbells' ioeventfds

    // The function's virtqueues (device side), over the driver's DMA memory.
    std::optional<ring::split_device<vfio_user::dma_space>> rxq;
    std::optional<ring::split_device<vfio_user::dma_space>> txq;
    std::deque<frame_bytes> to_driver; // waiting for an rxq buffer

    bool backend_up = false;            // the driver set BACKEND_UP (and DRIVER_OK)
    bool awaiting_backend_reack = false; // after a disconnect: BACKEND_UP must drop first
    bool connected = false;
    bool running = true;
    device_counters counts;

    // The server goes first: dropping its client calls back into this object (client_detached),
    // which must still be whole.
    ~impl() override { pci.reset(); }

    impl(device_options o, transport::unix_listener fl)
        : opt(std::move(o)), bar2(layout::bar2_layout::for_queues(opt.max_queues)), frontend_listener(std::move(fl)),
          window(bar2.shared_memory_size), kick_fds(opt.max_queues), call_fds(opt.max_queues) {}

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

    // Reads the front-end's socket only while CONNECTED and nothing waits for an rxq buffer
    // (back-pressure: a slow driver slows the front-end instead of growing a queue); otherwise
    // only its hang-up is watched.
    void update_frontend_interest() {
        if (!frontend.is_open()) return;
        const bool want = connected && to_driver.empty();
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
        }
        window.clear();
        window_fds.clear();
        to_driver.clear();
        connected = false;
        ++counts.disconnects;
        log("front-end disconnected: {}", why);
        if (function) function->set_frontend_up(false);
        if (was_connected && !driver_caused) {
            awaiting_backend_reack = true;
            notify_config();
        }
        if (!frontend.is_open()) watch(frontend_listener.native_handle(), EPOLLIN, tag(source::frontend_listener));
    }

    // --------------------------------------------------------------------- front-end side
    void accept_frontend() {
        auto fd = frontend_listener.try_accept();
        if (!fd) {
            log("vhost-user accept: {}", fd.error().message());
            return;
        }
        if (!*fd) return;
        frontend = transport::framed_socket(std::move(*fd));
        unwatch(frontend_listener.native_handle()); // one front-end at a time; others wait
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
                    // Errors have no way to the front-end through the function: the fd is dropped.
                    if (!vring_ok(msg.payload.index()))
                        return fail(fmt::format("vring {} beyond max_vhost_queues {}", msg.payload.index(), opt.max_queues));
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
        queue_for_driver(copy_bytes(m.bytes()));
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
            mask_reply(static_cast<front_request>(h.request), bytes);
            if (auto s = frontend.send(bytes, {}, opt.message_timeout); !s) {
                disconnect(fmt::format("writing to the front-end: {}", s.error().message()), false);
                return {};
            }
            ++counts.to_frontend;
            return {};
        }
        auto request = wire::decode<wire::back_request>(bytes, {}, wire::fd_policy::stripped);
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
    static void mask_reply(front_request r, std::span<std::byte> bytes) {
        auto value = [&] { return le::load<std::uint64_t>(bytes.data() + wire::header_size); };
        if (r == front_request::get_protocol_features)
            le::store<std::uint64_t>(bytes.data() + wire::header_size, value() & passthrough_protocol_features());
        else if (r == front_request::get_max_mem_slots)
            le::store<std::uint64_t>(bytes.data() + wire::header_size, std::min(value(), max_mem_slots));
    }

    void make_rings() {
        if ((function->device_status() & pci::status::driver_ok) == 0 || !pci) return;
        auto make = [&](std::uint16_t q) -> std::optional<ring::split_device<vfio_user::dma_space>> {
            const auto s = function->queue_state(q);
            if (!s.enabled) return std::nullopt;
            ring::split_config cfg;
            cfg.size = s.size;
            cfg.desc_addr = s.desc;
            cfg.avail_addr = s.driver;
            cfg.used_addr = s.device;
            auto r = ring::split_device<vfio_user::dma_space>::create(pci->dma(), cfg);
            if (!r) {
                log("queue {}: {}", q, r.error().message());
                return std::nullopt;
            }
            return std::move(*r);
        };
        if (!rxq) rxq = make(layout::rxq);
        if (!txq) txq = make(layout::txq);
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
    void doorbell_rung(std::uint32_t vring) override {
        ++counts.doorbells;
        if (vring < call_fds.size() && call_fds[vring]) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(call_fds[vring].get(), &one, sizeof one);
        }
    }
    void status_changed(std::uint8_t, std::uint8_t now) override {
        if ((now & pci::status::driver_ok) != 0) {
            make_rings();
            deliver_to_driver();
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
        return out;
    }
    int doorbell_eventfd(std::uint32_t vring) override {
        return vring < call_fds.size() && call_fds[vring] ? call_fds[vring].get() : -1;
    }
    // The rings point into the driver's DMA memory: any unmap may take it away from them.
    void dma_unmapped(std::uint64_t, std::uint64_t) override { drop_rings("the driver unmapped DMA memory"); }
    void client_detached() override {
        rxq.reset();
        txq.reset();
        backend_up = false;
        awaiting_backend_reack = false;
        // A front-end still waiting (not CONNECTED) waits for the next driver.
        if (connected) disconnect("the driver went away", true);
        log("driver detached");
    }

    // Reads or writes [offset, offset + len) of the window through the regions' files; bytes
    // in no region read as zero and are not written.
    template <class Io>
    int window_io(std::uint64_t offset, std::size_t len, Io io) {
        const auto& areas = window.areas();
        for (std::size_t i = 0; i < areas.size(); ++i) {
            const auto& a = areas[i];
            const std::uint64_t begin = std::max(offset, a.offset);
            const std::uint64_t end = std::min(offset + len, a.offset + a.size());
            if (begin >= end) continue;
            const std::size_t done = begin - offset;
            if (io(window_fds[i].get(), begin - a.offset, done, end - begin) < 0) return errno;
        }
        return 0;
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

    expected<void, std::string> run() {
        std::array<epoll_event, 64> events;
        while (running) {
            const int n = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                return unexpected(fmt::format("epoll_wait: {}", std::strerror(errno)));
            }
            for (int i = 0; i < n && running; ++i) {
                const std::uint64_t t = events[i].data.u64;
                switch (source_of(t)) {
                case source::stop: running = false; break;
                case source::pci_listener: accept_driver(); break;
                case source::pci_client: on_driver_event(); break;
                case source::frontend_listener: accept_frontend(); break;
                case source::frontend: on_frontend_event(events[i].events); break;
                case source::backend_channel: on_backend_channel_event(); break;
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
    auto frontend = transport::unix_listener::listen(options.vhost_user_path);
    if (!frontend) return unexpected(fmt::format("{}: {}", options.vhost_user_path, frontend.error().message()));
    auto p = std::make_unique<impl>(std::move(options), std::move(*frontend));
    p->epoll = unique_fd(::epoll_create1(EPOLL_CLOEXEC));
    p->stop_event = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!p->epoll || !p->stop_event) return unexpected(fmt::format("epoll/eventfd: {}", std::strerror(errno)));
    function_options fo;
    fo.max_queues = p->opt.max_queues;
    fo.uuid = p->opt.uuid;
    p->function = std::make_unique<function_model>(fo, *p);
    vfio_user::server_options so;
    so.io_timeout = p->opt.message_timeout;
    // A driver's DMA fds must be sealed against shrinking: a truncated file would SIGBUS us.
    so.require_sealed = true;
    if (p->opt.log) so.log = [log = p->opt.log](std::string_view line) { log(fmt::format("vfio-user: {}", line)); };
    auto server = vfio_user::server::listen(p->opt.pci_path, *p->function, std::move(so));
    if (!server) return unexpected(fmt::format("{}: {}", p->opt.pci_path, server.error().message()));
    p->pci = std::move(*server);
    p->watch(p->stop_event.get(), EPOLLIN, tag(source::stop));
    p->watch(p->pci->listen_fd(), EPOLLIN, tag(source::pci_listener));
    p->watch(p->frontend_listener.native_handle(), EPOLLIN, tag(source::frontend_listener));
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
connection_state device_model::state() const noexcept { return impl_->state(); }

} // namespace vvu::vvu_device
