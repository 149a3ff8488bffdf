// Errors of the memory layer: an enum registered as a std::error_category, and
// `memory::error`, which adds the region involved and the numbers, so that a log line reads
// "region 2 overlaps region 0" or "region 0: mmap failed: Cannot allocate memory".
#pragma once

#include <vvu/util/error_category.hpp>

#include <cstdint>
#include <string>
#include <system_error>

namespace vvu::memory {

enum class errc : int {
    too_many_regions = 1, // more regions than a table or the slot limit allows
    fd_count_mismatch,    // SET_MEM_TABLE: not one fd per region
    empty_region,         // memory_size == 0
    region_wraps,         // an address range overflows 2^64
    overlap,              // two regions share guest physical addresses
    bad_fd,               // fstat/fstatfs failed on the region's fd
    fd_too_small,         // the file behind the fd ends before mmap_offset + memory_size
    mmap_failed,          // mmap refused the region
    no_such_region,       // REM_MEM_REG for a region that is not in the table
};

[[nodiscard]] constexpr const char* describe(errc e) noexcept {
    switch (e) {
    case errc::too_many_regions: return "too many memory regions";
    case errc::fd_count_mismatch: return "not one fd per memory region";
    case errc::empty_region: return "memory region of size 0";
    case errc::region_wraps: return "memory region wraps around 2^64";
    case errc::overlap: return "memory regions overlap";
    case errc::bad_fd: return "cannot inspect the region's fd";
    case errc::fd_too_small: return "fd too small for region";
    case errc::mmap_failed: return "mmap failed";
    case errc::no_such_region: return "no such memory region";
    }
    return "unknown memory error";
}

[[nodiscard]] inline const std::error_category& memory_category() noexcept {
    return enum_category<errc, "vvu.memory">::instance();
}

[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), memory_category()};
}

struct error {
    errc code{};
    std::uint32_t region = 0; // index of the offending region (in the message that named it)
    std::uint32_t other = 0;  // overlap: the region it collides with
    std::uint64_t got = 0;    // the offending number (bytes, count), where one applies
    std::uint64_t want = 0;   // what was required instead, where one applies
    int sys = 0;              // errno of a failed system call, where one applies

    [[nodiscard]] std::error_code ec() const noexcept { return make_error_code(code); }
    // e.g. "region 1 overlaps region 0", "region 0: fd too small for region (4096 bytes,
    // needs 8192)", "region 0: mmap failed: Cannot allocate memory".
    [[nodiscard]] std::string message() const;
    friend bool operator==(const error&, const error&) = default;
};

} // namespace vvu::memory

template <>
struct std::is_error_code_enum<vvu::memory::errc> : std::true_type {};
