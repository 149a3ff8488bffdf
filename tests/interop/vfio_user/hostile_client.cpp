// vvu-test-vfio-hostile [--report] SOCKET: a hostile vfio-user client. Each malformed-message
// class goes to the server on a fresh connection; the server must answer it with an error
// reply or close the connection — and afterwards a well-formed client must still attach and
// read config space (the server survived and serves the next client). Prints one line per
// case; exit 1 on the first case that fails (with --report: print every case, exit 0 — for
// looking at other servers).
#include <vvu/vfio_user/client.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace vvu;
using namespace vvu::vfio_user;
using clk = std::chrono::steady_clock;

namespace {

std::string socket_path;

unique_fd raw_connect() {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, socket_path.c_str(), socket_path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) return {};
    return fd;
}

std::vector<std::byte> message(std::uint16_t cmd, const std::vector<std::byte>& payload, std::uint32_t flags = 0,
                               std::optional<std::uint32_t> size = {}) {
    std::vector<std::byte> m(header_size + payload.size());
    store(m, header{0x42, cmd, size.value_or(static_cast<std::uint32_t>(m.size())), flags, 0});
    if (!payload.empty()) std::memcpy(m.data() + header_size, payload.data(), payload.size());
    return m;
}
template <class T>
std::vector<std::byte> bytes_of(const T& v, std::size_t extra = 0) {
    std::vector<std::byte> out(sizeof(T) + extra);
    store(out, v);
    return out;
}

bool send_raw(int s, const std::vector<std::byte>& m, std::span<const int> fds = {}) {
    return static_cast<bool>(detail::send_message(s, m, {}, fds, clk::now() + std::chrono::seconds(2)));
}

// What the server did with one message.
struct outcome {
    enum kind { error_reply, closed, accepted, no_answer, setup_failed } what;
    std::uint32_t errno_value = 0;
    std::string text() const {
        switch (what) {
        case error_reply: return fmt::format("error reply (errno {}: {})", errno_value, std::strerror(static_cast<int>(errno_value)));
        case closed: return "connection closed";
        case accepted: return "ACCEPTED (success reply)";
        case no_answer: return "NO ANSWER within the wait";
        case setup_failed: return fmt::format("SETUP FAILED (a well-formed DMA_MAP was refused, errno {})", errno_value);
        }
        return "?";
    }
};

outcome answer(int s, std::chrono::milliseconds wait = std::chrono::milliseconds(4000)) {
    std::array<std::byte, header_size> head{};
    std::vector<unique_fd> fds;
    auto r = detail::read_exact(s, head, fds, clk::now() + wait);
    if (!r) return {r.error().value() == ETIMEDOUT ? outcome::no_answer : outcome::closed};
    const auto h = load<header>(head);
    std::vector<std::byte> rest(h.msg_size > header_size && h.msg_size < (1u << 22) ? h.msg_size - header_size : 0);
    (void)detail::read_exact(s, rest, fds, clk::now() + wait);
    if (h.flags & header_flags::error) return {outcome::error_reply, h.error_no};
    return {outcome::accepted};
}

bool negotiate(int s) {
    const std::string json = R"({"capabilities":{"max_msg_fds":8}})";
    std::vector<std::byte> p(4 + json.size() + 1);
    store(p, version_payload{0, 0});
    std::memcpy(p.data() + 4, json.data(), json.size());
    return send_raw(s, message(1, p)) && answer(s).what == outcome::accepted;
}

// Sealed against shrinking and growing, as a well-formed client's DMA memory is (vvu-device
// refuses DMA_MAP of an fd without F_SEAL_SHRINK); unsealed_memfd() for the case that checks it.
unique_fd unsealed_memfd(std::size_t size) {
    unique_fd fd(::memfd_create("vvu-hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd && ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fd.reset();
    return fd;
}
unique_fd memfd(std::size_t size) {
    unique_fd fd = unsealed_memfd(size);
    if (fd && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) fd.reset();
    return fd;
}

std::vector<std::byte> dma_map(std::uint64_t iova, std::uint64_t size) {
    return message(2, bytes_of(dma_map_payload{32, dma_flags::read | dma_flags::write, 0, iova, size}));
}
std::vector<std::byte> region_read(std::uint32_t region, std::uint64_t off, std::uint32_t count) {
    return message(9, bytes_of(region_access_payload{off, region, count}));
}

struct hostile_case {
    std::string name;
    bool negotiated; // VERSION first
    std::function<outcome(int)> run;
};

// Sends `m` (with fds) and reports the answer.
outcome one(int s, const std::vector<std::byte>& m, std::span<const int> fds = {}) {
    if (!send_raw(s, m, fds)) return {outcome::closed};
    return answer(s);
}

std::vector<hostile_case> cases() {
    std::vector<hostile_case> v;
    auto zeros = [](std::size_t n) { return std::vector<std::byte>(n); };
    v.push_back({"short header, then end of stream", true, [=](int s) {
                     send_raw(s, zeros(10));
                     ::shutdown(s, SHUT_WR);
                     return answer(s);
                 }});
    v.push_back({"msg_size smaller than the header", true, [=](int s) { return one(s, message(4, {}, 0, 8)); }});
    v.push_back({"msg_size over any cap (2 GiB)", true,
                 [=](int s) { return one(s, message(10, bytes_of(region_access_payload{0, 7, 4}, 4), 0, 0x7fff'ffff)); }});
    const std::pair<std::uint16_t, std::size_t> wrong_sizes[] = {{3, 23}, {4, 12}, {5, 28}, {6, 20},
                                                                 {7, 8},  {8, 19}, {9, 20}, {13, 4}};
    for (const auto& wrong : wrong_sizes) {
        // Copies, not structured bindings: clang 14 cannot capture those.
        const std::uint16_t cmd = wrong.first;
        const std::size_t n = wrong.second;
        v.push_back({fmt::format("payload size mismatch: {} with {} bytes", command_name(cmd), n), true,
                     [=](int s) { return one(s, message(cmd, zeros(n))); }});
    }
    v.push_back({"payload size mismatch: REGION_WRITE count 4 with 3 bytes", true,
                 [=](int s) { return one(s, message(10, bytes_of(region_access_payload{0, 7, 4}, 3))); }});
    v.push_back({"unknown command 99", true, [=](int s) { return one(s, message(99, zeros(8))); }});
    v.push_back({"reply-type message from the client", true,
                 [=](int s) { return one(s, message(4, bytes_of(device_info_payload{}), header_flags::type_reply)); }});
    v.push_back({"bad region index 9", true, [=](int s) { return one(s, region_read(9, 0, 4)); }});
    v.push_back({"offset out of range (config 0x1000)", true, [=](int s) { return one(s, region_read(7, 0x1000, 4)); }});
    v.push_back({"offset + count wraps 2^64", true,
                 [=](int s) { return one(s, region_read(7, ~std::uint64_t{0} - 1, 4)); }});
    v.push_back({"count over max_data_xfer_size (1 MiB + 1)", true,
                 [=](int s) { return one(s, region_read(7, 0, (1u << 20) + 1)); }});
    // A map without an fd is legal (memory the client serves in-band); over another map it is not.
    v.push_back({"DMA_MAP without an fd over an existing map", true, [=](int s) {
                     unique_fd m = memfd(0x2000);
                     const int fd = m.get();
                     if (auto first = one(s, dma_map(0x10000, 0x2000), std::span(&fd, 1)); first.what != outcome::accepted)
                         return outcome{outcome::setup_failed, first.errno_value};
                     return one(s, dma_map(0x11000, 0x1000));
                 }});
    v.push_back({"surplus fds on REGION_READ", true, [=](int s) {
                     unique_fd a = memfd(0x1000), b(::eventfd(0, EFD_CLOEXEC));
                     const int fds[2] = {a.get(), b.get()};
                     return one(s, region_read(7, 0, 4), fds);
                 }});
    v.push_back({"VERSION with major 1", false, [=](int s) {
                     std::vector<std::byte> p(4);
                     store(p, version_payload{1, 0});
                     return one(s, message(1, p));
                 }});
    v.push_back({"VERSION not first", false, [=](int s) { return one(s, message(4, bytes_of(device_info_payload{}))); }});
    v.push_back({"VERSION with garbage JSON", false, [=](int s) {
                     const std::string json = "{\"capabilities\":{\"max_msg_fds\":";
                     std::vector<std::byte> p(4 + json.size() + 1);
                     store(p, version_payload{0, 0});
                     std::memcpy(p.data() + 4, json.data(), json.size());
                     return one(s, message(1, p));
                 }});
    v.push_back({"DMA region wrapping 2^64", true, [=](int s) {
                     unique_fd m = memfd(0x1000);
                     const int fd = m.get();
                     return one(s, dma_map(~std::uint64_t{0} - 0x7ff, 0x1000), std::span(&fd, 1));
                 }});
    v.push_back({"overlapping DMA map", true, [=](int s) {
                     unique_fd m = memfd(0x2000);
                     const int fd = m.get();
                     if (auto first = one(s, dma_map(0x10000, 0x2000), std::span(&fd, 1)); first.what != outcome::accepted)
                         return outcome{outcome::setup_failed, first.errno_value};
                     return one(s, dma_map(0x11000, 0x1000), std::span(&fd, 1));
                 }});
    v.push_back({"DMA_MAP of a memfd not sealed against shrinking (it could be truncated later: SIGBUS)", true,
                 [=](int s) {
                     unique_fd m = unsealed_memfd(0x2000);
                     const int fd = m.get();
                     return one(s, dma_map(0x10000, 0x2000), std::span(&fd, 1));
                 }});
    v.push_back({"DMA_UNMAP cutting a map in two", true, [=](int s) {
                     unique_fd m = memfd(0x2000);
                     const int fd = m.get();
                     if (auto first = one(s, dma_map(0x10000, 0x2000), std::span(&fd, 1)); first.what != outcome::accepted)
                         return outcome{outcome::setup_failed, first.errno_value};
                     return one(s, message(3, bytes_of(dma_unmap_payload{24, 0, 0x10000, 0x1000})));
                 }});
    v.push_back({"SET_IRQS start + count beyond the irq's count", true, [=](int s) {
                     unique_fd e(::eventfd(0, EFD_CLOEXEC));
                     const int fd = e.get();
                     return one(s, message(8, bytes_of(irq_set_payload{20, irq_set_flags::data_eventfd |
                                                                                irq_set_flags::action_trigger,
                                                                      0, 0xffff'fff0, 0x20})),
                                std::span(&fd, 1));
                 }});
    return v;
}

// A well-formed client attaches and reads the vendor id (retrying briefly: the server may
// still be dropping the last connection).
std::optional<unsigned> healthy() {
    for (int i = 0; i < 30; ++i) {
        auto c = client::connect(socket_path, std::chrono::milliseconds(2000));
        if (c) {
            std::array<std::byte, 2> id{};
            if (c->config_read(0, id)) return static_cast<unsigned>(id[0]) | static_cast<unsigned>(id[1]) << 8;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::nullopt;
}

} // namespace

int main(int argc, char** argv) {
    bool report = false;
    int i = 1;
    if (i < argc && std::string(argv[i]) == "--report") { report = true; ++i; }
    if (i + 1 != argc) {
        std::fprintf(stderr, "usage: %s [--report] SOCKET\n", argv[0]);
        return 2;
    }
    socket_path = argv[i];
    int failures = 0;
    for (const auto& c : cases()) {
        unique_fd s = raw_connect();
        if (!s) {
            std::printf("FAIL: %s: cannot connect (is the server gone?)\n", c.name.c_str());
            return 1;
        }
        if (c.negotiated && !negotiate(s.get())) {
            std::printf("FAIL: %s: VERSION was not accepted\n", c.name.c_str());
            if (!report) return 1;
            ++failures;
            continue;
        }
        const outcome o = c.run(s.get());
        s.reset();
        const bool refused = o.what == outcome::error_reply || o.what == outcome::closed;
        const auto vendor = healthy();
        const std::string after = vendor ? fmt::format("then a new client read vendor {:#06x}", *vendor)
                                         : std::string("then NO client could attach and read config space");
        const bool pass = refused && vendor.has_value();
        std::printf("%s: %s: %s; %s\n", pass ? "ok" : "FAIL", c.name.c_str(), o.text().c_str(), after.c_str());
        std::fflush(stdout);
        if (!pass) {
            ++failures;
            if (!report) return 1;
        }
    }
    std::printf("%s: %d hostile case(s) failed\n", failures ? "FAIL" : "PASS", failures);
    return report ? 0 : (failures ? 1 : 0);
}
