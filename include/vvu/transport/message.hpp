// received_message: one vhost-user message as a transport delivers it — the header, the
// header and payload bytes (what wire::decode takes), and the fds that came with it, owned.
//
//   auto m = t.receive();                                    // expected<received_message, error>
//   auto msg = wire::decode<wire::front_request>(m->bytes(), m->fds.span());
//   unique_fd kick = m->fds.take(0);                         // keep an fd beyond the message
//
// Whatever fds are not taken are closed with the message, so none can leak whichever way
// the state machine handles (or refuses) it.
#pragma once

#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/header.hpp>
#include <vvu/wire/message.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <utility>

namespace vvu::transport {

// Up to wire::max_fds owned fds, also viewable as plain ints for wire::decode.
class owned_fds {
public:
    owned_fds() = default;
    owned_fds(owned_fds&& o) noexcept : fds_(std::move(o.fds_)), raw_(o.raw_), count_(std::exchange(o.count_, 0)) {}
    owned_fds& operator=(owned_fds&& o) noexcept {
        if (this != &o) {
            fds_ = std::move(o.fds_);
            raw_ = o.raw_;
            count_ = std::exchange(o.count_, 0);
        }
        return *this;
    }

    // Adds fd; false (and fd closed) when wire::max_fds are held already.
    bool push_back(unique_fd fd) noexcept {
        if (count_ == wire::max_fds) return false;
        raw_[count_] = fd.get();
        fds_[count_++] = std::move(fd);
        return true;
    }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    // The fds as ints, in arrival order (-1 where one was taken).
    [[nodiscard]] std::span<const int> span() const noexcept { return {raw_.data(), count_}; }
    [[nodiscard]] int operator[](std::size_t i) const noexcept { return raw_[i]; }
    // Takes fd i out (it is no longer closed with the message).
    [[nodiscard]] unique_fd take(std::size_t i) noexcept {
        if (i >= count_) return {};
        raw_[i] = -1;
        return std::move(fds_[i]);
    }
    // Takes every fd out, in order.
    [[nodiscard]] std::array<unique_fd, wire::max_fds> take_all() noexcept {
        std::array<unique_fd, wire::max_fds> out;
        for (std::size_t i = 0; i < count_; ++i) out[i] = take(i);
        return out;
    }
    void clear() noexcept {
        for (std::size_t i = 0; i < count_; ++i) fds_[i].reset();
        count_ = 0;
    }

private:
    std::array<unique_fd, wire::max_fds> fds_;
    std::array<int, wire::max_fds> raw_{};
    std::size_t count_ = 0;
};

struct received_message {
    wire::header header;
    std::array<std::byte, wire::max_message_size> storage{}; // header, then header.size bytes
    // The fds that came with it. A transport that keeps the resources itself (VVU) puts an
    // invalid fd wherever the message names one (wire::named_fds).
    owned_fds fds;

    // Header and payload: exactly what wire::decode / decode_reply take.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
        return {storage.data(), wire::header_size + header.size};
    }
    [[nodiscard]] std::span<const std::byte> payload() const noexcept {
        return {storage.data() + wire::header_size, header.size};
    }
};

} // namespace vvu::transport
