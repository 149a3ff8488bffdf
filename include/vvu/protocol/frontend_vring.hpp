// driver_vring: one vring as the front-end runs it — the driver side of a split or packed ring
// (ring/) over the front-end's shared memory, and the kick, call and error eventfds whose other
// ends the back-end got with SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR.
//
//   v.add_burst(requests);           // post buffers (ring::request: readable, writable, token)
//   v.kick_if_needed();              // notify the back-end unless it suppressed kicks
//   n = v.reap_burst(used);          // completed buffers (token, bytes written)
//   v.wait_call(10ms);               // sleep until the back-end signals used buffers (bounded)
//   v.wait_error(0ms);               // has the back-end found the ring broken (SET_VRING_ERR)?
//
// One thread drives a vring at a time; different vrings may be driven by different threads.
#pragma once

#include <vvu/protocol/frontend_memory.hpp>
#include <vvu/ring/packed.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/util/eventfd.hpp>

#include <chrono>
#include <cstdint>
#include <span>
#include <system_error>
#include <variant>

namespace vvu::protocol {

class driver_vring {
public:
    using split_ring = ring::split_driver<frontend_memory>;
    using packed_ring = ring::packed_driver<frontend_memory>;

    driver_vring(std::uint32_t index, split_ring r, eventfd_notifier kick, eventfd_notifier call, eventfd_notifier error)
        : index_(index), ring_(std::move(r)), kick_(std::move(kick)), call_(std::move(call)), error_(std::move(error)) {}
    driver_vring(std::uint32_t index, packed_ring r, eventfd_notifier kick, eventfd_notifier call, eventfd_notifier error)
        : index_(index), ring_(std::move(r)), kick_(std::move(kick)), call_(std::move(call)), error_(std::move(error)) {}

    // Calls f with the split_driver or packed_driver.
    template <class F>
    decltype(auto) visit(F&& f) {
        if (auto* p = std::get_if<packed_ring>(&ring_)) return f(*p);
        return f(std::get<split_ring>(ring_));
    }

    [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
    [[nodiscard]] bool packed() const noexcept { return std::holds_alternative<packed_ring>(ring_); }
    [[nodiscard]] std::uint32_t size() { return visit([](auto& r) { return r.size(); }); }

    std::size_t add_burst(std::span<const ring::request> reqs) noexcept {
        return visit([&](auto& r) { return r.add_burst(reqs); });
    }
    bool add(std::span<const ring::buffer> readable, std::span<const ring::buffer> writable, std::uint64_t token) noexcept {
        return visit([&](auto& r) { return r.add(readable, writable, token); });
    }
    std::size_t reap_burst(std::span<ring::used_buffer> out) noexcept {
        return visit([&](auto& r) { return r.reap_burst(out); });
    }
    bool enable_interrupts() noexcept { return visit([](auto& r) { return r.enable_interrupts(); }); }
    void disable_interrupts() noexcept { visit([](auto& r) { r.disable_interrupts(); }); }
    [[nodiscard]] std::uint32_t free_descriptors() { return visit([](auto& r) { return r.free_descriptors(); }); }
    [[nodiscard]] std::uint32_t outstanding() { return visit([](auto& r) { return r.outstanding(); }); }
    [[nodiscard]] bool broken() { return visit([](auto& r) { return r.broken(); }); }
    [[nodiscard]] std::error_code error() { return visit([](auto& r) { return r.error(); }); }

    // Notifies the back-end unconditionally.
    void kick() const noexcept { kick_.signal(); }
    // Notifies the back-end if the ring's suppression rules want it after the adds since the
    // last call (virtio 1.2 §2.7.13.4 / §2.8.21.3). Returns whether it kicked.
    bool kick_if_needed() noexcept {
        if (!visit([](auto& r) { return r.needs_kick(); })) return false;
        kick_.signal();
        return true;
    }
    // Waits up to `timeout` for the back-end's call and consumes it.
    bool wait_call(std::chrono::milliseconds timeout) const noexcept { return call_.wait(timeout); }
    // Waits up to `timeout` for the back-end to signal that it found this ring broken and
    // stopped it ("SET_VRING_ERR"); consumes the signal.
    bool wait_error(std::chrono::milliseconds timeout) const noexcept { return error_.wait(timeout); }

    [[nodiscard]] int kick_fd() const noexcept { return kick_.native_handle(); }
    [[nodiscard]] int call_fd() const noexcept { return call_.native_handle(); }
    [[nodiscard]] int error_fd() const noexcept { return error_.native_handle(); }

private:
    std::uint32_t index_;
    std::variant<split_ring, packed_ring> ring_;
    eventfd_notifier kick_;
    eventfd_notifier call_;
    eventfd_notifier error_;
};

} // namespace vvu::protocol
