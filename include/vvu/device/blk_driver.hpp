// blk_driver: the driver side of virtio-blk (virtio 1.2 §5.2) over protocol::frontend — reads,
// writes, flushes and the device id, against any vhost-user-blk back-end (qemu-storage-daemon,
// SPDK, …).
//
//   auto bd = device::blk::blk_driver<>::open(std::move(*channel), {});
//   (*bd)->capacity_bytes();                      // from GET_CONFIG
//   (*bd)->write(0, data);  (*bd)->read(0, out);  (*bd)->flush();
//   (*bd)->random_io({.block = 4096, .read_percent = 100, .duration = 5s}); // IOPS, latency
//
// One virtqueue (vring 0). A transfer is split into requests of at most `chunk` bytes (and
// size_max when SIZE_MAX is negotiated), each one a chain of three descriptors — the 16-byte
// header (type, reserved, sector), the data, the status byte — with up to `depth` requests in
// flight. Data goes through bounce buffers in the shared memory (the back-end sees nothing
// else of this process). Completions are waited for on the call eventfd, in bounded slices.
// Every operation runs on one loop (run_requests): post into free slots, kick, reap, check
// each status, sleep on the call eventfd when nothing completed.
// Not thread-safe: one thread.
#pragma once

#include <vvu/device/blk.hpp>
#include <vvu/protocol/frontend.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace vvu::device::blk {

struct driver_options {
    std::uint32_t queue_size = 128;
    bool packed = false;            // VIRTIO_F_RING_PACKED (must be offered)
    std::uint32_t depth = 16;       // requests in flight
    std::uint32_t chunk = 256 * 1024; // bytes per request (a multiple of 512)
    std::size_t memory_regions = 1;
    bool use_mem_slots = true;
    std::chrono::milliseconds timeout{5000}; // control messages, and each wait for a completion
};

// A load of random requests (blk_driver::random_io): `block`-byte requests at block-aligned
// offsets drawn uniformly over the whole capacity, `depth` of them kept in flight.
struct random_io_options {
    std::uint32_t block = 4096;          // bytes per request, a multiple of 512 (at most the driver's chunk)
    std::uint32_t read_percent = 100;    // the share of reads (0..100); the rest are writes
    std::uint32_t depth = 0;             // requests in flight; 0: every slot of the driver
    std::chrono::nanoseconds duration{}; // no new request after this long (0: no limit)
    std::uint64_t requests = 0;          // no new request after this many (0: no limit)
    std::uint64_t seed = 1;              // mt19937_64: the offsets, the mix, the written bytes
};

struct random_io_report {
    std::uint32_t block = 0;
    std::uint32_t depth = 0;
    std::uint64_t requests = 0; // completed, all with OK
    std::uint64_t reads = 0;
    std::uint64_t writes = 0;
    std::uint64_t bytes = 0;
    double seconds = 0;         // the first post to the last completion
    double iops = 0;
    // Submission (the add to the ring) to reap, in microseconds.
    double mean_us = 0, p50_us = 0, p99_us = 0, max_us = 0;
};

// Latencies in nanoseconds, counted in log-linear buckets (32 per power of two: under 3 %
// error) so that a run of any length keeps a fixed 2 000 counters.
class latency_histogram {
public:
    void add(std::uint64_t ns) noexcept {
        ++counts_[bucket(ns)];
        ++count_;
        sum_ += ns;
        max_ = std::max(max_, ns);
    }
    [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
    [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
    [[nodiscard]] double mean() const noexcept { return count_ != 0 ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }
    // The value below which a fraction q (0..1) of the samples lie: the middle of its bucket.
    [[nodiscard]] double quantile(double q) const noexcept {
        if (count_ == 0) return 0;
        const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1));
        std::uint64_t seen = 0;
        for (std::size_t b = 0; b < counts_.size(); ++b) {
            seen += counts_[b];
            if (seen > rank) return std::min(middle(b), static_cast<double>(max_));
        }
        return static_cast<double>(max_);
    }

private:
    static constexpr unsigned sub_bits = 5; // 32 buckets per power of two
    static constexpr std::size_t linear = std::size_t{2} << sub_bits; // below 64 ns: one bucket per ns
    static std::size_t bucket(std::uint64_t ns) noexcept {
        if (ns < linear) return static_cast<std::size_t>(ns);
        const unsigned shift = static_cast<unsigned>(std::bit_width(ns)) - (sub_bits + 1);
        return (std::size_t{shift} << sub_bits) + static_cast<std::size_t>(ns >> shift);
    }
    static double middle(std::size_t b) noexcept {
        if (b < linear) return static_cast<double>(b);
        const std::size_t shift = (b >> sub_bits) - 1;
        const std::uint64_t low = static_cast<std::uint64_t>(b - (shift << sub_bits)) << shift;
        return static_cast<double>(low) + static_cast<double>((std::uint64_t{1} << shift) - 1) / 2;
    }
    std::array<std::uint64_t, ((64 - sub_bits) << sub_bits) + linear> counts_{};
    std::uint64_t count_ = 0, sum_ = 0, max_ = 0;
};

// The virtio feature bits the driver asks for.
[[nodiscard]] inline std::uint64_t driver_features(const driver_options& o) noexcept {
    std::uint64_t f = wire::virtio_feature::version_1 | feature::size_max | feature::seg_max | feature::blk_size |
                      feature::flush | feature::ro;
    if (o.packed) f |= wire::virtio_feature::ring_packed;
    return f;
}

template <protocol::frontend_channel Channel = protocol::socket_channel>
class blk_driver {
public:
    using frontend_type = protocol::frontend<Channel>;
    template <class T>
    using result = expected<T, protocol::frontend_error>;

    // Negotiates, reads the config space (CONFIG is required: it holds the capacity), shares
    // memory, sets vring 0 up and sets DRIVER_OK.
    [[nodiscard]] static result<std::unique_ptr<blk_driver>> open(Channel channel, driver_options o) {
        using protocol::frontend_errc;
        if (o.depth == 0 || o.chunk == 0 || o.chunk % sector_size != 0 || o.queue_size < 3)
            return unexpected(protocol::frontend_error{frontend_errc::invalid_argument, std::nullopt,
                                                       "depth >= 1, chunk a multiple of 512, queue size >= 3"});
        protocol::frontend_options fo;
        fo.features = driver_features(o);
        fo.required_features = wire::virtio_feature::version_1 | (o.packed ? wire::virtio_feature::ring_packed : 0);
        fo.timeout = o.timeout;
        fo.use_mem_slots = o.use_mem_slots;
        std::unique_ptr<blk_driver> d(new blk_driver(std::move(channel), std::move(fo), o));
        if (auto r = d->start(); !r) return unexpected(r.error());
        return d;
    }

    [[nodiscard]] const config& device_config() const noexcept { return config_; }
    [[nodiscard]] std::uint64_t capacity_sectors() const noexcept { return config_.capacity; }
    [[nodiscard]] std::uint64_t capacity_bytes() const noexcept { return config_.capacity * sector_size; }
    // The logical block size (BLK_SIZE), or 512 when the device does not say.
    [[nodiscard]] std::uint32_t block_size() const noexcept {
        return wire::has(frontend_.features(), feature::blk_size) && config_.blk_size != 0 ? config_.blk_size
                                                                                             : sector_size;
    }
    [[nodiscard]] bool read_only() const noexcept { return wire::has(frontend_.features(), feature::ro); }
    [[nodiscard]] bool has_flush() const noexcept { return wire::has(frontend_.features(), feature::flush); }
    [[nodiscard]] frontend_type& frontend() noexcept { return frontend_; }

    // Reads out.size() bytes (a multiple of 512) from `sector` on.
    result<void> read(std::uint64_t sector, std::span<std::byte> out) {
        return transfer(request_type::in, sector, out.data(), out.size());
    }
    // Writes in.size() bytes (a multiple of 512) from `sector` on.
    result<void> write(std::uint64_t sector, std::span<const std::byte> in) {
        if (read_only())
            return fail(protocol::frontend_errc::rejected, "write: the device is read-only (VIRTIO_BLK_F_RO)");
        return transfer(request_type::out, sector, const_cast<std::byte*>(in.data()), in.size());
    }
    // Makes completed writes durable (FLUSH); nothing to do without VIRTIO_BLK_F_FLUSH (a device
    // without it has no volatile cache, §5.2.6.2).
    result<void> flush() {
        if (!has_flush()) return {};
        return transfer(request_type::flush, 0, nullptr, 0);
    }
    // The device id string (GET_ID: up to 20 bytes, NUL-padded).
    result<std::string> get_id() {
        std::array<std::byte, id_bytes> id{};
        if (auto r = transfer(request_type::get_id, 0, id.data(), id.size()); !r) return unexpected(r.error());
        std::string s;
        for (std::byte b : id) {
            if (b == std::byte{0}) break;
            s.push_back(static_cast<char>(b));
        }
        return s;
    }

    // Requests the driver keeps in flight at most (its bounce-buffer slots).
    [[nodiscard]] std::uint32_t slots() const noexcept { return depth_; }

    // A load of random reads and writes (random_io_options) until its duration or request count
    // is reached, then waits for every request in flight. Writes carry pseudo-random bytes
    // (the disk's content is lost where they land); reads are discarded. Only the slots'
    // memory is used.
    result<random_io_report> random_io(const random_io_options& o) {
        using protocol::frontend_errc;
        const std::uint32_t depth = o.depth == 0 ? depth_ : o.depth;
        if (o.block == 0 || o.block % sector_size != 0 || o.block > chunk_)
            return fail(frontend_errc::invalid_argument, "random i/o: block of " + std::to_string(o.block) +
                                                             " bytes: not a multiple of 512 in [512, " +
                                                             std::to_string(chunk_) + "] (the chunk)");
        if (depth > depth_)
            return fail(frontend_errc::invalid_argument,
                        "random i/o: depth " + std::to_string(depth) + " exceeds the driver's " + std::to_string(depth_) +
                            " slots (at most depth, and queue size / 3 descriptors per request)");
        if (o.read_percent > 100) return fail(frontend_errc::invalid_argument, "random i/o: read_percent above 100");
        if (o.duration.count() <= 0 && o.requests == 0)
            return fail(frontend_errc::invalid_argument, "random i/o: give a duration or a request count");
        if (o.read_percent < 100 && read_only())
            return fail(frontend_errc::rejected, "random i/o: the device is read-only (VIRTIO_BLK_F_RO)");
        const std::uint64_t blocks = capacity_bytes() / o.block;
        if (blocks == 0) return fail(frontend_errc::invalid_argument, "random i/o: the disk is smaller than one block");

        std::mt19937_64 gen(o.seed);
        if (o.read_percent < 100) // what the writes carry
            for (std::uint32_t i = 0; i < depth; ++i)
                for (std::uint32_t b = 0; b < o.block; b += 8) {
                    const std::uint64_t w = gen();
                    std::memcpy(slots_[i].host + data_offset + b, &w, sizeof w);
                }
        std::uniform_int_distribution<std::uint64_t> pick_block(0, blocks - 1);
        std::uniform_int_distribution<std::uint32_t> pick_percent(0, 99);
        random_io_report report;
        report.block = o.block;
        report.depth = depth;
        latency_histogram latency;
        const auto start = clock_type::now();
        const auto deadline = o.duration.count() > 0 ? start + o.duration : clock_type::time_point::max();
        std::uint64_t issued = 0;
        auto next = [&](slot& s) {
            if ((o.requests != 0 && issued == o.requests) || clock_type::now() >= deadline) return false;
            ++issued;
            s.type = pick_percent(gen) < o.read_percent ? request_type::in : request_type::out;
            s.sector = pick_block(gen) * (o.block / sector_size);
            s.len = o.block;
            s.user = nullptr; // the data stays in the slot
            return true;
        };
        auto completed = [&](const slot& s, clock_type::time_point reaped_at) {
            latency.add(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(reaped_at - s.posted_at).count()));
            ++(s.type == request_type::in ? report.reads : report.writes);
        };
        if (auto r = run_requests(depth, next, completed); !r) return unexpected(r.error());
        const auto end = clock_type::now();
        report.requests = latency.count();
        report.bytes = report.requests * o.block;
        report.seconds = std::chrono::duration<double>(end - start).count();
        report.iops = report.seconds > 0 ? static_cast<double>(report.requests) / report.seconds : 0;
        report.mean_us = latency.mean() / 1000;
        report.p50_us = latency.quantile(0.50) / 1000;
        report.p99_us = latency.quantile(0.99) / 1000;
        report.max_us = static_cast<double>(latency.max()) / 1000;
        return report;
    }

    result<void> close() { return frontend_.stop(); }

private:
    using clock_type = std::chrono::steady_clock;
    struct slot {
        std::uint64_t gpa = 0;    // header at +0, status at +16, data at +64
        std::byte* host = nullptr;
        std::byte* user = nullptr; // a write's data is copied from here, a read's to here; null: it stays in the slot
        std::uint32_t len = 0;
        std::uint64_t sector = 0;
        request_type type = request_type::in;
        clock_type::time_point posted_at{};
    };
    static constexpr std::uint64_t data_offset = 64;

    blk_driver(Channel channel, protocol::frontend_options fo, const driver_options& o)
        : frontend_(std::move(channel), std::move(fo)), options_(o) {}

    static unexpected<protocol::frontend_error> fail(protocol::frontend_errc c, std::string why) {
        return unexpected(protocol::frontend_error{c, std::nullopt, std::move(why)});
    }

    result<void> start() {
        if (auto r = frontend_.negotiate(); !r) return r;
        auto raw = frontend_.get_config(0, config::size);
        if (!raw) return unexpected(raw.error());
        auto c = config::parse(*raw);
        if (!c) return fail(protocol::frontend_errc::malformed_reply, "config space too short");
        config_ = *c;
        chunk_ = options_.chunk;
        if (wire::has(frontend_.features(), feature::size_max) && config_.size_max >= sector_size)
            chunk_ = std::min<std::uint32_t>(chunk_, config_.size_max / sector_size * sector_size);
        depth_ = std::min<std::uint32_t>(options_.depth, options_.queue_size / 3);
        const std::uint64_t slot_bytes = (data_offset + chunk_ + 4095) & ~std::uint64_t{4095};
        const std::uint64_t need = slot_bytes * depth_ + 64 * std::uint64_t{options_.queue_size} + (1 << 20);
        auto mem = protocol::frontend_memory::create(
            {options_.memory_regions, need / options_.memory_regions + slot_bytes + (64 << 10), 0x4000'0000, true});
        if (!mem) return unexpected(mem.error());
        if (auto r = frontend_.set_memory(std::move(*mem)); !r) return r;
        auto v = frontend_.setup_vring(0, {options_.queue_size, 0, true});
        if (!v) return unexpected(v.error());
        vring_ = *v;
        auto& memory = frontend_.memory();
        for (std::uint32_t i = 0; i < depth_; ++i) {
            auto a = memory.allocate(slot_bytes, 4096);
            if (!a) return unexpected(a.error());
            slots_.push_back({*a, memory.translate(*a, slot_bytes)});
        }
        return frontend_.driver_ok();
    }

    // Runs one transfer as requests of at most chunk_ bytes, depth_ in flight.
    result<void> transfer(request_type type, std::uint64_t sector, std::byte* data, std::size_t bytes) {
        const bool data_request = type == request_type::in || type == request_type::out;
        if (data_request && bytes % sector_size != 0)
            return fail(protocol::frontend_errc::invalid_argument, "transfer of " + std::to_string(bytes) +
                                                                       " bytes: not a multiple of 512");
        if (data_request && (sector > config_.capacity || bytes / sector_size > config_.capacity - sector))
            return fail(protocol::frontend_errc::invalid_argument,
                        "sectors [" + std::to_string(sector) + ", +" + std::to_string(bytes / sector_size) +
                            ") beyond the capacity of " + std::to_string(config_.capacity));
        if (data_request && bytes == 0) return {};
        std::size_t offset = 0;
        bool posted_any = false; // FLUSH and GET_ID are one request whatever `bytes` is
        auto next = [&](slot& s) {
            if (posted_any && offset >= bytes) return false;
            posted_any = true;
            s.type = type;
            s.len = static_cast<std::uint32_t>(data_request ? std::min<std::size_t>(chunk_, bytes - offset) : bytes);
            s.sector = data_request ? sector + offset / sector_size : 0;
            s.user = data + offset;
            offset += s.len;
            return true;
        };
        return run_requests(depth_, next, [](const slot&, clock_type::time_point) {});
    }

    // The loop every operation runs on: posts the requests `next(slot&)` describes (it fills
    // type, sector, len and user, or returns false when there are no more) with up to `depth`
    // in flight, reaps them and hands each one that completed with OK to `completed(slot,
    // reaped_at)`. Any other status, a broken ring or `timeout` without a completion ends it
    // with an error (the requests still in flight are then abandoned with the session).
    template <class Next, class Completed>
    result<void> run_requests(std::uint32_t depth, Next&& next, Completed&& completed) {
        std::vector<std::uint32_t> free;
        for (std::uint32_t i = depth; i-- > 0;) free.push_back(i);
        std::uint32_t in_flight = 0;
        bool more = true;
        auto last_progress = clock_type::now();
        while (more || in_flight != 0) {
            std::size_t posted = 0;
            while (more && !free.empty()) {
                const std::uint32_t i = free.back();
                if (!next(slots_[i])) {
                    more = false;
                    break;
                }
                free.pop_back();
                if (auto r = post(i); !r) return r;
                ++in_flight;
                ++posted;
            }
            if (posted != 0) vring_->kick_if_needed();
            std::array<ring::used_buffer, 32> used;
            const std::size_t n = vring_->reap_burst(used);
            if (vring_->broken()) return fail(protocol::frontend_errc::ring_setup, "virtqueue: " + vring_->error().message());
            const auto reaped_at = n != 0 ? clock_type::now() : clock_type::time_point{};
            for (std::size_t k = 0; k < n; ++k) {
                const auto i = static_cast<std::uint32_t>(used[k].token);
                slot& s = slots_[i];
                const auto st = static_cast<status>(s.host[16]);
                if (st != status::ok)
                    return fail(protocol::frontend_errc::rejected,
                                std::string(name(s.type)) + " at sector " + std::to_string(s.sector) + ": " +
                                    (s.host[16] == std::byte{0xff} ? "no status written" : describe(st)));
                if (s.user != nullptr && device_writes(s.type)) std::memcpy(s.user, s.host + data_offset, s.len);
                completed(static_cast<const slot&>(s), reaped_at);
                free.push_back(i);
                --in_flight;
            }
            if (n != 0) {
                last_progress = reaped_at;
                continue;
            }
            if (in_flight == 0) continue;
            if (clock_type::now() - last_progress > options_.timeout)
                return fail(protocol::frontend_errc::timed_out,
                            std::to_string(in_flight) + " requests not completed within " +
                                std::to_string(options_.timeout.count()) + " ms");
            // Sleep until the back-end calls (bounded: a lost call costs 20 ms, never a hang).
            vring_->wait_call(std::chrono::milliseconds(20));
            if (auto r = frontend_.serve_backend_requests(); !r) return unexpected(r.error());
        }
        return {};
    }

    // Makes slot i's request a chain of header, data, status and adds it to the ring.
    result<void> post(std::uint32_t i) {
        slot& s = slots_[i];
        store_header({static_cast<std::uint32_t>(s.type), 0, s.sector}, s.host);
        s.host[16] = std::byte{0xff}; // a status the device must overwrite
        if (s.type == request_type::out && s.user != nullptr) std::memcpy(s.host + data_offset, s.user, s.len);
        // Header, data, status: the data element is readable for OUT, writable for IN and
        // GET_ID, and absent without data (FLUSH).
        const ring::buffer header{s.gpa, header_size}, data{s.gpa + data_offset, s.len}, status_byte{s.gpa + 16, 1};
        const std::array<ring::buffer, 1> header_only{header}, status_only{status_byte};
        const std::array<ring::buffer, 2> header_data{header, data}, data_status{data, status_byte};
        s.posted_at = clock_type::now();
        bool added;
        if (s.len != 0 && s.type == request_type::out) added = vring_->add(header_data, status_only, i);
        else if (s.len != 0 && device_writes(s.type)) added = vring_->add(header_only, data_status, i);
        else added = vring_->add(header_only, status_only, i);
        if (!added)
            return fail(protocol::frontend_errc::ring_setup, "virtqueue full");
        return {};
    }

    static bool device_writes(request_type t) noexcept { return t == request_type::in || t == request_type::get_id; }

    static const char* name(request_type t) noexcept {
        switch (t) {
        case request_type::in: return "read";
        case request_type::out: return "write";
        case request_type::flush: return "flush";
        case request_type::get_id: return "get-id";
        default: return "request";
        }
    }

    frontend_type frontend_;
    driver_options options_;
    config config_;
    std::uint32_t chunk_ = 0;
    std::uint32_t depth_ = 0;
    protocol::driver_vring* vring_ = nullptr;
    std::vector<slot> slots_;
};

} // namespace vvu::device::blk
