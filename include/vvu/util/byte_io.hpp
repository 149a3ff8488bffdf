// byte_writer / byte_reader: little-endian fields in a byte buffer, for vvu's own formats (the
// live-update hand-over). The reader never reads past its span: the first short or bad read
// latches failure, every later read returns a zero value, and ok() tells the caller at the end
// (so a decoder reads a whole structure and checks once, and cannot forget a check in between).
#pragma once

#include <vvu/util/endian.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vvu {

class byte_writer {
public:
    template <class T>
        requires std::is_integral_v<T>
    void put(T v) {
        const std::size_t at = out_.size();
        out_.resize(at + sizeof(T));
        le::store<T>(out_.data() + at, v);
    }
    void put_bool(bool b) { put<std::uint8_t>(b ? 1 : 0); }
    // A length-prefixed (u32) run of bytes.
    void put_bytes(std::span<const std::byte> b) {
        put<std::uint32_t>(static_cast<std::uint32_t>(b.size()));
        out_.insert(out_.end(), b.begin(), b.end());
    }
    void put_string(std::string_view s) { put_bytes(std::as_bytes(std::span(s.data(), s.size()))); }

    [[nodiscard]] std::vector<std::byte>& bytes() noexcept { return out_; }
    [[nodiscard]] std::vector<std::byte> take() noexcept { return std::move(out_); }

private:
    std::vector<std::byte> out_;
};

class byte_reader {
public:
    explicit byte_reader(std::span<const std::byte> in) noexcept : in_(in) {}

    template <class T>
        requires std::is_integral_v<T>
    T get() noexcept {
        if (!ok_ || in_.size() - pos_ < sizeof(T)) return fail(), T{};
        const T v = le::load<T>(in_.data() + pos_);
        pos_ += sizeof(T);
        return v;
    }
    // 0 or 1; anything else is a malformed input.
    bool get_bool() noexcept {
        const auto v = get<std::uint8_t>();
        if (v > 1) fail();
        return v == 1;
    }
    // A length-prefixed run of at most `max` bytes (a view into the input).
    std::span<const std::byte> get_bytes(std::size_t max) noexcept {
        const auto n = get<std::uint32_t>();
        if (!ok_ || n > max || in_.size() - pos_ < n) return fail(), std::span<const std::byte>{};
        auto s = in_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::string get_string(std::size_t max) {
        const auto b = get_bytes(max);
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }

    void fail() noexcept { ok_ = false; }
    [[nodiscard]] bool ok() const noexcept { return ok_; }
    // Bytes not read yet (bounds a count read from the input before trusting it).
    [[nodiscard]] std::size_t remaining() const noexcept { return in_.size() - pos_; }
    // Every byte consumed, and no read failed.
    [[nodiscard]] bool done() const noexcept { return ok_ && pos_ == in_.size(); }

private:
    std::span<const std::byte> in_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

} // namespace vvu
