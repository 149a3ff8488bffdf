// function_model: the virtio-vhost-user PCI function as vvu-device serves it over vfio-user —
// config space, BAR 4 registers, BAR 2 (doorbells, notification structure, shared-memory
// window) and interrupts. The vfio-user server (vfio_user::server) calls it through
// vfio_user::device; the VVU core, which owns the vhost-user side, plugs in as its
// function_owner and drives interrupts through signal_*().
//
// References: virtio 1.2 §4.1 (virtio over PCI: capabilities §4.1.4, common configuration
// §4.1.4.3, notifications §4.1.4.4, ISR §4.1.4.5, interrupts §4.1.5.3–4), PCI Local Bus 3.0
// §6.1–6.2 (header, BARs) and §6.8.2 (MSI-X), shared/vvu-spec.md and vvu_function.hpp (the
// VVU device config, doorbell/notification/shared-memory capabilities, BAR layouts), the
// VFIO uapi (<linux/vfio.h>) for region and irq semantics.
//
// Config space (256 bytes):
//   0x00 header: 1af4:106b rev 1, class ff0000, subsystem 1af4:002b, INTx pin A,
//        BAR 2/3 = 64-bit prefetchable vvu_bar::size, BAR 4/5 = 64-bit registers::size
//   0x40 common  (BAR 4 +0x0000, 60 bytes)       0x84 doorbell     (BAR 2, cfg_type 6)
//   0x50 notify  (BAR 4 +0x3000, multiplier 4)   0x98 notification (BAR 2, cfg_type 7)
//   0x64 ISR     (BAR 4 +0x1000)                 0xa8 shared memory (BAR 2, cfg_type 8, cap64)
//   0x74 device  (BAR 4 +0x2000, 24 bytes)       0xc0 MSI-X (table BAR 4 +0x4000, PBA +0x6000)
//
// Decisions a driver or the owner can observe:
//   - Only natural accesses (the field's width at its offset; 64-bit queue addresses also as
//     two 32-bit halves) change registers; others are ignored. Reads of any size anywhere
//     return the registers' bytes, zero where nothing is defined. Nothing is an error.
//   - device_status bits stick until a write of 0 (a driver must not clear them, §2.1.1).
//     FEATURES_OK is refused (does not read back) unless the driver features are a subset of
//     the offered ones and include VERSION_1 (§3.1.1, §6.1); DRIVER_OK does not stick
//     without FEATURES_OK. Driver features are frozen once FEATURES_OK is set.
//   - A queue's size and addresses are frozen while it is enabled; queue_enable 0 is ignored
//     (§4.1.4.3.2: the driver must not write 0); queue_size takes powers of 2 up to 256.
//   - An MSI-X vector number ≥ the vector count reads back as NO_VECTOR (§4.1.5.1.2).
//   - MSI-X is "in use" while the MSI-X enable bit is set in config space or any MSI-X eventfd
//     is attached (a vfio-user client may never write the bit). Then a queue/config event
//     signals its vector's eventfd, or nothing when the vector is NO_VECTOR (§4.1.5.3–4);
//     otherwise it goes to the ISR and the INTx line. signal_config() sets the ISR config bit
//     in both cases (drivers may read it either way).
//   - INTx is level-triggered by the ISR: the eventfd is signalled when the line asserts and
//     is neither masked (SET_IRQS MASK, command INTx disable) nor already asserted; reading
//     the ISR deasserts it, UNMASK re-asserts it while the ISR is still non-zero (VFIO's
//     AUTOMASKED behaviour, so both QEMU and a client that never unmasks work).
//   - reset() (DEVICE_RESET, a function-level reset) resets virtio and config-space state
//     but keeps the irq eventfds, as VFIO does across a reset; client_detached() also drops
//     them. FRONTEND_UP is the owner's and survives both.
//   - GET_REGION_INFO of BAR 2 lists the window's areas as sparse mmap areas, each with its
//     own fd mapped from file offset 0 (region_info::fd_per_area, marked on the wire with
//     vvu's TYPE capability); BAR 2 is not mappable while the window is empty.
//   - set_irqs takes ownership of the eventfds it is given (moved out of irq_set::fds) and
//     refuses (EINVAL, nothing changed) an fd that is not an eventfd; it sets O_NONBLOCK on
//     them so that signalling never blocks.
//
// Threads: the vfio_user::device calls come from the server's thread; signal_*(), the
// accessors and set_frontend_up() may be called from any thread. Owner callbacks are made
// from the thread that caused them, never while the model's lock is held, so an owner may
// call back into the model.
#pragma once

#include <vvu/pci/virtio_pci.hpp>
#include <vvu/pci/vvu_function.hpp>
#include <vvu/util/byte_io.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/fd_stream.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/vfio_user/device.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace vvu::vvu_device {

// One front-end memory region as the shared-memory window exposes it: [offset, offset + size)
// of the window (not of BAR 2) is mmap()ed from `fd` at file offset 0. The fd is borrowed:
// the owner keeps it open while the area is listed.
struct window_area {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    int fd = -1;
};

// What the function asks of the VVU core. Each call is made after the function's own state
// has changed (so accessors already show the new state) and without its lock held.
class function_owner {
public:
    virtual ~function_owner() = default;

    // The driver wrote the notify register of virtqueue `queue` (0 rxq, 1 txq): buffers are
    // available (§4.1.4.4).
    virtual void queue_notified(std::uint16_t queue) = 0;
    // The driver rang doorbell `bell` (bar2_layout): below max_queues a vring's call (signal
    // the front-end's call fd), max_queues the dirty-log doorbell, above it a vring's error
    // (signal its SET_VRING_ERR fd).
    virtual void doorbell_rung(std::uint32_t bell) = 0;
    // device_status went from `old_status` to `new_status`. new_status == 0 is a reset (by the
    // driver or DEVICE_RESET) and is reported even when old_status was already 0: queue state,
    // vectors and the driver's BACKEND_UP are gone.
    virtual void status_changed(std::uint8_t old_status, std::uint8_t new_status) = 0;
    // The driver wrote the device config status word (BACKEND_UP and any other bits except
    // FRONTEND_UP, which is the device's): `value` is what backend_status() now returns.
    virtual void backend_status_written(std::uint32_t value) = 0;
    // The driver read/wrote the shared-memory window at `offset` (in the window) through
    // REGION_READ/WRITE instead of its mapping. 0 or an errno (e.g. EFAULT where no region is).
    [[nodiscard]] virtual int window_read(std::uint64_t offset, std::span<std::byte> out) = 0;
    [[nodiscard]] virtual int window_write(std::uint64_t offset, std::span<const std::byte> in) = 0;
    // The window's current areas (front-end regions), for GET_REGION_INFO of BAR 2: each
    // becomes a sparse mmap area with its own fd (region_info::fd_per_area, which the server
    // marks with vvu's TYPE capability, protocol.hpp vvu_fd_per_area_type/subtype).
    [[nodiscard]] virtual std::vector<window_area> window_areas() = 0;
    // The eventfd (borrowed) behind doorbell `bell` — a vring's call or error fd, as for
    // doorbell_rung — to serve it as an ioeventfd, or -1 (the doorbell then arrives as
    // doorbell_rung()).
    [[nodiscard]] virtual int doorbell_eventfd(std::uint32_t bell) = 0;
    // The vfio-user client went away: the function has been reset (not reported again through
    // status_changed) and holds no irq eventfd.
    virtual void client_detached() = 0;

    // Optional. The interrupt routing changed (eventfds attached/detached, a vring's
    // notification vector written, a reset): an owner that splices kick fds straight to
    // vector eventfds (function_model::vring_vector_eventfd) re-reads them.
    virtual void interrupts_changed() {}
    // Optional. DMA_MAP / DMA_UNMAP passed through (vfio_user::device::dma_mapped/unmapped).
    [[nodiscard]] virtual int dma_mapped(std::uint64_t iova, std::uint64_t size) {
        (void)iova, (void)size;
        return 0;
    }
    virtual void dma_unmapped(std::uint64_t iova, std::uint64_t size) { (void)iova, (void)size; }
};

// What the driver set up for one virtqueue of the function (rxq or txq), §4.1.4.3.
struct virtqueue_state {
    std::uint16_t size = pci::vvu_function::max_queue_size;
    std::uint64_t desc = 0;
    std::uint64_t driver = 0;
    std::uint64_t device = 0;
    bool enabled = false;
    std::uint16_t msix_vector = pci::msix::no_vector;
};

struct function_options {
    std::uint32_t max_queues = 1024;          // vhost-user vrings served, 1..max_vhost_queues
    std::array<std::uint8_t, 16> uuid{};      // device config uuid
    std::uint32_t msix_vectors = 0;           // 0: default_msix_vectors(max_queues)
};

class function_model final : public vfio_user::device {
public:
    using owner = function_owner;
    using options = function_options;
    using window_area = ::vvu::vvu_device::window_area;

    static constexpr std::uint32_t max_vhost_queues = 1024;

    // rxq, txq, config, then one per vring — capped at the table's room in BAR 4.
    [[nodiscard]] static constexpr std::uint32_t default_msix_vectors(std::uint32_t max_queues) noexcept {
        const std::uint64_t want = 3ull + max_queues;
        return want < pci::vvu_function::registers::max_msix_vectors
                   ? static_cast<std::uint32_t>(want)
                   : pci::vvu_function::registers::max_msix_vectors;
    }

    // Throws std::invalid_argument when max_queues is outside 1..max_vhost_queues;
    // msix_vectors is clamped to 1..registers::max_msix_vectors.
    function_model(const function_options& opts, owner& o);
    function_model(const function_model&) = delete;
    function_model& operator=(const function_model&) = delete;
    ~function_model() override;

    // ---- vfio_user::device ----
    [[nodiscard]] std::uint32_t device_flags() const noexcept override;
    [[nodiscard]] vfio_user::region_info describe_region(std::uint32_t index) override;
    [[nodiscard]] std::vector<vfio_user::io_eventfd> region_io_fds(std::uint32_t index) override;
    [[nodiscard]] vfio_user::irq_info describe_irq(std::uint32_t index) override;
    [[nodiscard]] int set_irqs(const vfio_user::irq_set& s) override;
    [[nodiscard]] int region_read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) override;
    [[nodiscard]] int region_write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> in) override;
    [[nodiscard]] int dma_mapped(std::uint64_t iova, std::uint64_t size) override;
    void dma_unmapped(std::uint64_t iova, std::uint64_t size) override;
    [[nodiscard]] int reset() override;
    void client_detached() override;

    // ---- interrupts, for the owner; true when an eventfd was signalled ----
    // Used buffers in virtqueue `queue` (0 rxq, 1 txq).
    bool signal_queue(std::uint16_t queue);
    // Device configuration changed (e.g. FRONTEND_UP).
    bool signal_config();
    // The front-end kicked vring `vring`: its notification vector (without MSI-X in use: the
    // ISR config bit and INTx, as shared/vvu-spec.md says).
    bool signal_vring_kick(std::uint32_t vring);
    // The eventfd behind vring `vring`'s notification vector, or -1. Borrowed: valid until the
    // next interrupts_changed() or client_detached() (dup() it to keep it longer).
    [[nodiscard]] int vring_vector_eventfd(std::uint32_t vring) const;

    // ---- state, for the owner ----
    [[nodiscard]] virtqueue_state queue_state(std::uint16_t queue) const; // queue ≥ 2: a default state
    [[nodiscard]] std::uint8_t device_status() const;
    [[nodiscard]] std::uint64_t driver_features() const;
    [[nodiscard]] std::uint32_t backend_status() const; // the driver-written status word
    [[nodiscard]] bool frontend_up() const;
    // Sets or clears FRONTEND_UP (bumping config_generation); true when it changed. The owner
    // calls signal_config() itself.
    bool set_frontend_up(bool up);

    // ---- live update (vvu-device --takeover) ----
    // The whole function — config space, registers, MSI-X table, virtio and queue state, irq
    // eventfds (duplicated, fd_stream.hpp) — into a record; and loaded from one into a
    // function of the same max_queues and vector count, with no owner callback and no
    // interrupt: the driver goes on as if nothing happened. A malformed record leaves the
    // function reset, without irq eventfds.
    void save(byte_writer& w, fd_writer& fds) const;
    [[nodiscard]] expected<void, std::string> restore(byte_reader& r, fd_reader& fds);

    [[nodiscard]] std::uint32_t max_queues() const noexcept { return max_queues_; }
    [[nodiscard]] std::uint32_t msix_vectors() const noexcept { return msix_vectors_; }
    [[nodiscard]] const pci::vvu_function::bar2_layout& bar2() const noexcept { return bar2_; }

private:
    struct effects;

    [[nodiscard]] static std::uint64_t describe_region_size(std::uint32_t index) noexcept;
    void build_config_space();
    void reset_virtio_locked() noexcept;
    void reset_function_locked() noexcept;
    void drop_irq_fds_locked() noexcept;

    void config_read_locked(std::uint64_t offset, std::span<std::byte> out) const;
    void config_write_locked(std::uint64_t offset, std::span<const std::byte> in);
    void registers_read_locked(std::uint64_t offset, std::span<std::byte> out);
    void registers_write_locked(std::uint64_t offset, std::span<const std::byte> in, effects& fx);
    void common_write_locked(std::uint32_t offset, std::span<const std::byte> in, effects& fx);
    void status_write_locked(std::uint8_t value, effects& fx);
    void bar2_read_locked(std::uint64_t offset, std::span<std::byte> out) const;
    void bar2_write_locked(std::uint64_t offset, std::span<const std::byte> in, effects& fx);
    void dispatch(const effects& fx);

    [[nodiscard]] std::array<std::byte, pci::common::size> render_common_locked() const;
    [[nodiscard]] std::array<std::byte, pci::vvu_function::device_config::size> render_device_config_locked() const;
    [[nodiscard]] std::uint16_t checked_vector(std::uint16_t v) const noexcept;
    [[nodiscard]] bool msix_in_use_locked() const noexcept;
    bool raise_locked(std::uint16_t vector, std::uint8_t isr_bit);
    bool assert_intx_locked();
    bool fire_msix_locked(std::uint32_t vector);
    bool fire_intx_locked();

    int set_intx_irqs_locked(const vfio_user::irq_set& s, bool& changed);
    int set_msix_irqs_locked(const vfio_user::irq_set& s, bool& changed);

    owner& owner_;
    const std::uint32_t max_queues_;
    const std::uint32_t msix_vectors_;
    const std::array<std::uint8_t, 16> uuid_;
    const pci::vvu_function::bar2_layout bar2_;

    mutable std::mutex mutex_;

    // PCI function state: reset by FLR and detach.
    std::array<std::byte, pci::config::size> config_{};
    std::array<std::byte, pci::config::size> config_writable_{}; // per-byte write masks
    std::uint64_t bar2_address_ = 0;
    std::uint64_t bar4_address_ = 0;
    std::vector<std::byte> msix_table_;

    // virtio state: reset by device_status 0 (and everything above).
    std::uint32_t device_feature_select_ = 0;
    std::uint32_t driver_feature_select_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint16_t config_msix_vector_ = pci::msix::no_vector;
    std::uint8_t status_ = 0;
    std::uint16_t queue_select_ = 0;
    std::array<virtqueue_state, pci::vvu_function::num_queues> queues_{};
    std::uint8_t isr_ = 0;
    std::uint32_t backend_status_ = 0;
    std::uint16_t notification_select_ = 0;
    std::vector<std::uint16_t> vring_vectors_;

    // Owner state, kept across resets.
    bool frontend_up_ = false;
    std::uint8_t config_generation_ = 0;

    // Interrupts: eventfds kept across FLR, dropped on detach.
    unique_fd intx_fd_;
    bool intx_masked_ = false;
    bool intx_asserted_ = false;
    std::vector<unique_fd> msix_fds_;
    std::uint32_t msix_fds_attached_ = 0;
};

} // namespace vvu::vvu_device
