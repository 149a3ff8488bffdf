// Building a chain view from validated descriptors, shared by the split and packed device sides.
#pragma once

#include "vvu/ring/chain.hpp"
#include "vvu/ring/error.hpp"
#include "vvu/ring/memory_policy.hpp"
#include "vvu/ring/detail/write_log.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace vvu::ring::detail {

struct chain_access {
    static void set(chain& c, const segment* segs, std::uint32_t n_r, std::uint32_t n_w,
                    std::uint32_t rb, std::uint32_t wb, std::uint16_t id, std::uint16_t ring_descs,
                    bool indirect) noexcept {
        c.segs_ = segs;
        c.n_readable_ = n_r;
        c.n_writable_ = n_w;
        c.readable_bytes_ = rb;
        c.writable_bytes_ = wb;
        c.id_ = id;
        c.ring_descs_ = ring_descs;
        c.indirect_ = indirect;
    }
};

// Segment storage for the chains of one pop_burst call. Capacity >= the chain length limit, so
// a chain always fits an empty arena; a later chain of the same burst that does not fit is left
// in the ring for the next call (nothing was consumed).
class segment_arena {
public:
    segment_arena() = default;
    explicit segment_arena(std::uint32_t cap) : segs_(new segment[cap]), cap_(cap) {}
    segment* data() noexcept { return segs_.get(); }
    std::uint32_t capacity() const noexcept { return cap_; }

private:
    std::unique_ptr<segment[]> segs_;
    std::uint32_t cap_ = 0;
};

enum class build_status { ok, arena_full, error };

// Appends the buffer descriptors of one chain, enforcing the limits of the issue:
// readable-before-writable, translation of every element, total length <= 2^32 - 1,
// segment count <= limit. `writes`: where to record the guest addresses of the writable
// descriptors (dirty logging, write_log.hpp; reserved for `limit` entries), or null.
template <memory_policy Mem>
class chain_builder {
public:
    chain_builder(Mem& mem, segment* base, std::uint32_t room, std::uint32_t limit,
                  std::vector<extent>* writes = nullptr) noexcept
        : mem_(mem), base_(base), room_(room), limit_(limit), writes_(writes) {}

    // Always inlined: one call per descriptor, in the loops of the rings' walks.
    [[gnu::always_inline]] build_status add(std::uint64_t addr, std::uint32_t len, bool writable) noexcept {
        if (++count_ > limit_) return fail(errc::chain_too_long);
        if (writable) {
            wbytes_ += len;
        } else {
            if (n_w_ != 0) return fail(errc::readable_after_writable);
            rbytes_ += len;
        }
        if (rbytes_ + wbytes_ > 0xffff'ffffULL) return fail(errc::length_overflow);
        std::byte* p = mem_.translate(addr, len);
        if (p == nullptr) return fail(errc::buffer_out_of_memory);
        if (n_r_ + n_w_ == room_) return build_status::arena_full;
        base_[n_r_ + n_w_] = segment{p, len};
        if (writable && writes_ != nullptr) writes_->push_back({addr, len});
        (writable ? n_w_ : n_r_) += 1;
        return build_status::ok;
    }

    std::uint32_t count() const noexcept { return count_; }
    std::uint32_t segments() const noexcept { return n_r_ + n_w_; }
    errc error() const noexcept { return err_; }

    void finish(chain& c, std::uint16_t id, std::uint16_t ring_descs, bool indirect) const noexcept {
        chain_access::set(c, base_, n_r_, n_w_, static_cast<std::uint32_t>(rbytes_),
                          static_cast<std::uint32_t>(wbytes_), id, ring_descs, indirect);
    }

    build_status fail(errc e) noexcept {
        err_ = e;
        return build_status::error;
    }

private:
    Mem& mem_;
    segment* base_;
    std::uint32_t room_;
    std::uint32_t limit_;
    std::vector<extent>* writes_;
    std::uint32_t count_ = 0;
    std::uint32_t n_r_ = 0;
    std::uint32_t n_w_ = 0;
    std::uint64_t rbytes_ = 0;
    std::uint64_t wbytes_ = 0;
    errc err_{};
};

} // namespace vvu::ring::detail
