// vfio_user::dma_space (include/vvu/vfio_user/dma.hpp).
#include <vvu/memory/guest_memory.hpp>
#include <vvu/memory/mapping.hpp>
#include <vvu/vfio_user/dma.hpp>
#include <vvu/vfio_user/protocol.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace vvu::vfio_user {

namespace {

std::error_code errno_code(int e) { return {e, std::system_category()}; }

// [iova, iova + size) lies inside the map; the caller checked iova >= m.iova.
bool covers(const dma_space::map_info& m, std::uint64_t iova, std::uint64_t len) noexcept {
    const std::uint64_t off = iova - m.iova;
    return off <= m.size && len <= m.size - off;
}

} // namespace

bool dma_space::sealed_against_shrinking(int fd) noexcept {
    const int seals = ::fcntl(fd, F_GET_SEALS);
    return seals >= 0 && (seals & F_SEAL_SHRINK) != 0;
}

expected<void, std::error_code> dma_space::map(std::uint64_t iova, std::uint64_t size, std::uint32_t flags,
                                               unique_fd fd, std::uint64_t file_offset) {
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    if (size == 0 || size > max - iova) return unexpected(errno_code(EINVAL)); // empty or past 2^64 - 1
    if (size > max - file_offset) return unexpected(errno_code(EINVAL));
    if (flags == 0 || (flags & ~(dma_flags::read | dma_flags::write)) != 0) return unexpected(errno_code(EINVAL));
    if (maps_.size() >= max_maps_) return unexpected(errno_code(ENOSPC));

    // Overlap: the first map ending after iova must start at or after iova + size.
    auto next = std::upper_bound(maps_.begin(), maps_.end(), iova,
                                 [](std::uint64_t a, const entry& e) { return a < e.info.iova; });
    if (next != maps_.end() && next->info.iova < iova + size) return unexpected(errno_code(EEXIST));
    if (next != maps_.begin()) {
        const auto& prev = std::prev(next)->info;
        if (iova - prev.iova < prev.size) return unexpected(errno_code(EEXIST));
    }

    if (!fd) { // in-band only: known, counted, never translated
        maps_.insert(next, entry{{iova, size, flags}, nullptr, nullptr, {}, 0});
        return {};
    }

    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return unexpected(errno_code(errno));
    // A map past the end of its file would be SIGBUS on first touch; only regular files
    // (memfd, tmpfs, hugetlbfs) have a size to check, so only they are accepted.
    if (!S_ISREG(st.st_mode)) return unexpected(errno_code(EINVAL));
    if (static_cast<std::uint64_t>(st.st_size) < file_offset + size) return unexpected(errno_code(EINVAL));
    // The size checked above only holds while the file cannot shrink: F_SEAL_SHRINK. A file
    // without seal support (F_GET_SEALS fails with EINVAL) is refused too.
    if (require_sealed_ && !sealed_against_shrinking(fd.get())) return unexpected(errno_code(EINVAL));

    auto page = memory::page_size_of(fd.get());
    if (!page || *page == 0 || (*page & (*page - 1)) != 0) return unexpected(errno_code(EINVAL));
    const auto w = memory::window_for(file_offset, size, *page);
    if (!w || w->length > std::numeric_limits<std::size_t>::max() ||
        w->file_offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()))
        return unexpected(errno_code(EINVAL));

    const int prot = ((flags & dma_flags::read) ? PROT_READ : 0) | ((flags & dma_flags::write) ? PROT_WRITE : 0);
    auto m = memory::mapping::map(fd.get(), w->file_offset, static_cast<std::size_t>(w->length), prot, MAP_SHARED);
    if (!m) return unexpected(m.error());
    std::byte* host = m->data() + w->delta;
    auto memory = std::make_shared<const memory::mapping>(std::move(*m));
    maps_.insert(next, entry{{iova, size, flags}, host, std::move(memory), std::move(fd), file_offset});
    return {};
}

expected<std::vector<dma_space::map_info>, std::error_code> dma_space::unmap(std::uint64_t iova, std::uint64_t size) {
    // [iova, last]: `last` rather than an end, so that a range reaching 2^64 - 1 is expressible.
    if (size == 0) return unexpected(errno_code(EINVAL));
    if (size - 1 > std::numeric_limits<std::uint64_t>::max() - iova) return unexpected(errno_code(EINVAL));
    const std::uint64_t last = iova + (size - 1);
    const auto last_of = [](const map_info& m) { return m.iova + (m.size - 1); };
    // The first map that ends at or after iova, then every map that starts at or before last.
    auto first = std::lower_bound(maps_.begin(), maps_.end(), iova,
                                  [&](const entry& e, std::uint64_t a) { return last_of(e.info) < a; });
    auto end = first;
    while (end != maps_.end() && end->info.iova <= last) ++end;
    for (auto it = first; it != end; ++it)
        if (it->info.iova < iova || last_of(it->info) > last) return unexpected(errno_code(EINVAL)); // straddles
    std::vector<map_info> removed;
    for (auto it = first; it != end; ++it) removed.push_back(it->info);
    maps_.erase(first, end);
    return removed;
}

void dma_space::clear() noexcept { maps_.clear(); }

const dma_space::entry* dma_space::find(std::uint64_t iova, std::uint64_t len) const noexcept {
    auto it = std::upper_bound(maps_.begin(), maps_.end(), iova,
                               [](std::uint64_t a, const entry& e) { return a < e.info.iova; });
    if (it == maps_.begin()) return nullptr;
    const entry& e = *std::prev(it);
    if (!covers(e.info, iova, len) || e.host == nullptr) return nullptr; // outside, or in-band only
    return &e;
}

std::byte* dma_space::translate(std::uint64_t iova, std::uint64_t len) noexcept {
    const entry* e = find(iova, len);
    if (!e || !(e->info.flags & dma_flags::write) || !(e->info.flags & dma_flags::read)) return nullptr;
    return e->host + (iova - e->info.iova);
}

const std::byte* dma_space::translate_read(std::uint64_t iova, std::uint64_t len) const noexcept {
    const entry* e = find(iova, len);
    if (!e || !(e->info.flags & dma_flags::read)) return nullptr;
    return e->host + (iova - e->info.iova);
}

std::shared_ptr<const void> dma_space::pin(std::uint64_t iova, std::uint64_t len) const noexcept {
    const entry* e = find(iova, len);
    return e ? e->memory : nullptr;
}

void dma_space::save(byte_writer& w, fd_writer& fds) const {
    w.put<std::uint32_t>(static_cast<std::uint32_t>(maps_.size()));
    for (const auto& e : maps_) {
        w.put<std::uint64_t>(e.info.iova);
        w.put<std::uint64_t>(e.info.size);
        w.put<std::uint32_t>(e.info.flags);
        w.put<std::uint64_t>(e.file_offset);
        fds.put(w, e.file.get());
    }
}

expected<void, std::error_code> dma_space::restore(byte_reader& r, fd_reader& fds) {
    clear();
    const auto n = r.get<std::uint32_t>();
    if (n > max_maps_) r.fail();
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
        const auto iova = r.get<std::uint64_t>(), size = r.get<std::uint64_t>();
        const auto flags = r.get<std::uint32_t>();
        const auto file_offset = r.get<std::uint64_t>();
        unique_fd fd = fds.take(r);
        if (!r.ok()) break;
        if (auto m = map(iova, size, flags, std::move(fd), file_offset); !m) {
            clear();
            return m;
        }
    }
    if (!r.ok()) {
        clear();
        return unexpected(errno_code(EINVAL));
    }
    return {};
}

std::vector<dma_space::map_info> dma_space::maps() const {
    std::vector<map_info> out;
    out.reserve(maps_.size());
    for (const auto& e : maps_) out.push_back(e.info);
    return out;
}

} // namespace vvu::vfio_user
