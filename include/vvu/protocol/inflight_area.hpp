// inflight_area: the inflight region of a session (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD; QEMU
// docs/interop/vhost-user.rst, "Inflight I/O tracking"): one shared-memory file with a part per
// queue, where the rings record the chains they took (split: ring/inflight.hpp; packed:
// ring/packed_inflight.hpp). The back-end creates it on GET_INFLIGHT_FD; the front-end keeps
// the fd and gives it back with SET_INFLIGHT_FD to every back-end that follows — after a
// crash, the next one finds there what was in flight.
//
// Each queue's part is `stride(queue_size)` bytes: room for the split layout (16 + 16 per
// descriptor) and the packed one (32 + 32 per descriptor), rounded to 64 bytes, so the same
// file serves whichever layout the rings use.
//
// A file that comes from the front-end is checked like memory: a size that covers what the
// description claims, and a seal against shrinking (a front-end that truncated it under us
// would crash the back-end with SIGBUS) — the files vvu creates are sealed.
#pragma once

#include <vvu/memory/guest_memory.hpp>
#include <vvu/memory/mapping.hpp>
#include <vvu/memory/region.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/payload.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace vvu::protocol {

class inflight_area {
public:
    static constexpr std::uint32_t max_queues = 1024;
    static constexpr std::uint64_t stride(std::uint32_t queue_size) noexcept {
        return (32 + 32 * std::uint64_t{queue_size} + 63) & ~std::uint64_t{63};
    }

    // GET_INFLIGHT_FD: a new, zeroed (every queue "uninitialised") and sealed file.
    static expected<std::shared_ptr<inflight_area>, std::string> create(std::uint16_t num_queues, std::uint16_t queue_size) {
        wire::inflight_description d{};
        d.mmap_offset = 0;
        d.num_queues = num_queues;
        d.queue_size = queue_size;
        if (auto bad = bad_shape(d)) return unexpected(std::move(*bad));
        d.mmap_size = num_queues * stride(queue_size);
        unique_fd fd(::memfd_create("vvu-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd) return unexpected(fmt::format("memfd_create: {}", std::strerror(errno)));
        if (::ftruncate(fd.get(), static_cast<off_t>(d.mmap_size)) != 0 ||
            ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
            return unexpected(fmt::format("sizing the inflight file: {}", std::strerror(errno)));
        return map(d, std::move(fd));
    }

    // SET_INFLIGHT_FD: the front-end's file, checked before it is mapped.
    static expected<std::shared_ptr<inflight_area>, std::string> adopt(const wire::inflight_description& d, unique_fd fd) {
        if (!fd) return unexpected(std::string("no fd"));
        if (auto bad = bad_shape(d)) return unexpected(std::move(*bad));
        const std::uint64_t need = d.num_queues * stride(d.queue_size);
        if (d.mmap_size < need || d.mmap_size > need + (1u << 20))
            return unexpected(fmt::format("mmap size {} for {} queues of {} descriptors (want {})", d.mmap_size, d.num_queues,
                                          d.queue_size, need));
        const int seals = ::fcntl(fd.get(), F_GET_SEALS);
        if (seals < 0 || (seals & F_SEAL_SHRINK) == 0)
            return unexpected(std::string("the file is not sealed against shrinking"));
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0 || d.mmap_offset > static_cast<std::uint64_t>(st.st_size) ||
            d.mmap_size > static_cast<std::uint64_t>(st.st_size) - d.mmap_offset)
            return unexpected(std::string("the file is smaller than the area it describes"));
        return map(d, std::move(fd));
    }

    // An area a transport mapped its own way (VVU: an area of the BAR 2 window, which has no
    // fd on this side), checked like a front-end's: `mapped` must hold what `d` describes.
    static expected<std::shared_ptr<inflight_area>, std::string> over(const wire::inflight_description& d,
                                                                      memory::region mapped) {
        if (auto bad = bad_shape(d)) return unexpected(std::move(*bad));
        const std::uint64_t need = d.num_queues * stride(d.queue_size);
        if (d.mmap_size < need || mapped.size() < d.mmap_size || mapped.host() == nullptr)
            return unexpected(fmt::format("{} mapped bytes for {} queues of {} descriptors (want {})", mapped.size(),
                                          d.num_queues, d.queue_size, need));
        auto a = std::shared_ptr<inflight_area>(new inflight_area());
        a->desc_ = d;
        a->base_ = mapped.host();
        a->region_ = std::move(mapped);
        return a;
    }

    [[nodiscard]] const wire::inflight_description& description() const noexcept { return desc_; }
    // The area's file; -1 for an area a transport mapped (over()).
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    // Queue i's part (empty when the area has no such queue).
    [[nodiscard]] std::span<std::byte> queue(std::uint32_t i) const noexcept {
        if (i >= desc_.num_queues) return {};
        return {base_ + i * stride(desc_.queue_size), static_cast<std::size_t>(stride(desc_.queue_size))};
    }

private:
    // Why a description's queue count or size cannot be taken, if it cannot.
    static std::optional<std::string> bad_shape(const wire::inflight_description& d) {
        if (d.num_queues == 0 || d.num_queues > max_queues || d.queue_size == 0 || d.queue_size > 32768)
            return fmt::format("{} queues of {} descriptors", d.num_queues, d.queue_size);
        return std::nullopt;
    }
    static expected<std::shared_ptr<inflight_area>, std::string> map(const wire::inflight_description& d, unique_fd fd) {
        const auto w = memory::window_for(d.mmap_offset, d.mmap_size, static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)));
        if (!w) return unexpected(std::string("the area wraps around"));
        auto m = memory::mapping::map(fd.get(), w->file_offset, static_cast<std::size_t>(w->length));
        if (!m) return unexpected(fmt::format("mmap of the inflight area: {}", m.error().message()));
        auto a = std::shared_ptr<inflight_area>(new inflight_area());
        a->desc_ = d;
        a->fd_ = std::move(fd);
        a->base_ = m->data() + w->delta;
        a->mapping_ = std::move(*m);
        return a;
    }
    inflight_area() = default;

    wire::inflight_description desc_{};
    unique_fd fd_;
    memory::mapping mapping_;
    memory::region region_; // over(): the transport's mapping
    std::byte* base_ = nullptr;
};

} // namespace vvu::protocol
