#include <vvu/wire/error.hpp>
#include <vvu/wire/request.hpp>

#include <fmt/format.h>

namespace vvu::wire {

std::string error::message() const {
    std::string_view request_name = "?";
    if (request != 0) {
        request_name = chan == channel::front ? name(static_cast<front_request>(request))
                                              : name(static_cast<back_request>(request));
    }
    std::string text = request == 0 ? std::string(describe(code))
                                    : fmt::format("{}: {}", request_name, describe(code));
    if (request != 0 && request_name == "UNKNOWN") text += fmt::format(" (id {})", request);
    if (got != 0 || want != 0) text += fmt::format(" (got {}, want {})", got, want);
    return text;
}

} // namespace vvu::wire
