// Hostile clients against vfio_user::server, raw bytes on a real socket: each malformed message
// gets an error reply (the connection goes on) or the connection is closed; no fd leaks; and a
// new, well-formed client can attach afterwards and read config space.
#include "harness.hpp"

#include <vvu/vfio_user/client.hpp>

#include <catch2/catch.hpp>

#include <sys/eventfd.h>
#include <sys/socket.h>

#include <functional>

using namespace vvu;
using namespace vvu::vfio_user;
using namespace vvu_test;

namespace {

constexpr std::uint16_t VERSION = 1, DMA_MAP = 2, DMA_UNMAP = 3, GET_INFO = 4, REGION_INFO = 5, IO_FDS = 6,
                        IRQ_INFO = 7, SET_IRQS = 8, READ = 9, WRITE = 10, RESET = 13;

std::vector<std::byte> zeros(std::size_t n) { return std::vector<std::byte>(n); }

// An error reply with `want` (0: any errno) for message `id`, connection still open.
void expect_error(int sock, int want, std::uint16_t id = 7) {
    auto a = receive(sock);
    REQUIRE_FALSE(a.closed);
    CHECK(a.is_error());
    CHECK((a.h.flags & header_flags::type_mask) == header_flags::type_reply);
    CHECK(a.h.msg_id == id);
    CHECK(a.h.msg_size == header_size); // "If an error occurs, the reply message must only include the reply header."
    CHECK(a.payload.empty());
    CHECK(a.fds.empty());
    if (want) CHECK(a.h.error_no == static_cast<std::uint32_t>(want));
}

// The server dropped us: maybe an error reply first, then end of stream.
void expect_dropped(int sock) {
    auto a = receive(sock);
    if (!a.closed) {
        CHECK(a.is_error());
        a = receive(sock);
    }
    CHECK(a.closed);
}

void expect_ok(int sock, std::uint16_t id = 7) {
    auto a = receive(sock);
    REQUIRE_FALSE(a.closed);
    CHECK_FALSE(a.is_error());
    CHECK(a.h.msg_id == id);
}

std::vector<std::byte> dma_map_msg(std::uint64_t iova, std::uint64_t size, std::uint64_t off = 0) {
    return message(DMA_MAP, bytes_of(dma_map_payload{32, dma_flags::read | dma_flags::write, off, iova, size}));
}
std::vector<std::byte> read_msg(std::uint32_t region, std::uint64_t off, std::uint32_t count) {
    return message(READ, bytes_of(region_access_payload{off, region, count}));
}

// Runs one hostile exchange on a fresh connection, then checks: no fd leaked, and a new client
// attaches and reads the vendor id from config space.
void hostile(server_thread& st, const char* name, bool negotiate, const std::function<void(int)>& body) {
    INFO("hostile case: " << name);
    const int before = count_open_fds();
    {
        auto sock = raw_connect(st.path());
        if (negotiate) raw_version(sock.get());
        body(sock.get());
    }
    auto c = client::connect(st.path(), std::chrono::milliseconds(3000));
    REQUIRE(c);
    std::array<std::byte, 2> vendor{};
    REQUIRE(c->config_read(0, vendor));
    CHECK(vendor[0] == std::byte{0x36});
    CHECK(vendor[1] == std::byte{0x1b});
    { auto gone = std::move(*c); }
    CHECK(settle_fds(before) == before);
}

} // namespace

TEST_CASE("vfio-user hostile: framing") {
    register_device dev;
    server_thread st(dev, "frame");
    hostile(st, "short header then EOF", true, [](int s) {
        send_raw(s, zeros(10));
        ::shutdown(s, SHUT_WR);
        expect_dropped(s);
    });
    hostile(st, "stalls mid-header", true, [](int s) {
        send_raw(s, zeros(10));
        expect_dropped(s); // the server's io_timeout (500 ms here) ends it
    });
    hostile(st, "stalls mid-payload", true, [](int s) {
        auto m = message(WRITE, bytes_of(region_access_payload{0, 7, 100}, 100));
        m.resize(40);
        send_raw(s, m);
        expect_dropped(s);
    });
    hostile(st, "msg_size smaller than the header", true, [](int s) {
        send_raw(s, message(GET_INFO, {}, 7, 0, 8));
        expect_dropped(s);
    });
    hostile(st, "msg_size over the cap", true, [](int s) {
        send_raw(s, message(WRITE, bytes_of(region_access_payload{0, 7, 4}, 4), 7, 0, 0x7fff'ffff));
        expect_dropped(s);
    });
    hostile(st, "unknown commands", true, [](int s) {
        for (std::uint16_t cmd : {0, 14, 15, 16, 99, 0xffff}) {
            send_raw(s, message(cmd, zeros(8)));
            expect_error(s, ENOSYS);
        }
        send_raw(s, message(11, zeros(16))); // DMA_READ goes server -> client
        expect_error(s, EINVAL);
    });
    hostile(st, "reply-type and odd-flag messages", true, [](int s) {
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 7, header_flags::type_reply));
        expect_error(s, EINVAL);
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 7, 5));
        expect_error(s, EINVAL);
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 7, header_flags::error));
        expect_error(s, EINVAL);
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 8));
        expect_ok(s, 8);
    });
    hostile(st, "NO_REPLY is honoured", true, [](int s) {
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 1, header_flags::no_reply));
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{}), 2));
        expect_ok(s, 2);
    });
}

TEST_CASE("vfio-user hostile: VERSION") {
    register_device dev;
    server_thread st(dev, "version");
    auto version = [](std::uint16_t major, std::uint16_t minor, std::string json, bool nul = true) {
        std::vector<std::byte> p(4 + json.size() + (nul ? 1 : 0));
        store(p, version_payload{major, minor});
        std::memcpy(p.data() + 4, json.data(), json.size());
        return message(VERSION, p);
    };
    hostile(st, "wrong major", false, [&](int s) {
        send_raw(s, version(1, 0, "{}"));
        expect_dropped(s);
    });
    hostile(st, "not first", false, [](int s) {
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{})));
        expect_dropped(s);
    });
    hostile(st, "garbage JSON", false, [&](int s) {
        send_raw(s, version(0, 0, "{\"capabilities\":{\"max_msg_fds\":"));
        expect_dropped(s);
    });
    hostile(st, "JSON without NUL", false, [&](int s) {
        send_raw(s, version(0, 0, "{}", false));
        expect_dropped(s);
    });
    hostile(st, "payload too short", false, [](int s) {
        send_raw(s, message(VERSION, zeros(2)));
        expect_dropped(s);
    });
    hostile(st, "VERSION with an fd", false, [&](int s) {
        auto m = make_memfd("x", 16);
        const int fd = m.get();
        send_raw(s, version(0, 0, "{}"), std::span(&fd, 1));
        expect_dropped(s);
    });
    hostile(st, "a second VERSION", true, [&](int s) {
        send_raw(s, version(0, 0, "{}"));
        expect_error(s, EINVAL);
    });
    hostile(st, "newer minor is answered with ours", false, [&](int s) {
        send_raw(s, version(0, 9, "", false)); // no capabilities at all: the defaults
        auto a = receive(s);
        REQUIRE_FALSE(a.closed);
        REQUIRE_FALSE(a.is_error());
        REQUIRE(a.payload.size() > 4);
        CHECK(load<version_payload>(a.payload).minor == version_minor);
        CHECK(parse_capabilities(std::span<const std::byte>(a.payload).subspan(4)).has_value());
    });
}

TEST_CASE("vfio-user hostile: sizes and argsz per command") {
    register_device dev;
    server_thread st(dev, "sizes");
    hostile(st, "payload size mismatch for each command", true, [](int s) {
        auto memfd = make_memfd("x", 0x1000);
        const int fd = memfd.get();
        send_raw(s, message(DMA_MAP, zeros(31)), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, message(DMA_UNMAP, zeros(23)));
        expect_error(s, EINVAL);
        send_raw(s, message(GET_INFO, zeros(12)));
        expect_error(s, EINVAL);
        send_raw(s, message(REGION_INFO, zeros(28)));
        expect_error(s, EINVAL);
        send_raw(s, message(IO_FDS, zeros(20)));
        expect_error(s, EINVAL);
        send_raw(s, message(IRQ_INFO, zeros(8)));
        expect_error(s, EINVAL);
        send_raw(s, message(SET_IRQS, zeros(19)));
        expect_error(s, EINVAL);
        send_raw(s, message(READ, zeros(20)));
        expect_error(s, EINVAL);
        send_raw(s, message(WRITE, bytes_of(region_access_payload{0, 7, 4}, 3)));
        expect_error(s, EINVAL);
        send_raw(s, message(WRITE, zeros(8)));
        expect_error(s, EINVAL);
        send_raw(s, message(RESET, zeros(4)));
        expect_error(s, EINVAL);
    });
    hostile(st, "argsz too small", true, [](int s) {
        send_raw(s, message(GET_INFO, bytes_of(device_info_payload{15, 0, 0, 0})));
        expect_error(s, EINVAL);
        send_raw(s, message(REGION_INFO, bytes_of(region_info_payload{31, 0, 7, 0, 0, 0})));
        expect_error(s, EINVAL);
        send_raw(s, message(IRQ_INFO, bytes_of(irq_info_payload{0, 0, 0, 0})));
        expect_error(s, EINVAL);
        send_raw(s, message(IO_FDS, bytes_of(region_io_fds_payload{8, 0, 2, 0})));
        expect_error(s, EINVAL);
        send_raw(s, message(IO_FDS, bytes_of(region_io_fds_payload{16, 1, 2, 0}))); // flags must be 0
        expect_error(s, EINVAL);
    });
    hostile(st, "argsz smaller than the full reply: needed argsz, no caps, no fds", true, [](int s) {
        send_raw(s, message(REGION_INFO, bytes_of(region_info_payload{32, 0, 0, 0, 0, 0})));
        auto a = receive(s);
        REQUIRE_FALSE(a.closed);
        REQUIRE_FALSE(a.is_error());
        REQUIRE(a.payload.size() == 32);
        const auto r = load<region_info_payload>(a.payload);
        CHECK(r.argsz == 32 + 16 + 2 * 16);
        CHECK(r.cap_offset == 0);
        CHECK(a.fds.empty());
        send_raw(s, message(IO_FDS, bytes_of(region_io_fds_payload{16, 0, 2, 0})));
        a = receive(s);
        REQUIRE_FALSE(a.is_error());
        REQUIRE(a.payload.size() == 16);
        CHECK(load<region_io_fds_payload>(a.payload).argsz == 16 + 40);
        CHECK(load<region_io_fds_payload>(a.payload).count == 1);
        CHECK(a.fds.empty());
        // And with room: the cap chain and the fd (received here, closed with `a`).
        send_raw(s, message(REGION_INFO, bytes_of(region_info_payload{80, 0, 0, 0, 0, 0})));
        a = receive(s);
        REQUIRE(a.payload.size() == 80);
        CHECK(load<region_info_payload>(a.payload).cap_offset == 32);
        CHECK(a.fds.size() == 1);
    });
}

TEST_CASE("vfio-user hostile: regions") {
    register_device dev;
    server_thread st(dev, "regions");
    hostile(st, "bad region index", true, [](int s) {
        send_raw(s, read_msg(9, 0, 4));
        expect_error(s, EINVAL);
        send_raw(s, message(REGION_INFO, bytes_of(region_info_payload{32, 0, 100, 0, 0, 0})));
        expect_error(s, EINVAL);
        send_raw(s, message(IO_FDS, bytes_of(region_io_fds_payload{16, 0, 0xffff'ffff, 0})));
        expect_error(s, EINVAL);
    });
    hostile(st, "offset out of range", true, [](int s) {
        send_raw(s, read_msg(7, 256, 1));
        expect_error(s, EINVAL);
        send_raw(s, read_msg(7, 253, 4));
        expect_error(s, EINVAL);
        send_raw(s, message(WRITE, bytes_of(region_access_payload{0x100, 2, 1}, 1)));
        expect_error(s, EINVAL);
        send_raw(s, read_msg(6, 0, 1)); // the ROM: size 0, not readable
        expect_error(s, EINVAL);
        send_raw(s, read_msg(7, 252, 4)); // the last dword is fine
        expect_ok(s);
    });
    hostile(st, "offset + count wraps", true, [](int s) {
        send_raw(s, read_msg(7, ~std::uint64_t{0} - 0xf, 0x20));
        expect_error(s, EINVAL);
        send_raw(s, message(WRITE, bytes_of(region_access_payload{~std::uint64_t{0}, 7, 2}, 2)));
        expect_error(s, EINVAL);
    });
    hostile(st, "count over max_data_xfer_size or zero", true, [](int s) {
        send_raw(s, read_msg(0, 0, (1u << 20) + 1));
        expect_error(s, EINVAL);
        send_raw(s, read_msg(7, 0, 0));
        expect_error(s, EINVAL);
    });
    hostile(st, "surplus fds on REGION_READ (closed by the server)", true, [](int s) {
        auto a = make_memfd("a", 16);
        unique_fd b(::eventfd(0, EFD_CLOEXEC));
        const int fds[2] = {a.get(), b.get()};
        send_raw(s, read_msg(7, 0, 4), fds);
        expect_error(s, EINVAL);
    });
    hostile(st, "too many fds", true, [](int s) {
        std::vector<unique_fd> many;
        std::vector<int> raw;
        for (int i = 0; i < 40; ++i) {
            many.emplace_back(::eventfd(0, EFD_CLOEXEC));
            raw.push_back(many.back().get());
        }
        send_raw(s, message(SET_IRQS, bytes_of(irq_set_payload{20, irq_set_flags::data_eventfd |
                                                                        irq_set_flags::action_trigger, 2, 0, 40})),
                 raw);
        expect_error(s, EINVAL);
    });
}

TEST_CASE("vfio-user hostile: DMA") {
    register_device dev;
    server_thread st(dev, "dma");
    hostile(st, "DMA_MAP without an fd: recorded (in-band only), occupies its range, unmaps", true, [&](int s) {
        send_raw(s, dma_map_msg(0x10000, 0x1000));
        expect_ok(s);
        auto m = make_memfd("m", 0x1000);
        const int fd = m.get();
        send_raw(s, dma_map_msg(0x10000, 0x1000), std::span(&fd, 1));
        expect_error(s, EEXIST);
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x10000, 0x1000})));
        REQUIRE_FALSE(receive(s).is_error());
    });
    hostile(st, "DMA_MAP with two fds", true, [](int s) {
        auto a = make_memfd("a", 0x1000), b = make_memfd("b", 0x1000);
        const int fds[2] = {a.get(), b.get()};
        send_raw(s, dma_map_msg(0x10000, 0x1000), fds);
        expect_error(s, EINVAL);
    });
    hostile(st, "DMA region wrapping 2^64, empty, or past the file", true, [](int s) {
        auto m = make_memfd("m", 0x2000);
        const int fd = m.get();
        send_raw(s, dma_map_msg(~std::uint64_t{0} - 0xfff + 0x800, 0x1000), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, dma_map_msg(0x10000, 0), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, dma_map_msg(0x10000, 0x3000), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, dma_map_msg(0x10000, 0x1000, ~std::uint64_t{0} - 0x10), std::span(&fd, 1));
        expect_error(s, EINVAL);
    });
    hostile(st, "overlapping DMA map", true, [](int s) {
        auto m = make_memfd("m", 0x2000);
        const int fd = m.get();
        send_raw(s, dma_map_msg(0x10000, 0x2000), std::span(&fd, 1));
        expect_ok(s);
        send_raw(s, dma_map_msg(0x11000, 0x1000), std::span(&fd, 1));
        expect_error(s, EEXIST);
    });
    hostile(st, "unmap cutting a map, or of nothing", true, [](int s) {
        auto m = make_memfd("m", 0x2000);
        const int fd = m.get();
        send_raw(s, dma_map_msg(0x10000, 0x2000), std::span(&fd, 1));
        expect_ok(s);
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x10000, 0x1000})));
        expect_error(s, EINVAL);
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x11000, 0x1000})));
        expect_error(s, EINVAL);
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x20000, ~std::uint64_t{0} - 0xffff})));
        expect_error(s, EINVAL); // wraps past 2^64
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x20000, 0x1000})));
        REQUIRE_FALSE(receive(s).is_error()); // nothing mapped there: done
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 2, 0x10000, 0x2000}))); // UNMAP_ALL flag
        expect_error(s, EINVAL);
        send_raw(s, message(DMA_UNMAP, bytes_of(dma_unmap_payload{24, 0, 0x10000, 0x2000})));
        auto a = receive(s);
        REQUIRE_FALSE(a.is_error());
        REQUIRE(a.payload.size() == 24); // the original entry comes back
        CHECK(load<dma_unmap_payload>(a.payload).addr == 0x10000);
    });
    hostile(st, "device refuses a map: undone", true, [&](int s) {
        dev.refuse_dma = true;
        auto m = make_memfd("m", 0x1000);
        const int fd = m.get();
        send_raw(s, dma_map_msg(0x10000, 0x1000), std::span(&fd, 1));
        expect_error(s, EPERM);
        dev.refuse_dma = false;
        send_raw(s, dma_map_msg(0x10000, 0x1000), std::span(&fd, 1));
        expect_ok(s); // nothing was left behind
    });
}

TEST_CASE("vfio-user hostile: irqs") {
    register_device dev;
    server_thread st(dev, "irqs");
    constexpr std::uint32_t efd_trigger = irq_set_flags::data_eventfd | irq_set_flags::action_trigger;
    hostile(st, "irq start + count beyond count", true, [](int s) {
        unique_fd e(::eventfd(0, EFD_CLOEXEC));
        const int fd = e.get();
        send_raw(s, message(SET_IRQS, bytes_of(irq_set_payload{20, efd_trigger, 2, 4, 1})), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, message(SET_IRQS, bytes_of(irq_set_payload{20, efd_trigger, 2, 0xffff'ffff, 2})));
        expect_error(s, EINVAL);
        send_raw(s, message(SET_IRQS, bytes_of(irq_set_payload{20, efd_trigger, 5, 0, 1})), std::span(&fd, 1));
        expect_error(s, EINVAL);
        send_raw(s, message(IRQ_INFO, bytes_of(irq_info_payload{16, 0, 5, 0})));
        expect_error(s, EINVAL);
    });
    hostile(st, "irq flags and data", true, [](int s) {
        unique_fd e(::eventfd(0, EFD_CLOEXEC));
        const int fd = e.get();
        auto set = [&](std::uint32_t flags, std::uint32_t start, std::uint32_t count, std::size_t extra = 0) {
            return message(SET_IRQS, bytes_of(irq_set_payload{static_cast<std::uint32_t>(20 + extra), flags, 2, start,
                                                              count}, extra));
        };
        send_raw(s, set(irq_set_flags::data_eventfd | irq_set_flags::data_bool | irq_set_flags::action_trigger, 0, 1));
        expect_error(s, EINVAL); // two DATA flags
        send_raw(s, set(irq_set_flags::data_none, 0, 1));
        expect_error(s, EINVAL); // no ACTION
        send_raw(s, set(efd_trigger | (1u << 9), 0, 1), std::span(&fd, 1));
        expect_error(s, EINVAL); // unknown flag
        send_raw(s, set(efd_trigger, 0, 2), std::span(&fd, 1));
        expect_error(s, EINVAL); // 1 fd for 2 vectors
        send_raw(s, set(irq_set_flags::data_bool | irq_set_flags::action_trigger, 0, 2, 1));
        expect_error(s, EINVAL); // 1 bool for 2 vectors
        send_raw(s, set(irq_set_flags::data_none | irq_set_flags::action_trigger, 1, 0));
        expect_error(s, EINVAL); // count 0 with start 1
        send_raw(s, set(irq_set_flags::data_none | irq_set_flags::action_mask, 0, 0));
        expect_error(s, EINVAL); // count 0 needs TRIGGER
        auto memfd = make_memfd("notevent", 8);
        const int not_eventfd = memfd.get();
        send_raw(s, set(efd_trigger, 0, 1), std::span(&not_eventfd, 1));
        expect_error(s, EINVAL); // not an eventfd
        send_raw(s, set(efd_trigger, 0, 1), std::span(&fd, 1));
        expect_ok(s);
        send_raw(s, set(efd_trigger, 0, 1)); // no fds: de-assign
        expect_ok(s);
    });
}
