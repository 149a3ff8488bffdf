// vfio_user::server (include/vvu/vfio_user/server.hpp) and the socket I/O it shares with the
// client (protocol.hpp, detail::read_exact / send_message).
#include <vvu/vfio_user/server.hpp>

#include <vvu/util/range.hpp>
#include <vvu/util/scm_rights.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

namespace vvu::vfio_user {

// ---- socket I/O ---------------------------------------------------------------------------

namespace detail {

namespace {

std::error_code sys(int e) { return {e, std::system_category()}; }

// Waits until `sock` is ready for `events` or the deadline passes.
expected<void, std::error_code> wait_ready(int sock, short events, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return unexpected(sys(ETIMEDOUT));
        pollfd p{sock, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 60'000)));
        if (n < 0) {
            if (errno == EINTR) continue;
            return unexpected(sys(errno));
        }
        if (n > 0) return {};
    }
}

} // namespace

expected<void, std::error_code> read_exact(int sock, std::span<std::byte> out, std::vector<unique_fd>& fds,
                                           std::chrono::steady_clock::time_point deadline) {
    std::size_t done = 0;
    bool truncated = false;
    while (done < out.size()) {
        const ssize_t n = scm::recv_some(
            sock, out.data() + done, out.size() - done, max_fds_per_read, [&](int fd) { fds.emplace_back(fd); },
            truncated);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (auto w = wait_ready(sock, POLLIN, deadline); !w) return w;
                continue;
            }
            return unexpected(sys(errno));
        }
        if (truncated) return unexpected(sys(EMSGSIZE));
        if (n == 0) return unexpected(sys(done == 0 ? ECONNRESET : EPIPE));
        done += static_cast<std::size_t>(n);
    }
    return {};
}

expected<void, std::error_code> send_message(int sock, std::span<const std::byte> head,
                                             std::span<const std::byte> payload, std::span<const int> fds,
                                             std::chrono::steady_clock::time_point deadline) {
    if (fds.size() > max_fds_per_read) return unexpected(sys(EINVAL));
    std::size_t sent = 0;
    const std::size_t total = head.size() + payload.size();
    bool fds_sent = fds.empty();
    while (sent < total || !fds_sent) {
        std::array<iovec, 2> iov{};
        std::size_t parts = 0;
        if (sent < head.size()) {
            iov[parts++] = {const_cast<std::byte*>(head.data()) + sent, head.size() - sent};
            if (!payload.empty()) iov[parts++] = {const_cast<std::byte*>(payload.data()), payload.size()};
        } else {
            const std::size_t off = sent - head.size();
            iov[parts++] = {const_cast<std::byte*>(payload.data()) + off, payload.size() - off};
        }
        const ssize_t n = scm::send_some(sock, std::span(iov).first(parts), fds_sent ? std::span<const int>{} : fds);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (auto w = wait_ready(sock, POLLOUT, deadline); !w) return w;
                continue;
            }
            return unexpected(sys(errno));
        }
        fds_sent = true;
        sent += static_cast<std::size_t>(n);
    }
    return {};
}

} // namespace detail

// ---- server -------------------------------------------------------------------------------

namespace {

std::error_code sys(int e) { return {e, std::system_category()}; }

std::string range(std::uint64_t off, std::uint64_t len) { return fmt::format("[{:#x}, +{:#x})", off, len); }

// True when fd is an eventfd: a device writes 8 bytes to an irq fd from its event loop, and a
// pipe with a full buffer would block it there.
bool is_eventfd(int fd) {
    std::array<char, 64> target{};
    const std::string link = fmt::format("/proc/self/fd/{}", fd);
    const ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
    return n > 0 && std::string_view(target.data(), static_cast<std::size_t>(n)) == "anon_inode:[eventfd]";
}

} // namespace

struct server::request {
    header h;
    std::span<const std::byte> payload;
    std::vector<unique_fd> fds;
};

struct server::reply {
    std::vector<std::byte> payload;
    std::vector<int> fds; // borrowed from the device
};

server::server(device& dev, server_options opts)
    : dev_(dev), opts_(std::move(opts)), dma_(opts_.max_dma_maps, opts_.require_sealed) {}

server::~server() {
    drop_client();
    if (listen_fd_ && !path_.empty()) ::unlink(path_.c_str());
}

std::unique_ptr<server> server::unlistened(device& dev, server_options opts) {
    return std::unique_ptr<server>(new server(dev, std::move(opts)));
}

expected<std::unique_ptr<server>, error> server::listen(const std::string& path, device& dev, server_options opts) {
    auto fail = [&](int e, std::string_view what) {
        return unexpected(error{sys(e), fmt::format("vfio-user server {}: {}", path, what)});
    };
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path)) return fail(ENAMETOOLONG, "bad socket path length");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    // A socket file left by a previous run is stale (binding fails on it); anything else at
    // that path is not ours to remove.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return fail(EEXIST, "path exists and is not a socket");
        ::unlink(path.c_str());
    }
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail(errno, "socket");
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) return fail(errno, "bind");
    if (::listen(fd.get(), 4) != 0) {
        const int e = errno;
        ::unlink(path.c_str());
        return fail(e, "listen");
    }
    auto s = std::unique_ptr<server>(new server(dev, std::move(opts)));
    s->listen_fd_ = std::move(fd);
    s->path_ = path;
    return s;
}

void server::save(byte_writer& w, fd_writer& fds) const {
    w.put_string(path_);
    fds.put(w, listen_fd_.get());
    fds.put(w, client_.get());
    w.put_bool(negotiated_);
    for (std::uint64_t v : {client_caps_.max_msg_fds, client_caps_.max_data_xfer_size, client_caps_.max_dma_maps,
                            client_caps_.pgsizes, client_caps_.vvu_fd_per_area})
        w.put<std::uint64_t>(v);
    dma_.save(w, fds);
}

expected<std::unique_ptr<server>, error> server::restore(device& dev, server_options opts, byte_reader& r, fd_reader& fds) {
    auto s = std::unique_ptr<server>(new server(dev, std::move(opts)));
    // A server that is not taken must not tell the device its client left, nor unlink the
    // path: both are still the old process's.
    auto fail = [&](std::error_code e, std::string_view what) {
        s->abandon();
        return unexpected(error{e, fmt::format("vfio-user server state: {}", what)});
    };
    auto malformed = [&](std::string_view what) { return fail(sys(EINVAL), what); };
    s->path_ = r.get_string(sizeof(sockaddr_un::sun_path));
    s->listen_fd_ = fds.take(r);
    s->client_ = fds.take(r);
    s->negotiated_ = r.get_bool();
    for (std::uint64_t* v : {&s->client_caps_.max_msg_fds, &s->client_caps_.max_data_xfer_size,
                             &s->client_caps_.max_dma_maps, &s->client_caps_.pgsizes, &s->client_caps_.vvu_fd_per_area})
        *v = r.get<std::uint64_t>();
    if (!r.ok()) return malformed("short or without its sockets");
    int listening = 0;
    socklen_t len = sizeof listening;
    if (s->listen_fd_ && (::getsockopt(s->listen_fd_.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening))
        return malformed("the listening socket does not listen");
    if (s->negotiated_ && !s->client_) return malformed("negotiated without a client");
    if (auto m = s->dma_.restore(r, fds); !m) return fail(m.error(), fmt::format("a DMA map: {}", m.error().message()));
    return s;
}

void server::abandon() noexcept {
    listen_fd_.reset(); // (closing this process's copies shuts nothing down)
    client_.reset();
    path_.clear();
    negotiated_ = false;
    dma_.clear();
}

expected<void, error> server::accept_one() {
    if (!listen_fd_) return unexpected(error{sys(EINVAL), "vfio-user server: not listening"});
    unique_fd fd;
    for (;;) {
        fd.reset(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd || errno != EINTR) break;
    }
    if (!fd) return unexpected(error{sys(errno), "vfio-user server: accept"});
    return attach(std::move(fd));
}

expected<void, error> server::attach(unique_fd connected) {
    if (client_) // closing `connected` tells that client at once
        return unexpected(error{sys(EBUSY), "vfio-user server: a client is already attached; refused another"});
    client_ = std::move(connected);
    negotiated_ = false;
    client_caps_ = {};
    return {};
}

void server::drop_client() noexcept {
    if (!client_) return;
    client_.reset();
    negotiated_ = false;
    client_caps_ = {};
    dma_.clear();
    dev_.client_detached();
}

void server::log(std::string_view what) const {
    if (opts_.log) opts_.log(what);
}

expected<void, error> server::send(const header& h, std::span<const std::byte> payload, std::span<const int> fds) {
    std::array<std::byte, header_size> head{};
    store(head, h);
    const auto deadline = std::chrono::steady_clock::now() + opts_.io_timeout;
    if (auto r = detail::send_message(client_.get(), head, payload, fds, deadline); !r)
        return unexpected(error{r.error(), fmt::format("vfio-user server: sending the {} reply", command_name(h.cmd))});
    return {};
}

expected<void, error> server::serve_one() {
    if (!client_) return unexpected(error{sys(ENOTCONN), "vfio-user server: no client"});
    const auto deadline = std::chrono::steady_clock::now() + opts_.io_timeout;
    request rq;
    std::array<std::byte, header_size> head{};
    auto framing = [&](const std::error_code& ec, std::string what) {
        log(what);
        return unexpected(error{ec, std::move(what)});
    };
    if (auto r = detail::read_exact(client_.get(), head, rq.fds, deadline); !r) {
        if (r.error().value() == ECONNRESET) return unexpected(error{r.error(), "vfio-user client closed the connection"});
        return framing(r.error(), fmt::format("vfio-user: reading a message header: {}", r.error().message()));
    }
    rq.h = load<header>(head);
    const std::string_view name = command_name(rq.h.cmd);
    // An error reply to a message that cannot be framed, best effort, before the drop.
    auto refuse_frame = [&](int e, std::string what) {
        const header eh{rq.h.msg_id, rq.h.cmd, header_size, header_flags::type_reply | header_flags::error,
                        static_cast<std::uint32_t>(e)};
        (void)send(eh, {}, {});
        return framing(sys(e), std::move(what));
    };
    if (rq.h.msg_size < header_size)
        return refuse_frame(EINVAL, fmt::format("{} (cmd {}): msg_size {} is smaller than the 16-byte header", name,
                                                rq.h.cmd, rq.h.msg_size));
    if (rq.h.msg_size > max_message_size())
        return refuse_frame(E2BIG, fmt::format("{} (cmd {}): msg_size {} is over the limit of {} bytes", name,
                                               rq.h.cmd, rq.h.msg_size, max_message_size()));
    buffer_.resize(rq.h.msg_size - header_size);
    if (auto r = detail::read_exact(client_.get(), buffer_, rq.fds, deadline); !r)
        return framing(r.error(), fmt::format("{}: reading a {}-byte payload: {}", name, buffer_.size(),
                                              r.error().message()));
    rq.payload = buffer_;

    const bool is_version = rq.h.cmd == static_cast<std::uint16_t>(command::version);
    outcome result = [&]() -> outcome {
        const std::uint32_t type = rq.h.flags & header_flags::type_mask;
        if (type != header_flags::type_command)
            return unexpected(rejection{EINVAL, fmt::format("message type {} from a client (only commands, type 0, "
                                                            "are accepted)", type)});
        if (rq.h.flags & ~(header_flags::type_mask | header_flags::no_reply))
            return unexpected(rejection{EINVAL, fmt::format("unknown flags {:#x} in a command", rq.h.flags)});
        if (rq.fds.size() > opts_.max_msg_fds)
            return unexpected(rejection{EINVAL, fmt::format("{} fds, more than max_msg_fds {}", rq.fds.size(),
                                                            opts_.max_msg_fds)});
        if (!negotiated_ && !is_version)
            return unexpected(rejection{EINVAL, "the first message must be VERSION"});
        if (negotiated_ && is_version) return unexpected(rejection{EINVAL, "VERSION was already negotiated"});
        return handle(rq);
    }();
    // The fds of the request close here unless a handler took them (dma_space, device).
    rq.fds.clear();

    const bool drop = !negotiated_; // a failed VERSION, or anything before it
    const bool no_reply = (rq.h.flags & header_flags::no_reply) && !is_version && !drop;
    if (result) {
        if (no_reply) return {};
        const auto& p = result->payload;
        const header rh{rq.h.msg_id, rq.h.cmd, static_cast<std::uint32_t>(header_size + p.size()),
                        header_flags::type_reply, 0};
        return send(rh, p, result->fds);
    }
    const rejection& why = result.error();
    log(fmt::format("{}: {}", name, why.why));
    if (!no_reply) {
        const header eh{rq.h.msg_id, rq.h.cmd, header_size, header_flags::type_reply | header_flags::error,
                        static_cast<std::uint32_t>(why.errno_value)};
        if (auto r = send(eh, {}, {}); !r) return r;
    }
    if (drop) return unexpected(error{sys(why.errno_value), fmt::format("{}: {}", name, why.why)});
    return {};
}

namespace {

// The payload must be exactly `want` bytes.
std::optional<std::string> exact_size(std::span<const std::byte> p, std::size_t want) {
    if (p.size() != want) return fmt::format("payload is {} bytes, want {}", p.size(), want);
    return std::nullopt;
}

} // namespace

server::outcome server::handle(request& rq) {
    const auto cmd = static_cast<command>(rq.h.cmd);
    if (cmd != command::dma_map && cmd != command::device_set_irqs && !rq.fds.empty())
        return unexpected(rejection{EINVAL, fmt::format("{} fds with a command that takes none", rq.fds.size())});
    switch (cmd) {
    case command::version: return on_version(rq);
    case command::dma_map: return on_dma_map(rq);
    case command::dma_unmap: return on_dma_unmap(rq);
    case command::device_get_info: return on_device_info(rq);
    case command::device_get_region_info: return on_region_info(rq);
    case command::device_get_region_io_fds: return on_region_io_fds(rq);
    case command::device_get_irq_info: return on_irq_info(rq);
    case command::device_set_irqs: return on_set_irqs(rq);
    case command::region_read: return on_region_read(rq);
    case command::region_write: return on_region_write(rq);
    case command::device_reset: return on_reset(rq);
    case command::dma_read:
    case command::dma_write:
        return unexpected(rejection{EINVAL, "a server-to-client command sent by the client"});
    default: break;
    }
    return unexpected(rejection{ENOSYS, fmt::format("command {} is not served", rq.h.cmd)});
}

server::outcome server::on_version(request& rq) {
    if (rq.payload.size() < sizeof(version_payload))
        return unexpected(rejection{EINVAL, fmt::format("payload is {} bytes, want at least 4", rq.payload.size())});
    const auto v = load<version_payload>(rq.payload);
    if (v.major != version_major)
        return unexpected(rejection{EINVAL, fmt::format("major version {} (vvu speaks {})", v.major, version_major)});
    auto caps = parse_capabilities(rq.payload.subspan(sizeof(version_payload)));
    if (!caps) return unexpected(rejection{EINVAL, "capabilities: " + caps.error()});
    if (caps->max_msg_fds > 1024 || caps->max_data_xfer_size == 0)
        return unexpected(rejection{EINVAL, fmt::format("implausible capabilities max_msg_fds {} max_data_xfer_size {}",
                                                        caps->max_msg_fds, caps->max_data_xfer_size)});
    client_caps_ = *caps;
    negotiated_ = true;

    capabilities ours;
    ours.max_msg_fds = opts_.max_msg_fds;
    ours.max_data_xfer_size = opts_.max_data_xfer_size;
    ours.max_dma_maps = opts_.max_dma_maps;
    ours.pgsizes = 4096;
    const std::string json = format_capabilities(ours);
    reply r;
    r.payload.resize(sizeof(version_payload) + json.size() + 1);
    store(r.payload, version_payload{version_major, std::min(v.minor, version_minor)});
    std::memcpy(r.payload.data() + sizeof(version_payload), json.data(), json.size());
    return r;
}

server::outcome server::on_dma_map(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(dma_map_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<dma_map_payload>(rq.payload);
    const std::string where = range(p.addr, p.size);
    if (p.argsz < sizeof(dma_map_payload))
        return unexpected(rejection{EINVAL, fmt::format("{}: argsz {} < 32", where, p.argsz)});
    // No fd: memory the client serves in-band (QEMU maps its ROMs so). Recorded, never reached
    // (dma.hpp): the map succeeds, a device access there fails.
    if (rq.fds.size() > 1) return unexpected(rejection{EINVAL, fmt::format("{}: {} fds, want 1", where, rq.fds.size())});
    unique_fd fd = rq.fds.empty() ? unique_fd{} : std::move(rq.fds[0]);
    // Known before the fd goes into the dma_space, to say why an EINVAL came.
    const bool unsealed = fd && dma_.require_sealed() && !dma_space::sealed_against_shrinking(fd.get());
    if (auto r = dma_.map(p.addr, p.size, p.flags, std::move(fd), p.offset); !r) {
        const int e = r.error().value();
        std::string why = e == EINVAL && unsealed
                              ? "the fd is not sealed against shrinking (F_SEAL_SHRINK required: a truncated "
                                "file would make the device's accesses SIGBUS)"
                          : e == EEXIST ? "overlaps an existing map"
                          : e == ENOSPC ? fmt::format("more than max_dma_maps ({}) maps", dma_.max_maps())
                          : e == EINVAL ? "empty, past 2^64, bad flags, or outside its file"
                                        : r.error().message();
        return unexpected(rejection{e, fmt::format("{} flags {:#x} file offset {:#x}: {}", where, p.flags, p.offset, why)});
    }
    if (const int e = dev_.dma_mapped(p.addr, p.size); e != 0) {
        (void)dma_.unmap(p.addr, p.size);
        return unexpected(rejection{e, where + ": the device refused the map"});
    }
    return reply{};
}

server::outcome server::on_dma_unmap(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(dma_unmap_payload))) return unexpected(rejection{EINVAL, *e});
    auto p = load<dma_unmap_payload>(rq.payload);
    const std::string where = range(p.addr, p.size);
    if (p.argsz < sizeof(dma_unmap_payload))
        return unexpected(rejection{EINVAL, fmt::format("{}: argsz {} < 24", where, p.argsz)});
    if (p.flags != 0)
        return unexpected(rejection{EINVAL, fmt::format("{}: flags {:#x} (dirty bitmaps and unmap-all are not "
                                                        "supported)", where, p.flags)});
    auto removed = dma_.unmap(p.addr, p.size);
    if (!removed) return unexpected(rejection{removed.error().value(), where + ": empty, wraps, or a map straddles its ends"});
    for (const auto& m : *removed) dev_.dma_unmapped(m.iova, m.size);
    p.argsz = sizeof(dma_unmap_payload);
    reply r;
    r.payload.resize(sizeof(p));
    store(r.payload, p);
    return r;
}

server::outcome server::on_device_info(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(device_info_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<device_info_payload>(rq.payload);
    if (p.argsz < sizeof(device_info_payload))
        return unexpected(rejection{EINVAL, fmt::format("argsz {} < 16", p.argsz)});
    reply r;
    r.payload.resize(sizeof(device_info_payload));
    store(r.payload, device_info_payload{sizeof(device_info_payload), dev_.device_flags(), dev_.region_count(),
                                         dev_.irq_count()});
    return r;
}

server::outcome server::on_region_info(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(region_info_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<region_info_payload>(rq.payload);
    if (p.argsz < sizeof(region_info_payload))
        return unexpected(rejection{EINVAL, fmt::format("region {}: argsz {} < 32", p.index, p.argsz)});
    if (p.index >= dev_.region_count())
        return unexpected(rejection{EINVAL, fmt::format("region {} (the device has {})", p.index, dev_.region_count())});
    region_info info = dev_.describe_region(p.index);
    if (info.fd_per_area && client_caps_.vvu_fd_per_area == 0) {
        // A client without vvu's extension (QEMU) would refuse the reply: the region is
        // offered without areas or fds, and reached by REGION_READ/WRITE.
        info.areas.clear();
        info.fds.clear();
        info.fd_per_area = false;
        info.flags &= ~region_flags::mmap;
    }
    // The device's answer is checked too: a client must not be told something unmappable.
    // One fd per area only with the marking (and then exactly one per area); otherwise at
    // most one fd, the standard case.
    const bool fds_ok = info.fd_per_area ? !info.areas.empty() && info.fds.size() == info.areas.size()
                                         : info.fds.size() <= 1;
    const bool areas_ok = std::all_of(info.areas.begin(), info.areas.end(), [&](const sparse_area& a) {
        return a.offset <= info.size && a.size <= info.size - a.offset;
    });
    if (!fds_ok || !areas_ok || info.areas.size() > 1024)
        return unexpected(rejection{EIO, fmt::format("region {}: the device described it inconsistently", p.index)});

    // The capability chain: the sparse mmap cap (when there are areas), then vvu's TYPE cap
    // (when each area is its own fd); `next` is relative to the region info, 0 ends it.
    const std::size_t sparse_bytes =
        info.areas.empty() ? 0 : sizeof(sparse_mmap_cap) + info.areas.size() * sizeof(sparse_mmap_area);
    const std::size_t type_bytes = info.fd_per_area ? sizeof(type_cap) : 0;
    const std::size_t caps = sparse_bytes + type_bytes;
    const std::size_t needed = sizeof(region_info_payload) + caps;
    const bool full = p.argsz >= needed;
    if (full && info.fds.size() > client_caps_.max_msg_fds)
        return unexpected(rejection{E2BIG, fmt::format("region {}: {} fds, more than the client's max_msg_fds {}",
                                                       p.index, info.fds.size(), client_caps_.max_msg_fds)});
    region_info_payload out;
    out.argsz = static_cast<std::uint32_t>(needed);
    // CAPS says whether this reply has capabilities, whatever the device's flags said.
    out.flags = (info.flags & ~region_flags::caps) | (caps ? region_flags::caps : 0);
    out.index = p.index;
    out.cap_offset = (caps && full) ? sizeof(region_info_payload) : 0;
    out.size = info.size;
    out.offset = info.mmap_offset;
    reply r;
    // Too small an argsz: the fixed part with the size needed, no caps and no fds (the spec's
    // "Message sizes"; the client asks again).
    r.payload.resize(full ? needed : sizeof(region_info_payload));
    store(r.payload, out);
    if (full && caps) {
        std::size_t at = sizeof(region_info_payload);
        if (sparse_bytes) {
            sparse_mmap_cap cap;
            cap.nr_areas = static_cast<std::uint32_t>(info.areas.size());
            if (type_bytes) cap.header.next = static_cast<std::uint32_t>(at + sparse_bytes);
            store(std::span(r.payload).subspan(at), cap);
            at += sizeof(cap);
            for (const auto& a : info.areas) {
                store(std::span(r.payload).subspan(at), sparse_mmap_area{a.offset, a.size});
                at += sizeof(sparse_mmap_area);
            }
        }
        if (type_bytes) {
            type_cap cap;
            cap.type = vvu_fd_per_area_type;
            cap.subtype = vvu_fd_per_area_subtype;
            store(std::span(r.payload).subspan(at), cap);
        }
    }
    if (full) r.fds = info.fds;
    return r;
}

server::outcome server::on_region_io_fds(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(region_io_fds_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<region_io_fds_payload>(rq.payload);
    if (p.argsz < sizeof(region_io_fds_payload))
        return unexpected(rejection{EINVAL, fmt::format("region {}: argsz {} < 16", p.index, p.argsz)});
    if (p.flags != 0) return unexpected(rejection{EINVAL, fmt::format("region {}: flags {:#x}, want 0", p.index, p.flags)});
    if (p.index >= dev_.region_count())
        return unexpected(rejection{EINVAL, fmt::format("region {} (the device has {})", p.index, dev_.region_count())});
    const std::uint64_t region_size = dev_.describe_region(p.index).size;
    const std::vector<io_eventfd> subs = dev_.region_io_fds(p.index);
    for (const auto& s : subs)
        if (s.fd < 0 || !range_within(s.offset, s.size, region_size) || subs.size() > 1024)
            return unexpected(rejection{EIO, fmt::format("region {}: the device described an ioeventfd inconsistently",
                                                         p.index)});
    const std::size_t needed = sizeof(region_io_fds_payload) + subs.size() * sizeof(sub_region_ioeventfd);
    const bool full = p.argsz >= needed;
    if (full && subs.size() > client_caps_.max_msg_fds)
        return unexpected(rejection{E2BIG, fmt::format("region {}: {} fds, more than the client's max_msg_fds {}",
                                                       p.index, subs.size(), client_caps_.max_msg_fds)});
    reply r;
    r.payload.resize(full ? needed : sizeof(region_io_fds_payload));
    store(r.payload, region_io_fds_payload{static_cast<std::uint32_t>(needed), 0, p.index,
                                           static_cast<std::uint32_t>(subs.size())});
    if (full) {
        for (std::size_t i = 0; i < subs.size(); ++i) {
            sub_region_ioeventfd e;
            e.offset = subs[i].offset;
            e.size = subs[i].size;
            e.fd_index = static_cast<std::uint32_t>(i);
            store(std::span(r.payload).subspan(sizeof(region_io_fds_payload) + i * sizeof(e)), e);
            r.fds.push_back(subs[i].fd);
        }
    }
    return r;
}

server::outcome server::on_irq_info(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(irq_info_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<irq_info_payload>(rq.payload);
    if (p.argsz < sizeof(irq_info_payload))
        return unexpected(rejection{EINVAL, fmt::format("irq {}: argsz {} < 16", p.index, p.argsz)});
    if (p.index >= dev_.irq_count())
        return unexpected(rejection{EINVAL, fmt::format("irq index {} (the device has {})", p.index, dev_.irq_count())});
    const irq_info info = dev_.describe_irq(p.index);
    reply r;
    r.payload.resize(sizeof(irq_info_payload));
    store(r.payload, irq_info_payload{sizeof(irq_info_payload), info.flags, p.index, info.count});
    return r;
}

server::outcome server::on_set_irqs(request& rq) {
    if (rq.payload.size() < sizeof(irq_set_payload))
        return unexpected(rejection{EINVAL, fmt::format("payload is {} bytes, want at least 20", rq.payload.size())});
    const auto p = load<irq_set_payload>(rq.payload);
    const std::string where = fmt::format("irq {} vectors [{}, +{}) flags {:#x}", p.index, p.start, p.count, p.flags);
    auto bad = [&](int e, std::string_view why) { return unexpected(rejection{e, fmt::format("{}: {}", where, why)}); };
    if (p.argsz < sizeof(irq_set_payload)) return bad(EINVAL, fmt::format("argsz {} < 20", p.argsz));
    if (p.index >= dev_.irq_count()) return bad(EINVAL, fmt::format("the device has {} irq indices", dev_.irq_count()));
    const std::uint32_t data = p.flags & irq_set_flags::data_mask;
    const std::uint32_t action = p.flags & irq_set_flags::action_mask_all;
    if (std::popcount(data) != 1 || std::popcount(action) != 1 ||
        (p.flags & ~(irq_set_flags::data_mask | irq_set_flags::action_mask_all)) != 0)
        return bad(EINVAL, "want exactly one DATA and one ACTION flag");
    const irq_info info = dev_.describe_irq(p.index);
    const std::size_t extra = rq.payload.size() - sizeof(irq_set_payload);
    std::vector<unique_fd> fds;
    std::span<const std::byte> bools;
    if (p.count == 0) {
        // "a count (and start) of 0, with DATA_NONE disables all interrupts of the index"
        if (p.start != 0 || data != irq_set_flags::data_none || action != irq_set_flags::action_trigger)
            return bad(EINVAL, "count 0 needs start 0, DATA_NONE and ACTION_TRIGGER");
        if (extra != 0 || !rq.fds.empty()) return bad(EINVAL, "count 0 takes no data and no fds");
    } else {
        if (static_cast<std::uint64_t>(p.start) + p.count > info.count)
            return bad(EINVAL, fmt::format("beyond the {} vectors of the index", info.count));
        if (data == irq_set_flags::data_none) {
            if (extra != 0 || !rq.fds.empty()) return bad(EINVAL, "DATA_NONE takes no data and no fds");
        } else if (data == irq_set_flags::data_bool) {
            if (extra != p.count) return bad(EINVAL, fmt::format("DATA_BOOL with {} bytes of data, want {}", extra, p.count));
            if (!rq.fds.empty()) return bad(EINVAL, "DATA_BOOL takes no fds");
            bools = rq.payload.subspan(sizeof(irq_set_payload));
        } else {
            if (extra != 0) return bad(EINVAL, fmt::format("DATA_EVENTFD with {} bytes of data, want none", extra));
            if (!rq.fds.empty() && rq.fds.size() != p.count)
                return bad(EINVAL, fmt::format("{} fds, want {} (or none to de-assign)", rq.fds.size(), p.count));
            for (const auto& fd : rq.fds)
                if (!is_eventfd(fd.get())) return bad(EINVAL, "an fd that is not an eventfd");
            if (rq.fds.empty()) fds.resize(p.count); // invalid fds: de-assign each vector
            else fds = std::move(rq.fds);
        }
    }
    const irq_set s{p.flags, p.index, p.start, p.count, std::span(fds), bools};
    if (const int e = dev_.set_irqs(s); e != 0) return bad(e, "the device refused it");
    return reply{};
}

server::outcome server::on_region_read(request& rq) {
    if (auto e = exact_size(rq.payload, sizeof(region_access_payload))) return unexpected(rejection{EINVAL, *e});
    const auto p = load<region_access_payload>(rq.payload);
    const std::string where = fmt::format("region {} {}", p.region, range(p.offset, p.count));
    if (p.region >= dev_.region_count())
        return unexpected(rejection{EINVAL, fmt::format("{}: the device has {} regions", where, dev_.region_count())});
    if (p.count == 0 || p.count > opts_.max_data_xfer_size)
        return unexpected(rejection{EINVAL, fmt::format("{}: count must be 1..{}", where, opts_.max_data_xfer_size)});
    const region_info info = dev_.describe_region(p.region);
    if (!(info.flags & region_flags::read)) return unexpected(rejection{EINVAL, where + ": the region is not readable"});
    if (!range_within(p.offset, p.count, info.size))
        return unexpected(rejection{EINVAL, fmt::format("{}: outside the region (size {:#x})", where, info.size)});
    reply r;
    r.payload.resize(sizeof(region_access_payload) + p.count);
    store(r.payload, p);
    if (const int e = dev_.region_read(p.region, p.offset, std::span(r.payload).subspan(sizeof(p))); e != 0)
        return unexpected(rejection{e, where + ": the device failed the read"});
    return r;
}

server::outcome server::on_region_write(request& rq) {
    if (rq.payload.size() < sizeof(region_access_payload))
        return unexpected(rejection{EINVAL, fmt::format("payload is {} bytes, want at least 16", rq.payload.size())});
    const auto p = load<region_access_payload>(rq.payload);
    const std::string where = fmt::format("region {} {}", p.region, range(p.offset, p.count));
    if (p.count != rq.payload.size() - sizeof(p))
        return unexpected(rejection{EINVAL, fmt::format("{}: count {} but {} bytes of data", where, p.count,
                                                        rq.payload.size() - sizeof(p))});
    if (p.region >= dev_.region_count())
        return unexpected(rejection{EINVAL, fmt::format("{}: the device has {} regions", where, dev_.region_count())});
    if (p.count == 0 || p.count > opts_.max_data_xfer_size)
        return unexpected(rejection{EINVAL, fmt::format("{}: count must be 1..{}", where, opts_.max_data_xfer_size)});
    const region_info info = dev_.describe_region(p.region);
    if (!(info.flags & region_flags::write)) return unexpected(rejection{EINVAL, where + ": the region is not writable"});
    if (!range_within(p.offset, p.count, info.size))
        return unexpected(rejection{EINVAL, fmt::format("{}: outside the region (size {:#x})", where, info.size)});
    if (const int e = dev_.region_write(p.region, p.offset, rq.payload.subspan(sizeof(p))); e != 0)
        return unexpected(rejection{e, where + ": the device failed the write"});
    reply r;
    r.payload.resize(sizeof(p));
    store(r.payload, p);
    return r;
}

server::outcome server::on_reset(request& rq) {
    if (auto e = exact_size(rq.payload, 0)) return unexpected(rejection{EINVAL, *e});
    if (const int e = dev_.reset(); e != 0) return unexpected(rejection{e, "the device failed the reset"});
    return reply{};
}

} // namespace vvu::vfio_user
