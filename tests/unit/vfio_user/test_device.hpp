// A small vfio_user::device for the tests and the fuzzer: a register file.
//   region 7 (config): 256 bytes, vendor 0x1b36 device 0x0099 at 0, read/write.
//   BAR 0: 0x2000 bytes backed by a memfd; only [0x1000, 0x2000) is mappable, as two sparse
//          areas of one fd (the standard convention: fds[0] at mmap_offset + area offset).
//          REGION_READ/WRITE go to the same file, so mapped bytes and REGION_READ agree.
//   BAR 2: 0x100 bytes of registers; an ioeventfd at 0x10 (2 bytes); writes are counted.
//   BAR 4: a "window" of two areas, each its own memfd (the per-area-fd convention, marked
//          with fd_per_area: the server adds vvu's TYPE capability).
//   irqs: INTx 1 vector, MSI-X 4 vectors (eventfd), the others none.
#pragma once

#include <vvu/vfio_user/device.hpp>
#include <vvu/vfio_user/protocol.hpp>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace vvu_test {

using namespace vvu;
using namespace vvu::vfio_user;

inline unique_fd make_memfd(const char* name, std::size_t size) {
    unique_fd fd(::memfd_create(name, MFD_CLOEXEC));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw std::runtime_error("memfd");
    return fd;
}

class register_device final : public device {
public:
    static constexpr std::uint64_t bar0_size = 0x2000;
    static constexpr std::uint64_t bar2_size = 0x100;
    static constexpr std::uint64_t bar2_doorbell = 0x10;  // has an ioeventfd
    static constexpr std::uint64_t bar2_register = 0x20;  // written through REGION_WRITE
    static constexpr std::uint64_t window_area = 0x1000;
    static constexpr std::uint32_t msix_vectors = 4;

    register_device()
        : bar0_(make_memfd("bar0", bar0_size)), win_{make_memfd("win0", window_area), make_memfd("win1", window_area)},
          ioeventfd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
        config_[0] = std::byte{0x36};
        config_[1] = std::byte{0x1b};
        config_[2] = std::byte{0x99};
        irq_fds_[0].resize(1);
        irq_fds_[2].resize(msix_vectors);
    }

    std::uint32_t device_flags() const noexcept override { return device_flags::pci | device_flags::reset; }

    region_info describe_region(std::uint32_t index) override {
        constexpr std::uint32_t rw = region_flags::read | region_flags::write;
        switch (index) {
        case 7: return {rw, config_.size(), 0, {}, {}};
        case 0: return {rw | region_flags::mmap, bar0_size, 0, {{0x1000, 0x800}, {0x1800, 0x800}}, {bar0_.get()}};
        case 2: return {rw, bar2_size, 0, {}, {}};
        case 4: return {rw | region_flags::mmap, 2 * window_area, 0, {{0, window_area}, {window_area, window_area}},
                        {win_[0].get(), win_[1].get()}, /*fd_per_area=*/true};
        default: return {};
        }
    }
    std::vector<io_eventfd> region_io_fds(std::uint32_t index) override {
        if (index == 2) return {{bar2_doorbell, 2, ioeventfd_.get()}};
        return {};
    }
    irq_info describe_irq(std::uint32_t index) override {
        if (index == 0) return {vvu::vfio_user::irq_info_flags::eventfd, 1};
        if (index == 2) return {vvu::vfio_user::irq_info_flags::eventfd | vvu::vfio_user::irq_info_flags::noresize,
                                msix_vectors};
        return {0, 0};
    }
    int set_irqs(const irq_set& s) override {
        ++set_irqs_calls;
        auto& v = irq_fds_[s.index];
        if (s.count == 0) {
            for (auto& fd : v) fd.reset();
            return 0;
        }
        if (s.flags & vvu::vfio_user::irq_set_flags::data_eventfd)
            for (std::uint32_t i = 0; i < s.count; ++i) v.at(s.start + i) = std::move(s.fds[i]);
        return 0;
    }
    int region_read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) override {
        ++reads;
        switch (index) {
        case 7: std::memcpy(out.data(), config_.data() + offset, out.size()); return 0;
        case 2: std::memcpy(out.data(), bar2_.data() + offset, out.size()); return 0;
        case 0: return pread_all(bar0_.get(), out, offset);
        case 4: return window_io(offset, out.data(), out.size(), false);
        default: return EINVAL;
        }
    }
    int region_write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> in) override {
        ++writes;
        switch (index) {
        case 7: std::memcpy(config_.data() + offset, in.data(), in.size()); return 0;
        case 2:
            std::memcpy(bar2_.data() + offset, in.data(), in.size());
            if (offset == bar2_register) ++register_writes;
            return 0;
        case 0:
            return ::pwrite(bar0_.get(), in.data(), in.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(in.size())
                       ? 0 : EIO;
        case 4: return window_io(offset, const_cast<std::byte*>(in.data()), in.size(), true);
        default: return EINVAL;
        }
    }
    int dma_mapped(std::uint64_t, std::uint64_t) override { ++maps; return refuse_dma ? EPERM : 0; }
    void dma_unmapped(std::uint64_t, std::uint64_t) override { ++unmaps; }
    int reset() override { ++resets; return 0; }
    void client_detached() override {
        ++detaches;
        for (auto& v : irq_fds_) for (auto& fd : v) fd.reset();
    }

    // Signals vector `vector` of irq `index` as the device would; false without an eventfd.
    bool trigger(std::uint32_t index, std::uint32_t vector) {
        auto& v = irq_fds_[index];
        if (vector >= v.size() || !v[vector]) return false;
        const std::uint64_t one = 1;
        return ::write(v[vector].get(), &one, 8) == 8;
    }
    // Reads (and clears) the BAR 2 doorbell's ioeventfd counter.
    std::uint64_t doorbell_count() {
        std::uint64_t n = 0;
        return ::read(ioeventfd_.get(), &n, 8) == 8 ? n : 0;
    }
    int window_fd(int i) const { return win_[i].get(); }
    std::uint8_t bar2_byte(std::size_t off) const { return static_cast<std::uint8_t>(bar2_[off]); }

    std::atomic<int> reads{0}, writes{0}, register_writes{0}, maps{0}, unmaps{0}, resets{0}, detaches{0},
        set_irqs_calls{0};
    bool refuse_dma = false;

private:
    static int pread_all(int fd, std::span<std::byte> out, std::uint64_t off) {
        return ::pread(fd, out.data(), out.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(out.size()) ? 0 : EIO;
    }
    int window_io(std::uint64_t off, std::byte* p, std::size_t n, bool write) {
        // An access stays in one area (the tests never straddle).
        const int area = off >= window_area ? 1 : 0;
        const auto o = static_cast<off_t>(off - static_cast<std::uint64_t>(area) * window_area);
        const ssize_t r = write ? ::pwrite(win_[area].get(), p, n, o) : ::pread(win_[area].get(), p, n, o);
        return r == static_cast<ssize_t>(n) ? 0 : EIO;
    }

    std::array<std::byte, 256> config_{};
    std::array<std::byte, bar2_size> bar2_{};
    unique_fd bar0_;
    std::array<unique_fd, 2> win_;
    unique_fd ioeventfd_;
    std::array<std::vector<unique_fd>, pci_irq_count> irq_fds_;
};

} // namespace vvu_test
