// Dirty-page logging on the device side of a ring (ring/memory_policy.hpp, write_logging_policy),
// shared by the split and packed rings.
//
// A chain's writable part is known when it is taken, what the device wrote of it only when it
// is pushed (the used length): so the guest addresses of each chain's writable descriptors are
// kept from pop to push, by chain id, and push logs exactly the first `len` bytes of them — the
// way the kernel's vhost logs, page for page. Logging at pop instead would mark pages before the
// device writes them: a front-end syncing the log in between would copy them stale.
#pragma once

#include "vvu/ring/memory_policy.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace vvu::ring::detail {

struct extent {
    std::uint64_t addr = 0;
    std::uint32_t len = 0;
};

// For a memory policy that does not log: nothing, compiled away.
template <class Mem, bool = write_logging_policy<Mem>>
class write_log {
public:
    write_log(Mem&, std::uint32_t, std::uint32_t, bool) noexcept {}
    static constexpr bool on() noexcept { return false; }
    std::vector<extent>* recording() noexcept { return nullptr; }
    void keep(std::uint16_t) noexcept {}
    void written(std::uint16_t, std::uint32_t) noexcept {}
    void ring(std::uint64_t, std::uint64_t) noexcept {}
};

// For a logging policy: active when the policy had a log attached as the ring was made (a
// session that turns logging on or off restarts its rings). The ring's own writes are logged
// only when asked too (`log_ring`: SET_VRING_ADDR's VHOST_VRING_F_LOG).
template <class Mem>
class write_log<Mem, true> {
public:
    // `size` chain ids, chains of at most `chain_limit` descriptors.
    write_log(Mem& mem, std::uint32_t size, std::uint32_t chain_limit, bool log_ring)
        : mem_(&mem), on_(mem.logging()), ring_on_(on_ && log_ring) {
        if (!on_) return;
        by_id_.reset(new std::vector<extent>[size]);
        for (std::uint32_t i = 0; i < size; ++i) by_id_[i].reserve(4);
        scratch_.reserve(chain_limit); // a chain's writable descriptors never reallocate it
    }
    write_log(write_log&&) noexcept = default;
    write_log& operator=(write_log&&) noexcept = default;

    bool on() const noexcept { return on_; }

    // Where the chain being walked records its writable descriptors (null when not logging).
    std::vector<extent>* recording() noexcept {
        if (!on_) return nullptr;
        scratch_.clear();
        return &scratch_;
    }
    // The walked chain was taken with this id: keep what it recorded until it is pushed.
    // (Ids repeat only after a push; a vector grows past 4 extents once and stays grown.)
    void keep(std::uint16_t id) noexcept {
        if (on_) by_id_[id].assign(scratch_.begin(), scratch_.end());
    }
    // The device wrote the first `len` bytes of chain `id`'s writable part.
    void written(std::uint16_t id, std::uint32_t len) noexcept {
        if (!on_) return;
        for (const extent& e : by_id_[id]) {
            if (len == 0) break;
            const std::uint32_t n = std::min(len, e.len);
            mem_->log_write(e.addr, n);
            len -= n;
        }
    }
    // The ring wrote [addr, addr + len) of its own structures (used entries, indices, flags).
    void ring(std::uint64_t addr, std::uint64_t len) noexcept {
        if (ring_on_) mem_->log_write(addr, len);
    }

private:
    Mem* mem_;
    bool on_ = false;
    bool ring_on_ = false;
    std::unique_ptr<std::vector<extent>[]> by_id_;
    std::vector<extent> scratch_;
};

} // namespace vvu::ring::detail
