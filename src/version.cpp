// The library's version, compiled in so a binary can report what it linked against.
#include <vvu/version.hpp>

namespace vvu {
std::string_view library_version() noexcept { return VVU_VERSION_STRING; }
} // namespace vvu
