// enum_category<Errc, Name>: the std::error_category of an error enum, written once. A layer's
// error.hpp lists its codes and, in the enum's namespace (found by argument-dependent lookup),
// their messages:
//
//   enum class errc : int { bad_queue_size = 1, … };
//   constexpr const char* describe(errc e) noexcept { switch (e) { … } return "unknown ring error"; }
//   inline const std::error_category& ring_category() noexcept {
//       return enum_category<errc, "vvu.ring">::instance();
//   }
//
// instance() is the only object of its type (a function-local static of an inline function,
// merged across translation units), so codes of one enum compare equal wherever they were made.
#pragma once

#include <cstddef>
#include <string>
#include <system_error>

namespace vvu {

// A string literal usable as a template argument (the category's name).
template <std::size_t N>
struct category_name {
    char text[N];
    constexpr category_name(const char (&s)[N]) noexcept { // NOLINT: implicit from a literal on purpose
        for (std::size_t i = 0; i < N; ++i) text[i] = s[i];
    }
};

template <typename Errc, category_name Name>
class enum_category final : public std::error_category {
public:
    [[nodiscard]] static const std::error_category& instance() noexcept {
        static const enum_category category;
        return category;
    }

    [[nodiscard]] const char* name() const noexcept override { return Name.text; }
    [[nodiscard]] std::string message(int ev) const override { return describe(static_cast<Errc>(ev)); }

private:
    enum_category() noexcept = default;
};

} // namespace vvu
