// basic_vvu_pci<F>: the PCI-BAR transport — the virtio-vhost-user DRIVER, the second model of
// `transport` (transport.hpp) — over any pci::pci_function F (pci/function.hpp). The VVU
// function (shared/vvu-spec.md, pci/vvu_function.hpp) carries one front-end's vhost-user
// session; this class turns it back into what protocol::backend expects, so the back-end
// state machine runs on it unchanged.
//
//   messages   the device puts each front-end request in one rxq buffer (fds removed); replies
//              and back-end requests go out in one txq buffer each.
//   memory     the front-end's regions are areas of the shared-memory window of BAR 2, at the
//              offsets pci::vvu_function::window_layout computes from the memory messages —
//              the transport mirrors that layout as it hands each message on, and map_region maps the
//              area (f.map_window: on vfio-user, straight from the front-end's own fd).
//   kicks      vring i's kick is an MSI-X vector this driver assigns through the notification
//              structure (notification_select / notification_msix_vector) and wires to an
//              eventfd: the kick notifier waits on that eventfd.
//   calls      vring i's call is a write to its doorbell (BAR 2, i × doorbell_off_multiplier);
//              the device offers the front-end's call eventfd as the doorbell's ioeventfd, so
//              the write signals the front-end without passing through the device.
//   session    wait_for_frontend sets BACKEND_UP and waits for FRONTEND_UP (config interrupt);
//              a config interrupt with FRONTEND_UP clear ends the session (receive returns
//              errc::disconnected); close_session clears BACKEND_UP and recycles the rxq.
//
//   live update  save() and adopt() hand the driver — its rxq/txq state, the DMA arena, the
//              interrupt eventfds, the window layout — to another process, which drives the
//              function on as if it had brought it up; abandon() lets the old one go without
//              a reset. The session's own resources are made again from the session
//              (remakes_resources_from_session): regions from the window, calls as doorbells;
//              kicks keep their eventfds (the function signals the same file).
//   leaving    leave_session() (a back-end that stops) drops the session here without ending
//              it: BACKEND_UP stays set, and the device keeps the front-end for the next driver.
//
// The device keeps every fd a message names: an invalid fd stands in for each (wire::named_fds),
// the state machine hands it back, and the transport finds the resource itself.
//
// Threads: the control thread calls wait_for_frontend/receive/send/close_session and the
// make_* calls; kick notifiers and call notifiers are used by ring threads; back-end channel
// requests may come from any thread. stop() from anywhere.
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/pci/function.hpp>
#include <vvu/pci/virtio_driver.hpp>
#include <vvu/pci/vvu_function.hpp>
#include <vvu/transport/error.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/transport/message.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/eventfd.hpp>
#include <vvu/wire/codec.hpp>

#include <poll.h>
#include <sys/eventfd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace vvu::transport {

// A call notifier that rings a doorbell of the function.
class doorbell_notifier {
public:
    doorbell_notifier() = default;
    explicit doorbell_notifier(pci::doorbell bell) noexcept : bell_(std::move(bell)) {}
    void signal() const noexcept {
        try {
            bell_.ring();
        } catch (...) {
            // A doorbell that cannot be rung (function gone) loses this call: the session is
            // ending, and the control thread learns of it from the function.
        }
    }

private:
    pci::doorbell bell_;
};

struct vvu_pci_options {
    std::uint16_t queue_size = 128;     // rxq and txq entries (the device's max is 256)
    std::uint64_t arena_iova = std::uint64_t{1} << 32;
    bool dma_huge_pages = false;        // the rxq/txq arena in 2 MiB pages (a function behind an IOMMU)
    std::chrono::milliseconds reply_timeout{5000}; // back-end channel transact()
};

template <pci::pci_function F>
class basic_vvu_pci {
    struct shared;

public:
    using kick_notifier = eventfd_notifier;
    using call_notifier = doorbell_notifier;

    // The back-end channel over the function: requests on the txq, their replies on the rxq.
    class backend_channel {
    public:
        backend_channel() = default;
        explicit backend_channel(shared* s) noexcept : s_(s) {}
        [[nodiscard]] expected<void, error> send(const wire::frame& f, std::chrono::milliseconds = forever) {
            if (s_ == nullptr) return unexpected(error(errc::not_connected));
            return s_->post(f.bytes());
        }
        [[nodiscard]] expected<received_message, error> transact(const wire::frame& f, std::chrono::milliseconds t) {
            if (s_ == nullptr) return unexpected(error(errc::not_connected));
            if (auto sent = s_->post(f.bytes()); !sent) return unexpected(sent.error());
            return s_->next(true, t);
        }

    private:
        shared* s_ = nullptr;
    };

    // Brings the function up as a virtio-pci driver and checks that it is a VVU function.
    // `function` must outlive the transport; the second form keeps it.
    [[nodiscard]] static expected<basic_vvu_pci, error> attach(F& function, const vvu_pci_options& o = {}) {
        auto s = std::make_unique<shared>(function, o);
        if (auto r = s->bring_up(); !r) return unexpected(r.error());
        return basic_vvu_pci(std::move(s));
    }
    [[nodiscard]] static expected<basic_vvu_pci, error> attach(std::unique_ptr<F> function, const vvu_pci_options& o = {}) {
        auto s = std::make_unique<shared>(*function, o);
        s->owned = std::move(function);
        if (auto r = s->bring_up(); !r) return unexpected(r.error());
        return basic_vvu_pci(std::move(s));
    }

    [[nodiscard]] F& function() const noexcept { return *s_->f; }

    // ------------------------------------------------------------------ Transport concept
    [[nodiscard]] expected<void, error> wait_for_frontend() { return s_->wait_for_frontend(); }
    [[nodiscard]] expected<received_message, error> receive(std::chrono::milliseconds timeout = forever) {
        return s_->next(false, timeout);
    }
    [[nodiscard]] expected<void, error> send(const wire::frame& f) { return s_->post(f.bytes()); }
    void close_session() noexcept { s_->close_session(); }

    [[nodiscard]] expected<memory::region, memory::error> map_region(const wire::memory_region& d, unique_fd fd) {
        if (fd) return memory::region::map(d, std::move(fd)); // a transport-neutral caller with an fd
        return s_->map_region(d);
    }
    // SET_LOG_BASE: the dirty log is an area of the window too, after the regions.
    [[nodiscard]] expected<memory::region, memory::error> map_log(const wire::log_description& d, unique_fd fd) {
        if (fd) return memory::region::map(d.as_region(), std::move(fd));
        return s_->map_log(d);
    }
    // SET_INFLIGHT_FD: the inflight area vvu-device made is an area of the window too.
    [[nodiscard]] expected<memory::region, memory::error> map_inflight(const wire::inflight_description& d, unique_fd fd) {
        if (fd) return memory::region::map(pci::vvu_function::window_layout::inflight_region(d), std::move(fd));
        return s_->map_inflight(d);
    }
    // An fd comes only with a session taken over (import): the function signals it already.
    [[nodiscard]] expected<kick_notifier, error> make_kick_notifier(std::uint32_t vring, unique_fd fd) {
        if (fd) return eventfd_notifier(std::move(fd));
        return s_->make_kick_notifier(vring);
    }
    [[nodiscard]] expected<call_notifier, error> make_call_notifier(std::uint32_t vring, unique_fd) {
        return s_->make_call_notifier(vring);
    }
    // The vring's error doorbell, behind which the device keeps SET_VRING_ERR's fd (none on a
    // function without error doorbells: errors then reach the front-end as DEVICE_NEEDS_RESET
    // alone).
    [[nodiscard]] expected<call_notifier, error> make_error_notifier(std::uint32_t vring, unique_fd) {
        return s_->make_error_notifier(vring);
    }
    [[nodiscard]] expected<backend_channel, error> make_backend_channel(unique_fd) { return backend_channel(s_.get()); }

    // The back-end goes away (it stops) and the session does not end: the device keeps the
    // front-end's session for the next driver (BACKEND_UP stays set).
    void leave_session() noexcept { s_->leave_session(); }

    // ------------------------------------------------------------------ live update
    static constexpr bool remakes_resources_from_session = true;
    // A readable `fd` makes a blocked wait_for_frontend/receive return errc::interrupted
    // (between two messages; the caller drains it).
    void set_interrupt(int fd) noexcept { s_->interrupt = fd; }
    // The driver and this transport's state, for adopt() in another process; fds appended.
    // Fails while a request is reaped and not yet handed on (park between messages).
    [[nodiscard]] expected<void, error> save(byte_writer& w, std::vector<unique_fd>& fds) const { return s_->save(w, fds); }
    // A transport over a function another process drives (its save()): nothing is sent to
    // the function that would change it.
    [[nodiscard]] static expected<basic_vvu_pci, error> adopt(std::unique_ptr<F> function, const vvu_pci_options& o,
                                                             byte_reader& r, std::span<unique_fd> fds) {
        auto s = std::make_unique<shared>(*function, o);
        s->owned = std::move(function);
        if (auto a = s->adopt(r, fds); !a) return unexpected(a.error());
        return basic_vvu_pci(std::move(s));
    }
    // A transport with no function yet: what a process taking a port over holds until the
    // hand-over brings the function (adopt). Every session call fails with not_connected.
    [[nodiscard]] static basic_vvu_pci unattached(const vvu_pci_options& o = {}) {
        return basic_vvu_pci(std::make_unique<shared>(nullptr, o));
    }
    // Lets go of the function without a trace (no reset, no status): it is driven elsewhere.
    void abandon() noexcept { s_->abandon(); }

    // Makes blocked and later calls return errc::stopped. Thread-safe, idempotent.
    void stop() noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(s_->wake.get(), &one, sizeof one);
    }

    // What the device says about itself (device config).
    [[nodiscard]] std::uint32_t max_vhost_queues() const noexcept { return s_->max_queues; }
    [[nodiscard]] bool connected() const noexcept { return s_->session_open; }

private:
    explicit basic_vvu_pci(std::unique_ptr<shared> s) noexcept : s_(std::move(s)) {}

    std::unique_ptr<shared> s_;
};


// ---------------------------------------------------------------------------------------------
// What the transport, its back-end channel and its notifiers share; by pointer so that the
// transport can move while rings and channels refer to it.
template <pci::pci_function F>
struct basic_vvu_pci<F>::shared {
    static constexpr std::uint32_t buffer_size = wire::max_message_size;
    static constexpr std::uint16_t first_kick_vector = 1 + pci::vvu_function::num_queues; // after config, rxq, txq

    shared(F& fn, const vvu_pci_options& o) : shared(&fn, o) {}
    shared(F* fn, const vvu_pci_options& o) : f(fn), opts(o), wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
    // The driver resets the function and unmaps its arena through it: it goes first.
    ~shared() { driver.reset(); }

    F* f;
    vvu_pci_options opts;
    unique_fd wake;
    int interrupt = -1; // set_interrupt
    std::optional<pci::virtio_driver<F>> driver;
    std::unique_ptr<F> owned; // when the transport keeps its function


    // BAR 2 as the capabilities describe it.
    std::uint8_t vvu_bar = pci::vvu_function::vvu_bar::bar;
    std::uint64_t doorbells = 0;
    std::uint32_t doorbell_multiplier = 0;
    std::uint64_t notification = 0;
    std::uint64_t shared_memory = 0;
    std::uint64_t shared_memory_size = 0;
    std::uint32_t max_queues = 0;
    bool error_doorbells = false; // the doorbell structure holds them (bar2_layout)
    std::uint32_t msix_vectors = 0;

    std::vector<std::uint64_t> rx_iova; // one buffer per rxq entry, token = index
    std::vector<std::uint64_t> tx_iova; // one buffer per txq entry
    std::vector<std::uint16_t> tx_free;

    std::mutex rx_mutex; // reaping the rxq and the queues below
    std::mutex tx_mutex; // posting on the txq
    std::deque<received_message> requests; // front-end requests, in order
    std::deque<received_message> replies;  // replies to back-end requests
    using window_side = pci::vvu_function::window_layout::side;
    pci::vvu_function::window_layout window{0};
    bool session_open = false;

    static error failure(const pci::error& e) {
        return error(e.code ? e.code : std::make_error_code(std::errc::io_error), "VVU function: " + e.message());
    }
    static error protocol(const char* what) {
        return error(std::make_error_code(std::errc::protocol_error), std::string("VVU function: ") + what);
    }

    pci::virtqueue& rxq() { return driver->queue(pci::vvu_function::rxq); }
    pci::virtqueue& txq() { return driver->queue(pci::vvu_function::txq); }

    expected<void, error> bring_up() {
        if (!wake) return unexpected(error(std::error_code(errno, std::system_category()), "eventfd"));
        std::array<std::byte, 4> ids{};
        if (auto r = f->config_read(pci::config::vendor_id, ids); !r) return unexpected(failure(r.error()));
        if (le::load<std::uint16_t>(ids.data()) != pci::virtio_vendor_id ||
            le::load<std::uint16_t>(ids.data() + 2) != pci::vvu_function::device_id)
            return unexpected(protocol("not a virtio-vhost-user function (PCI ids)"));
        auto d = pci::virtio_driver<F>::attach(*f, driver_options());
        if (!d) return unexpected(failure(d.error()));
        driver.emplace(std::move(*d));
        if (auto r = read_layout(); !r) return r;

        for (std::uint16_t i = 0; i < opts.queue_size; ++i) {
            auto rx = driver->arena().allocate(buffer_size, 64);
            auto tx = driver->arena().allocate(buffer_size, 64);
            if (!rx || !tx) return unexpected(failure(rx ? tx.error() : rx.error()));
            rx_iova.push_back(*rx);
            tx_iova.push_back(*tx);
            tx_free.push_back(i);
        }
        for (std::uint16_t i = 0; i < rx_iova.size(); ++i)
            if (!post_rx(i)) return unexpected(protocol("rxq refused a buffer"));
        rxq().notify();
        return {};
    }

    pci::virtio_driver_options driver_options() const {
        pci::virtio_driver_options o;
        o.queues = {{.size = opts.queue_size}, {.size = opts.queue_size}};
        o.arena_iova = opts.arena_iova;
        o.arena_huge_pages = opts.dma_huge_pages;
        o.arena_size = 2ull * opts.queue_size * (buffer_size + 64) + (64u << 10);
        return o;
    }

    // BAR 2's structures, the queue count and the vectors, from the driver's capabilities.
    expected<void, error> read_layout() {
        const auto* bells = driver->capability(pci::cap_type::doorbell);
        const auto* notif = driver->capability(pci::cap_type::notification);
        const auto* shm = driver->capability(pci::cap_type::shared_memory);
        if (bells == nullptr || notif == nullptr || shm == nullptr)
            return unexpected(protocol("the function lacks a VVU capability (doorbell, notification, shared memory)"));
        if (bells->bar != notif->bar || bells->bar != shm->bar || bells->multiplier == 0)
            return unexpected(protocol("the VVU capabilities do not share one BAR"));
        vvu_bar = bells->bar;
        doorbells = bells->offset;
        doorbell_multiplier = bells->multiplier;
        notification = notif->offset;
        shared_memory = shm->offset;
        shared_memory_size = shm->length;
        window = pci::vvu_function::window_layout(shared_memory_size);

        std::array<std::byte, 4> word{};
        if (auto r = driver->device_config_read(pci::vvu_function::device_config::max_vhost_queues, word); !r)
            return unexpected(failure(r.error()));
        max_queues = le::load<std::uint32_t>(word.data());
        if (max_queues == 0 || std::uint64_t{max_queues} * doorbell_multiplier > bells->length)
            return unexpected(protocol("max_vhost_queues does not fit the doorbell structure"));
        error_doorbells = pci::vvu_function::bar2_layout::doorbell_count(max_queues) * doorbell_multiplier <= bells->length;
        auto vectors = f->irq_count(pci::irq_kind::msix);
        if (!vectors) return unexpected(failure(vectors.error()));
        msix_vectors = *vectors;
        return {};
    }

    // ---- live update
    expected<void, error> save(byte_writer& w, std::vector<unique_fd>& fds) {
        std::scoped_lock lock(rx_mutex, tx_mutex);
        if (!requests.empty() || !replies.empty())
            return unexpected(error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                    "VVU function: a message is reaped and not handed on yet"));
        w.put<std::uint16_t>(opts.queue_size);
        w.put_bool(session_open);
        for (const auto* list : {&rx_iova, &tx_iova})
            for (std::uint64_t iova : *list) w.put<std::uint64_t>(iova);
        w.put<std::uint16_t>(static_cast<std::uint16_t>(tx_free.size()));
        for (std::uint16_t i : tx_free) w.put<std::uint16_t>(i);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(window.areas().size()));
        for (const auto& a : window.areas()) {
            for (std::uint64_t v : {a.region.guest_phys_addr, a.region.memory_size, a.region.userspace_addr,
                                    a.region.mmap_offset, a.offset})
                w.put<std::uint64_t>(v);
        }
        // The side areas: the dirty log's (SET_LOG_BASE), then the inflight area (SET_INFLIGHT_FD).
        for (const auto which : {window_side::log, window_side::inflight}) {
            const auto& area = window.side_area(which);
            w.put_bool(area.has_value());
            if (area)
                for (std::uint64_t v : {area->region.memory_size, area->region.mmap_offset, area->offset})
                    w.put<std::uint64_t>(v);
        }
        if (!driver->save(w, fds)) return unexpected(error(std::error_code(errno, std::system_category()), "dup"));
        return {};
    }

    expected<void, error> adopt(byte_reader& r, std::span<unique_fd> fds) {
        if (!wake) return unexpected(error(std::error_code(errno, std::system_category()), "eventfd"));
        const auto malformed = [] { return unexpected(protocol("a malformed driver state to adopt")); };
        if (r.get<std::uint16_t>() != opts.queue_size) return unexpected(protocol("the driver to adopt has other queue sizes"));
        session_open = r.get_bool();
        rx_iova.resize(opts.queue_size);
        tx_iova.resize(opts.queue_size);
        for (auto* list : {&rx_iova, &tx_iova})
            for (std::uint64_t& iova : *list) iova = r.get<std::uint64_t>();
        const auto nfree = r.get<std::uint16_t>();
        if (!r.ok() || nfree > opts.queue_size) return malformed();
        for (std::uint16_t k = 0; k < nfree; ++k) {
            const auto i = r.get<std::uint16_t>();
            if (i >= opts.queue_size) return malformed();
            tx_free.push_back(i);
        }
        const auto nareas = r.get<std::uint32_t>();
        if (!r.ok() || nareas > memory::guest_memory::max_slots) return malformed();
        std::vector<std::pair<wire::memory_region, std::uint64_t>> areas(nareas);
        for (auto& [region, at] : areas) {
            region.guest_phys_addr = r.get<std::uint64_t>();
            region.memory_size = r.get<std::uint64_t>();
            region.userspace_addr = r.get<std::uint64_t>();
            region.mmap_offset = r.get<std::uint64_t>();
            at = r.get<std::uint64_t>();
        }
        std::array<std::optional<std::pair<wire::memory_region, std::uint64_t>>,
                   pci::vvu_function::window_layout::side_count> sides; // log, inflight
        for (auto& side : sides) {
            if (!r.get_bool()) continue;
            wire::memory_region region{};
            region.memory_size = r.get<std::uint64_t>();
            region.mmap_offset = r.get<std::uint64_t>();
            side.emplace(region, r.get<std::uint64_t>());
        }
        if (!r.ok()) return malformed();
        auto d = pci::virtio_driver<F>::adopt(*f, driver_options(), r, fds);
        if (!d) return unexpected(failure(d.error()));
        driver.emplace(std::move(*d));
        if (auto l = read_layout(); !l) return l;
        for (const auto& [region, at] : areas)
            if (!window.place(region, at)) return unexpected(protocol("the adopted window layout does not fit the window"));
        for (const auto which : {window_side::log, window_side::inflight}) {
            const auto& side = sides[static_cast<std::size_t>(which)];
            if (side && !window.place_side(which, side->first, side->second))
                return unexpected(protocol("the adopted window layout does not fit the window"));
        }
        for (std::uint16_t i = 0; i < opts.queue_size; ++i)
            if (driver->arena().translate(rx_iova[i], buffer_size) == nullptr ||
                driver->arena().translate(tx_iova[i], buffer_size) == nullptr)
                return unexpected(protocol("an adopted message buffer lies outside the arena"));
        return {};
    }

    void abandon() noexcept {
        std::scoped_lock lock(rx_mutex, tx_mutex);
        session_open = false;
        if (driver) driver->abandon();
    }

    void leave_session() noexcept {
        std::scoped_lock lock(rx_mutex);
        session_open = false;
        requests.clear();
        replies.clear();
        window.clear();
    }

    bool post_rx(std::uint16_t i) {
        const ring::buffer b{rx_iova[i], buffer_size};
        return rxq().add({}, std::span(&b, 1), i);
    }

    expected<std::uint32_t, error> read_status() {
        std::array<std::byte, 4> word{};
        if (auto r = driver->device_config_read(pci::vvu_function::device_config::status, word); !r)
            return unexpected(failure(r.error()));
        return le::load<std::uint32_t>(word.data());
    }
    expected<void, error> write_status(std::uint32_t v) {
        std::array<std::byte, 4> word{};
        le::store<std::uint32_t>(word.data(), v);
        if (auto r = driver->device_config_write(pci::vvu_function::device_config::status, word); !r)
            return unexpected(failure(r.error()));
        return {};
    }

    // Waits for any of the fds, or `slice`: stopped, interrupted (set_interrupt) or on.
    enum class woken { on, stopped, interrupted };
    woken wait_any(std::initializer_list<int> fds, std::chrono::milliseconds slice, bool interruptible = true) {
        std::array<pollfd, 5> p{};
        std::size_t n = 0;
        p[n++] = {wake.get(), POLLIN, 0};
        p[n++] = {interruptible ? interrupt : -1, POLLIN, 0}; // (-1: ignored by poll)
        for (int fd : fds)
            if (fd >= 0 && n < p.size()) p[n++] = {fd, POLLIN, 0};
        ::poll(p.data(), n, static_cast<int>(slice.count()));
        if (p[0].revents & POLLIN) return woken::stopped;
        if (p[1].revents & POLLIN) return woken::interrupted;
        return woken::on;
    }
    static error woken_error(woken w) { return error(w == woken::stopped ? errc::stopped : errc::interrupted); }

    expected<void, error> wait_for_frontend() {
        if (!driver) return unexpected(error(errc::not_connected));
        // A config interrupt still pending belongs to a session that ended (one that ended here
        // before its front-end's leaving was read): no front-end comes up while BACKEND_UP is
        // clear. Left pending, it would read below as a session that came and went, and the
        // re-acknowledgement would drop a front-end connecting at that moment.
        (void)driver->config_interrupt().drain();
        if (auto r = write_status(pci::vvu_function::device_config::backend_up); !r) return r;
        for (;;) {
            const bool announced = driver->config_interrupt().drain();
            auto st = read_status();
            if (!st) return unexpected(st.error());
            if ((*st & pci::vvu_function::device_config::frontend_up) != 0) {
                session_open = true;
                return {};
            }
            if (announced) {
                // A session came and went before this driver saw FRONTEND_UP (a front-end that
                // broke the protocol at once, or left). The device now waits for BACKEND_UP to
                // drop and rise again; what that session left in the rxq is dropped first.
                close_session(); // BACKEND_UP cleared, the rxq recycled
                if (auto r = write_status(pci::vvu_function::device_config::backend_up); !r) return r;
                continue;
            }
            // The config interrupt announces FRONTEND_UP; the slice bounds a lost one.
            if (auto w = wait_any({driver->config_eventfd()}, std::chrono::milliseconds(500)); w != woken::on)
                return unexpected(woken_error(w));
        }
    }

    // A config interrupt with FRONTEND_UP clear: the front-end is gone.
    expected<bool, error> frontend_gone() {
        if (!driver->config_interrupt().drain()) return false;
        auto st = read_status();
        if (!st) return unexpected(st.error());
        return (*st & pci::vvu_function::device_config::frontend_up) == 0;
    }

    // Takes every used rxq buffer: requests and replies to their queues, buffers re-posted.
    // Caller holds rx_mutex.
    void reap_rx() {
        bool reposted = false;
        ring::used_buffer u;
        while (rxq().reap(u)) {
            const auto i = static_cast<std::uint16_t>(u.token);
            if (i < rx_iova.size()) {
                route(driver->arena().translate(rx_iova[i], buffer_size), std::min(u.len, buffer_size));
                reposted |= post_rx(i);
            }
        }
        if (reposted) rxq().notify();
    }

    void route(const std::byte* data, std::uint32_t len) {
        if (data == nullptr || len < wire::header_size) return; // the device broke the rules: nothing to take
        received_message m;
        m.header = wire::load_header(std::span(data, len));
        if (wire::header_size + std::size_t{m.header.size} != len) return;
        std::memcpy(m.storage.data(), data, len);
        if (m.header.is_reply()) {
            replies.push_back(std::move(m));
            return;
        }
        if (auto named = wire::named_fds<wire::front_request>(m.bytes()))
            for (std::size_t i = 0; i < *named; ++i) m.fds.push_back(unique_fd{});
        requests.push_back(std::move(m));
    }

    // The device laid the regions out in its window as the messages say; so does the driver,
    // as each request is handed to the state machine — the order it maps and unmaps in. (At
    // reap time a REM_MEM_REG reaped together with the SET_MEM_TABLE before it would take a
    // region out of the layout before the table is mapped.)
    void mirror_window(const received_message& m) {
        auto decoded = wire::decode<wire::front_request>(m.bytes(), m.fds.span());
        if (!decoded) return; // the state machine will refuse it
        if (auto* t = std::get_if<wire::message<wire::front_request::set_mem_table>>(&*decoded)) {
            (void)window.set_table(std::span(t->payload.regions).first(t->payload.nregions));
        } else if (auto* a = std::get_if<wire::message<wire::front_request::add_mem_reg>>(&*decoded)) {
            (void)window.add(a->payload.region);
        } else if (auto* r = std::get_if<wire::message<wire::front_request::rem_mem_reg>>(&*decoded)) {
            (void)window.remove(r->payload.region);
        } else if (auto* l = std::get_if<wire::message<wire::front_request::set_log_base>>(&*decoded)) {
            (void)window.set_log(l->payload.as_region());
        } else if (auto* i = std::get_if<wire::message<wire::front_request::set_inflight_fd>>(&*decoded)) {
            (void)window.set_side(window_side::inflight, pci::vvu_function::window_layout::inflight_region(i->payload));
        }
    }

    // The next request (or, for the back-end channel, reply) of this session.
    expected<received_message, error> next(bool reply, std::chrono::milliseconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            {
                std::scoped_lock lock(rx_mutex);
                if (!session_open || !driver) return unexpected(error(errc::not_connected));
                auto gone = frontend_gone();
                if (!gone) return unexpected(gone.error());
                if (*gone) {
                    session_open = false;
                    return unexpected(error(errc::disconnected));
                }
                reap_rx();
                auto& q = reply ? replies : requests;
                if (!q.empty()) {
                    received_message m = std::move(q.front());
                    q.pop_front();
                    if (!reply) mirror_window(m);
                    return m;
                }
                if (rxq().broken()) return unexpected(protocol("the device broke the rxq"));
                if (rxq().enable_interrupts()) continue; // arrived meanwhile
            }
            auto slice = std::chrono::milliseconds(100);
            if (timeout.count() >= 0) {
                const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
                if (left.count() <= 0) return unexpected(error(errc::timed_out));
                slice = std::min(slice, left);
            }
            // (A back-end channel reply is awaited on another thread: only the control thread parks.)
            if (auto w = wait_any({rxq().eventfd(), driver->config_eventfd()}, slice, !reply); w != woken::on)
                return unexpected(woken_error(w));
            (void)rxq().interrupt().drain();
        }
    }

    // One message into one txq buffer (waits, bounded, for a free one).
    expected<void, error> post(std::span<const std::byte> bytes) {
        if (bytes.size() < wire::header_size || bytes.size() > buffer_size)
            return unexpected(protocol("message size out of range for a txq buffer"));
        std::scoped_lock lock(tx_mutex);
        const auto until = std::chrono::steady_clock::now() + opts.reply_timeout;
        for (;;) {
            ring::used_buffer u;
            while (txq().reap(u))
                if (u.token < tx_iova.size()) tx_free.push_back(static_cast<std::uint16_t>(u.token));
            if (!tx_free.empty()) break;
            if (txq().broken()) return unexpected(protocol("the device broke the txq"));
            if (txq().enable_interrupts()) continue;
            if (std::chrono::steady_clock::now() >= until) return unexpected(error(errc::timed_out));
            if (wait_any({txq().eventfd()}, std::chrono::milliseconds(100), false) != woken::on)
                return unexpected(error(errc::stopped));
            (void)txq().interrupt().drain();
        }
        const std::uint16_t i = tx_free.back();
        tx_free.pop_back();
        std::memcpy(driver->arena().translate(tx_iova[i], buffer_size), bytes.data(), bytes.size());
        const ring::buffer b{tx_iova[i], static_cast<std::uint32_t>(bytes.size())};
        if (!txq().add(std::span(&b, 1), {}, i)) return unexpected(protocol("txq refused a buffer"));
        txq().notify();
        return {};
    }

    void close_session() noexcept {
        std::scoped_lock lock(rx_mutex);
        session_open = false;
        (void)write_status(0); // BACKEND_UP cleared: the device lets the front-end go
        reap_rx();             // whatever the old session left is dropped
        requests.clear();
        replies.clear();
        window.clear();
    }

    expected<memory::region, memory::error> map_region(const wire::memory_region& d) {
        auto area = window.find(d);
        if (!area) return unexpected(memory::error{memory::errc::no_such_region});
        return map_area(*area);
    }
    expected<memory::region, memory::error> map_log(const wire::log_description& d) {
        return map_side(window_side::log, d.as_region());
    }
    expected<memory::region, memory::error> map_inflight(const wire::inflight_description& d) {
        return map_side(window_side::inflight, pci::vvu_function::window_layout::inflight_region(d));
    }
    expected<memory::region, memory::error> map_side(window_side which, const wire::memory_region& described) {
        const auto& area = window.side_area(which);
        if (!area || !(area->region == described)) return unexpected(memory::error{memory::errc::no_such_region});
        return map_area(*area);
    }
    expected<memory::region, memory::error> map_area(const pci::vvu_function::window_layout::area& area) {
        auto w = f->map_window(vvu_bar, shared_memory + area.offset, area.size());
        if (!w) return unexpected(memory::error{memory::errc::mmap_failed, 0, 0, area.size(), 0, w.error().code.value()});
        return memory::region(area.region, w->host + area.region.mmap_offset, std::move(w->keepalive));
    }

    expected<eventfd_notifier, error> make_kick_notifier(std::uint32_t vring) {
        if (vring >= max_queues) return unexpected(error(errc::bad_fd));
        const std::uint32_t vector = first_kick_vector + vring;
        if (vector >= msix_vectors) return unexpected(protocol("no MSI-X vector left for this vring's kicks"));
        auto kick = eventfd_notifier::create();
        if (!kick) return unexpected(error(kick.error(), "eventfd"));
        const int fd = kick->native_handle();
        if (auto r = f->set_irq_eventfds(pci::irq_kind::msix, vector, std::span(&fd, 1)); !r)
            return unexpected(failure(r.error()));
        // Two 16-bit registers, written one at a time (natural width, as a driver must).
        std::array<std::byte, 2> sel{}, vec{};
        le::store<std::uint16_t>(sel.data(), static_cast<std::uint16_t>(vring));
        le::store<std::uint16_t>(vec.data(), static_cast<std::uint16_t>(vector));
        if (auto r = f->region_write(vvu_bar, notification + pci::vvu_function::vvu_bar::notification_select, sel); !r)
            return unexpected(failure(r.error()));
        if (auto r = f->region_write(vvu_bar, notification + pci::vvu_function::vvu_bar::notification_msix_vector, vec); !r)
            return unexpected(failure(r.error()));
        std::array<std::byte, 2> back{};
        if (auto r = f->region_read(vvu_bar, notification + pci::vvu_function::vvu_bar::notification_msix_vector, back); !r)
            return unexpected(failure(r.error()));
        if (le::load<std::uint16_t>(back.data()) != vector) return unexpected(protocol("the device refused a kick vector"));
        return std::move(*kick);
    }

    expected<doorbell_notifier, error> make_call_notifier(std::uint32_t vring) {
        if (vring >= max_queues) return unexpected(error(errc::bad_fd));
        return doorbell_at(vring);
    }
    expected<doorbell_notifier, error> make_error_notifier(std::uint32_t vring) {
        if (vring >= max_queues) return unexpected(error(errc::bad_fd));
        if (!error_doorbells) return doorbell_notifier{};
        return doorbell_at(pci::vvu_function::bar2_layout::for_queues(max_queues).error_doorbell_index(vring));
    }
    // Doorbell `index` of the array (bar2_layout: calls, the log doorbell, errors), at the
    // offset and stride the capability gave.
    expected<doorbell_notifier, error> doorbell_at(std::uint32_t index) {
        auto bell = f->doorbell(vvu_bar, doorbells + std::uint64_t{index} * doorbell_multiplier, static_cast<std::uint16_t>(index));
        if (!bell) return unexpected(failure(bell.error()));
        return doorbell_notifier(std::move(*bell));
    }
};

} // namespace vvu::transport
