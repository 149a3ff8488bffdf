// Split virtqueues (virtio 1.2 §2.7): device side and driver side over a memory policy.
//
//   split_device<Mem>  what a back-end runs: pop available chains, push used ones, decide
//                      whether to interrupt, enable/disable kicks.
//   split_driver<Mem>  what a front-end runs: add buffers, decide whether to kick, reap used
//                      buffers, enable/disable interrupts.
//
// Both treat the memory written by the other side as hostile: every index, descriptor field
// and used element is read once, validated, and a violation marks the ring broken (error()
// says which rule) instead of crashing or looping. Ordering rules: detail/access.hpp.
#pragma once

#include "vvu/ring/chain.hpp"
#include "vvu/ring/inflight.hpp"
#include "vvu/ring/detail/access.hpp"
#include "vvu/ring/detail/chain_builder.hpp"
#include "vvu/ring/error.hpp"
#include "vvu/ring/memory_policy.hpp"
#include "vvu/ring/notify.hpp"
#include "vvu/util/byte_io.hpp"
#include "vvu/util/endian.hpp"
#include "vvu/util/expected.hpp"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <vector>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>

namespace vvu::ring {

// ---- Layout (virtio 1.2 §2.7.5, §2.7.6, §2.7.8). Documentation of the byte layout; all
// accesses use these offsets with vvu::le / std::atomic_ref, never these structs directly.
struct split_desc {          // §2.7.5 struct virtq_desc
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t flags;
    std::uint16_t next;
};
static_assert(sizeof(split_desc) == 16);
static_assert(offsetof(split_desc, len) == 8 && offsetof(split_desc, flags) == 12 &&
              offsetof(split_desc, next) == 14);

struct split_used_elem {     // §2.7.8 struct virtq_used_elem
    std::uint32_t id;
    std::uint32_t len;
};
static_assert(sizeof(split_used_elem) == 8 && offsetof(split_used_elem, len) == 4);

// struct virtq_avail { le16 flags; le16 idx; le16 ring[N]; le16 used_event; }
// struct virtq_used  { le16 flags; le16 idx; virtq_used_elem ring[N]; le16 avail_event; }
struct split_layout {
    static constexpr std::size_t desc_align = 16, avail_align = 2, used_align = 4;
    static constexpr std::uint64_t desc_bytes(std::uint32_t n) { return 16ULL * n; }
    static constexpr std::uint64_t avail_bytes(std::uint32_t n) { return 6 + 2ULL * n; }
    static constexpr std::uint64_t used_bytes(std::uint32_t n) { return 6 + 8ULL * n; }
    static constexpr std::size_t flags_off = 0, idx_off = 2, ring_off = 4;
    static constexpr std::size_t used_event_off(std::uint32_t n) { return 4 + 2 * std::size_t{n}; }
    static constexpr std::size_t avail_event_off(std::uint32_t n) { return 4 + 8 * std::size_t{n}; }
};

inline constexpr std::uint16_t split_avail_f_no_interrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT
inline constexpr std::uint16_t split_used_f_no_notify = 1;      // VIRTQ_USED_F_NO_NOTIFY

struct split_config {
    std::uint32_t size = 0;        // power of two in [1, 32768]
    std::uint64_t desc_addr = 0;   // guest addresses (as the memory policy understands them)
    std::uint64_t avail_addr = 0;
    std::uint64_t used_addr = 0;
    ring_features features{};
    std::uint32_t max_chain_len = 0;   // buffer descriptors per chain; 0 = queue size (§2.7.5.3.1)
    // Dirty logging (a write_logging_policy with a log attached): also log the used ring's
    // writes (vhost-user SET_VRING_ADDR's VHOST_VRING_F_LOG), at used_addr.
    bool log_used = false;
};

// Device-side ring state (vhost-user SET/GET_VRING_BASE): the next available index to take.
// The used index lives in ring memory and is read from there at creation.
struct split_state {
    std::uint16_t next_avail = 0;
};

// Driver-owned area for indirect tables: `entries` descriptors (16 B each) per ring slot,
// slot i at addr + i * entries * 16; size * entries * 16 bytes in total.
struct indirect_area {
    std::uint64_t addr = 0;
    std::uint32_t entries = 0;
};

namespace detail {

// The driver's indirect-table area for a ring of `size` slots (nullptr when none is wanted).
template <memory_policy Mem>
inline vvu::expected<std::byte*, std::error_code> map_indirect(Mem& mem, const indirect_area& ind, std::uint32_t size) {
    if (ind.entries == 0) return static_cast<std::byte*>(nullptr);
    std::byte* p = mem.translate(ind.addr, 16ULL * ind.entries * size);
    if (p == nullptr) return vvu::unexpected(make_error_code(errc::ring_out_of_memory));
    return p;
}

struct split_rings {
    std::byte* desc = nullptr;
    std::byte* avail = nullptr;
    std::byte* used = nullptr;
};

template <memory_policy Mem>
inline vvu::expected<split_rings, std::error_code> map_split(Mem& mem, const split_config& c) {
    using L = split_layout;
    if (c.size == 0 || c.size > max_queue_size || (c.size & (c.size - 1)) != 0)
        return vvu::unexpected(make_error_code(errc::bad_queue_size));
    if (c.desc_addr % L::desc_align || c.avail_addr % L::avail_align || c.used_addr % L::used_align)
        return vvu::unexpected(make_error_code(errc::ring_misaligned));
    split_rings r{mem.translate(c.desc_addr, L::desc_bytes(c.size)),
                  mem.translate(c.avail_addr, L::avail_bytes(c.size)),
                  mem.translate(c.used_addr, L::used_bytes(c.size))};
    if (!r.desc || !r.avail || !r.used)
        return vvu::unexpected(make_error_code(errc::ring_out_of_memory));
    // Local alignment matters too: std::atomic_ref needs naturally aligned objects.
    if (!aligned(r.desc, 8) || !aligned(r.avail, 2) || !aligned(r.used, 4))
        return vvu::unexpected(make_error_code(errc::ring_misaligned));
    return r;
}

inline std::uint32_t chain_limit(std::uint32_t configured, std::uint32_t size) noexcept {
    return configured == 0 ? size : configured;
}

} // namespace detail

// ============================================================================ device side
template <memory_policy Mem>
class split_device {
public:
    static vvu::expected<split_device, std::error_code> create(Mem& mem, const split_config& cfg,
                                                               split_state st = {}) {
        auto r = detail::map_split(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        return split_device(mem, cfg, *r, st);
    }

    // A ring whose taking and completing is recorded in an inflight region (inflight.hpp).
    // Where an earlier back-end left chains in flight, they are taken again first, oldest
    // first, and the ring goes on after them: the next avail index is the used index plus the
    // chains in flight (what SET_VRING_BASE said is superseded by the region).
    static vvu::expected<split_device, std::error_code> create_tracked(Mem& mem, const split_config& cfg,
                                                                       split_inflight tracker) {
        auto r = detail::map_split(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        split_device d(mem, cfg, *r, {});
        auto pending = tracker.recover(d.used_idx_);
        if (!pending) return vvu::unexpected(pending.error());
        if (pending->size() > cfg.size) return vvu::unexpected(make_error_code(errc::inflight_region_corrupt));
        d.next_avail_ = d.avail_seen_ = static_cast<std::uint16_t>(d.used_idx_ + pending->size());
        d.resubmit_ = std::move(*pending);
        d.tracker_.emplace(tracker);
        return d;
    }

    // Take up to out.size() available chains (callers normally pass <= max_burst). Returns how
    // many were taken; 0 when none are available or the ring is broken. The chains' segment
    // views stay valid until the next pop / pop_burst.
    std::size_t pop_burst(std::span<chain> out) noexcept {
        std::size_t got = 0;
        std::uint32_t used_segs = 0;
        while (got < out.size() && !broken_) {
            // Chains an earlier back-end took and never completed come first (inflight.hpp).
            const bool resubmitting = resubmit_next_ < resubmit_.size();
            if (!resubmitting && next_avail_ == avail_seen_) {
                // ACQUIRE: ring entries and descriptors before idx are visible after this.
                avail_seen_ = detail::load_acquire16(avail_ + split_layout::idx_off);
                if (static_cast<std::uint16_t>(avail_seen_ - next_avail_) > size_) {
                    fail(errc::avail_index_too_far);
                    break;
                }
                if (next_avail_ == avail_seen_) break;
                prefetch_descriptors(std::min<std::size_t>(static_cast<std::uint16_t>(avail_seen_ - next_avail_),
                                                           out.size() - got));
            }
            const std::uint16_t head = resubmitting ? resubmit_[resubmit_next_] : le::load<std::uint16_t>(
                avail_ + split_layout::ring_off + 2 * std::size_t(next_avail_ & mask_));
            if (head >= size_) { fail(errc::head_out_of_range); break; }
            if (inflight_[head]) { fail(errc::head_in_use); break; }
            detail::chain_builder<Mem> b(*mem_, arena_.data() + used_segs,
                                         arena_.capacity() - used_segs, limit_, wlog_.recording());
            bool indirect = false;
            const auto st = walk(b, head, indirect);
            if (st == detail::build_status::arena_full) break;   // retried next call
            if (st == detail::build_status::error) { fail(b.error()); break; }
            b.finish(out[got], head, 1, indirect);
            used_segs += b.segments();
            wlog_.keep(head);
            inflight_[head] = 1;
            ++n_inflight_;
            if (resubmitting) {
                ++resubmit_next_; // recorded already, with its first counter
            } else {
                if (tracker_) tracker_->taken(head);
                ++next_avail_;
            }
            ++got;
        }
        return got;
    }
    bool pop(chain& c) noexcept { return pop_burst({&c, 1}) == 1; }

    // Return used chains: one used-ring entry each, then a single RELEASE store of used->idx
    // for the whole batch (so the driver sees the batch at once, and with VIRTIO_F_IN_ORDER a
    // batch costs one index update). Stops at an id that is not in flight (a caller bug; the
    // ring is not marked broken). Returns how many were pushed.
    std::size_t push_burst(std::span<const used_element> used) noexcept {
        if (broken_) return 0;
        std::size_t k = 0;
        for (const used_element& e : used) {
            if (e.id >= size_ || !inflight_[e.id]) break;
            std::byte* u = used_ + split_layout::ring_off + 8 * std::size_t(used_idx_ & mask_);
            le::store<std::uint32_t>(u, e.id);
            le::store<std::uint32_t>(u + 4, e.len);
            wlog_.written(e.id, e.len);
            if (tracker_) tracker_->completing(static_cast<std::uint16_t>(e.id));
            inflight_[e.id] = 0;
            --n_inflight_;
            ++used_idx_;
            ++k;
        }
        if (k != 0) detail::store_release16(used_ + split_layout::idx_off, used_idx_);
        if (k != 0) log_used_entries(static_cast<std::uint16_t>(used_idx_ - k), k);
        if (k != 0 && tracker_) tracker_->completed(used.first(k), used_idx_);
        return k;
    }
    bool push(std::uint16_t id, std::uint32_t written) noexcept {
        const used_element e{id, written};
        return push_burst({&e, 1}) == 1;
    }

    // After pushing: must the driver be interrupted (§2.7.7.2, §2.7.10)? Consumes the pushes
    // made since the previous call.
    bool needs_interrupt() noexcept {
        if (broken_) return false;
        detail::store_load_fence();   // our used->idx store before the load of used_event/flags
        bool r;
        if (features_.event_idx) {
            const std::uint16_t ev =
                detail::load_relaxed16(avail_ + split_layout::used_event_off(size_));
            r = need_event(ev, used_idx_, irq_old_) || (!irq_since_start_ && used_idx_ != irq_old_);
            irq_since_start_ = irq_since_start_ || used_idx_ != irq_old_;
        } else {
            r = used_idx_ != irq_old_ &&
                (detail::load_relaxed16(avail_ + split_layout::flags_off) &
                 split_avail_f_no_interrupt) == 0;
        }
        irq_old_ = used_idx_;
        return r;
    }

    // Ask for kicks again (avail_event = next index to take, or clear NO_NOTIFY), then
    // re-check: returns true when buffers arrived meanwhile (process them; no kick will come).
    bool enable_notifications() noexcept {
        if (features_.event_idx) {
            detail::store_relaxed16(used_ + split_layout::avail_event_off(size_), next_avail_);
            wlog_.ring(used_addr_ + split_layout::avail_event_off(size_), 2);
        } else {
            used_flags_ = static_cast<std::uint16_t>(used_flags_ & ~split_used_f_no_notify);
            detail::store_relaxed16(used_ + split_layout::flags_off, used_flags_);
            wlog_.ring(used_addr_ + split_layout::flags_off, 2);
        }
        detail::store_load_fence();   // our event/flags store before the load of avail->idx
        return has_available();
    }
    // Suppress kicks while polling. With EVENT_IDX nothing is written: avail_event stays at the
    // index given by the last enable_notifications, which the driver has passed already.
    void disable_notifications() noexcept {
        if (features_.event_idx) return;
        used_flags_ = static_cast<std::uint16_t>(used_flags_ | split_used_f_no_notify);
        detail::store_relaxed16(used_ + split_layout::flags_off, used_flags_);
        wlog_.ring(used_addr_ + split_layout::flags_off, 2);
    }
    bool has_available() noexcept {
        return !broken_ && detail::load_acquire16(avail_ + split_layout::idx_off) != next_avail_;
    }
    // The driver's avail->idx as it is now (recovery decisions at start; not for the data path).
    std::uint16_t driver_avail_index() const noexcept { return detail::load_acquire16(avail_ + split_layout::idx_off); }

    bool broken() const noexcept { return broken_; }
    std::error_code error() const noexcept { return broken_ ? make_error_code(err_) : std::error_code{}; }
    split_state state() const noexcept { return {next_avail_}; }
    std::uint16_t used_index() const noexcept { return used_idx_; }
    std::uint32_t size() const noexcept { return size_; }
    const ring_features& features() const noexcept { return features_; }

    // Chains an earlier back-end left in flight that pop_burst has yet to take again.
    std::size_t resubmitting() const noexcept { return resubmit_.size() - resubmit_next_; }

    // Inflight bookkeeping: heads taken by pop and not yet pushed.
    std::uint32_t inflight_count() const noexcept { return n_inflight_; }
    bool is_inflight(std::uint16_t head) const noexcept { return head < size_ && inflight_[head]; }
    template <class F>
    void for_each_inflight(F&& f) const {
        for (std::uint32_t i = 0; i < size_; ++i)
            if (inflight_[i]) f(static_cast<std::uint16_t>(i));
    }

private:
    split_device(Mem& mem, const split_config& c, const detail::split_rings& r, split_state st)
        : mem_(&mem), desc_(r.desc), avail_(r.avail), used_(r.used), size_(c.size),
          mask_(c.size - 1), features_(c.features), limit_(detail::chain_limit(c.max_chain_len, c.size)),
          next_avail_(st.next_avail), avail_seen_(st.next_avail),
          used_idx_(detail::load_relaxed16(r.used + split_layout::idx_off)), irq_old_(used_idx_),
          used_flags_(detail::load_relaxed16(r.used + split_layout::flags_off)),
          inflight_(new std::uint8_t[c.size]()), arena_(limit_ + 256), used_addr_(c.used_addr),
          wlog_(mem, c.size, limit_, c.log_used) {}

    void fail(errc e) noexcept {
        broken_ = true;
        err_ = e;
    }

    // The head descriptors of the next `count` available chains, asked for together: each is
    // a miss (the driver just wrote it), and walking them one by one would take the misses in
    // turn. The heads are only hints here; pop_burst checks each one it takes.
    void prefetch_descriptors(std::size_t count) const noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            const auto head = le::load<std::uint16_t>(
                avail_ + split_layout::ring_off + 2 * std::size_t((next_avail_ + i) & mask_));
            detail::prefetch_line(desc_ + 16 * std::size_t(head & mask_));
        }
    }

    // Dirty logging of a pushed batch: its `count` used elements from index `first` (one range,
    // or two where the ring wraps) and used->idx.
    void log_used_entries(std::uint16_t first, std::size_t count) noexcept {
        const std::size_t slot = first & mask_, run = std::min<std::size_t>(count, size_ - slot);
        wlog_.ring(used_addr_ + split_layout::ring_off + 8 * slot, 8 * run);
        if (run < count) wlog_.ring(used_addr_ + split_layout::ring_off, 8 * (count - run));
        wlog_.ring(used_addr_ + split_layout::idx_off, 2);
    }

    // Walk the chain at `head`: direct descriptors, optionally ending in one indirect table
    // (§2.7.5.3.2). Each descriptor is read once into locals. Loops are caught by counting
    // steps per table: more steps than the table has entries means a cycle.
    // Always inlined into pop_burst: once per chain, where the compiler's size limit would
    // otherwise make it a call.
    [[gnu::always_inline]] detail::build_status walk(detail::chain_builder<Mem>& b, std::uint16_t head, bool& indirect) noexcept {
        const std::byte* table = desc_;
        std::uint32_t n = size_, idx = head, steps = 0;
        for (;;) {
            if (idx >= n) return b.fail(errc::next_out_of_range);
            if (++steps > n) return b.fail(errc::chain_loops);
            const std::byte* d = table + 16 * std::size_t(idx);
            const auto addr = le::load<std::uint64_t>(d);
            const auto len = le::load<std::uint32_t>(d + 8);
            const auto flags = le::load<std::uint16_t>(d + 12);
            const auto next = le::load<std::uint16_t>(d + 14);
            if (flags & detail::desc_f_indirect) {
                if (indirect) return b.fail(errc::nested_indirect);
                if (!features_.indirect) return b.fail(errc::indirect_not_negotiated);
                if (flags & detail::desc_f_next) return b.fail(errc::indirect_with_next);
                if (len == 0 || len % 16 != 0) return b.fail(errc::bad_indirect_length);
                if (len / 16 > limit_) return b.fail(errc::indirect_too_long);
                const std::byte* t = mem_->translate(addr, len);
                if (t == nullptr) return b.fail(errc::indirect_out_of_memory);
                table = t;
                n = len / 16;
                idx = 0;
                steps = 0;
                indirect = true;
                continue;
            }
            const auto st = b.add(addr, len, (flags & detail::desc_f_write) != 0);
            if (st != detail::build_status::ok) return st;
            if ((flags & detail::desc_f_next) == 0) return detail::build_status::ok;
            idx = next;
        }
    }

    Mem* mem_;
    std::byte* desc_;
    std::byte* avail_;
    std::byte* used_;
    std::uint32_t size_;
    std::uint32_t mask_;
    ring_features features_;
    std::uint32_t limit_;
    std::uint16_t next_avail_;
    std::uint16_t avail_seen_;   // last avail->idx loaded
    std::uint16_t used_idx_;
    std::uint16_t irq_old_;      // used_idx_ at the last interrupt decision
    // Whether a push was decided on since this object took the ring. The first such decision
    // interrupts whatever used_event says: an interrupt decided before (by the ring's previous
    // owner: a stopped vring, the process before a hand-over or a crash, the migration source)
    // may never have reached the driver, which then waits at a used_event the ring has passed —
    // for good, as need_event only looks forward from irq_old_.
    bool irq_since_start_ = false;
    std::uint16_t used_flags_;
    std::unique_ptr<std::uint8_t[]> inflight_;
    std::uint32_t n_inflight_ = 0;
    detail::segment_arena arena_;
    std::uint64_t used_addr_;               // guest address of the used ring (dirty logging)
    detail::write_log<Mem> wlog_;
    errc err_{};
    bool broken_ = false;
    std::optional<split_inflight> tracker_;  // inflight tracking, when the session has a region
    std::vector<std::uint16_t> resubmit_;    // heads an earlier back-end left in flight, oldest first
    std::size_t resubmit_next_ = 0;
};

// ============================================================================ driver side
template <memory_policy Mem>
class split_driver {
public:
    // Zeroes the ring areas (the driver owns their initialisation, §3.1.1).
    static vvu::expected<split_driver, std::error_code> create(Mem& mem, const split_config& cfg,
                                                               indirect_area ind = {}) {
        auto r = detail::map_split(mem, cfg);
        if (!r) return vvu::unexpected(r.error());
        auto ind_p = detail::map_indirect(mem, ind, cfg.size);
        if (!ind_p) return vvu::unexpected(ind_p.error());
        using L = split_layout;
        std::memset(r->desc, 0, L::desc_bytes(cfg.size));
        std::memset(r->avail, 0, L::avail_bytes(cfg.size));
        std::memset(r->used, 0, L::used_bytes(cfg.size));
        return split_driver(cfg, *r, ind, *ind_p);
    }

    // Live update of a driver (the VVU driver handed to a new process): save() writes the
    // driver's private state — indices, the free list, each head's token and length — and
    // restore() rebuilds a driver over the same ring memory (not cleared: the device is using
    // it) from those bytes. restore() trusts nothing: every index must lie in the ring, the
    // free list and the heads in flight must account for each descriptor exactly once.
    void save(byte_writer& w) const {
        w.put<std::uint32_t>(size_);
        for (std::uint16_t v : {avail_idx_, kick_old_, last_used_, used_seen_, avail_flags_, free_head_, free_tail_,
                                fifo_head_, pending_id_})
            w.put<std::uint16_t>(v);
        w.put<std::uint32_t>(num_free_);
        w.put_bool(pending_);
        w.put<std::uint32_t>(pending_len_);
        for (std::uint32_t i = 0; i < size_; ++i) {
            w.put<std::uint16_t>(next_free_[i]);
            w.put<std::uint64_t>(token_[i]);
            w.put<std::uint32_t>(wtotal_[i]);
            w.put<std::uint16_t>(ndesc_[i]);
            w.put<std::uint8_t>(inflight_[i]);
            w.put<std::uint16_t>(fifo_[i]);
            w.put<std::uint16_t>(tail_of_[i]);
        }
    }
    static vvu::expected<split_driver, std::error_code> restore(Mem& mem, const split_config& cfg, indirect_area ind,
                                                                byte_reader& r) {
        auto rings = detail::map_split(mem, cfg);
        if (!rings) return vvu::unexpected(rings.error());
        auto ind_p = detail::map_indirect(mem, ind, cfg.size);
        if (!ind_p) return vvu::unexpected(ind_p.error());
        const auto bad = [] { return vvu::unexpected(make_error_code(errc::bad_saved_state)); };
        if (r.get<std::uint32_t>() != cfg.size) return bad();
        split_driver d(cfg, *rings, ind, *ind_p);
        for (std::uint16_t* v : {&d.avail_idx_, &d.kick_old_, &d.last_used_, &d.used_seen_, &d.avail_flags_, &d.free_head_,
                                 &d.free_tail_, &d.fifo_head_, &d.pending_id_})
            *v = r.get<std::uint16_t>();
        d.num_free_ = r.get<std::uint32_t>();
        d.pending_ = r.get_bool();
        d.pending_len_ = r.get<std::uint32_t>();
        std::uint32_t held = 0;
        for (std::uint32_t i = 0; i < cfg.size && r.ok(); ++i) {
            d.next_free_[i] = r.get<std::uint16_t>();
            d.token_[i] = r.get<std::uint64_t>();
            d.wtotal_[i] = r.get<std::uint32_t>();
            d.ndesc_[i] = r.get<std::uint16_t>();
            d.inflight_[i] = r.get<std::uint8_t>();
            d.fifo_[i] = r.get<std::uint16_t>();
            d.tail_of_[i] = r.get<std::uint16_t>();
            if (d.next_free_[i] >= cfg.size || d.fifo_[i] >= cfg.size || d.tail_of_[i] >= cfg.size || d.inflight_[i] > 1)
                return bad();
            if (d.inflight_[i]) {
                if (d.ndesc_[i] == 0 || d.ndesc_[i] > cfg.size) return bad();
                ++d.n_inflight_;
                held += d.ndesc_[i];
            }
        }
        const auto mask = cfg.size - 1;
        if (!r.ok() || d.num_free_ + held != cfg.size || d.free_head_ > mask || d.free_tail_ > mask || d.fifo_head_ > mask ||
            d.pending_id_ > mask || (d.pending_ && !d.inflight_[d.pending_id_]) ||
            static_cast<std::uint16_t>(d.avail_idx_ - d.last_used_) != d.n_inflight_)
            return bad();
        return d;
    }

    // Post buffers; one RELEASE store of avail->idx publishes the whole burst. Stops at the
    // first request that does not fit (free descriptors, indirect limits). Returns how many.
    std::size_t add_burst(std::span<const request> reqs) noexcept {
        std::size_t k = 0;
        for (const request& r : reqs) {
            if (!add_one(r)) break;
            ++k;
        }
        if (k != 0) detail::store_release16(avail_ + split_layout::idx_off, avail_idx_);
        return k;
    }
    bool add(std::span<const buffer> readable, std::span<const buffer> writable,
             std::uint64_t token, bool indirect = false) noexcept {
        const request r{readable, writable, token, indirect};
        return add_burst({&r, 1}) == 1;
    }

    // After adding: must the device be kicked (§2.7.13.4)? Consumes the adds since last call.
    bool needs_kick() noexcept {
        detail::store_load_fence();   // our avail->idx store before the load of avail_event/flags
        bool r;
        if (features_.event_idx) {
            const std::uint16_t ev =
                detail::load_relaxed16(used_ + split_layout::avail_event_off(size_));
            r = need_event(ev, avail_idx_, kick_old_);
        } else {
            r = avail_idx_ != kick_old_ &&
                (detail::load_relaxed16(used_ + split_layout::flags_off) & split_used_f_no_notify) == 0;
        }
        kick_old_ = avail_idx_;
        return r;
    }

    // Reap used buffers (ACQUIRE on used->idx). With VIRTIO_F_IN_ORDER a used element also
    // completes every older buffer (reported with their full writable length, §2.7.9).
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
            if (last_used_ == used_seen_) {
                used_seen_ = detail::load_acquire16(used_ + split_layout::idx_off);
                if (static_cast<std::uint16_t>(used_seen_ - last_used_) > size_) {
                    fail(errc::used_index_too_far);
                    break;
                }
                if (last_used_ == used_seen_) break;
            }
            const std::byte* u = used_ + split_layout::ring_off + 8 * std::size_t(last_used_ & mask_);
            const auto id = le::load<std::uint32_t>(u);
            const auto len = le::load<std::uint32_t>(u + 4);
            ++last_used_;
            if (id >= size_ || !inflight_[id]) { fail(errc::bad_used_id); break; }
            if (features_.in_order && fifo_[fifo_head_] != id) {
                pending_ = true;
                pending_id_ = static_cast<std::uint16_t>(id);
                pending_len_ = len;
                continue;
            }
            out[got++] = complete(static_cast<std::uint16_t>(id), len);
        }
        return got;
    }
    bool reap(used_buffer& u) noexcept { return reap_burst({&u, 1}) == 1; }

    // Ask for interrupts again (used_event = next used index, or clear NO_INTERRUPT), then
    // re-check: true when used buffers arrived meanwhile (reap them; no interrupt will come).
    bool enable_interrupts() noexcept {
        if (features_.event_idx) {
            detail::store_relaxed16(avail_ + split_layout::used_event_off(size_), last_used_);
        } else {
            avail_flags_ = static_cast<std::uint16_t>(avail_flags_ & ~split_avail_f_no_interrupt);
            detail::store_relaxed16(avail_ + split_layout::flags_off, avail_flags_);
        }
        detail::store_load_fence();   // our event/flags store before the load of used->idx
        return pending_ || detail::load_acquire16(used_ + split_layout::idx_off) != last_used_;
    }
    void disable_interrupts() noexcept {
        if (features_.event_idx) return;
        avail_flags_ = static_cast<std::uint16_t>(avail_flags_ | split_avail_f_no_interrupt);
        detail::store_relaxed16(avail_ + split_layout::flags_off, avail_flags_);
    }

    std::uint32_t free_descriptors() const noexcept { return num_free_; }
    std::uint32_t outstanding() const noexcept { return n_inflight_; }
    std::uint16_t avail_index() const noexcept { return avail_idx_; }
    std::uint32_t size() const noexcept { return size_; }
    bool broken() const noexcept { return broken_; }
    std::error_code error() const noexcept { return broken_ ? make_error_code(err_) : std::error_code{}; }

private:
    split_driver(const split_config& c, const detail::split_rings& r, indirect_area ind, std::byte* ind_p)
        : desc_(r.desc), avail_(r.avail), used_(r.used), size_(c.size), mask_(c.size - 1),
          features_(c.features), ind_(ind_p), ind_addr_(ind.addr), ind_entries_(ind.entries),
          num_free_(c.size), next_free_(new std::uint16_t[c.size]),
          token_(new std::uint64_t[c.size]()), wtotal_(new std::uint32_t[c.size]()),
          ndesc_(new std::uint16_t[c.size]()), inflight_(new std::uint8_t[c.size]()),
          fifo_(new std::uint16_t[c.size]()) {
        for (std::uint32_t i = 0; i < size_; ++i)
            next_free_[i] = static_cast<std::uint16_t>((i + 1) & mask_);
        free_tail_ = static_cast<std::uint16_t>(size_ - 1);
    }

    void fail(errc e) noexcept {
        broken_ = true;
        err_ = e;
    }

    // Descriptor allocation: a free list kept in local memory (never trusting `next` fields
    // the device could rewrite). With IN_ORDER, descriptors are used in table order
    // (§2.7.5.3.1 requires next = x + 1), which the same list gives because buffers come
    // back in order and are returned to the list's tail.
    bool add_one(const request& r) noexcept {
        if (broken_) return false;
        const std::size_t n = r.readable.size() + r.writable.size();
        if (n == 0) return false;
        const bool ind = r.indirect;
        if (ind && (!features_.indirect || ind_ == nullptr || n > ind_entries_)) return false;
        const std::uint32_t need = ind ? 1 : static_cast<std::uint32_t>(n);
        if (need > num_free_) return false;

        std::uint64_t total = 0, wtotal = 0;
        for (const buffer& b : r.readable) total += b.len;
        for (const buffer& b : r.writable) wtotal += b.len;
        if (total + wtotal > 0xffff'ffffULL) return false;   // the device would reject it

        const std::uint16_t head = free_head_;
        if (ind) {
            std::byte* t = ind_ + 16 * std::size_t(head) * ind_entries_;
            for (std::size_t i = 0; i < n; ++i) {
                const bool w = i >= r.readable.size();
                const buffer& b = w ? r.writable[i - r.readable.size()] : r.readable[i];
                write_desc(t + 16 * i, b.addr, b.len,
                           static_cast<std::uint16_t>((w ? detail::desc_f_write : 0) |
                                                      (i + 1 < n ? detail::desc_f_next : 0)),
                           static_cast<std::uint16_t>(i + 1 < n ? i + 1 : 0));
            }
            write_desc(desc_ + 16 * std::size_t(head),
                       ind_addr_ + 16ULL * head * ind_entries_, static_cast<std::uint32_t>(16 * n),
                       detail::desc_f_indirect, 0);
            free_head_ = next_free_[head];
        } else {
            std::uint16_t cur = head;
            for (std::size_t i = 0; i < n; ++i) {
                const bool w = i >= r.readable.size();
                const buffer& b = w ? r.writable[i - r.readable.size()] : r.readable[i];
                const bool more = i + 1 < n;
                write_desc(desc_ + 16 * std::size_t(cur), b.addr, b.len,
                           static_cast<std::uint16_t>((w ? detail::desc_f_write : 0) |
                                                      (more ? detail::desc_f_next : 0)),
                           more ? next_free_[cur] : std::uint16_t{0});
                if (more) cur = next_free_[cur];
            }
            free_head_ = next_free_[cur];
            tail_of_[head] = cur;
        }
        num_free_ -= need;
        ndesc_[head] = static_cast<std::uint16_t>(need);
        if (ind) tail_of_[head] = head;
        token_[head] = r.token;
        wtotal_[head] = static_cast<std::uint32_t>(wtotal);
        inflight_[head] = 1;
        ++n_inflight_;
        if (features_.in_order)
            fifo_[(fifo_head_ + n_inflight_ - 1) & mask_] = head;
        le::store<std::uint16_t>(avail_ + split_layout::ring_off + 2 * std::size_t(avail_idx_ & mask_), head);
        ++avail_idx_;
        return true;
    }

    static void write_desc(std::byte* d, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                           std::uint16_t next) noexcept {
        le::store<std::uint64_t>(d, addr);
        le::store<std::uint32_t>(d + 8, len);
        le::store<std::uint16_t>(d + 12, flags);
        le::store<std::uint16_t>(d + 14, next);
    }

    used_buffer complete(std::uint16_t head, std::uint32_t len) noexcept {
        const used_buffer u{token_[head], len < wtotal_[head] ? len : wtotal_[head]};
        // Return the chain to the tail of the free list (keeps table order for IN_ORDER).
        const std::uint16_t tail = tail_of_[head];
        if (num_free_ == 0) {
            free_head_ = head;
        } else {
            next_free_[free_tail_] = head;
        }
        free_tail_ = tail;
        num_free_ += ndesc_[head];
        inflight_[head] = 0;
        --n_inflight_;
        if (features_.in_order) fifo_head_ = static_cast<std::uint16_t>((fifo_head_ + 1) & mask_);
        return u;
    }

    std::byte* desc_;
    std::byte* avail_;
    std::byte* used_;
    std::uint32_t size_;
    std::uint32_t mask_;
    ring_features features_;
    std::byte* ind_;
    std::uint64_t ind_addr_;
    std::uint32_t ind_entries_;
    std::uint16_t avail_idx_ = 0;
    std::uint16_t kick_old_ = 0;
    std::uint16_t last_used_ = 0;
    std::uint16_t used_seen_ = 0;
    std::uint16_t avail_flags_ = 0;
    std::uint32_t num_free_;
    std::uint16_t free_head_ = 0;
    std::uint16_t free_tail_ = 0;
    std::unique_ptr<std::uint16_t[]> next_free_;
    std::unique_ptr<std::uint64_t[]> token_;
    std::unique_ptr<std::uint32_t[]> wtotal_;
    std::unique_ptr<std::uint16_t[]> ndesc_;
    std::unique_ptr<std::uint8_t[]> inflight_;
    std::unique_ptr<std::uint16_t[]> fifo_;
    std::unique_ptr<std::uint16_t[]> tail_of_ = std::unique_ptr<std::uint16_t[]>(new std::uint16_t[size_]());
    std::uint32_t n_inflight_ = 0;
    std::uint16_t fifo_head_ = 0;
    bool pending_ = false;
    std::uint16_t pending_id_ = 0;
    std::uint32_t pending_len_ = 0;
    errc err_{};
    bool broken_ = false;
};

} // namespace vvu::ring
