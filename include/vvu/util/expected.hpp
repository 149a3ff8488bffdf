// vvu::expected — the subset of C++23 std::expected that vvu needs.
//
// Why not std::expected: vvu targets C++20 (g++ 12, clang 14). Why not Boost.Outcome:
// its compile cost lands on every header of the hot path for two member functions we use.
// The names and semantics follow std::expected so the alias can be switched later.
#pragma once

#include <type_traits>
#include <utility>
#include <variant>

namespace vvu {

template <class E>
class unexpected {
public:
    constexpr explicit unexpected(E e) : error_(std::move(e)) {}
    constexpr const E& error() const& noexcept { return error_; }
    constexpr E& error() & noexcept { return error_; }
    constexpr E&& error() && noexcept { return std::move(error_); }

private:
    E error_;
};

template <class E>
unexpected(E) -> unexpected<E>;

template <class T, class E>
class [[nodiscard]] expected {
public:
    using value_type = T;
    using error_type = E;

    template <class U = T>
        requires std::is_constructible_v<T, U&&>
    constexpr expected(U&& v) : storage_(std::in_place_index<0>, std::forward<U>(v)) {}
    template <class G>
    constexpr expected(unexpected<G> u) : storage_(std::in_place_index<1>, std::move(u).error()) {}

    constexpr bool has_value() const noexcept { return storage_.index() == 0; }
    constexpr explicit operator bool() const noexcept { return has_value(); }

    constexpr T& value() & { return std::get<0>(storage_); }
    constexpr const T& value() const& { return std::get<0>(storage_); }
    constexpr T&& value() && { return std::get<0>(std::move(storage_)); }
    constexpr T& operator*() & { return value(); }
    constexpr const T& operator*() const& { return value(); }
    constexpr T&& operator*() && { return std::move(*this).value(); }
    constexpr T* operator->() { return &value(); }
    constexpr const T* operator->() const { return &value(); }

    constexpr const E& error() const& { return std::get<1>(storage_); }
    constexpr E& error() & { return std::get<1>(storage_); }

private:
    std::variant<T, E> storage_;
};

// expected<void, E>: success carries nothing.
template <class E>
class [[nodiscard]] expected<void, E> {
public:
    using value_type = void;
    using error_type = E;

    constexpr expected() = default;
    template <class G>
    constexpr expected(unexpected<G> u) : error_(std::move(u).error()), failed_(true) {}

    constexpr bool has_value() const noexcept { return !failed_; }
    constexpr explicit operator bool() const noexcept { return !failed_; }
    constexpr const E& error() const& { return error_; }

private:
    E error_{};
    bool failed_ = false;
};

} // namespace vvu
