// pci::vfio_function (include/vvu/pci/vfio_function.hpp).
#include <vvu/pci/vfio_function.hpp>
#include <vvu/util/range.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace vvu::pci {

namespace {

constexpr std::uint64_t page = 4096;

error failure(int e, std::string what) { return error{std::error_code(e, std::system_category()), std::move(what)}; }
error last_failure(std::string what) { return failure(errno, std::move(what)); }

// munmap on destruction; shared by windows and doorbells.
struct mapped {
    void* at = MAP_FAILED;
    std::size_t length = 0;
    mapped(void* a, std::size_t l) noexcept : at(a), length(l) {}
    mapped(const mapped&) = delete;
    mapped& operator=(const mapped&) = delete;
    ~mapped() {
        if (at != MAP_FAILED) ::munmap(at, length);
    }
};

} // namespace

struct vfio_function::state {
    std::string bdf;
    unique_fd container, group, device;
    struct region {
        std::uint64_t size = 0, offset = 0;
        std::uint32_t flags = 0;
    };
    std::array<region, VFIO_PCI_NUM_REGIONS> regions{};
    struct dma {
        std::uint64_t len = 0;
        std::shared_ptr<mapped> memory;
    };
    std::map<std::uint64_t, dma> dmas;              // by iova
    std::map<std::uint64_t, std::weak_ptr<mapped>> bell_pages; // (bar << 48 | page) → mapping
    std::uint32_t msix_enabled = 0;                 // vectors enabled (0: MSI-X off)
    std::mutex mutex;                               // doorbell pages, from any thread

    ~state() {
        // The IOMMU forgets the maps with the container; the pages are unpinned by the kernel.
        if (msix_enabled != 0) {
            vfio_irq_set off{};
            off.argsz = sizeof off;
            off.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
            off.index = VFIO_PCI_MSIX_IRQ_INDEX;
            (void)::ioctl(device.get(), VFIO_DEVICE_SET_IRQS, &off);
        }
    }

    expected<const region*, error> bar_region(std::uint32_t index, std::uint64_t off, std::uint64_t len,
                                              const char* what) const {
        if (index >= regions.size() || (index > VFIO_PCI_BAR5_REGION_INDEX && index != VFIO_PCI_CONFIG_REGION_INDEX))
            return unexpected(failure(EINVAL, fmt::format("{}: region {} is not a BAR or config space", what, index)));
        const region& r = regions[index];
        if (!range_within(off, len, r.size))
            return unexpected(failure(EINVAL, fmt::format("{}: region {} [{:#x}, +{:#x}) outside its {:#x} bytes", what,
                                                          index, off, len, r.size)));
        return &r;
    }

    expected<void, error> read(std::uint32_t index, std::uint64_t off, std::span<std::byte> out) {
        auto r = bar_region(index, off, out.size(), "read");
        if (!r) return unexpected(r.error());
        const ssize_t n = ::pread(device.get(), out.data(), out.size(), static_cast<off_t>((*r)->offset + off));
        if (n != static_cast<ssize_t>(out.size()))
            return unexpected(failure(n < 0 ? errno : EIO, fmt::format("read region {} [{:#x}, +{})", index, off, out.size())));
        return {};
    }
    expected<void, error> write(std::uint32_t index, std::uint64_t off, std::span<const std::byte> in) {
        auto r = bar_region(index, off, in.size(), "write");
        if (!r) return unexpected(r.error());
        const ssize_t n = ::pwrite(device.get(), in.data(), in.size(), static_cast<off_t>((*r)->offset + off));
        if (n != static_cast<ssize_t>(in.size()))
            return unexpected(failure(n < 0 ? errno : EIO, fmt::format("write region {} [{:#x}, +{})", index, off, in.size())));
        return {};
    }

    // [off, off + len) of a mappable BAR, rounded out to pages.
    expected<std::pair<std::shared_ptr<mapped>, std::byte*>, error> map(std::uint32_t bar, std::uint64_t off,
                                                                        std::uint64_t len) {
        auto r = bar_region(bar, off, len, "map");
        if (!r) return unexpected(r.error());
        if (bar > VFIO_PCI_BAR5_REGION_INDEX || ((*r)->flags & VFIO_REGION_INFO_FLAG_MMAP) == 0)
            return unexpected(failure(ENOTSUP, fmt::format("BAR {} cannot be mapped", bar)));
        const std::uint64_t start = off & ~(page - 1);
        const std::uint64_t length = ((off + len + page - 1) & ~(page - 1)) - start;
        int prot = 0;
        if ((*r)->flags & VFIO_REGION_INFO_FLAG_READ) prot |= PROT_READ;
        if ((*r)->flags & VFIO_REGION_INFO_FLAG_WRITE) prot |= PROT_WRITE;
        void* p = ::mmap(nullptr, length, prot, MAP_SHARED, device.get(), static_cast<off_t>((*r)->offset + start));
        if (p == MAP_FAILED) return unexpected(last_failure(fmt::format("mmap BAR {} [{:#x}, +{:#x})", bar, start, length)));
        auto m = std::make_shared<mapped>(p, length);
        return std::pair{std::move(m), static_cast<std::byte*>(p) + (off - start)};
    }
};

vfio_function::~vfio_function() = default;

const std::string& vfio_function::address() const noexcept { return s_->bdf; }

expected<vfio_function, error> vfio_function::open(const std::string& bdf) {
    auto s = std::make_shared<state>();
    s->bdf = bdf;
    const std::string sys = "/sys/bus/pci/devices/" + bdf;
    if (bdf.empty() || bdf.find('/') != std::string::npos || ::access(sys.c_str(), F_OK) != 0)
        return unexpected(failure(ENODEV, "no PCI function " + bdf + " (" + sys + ")"));
    char link[PATH_MAX];
    const ssize_t n = ::readlink((sys + "/iommu_group").c_str(), link, sizeof link - 1);
    if (n <= 0)
        return unexpected(failure(ENODEV, bdf + " has no IOMMU group (is an IOMMU on? e.g. intel_iommu=on)"));
    link[n] = '\0';
    const char* slash = std::strrchr(link, '/');
    const std::string group_name = slash ? slash + 1 : link;
    const std::string group_path = "/dev/vfio/" + group_name;

    s->container.reset(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
    if (!s->container) return unexpected(last_failure("open /dev/vfio/vfio (is vfio loaded?)"));
    if (::ioctl(s->container.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION)
        return unexpected(failure(EPROTO, "VFIO API version mismatch"));
    const unsigned long iommu = ::ioctl(s->container.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1 ? VFIO_TYPE1v2_IOMMU
                                : ::ioctl(s->container.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) == 1 ? VFIO_TYPE1_IOMMU
                                                                                                        : 0;
    if (iommu == 0) return unexpected(failure(ENOTSUP, "VFIO offers no type-1 IOMMU (is vfio_iommu_type1 loaded?)"));

    s->group.reset(::open(group_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!s->group)
        return unexpected(last_failure("open " + group_path + " (is " + bdf + " bound to vfio-pci?)"));
    vfio_group_status status{};
    status.argsz = sizeof status;
    if (::ioctl(s->group.get(), VFIO_GROUP_GET_STATUS, &status) != 0) return unexpected(last_failure("VFIO_GROUP_GET_STATUS"));
    if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0)
        return unexpected(failure(EBUSY, "IOMMU group " + group_name + " is not viable (bind every device in it to vfio-pci)"));
    int container_fd = s->container.get();
    if (::ioctl(s->group.get(), VFIO_GROUP_SET_CONTAINER, &container_fd) != 0)
        return unexpected(last_failure("VFIO_GROUP_SET_CONTAINER"));
    if (::ioctl(s->container.get(), VFIO_SET_IOMMU, iommu) != 0) return unexpected(last_failure("VFIO_SET_IOMMU"));
    s->device.reset(::ioctl(s->group.get(), VFIO_GROUP_GET_DEVICE_FD, bdf.c_str()));
    if (!s->device) return unexpected(last_failure("VFIO_GROUP_GET_DEVICE_FD " + bdf));

    vfio_device_info info{};
    info.argsz = sizeof info;
    if (::ioctl(s->device.get(), VFIO_DEVICE_GET_INFO, &info) != 0) return unexpected(last_failure("VFIO_DEVICE_GET_INFO"));
    if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0) return unexpected(failure(ENODEV, bdf + " is not a PCI device to VFIO"));
    for (std::uint32_t i = 0; i < std::min<std::uint32_t>(info.num_regions, VFIO_PCI_NUM_REGIONS); ++i) {
        vfio_region_info ri{};
        ri.argsz = sizeof ri;
        ri.index = i;
        if (::ioctl(s->device.get(), VFIO_DEVICE_GET_REGION_INFO, &ri) != 0) continue; // absent (VGA, ROM)
        s->regions[i] = {ri.size, ri.offset, ri.flags};
    }
    if (s->regions[VFIO_PCI_CONFIG_REGION_INDEX].size == 0) return unexpected(failure(ENODEV, bdf + ": no config space"));

    // Memory space and bus mastering on: the BARs answer, the function may DMA.
    std::array<std::byte, 2> command{};
    if (auto r = s->read(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, command); !r) return unexpected(r.error());
    std::uint16_t c = static_cast<std::uint16_t>(std::to_integer<unsigned>(command[0]) |
                                                 (std::to_integer<unsigned>(command[1]) << 8));
    c |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    command = {std::byte(c & 0xff), std::byte(c >> 8)};
    if (auto r = s->write(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, command); !r) return unexpected(r.error());
    return vfio_function(std::move(s));
}

expected<void, error> vfio_function::config_read(std::uint64_t off, std::span<std::byte> out) {
    return s_->read(VFIO_PCI_CONFIG_REGION_INDEX, off, out);
}
expected<void, error> vfio_function::config_write(std::uint64_t off, std::span<const std::byte> in) {
    return s_->write(VFIO_PCI_CONFIG_REGION_INDEX, off, in);
}
expected<void, error> vfio_function::region_read(std::uint32_t bar, std::uint64_t off, std::span<std::byte> out) {
    if (bar > VFIO_PCI_BAR5_REGION_INDEX) return unexpected(failure(EINVAL, fmt::format("BAR {}", bar)));
    return s_->read(bar, off, out);
}
expected<void, error> vfio_function::region_write(std::uint32_t bar, std::uint64_t off, std::span<const std::byte> in) {
    if (bar > VFIO_PCI_BAR5_REGION_INDEX) return unexpected(failure(EINVAL, fmt::format("BAR {}", bar)));
    return s_->write(bar, off, in);
}

expected<window, error> vfio_function::map_window(std::uint32_t bar, std::uint64_t off, std::uint64_t len) {
    if (len == 0) return unexpected(failure(EINVAL, "map_window: empty"));
    auto m = s_->map(bar, off, len);
    if (!m) return unexpected(m.error());
    return window{m->second, len, std::move(m->first)};
}

expected<pci::doorbell, error> vfio_function::doorbell(std::uint32_t bar, std::uint64_t off, std::uint16_t value) {
    auto r = s_->bar_region(bar, off, sizeof value, "doorbell");
    if (!r) return unexpected(r.error());
    if (bar <= VFIO_PCI_BAR5_REGION_INDEX && ((*r)->flags & VFIO_REGION_INFO_FLAG_MMAP) != 0) {
        std::shared_ptr<mapped> m;
        const std::uint64_t key = (std::uint64_t{bar} << 56) | (off & ~(page - 1));
        {
            std::scoped_lock lock(s_->mutex);
            m = s_->bell_pages[key].lock();
        }
        if (!m) {
            auto fresh = s_->map(bar, off & ~(page - 1), page);
            if (!fresh) return unexpected(fresh.error());
            m = std::move(fresh->first);
            std::scoped_lock lock(s_->mutex);
            s_->bell_pages[key] = m;
        }
        auto* reg = reinterpret_cast<volatile std::uint16_t*>(static_cast<std::byte*>(m->at) + (off & (page - 1)));
        return pci::doorbell([m = std::move(m), reg, value] { *reg = value; });
    }
    // A BAR that cannot be mapped: a write through the device fd (the state stays alive with it).
    return pci::doorbell([s = s_, bar, off, value] {
        std::array<std::byte, 2> v{std::byte(value & 0xff), std::byte(value >> 8)};
        (void)s->write(bar, off, v);
    });
}

expected<void, error> vfio_function::dma_map(int fd, std::uint64_t file_off, std::uint64_t iova, std::uint64_t len) {
    if (len == 0 || iova % page != 0 || len % page != 0 || file_off % page != 0 || iova > ~std::uint64_t{0} - len)
        return unexpected(failure(EINVAL, fmt::format("dma_map [{:#x}, +{:#x}): not page-aligned or wraps", iova, len)));
    if (s_->dmas.contains(iova)) return unexpected(failure(EEXIST, fmt::format("dma_map at {:#x}: mapped already", iova)));
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, static_cast<off_t>(file_off));
    if (p == MAP_FAILED) return unexpected(last_failure("dma_map: mmap"));
    auto m = std::make_shared<mapped>(p, len);
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof map;
    map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    map.vaddr = reinterpret_cast<std::uintptr_t>(p);
    map.iova = iova;
    map.size = len;
    if (::ioctl(s_->container.get(), VFIO_IOMMU_MAP_DMA, &map) != 0)
        return unexpected(last_failure(fmt::format("VFIO_IOMMU_MAP_DMA [{:#x}, +{:#x})", iova, len)));
    s_->dmas[iova] = {len, std::move(m)};
    return {};
}

expected<void, error> vfio_function::dma_unmap(std::uint64_t iova, std::uint64_t len) {
    auto it = s_->dmas.find(iova);
    if (it == s_->dmas.end() || it->second.len != len)
        return unexpected(failure(ENOENT, fmt::format("dma_unmap [{:#x}, +{:#x}): no such map", iova, len)));
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof unmap;
    unmap.iova = iova;
    unmap.size = len;
    if (::ioctl(s_->container.get(), VFIO_IOMMU_UNMAP_DMA, &unmap) != 0)
        return unexpected(last_failure(fmt::format("VFIO_IOMMU_UNMAP_DMA [{:#x}, +{:#x})", iova, len)));
    s_->dmas.erase(it);
    return {};
}

expected<std::uint32_t, error> vfio_function::irq_count(irq_kind kind) {
    vfio_irq_info info{};
    info.argsz = sizeof info;
    info.index = static_cast<std::uint32_t>(kind);
    if (::ioctl(s_->device.get(), VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) return unexpected(last_failure("VFIO_DEVICE_GET_IRQ_INFO"));
    return info.count;
}

expected<void, error> vfio_function::set_irq_eventfds(irq_kind kind, std::uint32_t first, std::span<const int> fds) {
    if (fds.empty()) return {};
    std::uint32_t start = first;
    std::vector<std::int32_t> triggers(fds.begin(), fds.end());
    if (kind == irq_kind::msix && s_->msix_enabled == 0) {
        // The whole block at once (kernels before 6.5 cannot grow an enabled MSI-X block).
        auto count = irq_count(kind);
        if (!count) return unexpected(count.error());
        if (first > *count || fds.size() > *count - first)
            return unexpected(failure(EINVAL, fmt::format("MSI-X vectors {}..+{} of {}", first, fds.size(), *count)));
        std::vector<std::int32_t> all(*count, -1);
        std::copy(fds.begin(), fds.end(), all.begin() + first);
        triggers = std::move(all);
        start = 0;
    }
    std::vector<std::byte> buf(sizeof(vfio_irq_set) + triggers.size() * sizeof(std::int32_t));
    auto* set = reinterpret_cast<vfio_irq_set*>(buf.data());
    set->argsz = static_cast<std::uint32_t>(buf.size());
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = static_cast<std::uint32_t>(kind);
    set->start = start;
    set->count = static_cast<std::uint32_t>(triggers.size());
    std::memcpy(set->data, triggers.data(), triggers.size() * sizeof(std::int32_t));
    if (::ioctl(s_->device.get(), VFIO_DEVICE_SET_IRQS, set) != 0)
        return unexpected(last_failure(fmt::format("VFIO_DEVICE_SET_IRQS index {} vectors {}..+{}", set->index, start,
                                                   triggers.size())));
    if (kind == irq_kind::msix && s_->msix_enabled == 0) s_->msix_enabled = set->count;
    return {};
}

expected<void, error> vfio_function::reset() {
    if (::ioctl(s_->device.get(), VFIO_DEVICE_RESET) != 0) return unexpected(last_failure("VFIO_DEVICE_RESET"));
    return {};
}

} // namespace vvu::pci
