// Packed virtqueues (virtio 1.2 §2.8): device side and driver side over a memory policy.
//
//   packed_device<Mem>  pop available chains, push used ones (one used descriptor per batch of
//                       in-order buffers with VIRTIO_F_IN_ORDER), interrupt decision,
//                       enable/disable kicks through the device event suppression structure;
//                       optionally recording what it takes in an inflight region
//                       (packed_inflight.hpp) and resuming from one after a crash.
//   packed_driver<Mem>  add buffers, kick decision, reap used buffers, enable/disable
//                       interrupts through the driver event suppression structure.
//
// Any queue size in [1, 32768]. Both sides keep a one-bit wrap counter per direction,
// initialised to 1 (§2.8.1). Memory written by the other side is hostile; see split.hpp.
// Ordering rules: detail/access.hpp.
#pragma once

#include "vvu/ring/chain.hpp"
#include "vvu/ring/detail/access.hpp"
#include "vvu/ring/detail/chain_builder.hpp"
#include "vvu/ring/error.hpp"
#include "vvu/ring/memory_policy.hpp"
#include "vvu/ring/notify.hpp"
#include "vvu/ring/packed_inflight.hpp"
#include "vvu/ring/split.hpp"   // indirect_area
#include "vvu/util/endian.hpp"
#include "vvu/util/expected.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace vvu::ring {

// ---- Layout (virtio 1.2 §2.8.13, §2.8.14).
struct packed_desc {           // struct pvirtq_desc
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t id;
    std::uint16_t flags;
};
static_assert(sizeof(packed_desc) == 16);
static_assert(offsetof(packed_desc, len) == 8 && offsetof(packed_desc, id) == 12 &&
              offsetof(packed_desc, flags) == 14);

struct packed_event_suppress { // struct pvirtq_event_suppress
    std::uint16_t off_wrap;    // desc_event_off : 15, desc_event_wrap : 1
    std::uint16_t flags;       // desc_event_flags : 2
};
static_assert(sizeof(packed_event_suppress) == 4 && offsetof(packed_event_suppress, flags) == 2);

struct packed_layout {
    static constexpr std::size_t desc_align = 16, event_align = 4;
    static constexpr std::uint64_t desc_bytes(std::uint32_t n) { return 16ULL * n; }
    static constexpr std::uint64_t event_bytes = 4;
};

struct packed_config {
    std::uint32_t size = 0;                 // [1, 32768]
    std::uint64_t desc_addr = 0;            // Descriptor Area
    std::uint64_t driver_event_addr = 0;    // Driver Area: driver event suppression
    std::uint64_t device_event_addr = 0;    // Device Area: device event suppression
    ring_features features{};
    std::uint32_t max_chain_len = 0;        // 0 = queue size (§2.8.5)
    // Dirty logging (a write_logging_policy with a log attached): also log what the device
    // writes of the ring itself — used descriptors, device event suppression (vhost-user
    // SET_VRING_ADDR's VHOST_VRING_F_LOG), at their own guest addresses.
    bool log_used = false;
};

// Device-side ring state (vhost-user SET/GET_VRING_BASE for packed rings).
struct packed_state {
    std::uint16_t avail_idx = 0;
    bool avail_wrap = true;
    std::uint16_t used_idx = 0;
    bool used_wrap = true;

    // bits 0-14 avail index, 15 avail wrap, 16-30 used index, 31 used wrap.
    constexpr std::uint32_t to_vring_base() const noexcept {
        return std::uint32_t{avail_idx} | (std::uint32_t{avail_wrap} << 15) |
               (std::uint32_t{used_idx} << 16) | (std::uint32_t{used_wrap} << 31);
    }
    static constexpr packed_state from_vring_base(std::uint32_t v) noexcept {
        return {static_cast<std::uint16_t>(v & 0x7fff), ((v >> 15) & 1) != 0,
                static_cast<std::uint16_t>((v >> 16) & 0x7fff), ((v >> 31) & 1) != 0};
    }
    // Front-ends that send only the 16-bit avail part (QEMU, DPDK): used = avail.
    static constexpr packed_state from_avail_only(std::uint16_t v) noexcept {
        const auto i = static_cast<std::uint16_t>(v & 0x7fff);
        const bool w = (v >> 15) != 0;
        return {i, w, i, w};
    }
};

namespace detail {

struct packed_rings {
    std::byte* desc = nullptr;
    std::byte* driver_event = nullptr;
    std::byte* device_event = nullptr;
};

template <memory_policy Mem>
inline vvu::expected<packed_rings, std::error_code> map_packed(Mem& mem, const packed_config& c) {
    using L = packed_layout;
    if (c.size == 0 || c.size > max_queue_size)
        return vvu::unexpected(make_error_code(errc::bad_queue_size));
    if (c.desc_addr % L::desc_align || c.driver_event_addr % L::event_align ||
        c.device_event_addr % L::event_align)
        return vvu::unexpected(make_error_code(errc::ring_misaligned));
    packed_rings r{mem.translate(c.desc_addr, L::desc_bytes(c.size)),
                   mem.translate(c.driver_event_addr, L::event_bytes),
                   mem.translate(c.device_event_addr, L::event_bytes)};
    if (!r.desc || !r.driver_event || !r.device_event)
        return vvu::unexpected(make_error_code(errc::ring_out_of_memory));
    if (!aligned(r.desc, 8) || !aligned(r.driver_event, 4) || !aligned(r.device_event, 4))
        return vvu::unexpected(make_error_code(errc::ring_misaligned));
    return r;
}

// §2.8.1: available = AVAIL bit equals the wrap counter and USED bit differs from it;
// used = both bits equal the wrap counter.
inline bool is_avail(std::uint16_t flags, bool wrap) noexcept {
    return ((flags & desc_f_avail) != 0) == wrap && ((flags & desc_f_used) != 0) != wrap;
}
inline bool is_used(std::uint16_t flags, bool wrap) noexcept {
    return ((flags & desc_f_avail) != 0) == wrap && ((flags & desc_f_used) != 0) == wrap;
}

// (base + k) mod size for base < size and k <= size, without a division (a packed ring's size
// need not be a power of two, and a `%` per descriptor showed in its push).
inline std::uint32_t wrapped(std::uint32_t base, std::uint32_t k, std::uint32_t size) noexcept {
    const std::uint32_t i = base + k;
    return i >= size ? i - size : i;
}

// Advance a (index, wrap) cursor by k <= size descriptors.
inline void advance(std::uint16_t& idx, bool& wrap, std::uint32_t k, std::uint32_t size) noexcept {
    std::uint32_t i = std::uint32_t{idx} + k;
    if (i >= size) {
        i -= size;
        wrap = !wrap;
    }
    idx = static_cast<std::uint16_t>(i);
}

} // namespace detail

// ============================================================================ device side
template <memory_policy Mem>
class packed_device {
public:
    static vvu::expected<packed_device, std::error_code> create(Mem& mem, const packed_config& cfg,
                                                                packed_state st = {}) {
        auto r = detail::map_packed(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        if (st.avail_idx >= cfg.size || st.used_idx >= cfg.size)
            return vvu::unexpected(make_error_code(errc::bad_queue_size));
        return packed_device(mem, cfg, *r, st);
    }

    // A ring whose taking and completing is recorded in an inflight region (packed_inflight.hpp).
    // A new region (tracker.fresh()) starts the ring at `st`, which must have nothing in flight
    // (avail == used: the region cannot know of chains taken before it existed). Otherwise the
    // region, not `st`, says where the ring stands: the used side where the last committed
    // batch left it, the chains in flight taken again first (oldest first, with their buffer
    // ids), and the avail side after them — a packed ring's device takes descriptors in ring
    // order and writes used ones in ring order, so avail = used + the descriptors in flight.
    static vvu::expected<packed_device, std::error_code> create_tracked(Mem& mem, const packed_config& cfg,
                                                                        packed_inflight tracker, packed_state st = {}) {
        auto r = detail::map_packed(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        if (st.avail_idx >= cfg.size || st.used_idx >= cfg.size)
            return vvu::unexpected(make_error_code(errc::bad_queue_size));
        if (tracker.size() != cfg.size) return vvu::unexpected(make_error_code(errc::inflight_region_mismatch));
        const std::byte* desc = r->desc;
        auto found = tracker.recover([desc](std::uint16_t idx, bool wrap) {
            return !detail::is_avail(detail::load_acquire16(const_cast<std::byte*>(desc) + 16 * std::size_t(idx) + 14), wrap);
        });
        if (!found) return vvu::unexpected(found.error());
        if (tracker.fresh()) {
            if (st.avail_idx != st.used_idx || st.avail_wrap != st.used_wrap || found->used_idx != st.used_idx ||
                found->used_wrap != st.used_wrap)
                return vvu::unexpected(make_error_code(errc::inflight_position_mismatch));
        } else {
            st.used_idx = found->used_idx;
            st.used_wrap = found->used_wrap;
            st.avail_idx = found->used_idx;
            st.avail_wrap = found->used_wrap;
            detail::advance(st.avail_idx, st.avail_wrap, found->inflight_descs, cfg.size);
            scrub_unpublished(r->desc, st.used_idx, st.used_wrap, found->inflight_descs, cfg.size);
        }
        packed_device d(mem, cfg, *r, st);
        d.resubmit_ = std::move(found->chains);
        d.tracker_.emplace(std::move(tracker));
        return d;
    }

    // Take up to out.size() available chains. The head descriptor's flags are loaded with
    // ACQUIRE; the rest of the list was written before it (§2.8.6). Views stay valid until
    // the next pop / pop_burst.
    std::size_t pop_burst(std::span<chain> out) noexcept {
        return tracker_ ? pop_chains<true>(out) : pop_chains<false>(out);
    }
    bool pop(chain& c) noexcept { return pop_burst({&c, 1}) == 1; }

    // Chains an earlier back-end left in flight that pop_burst has yet to take again.
    std::size_t resubmitting() const noexcept { return resubmit_.size() - resubmit_next_; }

    // Write used descriptors. The batch's first used descriptor gets its flags last, with
    // RELEASE, so the driver sees the whole batch at once (§2.8.8 multi-buffer). With
    // VIRTIO_F_IN_ORDER, a run of buffers pushed in the order they were taken, all but the
    // last fully written (or read-only), becomes ONE used descriptor carrying the id of the
    // last buffer; the driver skips the whole run (§2.8.9). Stops at an id not in flight.
    std::size_t push_burst(std::span<const used_element> used) noexcept {
        return tracker_ ? push_used<true>(used) : push_used<false>(used);
    }
    bool push(std::uint16_t id, std::uint32_t written) noexcept {
        const used_element e{id, written};
        return push_burst({&e, 1}) == 1;
    }

    // After pushing: must the driver be interrupted (§2.8.10, driver event suppression)?
    bool needs_interrupt() noexcept {
        if (broken_) return false;
        detail::store_load_fence();   // used flags store before the load of the driver's event
        const std::uint32_t ev = detail::load_relaxed32(drv_evt_);
        const std::uint32_t now = packed_position(used_idx_, used_wrap_, size_);
        const std::uint32_t old = irq_old_;
        irq_old_ = now;
        // The first decision on a push since this object took the ring ignores the event index
        // (split_device::irq_since_start_ says why); DISABLE still holds.
        const bool first = !irq_since_start_;
        irq_since_start_ = irq_since_start_ || now != old;
        return packed_should_notify(ev, old, now, size_, features_.event_idx && !first);
    }

    // Ask for kicks (flags ENABLE, or DESC at the next descriptor to take with EVENT_IDX),
    // then re-check; true when a buffer arrived meanwhile.
    bool enable_notifications() noexcept {
        const std::uint32_t v = features_.event_idx
            ? (std::uint32_t{next_avail_} | (std::uint32_t{avail_wrap_} << 15) |
               (std::uint32_t{ring_event_flags_desc} << 16))
            : (std::uint32_t{ring_event_flags_enable} << 16);
        detail::store_relaxed32(dev_evt_, v);   // one store: off_wrap and flags change together
        wlog_.ring(dev_evt_addr_, 4);
        detail::store_load_fence();
        return has_available();
    }
    void disable_notifications() noexcept {
        detail::store_relaxed32(dev_evt_, std::uint32_t{ring_event_flags_disable} << 16);
        wlog_.ring(dev_evt_addr_, 4);
    }
    bool has_available() noexcept {
        return !broken_ &&
               detail::is_avail(detail::load_acquire16(desc_ + 16 * std::size_t(next_avail_) + 14),
                                avail_wrap_);
    }

    bool broken() const noexcept { return broken_; }
    std::error_code error() const noexcept { return broken_ ? make_error_code(err_) : std::error_code{}; }
    packed_state state() const noexcept { return {next_avail_, avail_wrap_, used_idx_, used_wrap_}; }
    std::uint32_t size() const noexcept { return size_; }
    const ring_features& features() const noexcept { return features_; }

    std::uint32_t inflight_count() const noexcept { return n_inflight_; }
    bool is_inflight(std::uint16_t id) const noexcept { return id < size_ && inflight_[id] != 0; }
    template <class F>
    void for_each_inflight(F&& f) const {
        for (std::uint32_t i = 0; i < size_; ++i)
            if (inflight_[i]) f(static_cast<std::uint16_t>(i));
    }

private:
    packed_device(Mem& mem, const packed_config& c, const detail::packed_rings& r, packed_state st)
        : mem_(&mem), desc_(r.desc), drv_evt_(r.driver_event), dev_evt_(r.device_event),
          size_(c.size), features_(c.features), limit_(c.max_chain_len == 0 ? c.size : c.max_chain_len),
          next_avail_(st.avail_idx), avail_wrap_(st.avail_wrap), used_idx_(st.used_idx),
          used_wrap_(st.used_wrap), irq_old_(packed_position(st.used_idx, st.used_wrap, c.size)),
          inflight_(new std::uint16_t[c.size]()), wtotal_(new std::uint32_t[c.size]()),
          fifo_(new std::uint16_t[c.size]()), arena_(limit_ + 256), desc_addr_(c.desc_addr),
          dev_evt_addr_(c.device_event_addr), wlog_(mem, c.size, limit_, c.log_used) {}

    void fail(errc e) noexcept {
        broken_ = true;
        err_ = e;
    }

    // A device may push out of take order even with IN_ORDER negotiated (it then just loses
    // the batching); keep the FIFO exact by removing the id wherever it is.
    void remove_from_fifo(std::uint16_t id) noexcept {
        const std::uint32_t n = n_inflight_;
        std::uint32_t i = 0;
        while (i < n && fifo_[detail::wrapped(fifo_head_, i, size_)] != id) ++i;
        for (; i + 1 < n; ++i)
            fifo_[detail::wrapped(fifo_head_, i, size_)] = fifo_[detail::wrapped(fifo_head_, i + 1, size_)];
    }

    // A batch is written with its first used descriptor's flags last, so a back-end killed in
    // between leaves used-looking descriptors after a slot that still looks available. The batch
    // is rolled back (recover()), but those descriptors stay: once a later, different batch
    // publishes the slots before them, the driver would read them as used. They lie among the
    // slots of the chains in flight ([used, avail)), which the driver made available and will
    // not touch before they are used: turn any that looks used back into "not used" before
    // anything is published.
    static void scrub_unpublished(std::byte* desc, std::uint16_t used_idx, bool used_wrap, std::uint32_t count,
                                  std::uint32_t size) noexcept {
        for (std::uint32_t i = 0; i < count; ++i) {
            std::byte* f = desc + 16 * std::size_t(used_idx) + 14;
            const std::uint16_t flags = detail::load_relaxed16(f);
            if (detail::is_used(flags, used_wrap))
                detail::store_relaxed16(f, static_cast<std::uint16_t>(flags ^ detail::desc_f_used));
            detail::advance(used_idx, used_wrap, 1, size);
        }
    }

    // push_burst. Tracked: each buffer's entries go back to the region's free list, the used
    // side it moves to is set before the RELEASE store and committed after it.
    template <bool Tracked>
    std::size_t push_used(std::span<const used_element> used) noexcept {
        if (broken_) return 0;
        std::size_t k = 0;
        std::byte* first = nullptr;
        std::uint16_t first_flags = 0;
        std::uint16_t first_slot = 0;
        while (k < used.size()) {
            const used_element& e = used[k];
            if (e.id >= size_ || inflight_[e.id] == 0) break;
            std::size_t run = 1;
            std::uint32_t skip = inflight_[e.id];
            // A run starts only at a buffer that needs no length of its own (fully written, or
            // read-only): a receive buffer almost never is, and skips the run's bookkeeping.
            if (features_.in_order && e.len == wtotal_[e.id] && fifo_[fifo_head_] == e.id) {
                // Extend the run while the next element is the next buffer in take order and
                // the current one needs no length of its own.
                while (k + run < used.size() && run < n_inflight_) {
                    const used_element& prev = used[k + run - 1];
                    const used_element& nx = used[k + run];
                    if (prev.len != wtotal_[prev.id]) break;
                    const auto slot = detail::wrapped(fifo_head_, static_cast<std::uint32_t>(run), size_);
                    if (fifo_[slot] != nx.id || nx.id >= size_) break;
                    skip += inflight_[nx.id];
                    ++run;
                }
            }
            const used_element& last = used[k + run - 1];
            std::byte* d = desc_ + 16 * std::size_t(used_idx_);
            le::store<std::uint32_t>(d + 8, last.len);
            le::store<std::uint16_t>(d + 12, last.id);
            const auto f = static_cast<std::uint16_t>(
                (used_wrap_ ? (detail::desc_f_avail | detail::desc_f_used) : 0) |
                (last.len != 0 ? detail::desc_f_write : 0));
            if (first == nullptr) {
                first = d + 14;
                first_flags = f;
                first_slot = used_idx_;
            } else {
                detail::store_relaxed16(d + 14, f);
                wlog_.ring(desc_addr_ + 16 * std::size_t(used_idx_), 16); // logged once written
            }
            for (std::size_t i = 0; i < run; ++i) {
                const std::uint16_t id = used[k + i].id;
                wlog_.written(id, used[k + i].len);
                if constexpr (Tracked) tracker_->completing(id);
                inflight_[id] = 0;
                if (features_.in_order && fifo_[fifo_head_] == id)
                    fifo_head_ = static_cast<std::uint16_t>(detail::wrapped(fifo_head_, 1, size_));
                else if (features_.in_order)
                    remove_from_fifo(id);
                --n_inflight_;
            }
            detail::advance(used_idx_, used_wrap_, skip, size_);
            k += run;
        }
        if (first == nullptr) return k;
        if constexpr (Tracked) tracker_->publishing(used_idx_, used_wrap_);
        detail::store_release16(first, first_flags);
        wlog_.ring(desc_addr_ + 16 * std::size_t(first_slot), 16);
        if constexpr (Tracked) tracker_->completed(used.first(k), used_idx_, used_wrap_);
        return k;
    }

    // pop_burst. Tracked: chains an earlier back-end left in flight come first (built from the
    // region's copies, through the same checks), and each chain read from the ring is copied
    // into the region as it is walked; the burst's takes are committed once at the end.
    template <bool Tracked>
    std::size_t pop_chains(std::span<chain> out) noexcept {
        std::size_t got = 0;
        std::uint32_t used_segs = 0;
        [[maybe_unused]] bool recorded = false;
        bool prefetched = false;
        while (got < out.size() && !broken_) {
            if constexpr (Tracked) {
                if (resubmit_next_ < resubmit_.size()) {
                    const packed_inflight_chain& c = resubmit_[resubmit_next_];
                    detail::chain_builder<Mem> b(*mem_, arena_.data() + used_segs, arena_.capacity() - used_segs, limit_,
                                                 wlog_.recording());
                    bool indirect = false;
                    const auto st = rebuild(b, c, indirect);
                    if (st == detail::build_status::arena_full) break;
                    if (st == detail::build_status::error) { fail(b.error()); break; }
                    const auto ring_descs = static_cast<std::uint16_t>(c.descs.size());
                    if (c.id >= size_) { fail(errc::id_out_of_range); break; }
                    if (inflight_[c.id] != 0) { fail(errc::head_in_use); break; }
                    b.finish(out[got], c.id, ring_descs, indirect);
                    used_segs += b.segments();
                    took(out[got], c.id, ring_descs);
                    ++resubmit_next_; // recorded already, with its first counter; the avail side is past it
                    ++got;
                    continue;
                }
            }
            const std::uint16_t flags =
                detail::load_acquire16(desc_ + 16 * std::size_t(next_avail_) + 14);
            if (!detail::is_avail(flags, avail_wrap_)) break;
            if (!prefetched) {
                prefetch_descriptors(static_cast<std::uint32_t>(out.size() - got));
                prefetched = true;
            }
            detail::chain_builder<Mem> b(*mem_, arena_.data() + used_segs,
                                         arena_.capacity() - used_segs, limit_, wlog_.recording());
            std::uint16_t id = 0, ring_descs = 0;
            bool indirect = false;
            [[maybe_unused]] std::uint16_t cursor = 0;
            if constexpr (Tracked) cursor = tracker_->begin_chain();
            const auto st = walk<Tracked>(b, flags, id, ring_descs, indirect, cursor);
            if (st == detail::build_status::arena_full) break;
            if (st == detail::build_status::error) { fail(b.error()); break; }
            if (id >= size_) { fail(errc::id_out_of_range); break; }
            if (inflight_[id] != 0) { fail(errc::head_in_use); break; }
            b.finish(out[got], id, ring_descs, indirect);
            used_segs += b.segments();
            if constexpr (Tracked) {
                tracker_->taken(cursor, id, ring_descs);
                recorded = true;
            }
            took(out[got], id, ring_descs);
            detail::advance(next_avail_, avail_wrap_, ring_descs, size_);
            ++got;
        }
        if constexpr (Tracked) {
            if (recorded) tracker_->commit_taken();
        }
        return got;
    }

    // The ring slots of the next `count` descriptors, asked for together once the first of them
    // is seen available: the driver wrote them from its CPU, so each line (4 slots) is a miss,
    // and the walk would take those misses one after another. Slots not made available yet
    // are fetched too (only their flags tell); hints only, pop_chains checks every slot it reads.
    void prefetch_descriptors(std::uint32_t count) const noexcept {
        const std::uint32_t n = std::min(count, size_);
        if (n == 0) return;
        for (std::uint32_t i = 0; i < n; i += 4) // a slot in each line, 64 bytes apart
            detail::prefetch_line(desc_ + 16 * std::size_t(detail::wrapped(next_avail_, i, size_)));
        detail::prefetch_line(desc_ + 16 * std::size_t(detail::wrapped(next_avail_, n - 1, size_))); // the last line
    }

    [[gnu::always_inline]] void took(const chain& c, std::uint16_t id, std::uint16_t ring_descs) noexcept {
        wlog_.keep(id);
        inflight_[id] = ring_descs;
        wtotal_[id] = c.writable_bytes();
        if (features_.in_order) fifo_[detail::wrapped(fifo_head_, n_inflight_, size_)] = id;
        ++n_inflight_;
    }

    // Walk the list starting at next_avail_ (head flags already loaded). Direct descriptors
    // follow each other in ring order (wrapping), or the list is ONE indirect descriptor
    // (§2.8.7: no indirect inside a NEXT list) whose table is read in order, without `next`.
    // Tracked: each ring descriptor is copied, as read, into the region entry at `cursor`.
    template <bool Tracked>
    detail::build_status walk(detail::chain_builder<Mem>& b, std::uint16_t head_flags,
                              std::uint16_t& id, std::uint16_t& ring_descs, bool& indirect,
                              [[maybe_unused]] std::uint16_t& cursor) noexcept {
        std::uint16_t pos = next_avail_;
        bool wrap = avail_wrap_;
        std::uint16_t flags = head_flags;
        std::uint32_t count = 0;
        for (;;) {
            if (++count > size_) return b.fail(errc::chain_too_long);
            const std::byte* d = desc_ + 16 * std::size_t(pos);
            if (count > 1) {
                flags = le::load<std::uint16_t>(d + 14);
                if (!detail::is_avail(flags, wrap)) return b.fail(errc::chain_unavailable);
            }
            const auto addr = le::load<std::uint64_t>(d);
            const auto len = le::load<std::uint32_t>(d + 8);
            id = le::load<std::uint16_t>(d + 12);   // the list's last descriptor carries it
            if constexpr (Tracked) {
                if (!tracker_->record(cursor, addr, len, flags, id)) return b.fail(errc::avail_index_too_far);
            }
            if (flags & detail::desc_f_indirect) {
                if (count != 1 || (flags & detail::desc_f_next)) return b.fail(errc::indirect_with_next);
                indirect = true;
                ring_descs = 1;
                return add_indirect(b, addr, len);
            }
            const auto st = b.add(addr, len, (flags & detail::desc_f_write) != 0);
            if (st != detail::build_status::ok) return st;
            if ((flags & detail::desc_f_next) == 0) {
                ring_descs = static_cast<std::uint16_t>(count);
                return detail::build_status::ok;
            }
            detail::advance(pos, wrap, 1, size_);
        }
    }

    // The buffers of an indirect table (§2.8.7), read in order, without `next`.
    detail::build_status add_indirect(detail::chain_builder<Mem>& b, std::uint64_t addr, std::uint32_t len) noexcept {
        if (!features_.indirect) return b.fail(errc::indirect_not_negotiated);
        if (len == 0 || len % 16 != 0) return b.fail(errc::bad_indirect_length);
        if (len / 16 > limit_) return b.fail(errc::indirect_too_long);
        const std::byte* t = mem_->translate(addr, len);
        if (t == nullptr) return b.fail(errc::indirect_out_of_memory);
        for (std::uint32_t i = 0; i < len / 16; ++i) {
            const std::byte* e = t + 16 * std::size_t(i);
            const auto ea = le::load<std::uint64_t>(e);
            const auto el = le::load<std::uint32_t>(e + 8);
            const auto ef = le::load<std::uint16_t>(e + 14);
            if (ef & detail::desc_f_indirect) return b.fail(errc::nested_indirect);
            const auto st = b.add(ea, el, (ef & detail::desc_f_write) != 0);
            if (st != detail::build_status::ok) return st;
        }
        return detail::build_status::ok;
    }

    // A chain an earlier back-end left in flight, from the region's copies of its descriptors:
    // the checks walk() makes on the ring, plus NEXT on every descriptor but the last (the
    // copies must describe one list, as the ring did).
    detail::build_status rebuild(detail::chain_builder<Mem>& b, const packed_inflight_chain& c, bool& indirect) noexcept {
        const std::size_t n = c.descs.size();
        for (std::size_t i = 0; i < n; ++i) {
            const packed_inflight_desc& d = c.descs[i];
            const bool more = i + 1 < n;
            if (((d.flags & detail::desc_f_next) != 0) != more) return b.fail(errc::inflight_region_corrupt);
            if (d.flags & detail::desc_f_indirect) {
                if (n != 1) return b.fail(errc::indirect_with_next);
                indirect = true;
                return add_indirect(b, d.addr, d.len);
            }
            const auto st = b.add(d.addr, d.len, (d.flags & detail::desc_f_write) != 0);
            if (st != detail::build_status::ok) return st;
        }
        return detail::build_status::ok;
    }

    Mem* mem_;
    std::byte* desc_;
    std::byte* drv_evt_;
    std::byte* dev_evt_;
    std::uint32_t size_;
    ring_features features_;
    std::uint32_t limit_;
    std::uint16_t next_avail_;
    bool avail_wrap_;
    std::uint16_t used_idx_;
    bool used_wrap_;
    std::uint32_t irq_old_;   // used position at the last interrupt decision
    bool irq_since_start_ = false; // a push was decided on since this object took the ring
    std::unique_ptr<std::uint16_t[]> inflight_;   // per id: ring descriptors, 0 = not in flight
    std::unique_ptr<std::uint32_t[]> wtotal_;     // per id: writable bytes (IN_ORDER batching)
    std::unique_ptr<std::uint16_t[]> fifo_;       // IN_ORDER: ids in take order
    std::uint16_t fifo_head_ = 0;
    std::uint32_t n_inflight_ = 0;
    detail::segment_arena arena_;
    std::uint64_t desc_addr_;      // guest addresses of what the device writes (dirty logging)
    std::uint64_t dev_evt_addr_;
    detail::write_log<Mem> wlog_;
    errc err_{};
    bool broken_ = false;
    std::optional<packed_inflight> tracker_;       // inflight tracking, when the session has a region
    std::vector<packed_inflight_chain> resubmit_;  // chains an earlier back-end left in flight, oldest first
    std::size_t resubmit_next_ = 0;
};

// ============================================================================ driver side
template <memory_policy Mem>
class packed_driver {
public:
    // Zeroes the descriptor ring and both event structures (§2.8.13: zero-initialised ring).
    static vvu::expected<packed_driver, std::error_code> create(Mem& mem, const packed_config& cfg,
                                                                indirect_area ind = {}) {
        auto r = detail::map_packed(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        auto ind_p = detail::map_indirect(mem, ind, cfg.size);
        if (!ind_p) return vvu::unexpected(ind_p.error());
        std::memset(r->desc, 0, packed_layout::desc_bytes(cfg.size));
        std::memset(r->driver_event, 0, 4);
        std::memset(r->device_event, 0, 4);
        return packed_driver(cfg, *r, ind, *ind_p);
    }

    // Post buffers. Every descriptor but the burst's first head gets its flags written
    // first; that one is stored last with RELEASE (§2.8.21.1), exposing the whole burst.
    std::size_t add_burst(std::span<const request> reqs) noexcept {
        std::size_t k = 0;
        head_flags_ptr_ = nullptr;
        for (const request& r : reqs) {
            if (!add_one(r)) break;
            ++k;
        }
        if (head_flags_ptr_ != nullptr) detail::store_release16(head_flags_ptr_, head_flags_);
        return k;
    }
    bool add(std::span<const buffer> readable, std::span<const buffer> writable,
             std::uint64_t token, bool indirect = false) noexcept {
        const request r{readable, writable, token, indirect};
        return add_burst({&r, 1}) == 1;
    }

    // After adding: must the device be kicked (device event suppression, §2.8.10)?
    bool needs_kick() noexcept {
        detail::store_load_fence();   // descriptor flags stores before the load of the event
        const std::uint32_t ev = detail::load_relaxed32(dev_evt_);
        const std::uint32_t now = packed_position(next_avail_, avail_wrap_, size_);
        const std::uint32_t old = kick_old_;
        kick_old_ = now;
        return packed_should_notify(ev, old, now, size_, features_.event_idx);
    }

    // Reap used buffers (ACQUIRE on the used descriptor's flags). With IN_ORDER, a used
    // descriptor completes every older buffer too (full writable length, §2.8.9).
    std::size_t reap_burst(std::span<used_buffer> out) noexcept {
        std::size_t got = 0;
        while (got < out.size() && !broken_) {
            if (pending_) {
                const std::uint16_t id = fifo_[fifo_head_];
                const bool last = id == pending_id_;
                out[got++] = complete(id, last ? pending_len_ : wtotal_[id]);
                if (last) pending_ = false;
                continue;
            }
            if (n_inflight_ == 0) break;
            const std::byte* d = desc_ + 16 * std::size_t(next_used_);
            const std::uint16_t flags = detail::load_acquire16(const_cast<std::byte*>(d) + 14);
            if (!detail::is_used(flags, used_wrap_)) break;
            const auto id = le::load<std::uint16_t>(d + 12);
            const auto len = (flags & detail::desc_f_write) ? le::load<std::uint32_t>(d + 8) : 0u;
            if (id >= size_ || ndesc_[id] == 0) { fail(errc::bad_used_id); break; }
            if (features_.in_order && fifo_[fifo_head_] != id) {
                pending_ = true;
                pending_id_ = id;
                pending_len_ = len;
                continue;
            }
            out[got++] = complete(id, len);
        }
        return got;
    }
    bool reap(used_buffer& u) noexcept { return reap_burst({&u, 1}) == 1; }

    bool enable_interrupts() noexcept {
        const std::uint32_t v = features_.event_idx
            ? (std::uint32_t{next_used_} | (std::uint32_t{used_wrap_} << 15) |
               (std::uint32_t{ring_event_flags_desc} << 16))
            : (std::uint32_t{ring_event_flags_enable} << 16);
        detail::store_relaxed32(drv_evt_, v);
        detail::store_load_fence();
        return pending_ ||
               (n_inflight_ != 0 &&
                detail::is_used(detail::load_acquire16(desc_ + 16 * std::size_t(next_used_) + 14),
                                used_wrap_));
    }
    void disable_interrupts() noexcept {
        detail::store_relaxed32(drv_evt_, std::uint32_t{ring_event_flags_disable} << 16);
    }

    std::uint32_t free_descriptors() const noexcept { return num_free_; }
    std::uint32_t outstanding() const noexcept { return n_inflight_; }
    std::uint32_t size() const noexcept { return size_; }
    bool broken() const noexcept { return broken_; }
    std::error_code error() const noexcept { return broken_ ? make_error_code(err_) : std::error_code{}; }

private:
    packed_driver(const packed_config& c, const detail::packed_rings& r, indirect_area ind, std::byte* ind_p)
        : desc_(r.desc), drv_evt_(r.driver_event), dev_evt_(r.device_event), size_(c.size),
          features_(c.features), ind_(ind_p), ind_addr_(ind.addr), ind_entries_(ind.entries),
          num_free_(c.size), kick_old_(packed_position(0, true, c.size)),
          free_ids_(new std::uint16_t[c.size]), n_free_ids_(c.size),
          token_(new std::uint64_t[c.size]()), wtotal_(new std::uint32_t[c.size]()),
          ndesc_(new std::uint16_t[c.size]()), fifo_(new std::uint16_t[c.size]()) {
        // Stack of free ids, lowest on top.
        for (std::uint32_t i = 0; i < size_; ++i) free_ids_[i] = static_cast<std::uint16_t>(size_ - 1 - i);
    }

    void fail(errc e) noexcept {
        broken_ = true;
        err_ = e;
    }

    bool add_one(const request& r) noexcept {
        if (broken_) return false;
        const std::size_t n = r.readable.size() + r.writable.size();
        if (n == 0) return false;
        const bool ind = r.indirect;
        if (ind && (!features_.indirect || ind_ == nullptr || n > ind_entries_)) return false;
        const std::uint32_t need = ind ? 1 : static_cast<std::uint32_t>(n);
        if (need > num_free_ || n_free_ids_ == 0) return false;
        std::uint64_t total = 0, wtotal = 0;
        for (const buffer& b : r.readable) total += b.len;
        for (const buffer& b : r.writable) wtotal += b.len;
        if (total + wtotal > 0xffff'ffffULL) return false;

        const std::uint16_t id = free_ids_[--n_free_ids_];
        const auto avail_bits = static_cast<std::uint16_t>(avail_wrap_ ? detail::desc_f_avail : detail::desc_f_used);
        std::byte* head = desc_ + 16 * std::size_t(next_avail_);
        std::uint16_t hflags;
        if (ind) {
            std::byte* t = ind_ + 16 * std::size_t(id) * ind_entries_;
            for (std::size_t i = 0; i < n; ++i) {
                const bool w = i >= r.readable.size();
                const buffer& b = w ? r.writable[i - r.readable.size()] : r.readable[i];
                le::store<std::uint64_t>(t + 16 * i, b.addr);
                le::store<std::uint32_t>(t + 16 * i + 8, b.len);
                le::store<std::uint16_t>(t + 16 * i + 12, 0);
                le::store<std::uint16_t>(t + 16 * i + 14, w ? detail::desc_f_write : std::uint16_t{0});
            }
            le::store<std::uint64_t>(head, ind_addr_ + 16ULL * id * ind_entries_);
            le::store<std::uint32_t>(head + 8, static_cast<std::uint32_t>(16 * n));
            le::store<std::uint16_t>(head + 12, id);
            hflags = static_cast<std::uint16_t>(detail::desc_f_indirect | avail_bits);
            detail::advance(next_avail_, avail_wrap_, 1, size_);
        } else {
            hflags = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const bool w = i >= r.readable.size();
                const buffer& b = w ? r.writable[i - r.readable.size()] : r.readable[i];
                std::byte* d = desc_ + 16 * std::size_t(next_avail_);
                le::store<std::uint64_t>(d, b.addr);
                le::store<std::uint32_t>(d + 8, b.len);
                le::store<std::uint16_t>(d + 12, id);
                const auto f = static_cast<std::uint16_t>(
                    (w ? detail::desc_f_write : 0) | (i + 1 < n ? detail::desc_f_next : 0) |
                    (avail_wrap_ ? detail::desc_f_avail : detail::desc_f_used));
                if (i == 0) hflags = f;
                else detail::store_relaxed16(d + 14, f);
                detail::advance(next_avail_, avail_wrap_, 1, size_);
            }
        }
        if (head_flags_ptr_ == nullptr) {
            head_flags_ptr_ = head + 14;
            head_flags_ = hflags;
        } else {
            detail::store_relaxed16(head + 14, hflags);
        }
        num_free_ -= need;
        ndesc_[id] = static_cast<std::uint16_t>(need);
        token_[id] = r.token;
        wtotal_[id] = static_cast<std::uint32_t>(wtotal);
        if (features_.in_order) fifo_[detail::wrapped(fifo_head_, n_inflight_, size_)] = id;
        ++n_inflight_;
        return true;
    }

    used_buffer complete(std::uint16_t id, std::uint32_t len) noexcept {
        const used_buffer u{token_[id], len < wtotal_[id] ? len : wtotal_[id]};
        detail::advance(next_used_, used_wrap_, ndesc_[id], size_);
        num_free_ += ndesc_[id];
        ndesc_[id] = 0;
        free_ids_[n_free_ids_++] = id;
        --n_inflight_;
        if (features_.in_order) fifo_head_ = static_cast<std::uint16_t>(detail::wrapped(fifo_head_, 1, size_));
        return u;
    }

    std::byte* desc_;
    std::byte* drv_evt_;
    std::byte* dev_evt_;
    std::uint32_t size_;
    ring_features features_;
    std::byte* ind_;
    std::uint64_t ind_addr_;
    std::uint32_t ind_entries_;
    std::uint16_t next_avail_ = 0;
    bool avail_wrap_ = true;
    std::uint16_t next_used_ = 0;
    bool used_wrap_ = true;
    std::uint32_t num_free_;
    std::uint32_t kick_old_;
    std::unique_ptr<std::uint16_t[]> free_ids_;
    std::uint32_t n_free_ids_;
    std::unique_ptr<std::uint64_t[]> token_;
    std::unique_ptr<std::uint32_t[]> wtotal_;
    std::unique_ptr<std::uint16_t[]> ndesc_;   // per id: ring descriptors, 0 = not in flight
    std::unique_ptr<std::uint16_t[]> fifo_;
    std::uint16_t fifo_head_ = 0;
    std::uint32_t n_inflight_ = 0;
    std::byte* head_flags_ptr_ = nullptr;
    std::uint16_t head_flags_ = 0;
    bool pending_ = false;
    std::uint16_t pending_id_ = 0;
    std::uint32_t pending_len_ = 0;
    errc err_{};
    bool broken_ = false;
};

} // namespace vvu::ring
