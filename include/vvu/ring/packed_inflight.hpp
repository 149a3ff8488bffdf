// Inflight I/O tracking of a packed virtqueue (QEMU docs/interop/vhost-user.rst, "Inflight I/O
// tracking", QueueRegionPacked / DescStatePacked): the packed counterpart of split_inflight
// (inflight.hpp). Same purpose — a back-end restarted after a crash takes again exactly the
// chains that were in flight, oldest first — but a packed ring needs more: the device writes
// used elements over the descriptor slots, so once a chain completed out of order the slots of
// the chains still in flight may hold someone else's used element. The region therefore keeps
// a copy of every descriptor in flight (addr, len, flags, id), in entries linked into lists:
// one per chain in flight (head entry: inflight, num, last, counter) and one free list.
//
// Taking a chain: its descriptors are copied into entries taken from the free list, the head
// entry is marked in flight, then free_head and old_free_head move past them (the commit).
// Completing a batch: each chain's entries go back to the front of the free list, free_head
// and used_idx/used_wrap_counter are set to what they become, the ring's used descriptor is
// published, the head entries are cleared, then old_free_head/old_used_idx/
// old_used_wrap_counter are set (the commit). A back-end that dies anywhere leaves the "old"
// fields at the last commit; recover() decides from the ring whether the batch in progress
// was published (commit it) or not (roll it back) — the spec's "When reconnecting".
//
// The device side keeps its own copy of the list links and never reads the region while it
// runs: what the front-end (which owns the file and may write anything) scribbles there only
// matters to recover(), which checks every index and every list before it trusts them.
#pragma once

#include <vvu/ring/chain.hpp>
#include <vvu/ring/error.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/expected.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

namespace vvu::ring {

// QueueRegionPacked: u64 features, u16 version, u16 desc_num, u16 free_head, u16 old_free_head,
// u16 used_idx, u16 old_used_idx, u8 used_wrap_counter, u8 old_used_wrap_counter, u8 padding[7]
// (32 bytes with the alignment of the entries), then desc_num DescStatePacked entries: u8
// inflight, u8 padding, u16 next, u16 last, u16 num, u64 counter, u16 id, u16 flags, u32 len,
// u64 addr (32 bytes). A free list ends at an index >= desc_num (desc_num itself when new).
struct packed_inflight_layout {
    static constexpr std::size_t header_size = 32;
    static constexpr std::size_t entry_size = 32;
    static constexpr std::size_t version_off = 8, desc_num_off = 10, free_head_off = 12, old_free_head_off = 14,
                                 used_idx_off = 16, old_used_idx_off = 18, used_wrap_off = 20, old_used_wrap_off = 21;
    static constexpr std::size_t entry_inflight_off = 0, entry_next_off = 2, entry_last_off = 4, entry_num_off = 6,
                                 entry_counter_off = 8, entry_id_off = 16, entry_flags_off = 18, entry_len_off = 20,
                                 entry_addr_off = 24;
    static constexpr std::uint16_t version = 1;
    static constexpr std::size_t bytes(std::uint32_t queue_size) noexcept { return header_size + entry_size * queue_size; }
};

// A descriptor as the region kept it.
struct packed_inflight_desc {
    std::uint64_t addr = 0;
    std::uint32_t len = 0;
    std::uint16_t flags = 0;
    std::uint16_t id = 0;
};

// A chain found in flight: its head entry and its descriptors, copied out of the region (which
// may change under us) so that the ring checks them once, as they are resubmitted.
struct packed_inflight_chain {
    std::uint16_t head = 0;   // head entry in the region
    std::uint16_t id = 0;     // buffer id (of the list's last descriptor, as in the ring)
    std::vector<packed_inflight_desc> descs;
};

// What recover() found: where the used side stands, and the chains in flight, oldest first.
struct packed_inflight_recovery {
    std::uint16_t used_idx = 0;
    bool used_wrap = true;
    std::uint32_t inflight_descs = 0; // ring descriptors the chains in flight occupy
    std::vector<packed_inflight_chain> chains;
};

class packed_inflight {
public:
    // Attaches to one queue's region of `bytes` for a ring of `size` descriptors. A region of
    // version 0 is new: it is initialised (every entry free, used side at `used_idx`/`used_wrap`,
    // where the ring starts). A region of version 1 must be for a ring of this size; recover()
    // then says where the ring stands.
    static vvu::expected<packed_inflight, std::error_code> attach(std::byte* region, std::size_t bytes, std::uint32_t size,
                                                                  std::uint16_t used_idx, bool used_wrap) {
        using L = packed_inflight_layout;
        if (region == nullptr || size == 0 || size > 32768 || bytes < L::bytes(size))
            return vvu::unexpected(make_error_code(errc::inflight_region_too_small));
        packed_inflight t(region, size);
        const auto version = le::load<std::uint16_t>(region + L::version_off);
        if (version == 0) {
            if (used_idx >= size) return vvu::unexpected(make_error_code(errc::bad_queue_size));
            std::fill(region, region + L::bytes(size), std::byte{0});
            le::store<std::uint16_t>(region + L::desc_num_off, static_cast<std::uint16_t>(size));
            for (std::uint32_t i = 0; i < size; ++i) {
                le::store<std::uint16_t>(t.entry(static_cast<std::uint16_t>(i)) + L::entry_next_off,
                                         static_cast<std::uint16_t>(i + 1));
                t.next_[i] = static_cast<std::uint16_t>(i + 1);
            }
            le::store<std::uint16_t>(region + L::used_idx_off, used_idx);
            le::store<std::uint16_t>(region + L::old_used_idx_off, used_idx);
            store8(region + L::used_wrap_off, used_wrap ? 1 : 0);
            store8(region + L::old_used_wrap_off, used_wrap ? 1 : 0);
            std::atomic_signal_fence(std::memory_order_seq_cst);
            le::store<std::uint16_t>(region + L::version_off, L::version); // last: the region is valid
            t.fresh_ = true;
            return t;
        }
        if (version != L::version || le::load<std::uint16_t>(region + L::desc_num_off) != static_cast<std::uint16_t>(size))
            return vvu::unexpected(make_error_code(errc::inflight_region_mismatch));
        return t;
    }

    // After a restart: finishes or rolls back the batch a crash interrupted, frees the entries
    // of chains whose taking was not committed, and returns the chains in flight, oldest first.
    // `published(idx, wrap)` tells whether the ring's descriptor at idx is no longer the
    // available one of lap `wrap` — i.e. the device published a used element there (the
    // driver may even have reaped it and made the slot available again, in the next lap).
    // Every value read is checked: an error (inflight_region_corrupt) on indices outside the
    // ring, lists that loop, share entries or leave entries unaccounted for, flags > 1,
    // chains whose entries disagree (num, last, NEXT flags), two chains with one buffer id.
    template <class Published>
    vvu::expected<packed_inflight_recovery, std::error_code> recover(Published&& published) {
        using L = packed_inflight_layout;
        const auto corrupt = [] { return vvu::unexpected(make_error_code(errc::inflight_region_corrupt)); };
        std::uint16_t free_head = le::load<std::uint16_t>(region_ + L::free_head_off);
        std::uint16_t old_free_head = le::load<std::uint16_t>(region_ + L::old_free_head_off);
        std::uint16_t used_idx = le::load<std::uint16_t>(region_ + L::used_idx_off);
        std::uint16_t old_used_idx = le::load<std::uint16_t>(region_ + L::old_used_idx_off);
        const auto used_wrap8 = static_cast<std::uint8_t>(region_[L::used_wrap_off]);
        const auto old_used_wrap8 = static_cast<std::uint8_t>(region_[L::old_used_wrap_off]);
        if (free_head > size_ || old_free_head > size_ || used_idx >= size_ || old_used_idx >= size_ || used_wrap8 > 1 ||
            old_used_wrap8 > 1)
            return corrupt();
        bool used_wrap = used_wrap8 != 0, old_used_wrap = old_used_wrap8 != 0;
        // A batch in progress: published (commit) or not (roll back).
        if ((used_idx != old_used_idx || used_wrap != old_used_wrap) && published(old_used_idx, old_used_wrap)) {
            old_free_head = free_head;
            old_used_idx = used_idx;
            old_used_wrap = used_wrap;
        }
        // Roll back whatever the last commit does not cover (a batch not published, a burst of
        // takes not committed): the region now agrees with itself.
        le::store<std::uint16_t>(region_ + L::free_head_off, old_free_head);
        le::store<std::uint16_t>(region_ + L::used_idx_off, old_used_idx);
        store8(region_ + L::used_wrap_off, old_used_wrap ? 1 : 0);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        le::store<std::uint16_t>(region_ + L::old_free_head_off, old_free_head);
        le::store<std::uint16_t>(region_ + L::old_used_idx_off, old_used_idx);
        store8(region_ + L::old_used_wrap_off, old_used_wrap ? 1 : 0);

        // Each entry belongs to the free list or to exactly one chain in flight.
        enum : std::uint8_t { unseen, in_free_list, in_chain };
        std::vector<std::uint8_t> owner(size_, unseen);
        std::uint32_t free_count = 0;
        for (std::uint16_t i = old_free_head; i < size_; i = le::load<std::uint16_t>(entry(i) + L::entry_next_off)) {
            if (owner[i] != unseen) return corrupt(); // the list loops
            owner[i] = in_free_list;
            ++free_count;
            // A head whose taking was never committed, or one completed in a published batch.
            store8(entry(i) + L::entry_inflight_off, 0);
            next_[i] = le::load<std::uint16_t>(entry(i) + L::entry_next_off);
        }
        free_ = old_free_head;

        packed_inflight_recovery out;
        out.used_idx = old_used_idx;
        out.used_wrap = old_used_wrap;
        struct found {
            std::uint64_t counter;
            std::uint16_t head;
        };
        std::vector<found> heads;
        counter_ = 0;
        for (std::uint32_t i = 0; i < size_; ++i) {
            const std::byte* e = entry(static_cast<std::uint16_t>(i));
            const auto flag = static_cast<std::uint8_t>(e[L::entry_inflight_off]);
            if (flag > 1) return corrupt();
            const auto c = le::load<std::uint64_t>(e + L::entry_counter_off);
            if (flag == 1 && owner[i] != in_free_list) heads.push_back({c, static_cast<std::uint16_t>(i)});
            if (flag == 1) counter_ = std::max(counter_, c + 1);
        }
        std::sort(heads.begin(), heads.end(),
                  [](const found& a, const found& b) { return a.counter != b.counter ? a.counter < b.counter : a.head < b.head; });
        std::vector<std::uint8_t> id_seen(size_, 0);
        std::uint32_t chain_entries = 0;
        for (const found& h : heads) {
            const std::byte* he = entry(h.head);
            const auto num = le::load<std::uint16_t>(he + L::entry_num_off);
            const auto last = le::load<std::uint16_t>(he + L::entry_last_off);
            if (num == 0 || num > size_ - chain_entries) return corrupt();
            packed_inflight_chain c;
            c.head = h.head;
            c.descs.reserve(num);
            std::uint16_t i = h.head;
            for (std::uint16_t k = 0;; ++k) {
                if (i >= size_ || owner[i] != unseen) return corrupt(); // leaves the ring, or shared
                owner[i] = in_chain;
                const std::byte* e = entry(i);
                packed_inflight_desc d;
                d.addr = le::load<std::uint64_t>(e + L::entry_addr_off);
                d.len = le::load<std::uint32_t>(e + L::entry_len_off);
                d.flags = le::load<std::uint16_t>(e + L::entry_flags_off);
                d.id = le::load<std::uint16_t>(e + L::entry_id_off);
                c.descs.push_back(d);
                next_[i] = le::load<std::uint16_t>(e + L::entry_next_off);
                if (k + 1u == num) break;
                i = next_[i];
            }
            if (i != last) return corrupt();
            c.id = c.descs.back().id;
            if (c.id >= size_ || id_seen[c.id]) return corrupt();
            id_seen[c.id] = 1;
            chain_entries += num;
            last_[h.head] = last;
            entry_of_[c.id] = h.head;
            out.chains.push_back(std::move(c));
        }
        // Every entry accounted for: a region a back-end wrote has no other kind.
        if (free_count + chain_entries != size_) return corrupt();
        out.inflight_descs = chain_entries;
        return out;
    }

    // ---- Taking (packed_device::pop_burst). The descriptors of one chain go into the entries
    // from the free list's head on: begin_chain(), then record() each, then taken(); commit()
    // once for the burst. A chain abandoned before taken() (the ring breaks, or the burst's
    // segment room ran out) leaves nothing: its entries are still free.
    [[nodiscard]] std::uint16_t begin_chain() const noexcept { return free_; }
    // Copies one descriptor into the entry at `cursor`, which moves on; false when no entry is
    // free (more descriptors in flight than the ring holds: the driver broke the ring).
    bool record(std::uint16_t& cursor, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                std::uint16_t id) noexcept {
        using L = packed_inflight_layout;
        if (cursor >= size_) return false;
        std::byte* e = entry(cursor);
        le::store<std::uint64_t>(e + L::entry_addr_off, addr);
        le::store<std::uint32_t>(e + L::entry_len_off, len);
        le::store<std::uint16_t>(e + L::entry_flags_off, flags);
        le::store<std::uint16_t>(e + L::entry_id_off, id);
        last_cursor_ = cursor;
        cursor = next_[cursor];
        return true;
    }
    // The chain recorded since begin_chain() (ending before `cursor`) is in flight with buffer id
    // `id` and `num` ring descriptors.
    void taken(std::uint16_t cursor, std::uint16_t id, std::uint16_t num) noexcept {
        using L = packed_inflight_layout;
        const std::uint16_t head = free_;
        std::byte* e = entry(head);
        le::store<std::uint16_t>(e + L::entry_num_off, num);
        le::store<std::uint16_t>(e + L::entry_last_off, last_cursor_);
        le::store<std::uint64_t>(e + L::entry_counter_off, counter_++);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        store8(e + L::entry_inflight_off, 1);
        last_[head] = last_cursor_;
        entry_of_[id] = head;
        free_ = cursor;
    }
    // After a burst of taken(): the free list starts after them (free_head, then old_free_head:
    // a crash between the two is rolled back and the chains are read from the ring again).
    void commit_taken() noexcept {
        using L = packed_inflight_layout;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        le::store<std::uint16_t>(region_ + L::free_head_off, free_);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        le::store<std::uint16_t>(region_ + L::old_free_head_off, free_);
    }

    // ---- Completing (packed_device::push_burst). completing() for each buffer of the batch,
    // publishing() with the used side it moves to, the ring's RELEASE store, completed().
    void completing(std::uint16_t id) noexcept {
        using L = packed_inflight_layout;
        const std::uint16_t head = entry_of_[id];
        const std::uint16_t last = last_[head];
        le::store<std::uint16_t>(entry(last) + L::entry_next_off, free_);
        next_[last] = free_;
        free_ = head;
    }
    void publishing(std::uint16_t used_idx, bool used_wrap) noexcept {
        using L = packed_inflight_layout;
        le::store<std::uint16_t>(region_ + L::free_head_off, free_);
        le::store<std::uint16_t>(region_ + L::used_idx_off, used_idx);
        store8(region_ + L::used_wrap_off, used_wrap ? 1 : 0);
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }
    void completed(std::span<const used_element> batch, std::uint16_t used_idx, bool used_wrap) noexcept {
        using L = packed_inflight_layout;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        for (const auto& u : batch) store8(entry(entry_of_[u.id]) + L::entry_inflight_off, 0);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        le::store<std::uint16_t>(region_ + L::old_free_head_off, free_);
        le::store<std::uint16_t>(region_ + L::old_used_idx_off, used_idx);
        store8(region_ + L::old_used_wrap_off, used_wrap ? 1 : 0);
    }

    // The region was new when attached (no earlier back-end used it).
    [[nodiscard]] bool fresh() const noexcept { return fresh_; }
    [[nodiscard]] std::uint32_t size() const noexcept { return size_; }

private:
    packed_inflight(std::byte* region, std::uint32_t size)
        : region_(region), size_(size), next_(new std::uint16_t[size]()), last_(new std::uint16_t[size]()),
          entry_of_(new std::uint16_t[size]()), free_(0) {}
    std::byte* entry(std::uint16_t i) const noexcept {
        return region_ + packed_inflight_layout::header_size + packed_inflight_layout::entry_size * std::size_t{i};
    }
    static void store8(std::byte* p, std::uint8_t v) noexcept { *p = static_cast<std::byte>(v); }

    std::byte* region_;
    std::uint32_t size_;
    // The device side's own copy of the list structure (the region's is only written, and read
    // by recover()): next_ per entry, last_ per head entry, entry_of_ per buffer id.
    std::unique_ptr<std::uint16_t[]> next_;
    std::unique_ptr<std::uint16_t[]> last_;
    std::unique_ptr<std::uint16_t[]> entry_of_;
    std::uint16_t free_;
    std::uint16_t last_cursor_ = 0;
    std::uint64_t counter_ = 0;
    bool fresh_ = false;
};

} // namespace vvu::ring
