// A unit test that cannot run here (a missing kernel facility, no huge pages) says so with
// VVU_SKIP: ctest reports it as skipped (the line matches the tests' SKIP_REGULAR_EXPRESSION,
// tests/CMakeLists.txt), never as passed. Under CI=true nothing may be skipped: the test fails
// with the reason, so a machine that lost a facility cannot turn a check into a silent pass.
#pragma once

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace vvu::test {

inline bool under_ci() noexcept {
    const char* ci = std::getenv("CI");
    return ci != nullptr && std::strcmp(ci, "true") == 0;
}

} // namespace vvu::test

// Ends the test case: skipped, or failed under CI. A statement; use as `VVU_SKIP("why");`.
#define VVU_SKIP(reason)                                                                               \
    do {                                                                                              \
        const std::string vvu_skip_reason_ = (reason);                                                \
        if (::vvu::test::under_ci()) FAIL("cannot run under CI=true: " << vvu_skip_reason_);          \
        std::printf("VVU-SKIPPED: %s\n", vvu_skip_reason_.c_str());                                    \
        std::fflush(stdout);                                                                          \
        SUCCEED("skipped: " << vvu_skip_reason_);                                                     \
        return;                                                                                       \
    } while (false)
