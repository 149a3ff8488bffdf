// OS glue of the memory layer: mmap, fstat/fstatfs, and the errors' messages.
#include <vvu/memory/guest_memory.hpp>
#include <vvu/memory/mapping.hpp>

#include <fmt/format.h>

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6 // linux/magic.h
#endif

namespace vvu::memory {
namespace {

// What keeps an fd-backed region alive: its fd and its mapping, released together.
struct fd_mapping {
    unique_fd fd;
    mapping map;
};

constexpr bool wraps(std::uint64_t base, std::uint64_t size) noexcept {
    return size != 0 && base > std::numeric_limits<std::uint64_t>::max() - (size - 1);
}

std::optional<error> check_desc(const wire::memory_region& d, std::uint32_t index) noexcept {
    if (d.memory_size == 0) return error{errc::empty_region, index};
    if (wraps(d.guest_phys_addr, d.memory_size) || wraps(d.userspace_addr, d.memory_size) ||
        wraps(d.mmap_offset, d.memory_size))
        return error{errc::region_wraps, index};
    return std::nullopt;
}

bool overlaps(const wire::memory_region& a, const wire::memory_region& b) noexcept {
    // Ranges do not wrap (checked before), so end = base + size - 1 is exact.
    return a.guest_phys_addr <= b.guest_phys_addr + (b.memory_size - 1) &&
           b.guest_phys_addr <= a.guest_phys_addr + (a.memory_size - 1);
}

} // namespace

std::string error::message() const {
    switch (code) {
    case errc::too_many_regions: return fmt::format("too many memory regions (got {}, max {})", got, want);
    case errc::fd_count_mismatch: return fmt::format("{} fds for {} memory regions", got, want);
    case errc::overlap: return fmt::format("region {} overlaps region {}", region, other);
    case errc::fd_too_small:
        return fmt::format("region {}: fd too small for region ({} bytes, needs {})", region, got, want);
    case errc::bad_fd:
    case errc::mmap_failed:
        return fmt::format("region {}: {}: {}", region, describe(code), std::strerror(sys));
    case errc::empty_region:
    case errc::region_wraps:
    case errc::no_such_region: return fmt::format("region {}: {}", region, describe(code));
    }
    return describe(code);
}

expected<mapping, std::error_code> mapping::map(int fd, std::uint64_t offset, std::size_t length, int prot,
                                                int flags) noexcept {
    void* p = ::mmap(nullptr, length, prot, flags, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) return unexpected(std::error_code(errno, std::system_category()));
    return mapping(p, length);
}

expected<std::uint64_t, error> page_size_of(int fd) noexcept {
    struct statfs fs {};
    if (::fstatfs(fd, &fs) != 0) return unexpected(error{errc::bad_fd, 0, 0, 0, 0, errno});
    if (static_cast<std::uint64_t>(fs.f_type) == HUGETLBFS_MAGIC) return static_cast<std::uint64_t>(fs.f_bsize);
    return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

expected<region, error> region::map(const wire::memory_region& desc, unique_fd fd, bool prefault) {
    if (auto e = check_desc(desc, 0)) return unexpected(*e);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return unexpected(error{errc::bad_fd, 0, 0, 0, 0, errno});
    const std::uint64_t end = desc.mmap_offset + desc.memory_size;
    // Regular files (memfd, hugetlbfs, tmpfs) must cover the region: touching a page past
    // EOF would be SIGBUS in a ring thread. Other kinds (device memory) have no size to check.
    if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) < end)
        return unexpected(error{errc::fd_too_small, 0, 0, static_cast<std::uint64_t>(st.st_size), end});
    auto page = page_size_of(fd.get());
    if (!page) return unexpected(page.error());
    const auto w = window_for(desc.mmap_offset, desc.memory_size, *page);
    if (!w || w->length > std::numeric_limits<std::size_t>::max() ||
        w->file_offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()))
        return unexpected(error{errc::region_wraps});
    auto m = mapping::map(fd.get(), w->file_offset, static_cast<std::size_t>(w->length), PROT_READ | PROT_WRITE,
                          MAP_SHARED | (prefault ? MAP_POPULATE : 0));
    if (!m) return unexpected(error{errc::mmap_failed, 0, 0, w->length, 0, m.error().value()});
    std::byte* host = m->data() + w->delta;
    auto owner = std::make_shared<fd_mapping>(fd_mapping{std::move(fd), std::move(*m)});
    const unique_fd* owned_fd = &owner->fd;
    region r(desc, host, std::shared_ptr<const void>(std::move(owner)));
    r.fd_ = owned_fd;
    return r;
}

guest_memory::ptr guest_memory::empty() {
    static const ptr instance = std::make_shared<const guest_memory>(private_tag{}, std::vector<region>{});
    return instance;
}

expected<guest_memory::ptr, error> guest_memory::make(std::vector<region> regions) {
    if (regions.size() > max_slots)
        return unexpected(error{errc::too_many_regions, 0, 0, regions.size(), max_slots});
    std::vector<std::uint32_t> order(regions.size());
    for (std::uint32_t i = 0; i < order.size(); ++i) {
        if (auto e = check_desc(regions[i].desc(), i)) return unexpected(*e);
        order[i] = i;
    }
    std::ranges::sort(order, {}, [&](std::uint32_t i) { return regions[i].guest_phys_addr(); });
    for (std::size_t k = 1; k < order.size(); ++k) {
        const std::uint32_t a = order[k - 1], b = order[k];
        if (overlaps(regions[a].desc(), regions[b].desc()))
            return unexpected(error{errc::overlap, std::max(a, b), std::min(a, b)});
    }
    std::vector<region> sorted;
    sorted.reserve(regions.size());
    for (std::uint32_t i : order) sorted.push_back(std::move(regions[i]));
    return std::make_shared<const guest_memory>(private_tag{}, std::move(sorted));
}

expected<guest_memory::ptr, error> guest_memory::from_table(const wire::memory_table& table,
                                                            std::span<unique_fd> fds) {
    // Take every fd first so that none outlives a failure in the caller's span.
    std::vector<unique_fd> owned;
    owned.reserve(fds.size());
    for (auto& fd : fds) owned.push_back(std::move(fd));
    if (table.nregions > max_table_regions)
        return unexpected(error{errc::too_many_regions, 0, 0, table.nregions, max_table_regions});
    if (owned.size() != table.nregions)
        return unexpected(error{errc::fd_count_mismatch, 0, 0, owned.size(), table.nregions});
    std::vector<region> regions;
    regions.reserve(table.nregions);
    for (std::uint32_t i = 0; i < table.nregions; ++i) {
        auto r = region::map(table.regions[i], std::move(owned[i]));
        if (!r) {
            error e = r.error();
            e.region = i;
            return unexpected(e);
        }
        regions.push_back(std::move(*r));
    }
    return make(std::move(regions));
}

expected<guest_memory::ptr, error> guest_memory::with(region r) const {
    const auto index = static_cast<std::uint32_t>(regions_.size());
    if (regions_.size() >= max_slots)
        return unexpected(error{errc::too_many_regions, index, 0, regions_.size() + 1, max_slots});
    if (auto e = check_desc(r.desc(), index)) return unexpected(*e);
    for (std::uint32_t i = 0; i < regions_.size(); ++i)
        if (overlaps(regions_[i].desc(), r.desc())) return unexpected(error{errc::overlap, index, i});
    std::vector<region> next(regions_);
    auto at = std::ranges::upper_bound(next, r.guest_phys_addr(), {}, &region::guest_phys_addr);
    next.insert(at, std::move(r));
    return std::make_shared<const guest_memory>(private_tag{}, std::move(next));
}

expected<guest_memory::ptr, error> guest_memory::without(const wire::memory_region& d) const {
    auto it = std::ranges::find_if(regions_, [&](const region& r) {
        return r.guest_phys_addr() == d.guest_phys_addr && r.size() == d.memory_size &&
               r.userspace_addr() == d.userspace_addr;
    });
    if (it == regions_.end()) return unexpected(error{errc::no_such_region});
    std::vector<region> next;
    next.reserve(regions_.size() - 1);
    for (auto i = regions_.begin(); i != regions_.end(); ++i)
        if (i != it) next.push_back(*i);
    return std::make_shared<const guest_memory>(private_tag{}, std::move(next));
}

std::size_t guest_memory::locate(std::uint64_t gpa) const noexcept {
    // First region starting after gpa; the one before it is the only candidate.
    auto it = std::ranges::upper_bound(regions_, gpa, {}, &region::guest_phys_addr);
    if (it == regions_.begin()) return npos;
    --it;
    if (gpa - it->guest_phys_addr() > it->size()) return npos;
    return static_cast<std::size_t>(it - regions_.begin());
}

std::byte* guest_memory::translate_user(std::uint64_t uaddr, std::uint64_t len) const noexcept {
    // Called at ring setup only: a scan is fine.
    std::byte* hit = nullptr;
    for (const region& r : regions_) {
        if (uaddr < r.userspace_addr()) continue;
        if (std::byte* p = r.at(uaddr - r.userspace_addr(), len)) {
            hit = p;
            if (len != 0 || uaddr - r.userspace_addr() < r.size()) return p;
        }
    }
    return hit;
}

std::optional<std::uint64_t> guest_memory::user_to_guest(std::uint64_t uaddr) const noexcept {
    for (const region& r : regions_)
        if (uaddr >= r.userspace_addr() && uaddr - r.userspace_addr() < r.size())
            return r.guest_phys_addr() + (uaddr - r.userspace_addr());
    return std::nullopt;
}

} // namespace vvu::memory
