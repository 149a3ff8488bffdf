// dma_space: the server's view of the client's DMA maps.
#include "harness.hpp"

#include <vvu/vfio_user/dma.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

using namespace vvu;
using namespace vvu::vfio_user;
using vvu_test::make_memfd;

namespace {
constexpr std::uint32_t rw = dma_flags::read | dma_flags::write;
constexpr std::uint64_t max64 = ~std::uint64_t{0};

template <class T>
int code(const expected<T, std::error_code>& r) { return r ? 0 : r.error().value(); }
} // namespace

TEST_CASE("dma_space: map, translate edges, unmap") {
    dma_space d;
    auto fd = make_memfd("dma", 0x4000);
    // The client's memory: write a pattern through its own mapping.
    auto* mine = static_cast<std::byte*>(::mmap(nullptr, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
    REQUIRE(mine != MAP_FAILED);
    mine[0x1000] = std::byte{0x5a};
    mine[0x2fff] = std::byte{0xa5};
    // Map file [0x1000, 0x3000) at iova 0x10000 (file offset page-aligned), and a second map.
    REQUIRE(d.map(0x10000, 0x2000, rw, unique_fd(::dup(fd.get())), 0x1000));
    REQUIRE(d.map(0x12000, 0x1000, rw, unique_fd(::dup(fd.get())), 0x123)); // unaligned offset
    CHECK(d.size() == 2);

    std::byte* p = d.translate(0x10000, 1);
    REQUIRE(p);
    CHECK(*p == std::byte{0x5a});
    REQUIRE(d.translate(0x11fff, 1));
    CHECK(*d.translate(0x11fff, 1) == std::byte{0xa5});
    CHECK(d.translate(0x10000, 0x2000) != nullptr);    // the whole map
    CHECK(d.translate(0x10000, 0x2001) == nullptr);    // one past, into the next map: not ONE mapping
    CHECK(d.translate(0x12000, 0) != nullptr);         // len 0 at a map's start
    CHECK(d.translate(0x13000, 0) != nullptr);         // one past the end
    CHECK(d.translate(0x13001, 0) == nullptr);
    CHECK(d.translate(0xffff, 1) == nullptr);           // below
    CHECK(d.translate(0x10000, max64) == nullptr);      // wraps
    CHECK(d.translate(max64, 2) == nullptr);
    // The unaligned map sees file offset 0x123.
    mine[0x123] = std::byte{0x77};
    CHECK(*d.translate(0x12000, 1) == std::byte{0x77});
    // Server writes are client-visible.
    *d.translate(0x10010, 1) = std::byte{0x42};
    CHECK(mine[0x1010] == std::byte{0x42});

    CHECK(code(d.unmap(0x10000, 0x1000)) == EINVAL);  // cuts the first map
    CHECK(code(d.unmap(0x10001, 0x2000)) == EINVAL);  // straddles both ends of it
    CHECK(code(d.unmap(0xf000, 0x1001)) == EINVAL);   // reaches into it
    CHECK(code(d.unmap(0x10000, 0)) == EINVAL);       // empty
    CHECK(code(d.unmap(0x20000, max64)) == EINVAL);   // wraps past 2^64
    CHECK(d.size() == 2);
    auto none = d.unmap(0x20000, 0x1000);             // nothing there: no error, nothing removed
    REQUIRE(none);
    CHECK(none->empty());
    auto first = d.unmap(0x8000, 0xa000);             // the first map and the space before it
    REQUIRE(first);
    REQUIRE(first->size() == 1);
    CHECK((*first)[0].iova == 0x10000);
    CHECK((*first)[0].size == 0x2000);
    CHECK(d.translate(0x10000, 1) == nullptr);
    CHECK(d.size() == 1);
    REQUIRE(d.map(0x10000, 0x1000, rw, unique_fd(::dup(fd.get())), 0));
    auto all = d.unmap(0x1000, max64 - 0xfff);        // up to 2^64 - 1: both
    REQUIRE(all);
    CHECK(all->size() == 2);
    CHECK(d.size() == 0);
    REQUIRE(d.map(0x12000, 0x1000, rw, unique_fd(::dup(fd.get())), 0));
    d.clear();
    CHECK(d.size() == 0);
    ::munmap(mine, 0x4000);
}

TEST_CASE("dma_space: refuses empty, wrapping, overlapping, oversized and excess maps") {
    dma_space d(3);
    auto fd = make_memfd("dma", 0x3000);
    auto dupfd = [&] { return unique_fd(::dup(fd.get())); };
    CHECK(code(d.map(0x1000, 0, rw, dupfd(), 0)) == EINVAL);                       // size 0
    CHECK(code(d.map(max64 - 0xfff, 0x1000, rw, dupfd(), 0)) == EINVAL);           // ends at 2^64
    CHECK(code(d.map(max64 - 0x7ff, 0x1000, rw, dupfd(), 0)) == EINVAL);           // wraps 2^64
    CHECK(code(d.map(0x1000, 0x1000, rw, dupfd(), max64 - 0x10)) == EINVAL);       // file offset wraps
    CHECK(code(d.map(0x1000, 0x4000, rw, dupfd(), 0)) == EINVAL);                  // past the file's end
    CHECK(code(d.map(0x1000, 0x1000, 0, dupfd(), 0)) == EINVAL);                   // no access
    CHECK(code(d.map(0x1000, 0x1000, 0x10, dupfd(), 0)) == EINVAL);                // unknown flag
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    unique_fd keep(sv[1]);
    CHECK(code(d.map(0x1000, 0x1000, rw, unique_fd(sv[0]), 0)) == EINVAL);         // not a regular file
    CHECK(d.size() == 0);

    REQUIRE(d.map(0x10000, 0x2000, rw, dupfd(), 0));
    CHECK(code(d.map(0x10000, 0x1000, rw, dupfd(), 0)) == EEXIST);  // same start
    CHECK(code(d.map(0x11fff, 0x1000, rw, dupfd(), 0)) == EEXIST);  // last byte
    CHECK(code(d.map(0xf001, 0x1000, rw, dupfd(), 0)) == EEXIST);   // overlaps the first byte
    CHECK(code(d.map(0x0f000, 0x2000, rw, dupfd(), 0)) == EEXIST);  // covers the start
    REQUIRE(d.map(0xf000, 0x1000, rw, dupfd(), 0));                 // adjacent below
    REQUIRE(d.map(0x12000, 0x1000, rw, dupfd(), 0));                // adjacent above
    CHECK(code(d.map(0x20000, 0x1000, rw, dupfd(), 0)) == ENOSPC);  // max 3
    // Adjacent maps are separate: a range across them is not ONE mapping.
    CHECK(d.translate(0xffff, 2) == nullptr);
    CHECK(d.translate(0xffff, 1) != nullptr);
}

TEST_CASE("dma_space: a map without an fd is recorded but never reached") {
    dma_space d(2);
    auto fd = make_memfd("dma", 0x1000);
    // QEMU maps its ROMs so: the client would serve them in-band (DMA_READ/WRITE).
    REQUIRE(d.map(0xc0000, 0x20000, rw, unique_fd(), 0));
    CHECK(d.size() == 1);
    CHECK(d.translate(0xc0000, 1) == nullptr);
    CHECK(d.translate_read(0xc0000, 1) == nullptr);
    CHECK(d.pin(0xc0000, 1) == nullptr);
    CHECK(code(d.map(0xd0000, 0x1000, rw, unique_fd(::dup(fd.get())), 0)) == EEXIST); // it still occupies its range
    REQUIRE(d.map(0x1000, 0x1000, rw, unique_fd(::dup(fd.get())), 0));
    CHECK(code(d.map(0x100000, 0x1000, rw, unique_fd(), 0)) == ENOSPC);             // and counts
    CHECK(code(d.unmap(0xc0000, 0x1000)) == EINVAL);
    REQUIRE(d.unmap(0xc0000, 0x20000));
    CHECK(d.size() == 1);
    CHECK(d.translate(0x1000, 0x1000) != nullptr);
}

TEST_CASE("dma_space: read-only maps, pins outlive unmap, fds not leaked") {
    const int before = vvu_test::count_open_fds();
    {
        dma_space d;
        auto fd = make_memfd("dma", 0x2000);
        REQUIRE(d.map(0x1000, 0x1000, dma_flags::read, unique_fd(::dup(fd.get())), 0));
        CHECK(d.translate(0x1000, 4) == nullptr);       // read-only: not for a ring
        CHECK(d.translate_read(0x1000, 4) != nullptr);
        REQUIRE(d.map(0x4000, 0x1000, rw, unique_fd(::dup(fd.get())), 0x1000));
        auto pin = d.pin(0x4000, 0x1000);
        REQUIRE(pin);
        const std::byte* p = d.translate(0x4000, 8);
        REQUIRE(d.unmap(0x4000, 0x1000));
        CHECK(d.translate(0x4000, 8) == nullptr);
        CHECK(p[0] == std::byte{0}); // still mapped while pinned
        CHECK_FALSE(d.pin(0x9000, 1));
    }
    CHECK(vvu_test::count_open_fds() == before);
}

namespace {
// A memfd that can be sealed, with `seals` added (0: none).
unique_fd sealable_memfd(std::size_t size, int seals) {
    unique_fd fd(::memfd_create("dma-seal", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    if (seals) REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, seals) == 0);
    return fd;
}
} // namespace

TEST_CASE("dma_space: require_sealed refuses fds that can shrink") {
    const auto unsealed = sealable_memfd(0x2000, 0);
    const auto grow_only = sealable_memfd(0x2000, F_SEAL_GROW);   // sealed, but not against shrinking
    const auto shrink = sealable_memfd(0x2000, F_SEAL_SHRINK);
    const auto all = sealable_memfd(0x2000, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    const auto no_sealing = make_memfd("dma-nosealing", 0x2000);  // memfd without MFD_ALLOW_SEALING: F_SEAL_SEAL
    auto dup = [](const unique_fd& f) { return unique_fd(::dup(f.get())); };

    CHECK_FALSE(dma_space::sealed_against_shrinking(unsealed.get()));
    CHECK_FALSE(dma_space::sealed_against_shrinking(grow_only.get()));
    CHECK_FALSE(dma_space::sealed_against_shrinking(no_sealing.get()));
    CHECK(dma_space::sealed_against_shrinking(shrink.get()));
    CHECK(dma_space::sealed_against_shrinking(all.get()));

    SECTION("not required: an unsealed memfd is accepted") {
        dma_space d;
        CHECK_FALSE(d.require_sealed());
        REQUIRE(d.map(0x10000, 0x1000, rw, dup(unsealed), 0));
        REQUIRE(d.map(0x20000, 0x1000, rw, dup(no_sealing), 0));
        CHECK(d.size() == 2);
    }
    SECTION("required: unsealed, grow-only and unsealable are EINVAL; F_SEAL_SHRINK is accepted") {
        dma_space d(dma_space::default_max_maps, true);
        CHECK(d.require_sealed());
        CHECK(code(d.map(0x10000, 0x1000, rw, dup(unsealed), 0)) == EINVAL);
        CHECK(code(d.map(0x10000, 0x1000, rw, dup(grow_only), 0)) == EINVAL);
        CHECK(code(d.map(0x10000, 0x1000, rw, dup(no_sealing), 0)) == EINVAL);
        CHECK(d.size() == 0);
        REQUIRE(d.map(0x10000, 0x1000, rw, dup(shrink), 0));
        REQUIRE(d.map(0x20000, 0x2000, rw, dup(all), 0));
        CHECK(d.size() == 2);
        // A sealed file cannot be shrunk under the map: the device's access stays valid.
        CHECK(::ftruncate(shrink.get(), 0) != 0);
        CHECK(errno == EPERM);
        REQUIRE(d.translate(0x10ff8, 8));
        *d.translate(0x10ff8, 8) = std::byte{1};
        // Not a memfd at all (a socket is refused earlier, as not a regular file; a regular
        // file on a file system without seals fails F_GET_SEALS).
        char path[] = "/tmp/vvu-dma-seal-XXXXXX";
        unique_fd tmp(::mkstemp(path));
        REQUIRE(tmp);
        ::unlink(path);
        REQUIRE(::ftruncate(tmp.get(), 0x1000) == 0);
        CHECK(code(d.map(0x40000, 0x1000, rw, std::move(tmp), 0)) == EINVAL);
    }
}

TEST_CASE("dma_space: save and restore carry every map to another space (a live update)") {
    dma_space from(8, true);
    const auto fd = sealable_memfd(0x4000, F_SEAL_SHRINK);
    REQUIRE(from.map(0x10000, 0x2000, rw, unique_fd(::dup(fd.get())), 0x1000));
    REQUIRE(from.map(0x20000, 0x1000, dma_flags::read, unique_fd(::dup(fd.get())), 0x123));
    REQUIRE(from.map(0x30000, 0x1000, rw, unique_fd{}, 0)); // in-band only: no fd to carry
    *from.translate(0x10010, 1) = std::byte{0x42};

    byte_writer w;
    std::vector<unique_fd> fds;
    fd_writer fw(fds);
    from.save(w, fw);
    REQUIRE(fw.ok());
    CHECK(fds.size() == 2);
    const auto bytes = w.take();

    SECTION("the same maps, over the same files") {
        dma_space to(8, true);
        byte_reader r(bytes);
        fd_reader fr(fds);
        REQUIRE(to.restore(r, fr));
        CHECK(r.done());
        CHECK(fr.all_taken());
        REQUIRE(to.size() == 3);
        REQUIRE(to.translate(0x10010, 1) != nullptr);
        CHECK(*to.translate(0x10010, 1) == std::byte{0x42}); // the same pages
        CHECK(to.translate(0x20000, 1) == nullptr);          // read-only stays so
        CHECK(to.translate_read(0x20000, 1) != nullptr);
        CHECK(to.translate_read(0x30000, 1) == nullptr); // in-band stays in-band
        // The restored space keeps the fds too: it can be saved again.
        byte_writer again;
        std::vector<unique_fd> again_fds;
        fd_writer afw(again_fds);
        to.save(again, afw);
        CHECK(again.take() == bytes);
        CHECK(again_fds.size() == 2);
    }
    SECTION("a map whose fd is missing, or refused by the space's rules, leaves the space empty") {
        dma_space to(8, true);
        byte_reader r(bytes);
        std::vector<unique_fd> some;
        some.push_back(std::move(fds[0]));
        fd_reader fr(some);
        CHECK(!to.restore(r, fr));
        CHECK(to.size() == 0);
    }
    SECTION("more maps than the space takes") {
        dma_space to(2, true);
        byte_reader r(bytes);
        fd_reader fr(fds);
        CHECK(!to.restore(r, fr));
        CHECK(to.size() == 0);
    }
}
