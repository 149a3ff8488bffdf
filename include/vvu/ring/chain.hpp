// The descriptor chain view a device works on: the readable part then the writable part of one
// buffer, each as segments (local pointer + length) already translated and bounds-checked.
//
// A chain does not own its segments: they live in the device ring's segment arena (allocated
// once at ring setup), so popping never allocates. A chain stays valid until the next pop /
// pop_burst on the ring that produced it; a device that keeps requests across pops (async I/O)
// copies the segments it needs. The bytes the segments point at are shared with the driver and
// stay valid until the chain is pushed back.
#pragma once

#include "vvu/ring/detail/access.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace vvu::ring {

struct segment {
    std::byte* data = nullptr;
    std::uint32_t len = 0;
};

namespace detail {
struct chain_access;
}

class chain {
public:
    chain() = default;

    // Split: head descriptor index. Packed: buffer id. Pass it back to push().
    std::uint16_t id() const noexcept { return id_; }
    std::span<const segment> readable() const noexcept { return {segs_, n_readable_}; }
    std::span<const segment> writable() const noexcept { return {segs_ + n_readable_, n_writable_}; }
    std::uint32_t readable_bytes() const noexcept { return readable_bytes_; }
    std::uint32_t writable_bytes() const noexcept { return writable_bytes_; }
    // Ring descriptors this chain occupies (packed: how far the used index skips for it).
    std::uint16_t ring_descriptors() const noexcept { return ring_descs_; }
    bool indirect() const noexcept { return indirect_; }

    // Copy readable bytes starting `offset` bytes into the readable part to `dst`.
    // Returns the number of bytes copied (short when the readable part ends).
    std::size_t copy_from(std::size_t offset, std::span<std::byte> dst) const noexcept {
        // The common case, all of it in the first segment: one copy, no walk.
        if (n_readable_ != 0 && !dst.empty() && offset + dst.size() <= segs_[0].len) {
            std::memcpy(dst.data(), segs_[0].data + offset, dst.size());
            return dst.size();
        }
        return gather(readable(), offset, dst);
    }
    std::size_t copy_from(std::span<std::byte> dst) const noexcept { return copy_from(0, dst); }

    // Copy `src` into the writable part starting `offset` bytes into it.
    // Returns the number of bytes written (short when the writable part ends).
    std::size_t copy_to(std::size_t offset, std::span<const std::byte> src) const noexcept {
        if (n_writable_ != 0 && !src.empty() && offset + src.size() <= segs_[n_readable_].len) {
            std::memcpy(segs_[n_readable_].data + offset, src.data(), src.size());
            return src.size();
        }
        return scatter(writable(), offset, src);
    }
    std::size_t copy_to(std::span<const std::byte> src) const noexcept { return copy_to(0, src); }

    // Start loading the cache lines of the first `bytes` of the first readable (or writable)
    // segment. The buffers were last written (or read) by the driver's CPU, so each of them is
    // a cache miss; asking for a whole burst's buffers before copying any lets the misses
    // overlap instead of being taken one copy at a time. A hint only: never faults.
    void prefetch_readable(std::size_t bytes) const noexcept {
        if (n_readable_ != 0) prefetch<false>(segs_[0], bytes);
    }
    void prefetch_writable(std::size_t bytes) const noexcept {
        if (n_writable_ != 0) prefetch<true>(segs_[n_readable_], bytes);
    }

private:
    friend struct detail::chain_access;

    template <bool ForWrite>
    static void prefetch(const segment& s, std::size_t bytes) noexcept {
        const std::size_t len = std::min<std::size_t>(bytes, s.len);
        if (len == 0) return; // (else the line before an unaligned empty segment)
        constexpr std::uintptr_t line = 64;
        const auto start = reinterpret_cast<std::uintptr_t>(s.data);
        for (std::uintptr_t a = start & ~(line - 1); a < start + len; a += line)
            detail::prefetch_line<ForWrite>(reinterpret_cast<const void*>(a));
    }

    static std::size_t gather(std::span<const segment> segs, std::size_t offset,
                              std::span<std::byte> dst) noexcept {
        std::size_t done = 0;
        for (const segment& s : segs) {
            if (done == dst.size()) break;
            if (offset >= s.len) { offset -= s.len; continue; }
            const std::size_t n = std::min<std::size_t>(s.len - offset, dst.size() - done);
            std::memcpy(dst.data() + done, s.data + offset, n);
            done += n;
            offset = 0;
        }
        return done;
    }
    static std::size_t scatter(std::span<const segment> segs, std::size_t offset,
                               std::span<const std::byte> src) noexcept {
        std::size_t done = 0;
        for (const segment& s : segs) {
            if (done == src.size()) break;
            if (offset >= s.len) { offset -= s.len; continue; }
            const std::size_t n = std::min<std::size_t>(s.len - offset, src.size() - done);
            std::memcpy(s.data + offset, src.data() + done, n);
            done += n;
            offset = 0;
        }
        return done;
    }

    const segment* segs_ = nullptr;
    std::uint32_t n_readable_ = 0;
    std::uint32_t n_writable_ = 0;
    std::uint32_t readable_bytes_ = 0;
    std::uint32_t writable_bytes_ = 0;
    std::uint16_t id_ = 0;
    std::uint16_t ring_descs_ = 0;
    bool indirect_ = false;
};

// What a device hands back: the chain's id and how many bytes it wrote into the writable part.
struct used_element {
    std::uint16_t id = 0;
    std::uint32_t len = 0;
};

// A buffer element as the driver describes it (guest address + length).
struct buffer {
    std::uint64_t addr = 0;
    std::uint32_t len = 0;
};

// One request for a driver's add_burst: readable elements, then writable elements.
struct request {
    std::span<const buffer> readable;
    std::span<const buffer> writable;
    std::uint64_t token = 0;   // returned by reap
    bool indirect = false;     // put the elements in an indirect table (needs the feature)
};

// What a driver reaps: the request's token and the bytes the device wrote.
struct used_buffer {
    std::uint64_t token = 0;
    std::uint32_t len = 0;
};

// Negotiated ring features that change ring behaviour.
struct ring_features {
    bool event_idx = false;   // VIRTIO_RING_F_EVENT_IDX (29)
    bool indirect = false;    // VIRTIO_RING_F_INDIRECT_DESC (28)
    bool in_order = false;    // VIRTIO_F_IN_ORDER (35)
};

inline constexpr std::size_t max_burst = 32;
inline constexpr std::uint32_t max_queue_size = 32768;

} // namespace vvu::ring
