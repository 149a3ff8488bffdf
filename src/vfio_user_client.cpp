// vfio_user::client (include/vvu/vfio_user/client.hpp).
#include <vvu/memory/guest_memory.hpp>
#include <vvu/memory/mapping.hpp>
#include <vvu/util/range.hpp>
#include <vvu/vfio_user/client.hpp>

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <mutex>

namespace vvu::vfio_user {

namespace {

std::error_code sys(int e) { return {e, std::system_category()}; }
unexpected<error> fail(int e, std::string what) { return unexpected(error{sys(e), std::move(what)}); }

// The largest reply accepted: a REGION_READ of 1 MiB, or a region info with many caps.
constexpr std::size_t max_reply_size = header_size + sizeof(region_access_payload) + (1u << 20);
// The most data vvu moves in one REGION_READ/WRITE, whatever the server allows.
constexpr std::uint64_t max_chunk = 1u << 20;

} // namespace

struct client::connection {
    struct response {
        header h;
        std::vector<std::byte> payload;
        std::vector<unique_fd> fds;
    };

    std::mutex mu;
    unique_fd sock;
    std::uint16_t next_id = 1;
    std::chrono::milliseconds timeout{default_timeout};
    capabilities server_caps;

    // One request and its reply. `what` names the request in errors; `fds_allowed`: the reply
    // may carry fds (GET_REGION_INFO, GET_REGION_IO_FDS).
    expected<response, error> transact(command cmd, std::span<const std::byte> payload, std::span<const int> fds,
                                       const std::string& what, bool fds_allowed = false) {
        std::lock_guard lock(mu);
        if (!sock) return fail(ENOTCONN, what + ": not connected (closed after an earlier failure)");
        const std::uint16_t id = next_id++;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        // Out of step from here on any failure: the connection goes.
        auto broken = [&](int e, std::string why) {
            sock.reset();
            return fail(e, what + ": " + why);
        };
        const header h{id, static_cast<std::uint16_t>(cmd), static_cast<std::uint32_t>(header_size + payload.size()),
                       header_flags::type_command, 0};
        std::array<std::byte, header_size> head{};
        store(head, h);
        if (auto r = detail::send_message(sock.get(), head, payload, fds, deadline); !r)
            return broken(r.error().value(), "sending: " + r.error().message());
        for (;;) {
            response rsp;
            if (auto r = detail::read_exact(sock.get(), head, rsp.fds, deadline); !r)
                return broken(r.error().value(), "waiting for the reply: " + r.error().message());
            rsp.h = load<header>(head);
            if (rsp.h.msg_size < header_size || rsp.h.msg_size > max_reply_size)
                return broken(EPROTO, fmt::format("reply msg_size {} out of range", rsp.h.msg_size));
            rsp.payload.resize(rsp.h.msg_size - header_size);
            if (auto r = detail::read_exact(sock.get(), rsp.payload, rsp.fds, deadline); !r)
                return broken(r.error().value(), "reading the reply: " + r.error().message());
            const std::uint32_t type = rsp.h.flags & header_flags::type_mask;
            if (type == header_flags::type_command) {
                // A server-to-client command (DMA_READ/WRITE): vvu shares memory by fd only.
                if (!(rsp.h.flags & header_flags::no_reply)) {
                    const header eh{rsp.h.msg_id, rsp.h.cmd, header_size,
                                    header_flags::type_reply | header_flags::error, ENOSYS};
                    store(head, eh);
                    if (auto r = detail::send_message(sock.get(), head, {}, {}, deadline); !r)
                        return broken(r.error().value(), "refusing a server command: " + r.error().message());
                }
                continue;
            }
            if (type != header_flags::type_reply)
                return broken(EPROTO, fmt::format("message type {} from the server", type));
            if (rsp.h.msg_id != id || rsp.h.cmd != static_cast<std::uint16_t>(cmd))
                return broken(EPROTO, fmt::format("reply to msg {} ({}) while waiting for msg {}", rsp.h.msg_id,
                                                  command_name(rsp.h.cmd), id));
            if (rsp.h.flags & header_flags::error) {
                const int e = rsp.h.error_no != 0 ? static_cast<int>(rsp.h.error_no) : EIO;
                return fail(e, what + ": the server replied with an error");
            }
            if (!fds_allowed && !rsp.fds.empty())
                return fail(EPROTO, fmt::format("{}: {} unexpected fds in the reply", what, rsp.fds.size()));
            if (rsp.fds.size() > max_reply_fds)
                return fail(EPROTO, fmt::format("{}: {} fds in the reply, more than {}", what, rsp.fds.size(),
                                                max_reply_fds));
            return rsp;
        }
    }
};

namespace {

expected<void, error> write_region(client::connection& c, std::uint32_t region, std::uint64_t offset,
                                   std::span<const std::byte> in, std::uint64_t chunk) {
    if (offset > std::numeric_limits<std::uint64_t>::max() - in.size())
        return fail(EINVAL, fmt::format("REGION_WRITE region {} at {:#x}: wraps 2^64", region, offset));
    std::size_t done = 0;
    std::vector<std::byte> payload;
    while (done < in.size()) {
        const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk, in.size() - done));
        const region_access_payload p{offset + done, region, n};
        payload.resize(sizeof(p) + n);
        store(payload, p);
        std::memcpy(payload.data() + sizeof(p), in.data() + done, n);
        const std::string what = fmt::format("REGION_WRITE region {} [{:#x}, +{})", region, p.offset, n);
        auto r = c.transact(command::region_write, payload, {}, what);
        if (!r) return unexpected(r.error());
        if (r->payload.size() < sizeof(p)) return fail(EPROTO, what + ": short reply");
        const auto echo = load<region_access_payload>(r->payload);
        if (echo.offset != p.offset || echo.region != region || echo.count != n)
            return fail(EPROTO, what + ": the reply names another access");
        done += n;
    }
    return {};
}

} // namespace

client::~client() {
    if (!conn_) return;
    std::lock_guard lock(conn_->mu);
    conn_->sock.reset(); // the server sees the detach now, not when the last doorbell goes
}

bool client::connected() const noexcept {
    if (!conn_) return false;
    std::lock_guard lock(conn_->mu);
    return conn_->sock.valid();
}

void client::set_timeout(std::chrono::milliseconds t) noexcept {
    if (!conn_) return;
    std::lock_guard lock(conn_->mu);
    conn_->timeout = t;
}

expected<client, error> client::connect(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path)) return fail(ENAMETOOLONG, "connect " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail(errno, "socket");
    int rc;
    do rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    while (rc != 0 && errno == EINTR);
    if (rc != 0) return fail(errno, "connect " + path);
    return over(std::move(fd), timeout);
}

expected<client, error> client::over(unique_fd connected, std::chrono::milliseconds timeout) {
    auto conn = std::make_shared<connection>();
    conn->sock = std::move(connected);
    conn->timeout = timeout;
    capabilities ours;
    ours.max_msg_fds = max_reply_fds;
    ours.max_data_xfer_size = max_chunk;
    ours.vvu_fd_per_area = 1; // map_window takes one fd per sparse area
    const std::string json = format_capabilities(ours);
    std::vector<std::byte> payload(sizeof(version_payload) + json.size() + 1);
    store(payload, version_payload{version_major, version_minor});
    std::memcpy(payload.data() + sizeof(version_payload), json.data(), json.size());
    auto r = conn->transact(command::version, payload, {}, "VERSION");
    if (!r) return unexpected(r.error());
    if (r->payload.size() < sizeof(version_payload)) return fail(EPROTO, "VERSION: short reply");
    const auto v = load<version_payload>(r->payload);
    if (v.major != version_major || v.minor > version_minor)
        return fail(EPROTO, fmt::format("VERSION: the server answered {}.{} to our {}.{}", v.major, v.minor,
                                        version_major, version_minor));
    auto caps = parse_capabilities(std::span<const std::byte>(r->payload).subspan(sizeof(version_payload)));
    if (!caps) return fail(EPROTO, "VERSION: server capabilities: " + caps.error());
    if (caps->max_data_xfer_size == 0 || caps->max_msg_fds == 0)
        return fail(EPROTO, "VERSION: the server allows no data transfer or no fds");
    conn->server_caps = *caps;
    client c(std::move(conn));
    c.version_ = {v.major, v.minor, *caps};
    return c;
}

expected<client::handover, error> client::export_connection() const {
    if (!conn_) return fail(ENOTCONN, "export_connection: not connected");
    std::lock_guard lock(conn_->mu);
    if (!conn_->sock) return fail(ENOTCONN, "export_connection: not connected (closed after an earlier failure)");
    handover h;
    h.socket = dup_cloexec(conn_->sock.get());
    if (!h.socket) return fail(errno, "export_connection: dup");
    h.next_id = conn_->next_id;
    h.version = version_;
    return h;
}

expected<client, error> client::resume(handover h, std::chrono::milliseconds timeout) {
    int type = 0;
    socklen_t len = sizeof type;
    if (!h.socket || ::getsockopt(h.socket.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return fail(EBADF, "resume: not a stream socket");
    const auto& caps = h.version.server;
    if (h.version.major != version_major || h.version.minor > version_minor || caps.max_data_xfer_size == 0 ||
        caps.max_msg_fds == 0)
        return fail(EPROTO, "resume: a version or capabilities this client did not negotiate");
    auto conn = std::make_shared<connection>();
    conn->sock = std::move(h.socket);
    conn->timeout = timeout;
    conn->next_id = h.next_id;
    conn->server_caps = caps;
    client c(std::move(conn));
    c.version_ = h.version;
    return c;
}

expected<client::device_info, error> client::get_device_info() {
    std::array<std::byte, sizeof(device_info_payload)> p{};
    store(p, device_info_payload{});
    auto r = conn_->transact(command::device_get_info, p, {}, "DEVICE_GET_INFO");
    if (!r) return unexpected(r.error());
    if (r->payload.size() < sizeof(device_info_payload)) return fail(EPROTO, "DEVICE_GET_INFO: short reply");
    const auto d = load<device_info_payload>(r->payload);
    return device_info{d.flags, d.num_regions, d.num_irqs};
}

expected<client::region, error> client::region_info(std::uint32_t index) {
    const std::string what = fmt::format("DEVICE_GET_REGION_INFO region {}", index);
    std::uint32_t argsz = sizeof(region_info_payload) + sizeof(sparse_mmap_cap) + 64 * sizeof(sparse_mmap_area);
    for (int attempt = 0;; ++attempt) {
        std::array<std::byte, sizeof(region_info_payload)> p{};
        region_info_payload rq;
        rq.argsz = argsz;
        rq.index = index;
        store(p, rq);
        auto r = conn_->transact(command::device_get_region_info, p, {}, what, true);
        if (!r) return unexpected(r.error());
        const auto& bytes = r->payload;
        if (bytes.size() < sizeof(region_info_payload)) return fail(EPROTO, what + ": short reply");
        const auto info = load<region_info_payload>(bytes);
        if (info.index != index) return fail(EPROTO, what + ": the reply is for another region");
        if (info.argsz > argsz) {
            // The server needs more room for its capabilities: ask once more with that.
            if (attempt > 0 || info.argsz > max_reply_size)
                return fail(EPROTO, fmt::format("{}: the server wants argsz {}", what, info.argsz));
            argsz = info.argsz;
            continue;
        }
        region out;
        out.index = index;
        out.flags = info.flags;
        out.size = info.size;
        out.mmap_offset = info.offset;
        out.fds = std::move(r->fds);
        // The capability chain: offsets relative to the region info, inside the reply, each
        // after the last (so it cannot loop), at most max_caps of them.
        constexpr int max_caps = 64;
        std::uint32_t at = (info.flags & region_flags::caps) ? info.cap_offset : 0;
        std::uint32_t previous = 0;
        bool sparse_seen = false;
        for (int n = 0; at != 0; ++n) {
            if (n == max_caps || at <= previous || at < sizeof(region_info_payload) || at > bytes.size() ||
                bytes.size() - at < sizeof(cap_header))
                return fail(EPROTO, fmt::format("{}: bad capability chain at {}", what, at));
            const auto ch = load<cap_header>(std::span(bytes).subspan(at));
            if (ch.id == cap_type) {
                if (bytes.size() - at < sizeof(type_cap)) return fail(EPROTO, what + ": short type cap");
                const auto cap = load<type_cap>(std::span(bytes).subspan(at));
                if (cap.type == vvu_fd_per_area_type && cap.subtype == vvu_fd_per_area_subtype) out.fd_per_area = true;
            } else if (ch.id == cap_sparse_mmap) {
                if (sparse_seen) return fail(EPROTO, what + ": two sparse mmap caps");
                sparse_seen = true;
                if (bytes.size() - at < sizeof(sparse_mmap_cap)) return fail(EPROTO, what + ": short sparse mmap cap");
                const auto cap = load<sparse_mmap_cap>(std::span(bytes).subspan(at));
                const std::size_t room = (bytes.size() - at - sizeof(cap)) / sizeof(sparse_mmap_area);
                if (cap.nr_areas > room) return fail(EPROTO, what + ": sparse mmap cap has more areas than bytes");
                for (std::uint32_t i = 0; i < cap.nr_areas; ++i) {
                    const auto a = load<sparse_mmap_area>(
                        std::span(bytes).subspan(at + sizeof(cap) + i * sizeof(sparse_mmap_area)));
                    if (!range_within(a.offset, a.size, info.size))
                        return fail(EPROTO, fmt::format("{}: sparse area [{:#x}, +{:#x}) outside the region", what,
                                                        a.offset, a.size));
                    out.areas.push_back({a.offset, a.size});
                }
            }
            previous = at;
            at = ch.next;
        }
        // vvu's marking pairs fds with areas: it must come with exactly one fd per area.
        if (out.fd_per_area && (out.areas.empty() || out.fds.size() != out.areas.size()))
            return fail(EPROTO, fmt::format("{}: marked one fd per area, but {} fds for {} areas", what,
                                            out.fds.size(), out.areas.size()));
        return out;
    }
}

expected<client::io_fds, error> client::region_io_fds(std::uint32_t index) {
    const std::string what = fmt::format("DEVICE_GET_REGION_IO_FDS region {}", index);
    std::uint32_t argsz = sizeof(region_io_fds_payload) + 64 * libvfio_user_sub_region_size;
    for (int attempt = 0;; ++attempt) {
        std::array<std::byte, sizeof(region_io_fds_payload)> p{};
        store(p, region_io_fds_payload{argsz, 0, index, 0});
        auto r = conn_->transact(command::device_get_region_io_fds, p, {}, what, true);
        if (!r) return unexpected(r.error());
        const auto& bytes = r->payload;
        if (bytes.size() < sizeof(region_io_fds_payload)) return fail(EPROTO, what + ": short reply");
        const auto head = load<region_io_fds_payload>(bytes);
        if (head.index != index) return fail(EPROTO, what + ": the reply is for another region");
        if (head.argsz > argsz) {
            if (attempt > 0 || head.argsz > max_reply_size)
                return fail(EPROTO, fmt::format("{}: the server wants argsz {}", what, head.argsz));
            argsz = head.argsz;
            continue;
        }
        io_fds out;
        out.fds = std::move(r->fds);
        if (head.count == 0) return out;
        // Entry size = bytes after the head / count: the spec's 40 or libvfio-user's 48.
        const std::size_t body = bytes.size() - sizeof(head);
        const std::size_t stride = body / head.count;
        if (body % head.count != 0 || (stride != sizeof(sub_region_ioeventfd) && stride != libvfio_user_sub_region_size))
            return fail(EPROTO, fmt::format("{}: {} bytes for {} sub-regions", what, body, head.count));
        for (std::uint32_t i = 0; i < head.count; ++i) {
            const auto entry = std::span(bytes).subspan(sizeof(head) + i * stride, stride);
            const auto e = load<sub_region_ioeventfd>(entry);
            io_region s{e.offset, e.size, e.fd_index, e.type, e.flags, e.datamatch};
            if (stride == libvfio_user_sub_region_size)
                std::memcpy(&s.datamatch, entry.data() + libvfio_user_datamatch_offset, sizeof(s.datamatch));
            if (s.fd_index >= out.fds.size())
                return fail(EPROTO, fmt::format("{}: sub-region {} names fd {} of {}", what, i, s.fd_index, out.fds.size()));
            out.sub_regions.push_back(s);
        }
        return out;
    }
}

expected<irq_info, error> client::get_irq_info(std::uint32_t index) {
    const std::string what = fmt::format("DEVICE_GET_IRQ_INFO index {}", index);
    std::array<std::byte, sizeof(irq_info_payload)> p{};
    store(p, irq_info_payload{sizeof(irq_info_payload), 0, index, 0});
    auto r = conn_->transact(command::device_get_irq_info, p, {}, what);
    if (!r) return unexpected(r.error());
    if (r->payload.size() < sizeof(irq_info_payload)) return fail(EPROTO, what + ": short reply");
    const auto info = load<irq_info_payload>(r->payload);
    if (info.index != index) return fail(EPROTO, what + ": the reply is for another index");
    return irq_info{info.flags, info.count};
}

expected<void, error> client::set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                                       std::uint32_t count, std::span<const int> fds,
                                       std::span<const std::byte> bools) {
    const std::string what = fmt::format("DEVICE_SET_IRQS index {} [{}, +{}) flags {:#x}", index, start, count, flags);
    if (fds.size() > version_.server.max_msg_fds)
        return fail(EINVAL, fmt::format("{}: {} fds, the server takes {}", what, fds.size(), version_.server.max_msg_fds));
    std::vector<std::byte> p(sizeof(irq_set_payload) + bools.size());
    store(p, irq_set_payload{static_cast<std::uint32_t>(p.size()), flags, index, start, count});
    if (!bools.empty()) std::memcpy(p.data() + sizeof(irq_set_payload), bools.data(), bools.size());
    auto r = conn_->transact(command::device_set_irqs, p, fds, what);
    if (!r) return unexpected(r.error());
    return {};
}

expected<void, error> client::read(std::uint32_t region, std::uint64_t offset, std::span<std::byte> out) {
    if (offset > std::numeric_limits<std::uint64_t>::max() - out.size())
        return fail(EINVAL, fmt::format("REGION_READ region {} at {:#x}: wraps 2^64", region, offset));
    const std::uint64_t chunk = std::min(version_.server.max_data_xfer_size, max_chunk);
    std::size_t done = 0;
    while (done < out.size()) {
        const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk, out.size() - done));
        const region_access_payload p{offset + done, region, n};
        const std::string what = fmt::format("REGION_READ region {} [{:#x}, +{})", region, p.offset, n);
        std::array<std::byte, sizeof(p)> bytes{};
        store(bytes, p);
        auto r = conn_->transact(command::region_read, bytes, {}, what);
        if (!r) return unexpected(r.error());
        if (r->payload.size() != sizeof(p) + n)
            return fail(EPROTO, fmt::format("{}: reply of {} bytes, want {}", what, r->payload.size(), sizeof(p) + n));
        const auto echo = load<region_access_payload>(r->payload);
        if (echo.offset != p.offset || echo.region != region || echo.count != n)
            return fail(EPROTO, what + ": the reply names another access");
        std::memcpy(out.data() + done, r->payload.data() + sizeof(p), n);
        done += n;
    }
    return {};
}

expected<void, error> client::write(std::uint32_t region, std::uint64_t offset, std::span<const std::byte> in) {
    return write_region(*conn_, region, offset, in, std::min(version_.server.max_data_xfer_size, max_chunk));
}

expected<void, error> client::region_read(std::uint32_t bar, std::uint64_t off, std::span<std::byte> out) {
    return read(bar, off, out);
}

expected<void, error> client::region_write(std::uint32_t bar, std::uint64_t off, std::span<const std::byte> in) {
    return write(bar, off, in);
}

expected<void, error> client::dma_map(int fd, std::uint64_t file_offset, std::uint64_t iova, std::uint64_t len,
                                      std::uint32_t flags) {
    const std::string what = fmt::format("DMA_MAP [{:#x}, +{:#x})", iova, len);
    if (fd < 0) return fail(EBADF, what);
    std::array<std::byte, sizeof(dma_map_payload)> p{};
    store(p, dma_map_payload{sizeof(dma_map_payload), flags, file_offset, iova, len});
    const int fds[1] = {fd};
    auto r = conn_->transact(command::dma_map, p, fds, what);
    if (!r) return unexpected(r.error());
    return {};
}

expected<void, error> client::dma_unmap(std::uint64_t iova, std::uint64_t len) {
    const std::string what = fmt::format("DMA_UNMAP [{:#x}, +{:#x})", iova, len);
    std::array<std::byte, sizeof(dma_unmap_payload)> p{};
    store(p, dma_unmap_payload{sizeof(dma_unmap_payload), 0, iova, len});
    auto r = conn_->transact(command::dma_unmap, p, {}, what);
    if (!r) return unexpected(r.error());
    if (r->payload.size() >= sizeof(dma_unmap_payload)) { // the spec's echo; tolerated when absent
        const auto echo = load<dma_unmap_payload>(r->payload);
        if (echo.addr != iova || echo.size != len) return fail(EPROTO, what + ": the reply names another range");
    }
    return {};
}

expected<std::uint32_t, error> client::irq_count(pci::irq_kind kind) {
    auto info = get_irq_info(static_cast<std::uint32_t>(kind));
    if (!info) return unexpected(info.error());
    return info->count;
}

expected<void, error> client::set_irq_eventfds(pci::irq_kind kind, std::uint32_t first, std::span<const int> fds) {
    if (fds.size() > std::numeric_limits<std::uint32_t>::max() - first)
        return fail(EINVAL, fmt::format("DEVICE_SET_IRQS: vectors {} + {} wrap", first, fds.size()));
    const auto index = static_cast<std::uint32_t>(kind);
    const std::uint32_t flags = irq_set_flags::data_eventfd | irq_set_flags::action_trigger;
    const std::size_t per_message = std::max<std::uint64_t>(1, std::min<std::uint64_t>(version_.server.max_msg_fds, 253));
    std::size_t i = 0;
    while (i < fds.size()) {
        std::size_t j = i;
        if (fds[i] < 0) {
            while (j < fds.size() && fds[j] < 0) ++j; // a run to de-assign: no fds
            if (auto r = set_irqs(flags, index, first + static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(j - i));
                !r)
                return r;
        } else {
            while (j < fds.size() && fds[j] >= 0 && j - i < per_message) ++j;
            if (auto r = set_irqs(flags, index, first + static_cast<std::uint32_t>(i),
                                  static_cast<std::uint32_t>(j - i), fds.subspan(i, j - i));
                !r)
                return r;
        }
        i = j;
    }
    return {};
}

expected<void, error> client::reset() {
    auto r = conn_->transact(command::device_reset, {}, {}, "DEVICE_RESET");
    if (!r) return unexpected(r.error());
    return {};
}

expected<pci::window, error> client::map_window(std::uint32_t bar, std::uint64_t off, std::uint64_t len) {
    const std::string what = fmt::format("map_window bar {} [{:#x}, +{:#x})", bar, off, len);
    if (len == 0 || off > std::numeric_limits<std::uint64_t>::max() - len) return fail(EINVAL, what + ": empty or wraps");
    auto reg = region_info(bar);
    if (!reg) return unexpected(reg.error());
    if (!(reg->flags & region_flags::mmap) || reg->fds.empty())
        return fail(EINVAL, what + ": the region is not mappable (no MMAP flag or no fd)");
    std::vector<sparse_area> areas = reg->areas;
    if (areas.empty()) areas.push_back({0, reg->size}); // mappable as a whole
    const auto it = std::find_if(areas.begin(), areas.end(), [&](const sparse_area& a) {
        return off >= a.offset && range_within(off - a.offset, len, a.size);
    });
    if (it == areas.end()) return fail(EINVAL, what + ": not inside one mappable area of the region");
    const std::size_t area = static_cast<std::size_t>(it - areas.begin());
    // The per-area rule only with vvu's marking (region_info checked that the fds pair with
    // the areas); otherwise the standard one, whatever the fd count.
    const bool per_area_fds = reg->fd_per_area;
    const int fd = per_area_fds ? reg->fds[area].get() : reg->fds[0].get();
    std::uint64_t file_offset = 0;
    if (per_area_fds) file_offset = off - it->offset;
    else if (reg->mmap_offset > std::numeric_limits<std::uint64_t>::max() - off)
        return fail(EPROTO, what + ": region mmap offset wraps");
    else file_offset = reg->mmap_offset + off;

    auto page = memory::page_size_of(fd);
    if (!page || *page == 0 || (*page & (*page - 1)) != 0) return fail(EINVAL, what + ": no page size for the fd");
    const auto w = memory::window_for(file_offset, len, *page);
    if (!w) return fail(EINVAL, what + ": too large");
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail(errno, what + ": fstat");
    // Touching a page past the end of the server's file would be SIGBUS here.
    if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) < file_offset + len)
        return fail(EPROTO, fmt::format("{}: the server's file is {:#x} bytes, too small", what, st.st_size));
    if (w->length > std::numeric_limits<std::size_t>::max() ||
        w->file_offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()))
        return fail(EINVAL, what + ": too large");
    const int prot = ((reg->flags & region_flags::read) ? PROT_READ : 0) |
                     ((reg->flags & region_flags::write) ? PROT_WRITE : 0);
    auto m = memory::mapping::map(fd, w->file_offset, static_cast<std::size_t>(w->length), prot == 0 ? PROT_READ : prot,
                                  MAP_SHARED);
    if (!m) return fail(m.error().value(), what + ": mmap");
    std::byte* host = m->data() + w->delta;
    auto keep = std::make_shared<const memory::mapping>(std::move(*m));
    return pci::window{host, len, std::shared_ptr<const void>(std::move(keep))};
}

expected<pci::doorbell, error> client::doorbell(std::uint32_t bar, std::uint64_t off, std::uint16_t value) {
    const std::string what = fmt::format("doorbell bar {} at {:#x}", bar, off);
    auto io = region_io_fds(bar);
    if (!io && !connected()) return unexpected(io.error());
    if (io) {
        for (const auto& s : io->sub_regions) {
            if (s.type != io_fd_type_ioeventfd || s.offset != off) continue;
            if ((s.flags & ~ioeventfd_flag_datamatch) != 0) continue; // PIO, CCW: not a memory write
            if ((s.flags & ioeventfd_flag_datamatch) && s.datamatch != value) continue;
            auto fd = std::make_shared<unique_fd>(dup_cloexec(io->fds[s.fd_index].get()));
            if (!*fd) return fail(errno, what + ": dup of the ioeventfd");
            return pci::doorbell([fd] {
                const std::uint64_t one = 1;
                // EAGAIN (counter saturated) still leaves the eventfd signalled.
                [[maybe_unused]] const ssize_t n = ::write(fd->get(), &one, sizeof(one));
            });
        }
    }
    // No ioeventfd for this register: a REGION_WRITE per ring, checked once here.
    auto reg = region_info(bar);
    if (!reg) return unexpected(reg.error());
    if (!(reg->flags & region_flags::write) || !range_within(off, sizeof(value), reg->size))
        return fail(EINVAL, fmt::format("{}: not a writable 16-bit register (region size {:#x})", what, reg->size));
    const std::uint64_t chunk = std::min(version_.server.max_data_xfer_size, max_chunk);
    return pci::doorbell([conn = conn_, bar, off, value, chunk] {
        std::array<std::byte, sizeof(value)> bytes{};
        std::memcpy(bytes.data(), &value, sizeof(value));
        (void)write_region(*conn, bar, off, bytes, chunk);
    });
}

} // namespace vvu::vfio_user
