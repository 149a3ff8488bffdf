// Test harness for the ring layer: guest memory with guard bytes around it, ring placement,
// and a driver<->device exchange with random chain shapes whose bytes are checked end to end.
#pragma once

#include "vvu/ring/ring.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define RING_ERR(cond) \
    do { \
        if (cond) { \
            ++st.errors; \
            if (std::getenv("RING_DEBUG")) std::fprintf(stderr, "harness check failed at line %d\n", __LINE__); \
        } \
    } while (0)

namespace ringtest {

using namespace vvu::ring;

// Guest memory = the middle of a larger buffer; the guards on both sides must stay intact.
class guest {
public:
    static constexpr std::size_t guard = 256;
    static constexpr std::byte guard_byte{0xA5};

    explicit guest(std::size_t size)
        : raw_(size + 2 * guard, std::byte{0}), mem_({raw_.data() + guard, size}) {
        std::fill(raw_.begin(), raw_.begin() + guard, guard_byte);
        std::fill(raw_.end() - guard, raw_.end(), guard_byte);
    }
    local_memory& mem() { return mem_; }
    std::uint64_t alloc(std::size_t bytes, std::size_t align = 16) {
        cursor_ = (cursor_ + align - 1) / align * align;
        const std::uint64_t a = mem_.base() + cursor_;
        cursor_ += bytes;
        if (cursor_ > mem_.size()) throw std::runtime_error("guest memory exhausted");
        return a;
    }
    std::byte* at(std::uint64_t gaddr) { return mem_.data() + (gaddr - mem_.base()); }
    bool guards_intact() const {
        for (std::size_t i = 0; i < guard; ++i)
            if (raw_[i] != guard_byte || raw_[raw_.size() - 1 - i] != guard_byte) return false;
        return true;
    }
    std::uint64_t end() const { return mem_.base() + mem_.size(); }

private:
    std::vector<std::byte> raw_;
    local_memory mem_;
    std::size_t cursor_ = 0;
};

inline split_config place_split(guest& g, std::uint32_t size, ring_features f = {}) {
    split_config c;
    c.size = size;
    c.features = f;
    c.desc_addr = g.alloc(split_layout::desc_bytes(size), 16);
    c.avail_addr = g.alloc(split_layout::avail_bytes(size), 2);
    c.used_addr = g.alloc(split_layout::used_bytes(size), 4);
    return c;
}

inline packed_config place_packed(guest& g, std::uint32_t size, ring_features f = {}) {
    packed_config c;
    c.size = size;
    c.features = f;
    c.desc_addr = g.alloc(packed_layout::desc_bytes(size), 16);
    c.driver_event_addr = g.alloc(4, 4);
    c.device_event_addr = g.alloc(4, 4);
    return c;
}

struct split_layout_t {
    static constexpr bool tracked = false;
    template <class M> using device = split_device<M>;
    template <class M> using driver = split_driver<M>;
    static split_config place(guest& g, std::uint32_t n, ring_features f) { return place_split(g, n, f); }
};
struct packed_layout_t {
    static constexpr bool tracked = false;
    template <class M> using device = packed_device<M>;
    template <class M> using driver = packed_driver<M>;
    static packed_config place(guest& g, std::uint32_t n, ring_features f) { return place_packed(g, n, f); }
};
// A packed device recording what it takes in an inflight region (packed_inflight.hpp).
struct packed_tracked_layout_t : packed_layout_t {
    static constexpr bool tracked = true;
};

inline std::byte pattern_r(std::uint32_t seq, std::size_t j) {
    return static_cast<std::byte>((seq * 131u + j * 7u + 1u) & 0xffu);
}
inline std::byte pattern_w(std::uint32_t seq, std::size_t j) {
    return static_cast<std::byte>((seq * 17u + j * 3u + 0x5au) & 0xffu);
}

struct exchange_stats {
    std::uint64_t chains = 0;
    std::uint64_t indirect = 0;
    std::uint64_t max_outstanding = 0;
    std::uint64_t errors = 0;   // every mismatch counted; the test asserts 0
};

// Driver and device of one layout exchanging `ops` chains with random shapes. Every readable
// byte is checked by the device, every written byte by the driver.
template <class Layout>
exchange_stats run_exchange(std::uint32_t size, ring_features f, std::uint64_t ops, std::uint32_t seed) {
    constexpr std::uint32_t max_elems = 6, max_len = 48, slot_bytes = max_elems * max_len;
    guest g(64 * 1024 + std::size_t{size} * (slot_bytes + 16 * max_elems + 64));
    auto cfg = Layout::place(g, size, f);
    const indirect_area ia{g.alloc(16ULL * max_elems * size, 16), f.indirect ? max_elems : 0};
    const std::uint64_t data = g.alloc(std::size_t{size} * slot_bytes, 16);
    using driver_t = typename Layout::template driver<local_memory>;
    using device_t = typename Layout::template device<local_memory>;
    auto drv = driver_t::create(g.mem(), cfg, ia);
    std::vector<std::byte> region;
    auto dev = [&] {
        if constexpr (Layout::tracked) {
            region.resize(packed_inflight_layout::bytes(size));
            auto t = packed_inflight::attach(region.data(), region.size(), size, 0, true);
            if (!t) return decltype(device_t::create(g.mem(), cfg))(vvu::unexpected(t.error()));
            return device_t::create_tracked(g.mem(), cfg, std::move(*t));
        } else {
            return device_t::create(g.mem(), cfg);
        }
    }();
    exchange_stats st;
    if (!drv || !dev) { ++st.errors; return st; }

    struct slot {
        std::uint32_t seq = 0;
        std::vector<std::uint32_t> rl, wl;
        std::uint32_t written = 0;
    };
    std::vector<slot> slots(size);
    std::vector<std::uint32_t> free_slots;
    for (std::uint32_t i = size; i-- > 0;) free_slots.push_back(i);
    std::mt19937 rng(seed);
    auto rnd = [&](std::uint32_t lo, std::uint32_t hi) {   // inclusive
        return std::uniform_int_distribution<std::uint32_t>(lo, hi)(rng);
    };
    std::uint32_t seq = 0;
    std::vector<used_element> to_push;
    std::vector<std::byte> tmp(slot_bytes);
    const std::uint32_t elem_cap = std::min<std::uint32_t>(max_elems, size);

    auto slot_of = [&](const std::byte* p) {
        return static_cast<std::uint32_t>((g.mem().guest_address(p) - data) / slot_bytes);
    };

    std::uint64_t done = 0;
    while (done < ops) {
        // --- driver posts a burst
        const std::uint32_t want = rnd(1, 32);
        std::vector<request> reqs;
        std::vector<std::vector<buffer>> bufs;
        bufs.reserve(want);
        std::vector<std::uint32_t> taken;
        for (std::uint32_t k = 0; k < want && k < free_slots.size(); ++k) {
            const std::uint32_t s = free_slots[free_slots.size() - 1 - k];
            std::uint32_t n = rnd(1, elem_cap);
            std::uint32_t nr = rnd(0, n);
            slot& sl = slots[s];
            sl.seq = ++seq;
            sl.rl.clear();
            sl.wl.clear();
            std::vector<buffer> b;
            std::uint64_t a = data + std::uint64_t{s} * slot_bytes;
            std::size_t j = 0;
            for (std::uint32_t i = 0; i < n; ++i) {
                const std::uint32_t len = rnd(0, 9) == 0 ? 0 : rnd(1, max_len);
                b.push_back({a, len});
                if (i < nr) {
                    sl.rl.push_back(len);
                    for (std::uint32_t x = 0; x < len; ++x) g.at(a)[x] = pattern_r(sl.seq, j++);
                } else {
                    sl.wl.push_back(len);
                    std::memset(g.at(a), 0, len);
                }
                a += max_len;
            }
            bufs.push_back(std::move(b));
            const bool ind = f.indirect && rnd(0, 2) == 0;
            st.indirect += ind;
            const auto& bb = bufs.back();
            reqs.push_back({std::span<const buffer>(bb.data(), nr),
                            std::span<const buffer>(bb.data() + nr, n - nr), s, ind});
            taken.push_back(s);
        }
        std::size_t added = 0;
        if (rnd(0, 1) == 0) {
            added = drv->add_burst(reqs);
        } else {
            for (const auto& r : reqs) {
                if (!drv->add(r.readable, r.writable, r.token, r.indirect)) break;
                ++added;
            }
        }
        for (std::size_t i = 0; i < added; ++i) free_slots.pop_back();
        (void)drv->needs_kick();
        st.max_outstanding = std::max<std::uint64_t>(st.max_outstanding, drv->outstanding());

        // --- device takes a burst, checks readable bytes, fills writable parts
        for (int rounds = rnd(0, 2); rounds >= 0; --rounds) {
            chain chains[max_burst];
            const std::size_t got = dev->pop_burst(std::span<chain>(chains, rnd(1, 32)));
            for (std::size_t i = 0; i < got; ++i) {
                const chain& c = chains[i];
                const segment* first = !c.readable().empty() ? &c.readable()[0] : &c.writable()[0];
                const std::uint32_t s = slot_of(first->data);
                slot& sl = slots[s];
                if (c.readable().size() != sl.rl.size() || c.writable().size() != sl.wl.size()) {
                    ++st.errors;
                    if (std::getenv("RING_DEBUG")) std::fprintf(stderr, "shape r %zu/%zu w %zu/%zu slot %u\n", c.readable().size(), sl.rl.size(), c.writable().size(), sl.wl.size(), s);
                    to_push.push_back({c.id(), 0});
                    continue;
                }
                std::uint32_t rtot = 0, wtot = 0;
                for (std::size_t k = 0; k < sl.rl.size(); ++k) { rtot += sl.rl[k]; st.errors += c.readable()[k].len != sl.rl[k]; }
                for (std::size_t k = 0; k < sl.wl.size(); ++k) { wtot += sl.wl[k]; st.errors += c.writable()[k].len != sl.wl[k]; }
                RING_ERR(c.readable_bytes() != rtot || c.writable_bytes() != wtot);
                const std::size_t got_r = c.copy_from(std::span<std::byte>(tmp.data(), rtot));
                RING_ERR(got_r != rtot);
                for (std::size_t j = 0; j < rtot; ++j) RING_ERR(tmp[j] != pattern_r(sl.seq, j));
                const std::uint32_t w = wtot == 0 ? 0 : (rnd(0, 1) ? wtot : rnd(0, wtot));
                for (std::size_t j = 0; j < w; ++j) tmp[j] = pattern_w(sl.seq, j);
                RING_ERR(c.copy_to(std::span<const std::byte>(tmp.data(), w)) != w);
                sl.written = w;
                to_push.push_back({c.id(), w});
            }
        }

        // --- device returns some of what it holds (out of order unless IN_ORDER)
        if (!to_push.empty() && rnd(0, 3) != 0) {
            if (!f.in_order) std::shuffle(to_push.begin(), to_push.end(), rng);
            std::size_t n = rnd(1, static_cast<std::uint32_t>(to_push.size()));
            std::size_t pushed = 0;
            while (pushed < n) {
                const std::size_t b = std::min<std::size_t>(n - pushed, rnd(1, 32));
                const std::size_t p = b == 1 && rnd(0, 1)
                    ? std::size_t(dev->push(to_push[pushed].id, to_push[pushed].len))
                    : dev->push_burst(std::span<const used_element>(to_push.data() + pushed, b));
                RING_ERR(p != b);
                pushed += b;
            }
            to_push.erase(to_push.begin(), to_push.begin() + static_cast<std::ptrdiff_t>(n));
            (void)dev->needs_interrupt();
        }

        // --- driver reaps and checks written bytes
        used_buffer ub[max_burst];
        for (;;) {
            const std::size_t got = drv->reap_burst(std::span<used_buffer>(ub, rnd(1, 32)));
            if (got == 0) break;
            for (std::size_t i = 0; i < got; ++i) {
                const auto s = static_cast<std::uint32_t>(ub[i].token);
                slot& sl = slots[s];
                RING_ERR(ub[i].len != sl.written);
                std::size_t j = 0, seg = 0;
                std::uint64_t a = data + std::uint64_t{s} * slot_bytes + sl.rl.size() * max_len;
                for (std::uint32_t len : sl.wl) {
                    for (std::uint32_t x = 0; x < len && j < sl.written; ++x, ++j)
                        RING_ERR(g.at(a)[x] != pattern_w(sl.seq, j));
                    a += max_len;
                    ++seg;
                }
                free_slots.push_back(s);
                ++done;
                ++st.chains;
            }
        }
        if (std::getenv("RING_DEBUG_VERBOSE")) std::fprintf(stderr, "done %lu out %u inflight %u topush %zu free %zu brk %d %d\n", (unsigned long)done, drv->outstanding(), dev->inflight_count(), to_push.size(), free_slots.size(), drv->broken(), dev->broken());
        if (drv->broken() || dev->broken()) { ++st.errors; break; }
    }
    // drain
    // drain: return what the device holds, then take and return what is still available
    RING_ERR(dev->push_burst(to_push) != to_push.size());
    for (int guard_rounds = 0; guard_rounds < 100000 && drv->outstanding() != 0; ++guard_rounds) {
        used_buffer ub;
        while (drv->reap(ub)) ++st.chains;
        chain c;
        if (dev->pop(c)) RING_ERR(!dev->push(c.id(), 0));
    }
    RING_ERR(drv->outstanding() != 0 || dev->inflight_count() != 0);
    RING_ERR(!g.guards_intact());
    RING_ERR(drv->broken() || dev->broken());
    return st;
}

} // namespace ringtest
