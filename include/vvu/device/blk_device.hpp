// A virtio-blk device for protocol::backend (virtio 1.2 §5.2): the back-end side of
// vhost-user-blk over a blk::image. It models protocol::device; its data path (poll, run by a
// runtime::poller) takes requests from every started queue and completes each with a status.
//
// Requests (§5.2.6) are checked before any byte moves: a header of 16 readable bytes, a status
// byte at the end of the writable part, data in the direction the type says (IN: writable,
// OUT: readable), whole sectors, a range inside the image. What fails a check completes with
// VIRTIO_BLK_S_IOERR (or UNSUPP for a type or flag the device does not do); a chain with no
// writable byte for the status completes with length 0 and is counted — nothing else can be
// said to such a front-end. Data moves with preadv/pwritev straight between the image and the
// front-end's buffers.
//
// Threads: the control thread starts and stops vrings, the data thread polls; they never run
// at the same time (runtime::server::guard_data_path pauses the poller around every start and
// stop), so the device holds no lock. Counters are atomics, read from any thread.
#pragma once

#include <vvu/device/blk.hpp>
#include <vvu/device/blk_image.hpp>
#include <vvu/protocol/kick_wait.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/ring/chain.hpp>
#include <vvu/wire/features.hpp>

#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace vvu::device::blk {

// virtio_blk_config offsets past num_queues (§5.2.4).
namespace config_offset {
inline constexpr std::size_t capacity = 0;
inline constexpr std::size_t size_max = 8;
inline constexpr std::size_t seg_max = 12;
inline constexpr std::size_t blk_size = 20;
inline constexpr std::size_t num_queues = 34;
inline constexpr std::size_t max_discard_sectors = 36;
inline constexpr std::size_t max_discard_seg = 40;
inline constexpr std::size_t discard_sector_alignment = 44;
inline constexpr std::size_t max_write_zeroes_sectors = 48;
inline constexpr std::size_t max_write_zeroes_seg = 52;
inline constexpr std::size_t write_zeroes_may_unmap = 56;
} // namespace config_offset

// struct virtio_blk_discard_write_zeroes (§5.2.6): one range of a DISCARD or WRITE_ZEROES.
inline constexpr std::size_t range_size = 16;
inline constexpr std::uint32_t range_flag_unmap = 1;

struct device_stats {
    std::uint64_t requests = 0;   // completed, whatever their status
    std::uint64_t read_bytes = 0;
    std::uint64_t written_bytes = 0;
    std::uint64_t flushes = 0;
    std::uint64_t io_errors = 0;  // completed with IOERR
    std::uint64_t unsupported = 0; // completed with UNSUPP
    std::uint64_t no_status = 0;  // chains without a status byte (length 0)
};

class blk_device {
public:
    struct options {
        std::uint32_t queues = 1;
        std::string serial = "vvu-blk";     // GET_ID (at most 20 bytes are sent)
        std::uint32_t seg_max = 126;        // data segments per request the driver may use
        std::uint32_t size_max = 1u << 20;  // bytes per segment the driver may use
        std::uint32_t max_discard_sectors = 1u << 22; // per range (2 GiB)
        std::uint32_t max_ranges = 1;       // per DISCARD / WRITE_ZEROES request
    };

    blk_device(image img, options o) : image_(std::move(img)), options_(std::move(o)), vrings_(options_.queues) {}

    // ---------------------------------------------------------------- protocol::device
    std::uint64_t features() const noexcept {
        std::uint64_t f = feature::size_max | feature::seg_max | feature::blk_size | feature::flush;
        if (options_.queues > 1) f |= feature::mq;
        if (image_.read_only()) f |= feature::ro;
        else f |= feature::discard | feature::write_zeroes;
        return f;
    }
    std::uint64_t protocol_features() const noexcept { return wire::protocol_feature::config; }
    std::uint32_t vring_count() const noexcept { return options_.queues; }
    void set_features(std::uint64_t) noexcept {}

    // GET_CONFIG. The image covers the fields of every feature offered; a front-end may read
    // further (QEMU reads its own struct's size), up to the 256 bytes vhost-user carries: the
    // fields of features not offered read as zero there.
    bool read_config(std::uint32_t offset, std::span<std::uint8_t> out) const noexcept {
        std::array<std::uint8_t, 256> image{};
        auto put = [&](std::size_t at, auto v) {
            for (std::size_t i = 0; i < sizeof v; ++i) image[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
        };
        put(config_offset::capacity, image_.capacity_sectors());
        put(config_offset::size_max, options_.size_max);
        put(config_offset::seg_max, options_.seg_max);
        put(config_offset::blk_size, std::uint32_t{512});
        put(config_offset::num_queues, static_cast<std::uint16_t>(options_.queues));
        if (!image_.read_only()) {
            put(config_offset::max_discard_sectors, options_.max_discard_sectors);
            put(config_offset::max_discard_seg, options_.max_ranges);
            put(config_offset::discard_sector_alignment, std::uint32_t{8}); // 4 KiB
            put(config_offset::max_write_zeroes_sectors, options_.max_discard_sectors);
            put(config_offset::max_write_zeroes_seg, options_.max_ranges);
            image[config_offset::write_zeroes_may_unmap] = 1;
        }
        if (offset > image.size() || out.size() > image.size() - offset) return false;
        std::copy_n(image.begin() + offset, out.size(), out.begin());
        return true;
    }
    bool write_config(std::uint32_t, std::span<const std::uint8_t>) noexcept { return false; } // no CONFIG_WCE

    void start_vring(std::unique_ptr<protocol::vring> v) {
        // Polled while requests flow; event mode asks for kicks before it sleeps.
        v->visit([](auto& ring) { ring.disable_notifications(); });
        const auto i = v->index();
        vrings_[i] = std::move(v);
    }
    std::unique_ptr<protocol::vring> stop_vring(std::uint32_t index) { return std::move(vrings_[index]); }
    void reset() {
        for (auto& v : vrings_) v.reset();
    }

    // ---------------------------------------------------------------------- data path
    // One pass: a burst from every started, enabled queue. Returns the requests completed.
    std::size_t poll() {
        std::size_t total = 0;
        for (auto& v : vrings_) {
            if (!v || !v->enabled()) continue;
            std::size_t n = 0;
            v->visit([&](auto& ring) {
                n = ring.pop_burst(chains_);
                for (std::size_t i = 0; i < n; ++i) used_[i] = {chains_[i].id(), serve(chains_[i])};
                ring.push_burst(std::span(used_).first(n));
            });
            if (n != 0) v->notify();
            total += n;
        }
        return total;
    }

    // Event mode (runtime::poller): ask every queue for kicks, sleep until one comes, `wake`
    // is readable or the timeout passes. False (no sleep) when a request slipped in meanwhile
    // or a queue has no kick fd to sleep on.
    bool wait_for_kicks(std::chrono::milliseconds timeout, int wake = -1) {
        return kicks_.wait(vrings_, [](protocol::vring& v) { return v.enabled(); }, timeout, wake);
    }

    device_stats stats() const noexcept {
        device_stats s;
        s.requests = requests_.load(std::memory_order_relaxed);
        s.read_bytes = read_bytes_.load(std::memory_order_relaxed);
        s.written_bytes = written_bytes_.load(std::memory_order_relaxed);
        s.flushes = flushes_.load(std::memory_order_relaxed);
        s.io_errors = io_errors_.load(std::memory_order_relaxed);
        s.unsupported = unsupported_.load(std::memory_order_relaxed);
        s.no_status = no_status_.load(std::memory_order_relaxed);
        return s;
    }
    const image& storage() const noexcept { return image_; }

    // One request: checks it, does it, writes the status byte last. Returns the used length
    // (bytes written into the writable part, status included).
    std::uint32_t serve(const ring::chain& c) {
        requests_.fetch_add(1, std::memory_order_relaxed);
        if (c.writable_bytes() == 0) { // nowhere to put a status: a broken request
            no_status_.fetch_add(1, std::memory_order_relaxed);
            return 0;
        }
        const std::uint32_t data_in = c.writable_bytes() - 1; // device-writable data bytes
        std::uint32_t written = 0;
        const status s = execute(c, data_in, written);
        if (s == status::ioerr) io_errors_.fetch_add(1, std::memory_order_relaxed);
        if (s == status::unsupp) unsupported_.fetch_add(1, std::memory_order_relaxed);
        const std::byte b{static_cast<std::uint8_t>(s)};
        c.copy_to(data_in, {&b, 1});
        return written + 1;
    }

private:
    status execute(const ring::chain& c, std::uint32_t data_in, std::uint32_t& written) {
        std::array<std::byte, header_size> raw{};
        if (c.readable_bytes() < header_size || c.copy_from(raw) != header_size) return status::ioerr;
        const auto type = le::load<std::uint32_t>(raw.data());
        const auto sector = le::load<std::uint64_t>(raw.data() + 8);
        const std::uint32_t data_out = c.readable_bytes() - header_size; // device-readable data bytes

        switch (static_cast<request_type>(type)) {
        case request_type::in: {
            if (data_out != 0 || data_in % sector_size != 0 || !in_range(sector, data_in)) return status::ioerr;
            if (image_.read(sector * sector_size, gather(c.writable(), 0, data_in))) return status::ioerr;
            read_bytes_.fetch_add(data_in, std::memory_order_relaxed);
            written = data_in;
            return status::ok;
        }
        case request_type::out: {
            if (data_in != 0 || data_out % sector_size != 0 || !in_range(sector, data_out) || image_.read_only())
                return status::ioerr;
            if (image_.write(sector * sector_size, gather(c.readable(), header_size, data_out))) return status::ioerr;
            written_bytes_.fetch_add(data_out, std::memory_order_relaxed);
            return status::ok;
        }
        case request_type::flush:
            if (data_out != 0 || data_in != 0) return status::ioerr;
            flushes_.fetch_add(1, std::memory_order_relaxed);
            return image_.flush() ? status::ioerr : status::ok;
        case request_type::get_id: {
            if (data_out != 0) return status::ioerr;
            std::array<std::byte, id_bytes> id{}; // NUL-padded; no NUL when all 20 are used
            std::memcpy(id.data(), options_.serial.data(), std::min(options_.serial.size(), id.size()));
            written = static_cast<std::uint32_t>(c.copy_to(std::span(id).first(std::min<std::size_t>(id.size(), data_in))));
            return status::ok;
        }
        case request_type::discard:
        case request_type::write_zeroes:
            if (image_.read_only()) return status::ioerr;
            return ranges(c, static_cast<request_type>(type), data_out, data_in);
        default:
            return status::unsupp;
        }
    }

    // DISCARD / WRITE_ZEROES: 1..max_ranges ranges of 16 bytes after the header, each checked
    // before any is done.
    status ranges(const ring::chain& c, request_type type, std::uint32_t data_out, std::uint32_t data_in) {
        if (data_in != 0 || data_out == 0 || data_out % range_size != 0 || data_out / range_size > options_.max_ranges)
            return status::ioerr;
        struct range { std::uint64_t sector; std::uint32_t sectors; std::uint32_t flags; };
        std::array<range, 16> rs{};
        const std::size_t count = data_out / range_size;
        if (count > rs.size()) return status::ioerr;
        for (std::size_t i = 0; i < count; ++i) {
            std::array<std::byte, range_size> raw{};
            c.copy_from(header_size + i * range_size, raw);
            rs[i] = {le::load<std::uint64_t>(raw.data()), le::load<std::uint32_t>(raw.data() + 8),
                     le::load<std::uint32_t>(raw.data() + 12)};
            const bool unmap = (rs[i].flags & range_flag_unmap) != 0;
            // Unknown flags, and unmap on a DISCARD, are not done (§5.2.6.2).
            if ((rs[i].flags & ~range_flag_unmap) != 0 || (type == request_type::discard && unmap)) return status::unsupp;
            if (rs[i].sectors > options_.max_discard_sectors || !in_range(rs[i].sector, std::uint64_t{rs[i].sectors} * sector_size))
                return status::ioerr;
        }
        for (std::size_t i = 0; i < count; ++i) {
            const std::uint64_t off = rs[i].sector * sector_size, len = std::uint64_t{rs[i].sectors} * sector_size;
            const auto e = type == request_type::discard ? image_.discard(off, len)
                                                         : image_.write_zeroes(off, len, (rs[i].flags & range_flag_unmap) != 0);
            if (e) return status::ioerr;
        }
        return status::ok;
    }

    bool in_range(std::uint64_t sector, std::uint64_t bytes) const noexcept {
        return sector <= image_.capacity_sectors() && image_.holds(sector * sector_size, bytes);
    }

    // The segments' bytes [skip, skip + length) as iovecs (in iov_, reused).
    std::span<const iovec> gather(std::span<const ring::segment> segs, std::size_t skip, std::size_t length) {
        iov_.clear();
        for (const ring::segment& s : segs) {
            if (length == 0) break;
            if (skip >= s.len) { skip -= s.len; continue; }
            const std::size_t n = std::min<std::size_t>(s.len - skip, length);
            iov_.push_back({s.data + skip, n});
            length -= n;
            skip = 0;
        }
        return iov_;
    }

    image image_;
    options options_;
    std::vector<std::unique_ptr<protocol::vring>> vrings_;
    protocol::kick_wait kicks_; // the data thread's (event mode)
    std::array<ring::chain, ring::max_burst> chains_;
    std::array<ring::used_element, ring::max_burst> used_;
    std::vector<iovec> iov_;
    std::atomic<std::uint64_t> requests_{0}, read_bytes_{0}, written_bytes_{0}, flushes_{0}, io_errors_{0}, unsupported_{0},
        no_status_{0};
};

} // namespace vvu::device::blk
