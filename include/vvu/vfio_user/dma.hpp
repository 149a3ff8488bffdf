// dma_space: the client's DMA regions as a vfio-user server sees them ("VFIO_USER_DMA_MAP",
// "VFIO_USER_DMA_UNMAP" in QEMU docs/interop/vfio-user.rst), mmap()ed from the fds the client
// sent, and the translation of a bus address (iova) to a pointer in this process — the
// ring::memory_policy the device's rings run over.
//
// Rules (stricter than libvfio-user, on purpose — every map comes from a hostile client):
//   * size 0, an end address iova + size beyond 2^64 - 1, a file offset + size that wraps, a
//     file too small for [offset, offset + size), a non-regular file, flags other than
//     read/write or neither of them: EINVAL.
//   * with require_sealed (vvu-device turns it on): an fd without F_SEAL_SHRINK (F_GET_SEALS;
//     a file that cannot be sealed, e.g. not a memfd, has none): EINVAL. Otherwise the client
//     could ftruncate() the file after the map and every access of the device to the lost
//     pages would be SIGBUS.
//   * a map overlapping an existing one: EEXIST (the spec's error for "map over an existing
//     region"); more than max_maps() maps: ENOSPC.
//   * a map without an fd is one the client serves in-band (DMA_READ/DMA_WRITE; QEMU maps its
//     ROMs so): it is recorded — it counts, overlaps, unmaps like any other — but translate(),
//     translate_read() and pin() never find it, since vvu does not send DMA_READ/WRITE. A
//     device access there fails as an access outside every map does.
//   * unmap removes every map inside [iova, iova + size) (an end of exactly 2^64 allowed) and
//     says which; none at all is no error — QEMU with an emulated IOMMU unmaps whole address
//     ranges on an invalidation, as VFIO's type-1 IOMMU allows. A map that straddles either
//     end is EINVAL, and nothing is removed.
//
// Each map keeps the fd it came from, so that a live update of the server (vvu-device
// --takeover) can hand the maps to a new process (save/restore).
//
// Memory lifetime: each map is one mmap, owned through a shared_ptr. unmap()/clear() remove
// it from the space at once (translate no longer finds it), but the pages stay mapped while
// anyone holds a pin() of it. A device that keeps a ring in DMA memory pins it when it sets
// the ring up and drops the pin in device::dma_unmapped() — the spec wants every reference
// released before the UNMAP reply, and the pin makes a late use a stale read, never a crash.
//
// translate() only returns read-write maps (a ring writes through the pointer it gets);
// translate_read() also covers read-only maps. Not thread-safe: the server's thread owns it;
// a ring on another thread holds a pin and reaches memory through its own pointers.
#pragma once

#include <vvu/ring/memory_policy.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/fd_stream.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

namespace vvu::vfio_user {

class dma_space {
public:
    // The spec's default max_dma_maps is 65535; vvu serves far fewer (QEMU maps a handful of
    // RAM blocks) and each map costs a VMA, so the default limit is lower.
    static constexpr std::size_t default_max_maps = 1024;

    struct map_info {
        std::uint64_t iova = 0;
        std::uint64_t size = 0;
        std::uint32_t flags = 0; // dma_flags (protocol.hpp)
    };

    explicit dma_space(std::size_t max_maps = default_max_maps, bool require_sealed = false) noexcept
        : max_maps_(max_maps), require_sealed_(require_sealed) {}

    // mmap()s [file_offset, file_offset + size) of fd (MAP_SHARED, rounded out to the fd's page
    // size, hugetlbfs included) at bus address iova. Takes the fd (closed when the map goes);
    // an invalid fd records an in-band-only map.
    // Errors: see above; mmap's errno otherwise.
    [[nodiscard]] expected<void, std::error_code> map(std::uint64_t iova, std::uint64_t size, std::uint32_t flags,
                                                      unique_fd fd, std::uint64_t file_offset);
    // The maps removed (none: nothing was mapped there).
    [[nodiscard]] expected<std::vector<map_info>, std::error_code> unmap(std::uint64_t iova, std::uint64_t size);
    // Every map goes (client detached).
    void clear() noexcept;

    // ring::memory_policy: `len` bytes at iova inside ONE read-write map, else nullptr
    // (len 0: iova inside a map or one past its end).
    [[nodiscard]] std::byte* translate(std::uint64_t iova, std::uint64_t len) noexcept;
    // The same over read-only maps too.
    [[nodiscard]] const std::byte* translate_read(std::uint64_t iova, std::uint64_t len) const noexcept;

    // Keeps the map holding [iova, iova + len) mapped until the returned pointer goes, even
    // after an unmap; empty when there is none.
    [[nodiscard]] std::shared_ptr<const void> pin(std::uint64_t iova, std::uint64_t len) const noexcept;

    [[nodiscard]] std::size_t size() const noexcept { return maps_.size(); }
    [[nodiscard]] std::size_t max_maps() const noexcept { return max_maps_; }
    // Maps need an fd sealed against shrinking (F_SEAL_SHRINK).
    [[nodiscard]] bool require_sealed() const noexcept { return require_sealed_; }
    // fd has F_SEAL_SHRINK (false when it cannot be sealed at all).
    [[nodiscard]] static bool sealed_against_shrinking(int fd) noexcept;
    [[nodiscard]] std::vector<map_info> maps() const;

    // A live update: every map (its fd duplicated, fd_stream.hpp) into a record, and a space
    // rebuilt from one — each map checked as DMA_MAP checks it (the record comes from another
    // process). On failure the space is empty.
    void save(byte_writer& w, fd_writer& fds) const;
    [[nodiscard]] expected<void, std::error_code> restore(byte_reader& r, fd_reader& fds);

private:
    struct entry {
        map_info info;
        std::byte* host = nullptr;           // iova's byte; nullptr: in-band only (no fd)
        std::shared_ptr<const void> memory;  // the mmap (munmap when the last holder goes)
        unique_fd file;                      // what was mapped (a live update hands it on)
        std::uint64_t file_offset = 0;
    };
    // The map containing [iova, iova + len), or nullptr.
    [[nodiscard]] const entry* find(std::uint64_t iova, std::uint64_t len) const noexcept;

    std::vector<entry> maps_; // sorted by iova, disjoint
    std::size_t max_maps_;
    bool require_sealed_ = false;
};

static_assert(ring::memory_policy<dma_space>);

} // namespace vvu::vfio_user
