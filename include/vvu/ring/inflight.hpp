// Inflight I/O tracking of a split virtqueue (QEMU docs/interop/vhost-user.rst, "Inflight I/O
// tracking", QueueRegionSplit / DescStateSplit; packed rings: packed_inflight.hpp): a region of shared memory, outside the ring,
// where the device side records which chains it has taken and not yet completed, so that a
// back-end restarted after a crash resubmits exactly those — none lost, none completed twice —
// in the order it first took them, even when it completed chains out of order.
//
// The region lives in a file the front-end keeps across back-end restarts
// (VHOST_USER_GET_INFLIGHT_FD / SET_INFLIGHT_FD); the protocol layer maps it and hands a
// split_inflight a view of one queue's part. The front-end never reads it, but it may write
// anything there: recover() checks every index it follows.
//
// Crash consistency: the updates are ordered (compiler and CPU: a process killed between two
// instructions leaves the earlier stores in memory) so that at any instant either the used
// ring or the region tells the truth, and recover() reconciles the two.
#pragma once

#include <vvu/ring/chain.hpp>
#include <vvu/ring/error.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/expected.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

namespace vvu::ring {

// QueueRegionSplit: u64 features, u16 version, u16 desc_num, u16 last_batch_head, u16 used_idx,
// then desc_num DescStateSplit entries: u8 inflight, u8 padding[5], u16 next, u64 counter.
struct split_inflight_layout {
    static constexpr std::size_t header_size = 16;
    static constexpr std::size_t entry_size = 16;
    static constexpr std::size_t version_off = 8, desc_num_off = 10, last_batch_head_off = 12, used_idx_off = 14;
    static constexpr std::size_t entry_inflight_off = 0, entry_next_off = 6, entry_counter_off = 8;
    static constexpr std::uint16_t version = 1;
    static constexpr std::size_t bytes(std::uint32_t queue_size) noexcept { return header_size + entry_size * queue_size; }
};

class split_inflight {
public:
    // Attaches to one queue's region of `bytes` for a ring of `size` descriptors. A region of
    // version 0 is new: it is initialised, with `used_idx` the ring's used index. A region of
    // version 1 must be for a ring of this size.
    static vvu::expected<split_inflight, std::error_code> attach(std::byte* region, std::size_t bytes, std::uint32_t size,
                                                                 std::uint16_t used_idx) noexcept {
        using L = split_inflight_layout;
        if (region == nullptr || size == 0 || size > 32768 || bytes < L::bytes(size))
            return vvu::unexpected(make_error_code(errc::inflight_region_too_small));
        split_inflight t(region, size);
        const auto version = le::load<std::uint16_t>(region + L::version_off);
        if (version == 0) {
            std::fill(region, region + L::bytes(size), std::byte{0});
            le::store<std::uint16_t>(region + L::desc_num_off, static_cast<std::uint16_t>(size));
            le::store<std::uint16_t>(region + L::used_idx_off, used_idx);
            std::atomic_signal_fence(std::memory_order_seq_cst);
            le::store<std::uint16_t>(region + L::version_off, L::version); // last: the region is valid
            t.fresh_ = true;
            return t;
        }
        if (version != L::version || le::load<std::uint16_t>(region + L::desc_num_off) != static_cast<std::uint16_t>(size))
            return vvu::unexpected(make_error_code(errc::inflight_region_mismatch));
        return t;
    }

    // After a restart: reconciles the region with the used ring's index (a crash between
    // publishing a batch and clearing its entries leaves them marked) and returns the heads
    // still in flight, oldest first. Breaks (an error) on a region no back-end could have
    // written: a batch longer than the ring, a batch list that leaves the ring, more heads in
    // flight than the ring holds.
    vvu::expected<std::vector<std::uint16_t>, std::error_code> recover(std::uint16_t used_ring_idx) {
        using L = split_inflight_layout;
        const auto recorded = le::load<std::uint16_t>(region_ + L::used_idx_off);
        if (recorded != used_ring_idx) {
            const auto batch = static_cast<std::uint16_t>(used_ring_idx - recorded);
            if (batch > size_) return vvu::unexpected(make_error_code(errc::inflight_region_corrupt));
            std::uint16_t head = le::load<std::uint16_t>(region_ + L::last_batch_head_off);
            for (std::uint16_t i = 0; i < batch; ++i) {
                if (head >= size_) return vvu::unexpected(make_error_code(errc::inflight_region_corrupt));
                store8(entry(head) + L::entry_inflight_off, 0);
                head = le::load<std::uint16_t>(entry(head) + L::entry_next_off);
            }
            le::store<std::uint16_t>(region_ + L::used_idx_off, used_ring_idx);
        }
        struct pending {
            std::uint64_t counter;
            std::uint16_t head;
        };
        std::vector<pending> found;
        counter_ = 0;
        for (std::uint32_t i = 0; i < size_; ++i) {
            const std::byte* e = entry(static_cast<std::uint16_t>(i));
            const auto flag = static_cast<std::uint8_t>(e[L::entry_inflight_off]);
            if (flag > 1) return vvu::unexpected(make_error_code(errc::inflight_region_corrupt));
            const auto c = le::load<std::uint64_t>(e + L::entry_counter_off);
            if (flag == 1) found.push_back({c, static_cast<std::uint16_t>(i)});
            counter_ = std::max(counter_, c + 1);
        }
        std::sort(found.begin(), found.end(), [](const pending& a, const pending& b) { return a.counter < b.counter; });
        std::vector<std::uint16_t> heads;
        for (const auto& p : found) heads.push_back(p.head);
        return heads;
    }

    // A chain was taken from the ring (split_device::pop_burst).
    void taken(std::uint16_t head) noexcept {
        using L = split_inflight_layout;
        std::byte* e = entry(head);
        le::store<std::uint64_t>(e + L::entry_counter_off, counter_++);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        store8(e + L::entry_inflight_off, 1);
    }
    // Before the used index of a batch is published: link the batch's heads into the list
    // recover() walks if we die between publishing and clearing.
    void completing(std::uint16_t head) noexcept {
        using L = split_inflight_layout;
        le::store<std::uint16_t>(entry(head) + L::entry_next_off, le::load<std::uint16_t>(region_ + L::last_batch_head_off));
        le::store<std::uint16_t>(region_ + L::last_batch_head_off, head);
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }
    // After the used index was published: the batch's heads are no longer in flight.
    void completed(std::span<const used_element> batch, std::uint16_t used_idx) noexcept {
        using L = split_inflight_layout;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        for (const auto& e : batch) store8(entry(static_cast<std::uint16_t>(e.id)) + L::entry_inflight_off, 0);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        le::store<std::uint16_t>(region_ + L::used_idx_off, used_idx);
    }

    // The region was new when attached (no earlier back-end used it).
    [[nodiscard]] bool fresh() const noexcept { return fresh_; }

private:
    split_inflight(std::byte* region, std::uint32_t size) noexcept : region_(region), size_(size) {}
    std::byte* entry(std::uint16_t head) const noexcept {
        return region_ + split_inflight_layout::header_size + split_inflight_layout::entry_size * std::size_t{head};
    }
    static void store8(std::byte* p, std::uint8_t v) noexcept { *p = static_cast<std::byte>(v); }

    std::byte* region_;
    std::uint32_t size_;
    std::uint64_t counter_ = 0;
    bool fresh_ = false;
};

} // namespace vvu::ring
