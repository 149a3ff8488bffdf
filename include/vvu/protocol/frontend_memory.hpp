// frontend_memory: the memory a front-end shares with its back-end — one or more regions, each a
// sealed memfd mapped here, described to the back-end by SET_MEM_TABLE or ADD_MEM_REG — and the
// ring layer's memory policy over it (guest address -> local pointer), with a bump allocator
// that places rings and buffers inside one region each.
//
//   auto mem = frontend_memory::create({.regions = 2, .region_size = 32 << 20});
//   auto ring_gpa = mem->allocate(4096, 4096);        // guest address of a fresh block
//   std::byte* p = mem->translate(*ring_gpa, 4096);   // its bytes here
//
// Guest addresses start at `guest_base` and leave a gap between regions, so that a back-end
// translating across a region boundary fails loudly; the "userspace address" of a region (what
// vring addresses are expressed in) is where it is mapped in this process, as QEMU and DPDK
// virtio-user do.
//
// Why memfd with MFD_ALLOW_SEALING: the back-end maps the file; sealing its size (SHRINK, GROW,
// then SEAL) guarantees it can never be truncated under the back-end's mapping (a SIGBUS there).
#pragma once

#include <vvu/protocol/frontend_error.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/payload.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace vvu::protocol {

class frontend_memory {
public:
    struct options {
        std::size_t regions = 1;                       // memfds (1 .. 8 for SET_MEM_TABLE)
        std::size_t region_size = std::size_t{64} << 20; // bytes each, rounded up to 2 MiB
        std::uint64_t guest_base = 0x4000'0000;          // guest address of region 0
        bool seal = true;                               // F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL
        // Allocate the pages and fill the page tables at creation (MAP_POPULATE): one call
        // instead of a page fault for each page first touched (about 25 us apiece in a VM
        // here), which dominated a short session's set-up. Off: pages come as they are used.
        bool populate = false;
    };

    struct region {
        unique_fd fd;
        std::byte* host = nullptr;
        std::uint64_t gpa = 0;
        std::uint64_t size = 0;
        std::uint64_t used = 0; // bump allocator position

        // What SET_MEM_TABLE / ADD_MEM_REG say about it.
        [[nodiscard]] wire::memory_region description() const noexcept {
            return {gpa, size, reinterpret_cast<std::uint64_t>(host), 0};
        }
    };

    static constexpr std::uint64_t granule = std::uint64_t{2} << 20;

    [[nodiscard]] static expected<frontend_memory, frontend_error> create(const options& o) {
        if (o.regions == 0 || o.regions > wire::memory_table::max_regions || o.region_size == 0)
            return unexpected(frontend_error{frontend_errc::invalid_argument, std::nullopt,
                                             "memory: 1 to 8 regions of a non-zero size"});
        frontend_memory m;
        const std::uint64_t size = (o.region_size + granule - 1) & ~(granule - 1);
        for (std::size_t i = 0; i < o.regions; ++i) {
            region r;
            const std::string name = "vvu-frontend-" + std::to_string(i);
            r.fd.reset(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
            if (!r.fd) return unexpected(system_failure("memfd_create"));
            if (::ftruncate(r.fd.get(), static_cast<off_t>(size)) != 0) return unexpected(system_failure("ftruncate"));
            if (o.seal && ::fcntl(r.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
                return unexpected(system_failure("fcntl(F_ADD_SEALS)"));
            void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | (o.populate ? MAP_POPULATE : 0), r.fd.get(), 0);
            if (p == MAP_FAILED) return unexpected(system_failure("mmap"));
            r.host = static_cast<std::byte*>(p);
            r.gpa = o.guest_base + i * (size + granule);
            r.size = size;
            m.regions_.push_back(std::move(r));
        }
        return m;
    }

    frontend_memory(frontend_memory&& o) noexcept : regions_(std::move(o.regions_)) { o.regions_.clear(); }
    frontend_memory& operator=(frontend_memory&& o) noexcept {
        if (this != &o) {
            unmap();
            regions_ = std::move(o.regions_);
            o.regions_.clear();
        }
        return *this;
    }
    frontend_memory(const frontend_memory&) = delete;
    frontend_memory& operator=(const frontend_memory&) = delete;
    ~frontend_memory() { unmap(); }

    // ring::memory_policy: the local bytes of [gpa, gpa + len), all inside one region.
    std::byte* translate(std::uint64_t gpa, std::uint64_t len) noexcept {
        for (const region& r : regions_) {
            if (gpa < r.gpa) continue;
            const std::uint64_t off = gpa - r.gpa;
            if (!range_within(off, len, r.size)) continue;
            return r.host + off;
        }
        return nullptr;
    }

    // `bytes` aligned to `align` (a power of two) inside one region, never handed out before;
    // returns the guest address. Rings and buffers live for the memory's lifetime (no free).
    // They hold the new file's zeros unless the back-end wrote there first — whoever needs a
    // known content writes it (the driver rings initialise their own areas); clearing them
    // here would cost a pass over every buffer for nothing.
    [[nodiscard]] expected<std::uint64_t, frontend_error> allocate(std::uint64_t bytes, std::uint64_t align = 64) {
        for (region& r : regions_) {
            const std::uint64_t start = (r.used + align - 1) & ~(align - 1);
            if (!range_within(start, bytes, r.size)) continue;
            r.used = start + bytes;
            return r.gpa + start;
        }
        return unexpected(frontend_error{frontend_errc::out_of_memory, std::nullopt,
                                         "shared memory exhausted (" + std::to_string(bytes) + " bytes wanted)"});
    }

    // The front-end virtual address of a guest address (what SET_VRING_ADDR carries); 0 if none.
    [[nodiscard]] std::uint64_t user_address(std::uint64_t gpa) noexcept {
        return reinterpret_cast<std::uint64_t>(translate(gpa, 0));
    }

    [[nodiscard]] const std::vector<region>& regions() const noexcept { return regions_; }
    [[nodiscard]] std::uint64_t total_size() const noexcept {
        std::uint64_t n = 0;
        for (const region& r : regions_) n += r.size;
        return n;
    }

private:
    frontend_memory() = default;

    static frontend_error system_failure(const char* op) {
        return {frontend_errc::out_of_memory, std::nullopt,
                std::string(op) + ": " + std::error_code(errno, std::system_category()).message()};
    }
    void unmap() noexcept {
        for (region& r : regions_)
            if (r.host != nullptr) ::munmap(r.host, r.size);
        regions_.clear();
    }

    std::vector<region> regions_;
};

} // namespace vvu::protocol
