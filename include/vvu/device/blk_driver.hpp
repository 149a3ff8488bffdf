// blk_driver: the driver side of virtio-blk (virtio 1.2 §5.2) over protocol::frontend — reads,
// writes, flushes and the device id, against any vhost-user-blk back-end (qemu-storage-daemon,
// SPDK, …).
//
//   auto bd = device::blk::blk_driver<>::open(std::move(*channel), {});
//   (*bd)->capacity_bytes();                      // from GET_CONFIG
//   (*bd)->write(0, data);  (*bd)->read(0, out);  (*bd)->flush();
//
// One virtqueue (vring 0). A transfer is split into requests of at most `chunk` bytes (and
// size_max when SIZE_MAX is negotiated), each one a chain of three descriptors — the 16-byte
// header (type, reserved, sector), the data, the status byte — with up to `depth` requests in
// flight. Data goes through bounce buffers in the shared memory (the back-end sees nothing
// else of this process). Completions are waited for on the call eventfd, in bounded slices.
// Not thread-safe: one thread.
#pragma once

#include <vvu/device/blk.hpp>
#include <vvu/protocol/frontend.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
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

    result<void> close() { return frontend_.stop(); }

private:
    struct slot {
        std::uint64_t gpa = 0;    // header at +0, status at +16, data at +64
        std::byte* host = nullptr;
        std::byte* user = nullptr; // where a read's data goes
        std::uint32_t len = 0;
        std::uint64_t sector = 0;
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
            slots_.push_back({*a, memory.translate(*a, slot_bytes), nullptr, 0, 0});
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
        const bool device_writes = type == request_type::in || type == request_type::get_id;
        std::vector<std::uint32_t> free;
        for (std::uint32_t i = 0; i < depth_; ++i) free.push_back(i);
        std::size_t offset = 0;
        std::uint32_t in_flight = 0;
        bool first = true;
        auto last_progress = std::chrono::steady_clock::now();
        while (first || offset < bytes || in_flight != 0) {
            // Post what fits.
            std::size_t posted = 0;
            while ((first || offset < bytes) && !free.empty()) {
                first = false;
                const std::uint32_t i = free.back();
                free.pop_back();
                slot& s = slots_[i];
                const auto len = static_cast<std::uint32_t>(data_request ? std::min<std::size_t>(chunk_, bytes - offset) : bytes);
                s.len = len;
                s.sector = sector + offset / sector_size;
                s.user = data + offset;
                store_header({static_cast<std::uint32_t>(type), 0, data_request ? s.sector : 0}, s.host);
                s.host[16] = std::byte{0xff}; // a status the device must overwrite
                if (type == request_type::out) std::memcpy(s.host + data_offset, s.user, len);
                std::array<ring::buffer, 2> readable{ring::buffer{s.gpa, header_size}, ring::buffer{s.gpa + data_offset, len}};
                std::array<ring::buffer, 2> writable{ring::buffer{s.gpa + data_offset, len}, ring::buffer{s.gpa + 16, 1}};
                const std::size_t nr = (type == request_type::out && len != 0) ? 2 : 1;
                const std::size_t nw0 = (device_writes && len != 0) ? 0 : 1; // skip the data element
                if (!vring_->add(std::span(readable).first(nr), std::span(writable).subspan(nw0), i))
                    return fail(protocol::frontend_errc::ring_setup, "virtqueue full");
                ++in_flight;
                ++posted;
                offset += len;
            }
            if (posted != 0) vring_->kick_if_needed();
            // Reap what completed.
            std::array<ring::used_buffer, 32> used;
            const std::size_t n = vring_->reap_burst(used);
            if (vring_->broken()) return fail(protocol::frontend_errc::ring_setup, "virtqueue: " + vring_->error().message());
            for (std::size_t k = 0; k < n; ++k) {
                const auto i = static_cast<std::uint32_t>(used[k].token);
                slot& s = slots_[i];
                const auto st = static_cast<status>(s.host[16]);
                if (st != status::ok)
                    return fail(protocol::frontend_errc::rejected,
                                std::string(name(type)) + " at sector " + std::to_string(s.sector) + ": " +
                                    (s.host[16] == std::byte{0xff} ? "no status written" : describe(st)));
                if (device_writes) std::memcpy(s.user, s.host + data_offset, s.len);
                free.push_back(i);
                --in_flight;
            }
            if (n != 0) {
                last_progress = std::chrono::steady_clock::now();
                continue;
            }
            if (in_flight == 0) continue;
            const auto quiet = std::chrono::steady_clock::now() - last_progress;
            if (quiet > options_.timeout)
                return fail(protocol::frontend_errc::timed_out,
                            std::string(name(type)) + ": " + std::to_string(in_flight) + " requests not completed within " +
                                std::to_string(options_.timeout.count()) + " ms");
            // Sleep until the back-end calls (bounded: a lost call costs 20 ms, never a hang).
            vring_->wait_call(std::chrono::milliseconds(20));
            if (auto r = frontend_.serve_backend_requests(); !r) return unexpected(r.error());
        }
        return {};
    }

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
