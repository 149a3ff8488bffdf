// Reading a command line option by option: what the example programs share.
#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>

namespace vvu::examples {

// A whole decimal number, nothing after it.
template <class T>
bool parse_number(std::string_view s, T& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size();
}

class command_line {
public:
    command_line(int argc, char** argv) : argc_(argc), argv_(argv) {}

    // The next argument (an option, or an option's value); nullopt at the end.
    std::optional<std::string_view> next() {
        if (i_ >= argc_) return std::nullopt;
        return std::string_view(argv_[i_++]);
    }
    template <class T>
    bool number(T& out) {
        const auto v = next();
        return v && parse_number(*v, out);
    }
    bool text(std::string& out) {
        const auto v = next();
        if (v) out = std::string(*v);
        return v.has_value();
    }

private:
    int argc_;
    char** argv_;
    int i_ = 1;
};

} // namespace vvu::examples
