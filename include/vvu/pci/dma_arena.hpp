// dma_arena: memory this process shares with a PCI function for DMA — a sealed memfd mapped
// here, made visible to the function at a bus address (iova) with f.dma_map, and handed out by
// a bump allocator. Rings (virtio 1.2 §2.7: descriptor table 16-byte, driver area 2-byte,
// device area 4-byte alignment) and message buffers live in it. It models ring::memory_policy
// over iova addresses, so ring::split_driver<dma_arena> writes iovas into descriptors and
// reaches their bytes here.
//
//   auto arena = dma_arena::create(1 << 20);          // expected<dma_arena, pci::error>
//   arena->attach(function, 0x1'0000'0000);           // f.dma_map(fd, 0, iova, size)
//   auto iova = arena->allocate(4096, 4096);          // zeroed, iova of the block
//   std::byte* p = arena->translate(*iova, 4096);     // its bytes here
//
// Why a memfd (MFD_ALLOW_SEALING, sealed against SHRINK and GROW): a software function (a
// vfio-user server) maps the same file; a file that cannot shrink cannot SIGBUS its mapping.
// The function bound by attach() must outlive the arena (the destructor unmaps through it).
// Movable, not copyable; not thread-safe (the driver's control thread allocates).
#pragma once

#include <vvu/pci/function.hpp>
#include <vvu/ring/memory_policy.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/util/unique_fd.hpp>

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <system_error>
#include <utility>

namespace vvu::pci {

class dma_arena {
public:
    static constexpr std::uint64_t page_size = 4096;
    static constexpr std::uint64_t huge_page_size = std::uint64_t{2} << 20;

    // A zero-filled arena of `size` bytes (rounded up to a page), not yet visible to a function.
    // With huge_pages the memfd is hugetlbfs's (2 MiB pages, reserved beforehand through
    // vm.nr_hugepages) and the size is rounded up to 2 MiB: physically contiguous memory that
    // an IOMMU maps with large entries — under QEMU's emulated IOMMU each entry becomes one
    // DMA map at the vfio-user device, and a ring or buffer must not straddle two of them.
    [[nodiscard]] static expected<dma_arena, error> create(std::uint64_t size, const char* name = "vvu-dma",
                                                           bool huge_pages = false) {
        if (size == 0 || size > (std::uint64_t{1} << 40))
            return unexpected(error{std::make_error_code(std::errc::invalid_argument),
                                    "DMA arena: size " + std::to_string(size) + " out of range"});
        const std::uint64_t unit = huge_pages ? huge_page_size : page_size;
        size = (size + unit - 1) & ~(unit - 1);
        dma_arena a;
        a.fd_.reset(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge_pages ? MFD_HUGETLB | MFD_HUGE_2MB : 0u)));
        if (!a.fd_) return unexpected(system_failure(huge_pages ? "DMA arena: memfd_create(MFD_HUGETLB)" : "DMA arena: memfd_create"));
        if (::ftruncate(a.fd_.get(), static_cast<off_t>(size)) != 0)
            return unexpected(system_failure("DMA arena: ftruncate"));
        if (::fcntl(a.fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
            return unexpected(system_failure("DMA arena: F_ADD_SEALS"));
        // Huge pages are taken now (MAP_POPULATE): an empty pool is ENOMEM here, not SIGBUS later.
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | (huge_pages ? MAP_POPULATE : 0), a.fd_.get(), 0);
        if (p == MAP_FAILED)
            return unexpected(system_failure(huge_pages ? "DMA arena: mmap of 2 MiB huge pages (free ones in vm.nr_hugepages?)"
                                                        : "DMA arena: mmap"));
        a.host_ = static_cast<std::byte*>(p);
        a.size_ = size;
        return a;
    }

    dma_arena(dma_arena&& o) noexcept { take(o); }
    dma_arena& operator=(dma_arena&& o) noexcept {
        if (this != &o) {
            release();
            take(o);
        }
        return *this;
    }
    dma_arena(const dma_arena&) = delete;
    dma_arena& operator=(const dma_arena&) = delete;
    ~dma_arena() { release(); }

    // Makes the whole arena visible to `f` at [iova, iova + size). iova must be page-aligned
    // (so an alignment up to a page holds for the iova and the local address alike).
    template <pci_function F>
    expected<void, error> attach(F& f, std::uint64_t iova) {
        if (attached()) return unexpected(invalid("DMA arena: already attached"));
        if (iova % page_size != 0 || iova > ~std::uint64_t{0} - size_)
            return unexpected(invalid("DMA arena: iova 0x" + hex(iova) + " is not page-aligned or the range wraps"));
        auto r = f.dma_map(fd_.get(), 0, iova, size_);
        if (!r) return unexpected(error{r.error().code, "DMA arena: dma_map at iova 0x" + hex(iova) + ": " + r.error().what});
        iova_ = iova;
        unmap_ = [fp = &f](std::uint64_t at, std::uint64_t len) { return fp->dma_unmap(at, len); };
        return {};
    }

    // Live update: the arena of another process, which the function can reach already at
    // [iova, iova + size) (its DMA mapping outlives the process that made it). `used` bytes
    // are allocated. Maps the fd; no dma_map is sent.
    template <pci_function F>
    [[nodiscard]] static expected<dma_arena, error> adopt(F& f, unique_fd fd, std::uint64_t size, std::uint64_t iova,
                                                          std::uint64_t used) {
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size || size == 0 ||
            size % page_size != 0 || used > size || iova % page_size != 0 || iova > ~std::uint64_t{0} - size)
            return unexpected(invalid("DMA arena: the adopted arena's fd, size, iova or use do not agree"));
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
        if (p == MAP_FAILED) return unexpected(system_failure("DMA arena: mmap"));
        dma_arena a;
        a.fd_ = std::move(fd);
        a.host_ = static_cast<std::byte*>(p);
        a.size_ = size;
        a.iova_ = iova;
        a.used_ = used;
        a.unmap_ = [fp = &f](std::uint64_t at, std::uint64_t len) { return fp->dma_unmap(at, len); };
        return a;
    }
    // Live update, the old process: forget the function without unmapping it (the arena lives
    // on in the process that adopted it). Its memory stays readable here until destruction.
    void abandon() noexcept {
        if (attached()) unmap_ = [](std::uint64_t, std::uint64_t) -> expected<void, error> { return {}; };
    }

    // Withdraws the function's access. The arena counts as detached even when the unmap
    // fails (the error is reported); its memory stays mapped here until destruction.
    expected<void, error> detach() {
        if (!attached()) return {};
        auto unmap = std::exchange(unmap_, nullptr);
        auto r = unmap(iova_, size_);
        if (!r) return unexpected(error{r.error().code, "DMA arena: dma_unmap at iova 0x" + hex(iova_) + ": " + r.error().what});
        return {};
    }

    // ring::memory_policy: the local bytes of [iova, iova + len), nullptr outside the arena or
    // before attach.
    std::byte* translate(std::uint64_t iova, std::uint64_t len) noexcept {
        if (!attached() || iova < iova_) return nullptr;
        const std::uint64_t off = iova - iova_;
        if (!range_within(off, len, size_)) return nullptr;
        return host_ + off;
    }

    // `bytes` zeroed bytes aligned to `align` (a power of two, at most a page); returns their
    // iova. Nothing is freed before the arena goes (rings live as long as the driver).
    [[nodiscard]] expected<std::uint64_t, error> allocate(std::uint64_t bytes, std::uint64_t align = 64) {
        if (!attached()) return unexpected(invalid("DMA arena: allocate before attach"));
        if (align == 0 || (align & (align - 1)) != 0 || align > page_size)
            return unexpected(invalid("DMA arena: alignment " + std::to_string(align) + " is not a power of two <= 4096"));
        const std::uint64_t start = (used_ + align - 1) & ~(align - 1);
        if (!range_within(start, bytes, size_))
            return unexpected(error{std::make_error_code(std::errc::not_enough_memory),
                                    "DMA arena exhausted: " + std::to_string(bytes) + " bytes wanted, " +
                                        std::to_string(size_ - std::min(start, size_)) + " free"});
        used_ = start + bytes;
        return iova_ + start; // fresh memfd pages, never handed out before: already zero
    }

    // The iova of a local byte of the arena (0 when p is not in it or the arena is detached).
    [[nodiscard]] std::uint64_t iova_of(const std::byte* p) const noexcept {
        if (!attached() || p < host_ || p >= host_ + size_) return 0;
        return iova_ + static_cast<std::uint64_t>(p - host_);
    }

    [[nodiscard]] bool attached() const noexcept { return static_cast<bool>(unmap_); }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] std::byte* data() const noexcept { return host_; }
    [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
    [[nodiscard]] std::uint64_t iova() const noexcept { return iova_; }
    [[nodiscard]] std::uint64_t used() const noexcept { return used_; }
    [[nodiscard]] std::uint64_t available() const noexcept { return size_ - used_; }

private:
    dma_arena() = default;

    static std::string hex(std::uint64_t v) {
        char buf[20];
        std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
        return buf;
    }
    static error invalid(std::string what) {
        return error{std::make_error_code(std::errc::invalid_argument), std::move(what)};
    }
    static error system_failure(const char* op) { return error{std::error_code(errno, std::system_category()), op}; }

    void take(dma_arena& o) noexcept {
        fd_ = std::move(o.fd_);
        host_ = std::exchange(o.host_, nullptr);
        size_ = std::exchange(o.size_, 0);
        iova_ = std::exchange(o.iova_, 0);
        used_ = std::exchange(o.used_, 0);
        unmap_ = std::exchange(o.unmap_, nullptr);
    }
    void release() noexcept {
        if (attached()) {
            try {
                (void)detach();
            } catch (...) { // a binding's unmap threw: nothing more can be done here
            }
        }
        if (host_ != nullptr) ::munmap(host_, size_);
        host_ = nullptr;
        fd_.reset();
    }

    unique_fd fd_;
    std::byte* host_ = nullptr;
    std::uint64_t size_ = 0;
    std::uint64_t iova_ = 0;
    std::uint64_t used_ = 0;
    std::function<expected<void, error>(std::uint64_t, std::uint64_t)> unmap_;
};

static_assert(ring::memory_policy<dma_arena>);

} // namespace vvu::pci
