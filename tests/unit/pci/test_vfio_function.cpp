// pci::vfio_function: what can be checked without a function bound to vfio-pci — opening
// something that is not one fails with a clear error and leaks nothing. (The binding drives a
// real function in interop.vvu-guest.*, inside a QEMU 11 guest.)
#include <vvu/pci/vfio_function.hpp>

#include <catch2/catch.hpp>

#include <dirent.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <string>

namespace {

int open_fds() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) ++n;
        ::closedir(d);
    }
    return n;
}

} // namespace

TEST_CASE("vfio_function: a function that is not there, or a path, is refused with ENODEV") {
    const int before = open_fds();
    for (const std::string bdf : {"0000:ff:1f.7", "", "../../../../dev/null", "0000:00:00.0/../x"}) {
        auto f = vvu::pci::vfio_function::open(bdf);
        REQUIRE_FALSE(f);
        CHECK(f.error().code.value() == ENODEV);
        CHECK(f.error().message().find("PCI function") != std::string::npos);
    }
    CHECK(open_fds() == before);
}

TEST_CASE("vfio_function: a function of this machine: a clear error, or (bound to vfio-pci) its config space") {
    // Any PCI function of this machine will do; on a machine without one there is nothing to try.
    DIR* d = ::opendir("/sys/bus/pci/devices");
    std::string bdf;
    if (d != nullptr) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') {
                bdf = e->d_name;
                break;
            }
        ::closedir(d);
    }
    if (bdf.empty()) {
        SUCCEED("no PCI function on this machine");
        return;
    }
    const int before = open_fds();
    {
        auto f = vvu::pci::vfio_function::open(bdf);
        if (!f) {
            // The usual case: the function belongs to its own driver, or VFIO is absent.
            CHECK_FALSE(f.error().message().empty());
        } else {
            // Bound to vfio-pci here: then config space must read as sysfs says.
            std::array<std::byte, 2> vendor{};
            REQUIRE(f->config_read(0, vendor));
            unsigned expected = 0;
            if (FILE* v = std::fopen(("/sys/bus/pci/devices/" + bdf + "/vendor").c_str(), "r")) {
                CHECK(std::fscanf(v, "%x", &expected) == 1);
                std::fclose(v);
            }
            CHECK((std::to_integer<unsigned>(vendor[0]) | std::to_integer<unsigned>(vendor[1]) << 8) == expected);
        }
    }
    CHECK(open_fds() == before);
}
