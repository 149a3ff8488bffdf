// vfio_user::client: a PCI function served over a vfio-user socket (QEMU
// docs/interop/vfio-user.rst) — vvu-device on this host, or any vfio-user server such as
// libvfio-user's samples. Models pci::pci_function (pci/function.hpp).
//
// Every call is one blocking transaction: the request goes out with a fresh msg_id and the
// call waits (at most the per-call timeout) for the reply with that id, which must be a reply
// to the same command, of a plausible size, carrying fds only where the command returns them.
// An Error reply becomes a pci::error with the server's errno (EIO when it sent 0). A timeout,
// a malformed reply or a broken socket leaves the stream out of step: the connection is then
// closed and every later call fails with ENOTCONN. Transactions are serialised by a mutex, so
// any thread may call (a doorbell is rung from data-path threads).
//
// map_window(bar, off, len): GET_REGION_INFO(bar); [off, off + len) must lie inside one sparse
// mmap area (or the whole region when the region is mappable without a sparse cap). When the
// region carries vvu's per-area-fd marking (a TYPE capability, protocol.hpp
// vvu_fd_per_area_type/subtype; region::fd_per_area) area i is mmap()ed from fds[i] at file
// offset off - area.offset; otherwise — whatever the fd count — the standard rule: fds[0] at
// region.mmap_offset + off. Either way the mapping is rounded out to the fd's page size and
// the window's keepalive owns the munmap.
//
// region_info(index) walks the reply's capability chain with bounds: every offset inside the
// reply, strictly increasing (so no loop), at most 64 capabilities; a bad chain, or the
// marking with an fd count other than the area count, is EPROTO.
//
// doorbell(bar, off, value): GET_REGION_IO_FDS(bar); an ioeventfd sub-region at exactly `off`
// (and, with DATAMATCH, matching `value`) makes the doorbell a write to a dup of that eventfd;
// otherwise the doorbell is a 2-byte REGION_WRITE of `value` at `off` (errors are dropped:
// ring() cannot report them; the next control call sees a dead connection).
#pragma once

#include <vvu/pci/function.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/vfio_user/device.hpp>
#include <vvu/vfio_user/protocol.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vvu::vfio_user {

class client {
public:
    // What VERSION settled.
    struct version_info {
        std::uint16_t major = 0;
        std::uint16_t minor = 0;
        capabilities server; // the server's capabilities (defaults where it gave none)
    };
    struct device_info {
        std::uint32_t flags = 0; // device_flags
        std::uint32_t num_regions = 0;
        std::uint32_t num_irqs = 0;
    };
    // GET_REGION_INFO's answer with the fds it carried (owned).
    struct region {
        std::uint32_t index = 0;
        std::uint32_t flags = 0; // region_flags
        std::uint64_t size = 0;
        std::uint64_t mmap_offset = 0;
        std::vector<sparse_area> areas;
        std::vector<unique_fd> fds;
        // vvu's per-area-fd marking was present (then fds.size() == areas.size() ≥ 1).
        bool fd_per_area = false;
    };
    // GET_REGION_IO_FDS: sub-regions and the fds they index.
    struct io_region {
        std::uint64_t offset = 0;
        std::uint64_t size = 0;
        std::uint32_t fd_index = 0;
        std::uint32_t type = io_fd_type_ioeventfd;
        std::uint32_t flags = 0;
        std::uint64_t datamatch = 0;
    };
    struct io_fds {
        std::vector<io_region> sub_regions;
        std::vector<unique_fd> fds;
    };

    static constexpr std::chrono::milliseconds default_timeout{5000};
    // fds we accept in one reply (advertised as max_msg_fds): the shared-memory window's
    // region info carries up to 32.
    static constexpr std::uint32_t max_reply_fds = 64;

    // Connects to the server's socket and negotiates VERSION, all within `timeout`, which is
    // also each later call's timeout.
    [[nodiscard]] static expected<client, error> connect(const std::string& path,
                                                         std::chrono::milliseconds timeout = default_timeout);
    // Negotiates over an already connected stream socket.
    [[nodiscard]] static expected<client, error> over(unique_fd connected,
                                                      std::chrono::milliseconds timeout = default_timeout);

    // Live update: the connection as another process resumes it — the socket (a duplicate;
    // this client keeps its own), what VERSION settled and the next message id. resume()
    // sends nothing: to the server the new process is the client it already knows.
    struct handover {
        unique_fd socket;
        std::uint16_t next_id = 1;
        version_info version;
    };
    [[nodiscard]] expected<handover, error> export_connection() const;
    [[nodiscard]] static expected<client, error> resume(handover h, std::chrono::milliseconds timeout = default_timeout);

    client(client&&) noexcept = default;
    client& operator=(client&&) noexcept = default;
    ~client();

    [[nodiscard]] const version_info& version() const noexcept { return version_; }
    [[nodiscard]] bool connected() const noexcept;
    void set_timeout(std::chrono::milliseconds t) noexcept;

    // ---- the protocol's commands ----
    [[nodiscard]] expected<device_info, error> get_device_info();
    [[nodiscard]] expected<region, error> region_info(std::uint32_t index);
    [[nodiscard]] expected<io_fds, error> region_io_fds(std::uint32_t index);
    [[nodiscard]] expected<irq_info, error> get_irq_info(std::uint32_t index);
    // SET_IRQS as it is: `fds` for DATA_EVENTFD (none: de-assign), `bools` for DATA_BOOL.
    [[nodiscard]] expected<void, error> set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                                                 std::uint32_t count, std::span<const int> fds = {},
                                                 std::span<const std::byte> bools = {});
    // REGION_READ / REGION_WRITE of any region, split into max_data_xfer_size pieces.
    [[nodiscard]] expected<void, error> read(std::uint32_t region, std::uint64_t offset, std::span<std::byte> out);
    [[nodiscard]] expected<void, error> write(std::uint32_t region, std::uint64_t offset, std::span<const std::byte> in);
    // DMA_MAP with an fd (flags: dma_flags).
    [[nodiscard]] expected<void, error> dma_map(int fd, std::uint64_t file_offset, std::uint64_t iova,
                                                std::uint64_t len, std::uint32_t flags);

    // ---- pci::pci_function ----
    [[nodiscard]] expected<void, error> config_read(std::uint64_t off, std::span<std::byte> out) {
        return read(config_region, off, out);
    }
    [[nodiscard]] expected<void, error> config_write(std::uint64_t off, std::span<const std::byte> in) {
        return write(config_region, off, in);
    }
    [[nodiscard]] expected<void, error> region_read(std::uint32_t bar, std::uint64_t off, std::span<std::byte> out);
    [[nodiscard]] expected<void, error> region_write(std::uint32_t bar, std::uint64_t off,
                                                     std::span<const std::byte> in);
    [[nodiscard]] expected<pci::window, error> map_window(std::uint32_t bar, std::uint64_t off, std::uint64_t len);
    [[nodiscard]] expected<pci::doorbell, error> doorbell(std::uint32_t bar, std::uint64_t off, std::uint16_t value);
    [[nodiscard]] expected<void, error> dma_map(int fd, std::uint64_t file_off, std::uint64_t iova, std::uint64_t len) {
        return dma_map(fd, file_off, iova, len, dma_flags::read | dma_flags::write);
    }
    [[nodiscard]] expected<void, error> dma_unmap(std::uint64_t iova, std::uint64_t len);
    [[nodiscard]] expected<std::uint32_t, error> irq_count(pci::irq_kind kind);
    // ACTION_TRIGGER | DATA_EVENTFD for vectors first…; -1 de-assigns a vector. Split into
    // runs (and into the server's max_msg_fds).
    [[nodiscard]] expected<void, error> set_irq_eventfds(pci::irq_kind kind, std::uint32_t first,
                                                         std::span<const int> fds);
    [[nodiscard]] expected<void, error> reset();

    struct connection; // the socket and its mutex, shared with REGION_WRITE doorbells

private:
    explicit client(std::shared_ptr<connection> c) noexcept : conn_(std::move(c)) {}

    std::shared_ptr<connection> conn_;
    version_info version_;
};

static_assert(pci::pci_function<client>);

} // namespace vvu::vfio_user
