// device::rng: the device side of a virtio entropy device (virtio 1.2 §5.4, device id 4) for
// protocol::backend — the smallest whole device, and the one docs/write-a-backend.md walks
// through. One vring (requestq, §5.4.2), no feature bits of its own (§5.4.3), no config space
// (§5.4.4). Each chain the driver makes available gets its writable part filled with bytes from
// the kernel's CSPRNG (getrandom(2)) and comes back with the number of bytes written (§5.4.6.1).
//
//   runtime::server<transport::unix_socket, device::rng> port(std::move(*t));
//   runtime::poller<device::rng> data_path(port.device(), {.event_mode = true});
//   port.guard_data_path([&](auto t) { return data_path.pause(t); }, [&] { data_path.resume(); });
//
// Threads: the control thread calls the protocol::device operations, the poller calls poll()
// and wait_for_kicks(); with guard_data_path they never overlap, so the device has no lock.
// The counters are atomics because a statistics thread may read them at any time.
//
// A hostile front-end can only get bytes: a chain with no writable part, or one the kernel
// cannot write to, completes with the length actually written (maybe 0); a ring the driver
// corrupted (the ring layer marks it broken) yields no more chains until it is set up again.
#pragma once

#include <vvu/protocol/kick_wait.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/ring/chain.hpp>

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace vvu::device {

class rng {
public:
    // Bytes given to one chain at most: a driver asking for more gets a short (but valid)
    // answer, §5.4.6.1 lets the device write fewer bytes than the buffer holds.
    static constexpr std::uint32_t max_bytes_per_request = 64 * 1024;

    // ---------------------------------------------------------------- protocol::device
    std::uint64_t features() const noexcept { return 0; }          // §5.4.3: none
    std::uint64_t protocol_features() const noexcept { return 0; } // no CONFIG: §5.4.4, none
    std::uint32_t vring_count() const noexcept { return 1; }       // requestq
    void set_features(std::uint64_t) noexcept {}
    bool read_config(std::uint32_t, std::span<std::uint8_t>) const noexcept { return false; }
    bool write_config(std::uint32_t, std::span<const std::uint8_t>) noexcept { return false; }
    void start_vring(std::unique_ptr<protocol::vring> v) {
        // Polled while requests flow; wait_for_kicks asks for kicks before the thread sleeps.
        v->visit([](auto& ring) { ring.disable_notifications(); });
        requestq_ = std::move(v);
    }
    std::unique_ptr<protocol::vring> stop_vring(std::uint32_t) { return std::move(requestq_); }
    void reset() { requestq_.reset(); }

    // ---------------------------------------------------------------- data path
    // One pass: fills and completes up to a burst of requests. Returns how many.
    std::size_t poll() {
        // A disabled ring is not ours to touch ("Ring states").
        if (!requestq_ || !requestq_->enabled()) return 0;
        std::size_t n = 0;
        std::uint64_t bytes = 0;
        requestq_->visit([&](auto& ring) {
            std::array<ring::chain, ring::max_burst> chains;
            std::array<ring::used_element, ring::max_burst> done;
            n = ring.pop_burst(chains);
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint32_t written = fill(chains[i]);
                done[i] = {chains[i].id(), written};
                bytes += written;
            }
            ring.push_burst(std::span(done).first(n));
        });
        if (n == 0) return 0;
        requestq_->notify();
        requests_.fetch_add(n, std::memory_order_relaxed);
        bytes_.fetch_add(bytes, std::memory_order_relaxed);
        return n;
    }

    // Event mode (runtime::poller): sleeps until the driver kicks, `wake` is readable or
    // `timeout` passes. False, without sleeping, when sleeping could miss a request: one
    // arrived meanwhile, or the ring has no kick fd (the front-end wants it polled). A ring
    // that is not running is not waited on: the control thread wakes the poller (`wake`)
    // before it changes that.
    bool wait_for_kicks(std::chrono::milliseconds timeout, int wake = -1) {
        return kicks_.wait(std::span(&requestq_, 1), [](protocol::vring& v) { return v.enabled(); }, timeout, wake);
    }

    // Requests completed and random bytes given, since the process started.
    std::uint64_t requests() const noexcept { return requests_.load(std::memory_order_relaxed); }
    std::uint64_t bytes() const noexcept { return bytes_.load(std::memory_order_relaxed); }

private:
    // Writes random bytes straight into the chain's writable segments (at most
    // max_bytes_per_request); returns how many it wrote.
    static std::uint32_t fill(const ring::chain& c) noexcept {
        std::uint32_t written = 0;
        for (const ring::segment& s : c.writable()) {
            std::uint32_t off = 0;
            const std::uint32_t want = std::min(s.len, max_bytes_per_request - written);
            while (off < want) {
                const ssize_t r = ::getrandom(s.data + off, want - off, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) return written + off; // (EFAULT: nothing more can be written)
                off += static_cast<std::uint32_t>(r);
            }
            written += off;
            if (written == max_bytes_per_request) break;
        }
        return written;
    }

    std::unique_ptr<protocol::vring> requestq_;
    protocol::kick_wait kicks_; // the data thread's (event mode)
    std::atomic<std::uint64_t> requests_{0};
    std::atomic<std::uint64_t> bytes_{0};
};

} // namespace vvu::device
