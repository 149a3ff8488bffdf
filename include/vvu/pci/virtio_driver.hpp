// virtio_driver<F>: a virtio-pci modern driver (virtio 1.2 §4.1) over any pci_function F —
// finds the virtio capabilities, initialises the device (§3.1.1, §4.1.5.1), sets up split
// virtqueues in a DMA arena, wires MSI-X vectors to eventfds, and then posts, notifies and
// reaps. Generic virtio-pci only: what a device does with its queues is the caller's business
// (the VVU transport, transport/vvu_pci.hpp, is one caller).
//
//   vvu::pci::virtio_driver_options o;
//   o.queues = {{.size = 256}, {.size = 256}};
//   auto drv = vvu::pci::virtio_driver<Fn>::attach(fn, o);   // expected<…, pci::error>
//   auto buf = drv->arena().allocate(4096);
//   drv->queue(0).add({}, writable, token);
//   drv->notify(0);                                // doorbell, unless the device suppressed it
//   drv->queue(0).wait(100ms);                     // MSI-X vector 1 + 0 fired
//   drv->queue(0).reap(used);
//
// The device is hostile: every value read from it (capabilities, status, queue sizes, notify
// offsets, vector read-backs, ring contents — see ring/split.hpp) is checked, and an error
// names the step ("FEATURES_OK refused by the device", "queue 1: size 0 …"). On an error during
// attach the driver sets FAILED (§3.1.1), then resets the device, withdraws the eventfds and
// unmaps its memory. Destruction does the same (reset before unmapping, so that a conforming
// device no longer touches the memory).
//
// Threading: attach, reset and the config calls on the control thread; each queue driven by
// one thread at a time (different queues may run on different threads); doorbells from any.
// The function F must outlive the driver.
#pragma once

#include <vvu/pci/capabilities.hpp>
#include <vvu/pci/dma_arena.hpp>
#include <vvu/pci/function.hpp>
#include <vvu/pci/virtio_pci.hpp>
#include <vvu/ring/chain.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/eventfd.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/wire/features.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace vvu::pci {

struct queue_options {
    std::uint16_t size = 0;             // wanted: 0 = the device's maximum; else a power of two,
                                        // lowered to the device's maximum when larger
    std::uint32_t indirect_entries = 0; // per ring slot, used when INDIRECT_DESC is negotiated
};

struct virtio_driver_options {
    std::uint64_t required_features = wire::virtio_feature::version_1; // VERSION_1 is added anyway
    std::uint64_t wanted_features = 0;   // negotiated when the device offers them
    std::vector<queue_options> queues;   // queue i of the device, in order
    std::uint64_t arena_size = std::uint64_t{1} << 20;
    std::uint64_t arena_iova = std::uint64_t{1} << 32; // page-aligned bus address of the arena
    // The arena in 2 MiB huge pages (dma_arena::create): physically contiguous, so an IOMMU
    // maps it in a few large entries rather than one per 4 KiB page.
    bool arena_huge_pages = false;
    bool use_msix = true;                // false: no vectors; poll the rings or read_isr()
    std::chrono::milliseconds reset_timeout{1000}; // for device_status to read 0 after a reset
};

// Feature bits that change what the driver must do and that it does not do: packed rings
// (§2.8), notification data (§4.1.5.2: the notify value would carry ring positions).
inline constexpr std::uint64_t virtio_driver_unsupported_features =
    wire::virtio_feature::ring_packed | wire::virtio_feature::notification_data |
    wire::virtio_feature::notif_config_data;

// The common configuration structure must reach at least the end of queue_device (the
// fields a 1.0 device has; queue_notify_data and queue_reset come with features we refuse).
inline constexpr std::uint64_t common_cfg_min_length = common::queue_device + 8;

// How many times a device-config read is retried while config_generation changes (§2.5.1).
inline constexpr int config_generation_attempts = 8;

// One virtqueue of the device as the driver runs it: the driver side of a split ring in the
// DMA arena, the doorbell that notifies it and the MSI-X eventfd the device signals for it.
class virtqueue {
public:
    using ring_type = ring::split_driver<dma_arena>;

    virtqueue(std::uint16_t index, ring_type r, const ring::split_config& layout, ring::indirect_area indirect,
              pci::doorbell bell, std::uint64_t notify_offset, eventfd_notifier interrupt, std::uint16_t vector)
        : index_(index), ring_(std::move(r)), layout_(layout), indirect_(indirect), bell_(std::move(bell)),
          notify_offset_(notify_offset), interrupt_(std::move(interrupt)), vector_(vector) {}

    // Post buffers (ring::request: readable, writable, token); element addresses are iovas
    // in the arena (arena().allocate).
    std::size_t add_burst(std::span<const ring::request> reqs) noexcept { return ring_.add_burst(reqs); }
    bool add(std::span<const ring::buffer> readable, std::span<const ring::buffer> writable, std::uint64_t token,
             bool indirect = false) noexcept {
        return ring_.add(readable, writable, token, indirect);
    }
    std::size_t reap_burst(std::span<ring::used_buffer> out) noexcept { return ring_.reap_burst(out); }
    bool reap(ring::used_buffer& u) noexcept { return ring_.reap(u); }

    // Rings the doorbell if the device wants a notification for the adds since the last call
    // (§2.7.13.4); the notify value is the queue index (§4.1.5.2). Returns whether it rang.
    bool notify() {
        if (!ring_.needs_kick()) return false;
        bell_.ring();
        return true;
    }
    // Rings unconditionally.
    void kick() const { bell_.ring(); }

    bool enable_interrupts() noexcept { return ring_.enable_interrupts(); }
    void disable_interrupts() noexcept { ring_.disable_interrupts(); }
    // Waits up to `timeout` for this queue's MSI-X vector and consumes it; false at once
    // without MSI-X.
    bool wait(std::chrono::milliseconds timeout) const noexcept {
        return interrupt_.valid() && interrupt_.wait(timeout);
    }

    [[nodiscard]] std::uint16_t index() const noexcept { return index_; }
    [[nodiscard]] std::uint32_t size() const noexcept { return ring_.size(); }
    [[nodiscard]] ring_type& ring() noexcept { return ring_; }
    [[nodiscard]] const ring_type& ring() const noexcept { return ring_; }
    // Where the areas are (iovas), as written to queue_desc / queue_driver / queue_device.
    [[nodiscard]] const ring::split_config& layout() const noexcept { return layout_; }
    [[nodiscard]] const ring::indirect_area& indirect() const noexcept { return indirect_; }
    [[nodiscard]] const pci::doorbell& doorbell() const noexcept { return bell_; }
    // Offset of the notify address in the notify capability's BAR.
    [[nodiscard]] std::uint64_t notify_offset() const noexcept { return notify_offset_; }
    [[nodiscard]] const eventfd_notifier& interrupt() const noexcept { return interrupt_; }
    [[nodiscard]] int eventfd() const noexcept { return interrupt_.native_handle(); }
    [[nodiscard]] std::uint16_t msix_vector() const noexcept { return vector_; } // msix::no_vector without MSI-X
    [[nodiscard]] bool broken() const noexcept { return ring_.broken(); }
    [[nodiscard]] std::error_code error() const noexcept { return ring_.error(); }

private:
    std::uint16_t index_;
    ring_type ring_;
    ring::split_config layout_;
    ring::indirect_area indirect_;
    pci::doorbell bell_;
    std::uint64_t notify_offset_;
    eventfd_notifier interrupt_;
    std::uint16_t vector_;
};

template <pci_function F>
class virtio_driver {
public:
    using options = virtio_driver_options;

    // Brings the device up (§3.1.1): reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues,
    // MSI-X, DRIVER_OK.
    [[nodiscard]] static expected<virtio_driver, error> attach(F& f, const options& o) {
        if (auto v = validate(o); !v) return unexpected(v.error());
        virtio_driver d(std::make_unique<state>(f, o));
        if (auto r = d.bring_up(); !r) {
            d.mark_failed();
            return unexpected(r.error());
        }
        return d;
    }

    // ---- live update: the driver handed to another process as it runs
    // save() writes what the new process needs to drive the device on — negotiated features,
    // the arena, each queue's layout, vector and ring state — and appends the fds (the arena,
    // the config and queue interrupt eventfds) to `fds`. Call it with no queue in use. False
    // when an fd could not be duplicated.
    [[nodiscard]] bool save(byte_writer& w, std::vector<unique_fd>& fds) const {
        const state& s = *s_;
        bool all_fds = true;
        auto dup_of = [&](int fd) {
            unique_fd d = dup_cloexec(fd);
            if (!d) return all_fds = false;
            fds.push_back(std::move(d));
            return true;
        };
        w.put<std::uint64_t>(s.device_features);
        w.put<std::uint64_t>(s.features);
        w.put<std::uint8_t>(s.status);
        w.put<std::uint32_t>(s.vectors_attached);
        w.put<std::uint64_t>(s.arena->size());
        w.put<std::uint64_t>(s.arena->iova());
        w.put<std::uint64_t>(s.arena->used());
        w.put_bool(dup_of(s.arena->fd()));
        w.put_bool(s.config_irq.valid() && dup_of(s.config_irq.native_handle()));
        w.put<std::uint16_t>(static_cast<std::uint16_t>(s.queues.size()));
        for (const virtqueue& q : s.queues) {
            const auto& c = q.layout();
            w.put<std::uint32_t>(c.size);
            for (std::uint64_t a : {c.desc_addr, c.avail_addr, c.used_addr, q.indirect().addr}) w.put<std::uint64_t>(a);
            w.put<std::uint32_t>(q.indirect().entries);
            w.put<std::uint32_t>(c.max_chain_len);
            w.put_bool(c.features.event_idx);
            w.put_bool(c.features.indirect);
            w.put_bool(c.features.in_order);
            w.put<std::uint64_t>(q.notify_offset());
            w.put<std::uint16_t>(q.msix_vector());
            w.put_bool(q.interrupt().valid() && dup_of(q.eventfd()));
            q.ring().save(w);
        }
        return all_fds;
    }
    // The new process: a driver for a device another process brought up and drives no more.
    // Reads the capabilities again (no side effect) and sends nothing that changes the
    // device — no reset, no status, no DMA or interrupt setup: those live on in the device.
    // Takes the fds save() listed, in order, from `fds`.
    [[nodiscard]] static expected<virtio_driver, error> adopt(F& f, const options& o, byte_reader& r,
                                                              std::span<unique_fd> fds) {
        if (auto v = validate(o); !v) return unexpected(v.error());
        virtio_driver d(std::make_unique<state>(f, o));
        state& s = *d.s_;
        std::size_t next_fd = 0;
        auto take_fd = [&](bool present) -> unique_fd {
            if (!present) return {};
            if (next_fd >= fds.size()) {
                r.fail();
                return {};
            }
            return std::move(fds[next_fd++]);
        };
        const auto malformed = [](const std::string& what) { return unexpected(protocol("adopting the driver: " + what)); };
        s.device_features = r.get<std::uint64_t>();
        s.features = r.get<std::uint64_t>();
        s.status = r.get<std::uint8_t>();
        s.vectors_attached = r.get<std::uint32_t>();
        const auto arena_size = r.get<std::uint64_t>(), arena_iova = r.get<std::uint64_t>(), arena_used = r.get<std::uint64_t>();
        unique_fd arena_fd = take_fd(r.get_bool());
        unique_fd config_fd = take_fd(r.get_bool());
        const auto nq = r.get<std::uint16_t>();
        if (!r.ok() || nq != o.queues.size()) return malformed("another queue count or a short record");
        if (s.features & ~s.device_features || (s.features & virtio_driver_unsupported_features) != 0)
            return malformed("features the device did not offer or this driver does not run");

        auto caps = read_capabilities(f);
        if (!caps) return unexpected(caps.error());
        s.caps = std::move(*caps);
        if (auto l = d.locate_structures(nq); !l) return unexpected(l.error());
        auto arena = dma_arena::adopt(f, std::move(arena_fd), arena_size, arena_iova, arena_used);
        if (!arena) return unexpected(arena.error());
        s.arena = std::make_unique<dma_arena>(std::move(*arena));
        s.device_live = true;
        if (config_fd) s.config_irq = eventfd_notifier(std::move(config_fd));

        s.queues.reserve(nq);
        for (std::uint16_t q = 0; q < nq && r.ok(); ++q) {
            ring::split_config cfg;
            ring::indirect_area ind;
            cfg.size = r.get<std::uint32_t>();
            cfg.desc_addr = r.get<std::uint64_t>();
            cfg.avail_addr = r.get<std::uint64_t>();
            cfg.used_addr = r.get<std::uint64_t>();
            ind.addr = r.get<std::uint64_t>();
            ind.entries = r.get<std::uint32_t>();
            cfg.max_chain_len = r.get<std::uint32_t>();
            cfg.features.event_idx = r.get_bool();
            cfg.features.indirect = r.get_bool();
            cfg.features.in_order = r.get_bool();
            const auto notify_at = r.get<std::uint64_t>();
            const auto vector = r.get<std::uint16_t>();
            unique_fd irq = take_fd(r.get_bool());
            if (!r.ok()) break;
            if (notify_at < s.notify.offset || !range_within(notify_at - s.notify.offset, std::uint64_t{2}, s.notify.length))
                return malformed("queue " + std::to_string(q) + ": a notify address outside the notify structure");
            auto ring = virtqueue::ring_type::restore(*s.arena, cfg, ind, r);
            if (!ring) return unexpected(error{ring.error(), queue_prefix(q) + "restoring the ring: " + ring.error().message()});
            auto bell = f.doorbell(s.notify.bar, notify_at, q);
            if (!bell) return unexpected(detail::in_step(queue_prefix(q) + "doorbell", bell.error()));
            s.queues.emplace_back(q, std::move(*ring), cfg, ind, std::move(*bell), notify_at,
                                  irq ? eventfd_notifier(std::move(irq)) : eventfd_notifier{}, vector);
        }
        if (!r.ok()) return malformed("a short or malformed record");
        return d;
    }
    // Live update, the old process: let go of the device without a trace — no reset, no
    // interrupt or DMA withdrawn (they are the new process's now).
    void abandon() noexcept {
        s_->device_live = false;
        s_->vectors_attached = 0;
        if (s_->arena) s_->arena->abandon();
    }

    virtio_driver(virtio_driver&&) noexcept = default;
    virtio_driver& operator=(virtio_driver&& o) noexcept {
        if (this != &o) {
            shutdown();
            s_ = std::move(o.s_);
        }
        return *this;
    }
    virtio_driver(const virtio_driver&) = delete;
    virtio_driver& operator=(const virtio_driver&) = delete;
    ~virtio_driver() { shutdown(); }

    // ---- queues
    [[nodiscard]] std::size_t queue_count() const noexcept { return s_->queues.size(); }
    // q < queue_count() (std::out_of_range otherwise).
    [[nodiscard]] virtqueue& queue(std::uint16_t q) { return s_->queues.at(q); }
    bool notify(std::uint16_t q) { return queue(q).notify(); }
    [[nodiscard]] int queue_eventfd(std::uint16_t q) { return queue(q).eventfd(); }
    [[nodiscard]] const eventfd_notifier& queue_interrupt(std::uint16_t q) { return queue(q).interrupt(); }

    // ---- interrupts
    [[nodiscard]] bool msix() const noexcept { return s_->opts.use_msix; }
    // Vector 0: device configuration changes (invalid without MSI-X).
    [[nodiscard]] const eventfd_notifier& config_interrupt() const noexcept { return s_->config_irq; }
    [[nodiscard]] int config_eventfd() const noexcept { return s_->config_irq.native_handle(); }
    // INTx mode: reads (and so clears, §4.1.4.5) the ISR status — isr::queue, isr::config.
    [[nodiscard]] expected<std::uint8_t, error> read_isr() {
        if (!s_->isr) return unexpected(missing("read_isr: the device has no ISR capability"));
        return read_reg<std::uint8_t>(*s_->isr, 0, "reading ISR status");
    }

    // ---- device configuration (§4.1.4.6), consistent per §2.5.1 (config_generation)
    expected<void, error> device_config_read(std::uint64_t off, std::span<std::byte> out) {
        auto where = device_config_range(off, out.size());
        if (!where) return unexpected(where.error());
        for (int attempt = 0; attempt < config_generation_attempts; ++attempt) {
            auto before = read_reg<std::uint8_t>(s_->common, common::config_generation, "reading config_generation");
            if (!before) return unexpected(before.error());
            if (auto r = s_->f->region_read(s_->device->bar, *where, out); !r)
                return unexpected(detail::in_step("reading device config", r.error()));
            auto after = read_reg<std::uint8_t>(s_->common, common::config_generation, "reading config_generation");
            if (!after) return unexpected(after.error());
            if (*before == *after) return {};
        }
        return unexpected(protocol("device config: config_generation kept changing over " +
                                   std::to_string(config_generation_attempts) + " reads"));
    }
    expected<void, error> device_config_write(std::uint64_t off, std::span<const std::byte> in) {
        auto where = device_config_range(off, in.size());
        if (!where) return unexpected(where.error());
        if (auto r = s_->f->region_write(s_->device->bar, *where, in); !r)
            return unexpected(detail::in_step("writing device config", r.error()));
        return {};
    }

    // ---- capabilities, status, features
    [[nodiscard]] const virtio_capability* capability(cap_type t) const noexcept { return s_->caps.find(t); }
    [[nodiscard]] const capability_list& capabilities() const noexcept { return s_->caps; }
    [[nodiscard]] expected<std::uint8_t, error> device_status() {
        return read_reg<std::uint8_t>(s_->common, common::device_status, "reading device_status");
    }
    [[nodiscard]] std::uint64_t device_features() const noexcept { return s_->device_features; }
    [[nodiscard]] std::uint64_t features() const noexcept { return s_->features; }

    // Resets the device (writes 0, waits for it to read 0) and withdraws the MSI-X eventfds.
    // Rings and the arena stay (their memory is still the driver's); attach again to reuse
    // the device.
    expected<void, error> reset() {
        auto r = reset_device();
        if (r) s_->device_live = false;
        auto irq = detach_interrupts();
        if (!r) return r;
        return irq;
    }

    [[nodiscard]] dma_arena& arena() noexcept { return *s_->arena; }
    [[nodiscard]] F& function() const noexcept { return *s_->f; }

private:
    struct state {
        state(F& fn, const options& o) : f(&fn), opts(o) {}
        F* f;
        options opts;
        capability_list caps;
        virtio_capability common;
        virtio_capability notify;
        std::optional<virtio_capability> isr;
        std::optional<virtio_capability> device;
        std::uint64_t device_features = 0;
        std::uint64_t features = 0;
        std::uint8_t status = 0;          // bits the driver has set since the reset
        bool device_live = false;         // the device left reset: reset before unmapping
        std::uint32_t vectors_attached = 0;
        std::unique_ptr<dma_arena> arena; // by pointer: the rings point into it across moves
        eventfd_notifier config_irq;
        std::vector<virtqueue> queues;
    };

    explicit virtio_driver(std::unique_ptr<state> s) noexcept : s_(std::move(s)) {}

    // ---- errors
    static error protocol(std::string what) { return error{std::make_error_code(std::errc::protocol_error), std::move(what)}; }
    static error invalid(std::string what) { return error{std::make_error_code(std::errc::invalid_argument), std::move(what)}; }
    static error missing(std::string what) { return error{std::make_error_code(std::errc::no_such_device), std::move(what)}; }
    static std::string hex(std::uint64_t v) { return detail::hex(v); }
    static std::string queue_prefix(std::uint16_t q) { return "queue " + std::to_string(q) + ": "; }

    static expected<void, error> validate(const options& o) {
        const std::uint64_t asked = o.required_features | o.wanted_features;
        if (asked & virtio_driver_unsupported_features)
            return unexpected(invalid("options: features " + hex(asked & virtio_driver_unsupported_features) +
                                      " are not supported by this driver (packed rings, notification data)"));
        if (o.queues.size() > 0xffff) return unexpected(invalid("options: more than 65535 queues"));
        for (std::size_t q = 0; q < o.queues.size(); ++q) {
            const std::uint32_t n = o.queues[q].size;
            if (n != 0 && (n & (n - 1)) != 0)
                return unexpected(invalid("options: queue " + std::to_string(q) + " size " + std::to_string(n) +
                                          " is not a power of two (split rings, §2.7)"));
            if (o.queues[q].indirect_entries > ring::max_queue_size)
                return unexpected(invalid("options: queue " + std::to_string(q) + " indirect_entries too large"));
        }
        // One MSI-X vector for configuration changes plus one per queue (PCI: at most 2048).
        if (o.use_msix && o.queues.size() + 1 > 2048)
            return unexpected(invalid("options: more queues than MSI-X vectors can serve"));
        return {};
    }

    // ---- register access (§4.1.3.1: each field with an access of its own width; 64-bit
    // fields as two 32-bit halves, low first)
    template <class T>
    expected<T, error> read_reg(const virtio_capability& c, std::uint64_t field, const char* what) {
        std::array<std::byte, sizeof(T)> b{};
        if (auto r = s_->f->region_read(c.bar, c.offset + field, b); !r)
            return unexpected(detail::in_step(what, r.error()));
        return le::load<T>(b.data());
    }
    template <class T>
    expected<void, error> write_reg(const virtio_capability& c, std::uint64_t field, T v, const char* what) {
        std::array<std::byte, sizeof(T)> b{};
        le::store<T>(b.data(), v);
        if (auto r = s_->f->region_write(c.bar, c.offset + field, b); !r)
            return unexpected(detail::in_step(what, r.error()));
        return {};
    }
    expected<void, error> write_reg64(std::uint64_t field, std::uint64_t v, const char* what) {
        if (auto r = write_reg<std::uint32_t>(s_->common, field, static_cast<std::uint32_t>(v), what); !r) return r;
        return write_reg<std::uint32_t>(s_->common, field + 4, static_cast<std::uint32_t>(v >> 32), what);
    }
    expected<void, error> write_common16(std::uint32_t field, std::uint16_t v, const char* what) {
        return write_reg<std::uint16_t>(s_->common, field, v, what);
    }
    expected<std::uint16_t, error> read_common16(std::uint32_t field, const char* what) {
        return read_reg<std::uint16_t>(s_->common, field, what);
    }

    expected<void, error> set_status(std::uint8_t bits, const char* what) {
        const auto next = static_cast<std::uint8_t>(s_->status | bits);
        if (auto r = write_reg<std::uint8_t>(s_->common, common::device_status, next, what); !r) return r;
        s_->status = next;
        return {};
    }

    // §4.1.4.3.2: after writing 0 the driver waits for device_status to read 0. Bounded: a
    // device that never finishes is an error, not a hang.
    expected<void, error> reset_device() {
        if (auto r = write_reg<std::uint8_t>(s_->common, common::device_status, 0, "reset: writing device_status"); !r)
            return r;
        s_->status = 0;
        const auto deadline = std::chrono::steady_clock::now() + s_->opts.reset_timeout;
        for (unsigned polls = 0;; ++polls) {
            auto st = read_reg<std::uint8_t>(s_->common, common::device_status, "reset: reading device_status");
            if (!st) return unexpected(st.error());
            if (*st == 0) return {};
            if (std::chrono::steady_clock::now() >= deadline)
                return unexpected(error{std::make_error_code(std::errc::timed_out),
                                        "reset: device_status still reads " + hex(*st) + " after " +
                                            std::to_string(s_->opts.reset_timeout.count()) + " ms"});
            // A software device answers at once; a real one may take a while: spin briefly, then sleep.
            if (polls >= 16) std::this_thread::sleep_for(std::chrono::microseconds(polls < 64 ? 10 : 500));
        }
    }

    expected<void, error> detach_interrupts() {
        if (s_->vectors_attached == 0) return {};
        const std::vector<int> none(s_->vectors_attached, -1);
        s_->vectors_attached = 0;
        if (auto r = s_->f->set_irq_eventfds(irq_kind::msix, 0, none); !r)
            return unexpected(detail::in_step("detaching MSI-X eventfds", r.error()));
        return {};
    }

    // §3.1.1: "If any of these steps go irrecoverably wrong, the driver SHOULD set the FAILED
    // status bit". Best effort: the device may be what failed.
    void mark_failed() noexcept {
        if (!s_->device_live) return;
        try {
            (void)set_status(status::failed, "setting FAILED");
        } catch (...) {
        }
    }

    // Reset before the memory goes: a conforming device stops using the rings; the unmap is
    // what protects us from one that does not.
    void shutdown() noexcept {
        if (!s_) return;
        try {
            if (s_->device_live) {
                (void)reset_device();
                s_->device_live = false;
            }
            (void)detach_interrupts();
            if (s_->arena) (void)s_->arena->detach();
        } catch (...) { // a binding threw while tearing down: nothing more can be done
        }
    }

    expected<std::uint64_t, error> device_config_range(std::uint64_t off, std::uint64_t len) const {
        if (!s_->device) return unexpected(missing("device config: the device has no device configuration capability"));
        const std::uint64_t size = s_->device->length;
        if (!range_within(off, len, size))
            return unexpected(invalid("device config: [" + std::to_string(off) + ", +" + std::to_string(len) +
                                      ") lies outside the " + std::to_string(size) + "-byte structure"));
        return s_->device->offset + off;
    }

    // ---- bring-up, §3.1.1 with the PCI specifics of §4.1.5.1
    expected<void, error> bring_up() {
        state& s = *s_;
        F& f = *s.f;
        const auto nq = static_cast<std::uint16_t>(s.opts.queues.size());

        auto caps = read_capabilities(f);
        if (!caps) return unexpected(caps.error());
        s.caps = std::move(*caps);
        if (auto r = locate_structures(nq); !r) return r;

        // Memory decoding for the BARs, bus mastering for DMA into the arena.
        std::array<std::byte, 2> cmd{};
        if (auto r = f.config_read(config::command, cmd); !r)
            return unexpected(detail::in_step("reading the PCI command register", r.error()));
        le::store<std::uint16_t>(cmd.data(), static_cast<std::uint16_t>(le::load<std::uint16_t>(cmd.data()) |
                                                                         config::command_memory |
                                                                         config::command_bus_master));
        if (auto r = f.config_write(config::command, cmd); !r)
            return unexpected(detail::in_step("enabling memory decoding and bus mastering", r.error()));

        // 1. Reset. 2. ACKNOWLEDGE. 3. DRIVER.
        if (auto r = reset_device(); !r) return r;
        s.device_live = true;
        if (auto r = set_status(status::acknowledge, "writing ACKNOWLEDGE"); !r) return r;
        if (auto r = set_status(status::driver, "writing DRIVER"); !r) return r;

        // 4. Features: read both halves, write the subset we understand.
        if (auto r = negotiate_features(); !r) return r;
        // 5–6. FEATURES_OK, then re-read: a device that clears it refused our subset.
        if (auto r = set_status(status::features_ok, "writing FEATURES_OK"); !r) return r;
        auto st = device_status();
        if (!st) return unexpected(st.error());
        if ((*st & status::features_ok) == 0)
            return unexpected(protocol("FEATURES_OK refused by the device (device_status reads " + hex(*st) + ")"));

        // 7. Device-specific setup: the arena, the vectors, the queues.
        auto nqueues = read_common16(common::num_queues, "reading num_queues");
        if (!nqueues) return unexpected(nqueues.error());
        if (*nqueues < nq)
            return unexpected(protocol("the device has " + std::to_string(*nqueues) + " queues, " +
                                       std::to_string(nq) + " wanted"));
        auto arena = dma_arena::create(s.opts.arena_size, "vvu-dma", s.opts.arena_huge_pages);
        if (!arena) return unexpected(arena.error());
        s.arena = std::make_unique<dma_arena>(std::move(*arena));
        if (auto r = s.arena->attach(f, s.opts.arena_iova); !r) return r;

        std::vector<eventfd_notifier> queue_irqs(nq);
        if (s.opts.use_msix) {
            if (auto r = setup_msix(queue_irqs); !r) return r;
        }
        s.queues.reserve(nq);
        for (std::uint16_t q = 0; q < nq; ++q)
            if (auto r = setup_queue(q, std::move(queue_irqs[q])); !r) return r;

        // 8. DRIVER_OK.
        return set_status(status::driver_ok, "writing DRIVER_OK");
    }

    expected<void, error> locate_structures(std::uint16_t nq) {
        state& s = *s_;
        const virtio_capability* common_cap = s.caps.find(cap_type::common);
        if (common_cap == nullptr) return unexpected(missing("no common configuration capability (cfg_type 1)"));
        if (common_cap->length < common_cfg_min_length)
            return unexpected(protocol("common configuration capability is " + std::to_string(common_cap->length) +
                                       " bytes long (needs " + std::to_string(common_cfg_min_length) + ")"));
        s.common = *common_cap;
        if (const auto* c = s.caps.find(cap_type::notify)) {
            // §4.1.4.4: a multiplier of 0 puts every queue on one address; the structure must
            // hold at least that 16-bit register.
            if (c->length < 2) return unexpected(protocol("notify capability is shorter than 2 bytes"));
            s.notify = *c;
        } else if (nq != 0) {
            return unexpected(missing("no notify capability (cfg_type 2)"));
        }
        if (const auto* c = s.caps.find(cap_type::isr); c != nullptr && c->length >= 1) s.isr = *c;
        if (const auto* c = s.caps.find(cap_type::device)) s.device = *c;

        if (s.opts.use_msix) {
            const std::uint32_t need = 1u + nq;
            if (!s.caps.msix) return unexpected(missing("MSI-X wanted but the function has no MSI-X capability"));
            if (s.caps.msix->table_size < need)
                return unexpected(protocol("MSI-X table has " + std::to_string(s.caps.msix->table_size) +
                                           " vectors, " + std::to_string(need) + " needed"));
            auto count = s.f->irq_count(irq_kind::msix);
            if (!count) return unexpected(detail::in_step("counting MSI-X vectors", count.error()));
            if (*count < need)
                return unexpected(protocol("the function offers " + std::to_string(*count) + " MSI-X vectors, " +
                                           std::to_string(need) + " needed"));
        }
        return {};
    }

    expected<void, error> negotiate_features() {
        state& s = *s_;
        std::uint64_t offered = 0;
        for (std::uint32_t half = 0; half < 2; ++half) {
            if (auto r = write_reg<std::uint32_t>(s.common, common::device_feature_select, half,
                                                  "writing device_feature_select");
                !r)
                return r;
            auto v = read_reg<std::uint32_t>(s.common, common::device_feature, "reading device_feature");
            if (!v) return unexpected(v.error());
            offered |= std::uint64_t{*v} << (32 * half);
        }
        s.device_features = offered;
        const std::uint64_t required = s.opts.required_features | wire::virtio_feature::version_1;
        if (const std::uint64_t lacking = required & ~offered; lacking != 0)
            return unexpected(protocol("the device lacks required features " + hex(lacking) + " (offers " +
                                       hex(offered) + ")"));
        s.features = (required | s.opts.wanted_features) & offered;
        for (std::uint32_t half = 0; half < 2; ++half) {
            if (auto r = write_reg<std::uint32_t>(s.common, common::driver_feature_select, half,
                                                  "writing driver_feature_select");
                !r)
                return r;
            if (auto r = write_reg<std::uint32_t>(s.common, common::driver_feature,
                                                  static_cast<std::uint32_t>(s.features >> (32 * half)),
                                                  "writing driver_feature");
                !r)
                return r;
        }
        return {};
    }

    // Vector 0 for configuration changes, 1 + q for queue q (§4.1.5.1.2). The eventfds go to
    // the function first (that enables MSI-X), then the device is told which vector is which
    // and must read it back: NO_VECTOR means it could not allocate it.
    expected<void, error> setup_msix(std::vector<eventfd_notifier>& queue_irqs) {
        state& s = *s_;
        auto config_irq = eventfd_notifier::create();
        if (!config_irq) return unexpected(error{config_irq.error(), "creating the config eventfd"});
        s.config_irq = std::move(*config_irq);
        std::vector<int> fds{s.config_irq.native_handle()};
        for (auto& irq : queue_irqs) {
            auto e = eventfd_notifier::create();
            if (!e) return unexpected(error{e.error(), "creating a queue eventfd"});
            irq = std::move(*e);
            fds.push_back(irq.native_handle());
        }
        if (auto r = s.f->set_irq_eventfds(irq_kind::msix, 0, fds); !r)
            return unexpected(detail::in_step("handing MSI-X eventfds to the function", r.error()));
        s.vectors_attached = static_cast<std::uint32_t>(fds.size());
        return set_vector(common::config_msix_vector, 0, "config");
    }

    expected<void, error> set_vector(std::uint32_t field, std::uint16_t vector, const std::string& who) {
        if (auto r = write_common16(field, vector, "writing an MSI-X vector"); !r)
            return unexpected(error{r.error().code, who + ": " + r.error().what});
        auto back = read_common16(field, "reading an MSI-X vector back");
        if (!back) return unexpected(error{back.error().code, who + ": " + back.error().what});
        if (*back == msix::no_vector)
            return unexpected(protocol(who + ": MSI-X vector " + std::to_string(vector) +
                                       " refused by the device (reads back 0xffff)"));
        if (*back != vector)
            return unexpected(protocol(who + ": MSI-X vector " + std::to_string(vector) + " reads back as " +
                                       std::to_string(*back)));
        return {};
    }

    // §4.1.5.1.3: select, size, areas, vector, notify address, enable.
    expected<void, error> setup_queue(std::uint16_t q, eventfd_notifier irq) {
        state& s = *s_;
        const std::string who = queue_prefix(q);
        const auto step = [&](const error& e) { return unexpected(error{e.code, who + e.what}); };
        if (auto r = write_common16(common::queue_select, q, "writing queue_select"); !r) return step(r.error());
        auto offered = read_common16(common::queue_size, "reading queue_size");
        if (!offered) return step(offered.error());
        const std::uint32_t max = *offered;
        if (max == 0) return unexpected(protocol(who + "size 0 (the device has no such queue)"));
        if ((max & (max - 1)) != 0)
            return unexpected(protocol(who + "the device offers size " + std::to_string(max) +
                                       ", not a power of two (split rings, §2.7)"));
        const std::uint32_t wanted = s.opts.queues[q].size;
        const std::uint32_t n = wanted == 0 || wanted > max ? max : wanted;
        if (auto r = write_common16(common::queue_size, static_cast<std::uint16_t>(n), "writing queue_size"); !r)
            return step(r.error());

        // Areas: the descriptor table and the device area each start a page (the device
        // writes the latter; no false sharing with the driver's), the driver area a cache line.
        namespace wf = wire::virtio_feature;
        ring::split_config cfg;
        cfg.size = n;
        cfg.features = {.event_idx = (s.features & wf::ring_event_idx) != 0,
                        .indirect = (s.features & wf::ring_indirect_desc) != 0,
                        .in_order = (s.features & wf::in_order) != 0};
        auto desc = s.arena->allocate(ring::split_layout::desc_bytes(n), 4096);
        if (!desc) return step(desc.error());
        auto avail = s.arena->allocate(ring::split_layout::avail_bytes(n), 64);
        if (!avail) return step(avail.error());
        auto used = s.arena->allocate(ring::split_layout::used_bytes(n), 4096);
        if (!used) return step(used.error());
        cfg.desc_addr = *desc;
        cfg.avail_addr = *avail;
        cfg.used_addr = *used;
        ring::indirect_area ind;
        if (cfg.features.indirect && s.opts.queues[q].indirect_entries != 0) {
            auto table = s.arena->allocate(16ULL * n * s.opts.queues[q].indirect_entries, 16);
            if (!table) return step(table.error());
            ind = {*table, s.opts.queues[q].indirect_entries};
        }
        auto r = virtqueue::ring_type::create(*s.arena, cfg, ind);
        if (!r) return unexpected(error{r.error(), who + "ring setup: " + r.error().message()});

        if (auto w = write_reg64(common::queue_desc, cfg.desc_addr, "writing queue_desc"); !w) return step(w.error());
        if (auto w = write_reg64(common::queue_driver, cfg.avail_addr, "writing queue_driver"); !w) return step(w.error());
        if (auto w = write_reg64(common::queue_device, cfg.used_addr, "writing queue_device"); !w) return step(w.error());

        std::uint16_t vector = msix::no_vector;
        if (s.opts.use_msix) {
            vector = static_cast<std::uint16_t>(1 + q);
            if (auto v = set_vector(common::queue_msix_vector, vector, "queue " + std::to_string(q)); !v) return v;
        }

        // §4.1.4.4: the notify address is cap.offset + queue_notify_off × multiplier, and
        // must leave room for the 16-bit register inside the structure.
        auto notify_off = read_common16(common::queue_notify_off, "reading queue_notify_off");
        if (!notify_off) return step(notify_off.error());
        const std::uint64_t rel = std::uint64_t{*notify_off} * s.notify.multiplier; // < 2^48
        if (rel + 2 > s.notify.length)
            return unexpected(protocol(who + "notify offset " + std::to_string(*notify_off) + " x multiplier " +
                                       std::to_string(s.notify.multiplier) + " lies outside the " +
                                       std::to_string(s.notify.length) + "-byte notify structure"));
        const std::uint64_t notify_at = s.notify.offset + rel;
        auto bell = s.f->doorbell(s.notify.bar, notify_at, q); // §4.1.5.2: the value is the queue index
        if (!bell) return unexpected(detail::in_step(who + "doorbell", bell.error()));

        if (auto w = write_common16(common::queue_enable, 1, "writing queue_enable"); !w) return step(w.error());
        s.queues.emplace_back(q, std::move(*r), cfg, ind, std::move(*bell), notify_at, std::move(irq), vector);
        return {};
    }

    std::unique_ptr<state> s_;
};

} // namespace vvu::pci
