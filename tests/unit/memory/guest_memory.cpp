#include <vvu/memory/guest_memory.hpp>

#include <catch2/catch.hpp>

#include "../skip.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace vvu;
using memory::errc;
using memory::guest_memory;

namespace {

const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

unique_fd make_memfd(std::uint64_t size, const char* name = "vvu-test") {
    unique_fd fd(::memfd_create(name, MFD_CLOEXEC));
    REQUIRE(fd.valid());
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    return fd;
}

unique_fd dup_fd(const unique_fd& fd) { return dup_cloexec(fd.get()); }

wire::memory_region desc(std::uint64_t gpa, std::uint64_t size, std::uint64_t uaddr, std::uint64_t off = 0) {
    return {gpa, size, uaddr, off};
}

int open_fd_count() {
    int n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

} // namespace

TEST_CASE("window_for rounds to the page size, including huge pages", "[memory]") {
    using memory::map_window;
    using memory::window_for;
    CHECK(window_for(0, 4096, 4096) == map_window{0, 4096, 0});
    CHECK(window_for(0, 1, 4096) == map_window{0, 4096, 0});
    CHECK(window_for(0x1234, 0x100, 4096) == map_window{0x1000, 0x1000, 0x234});
    CHECK(window_for(0xfff, 2, 4096) == map_window{0, 0x2000, 0xfff});
    // A fake 2 MiB huge page: offset and length both aligned to it.
    constexpr std::uint64_t huge = 2 << 20;
    CHECK(window_for(0xc0000, 0x40000, huge) == map_window{0, huge, 0xc0000});
    CHECK(window_for(huge + 4096, huge, huge) == map_window{huge, 2 * huge, 4096});
    CHECK(window_for(3 * huge, 5 * huge, huge) == map_window{3 * huge, 5 * huge, 0});
    // 1 GiB pages.
    constexpr std::uint64_t giga = 1ull << 30;
    CHECK(window_for(giga - 1, 2, giga) == map_window{0, 2 * giga, giga - 1});
    // Rounding up past 2^64 is refused.
    CHECK_FALSE(window_for(0, UINT64_MAX - 10, 4096).has_value());
    CHECK_FALSE(window_for(4095, UINT64_MAX - 4095, 4096).has_value());
}

TEST_CASE("page_size_of a memfd is the system page size", "[memory]") {
    auto fd = make_memfd(page);
    auto p = memory::page_size_of(fd.get());
    REQUIRE(p);
    CHECK(*p == page);
    CHECK_FALSE(memory::page_size_of(-1));
}

TEST_CASE("mapping is move-only RAII", "[memory]") {
    auto fd = make_memfd(page);
    auto m = memory::mapping::map(fd.get(), 0, page);
    REQUIRE(m);
    std::byte* p = m->data();
    memory::mapping moved(std::move(*m));
    CHECK_FALSE(m->valid());
    CHECK(moved.data() == p);
    CHECK(moved.size() == page);
    moved.reset();
    CHECK_FALSE(moved.valid());
    auto bad = memory::mapping::map(-1, 0, page);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == std::errc::bad_file_descriptor);
}

TEST_CASE("translate by guest physical address: edges", "[memory]") {
    auto fd = make_memfd(0x4000);
    auto r = memory::region::map(desc(0x10000, 0x4000, 0x7f0000000000), std::move(fd));
    REQUIRE(r);
    auto m = guest_memory::make({*r});
    REQUIRE(m);
    const guest_memory& g = **m;
    std::byte* base = r->host();
    CHECK(g.translate(0x10000, 1) == base);
    CHECK(g.translate(0x10000, 0x4000) == base);
    CHECK(g.translate(0x13fff, 1) == base + 0x3fff);
    CHECK(g.translate(0x13fff, 2) == nullptr); // crosses the end
    CHECK(g.translate(0x14000, 1) == nullptr);
    CHECK(g.translate(0x14000, 0) == base + 0x4000); // len 0 one past the end
    CHECK(g.translate(0x12000, 0) == base + 0x2000);
    CHECK(g.translate(0xffff, 1) == nullptr);
    CHECK(g.translate(0xffff, 0) == nullptr);
    CHECK(g.translate(0, 0) == nullptr);
    CHECK(g.translate(0x10000, UINT64_MAX) == nullptr);
    CHECK(g.translate(UINT64_MAX, 2) == nullptr); // wraps
    CHECK(g.translate(0x12000, UINT64_MAX - 0x11000) == nullptr);
    CHECK(guest_memory::empty()->translate(0x10000, 0) == nullptr);

    memory::view v(*m);
    CHECK(v.translate(0x10000, 1) == base);
    CHECK(v.translate(0x13fff, 2) == nullptr);
    CHECK(v.translate(0x14000, 0) == base + 0x4000);
    CHECK(v.translate(0xffff, 1) == nullptr);
    CHECK(v.translate(UINT64_MAX, 1) == nullptr);
}

TEST_CASE("adjacent regions: a range may not cross from one into the other", "[memory]") {
    auto a = memory::region::map(desc(0x0, 0x2000, 0x1000000), make_memfd(0x2000));
    auto b = memory::region::map(desc(0x2000, 0x2000, 0x5000000), make_memfd(0x2000));
    REQUIRE(a);
    REQUIRE(b);
    auto m = guest_memory::make({*b, *a}); // any order
    REQUIRE(m);
    const auto& g = **m;
    CHECK(g.regions()[0].guest_phys_addr() == 0);
    CHECK(g.translate(0x1fff, 1) == a->host() + 0x1fff);
    CHECK(g.translate(0x2000, 1) == b->host());
    CHECK(g.translate(0x1fff, 2) == nullptr);
    CHECK(g.translate(0x3fff, 1) == b->host() + 0x1fff);
    memory::view v(*m);
    CHECK(v.translate(0x1fff, 1) == a->host() + 0x1fff); // caches region a
    CHECK(v.translate(0x2000, 1) == b->host());          // switches
    CHECK(v.translate(0x1000, 0x1000) == a->host() + 0x1000);
    CHECK(v.translate(0x1fff, 2) == nullptr);
}

TEST_CASE("translate_user and user_to_guest use front-end virtual addresses", "[memory]") {
    auto r = memory::region::map(desc(0x100000, 0x3000, 0x7f0000001000), make_memfd(0x3000));
    REQUIRE(r);
    auto m = guest_memory::make({*r});
    REQUIRE(m);
    const auto& g = **m;
    CHECK(g.translate_user(0x7f0000001000, 16) == r->host());
    CHECK(g.translate_user(0x7f0000003fff, 1) == r->host() + 0x2fff);
    CHECK(g.translate_user(0x7f0000003fff, 2) == nullptr);
    CHECK(g.translate_user(0x7f0000004000, 0) == r->host() + 0x3000);
    CHECK(g.translate_user(0x7f0000000fff, 1) == nullptr);
    CHECK(g.translate_user(UINT64_MAX, 1) == nullptr);
    CHECK(g.user_to_guest(0x7f0000001010) == 0x100010u);
    CHECK_FALSE(g.user_to_guest(0x7f0000004000).has_value());
    CHECK_FALSE(g.user_to_guest(0x100010).has_value());
}

TEST_CASE("mmap_offset is honoured: same bytes through two regions of one file", "[memory]") {
    // One 16 KiB file; region A covers it whole, region B only its last 8 KiB plus a bit
    // (an offset that is not page aligned).
    auto fd = make_memfd(0x4000);
    auto fd2 = dup_fd(fd);
    auto a = memory::region::map(desc(0x0, 0x4000, 0x10000000, 0), std::move(fd));
    auto b = memory::region::map(desc(0x100000, 0x1f00, 0x20000000, 0x2100), std::move(fd2));
    REQUIRE(a);
    REQUIRE(b);
    auto m = guest_memory::make({*a, *b});
    REQUIRE(m);
    const auto& g = **m;
    std::byte* via_a = g.translate(0x2100, 8);
    std::byte* via_b = g.translate(0x100000, 8);
    REQUIRE(via_a);
    REQUIRE(via_b);
    CHECK(via_a != via_b);
    std::memcpy(via_b, "vhost-us", 8);
    CHECK(std::memcmp(via_a, "vhost-us", 8) == 0);
    std::memcpy(g.translate(0x3fff, 1), "z", 1);
    CHECK(std::memcmp(g.translate(0x101eff, 1), "z", 1) == 0);
    CHECK(g.translate(0x101eff, 2) == nullptr);
}

TEST_CASE("fd too small, bad fd, empty region and wrap are refused", "[memory]") {
    auto small = memory::region::map(desc(0, 0x2000, 0, 0x1000), make_memfd(0x2000));
    REQUIRE_FALSE(small);
    CHECK(small.error().code == errc::fd_too_small);
    CHECK(small.error().got == 0x2000);
    CHECK(small.error().want == 0x3000);
    CHECK(small.error().message() == "region 0: fd too small for region (8192 bytes, needs 12288)");

    auto bad = memory::region::map(desc(0, 0x1000, 0), unique_fd{});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == errc::bad_fd);
    CHECK(bad.error().message() == "region 0: cannot inspect the region's fd: Bad file descriptor");

    CHECK(memory::region::map(desc(0, 0, 0), make_memfd(page)).error().code == errc::empty_region);
    CHECK(memory::region::map(desc(UINT64_MAX - 10, 0x1000, 0), make_memfd(page)).error().code ==
          errc::region_wraps);
    CHECK(memory::region::map(desc(0, 0x1000, 0, UINT64_MAX - 100), make_memfd(page)).error().code ==
          errc::region_wraps);

    // mmap refusing: a read-only fd cannot be mapped shared and writable.
    char path[] = "/tmp/vvu-memory-XXXXXX";
    unique_fd tmp(::mkstemp(path));
    REQUIRE(tmp.valid());
    REQUIRE(::ftruncate(tmp.get(), 0x1000) == 0);
    unique_fd ro(::open(path, O_RDONLY | O_CLOEXEC));
    ::unlink(path);
    auto e = memory::region::map(desc(0, 0x1000, 0), std::move(ro));
    REQUIRE_FALSE(e);
    CHECK(e.error().code == errc::mmap_failed);
    CHECK(e.error().message() == "region 0: mmap failed: Permission denied");
}

TEST_CASE("SET_MEM_TABLE: from_table maps every region and refuses overlap", "[memory]") {
    wire::memory_table t;
    t.nregions = 3;
    t.regions[0] = desc(0x0, 0xa0000, 0x7f0000000000);
    t.regions[1] = desc(0xc0000, 0x40000, 0x7f00000c0000, 0xc0000);
    t.regions[2] = desc(0x100000000, 0x10000, 0x7f1000000000);
    auto big = make_memfd(0x100000);
    std::array<unique_fd, 3> fds{dup_fd(big), std::move(big), make_memfd(0x10000)};
    const int before = open_fd_count();
    auto m = guest_memory::from_table(t, fds);
    REQUIRE(m);
    for (auto& fd : fds) CHECK_FALSE(fd.valid()); // taken over
    CHECK(open_fd_count() == before - 3 + 3);      // moved, not duplicated
    CHECK((*m)->size() == 3);
    CHECK((*m)->regions()[1].fd() >= 0);
    CHECK((*m)->translate(0xc0000, 0x40000) != nullptr);
    CHECK((*m)->translate(0xa0000, 1) == nullptr);
    CHECK((*m)->translate(0x100000000, 0x10000) != nullptr);

    SECTION("overlap names both regions") {
        t.regions[2] = desc(0x9f000, 0x2000, 0x7f1000000000);
        std::array<unique_fd, 3> f2{make_memfd(0xa0000), make_memfd(0x100000), make_memfd(0x2000)};
        auto e = guest_memory::from_table(t, f2);
        REQUIRE_FALSE(e);
        CHECK(e.error().code == errc::overlap);
        CHECK(e.error().message() == "region 2 overlaps region 0");
    }
    SECTION("fd count must match") {
        std::array<unique_fd, 2> f2{make_memfd(0xa0000), make_memfd(0x100000)};
        const int n = open_fd_count();
        auto e = guest_memory::from_table(t, f2);
        REQUIRE_FALSE(e);
        CHECK(e.error().code == errc::fd_count_mismatch);
        CHECK(open_fd_count() == n - 2); // closed, not leaked
    }
    SECTION("a failing region closes every fd") {
        std::array<unique_fd, 3> f2{make_memfd(0xa0000), make_memfd(0x1000), make_memfd(0x10000)};
        const int n = open_fd_count();
        auto e = guest_memory::from_table(t, f2);
        REQUIRE_FALSE(e);
        CHECK(e.error().code == errc::fd_too_small);
        CHECK(e.error().region == 1);
        CHECK(open_fd_count() == n - 3);
    }
}

TEST_CASE("ADD_MEM_REG / REM_MEM_REG build new tables; old snapshots stay valid", "[memory]") {
    const int before = open_fd_count();
    {
        auto m0 = guest_memory::from_table({}, {});
        REQUIRE(m0);
        CHECK((*m0)->empty_table());
        auto r1 = memory::region::map(desc(0x0, 0x2000, 0x10000), make_memfd(0x2000));
        REQUIRE(r1);
        auto m1 = (*m0)->with(std::move(*r1));
        REQUIRE(m1);
        auto r2 = memory::region::map(desc(0x8000, 0x1000, 0x20000), make_memfd(0x1000));
        REQUIRE(r2);
        auto m2 = (*m1)->with(std::move(*r2));
        REQUIRE(m2);
        CHECK((*m2)->size() == 2);
        CHECK((*m1)->size() == 1);
        CHECK(open_fd_count() == before + 2);

        auto dup = memory::region::map(desc(0x1000, 0x1000, 0x30000), make_memfd(0x1000));
        REQUIRE(dup);
        auto e = (*m2)->with(std::move(*dup));
        REQUIRE_FALSE(e);
        CHECK(e.error().message() == "region 2 overlaps region 0");

        // A ring thread holds m2 while the control thread removes region 0.
        memory::view ring(*m2);
        std::byte* p = ring.translate(0x1000, 8);
        REQUIRE(p);
        std::memcpy(p, "still ok", 8);
        auto m3 = (*m2)->without(desc(0x0, 0x2000, 0x10000));
        REQUIRE(m3);
        CHECK((*m3)->translate(0x1000, 8) == nullptr);
        CHECK((*m3)->translate(0x8000, 8) != nullptr);
        m2 = unexpected(memory::error{});
        m1 = unexpected(memory::error{});
        CHECK(std::memcmp(ring.translate(0x1000, 8), "still ok", 8) == 0); // still mapped
        CHECK(open_fd_count() == before + 2);
        ring.reset(*m3); // the ring quiesced and took the new table
        CHECK(open_fd_count() == before + 1); // region 0 unmapped and its fd closed
        CHECK(ring.translate(0x1000, 8) == nullptr);

        auto missing = (*m3)->without(desc(0x0, 0x2000, 0x10000));
        REQUIRE_FALSE(missing);
        CHECK(missing.error().code == errc::no_such_region);
        CHECK((*m3)->without(desc(0x8000, 0x1000, 0x99999)).error().code == errc::no_such_region);
    }
    CHECK(open_fd_count() == before);
}

TEST_CASE("replacement: SET_MEM_TABLE builds a fresh table beside the old one", "[memory]") {
    wire::memory_table t;
    t.nregions = 1;
    t.regions[0] = desc(0x0, 0x1000, 0x1000);
    std::array<unique_fd, 1> f1{make_memfd(0x1000)};
    auto old_table = guest_memory::from_table(t, f1);
    REQUIRE(old_table);
    memory::view ring(*old_table);
    t.regions[0] = desc(0x0, 0x2000, 0x1000);
    std::array<unique_fd, 1> f2{make_memfd(0x2000)};
    auto new_table = guest_memory::from_table(t, f2);
    REQUIRE(new_table);
    CHECK(ring.translate(0x1000, 1) == nullptr);
    ring.reset(*new_table);
    CHECK(ring.translate(0x1000, 1) != nullptr);
}

TEST_CASE("slot limits", "[memory]") {
    STATIC_REQUIRE(guest_memory::max_slots == 509);
    wire::memory_table t;
    t.nregions = 9;
    CHECK(guest_memory::from_table(t, {}).error().code == errc::too_many_regions);

    // Fill every slot with one-page regions of one memfd (fds shared via dup are cheap).
    auto fd = make_memfd(page);
    std::vector<memory::region> regions;
    for (std::uint64_t i = 0; i < guest_memory::max_slots; ++i) {
        auto r = memory::region::map(desc(i * page, page, i * page), dup_fd(fd));
        REQUIRE(r);
        regions.push_back(std::move(*r));
    }
    auto full = guest_memory::make(regions);
    REQUIRE(full);
    CHECK((*full)->translate(508 * page + 5, 1) == regions[508].host() + 5);
    CHECK((*full)->translate(509 * page, 1) == nullptr);
    auto extra = memory::region::map(desc(600 * page, page, 600 * page), dup_fd(fd));
    REQUIRE(extra);
    auto e = (*full)->with(*extra);
    REQUIRE_FALSE(e);
    CHECK(e.error().code == errc::too_many_regions);
    regions.push_back(*extra);
    CHECK(guest_memory::make(regions).error().code == errc::too_many_regions);
}

TEST_CASE("real hugetlbfs region (skipped without free huge pages)", "[memory][hugetlbfs]") {
    // A hugetlb memfd lives on the kernel's internal hugetlbfs mount: no mount point needed,
    // only a free huge page (scripts/test.sh reserves a few under CI).
    unique_fd fd(::memfd_create("vvu-test-huge", MFD_CLOEXEC | MFD_HUGETLB));
    if (!fd.valid()) VVU_SKIP(std::string("memfd_create(MFD_HUGETLB): ") + std::strerror(errno));
    auto hp = memory::page_size_of(fd.get());
    REQUIRE(hp);
    REQUIRE(*hp > page);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(*hp)) == 0);
    // A shared hugetlb mapping reserves its page when it is made: none free, and mmap fails.
    void* probe = ::mmap(nullptr, *hp, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (probe == MAP_FAILED) VVU_SKIP(std::string("no free huge page to map: ") + std::strerror(errno));
    ::munmap(probe, *hp);
    // A region smaller than a huge page at an unaligned offset: only a huge-page-sized
    // mapping from offset 0 is accepted by the kernel.
    auto r = memory::region::map(desc(0, 0x1000, 0, 0x3000), std::move(fd));
    REQUIRE(r);
    auto m = guest_memory::make({*r});
    REQUIRE(m);
    std::byte* p = (*m)->translate(0xfff, 1);
    REQUIRE(p);
    *p = std::byte{0x5a};
    CHECK(*p == std::byte{0x5a});
}
