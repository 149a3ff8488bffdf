// A started vring: the device side of its ring over a snapshot of the front-end's memory, and
// its kick and call notifiers. The state machine builds one when a ring starts and takes it
// back when the ring stops (GET_VRING_BASE) or its memory changes; a device's data path uses
// it in between. Notifiers are whatever the transport made of SET_VRING_KICK / _CALL (UNIX:
// eventfds; VVU: MSI-X vectors and doorbells), held behind a small type-erased handle, so a
// vring — and a device — knows nothing of the transport.
#pragma once

#include <vvu/memory/dirty_log.hpp>
#include <vvu/memory/guest_memory.hpp>
#include <vvu/ring/packed.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/wire/payload.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <functional>
#include <system_error>
#include <variant>

namespace vvu::protocol {

// What a vring needs to start.
struct vring_start {
    std::uint32_t index = 0;
    std::uint32_t size = 0;
    std::uint64_t desc_gpa = 0; // guest addresses (already translated from front-end addresses)
    std::uint64_t avail_gpa = 0;
    std::uint64_t used_gpa = 0;
    std::uint32_t base = 0;     // SET_VRING_BASE num, or where this back-end stopped the ring
    bool base_exact = false;    // packed: base is in the full form (see vring_settings)
    bool packed = false;
    ring::ring_features features{};
    // INFLIGHT_SHMFD: this ring's part of the inflight area (empty: not tracked), and what
    // keeps it mapped while the ring runs.
    std::span<std::byte> inflight;
    std::shared_ptr<const void> inflight_keepalive;
    // Told once, from whichever thread saw it, when the front-end broke the ring (after its
    // error notifier was signalled): index and the ring layer's reason.
    std::function<void(std::uint32_t, std::error_code)> on_broken;
    // Dirty logging (VHOST_F_LOG_ALL with a SET_LOG_BASE log): the ring logs the buffer bytes
    // it completes in `log`, and with `log_used` (VHOST_VRING_F_LOG) its own ring writes.
    std::shared_ptr<const memory::dirty_log> log;
    bool log_used = false;
};

// A call notifier of any transport (signal(): used buffers are ready).
class any_call_notifier {
public:
    any_call_notifier() = default;
    template <class N> // not itself: checking the concept on this type would recurse
        requires(!std::same_as<N, any_call_notifier> && transport::call_notifier<N>)
    explicit any_call_notifier(N n) : impl_(std::make_unique<model<N>>(std::move(n))) {}
    void signal() const noexcept {
        if (impl_) impl_->signal();
    }
    // Its fd where it has one (a live update hands it on), else -1.
    int native_handle() const noexcept { return impl_ ? impl_->native_handle() : -1; }
    explicit operator bool() const noexcept { return impl_ != nullptr; }

private:
    struct base {
        virtual ~base() = default;
        virtual void signal() const noexcept = 0;
        virtual int native_handle() const noexcept = 0;
    };
    template <class N>
    struct model final : base {
        explicit model(N n) : n(std::move(n)) {}
        void signal() const noexcept override { n.signal(); }
        int native_handle() const noexcept override {
            if constexpr (transport::pollable_notifier<N>) return n.native_handle();
            else return -1;
        }
        N n;
    };
    std::unique_ptr<base> impl_;
};

// A kick notifier of any transport (drain(): was the ring kicked since the last look?), and
// its fd where it has one, for an event loop to sleep on.
class any_kick_notifier {
public:
    any_kick_notifier() = default;
    template <class N>
        requires(!std::same_as<N, any_kick_notifier> && transport::kick_notifier<N>)
    explicit any_kick_notifier(N n) : impl_(std::make_unique<model<N>>(std::move(n))) {}
    bool drain() const noexcept { return impl_ && impl_->drain(); }
    int native_handle() const noexcept { return impl_ ? impl_->native_handle() : -1; }
    explicit operator bool() const noexcept { return impl_ != nullptr; }

private:
    struct base {
        virtual ~base() = default;
        virtual bool drain() const noexcept = 0;
        virtual int native_handle() const noexcept = 0;
    };
    template <class N>
    struct model final : base {
        explicit model(N n) : n(std::move(n)) {}
        bool drain() const noexcept override { return n.drain(); }
        int native_handle() const noexcept override {
            if constexpr (transport::pollable_notifier<N>) return n.native_handle();
            else return -1;
        }
        N n;
    };
    std::unique_ptr<base> impl_;
};

// SET_VRING_BASE of a packed ring. The spec puts the used index and wrap counter in bits 16-31,
// but QEMU 7.2 and DPDK 22.11 send only the avail half (DPDK: 0x8000 for a new ring) and mean
// "used = avail". Upper bits all zero read as used index 0 with wrap counter 0, which no new
// ring has (the counters start at 1, virtio 1.2 §2.8.1): such a value is taken as the 16-bit form.
[[nodiscard]] constexpr ring::packed_state packed_base(std::uint32_t num) noexcept {
    return (num >> 16) == 0 ? ring::packed_state::from_avail_only(static_cast<std::uint16_t>(num))
                            : ring::packed_state::from_vring_base(num);
}

class vring {
public:
    // The rings' memory policy: a view that keeps the memory snapshot alive while they run.
    using split_ring = ring::split_device<memory::view>;
    using packed_ring = ring::packed_device<memory::view>;

    static expected<std::unique_ptr<vring>, std::error_code> start(const vring_start& s, memory::guest_memory::ptr memory,
                                                                   any_kick_notifier kick, any_call_notifier call,
                                                                   any_call_notifier error = {}) {
        std::unique_ptr<vring> v(new vring(s.index, std::move(memory), std::move(kick), std::move(call)));
        v->error_ = std::move(error);
        v->on_broken_ = s.on_broken;
        v->inflight_keepalive_ = s.inflight_keepalive;
        v->view_.set_log(s.log);
        if (s.packed) {
            const ring::packed_config cfg{s.size, s.desc_gpa, s.avail_gpa, s.used_gpa, s.features, 0, s.log_used};
            const auto base = s.base_exact ? ring::packed_state::from_vring_base(s.base) : packed_base(s.base);
            if (!s.inflight.empty()) {
                // Tracked (ring/packed_inflight.hpp). A new area starts recording where SET_VRING_BASE
                // says, which must then have nothing in flight. An area an earlier back-end wrote
                // proves where the used side stands and which chains are in flight; it supersedes
                // the base, as it does for split rings (a front-end only knows the position of the
                // last clean stop: QEMU and DPDK send the avail half, "used = avail").
                if (base.avail_idx >= s.size || base.used_idx >= s.size)
                    return unexpected(make_error_code(ring::errc::bad_queue_size));
                auto tracker = ring::packed_inflight::attach(s.inflight.data(), s.inflight.size(), s.size, base.used_idx,
                                                             base.used_wrap);
                if (!tracker) return unexpected(tracker.error());
                const bool fresh = tracker->fresh();
                auto r = packed_ring::create_tracked(v->view_, cfg, std::move(*tracker), base);
                if (!r) return unexpected(r.error());
                const auto at = r->state();
                // A position this back-end's own ring gave (a memory table change, a take-over) was
                // recorded in the area as it was reached: any difference is a scribbled area.
                if (!fresh && s.base_exact && at.to_vring_base() != base.to_vring_base())
                    return unexpected(make_error_code(ring::errc::inflight_position_mismatch));
                if (!fresh && at.to_vring_base() != base.to_vring_base())
                    v->notice_ = fmt::format("vring {}: resuming from the inflight area at avail {}/{} used {}/{} "
                                             "(SET_VRING_BASE said avail {}/{} used {}/{}), {} chains in flight taken again",
                                             s.index, at.avail_idx, int{at.avail_wrap}, at.used_idx, int{at.used_wrap},
                                             base.avail_idx, int{base.avail_wrap}, base.used_idx, int{base.used_wrap},
                                             r->resubmitting());
                v->ring_.template emplace<packed_ring>(std::move(*r));
                return v;
            }
            auto r = packed_ring::create(v->view_, cfg, base);
            if (!r) return unexpected(r.error());
            v->ring_.template emplace<packed_ring>(std::move(*r));
        } else {
            const ring::split_config cfg{s.size, s.desc_gpa, s.avail_gpa, s.used_gpa, s.features, 0, s.log_used};
            if (!s.inflight.empty()) {
                // Tracked: the inflight area, not SET_VRING_BASE, says where to go on (a chain in
                // flight is taken again first; ring/inflight.hpp).
                auto probe = split_ring::create(v->view_, cfg, {});
                if (!probe) return unexpected(probe.error());
                auto tracker = ring::split_inflight::attach(s.inflight.data(), s.inflight.size(), s.size, probe->used_index());
                if (!tracker) return unexpected(tracker.error());
                const bool fresh = tracker->fresh();
                auto r = split_ring::create_tracked(v->view_, cfg, *tracker);
                if (!r) return unexpected(r.error());
                if (!fresh && r->state().next_avail != static_cast<std::uint16_t>(s.base))
                    v->notice_ = fmt::format("vring {}: resuming from the inflight area at avail {} (SET_VRING_BASE said {}), "
                                             "{} chains in flight taken again", s.index, r->state().next_avail,
                                             static_cast<std::uint16_t>(s.base), r->resubmitting());
                v->ring_.template emplace<split_ring>(std::move(*r));
                return v;
            }
            auto r = split_ring::create(v->view_, cfg, ring::split_state{static_cast<std::uint16_t>(s.base)});
            if (!r) return unexpected(r.error());
            // A front-end that kept its ring running across a reconnect (DPDK virtio-user with
            // server=1 sends SET_VRING_BASE 0 whatever its ring holds) gives a base the ring
            // contradicts. The used index is where the last back-end stopped completing: resume
            // there, so chains it took and never completed are taken again (none lost, none
            // completed twice). Only a base that came from the front-end, and only when the
            // ring is consistent from the used index: avail - used may not exceed the size
            // (a real index jump still breaks the ring at the first pop).
            const auto base = static_cast<std::uint16_t>(s.base);
            const std::uint16_t used = r->used_index(), avail = r->driver_avail_index();
            if (!s.base_exact && used != base && static_cast<std::uint16_t>(avail - used) <= s.size) {
                r = split_ring::create(v->view_, cfg, ring::split_state{used});
                if (!r) return unexpected(r.error());
                v->notice_ = fmt::format("vring {}: SET_VRING_BASE {} but the used ring is at {} (avail {}): resuming at {}",
                                         s.index, base, used, avail, used);
            }
            v->ring_.template emplace<split_ring>(std::move(*r));
        }
        return v;
    }

    // Why the ring did not start where SET_VRING_BASE said, if it did not (for the log).
    const std::string& notice() const noexcept { return notice_; }

    vring(const vring&) = delete;
    vring& operator=(const vring&) = delete;

    std::uint32_t index() const noexcept { return index_; }

private:
    // Calls f with the split or packed ring (a started vring always has one).
    template <class F>
    decltype(auto) on_ring(F&& f) {
        if (auto* packed = std::get_if<packed_ring>(&ring_)) return f(*packed);
        return f(*std::get_if<split_ring>(&ring_));
    }

public:
    // Calls f with the split or packed ring (a started vring always has one). A ring that f
    // found broken is reported on the way out (report_if_broken): every device's data path
    // reports what the front-end broke without a line of its own.
    template <class F>
    decltype(auto) visit(F&& f) {
        struct report_after {
            vring& v;
            ~report_after() { v.report_if_broken(); }
        } after{*this};
        return on_ring(std::forward<F>(f));
    }

    // A ring the front-end broke (a descriptor loop, an index jump: ring/error.hpp) takes no
    // more chains — the ring layer stops it — and is reported once: its error notifier
    // (SET_VRING_ERR) is signalled and on_broken told. The other rings run on. True when this
    // call reported it. on_broken (which sets DEVICE_NEEDS_RESET) comes first: a front-end that
    // answers the signal with GET_STATUS must find the status already set.
    bool report_if_broken() noexcept {
        if (reported_.load(std::memory_order_relaxed) || !on_ring([](auto& r) { return r.broken(); })) return false;
        if (reported_.exchange(true)) return false;
        if (on_broken_) {
            try {
                on_broken_(index_, on_ring([](auto& r) { return r.error(); }));
            } catch (...) { // a logger that threw: the ring is reported all the same
            }
        }
        error_.signal();
        return true;
    }

    // GET_VRING_BASE's answer: split rings the next avail index, packed rings both indices and
    // wrap counters (vhost-user.rst "Vring descriptor indices").
    std::uint32_t base() {
        return visit([](auto& r) -> std::uint32_t {
            if constexpr (std::is_same_v<std::decay_t<decltype(r)>, packed_ring>) return r.state().to_vring_base();
            else return r.state().next_avail;
        });
    }

    bool broken() { return on_ring([](auto& r) { return r.broken(); }); }
    // Chains taken from the ring and not yet given back.
    std::uint32_t inflight_count() { return visit([](auto& r) { return r.inflight_count(); }); }
    // The call and error notifiers, for a live update to hand their fds on.
    const any_call_notifier& call() const noexcept { return call_; }
    const any_call_notifier& error_notifier() const noexcept { return error_; }

    // Interrupts the driver when the ring's suppression rules want it (after a push burst).
    void notify() {
        if (visit([](auto& r) { return r.needs_interrupt(); })) signal_call();
    }
    void signal_call() const noexcept { call_.signal(); }
    // The kick notifier (empty when the front-end said "no fd": the ring is polled).
    const any_kick_notifier& kick() const noexcept { return kick_; }

    // SET_VRING_ENABLE: a disabled ring is processed without side effects (net: TX frames are
    // discarded, no RX frames supplied).
    bool enabled() const noexcept { return enabled_.load(std::memory_order_acquire); }
    void set_enabled(bool on) noexcept { enabled_.store(on, std::memory_order_release); }

    // The notifiers go back to the state machine when the ring stops (it restarts the ring
    // with them after a memory table change).
    any_call_notifier take_call() noexcept { return std::move(call_); }
    any_call_notifier take_error() noexcept { return std::move(error_); }
    any_kick_notifier take_kick() noexcept { return std::move(kick_); }

private:
    vring(std::uint32_t index, memory::guest_memory::ptr memory, any_kick_notifier kick, any_call_notifier call)
        : index_(index), view_(std::move(memory)), kick_(std::move(kick)), call_(std::move(call)) {}

    std::uint32_t index_;
    memory::view view_; // the rings point at it: a vring never moves (always held by unique_ptr)
    std::variant<std::monostate, split_ring, packed_ring> ring_;
    std::string notice_;
    std::shared_ptr<const void> inflight_keepalive_;
    any_kick_notifier kick_;
    any_call_notifier call_;
    any_call_notifier error_;
    std::function<void(std::uint32_t, std::error_code)> on_broken_;
    std::atomic<bool> reported_{false};
    std::atomic<bool> enabled_{false};
};

} // namespace vvu::protocol
