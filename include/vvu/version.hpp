#pragma once

#include <string_view>

#define VVU_VERSION_STRING "0.1.0"

namespace vvu {
// The version of the compiled library (may differ from VVU_VERSION_STRING of the headers).
std::string_view library_version() noexcept;
} // namespace vvu
