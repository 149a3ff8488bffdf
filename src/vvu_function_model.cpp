// The VVU PCI function model (include/vvu/vvu/function_model.hpp): register semantics per
// virtio 1.2 §4.1, PCI 3.0 §6, VFIO's region/irq rules.
#include <vvu/vvu/function_model.hpp>

#include <vvu/util/endian.hpp>
#include <vvu/util/fd_stream.hpp>
#include <vvu/util/range.hpp>

#include <linux/vfio.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

namespace vvu::vvu_device {

namespace {

namespace cfg = pci::config;
namespace vf = pci::vvu_function;
namespace regs = pci::vvu_function::registers;

// Where each capability sits in config space (the chain runs in this order).
constexpr std::uint32_t cap_common = 0x40;
constexpr std::uint32_t cap_notify = 0x50;
constexpr std::uint32_t cap_isr = 0x64;
constexpr std::uint32_t cap_device = 0x74;
constexpr std::uint32_t cap_doorbell = 0x84;
constexpr std::uint32_t cap_notification = 0x98;
constexpr std::uint32_t cap_shared_memory = 0xa8;
constexpr std::uint32_t cap_msix = 0xc0;
static_assert(cap_notify >= cap_common + pci::cap::size);
static_assert(cap_isr >= cap_notify + pci::cap::notify_size);
static_assert(cap_device >= cap_isr + pci::cap::size);
static_assert(cap_doorbell >= cap_device + pci::cap::size);
static_assert(cap_notification >= cap_doorbell + pci::cap::notify_size);
static_assert(cap_shared_memory >= cap_notification + pci::cap::size);
static_assert(cap_msix >= cap_shared_memory + pci::cap::cap64_size);
static_assert(cap_msix + pci::msix::cap_size <= cfg::size);

constexpr std::uint32_t bar_area_begin = cfg::bar0;        // six BAR dwords
constexpr std::uint32_t bar_area_end = cfg::bar0 + 6 * 4;
constexpr std::uint32_t bar2_offset = cfg::bar0 + 2 * 4;   // BAR 2 low, BAR 3 high
constexpr std::uint32_t bar4_offset = cfg::bar0 + 4 * 4;   // BAR 4 low, BAR 5 high
constexpr std::uint32_t interrupt_line = 0x3c;
constexpr std::uint16_t status_interrupt = 1u << 3; // PCI status: INTx asserted

constexpr std::uint32_t bar2_flags = pci::bar_flags::memory_64 | pci::bar_flags::prefetchable;
constexpr std::uint32_t bar4_flags = pci::bar_flags::memory_64;

constexpr std::uint64_t offered_features = vf::feature_version_1;

constexpr std::uint32_t notify_length = vf::num_queues * regs::notify_multiplier;

template <class T>
void put(std::span<std::byte> s, std::uint32_t at, T v) noexcept {
    le::store<T>(s.data() + at, v);
}

// Copies the part of `image` at [rel, rel + out.size()) into out; zero elsewhere.
void copy_out(std::span<const std::byte> image, std::uint64_t rel, std::span<std::byte> out) noexcept {
    std::fill(out.begin(), out.end(), std::byte{0});
    if (rel >= image.size()) return;
    const auto n = std::min<std::uint64_t>(out.size(), image.size() - rel);
    std::memcpy(out.data(), image.data() + rel, n);
}

// Copies `in` over [rel, …) of `storage`, dropping what falls outside.
void copy_in(std::span<std::byte> storage, std::uint64_t rel, std::span<const std::byte> in) noexcept {
    if (rel >= storage.size()) return;
    const auto n = std::min<std::uint64_t>(in.size(), storage.size() - rel);
    std::memcpy(storage.data() + rel, in.data(), n);
}

[[nodiscard]] bool is_eventfd(int fd) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char target[64];
    const ssize_t n = ::readlink(path, target, sizeof target);
    if (n >= 0) return std::string_view(target, static_cast<std::size_t>(n)) == "anon_inode:[eventfd]";
    // Without /proc the kind cannot be told; an open fd is accepted (O_NONBLOCK still keeps a
    // wrong kind from blocking us).
    return ::access("/proc/self/fd", F_OK) != 0 && ::fcntl(fd, F_GETFD) != -1;
}

void set_nonblocking(int fd) noexcept {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Signals an eventfd. A saturated counter (EAGAIN) is already signalled.
bool signal_eventfd(int fd) noexcept {
    const std::uint64_t one = 1;
    for (;;) {
        if (::write(fd, &one, sizeof one) == static_cast<ssize_t>(sizeof one)) return true;
        if (errno == EINTR) continue;
        return errno == EAGAIN;
    }
}

[[nodiscard]] bool is_power_of_two(std::uint16_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

} // namespace

// What a register access asks of the owner, collected under the lock and delivered after.
struct function_model::effects {
    bool status = false;
    std::uint8_t old_status = 0;
    std::uint8_t new_status = 0;
    bool backend_status = false;
    std::uint32_t backend_value = 0;
    int notified_queue = -1;
    std::int64_t doorbell = -1;
    bool interrupts_changed = false;
};

function_model::function_model(const function_options& params, owner& o)
    : owner_(o),
      max_queues_(params.max_queues),
      msix_vectors_(std::clamp<std::uint32_t>(params.msix_vectors == 0 ? default_msix_vectors(params.max_queues)
                                                                       : params.msix_vectors,
                                              1, regs::max_msix_vectors)),
      uuid_(params.uuid),
      bar2_(vf::bar2_layout::for_queues(params.max_queues)) {
    if (max_queues_ < 1 || max_queues_ > max_vhost_queues)
        throw std::invalid_argument("vvu function: max_queues must be 1..1024");
    msix_table_.resize(std::size_t{msix_vectors_} * pci::msix::entry_size);
    vring_vectors_.assign(max_queues_, pci::msix::no_vector);
    msix_fds_.resize(msix_vectors_);
    std::lock_guard lock(mutex_);
    reset_function_locked();
}

function_model::~function_model() = default;

// ---------------------------------------------------------------------------------------
// State resets

void function_model::build_config_space() {
    std::span<std::byte> c(config_);
    std::fill(c.begin(), c.end(), std::byte{0});
    std::fill(config_writable_.begin(), config_writable_.end(), std::byte{0});

    put<std::uint16_t>(c, cfg::vendor_id, pci::virtio_vendor_id);
    put<std::uint16_t>(c, cfg::device_id, vf::device_id);
    put<std::uint16_t>(c, cfg::status, cfg::status_capability_list);
    put<std::uint8_t>(c, cfg::revision_id, vf::revision);
    put<std::uint8_t>(c, cfg::class_code, static_cast<std::uint8_t>(vf::class_code));
    put<std::uint8_t>(c, cfg::class_code + 1, static_cast<std::uint8_t>(vf::class_code >> 8));
    put<std::uint8_t>(c, cfg::class_code + 2, static_cast<std::uint8_t>(vf::class_code >> 16));
    put<std::uint8_t>(c, cfg::header_type, 0);
    put<std::uint32_t>(c, bar2_offset, bar2_flags);
    put<std::uint32_t>(c, bar4_offset, bar4_flags);
    put<std::uint16_t>(c, cfg::subsystem_vendor_id, pci::virtio_vendor_id);
    put<std::uint16_t>(c, cfg::subsystem_id, vf::virtio_id);
    put<std::uint8_t>(c, cfg::capabilities_pointer, cap_common);
    put<std::uint8_t>(c, cfg::interrupt_pin, 1); // INTA#

    // Command: memory space, bus master, INTx disable are the driver's; the rest reads 0.
    const std::uint16_t command_mask = cfg::command_memory | cfg::command_bus_master | cfg::command_intx_disable;
    config_writable_[cfg::command] = static_cast<std::byte>(command_mask & 0xff);
    config_writable_[cfg::command + 1] = static_cast<std::byte>(command_mask >> 8);
    config_writable_[interrupt_line] = std::byte{0xff}; // scratch for the OS (PCI 3.0 §6.2.4)

    // struct virtio_pci_cap (§4.1.4) and its extended forms.
    auto virtio_cap = [&](std::uint32_t at, std::uint32_t next, std::uint8_t len, pci::cap_type type,
                          std::uint32_t bar, std::uint64_t offset, std::uint64_t length) {
        put<std::uint8_t>(c, at + pci::cap::vndr, cfg::cap_id_vendor);
        put<std::uint8_t>(c, at + pci::cap::next, static_cast<std::uint8_t>(next));
        put<std::uint8_t>(c, at + pci::cap::len, len);
        put<std::uint8_t>(c, at + pci::cap::cfg_type, static_cast<std::uint8_t>(type));
        put<std::uint8_t>(c, at + pci::cap::bar, static_cast<std::uint8_t>(bar));
        put<std::uint8_t>(c, at + pci::cap::id, 0);
        put<std::uint32_t>(c, at + pci::cap::offset, static_cast<std::uint32_t>(offset));
        put<std::uint32_t>(c, at + pci::cap::length, static_cast<std::uint32_t>(length));
    };
    virtio_cap(cap_common, cap_notify, pci::cap::size, pci::cap_type::common, regs::bar, regs::common,
               pci::common::size);
    virtio_cap(cap_notify, cap_isr, pci::cap::notify_size, pci::cap_type::notify, regs::bar, regs::notify,
               notify_length);
    put<std::uint32_t>(c, cap_notify + pci::cap::multiplier, regs::notify_multiplier);
    virtio_cap(cap_isr, cap_device, pci::cap::size, pci::cap_type::isr, regs::bar, regs::isr, regs::isr_size);
    virtio_cap(cap_device, cap_doorbell, pci::cap::size, pci::cap_type::device, regs::bar, regs::device,
               vf::device_config::size);
    virtio_cap(cap_doorbell, cap_notification, pci::cap::notify_size, pci::cap_type::doorbell, vf::vvu_bar::bar,
               bar2_.doorbells, bar2_.doorbells_size);
    put<std::uint32_t>(c, cap_doorbell + pci::cap::multiplier, vf::vvu_bar::doorbell_multiplier);
    virtio_cap(cap_notification, cap_shared_memory, pci::cap::size, pci::cap_type::notification, vf::vvu_bar::bar,
               bar2_.notification, vf::vvu_bar::notification_size);
    virtio_cap(cap_shared_memory, cap_msix, pci::cap::cap64_size, pci::cap_type::shared_memory, vf::vvu_bar::bar,
               bar2_.shared_memory, bar2_.shared_memory_size);
    put<std::uint32_t>(c, cap_shared_memory + pci::cap::offset_hi, static_cast<std::uint32_t>(bar2_.shared_memory >> 32));
    put<std::uint32_t>(c, cap_shared_memory + pci::cap::length_hi,
                       static_cast<std::uint32_t>(bar2_.shared_memory_size >> 32));

    // MSI-X (PCI 3.0 §6.8.2): table size is N - 1; enable and function mask are writable.
    put<std::uint8_t>(c, cap_msix, cfg::cap_id_msix);
    put<std::uint8_t>(c, cap_msix + 1, 0); // end of the list
    put<std::uint16_t>(c, cap_msix + pci::msix::message_control, static_cast<std::uint16_t>(msix_vectors_ - 1));
    put<std::uint32_t>(c, cap_msix + pci::msix::table, regs::msix_table | regs::bar);
    put<std::uint32_t>(c, cap_msix + pci::msix::pba, regs::msix_pba | regs::bar);
    config_writable_[cap_msix + pci::msix::message_control + 1] =
        static_cast<std::byte>((pci::msix::control_enable | pci::msix::control_function_mask) >> 8);
}

void function_model::reset_virtio_locked() noexcept {
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    driver_features_ = 0;
    config_msix_vector_ = pci::msix::no_vector;
    status_ = 0;
    queue_select_ = 0;
    queues_.fill(virtqueue_state{});
    isr_ = 0;
    intx_asserted_ = false;
    backend_status_ = 0;
    notification_select_ = 0;
    std::fill(vring_vectors_.begin(), vring_vectors_.end(), pci::msix::no_vector);
}

void function_model::reset_function_locked() noexcept {
    reset_virtio_locked();
    build_config_space();
    bar2_address_ = 0;
    bar4_address_ = 0;
    // Every entry starts masked (vector control bit 0), PCI 3.0 §6.8.2.9.
    std::fill(msix_table_.begin(), msix_table_.end(), std::byte{0});
    for (std::size_t at = 12; at < msix_table_.size(); at += pci::msix::entry_size)
        le::store<std::uint32_t>(msix_table_.data() + at, 1);
    intx_masked_ = false;
}

void function_model::drop_irq_fds_locked() noexcept {
    intx_fd_.reset();
    for (auto& fd : msix_fds_) fd.reset();
    msix_fds_attached_ = 0;
    intx_masked_ = false;
    intx_asserted_ = false;
}

// ---------------------------------------------------------------------------------------
// vfio_user::device

std::uint32_t function_model::device_flags() const noexcept { return VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET; }

vfio_user::region_info function_model::describe_region(std::uint32_t index) {
    vfio_user::region_info info;
    switch (index) {
    case vf::vvu_bar::bar: {
        info.flags = vfio_user::region_flags::read | vfio_user::region_flags::write;
        info.size = vf::vvu_bar::size;
        // Only well-formed areas inside the window are offered; areas and fds stay paired.
        for (const auto& a : owner_.window_areas()) {
            if (a.fd < 0 || a.size == 0 || !range_within(a.offset, a.size, bar2_.shared_memory_size)) continue;
            info.areas.push_back({bar2_.shared_memory + a.offset, a.size});
            info.fds.push_back(a.fd);
        }
        // Each area is its own fd, mapped from file offset 0: the server marks the region so
        // (a TYPE capability) and the client maps area i from fds[i].
        if (!info.areas.empty()) {
            info.flags |= vfio_user::region_flags::mmap | vfio_user::region_flags::caps;
            info.fd_per_area = true;
        }
        break;
    }
    case regs::bar:
        info.flags = vfio_user::region_flags::read | vfio_user::region_flags::write;
        info.size = regs::size;
        break;
    case vfio_user::config_region:
        info.flags = vfio_user::region_flags::read | vfio_user::region_flags::write;
        info.size = cfg::size;
        break;
    default:
        break;
    }
    return info;
}

std::uint64_t function_model::describe_region_size(std::uint32_t index) noexcept {
    switch (index) {
    case vf::vvu_bar::bar: return vf::vvu_bar::size;
    case regs::bar: return regs::size;
    case vfio_user::config_region: return cfg::size;
    default: return 0;
    }
}

std::vector<vfio_user::io_eventfd> function_model::region_io_fds(std::uint32_t index) {
    std::vector<vfio_user::io_eventfd> fds;
    if (index != vf::vvu_bar::bar) return fds;
    // Calls and errors; the log doorbell (index max_queues) has no fd: it always comes through
    // region_write.
    for (std::uint32_t bell = 0; bell < vf::bar2_layout::doorbell_count(max_queues_); ++bell) {
        if (bell == bar2_.log_doorbell_index()) continue;
        const int fd = owner_.doorbell_eventfd(bell);
        if (fd >= 0) fds.push_back({bar2_.doorbell(bell), 2, fd});
    }
    return fds;
}

vfio_user::irq_info function_model::describe_irq(std::uint32_t index) {
    // As vfio-pci reports them: INTx maskable and automasked, the others not resizable.
    switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
        return {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1};
    case VFIO_PCI_MSIX_IRQ_INDEX:
        return {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, msix_vectors_};
    case VFIO_PCI_MSI_IRQ_INDEX:
    case VFIO_PCI_ERR_IRQ_INDEX:
    case VFIO_PCI_REQ_IRQ_INDEX:
        return {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 0};
    default:
        return {};
    }
}

int function_model::set_irqs(const vfio_user::irq_set& s) {
    const std::uint32_t data = s.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    const std::uint32_t action = s.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    if (std::popcount(data) != 1 || std::popcount(action) != 1 ||
        (s.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) != 0)
        return EINVAL;
    if (data == VFIO_IRQ_SET_DATA_EVENTFD && s.fds.size() < s.count) return EINVAL;
    if (data == VFIO_IRQ_SET_DATA_BOOL && s.bools.size() < s.count) return EINVAL;

    bool changed = false;
    int rc = 0;
    {
        std::lock_guard lock(mutex_);
        switch (s.index) {
        case VFIO_PCI_INTX_IRQ_INDEX: rc = set_intx_irqs_locked(s, changed); break;
        case VFIO_PCI_MSIX_IRQ_INDEX: rc = set_msix_irqs_locked(s, changed); break;
        case VFIO_PCI_MSI_IRQ_INDEX:
        case VFIO_PCI_ERR_IRQ_INDEX:
        case VFIO_PCI_REQ_IRQ_INDEX: rc = s.count == 0 ? 0 : EINVAL; break; // none of these exist
        default: rc = EINVAL; break;
        }
    }
    if (changed) owner_.interrupts_changed();
    return rc;
}

int function_model::set_intx_irqs_locked(const vfio_user::irq_set& s, bool& changed) {
    if (std::uint64_t{s.start} + s.count > 1) return EINVAL;
    const std::uint32_t data = s.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    const std::uint32_t action = s.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    // DATA_NONE acts on every vector in range, DATA_BOOL on the true ones.
    const bool selected = s.count == 1 && (data == VFIO_IRQ_SET_DATA_NONE ||
                                           (data == VFIO_IRQ_SET_DATA_BOOL && s.bools[0] != std::byte{0}));
    switch (action) {
    case VFIO_IRQ_SET_ACTION_TRIGGER:
        if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
            if (s.count == 0) return 0;
            unique_fd& fd = s.fds[0];
            if (fd.valid() && !is_eventfd(fd.get())) return EINVAL;
            if (fd.valid()) set_nonblocking(fd.get());
            intx_fd_ = std::move(fd);
            intx_asserted_ = false;
            changed = true;
        } else if (data == VFIO_IRQ_SET_DATA_NONE && s.count == 0) {
            intx_fd_.reset();
            intx_asserted_ = false;
            changed = true;
        } else if (selected) {
            (void)fire_intx_locked();
        }
        return 0;
    case VFIO_IRQ_SET_ACTION_MASK:
    case VFIO_IRQ_SET_ACTION_UNMASK:
        if (data == VFIO_IRQ_SET_DATA_EVENTFD) return ENOTSUP; // no resample/unmask eventfds
        if (!selected) return 0;
        if (action == VFIO_IRQ_SET_ACTION_MASK) {
            intx_masked_ = true;
        } else {
            // Unmasking re-arms the line: still asserted (ISR non-zero) means a new interrupt.
            intx_masked_ = false;
            intx_asserted_ = false;
            if (isr_ != 0) (void)assert_intx_locked();
        }
        return 0;
    default:
        return EINVAL;
    }
}

int function_model::set_msix_irqs_locked(const vfio_user::irq_set& s, bool& changed) {
    if (std::uint64_t{s.start} + s.count > msix_vectors_) return EINVAL;
    const std::uint32_t data = s.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    const std::uint32_t action = s.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    if (action != VFIO_IRQ_SET_ACTION_TRIGGER) return EINVAL; // vfio-pci masks MSI-X in the table only

    if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
        // All or nothing: check every fd before taking any.
        for (std::uint32_t i = 0; i < s.count; ++i)
            if (s.fds[i].valid() && !is_eventfd(s.fds[i].get())) return EINVAL;
        for (std::uint32_t i = 0; i < s.count; ++i) {
            if (s.fds[i].valid()) set_nonblocking(s.fds[i].get());
            msix_fds_[s.start + i] = std::move(s.fds[i]);
        }
        msix_fds_attached_ = static_cast<std::uint32_t>(
            std::ranges::count_if(msix_fds_, [](const unique_fd& fd) { return fd.valid(); }));
        changed = true;
        return 0;
    }
    if (data == VFIO_IRQ_SET_DATA_NONE && s.count == 0) {
        for (auto& fd : msix_fds_) fd.reset();
        msix_fds_attached_ = 0;
        changed = true;
        return 0;
    }
    for (std::uint32_t i = 0; i < s.count; ++i)
        if (data == VFIO_IRQ_SET_DATA_NONE || s.bools[i] != std::byte{0}) (void)fire_msix_locked(s.start + i);
    return 0;
}

int function_model::region_read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) {
    const std::uint64_t size = describe_region_size(index);
    if (!range_within(offset, out.size(), size)) return EINVAL;
    if (out.empty()) return 0;
    if (index == vf::vvu_bar::bar && offset >= bar2_.shared_memory)
        return owner_.window_read(offset - bar2_.shared_memory, out);

    std::lock_guard lock(mutex_);
    switch (index) {
    case vfio_user::config_region: config_read_locked(offset, out); break;
    case regs::bar: registers_read_locked(offset, out); break;
    case vf::vvu_bar::bar: bar2_read_locked(offset, out); break;
    default: return EINVAL;
    }
    return 0;
}

int function_model::region_write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> in) {
    const std::uint64_t size = describe_region_size(index);
    if (!range_within(offset, in.size(), size)) return EINVAL;
    if (in.empty()) return 0;
    if (index == vf::vvu_bar::bar && offset >= bar2_.shared_memory)
        return owner_.window_write(offset - bar2_.shared_memory, in);

    effects fx;
    {
        std::lock_guard lock(mutex_);
        switch (index) {
        case vfio_user::config_region: config_write_locked(offset, in); break;
        case regs::bar: registers_write_locked(offset, in, fx); break;
        case vf::vvu_bar::bar: bar2_write_locked(offset, in, fx); break;
        default: return EINVAL;
        }
    }
    dispatch(fx);
    return 0;
}

int function_model::dma_mapped(std::uint64_t iova, std::uint64_t size) { return owner_.dma_mapped(iova, size); }

void function_model::dma_unmapped(std::uint64_t iova, std::uint64_t size) { owner_.dma_unmapped(iova, size); }

int function_model::reset() {
    effects fx;
    {
        std::lock_guard lock(mutex_);
        fx.status = true;
        fx.old_status = status_;
        fx.new_status = 0;
        fx.interrupts_changed = true;
        reset_function_locked();
    }
    dispatch(fx);
    return 0;
}

void function_model::client_detached() {
    {
        std::lock_guard lock(mutex_);
        reset_function_locked();
        drop_irq_fds_locked();
    }
    owner_.client_detached();
}

// ---------------------------------------------------------------------------------------
// Live update

void function_model::save(byte_writer& w, fd_writer& fds) const {
    std::lock_guard lock(mutex_);
    w.put<std::uint32_t>(max_queues_);
    w.put<std::uint32_t>(msix_vectors_);
    w.put_bytes(std::as_bytes(std::span(config_)));
    w.put<std::uint64_t>(bar2_address_);
    w.put<std::uint64_t>(bar4_address_);
    w.put_bytes(msix_table_);
    w.put<std::uint32_t>(device_feature_select_);
    w.put<std::uint32_t>(driver_feature_select_);
    w.put<std::uint64_t>(driver_features_);
    w.put<std::uint16_t>(config_msix_vector_);
    w.put<std::uint8_t>(status_);
    w.put<std::uint16_t>(queue_select_);
    for (const virtqueue_state& q : queues_) {
        w.put<std::uint16_t>(q.size);
        w.put<std::uint64_t>(q.desc);
        w.put<std::uint64_t>(q.driver);
        w.put<std::uint64_t>(q.device);
        w.put_bool(q.enabled);
        w.put<std::uint16_t>(q.msix_vector);
    }
    w.put<std::uint8_t>(isr_);
    w.put<std::uint32_t>(backend_status_);
    w.put<std::uint16_t>(notification_select_);
    for (std::uint16_t v : vring_vectors_) w.put<std::uint16_t>(v);
    w.put_bool(frontend_up_);
    w.put<std::uint8_t>(config_generation_);
    fds.put(w, intx_fd_.get());
    w.put_bool(intx_masked_);
    w.put_bool(intx_asserted_);
    for (const unique_fd& fd : msix_fds_) fds.put(w, fd.get());
    w.put<std::uint32_t>(msix_fds_attached_);
}

expected<void, std::string> function_model::restore(byte_reader& r, fd_reader& fds) {
    if (r.get<std::uint32_t>() != max_queues_ || r.get<std::uint32_t>() != msix_vectors_)
        return unexpected(std::string("the function's state is for another max_queues or MSI-X vector count"));
    std::lock_guard lock(mutex_);
    const auto config = r.get_bytes(config_.size());
    const auto bar2 = r.get<std::uint64_t>(), bar4 = r.get<std::uint64_t>();
    const auto msix_table = r.get_bytes(msix_table_.size());
    if (!r.ok() || config.size() != config_.size() || msix_table.size() != msix_table_.size())
        return unexpected(std::string("the function's state is short"));
    std::copy(config.begin(), config.end(), config_.begin());
    std::copy(msix_table.begin(), msix_table.end(), msix_table_.begin());
    bar2_address_ = bar2;
    bar4_address_ = bar4;
    device_feature_select_ = r.get<std::uint32_t>();
    driver_feature_select_ = r.get<std::uint32_t>();
    driver_features_ = r.get<std::uint64_t>();
    config_msix_vector_ = checked_vector(r.get<std::uint16_t>());
    status_ = r.get<std::uint8_t>();
    queue_select_ = r.get<std::uint16_t>();
    for (virtqueue_state& q : queues_) {
        q.size = r.get<std::uint16_t>();
        q.desc = r.get<std::uint64_t>();
        q.driver = r.get<std::uint64_t>();
        q.device = r.get<std::uint64_t>();
        q.enabled = r.get_bool();
        q.msix_vector = checked_vector(r.get<std::uint16_t>());
    }
    isr_ = r.get<std::uint8_t>();
    backend_status_ = r.get<std::uint32_t>();
    notification_select_ = r.get<std::uint16_t>();
    for (std::uint16_t& v : vring_vectors_) v = checked_vector(r.get<std::uint16_t>());
    frontend_up_ = r.get_bool();
    config_generation_ = r.get<std::uint8_t>();
    intx_fd_ = fds.take(r);
    intx_masked_ = r.get_bool();
    intx_asserted_ = r.get_bool();
    for (unique_fd& fd : msix_fds_) fd = fds.take(r);
    msix_fds_attached_ = r.get<std::uint32_t>();
    bool eventfds = !intx_fd_ || is_eventfd(intx_fd_.get());
    std::uint32_t attached = 0;
    for (const unique_fd& fd : msix_fds_) {
        if (!fd) continue;
        ++attached;
        eventfds = eventfds && is_eventfd(fd.get());
    }
    const bool sizes_ok = std::ranges::all_of(queues_, [](const virtqueue_state& q) {
        return q.size != 0 && q.size <= vf::max_queue_size && std::has_single_bit(q.size);
    });
    if (!r.ok() || !eventfds || attached != msix_fds_attached_ || !sizes_ok) {
        reset_function_locked();
        drop_irq_fds_locked();
        return unexpected(std::string("the function's state is malformed"));
    }
    return {};
}

void function_model::dispatch(const effects& fx) {
    if (fx.status) owner_.status_changed(fx.old_status, fx.new_status);
    if (fx.backend_status) owner_.backend_status_written(fx.backend_value);
    if (fx.notified_queue >= 0) owner_.queue_notified(static_cast<std::uint16_t>(fx.notified_queue));
    if (fx.doorbell >= 0) owner_.doorbell_rung(static_cast<std::uint32_t>(fx.doorbell));
    if (fx.interrupts_changed) owner_.interrupts_changed();
}

// ---------------------------------------------------------------------------------------
// Config space

void function_model::config_read_locked(std::uint64_t offset, std::span<std::byte> out) const {
    std::array<std::byte, cfg::size> image = config_;
    if (isr_ != 0 && !msix_in_use_locked()) {
        const auto status = le::load<std::uint16_t>(image.data() + cfg::status);
        le::store<std::uint16_t>(image.data() + cfg::status, status | status_interrupt);
    }
    copy_out(image, offset, out);
}

void function_model::config_write_locked(std::uint64_t offset, std::span<const std::byte> in) {
    const std::uint16_t command_before = le::load<std::uint16_t>(config_.data() + cfg::command);
    // BARs are assembled from the written bytes, then masked to their size: a write of all
    // ones reads back the size mask, other writes the address (PCI 3.0 §6.2.5.1).
    std::array<std::byte, bar_area_end - bar_area_begin> bars{};
    std::memcpy(bars.data(), config_.data() + bar_area_begin, bars.size());
    bool bars_written = false;
    for (std::size_t i = 0; i < in.size() && offset + i < cfg::size; ++i) {
        const std::size_t at = offset + i;
        if (at >= bar_area_begin && at < bar_area_end) {
            bars[at - bar_area_begin] = in[i];
            bars_written = true;
        } else {
            const std::byte mask = config_writable_[at];
            config_[at] = (config_[at] & ~mask) | (in[i] & mask);
        }
    }
    if (bars_written) {
        auto address = [&](std::uint32_t at, std::uint64_t bar_size) {
            const std::uint64_t lo = le::load<std::uint32_t>(bars.data() + (at - bar_area_begin));
            const std::uint64_t hi = le::load<std::uint32_t>(bars.data() + (at + 4 - bar_area_begin));
            return ((hi << 32) | lo) & ~(bar_size - 1);
        };
        bar2_address_ = address(bar2_offset, vf::vvu_bar::size);
        bar4_address_ = address(bar4_offset, regs::size);
        std::span<std::byte> c(config_);
        put<std::uint32_t>(c, bar2_offset, static_cast<std::uint32_t>(bar2_address_) | bar2_flags);
        put<std::uint32_t>(c, bar2_offset + 4, static_cast<std::uint32_t>(bar2_address_ >> 32));
        put<std::uint32_t>(c, bar4_offset, static_cast<std::uint32_t>(bar4_address_) | bar4_flags);
        put<std::uint32_t>(c, bar4_offset + 4, static_cast<std::uint32_t>(bar4_address_ >> 32));
    }
    // Clearing INTx disable while the ISR holds events asserts the line again.
    const std::uint16_t command_after = le::load<std::uint16_t>(config_.data() + cfg::command);
    if ((command_before & cfg::command_intx_disable) && !(command_after & cfg::command_intx_disable) && isr_ != 0)
        (void)assert_intx_locked();
}

// ---------------------------------------------------------------------------------------
// BAR 4: common cfg, ISR, device cfg, notify, MSI-X

std::array<std::byte, pci::common::size> function_model::render_common_locked() const {
    namespace cc = pci::common;
    std::array<std::byte, cc::size> image{};
    std::span<std::byte> c(image);
    auto half = [](std::uint64_t bits, std::uint32_t select) {
        return select < 2 ? static_cast<std::uint32_t>(bits >> (32 * select)) : 0u;
    };
    put<std::uint32_t>(c, cc::device_feature_select, device_feature_select_);
    put<std::uint32_t>(c, cc::device_feature, half(offered_features, device_feature_select_));
    put<std::uint32_t>(c, cc::driver_feature_select, driver_feature_select_);
    put<std::uint32_t>(c, cc::driver_feature, half(driver_features_, driver_feature_select_));
    put<std::uint16_t>(c, cc::config_msix_vector, config_msix_vector_);
    put<std::uint16_t>(c, cc::num_queues, vf::num_queues);
    put<std::uint8_t>(c, cc::device_status, status_);
    put<std::uint8_t>(c, cc::config_generation, config_generation_);
    put<std::uint16_t>(c, cc::queue_select, queue_select_);
    if (queue_select_ < vf::num_queues) {
        const virtqueue_state& q = queues_[queue_select_];
        put<std::uint16_t>(c, cc::queue_size, q.size);
        put<std::uint16_t>(c, cc::queue_msix_vector, q.msix_vector);
        put<std::uint16_t>(c, cc::queue_enable, q.enabled ? 1 : 0);
        put<std::uint16_t>(c, cc::queue_notify_off, queue_select_);
        put<std::uint64_t>(c, cc::queue_desc, q.desc);
        put<std::uint64_t>(c, cc::queue_driver, q.driver);
        put<std::uint64_t>(c, cc::queue_device, q.device);
    } else {
        // No such queue: size 0 says so (§4.1.4.3); no vector.
        put<std::uint16_t>(c, cc::queue_msix_vector, pci::msix::no_vector);
    }
    return image;
}

std::array<std::byte, vf::device_config::size> function_model::render_device_config_locked() const {
    namespace dc = vf::device_config;
    std::array<std::byte, dc::size> image{};
    std::span<std::byte> c(image);
    put<std::uint32_t>(c, dc::status, backend_status_ | (frontend_up_ ? dc::frontend_up : 0u));
    put<std::uint32_t>(c, dc::max_vhost_queues, max_queues_);
    for (std::size_t i = 0; i < uuid_.size(); ++i) put<std::uint8_t>(c, dc::uuid + static_cast<std::uint32_t>(i), uuid_[i]);
    return image;
}

void function_model::registers_read_locked(std::uint64_t offset, std::span<std::byte> out) {
    if (offset < regs::isr) {
        copy_out(render_common_locked(), offset - regs::common, out);
    } else if (offset < regs::device) {
        const std::uint64_t rel = offset - regs::isr;
        const std::array<std::byte, regs::isr_size> image{static_cast<std::byte>(isr_)};
        copy_out(image, rel, out);
        if (rel == 0) {
            // Reading the ISR clears it and deasserts INTx (§4.1.4.5).
            isr_ = 0;
            intx_asserted_ = false;
        }
    } else if (offset < regs::notify) {
        copy_out(render_device_config_locked(), offset - regs::device, out);
    } else if (offset < regs::msix_table) {
        copy_out({}, 0, out); // notify registers are write-only
    } else if (offset < regs::msix_pba) {
        copy_out(msix_table_, offset - regs::msix_table, out);
    } else {
        // Pending bits: nothing is ever left pending (a vector without an eventfd is dropped).
        std::vector<std::byte> pba((msix_vectors_ + 63) / 64 * 8);
        copy_out(pba, offset - regs::msix_pba, out);
    }
}

void function_model::registers_write_locked(std::uint64_t offset, std::span<const std::byte> in, effects& fx) {
    if (offset < regs::isr) {
        if (offset - regs::common < pci::common::size)
            common_write_locked(static_cast<std::uint32_t>(offset - regs::common), in, fx);
    } else if (offset < regs::device) {
        // ISR is read-only.
    } else if (offset < regs::notify) {
        if (offset - regs::device == vf::device_config::status && in.size() == 4) {
            backend_status_ = le::load<std::uint32_t>(in.data()) & ~vf::device_config::frontend_up;
            fx.backend_status = true;
            fx.backend_value = backend_status_;
        }
    } else if (offset < regs::msix_table) {
        const std::uint64_t rel = offset - regs::notify;
        if (rel % regs::notify_multiplier == 0 && rel / regs::notify_multiplier < vf::num_queues)
            fx.notified_queue = static_cast<int>(rel / regs::notify_multiplier);
    } else if (offset < regs::msix_pba) {
        copy_in(msix_table_, offset - regs::msix_table, in);
    }
    // The PBA is read-only.
}

void function_model::common_write_locked(std::uint32_t offset, std::span<const std::byte> in, effects& fx) {
    namespace cc = pci::common;
    const std::size_t n = in.size();
    virtqueue_state* q = queue_select_ < vf::num_queues ? &queues_[queue_select_] : nullptr;

    // 64-bit queue addresses: as one 64-bit access or two 32-bit halves; frozen while enabled.
    if (offset >= cc::queue_desc && offset < cc::queue_notify_data) {
        if (!q || q->enabled) return;
        const std::uint32_t field = offset - (offset - cc::queue_desc) % 8;
        std::uint64_t& address = field == cc::queue_desc ? q->desc : field == cc::queue_driver ? q->driver : q->device;
        if (offset == field && n == 8) {
            address = le::load<std::uint64_t>(in.data());
        } else if (n == 4 && offset == field) {
            address = (address & ~0xffffffffull) | le::load<std::uint32_t>(in.data());
        } else if (n == 4 && offset == field + 4) {
            address = (address & 0xffffffffull) | (std::uint64_t{le::load<std::uint32_t>(in.data())} << 32);
        }
        return;
    }

    switch (offset) {
    case cc::device_feature_select:
        if (n == 4) device_feature_select_ = le::load<std::uint32_t>(in.data());
        break;
    case cc::driver_feature_select:
        if (n == 4) driver_feature_select_ = le::load<std::uint32_t>(in.data());
        break;
    case cc::driver_feature:
        // Frozen once FEATURES_OK stuck (§3.1.1); beyond bit 63 nothing is offered.
        if (n == 4 && !(status_ & pci::status::features_ok) && driver_feature_select_ < 2) {
            const unsigned shift = 32 * driver_feature_select_;
            driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) |
                               (std::uint64_t{le::load<std::uint32_t>(in.data())} << shift);
        }
        break;
    case cc::config_msix_vector:
        if (n == 2) {
            config_msix_vector_ = checked_vector(le::load<std::uint16_t>(in.data()));
            fx.interrupts_changed = true;
        }
        break;
    case cc::device_status:
        if (n == 1) status_write_locked(static_cast<std::uint8_t>(in[0]), fx);
        break;
    case cc::queue_select:
        if (n == 2) queue_select_ = le::load<std::uint16_t>(in.data());
        break;
    case cc::queue_size:
        if (n == 2 && q && !q->enabled) {
            const auto size = le::load<std::uint16_t>(in.data());
            if (is_power_of_two(size) && size <= vf::max_queue_size) q->size = size;
        }
        break;
    case cc::queue_msix_vector:
        if (n == 2 && q) {
            q->msix_vector = checked_vector(le::load<std::uint16_t>(in.data()));
            fx.interrupts_changed = true;
        }
        break;
    case cc::queue_enable:
        if (n == 2 && q && le::load<std::uint16_t>(in.data()) == 1) q->enabled = true;
        break;
    default:
        break; // read-only (device_feature, num_queues, config_generation, queue_notify_off, …)
    }
}

void function_model::status_write_locked(std::uint8_t value, effects& fx) {
    namespace st = pci::status;
    const std::uint8_t old = status_;
    if (value == 0) {
        reset_virtio_locked();
        fx.status = true;
        fx.old_status = old;
        fx.new_status = 0;
        fx.interrupts_changed = true;
        return;
    }
    // Bits stick until reset; DEVICE_NEEDS_RESET is the device's to set.
    std::uint8_t next = static_cast<std::uint8_t>(old | (value & ~st::device_needs_reset));
    if ((next & st::features_ok) && !(old & st::features_ok)) {
        const bool acceptable =
            (driver_features_ & ~offered_features) == 0 && (driver_features_ & vf::feature_version_1) != 0;
        if (!acceptable) next = static_cast<std::uint8_t>(next & ~st::features_ok);
    }
    if (!(next & st::features_ok)) next = static_cast<std::uint8_t>(next & ~st::driver_ok);
    status_ = next;
    if (next != old) {
        fx.status = true;
        fx.old_status = old;
        fx.new_status = next;
    }
}

std::uint16_t function_model::checked_vector(std::uint16_t v) const noexcept {
    return v < msix_vectors_ ? v : pci::msix::no_vector;
}

// ---------------------------------------------------------------------------------------
// BAR 2: doorbells and the notification structure (the window goes to the owner)

void function_model::bar2_read_locked(std::uint64_t offset, std::span<std::byte> out) const {
    if (offset >= bar2_.notification && offset < bar2_.notification + vf::vvu_bar::notification_size) {
        std::array<std::byte, 4> image{};
        std::span<std::byte> c(image);
        put<std::uint16_t>(c, vf::vvu_bar::notification_select, notification_select_);
        put<std::uint16_t>(c, vf::vvu_bar::notification_msix_vector,
                           notification_select_ < max_queues_ ? vring_vectors_[notification_select_]
                                                              : pci::msix::no_vector);
        copy_out(image, offset - bar2_.notification, out);
    } else {
        copy_out({}, 0, out); // doorbells are write-only
    }
}

void function_model::bar2_write_locked(std::uint64_t offset, std::span<const std::byte> in, effects& fx) {
    const std::uint64_t bells_end = bar2_.doorbell(static_cast<std::uint32_t>(vf::bar2_layout::doorbell_count(max_queues_)));
    if (offset >= bar2_.doorbells && offset < bells_end) {
        const std::uint64_t rel = offset - bar2_.doorbells;
        if (rel % vf::vvu_bar::doorbell_multiplier == 0) fx.doorbell = static_cast<std::int64_t>(rel / vf::vvu_bar::doorbell_multiplier);
        return;
    }
    if (offset < bar2_.notification || in.size() != 2) return;
    const std::uint64_t rel = offset - bar2_.notification;
    const auto value = le::load<std::uint16_t>(in.data());
    if (rel == vf::vvu_bar::notification_select) {
        notification_select_ = value;
    } else if (rel == vf::vvu_bar::notification_msix_vector && notification_select_ < max_queues_) {
        vring_vectors_[notification_select_] = checked_vector(value);
        fx.interrupts_changed = true;
    }
}

// ---------------------------------------------------------------------------------------
// Interrupts

bool function_model::msix_in_use_locked() const noexcept {
    const auto control = le::load<std::uint16_t>(config_.data() + cap_msix + pci::msix::message_control);
    return (control & pci::msix::control_enable) != 0 || msix_fds_attached_ != 0;
}

bool function_model::fire_msix_locked(std::uint32_t vector) {
    if (vector >= msix_fds_.size() || !msix_fds_[vector]) return false;
    return signal_eventfd(msix_fds_[vector].get());
}

bool function_model::fire_intx_locked() {
    if (!intx_fd_) return false;
    return signal_eventfd(intx_fd_.get());
}

bool function_model::assert_intx_locked() {
    if (msix_in_use_locked() || intx_asserted_ || intx_masked_ || !intx_fd_) return false;
    const auto command = le::load<std::uint16_t>(config_.data() + cfg::command);
    if (command & cfg::command_intx_disable) return false;
    intx_asserted_ = true;
    return fire_intx_locked();
}

bool function_model::raise_locked(std::uint16_t vector, std::uint8_t isr_bit) {
    if (msix_in_use_locked()) return vector != pci::msix::no_vector && fire_msix_locked(vector);
    isr_ |= isr_bit;
    return assert_intx_locked();
}

bool function_model::signal_queue(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    if (queue >= vf::num_queues) return false;
    return raise_locked(queues_[queue].msix_vector, pci::isr::queue);
}

bool function_model::signal_config() {
    std::lock_guard lock(mutex_);
    isr_ |= pci::isr::config;
    return raise_locked(config_msix_vector_, pci::isr::config);
}

bool function_model::signal_vring_kick(std::uint32_t vring) {
    std::lock_guard lock(mutex_);
    if (vring >= max_queues_) return false;
    return raise_locked(vring_vectors_[vring], pci::isr::config);
}

int function_model::vring_vector_eventfd(std::uint32_t vring) const {
    std::lock_guard lock(mutex_);
    if (vring >= max_queues_) return -1;
    const std::uint16_t v = vring_vectors_[vring];
    if (v >= msix_fds_.size()) return -1;
    return msix_fds_[v].get();
}

// ---------------------------------------------------------------------------------------
// State for the owner

virtqueue_state function_model::queue_state(std::uint16_t queue) const {
    std::lock_guard lock(mutex_);
    return queue < vf::num_queues ? queues_[queue] : virtqueue_state{};
}

std::uint8_t function_model::device_status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

std::uint64_t function_model::driver_features() const {
    std::lock_guard lock(mutex_);
    return driver_features_;
}

std::uint32_t function_model::backend_status() const {
    std::lock_guard lock(mutex_);
    return backend_status_;
}

bool function_model::frontend_up() const {
    std::lock_guard lock(mutex_);
    return frontend_up_;
}

bool function_model::set_frontend_up(bool up) {
    std::lock_guard lock(mutex_);
    if (frontend_up_ == up) return false;
    frontend_up_ = up;
    ++config_generation_; // §4.1.4.3: the driver re-reads device config when this moves
    return true;
}

} // namespace vvu::vvu_device
