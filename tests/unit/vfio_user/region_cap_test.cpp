// GET_REGION_INFO's fd conventions: the standard one (area i from fds[0] at mmap_offset +
// area offset) and vvu's per-area fds (area i from fds[i] at file offset 0), which the server
// marks with a TYPE capability and the client uses only when marked; the client's bounded walk
// of a hostile capability chain; and DMA_MAP with server_options::require_sealed.
#include "harness.hpp"

#include <vvu/vfio_user/client.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <functional>
#include <map>
#include <thread>
#include <utility>
#include <vector>

using namespace vvu;
using namespace vvu::vfio_user;
using namespace vvu_test;

// The constants against the kernel's uapi.
static_assert(cap_sparse_mmap == VFIO_REGION_INFO_CAP_SPARSE_MMAP);
static_assert(cap_type == VFIO_REGION_INFO_CAP_TYPE);
static_assert(sizeof(type_cap) == sizeof(vfio_region_info_cap_type));
static_assert(offsetof(type_cap, type) == offsetof(vfio_region_info_cap_type, type));
static_assert(offsetof(type_cap, subtype) == offsetof(vfio_region_info_cap_type, subtype));
static_assert(region_type_pci_vendor_type == static_cast<std::uint32_t>(VFIO_REGION_TYPE_PCI_VENDOR_TYPE));
static_assert((vvu_fd_per_area_type & ~static_cast<std::uint32_t>(VFIO_REGION_TYPE_PCI_VENDOR_MASK)) ==
              region_type_pci_vendor_type);
static_assert((vvu_fd_per_area_type & VFIO_REGION_TYPE_PCI_VENDOR_MASK) == 0x1af4); // virtio's vendor id
static_assert(vvu_fd_per_area_subtype == 43);                                       // the VVU device id

namespace {

constexpr std::uint32_t rw = region_flags::read | region_flags::write;

// A device whose regions are whatever the test says (set before the server starts).
class scripted_device final : public device {
public:
    std::map<std::uint32_t, region_info> regions;

    std::uint32_t device_flags() const noexcept override { return device_flags::pci; }
    region_info describe_region(std::uint32_t index) override {
        auto it = regions.find(index);
        return it == regions.end() ? region_info{} : it->second;
    }
    std::vector<io_eventfd> region_io_fds(std::uint32_t) override { return {}; }
    irq_info describe_irq(std::uint32_t) override { return {}; }
    int set_irqs(const irq_set&) override { return EINVAL; }
    int region_read(std::uint32_t, std::uint64_t, std::span<std::byte> out) override {
        std::fill(out.begin(), out.end(), std::byte{0});
        return 0;
    }
    int region_write(std::uint32_t, std::uint64_t, std::span<const std::byte>) override { return 0; }
    int reset() override { return 0; }
    void client_detached() override {}
};

client connect_ok(const std::string& path) {
    auto c = client::connect(path, std::chrono::milliseconds(3000));
    if (!c) FAIL("connect: " << c.error().message());
    return std::move(*c);
}

void put(int fd, std::uint64_t off, std::uint8_t v) {
    const auto b = static_cast<std::byte>(v);
    REQUIRE(::pwrite(fd, &b, 1, static_cast<off_t>(off)) == 1);
}
std::uint8_t get(int fd, std::uint64_t off) {
    std::byte b{};
    REQUIRE(::pread(fd, &b, 1, static_cast<off_t>(off)) == 1);
    return static_cast<std::uint8_t>(b);
}
std::uint8_t at(const pci::window& w, std::size_t i) { return static_cast<std::uint8_t>(w.host[i]); }

unique_fd sealed_memfd(const char* name, std::size_t size) {
    unique_fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
    return fd;
}

// A region info reply put together byte by byte.
struct blob {
    std::vector<std::byte> bytes;
    template <class T>
    void put(std::size_t at, const T& v) {
        if (bytes.size() < at + sizeof(T)) bytes.resize(at + sizeof(T));
        store(std::span(bytes).subspan(at), v);
    }
    // The fixed part; argsz is the blob's final size (call last).
    void head(std::uint32_t index, std::uint32_t flags, std::uint32_t cap_offset, std::uint64_t size,
              std::uint64_t mmap_offset) {
        if (bytes.size() < sizeof(region_info_payload)) bytes.resize(sizeof(region_info_payload));
        put(0, region_info_payload{static_cast<std::uint32_t>(bytes.size()), flags, index, cap_offset, size, mmap_offset});
    }
};

// A vfio-user "server" that is only a script: VERSION, then each GET_REGION_INFO of a
// region in `replies` answered with those bytes and fds (others: an error reply). Runs until
// the client goes away.
class fake_server {
public:
    struct canned {
        std::vector<std::byte> payload;
        std::vector<int> fds;
    };

    explicit fake_server(std::map<std::uint32_t, canned> replies) : replies_(std::move(replies)) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
        mine_.reset(sv[0]);
        theirs_.reset(sv[1]);
        thread_ = std::thread([this] { run(); });
    }
    ~fake_server() {
        ::shutdown(mine_.get(), SHUT_RDWR);
        thread_.join();
    }
    client connect() {
        auto c = client::over(std::move(theirs_), std::chrono::milliseconds(3000));
        if (!c) FAIL("client::over: " << c.error().message());
        return std::move(*c);
    }

private:
    void reply(const header& rq, std::span<const std::byte> payload, std::span<const int> fds, std::uint32_t err = 0) {
        std::array<std::byte, header_size> head{};
        store(head, header{rq.msg_id, rq.cmd, static_cast<std::uint32_t>(header_size + payload.size()),
                           header_flags::type_reply | (err ? header_flags::error : 0), err});
        (void)detail::send_message(mine_.get(), head, payload, fds,
                                   std::chrono::steady_clock::now() + std::chrono::seconds(2));
    }
    void run() {
        for (;;) {
            auto a = receive(mine_.get(), std::chrono::milliseconds(20000));
            if (a.closed) return;
            if (a.h.cmd == static_cast<std::uint16_t>(command::version)) {
                const std::string json = R"({"capabilities":{"max_msg_fds":8}})";
                std::vector<std::byte> p(sizeof(version_payload) + json.size() + 1);
                store(p, version_payload{0, 0});
                std::memcpy(p.data() + sizeof(version_payload), json.data(), json.size());
                reply(a.h, p, {});
            } else if (a.h.cmd == static_cast<std::uint16_t>(command::device_get_region_info) &&
                       a.payload.size() >= sizeof(region_info_payload) &&
                       replies_.count(load<region_info_payload>(a.payload).index)) {
                const auto& c = replies_.at(load<region_info_payload>(a.payload).index);
                reply(a.h, c.payload, c.fds);
            } else {
                reply(a.h, {}, {}, ENOSYS);
            }
        }
    }

    std::map<std::uint32_t, canned> replies_;
    unique_fd mine_, theirs_;
    std::thread thread_;
};

// region_info(index) fails with EPROTO quickly (no hang in the walk) and mentions `needle`.
void expect_bad_reply(client& c, std::uint32_t index, std::string_view needle) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = c.region_info(index);
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == EPROTO);
    INFO(r.error().message());
    CHECK(r.error().message().find(needle) != std::string::npos);
    CHECK(took < std::chrono::seconds(2));
    CHECK_FALSE(c.map_window(index, 0x1000, 0x10));
}

} // namespace

TEST_CASE("vfio-user region fds: one area + one fd without the marking is the standard rule") {
    scripted_device dev;
    // The file holds the region from 0x3000 on (mmap_offset); the one area is [0x1000, +0x2000).
    auto file = make_memfd("std", 0x8000);
    dev.regions[0] = {rw | region_flags::mmap, 0x4000, 0x3000, {{0x1000, 0x2000}}, {file.get()}};
    put(file.get(), 0x3000 + 0x1000 + 0x10, 0xa1);
    put(file.get(), 0x3000 + 0x1000 + 0x1fff, 0xa2);
    put(file.get(), 0x10, 0xd0); // where the per-area rule would look: must not be seen
    server_thread st(dev, "capstd");
    auto c = connect_ok(st.path());

    auto reg = c.region_info(0);
    REQUIRE(reg);
    CHECK_FALSE(reg->fd_per_area);
    CHECK(reg->mmap_offset == 0x3000);
    REQUIRE(reg->areas.size() == 1);
    CHECK(reg->fds.size() == 1);

    auto w = c.map_window(0, 0x1010, 0x10);
    REQUIRE(w);
    CHECK(at(*w, 0) == 0xa1);
    w->host[1] = std::byte{0x5b};
    CHECK(get(file.get(), 0x4011) == 0x5b);
    auto end = c.map_window(0, 0x2fff, 1);
    REQUIRE(end);
    CHECK(at(*end, 0) == 0xa2);
    CHECK_FALSE(c.map_window(0, 0x0, 0x10)); // outside the area
}

TEST_CASE("vfio-user region fds: with the marking, area i is fds[i] from file offset 0") {
    scripted_device dev;
    auto a = make_memfd("area0", 0x1000);
    auto b = make_memfd("area1", 0x2000);
    auto one = make_memfd("single", 0x1000);
    // mmap_offset is not used by the per-area rule: non-zero on purpose.
    dev.regions[4] = {rw | region_flags::mmap, 0x10000, 0x5000, {{0x2000, 0x1000}, {0x8000, 0x2000}},
                      {a.get(), b.get()}, true};
    // The ambiguous shape: one area + one fd, marked.
    dev.regions[1] = {rw | region_flags::mmap, 0x4000, 0x1000, {{0x1000, 0x1000}}, {one.get()}, true};
    put(a.get(), 0x10, 0xb1);
    put(b.get(), 0, 0xb3);
    put(b.get(), 0x1ff0, 0xb2);
    put(one.get(), 0x30, 0xc1);
    server_thread st(dev, "capmark");
    auto c = connect_ok(st.path());

    auto reg = c.region_info(4);
    REQUIRE(reg);
    CHECK(reg->fd_per_area);
    CHECK(reg->areas.size() == 2);
    CHECK(reg->fds.size() == 2);

    auto w0 = c.map_window(4, 0x2010, 8);
    REQUIRE(w0);
    CHECK(at(*w0, 0) == 0xb1);
    auto w1 = c.map_window(4, 0x8000, 1);
    REQUIRE(w1);
    CHECK(at(*w1, 0) == 0xb3);
    auto w2 = c.map_window(4, 0x9ff0, 0x10);
    REQUIRE(w2);
    CHECK(at(*w2, 0) == 0xb2);
    w2->host[1] = std::byte{0x6c};
    CHECK(get(b.get(), 0x1ff1) == 0x6c);
    CHECK_FALSE(c.map_window(4, 0x2ff0, 0x20)); // past area 0

    auto single = c.region_info(1);
    REQUIRE(single);
    CHECK(single->fd_per_area);
    auto ws = c.map_window(1, 0x1030, 1); // the standard rule would be file offset 0x2030: past the file
    REQUIRE(ws);
    CHECK(at(*ws, 0) == 0xc1);
}

TEST_CASE("vfio-user region fds: the server refuses a device's inconsistent description") {
    scripted_device dev;
    auto a = make_memfd("a", 0x1000);
    auto b = make_memfd("b", 0x1000);
    // Marked, one fd for two areas.
    dev.regions[0] = {rw | region_flags::mmap, 0x4000, 0, {{0, 0x1000}, {0x1000, 0x1000}}, {a.get()}, true};
    // Not marked, two fds.
    dev.regions[1] = {rw | region_flags::mmap, 0x4000, 0, {{0, 0x1000}, {0x1000, 0x1000}}, {a.get(), b.get()}};
    // Marked without areas.
    dev.regions[2] = {rw | region_flags::mmap, 0x4000, 0, {}, {a.get()}, true};
    server_thread st(dev, "capbad");
    auto c = connect_ok(st.path());
    for (std::uint32_t i : {0u, 1u, 2u}) {
        auto r = c.region_info(i);
        REQUIRE_FALSE(r);
        CHECK(r.error().code.value() == EIO);
    }
    CHECK(c.connected());
    CHECK(st.log_contains("described it inconsistently"));
}

TEST_CASE("vfio-user region fds: the TYPE capability on the wire, byte by byte") {
    scripted_device dev;
    auto a = make_memfd("a", 0x1000);
    auto b = make_memfd("b", 0x2000);
    dev.regions[4] = {rw | region_flags::mmap, 0x10000, 0x5000, {{0x2000, 0x1000}, {0x8000, 0x2000}},
                      {a.get(), b.get()}, true};
    dev.regions[0] = {rw | region_flags::mmap, 0x4000, 0x3000, {{0x1000, 0x2000}}, {a.get()}};
    server_thread st(dev, "capbytes");
    auto sock = raw_connect(st.path());
    raw_version(sock.get(), R"({"capabilities":{"max_msg_fds":8,"vvu_fd_per_area":1}})");
    constexpr std::uint16_t REGION_INFO = 5;

    SECTION("marked: sparse cap, then the TYPE cap, both inside argsz") {
        REQUIRE(send_raw(sock.get(), message(REGION_INFO, bytes_of(region_info_payload{1024, 0, 4, 0, 0, 0}))));
        auto r = receive(sock.get());
        REQUIRE_FALSE(r.closed);
        REQUIRE_FALSE(r.is_error());
        CHECK(r.fds.size() == 2);
        // clang-format off
        const std::vector<std::uint8_t> want = {
            // struct vfio_region_info: argsz 96, flags R|W|MMAP|CAPS, index 4, cap_offset 32
            0x60, 0, 0, 0,  0x0f, 0, 0, 0,  4, 0, 0, 0,  0x20, 0, 0, 0,
            0, 0, 1, 0, 0, 0, 0, 0,            // size 0x10000
            0, 0x50, 0, 0, 0, 0, 0, 0,         // offset 0x5000
            // at 32: SPARSE_MMAP (id 1, version 1, next 80), nr_areas 2, reserved
            1, 0, 1, 0,  0x50, 0, 0, 0,  2, 0, 0, 0,  0, 0, 0, 0,
            0, 0x20, 0, 0, 0, 0, 0, 0,  0, 0x10, 0, 0, 0, 0, 0, 0, // [0x2000, +0x1000)
            0, 0x80, 0, 0, 0, 0, 0, 0,  0, 0x20, 0, 0, 0, 0, 0, 0, // [0x8000, +0x2000)
            // at 80: TYPE (id 2, version 1, next 0), type 0x80001af4, subtype 0x2b
            2, 0, 1, 0,  0, 0, 0, 0,  0xf4, 0x1a, 0, 0x80,  0x2b, 0, 0, 0,
        };
        // clang-format on
        REQUIRE(r.payload.size() == want.size());
        for (std::size_t i = 0; i < want.size(); ++i) {
            INFO("byte " << i);
            CHECK(static_cast<std::uint8_t>(r.payload[i]) == want[i]);
        }
    }
    SECTION("argsz with room for the sparse cap but not the TYPE cap: no caps, no fds, argsz 96") {
        REQUIRE(send_raw(sock.get(), message(REGION_INFO, bytes_of(region_info_payload{80, 0, 4, 0, 0, 0}))));
        auto r = receive(sock.get());
        REQUIRE_FALSE(r.is_error());
        REQUIRE(r.payload.size() == sizeof(region_info_payload));
        const auto p = load<region_info_payload>(r.payload);
        CHECK(p.argsz == 96);
        CHECK(p.cap_offset == 0);
        CHECK(r.fds.empty());
    }
    SECTION("not marked: the sparse cap ends the chain, no TYPE cap") {
        REQUIRE(send_raw(sock.get(), message(REGION_INFO, bytes_of(region_info_payload{1024, 0, 0, 0, 0, 0}))));
        auto r = receive(sock.get());
        REQUIRE_FALSE(r.is_error());
        REQUIRE(r.payload.size() == 32 + 16 + 16);
        CHECK(load<region_info_payload>(r.payload).argsz == 64);
        const auto cap = load<sparse_mmap_cap>(std::span(r.payload).subspan(32));
        CHECK(cap.header.id == cap_sparse_mmap);
        CHECK(cap.header.next == 0);
        CHECK(cap.nr_areas == 1);
        CHECK(r.fds.size() == 1);
    }
}

TEST_CASE("vfio-user client: the per-area marking needs one fd per area") {
    auto a = make_memfd("a", 0x1000);
    auto b = make_memfd("b", 0x1000);
    auto c3 = make_memfd("c", 0x1000);
    auto big = make_memfd("big", 0x3000);
    put(big.get(), 0x800 + 0x1010, 0xe1); // mmap_offset + the window's offset
    auto two_areas_marked = [] {
        blob r;
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 80}, 2, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.put(64, sparse_mmap_area{0x2000, 0x1000});
        r.put(80, type_cap{{cap_type, 1, 0}, vvu_fd_per_area_type, vvu_fd_per_area_subtype});
        return r;
    };
    std::map<std::uint32_t, fake_server::canned> replies;
    {
        auto r = two_areas_marked(); // one fd for two areas
        r.head(0, rw | region_flags::mmap | region_flags::caps, 32, 0x4000, 0);
        replies[0] = {r.bytes, {a.get()}};
    }
    {
        auto r = two_areas_marked(); // three fds for two areas
        r.head(1, rw | region_flags::mmap | region_flags::caps, 32, 0x4000, 0);
        replies[1] = {r.bytes, {a.get(), b.get(), c3.get()}};
    }
    {
        blob r; // marked, no sparse cap at all
        r.put(32, type_cap{{cap_type, 1, 0}, vvu_fd_per_area_type, vvu_fd_per_area_subtype});
        r.head(2, rw | region_flags::mmap | region_flags::caps, 32, 0x4000, 0);
        replies[2] = {r.bytes, {a.get()}};
    }
    {
        // Another TYPE cap (Intel's vendor type) with one area + one fd: not vvu's marking, so
        // the standard rule — fds[0] at mmap_offset 0x800 + area offset 0x1000.
        blob r;
        r.put(32, type_cap{{cap_type, 1, 48}, region_type_pci_vendor_type | 0x8086, vvu_fd_per_area_subtype});
        r.put(48, sparse_mmap_cap{{cap_sparse_mmap, 1, 0}, 1, 0});
        r.put(64, sparse_mmap_area{0x1000, 0x1000});
        r.head(3, rw | region_flags::mmap | region_flags::caps, 32, 0x2000, 0x800);
        replies[3] = {r.bytes, {big.get()}};
    }

    fake_server fs(std::move(replies));
    auto c = fs.connect();
    expect_bad_reply(c, 0, "marked one fd per area, but 1 fds for 2 areas");
    expect_bad_reply(c, 1, "marked one fd per area, but 3 fds for 2 areas");
    expect_bad_reply(c, 2, "marked one fd per area, but 1 fds for 0 areas");
    CHECK(c.connected()); // a bad description is not a broken stream

    auto other = c.region_info(3);
    REQUIRE(other);
    CHECK_FALSE(other->fd_per_area);
    auto w = c.map_window(3, 0x1010, 4);
    REQUIRE(w);
    CHECK(at(*w, 0) == 0xe1);
}

TEST_CASE("vfio-user client: a hostile capability chain is refused, never walked forever") {
    std::map<std::uint32_t, fake_server::canned> replies;
    auto a = make_memfd("a", 0x4000);
    const std::uint32_t flags = rw | region_flags::mmap | region_flags::caps;
    {
        blob r; // the sparse cap points at itself
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 32}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.head(0, flags, 32, 0x4000, 0);
        replies[0] = {r.bytes, {a.get()}};
    }
    {
        blob r; // sparse -> TYPE -> back to sparse
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 64}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.put(64, type_cap{{cap_type, 1, 32}, vvu_fd_per_area_type, vvu_fd_per_area_subtype});
        r.head(1, flags, 32, 0x4000, 0);
        replies[1] = {r.bytes, {a.get()}};
    }
    {
        blob r; // next far past the reply
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 0x10000}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.head(2, flags, 32, 0x4000, 0);
        replies[2] = {r.bytes, {a.get()}};
    }
    {
        blob r; // next inside the reply, but too close to its end for a cap header
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 60}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.head(3, flags, 32, 0x4000, 0);
        replies[3] = {r.bytes, {a.get()}};
    }
    {
        blob r; // cap_offset past the reply
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 0}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.head(4, flags, 200, 0x4000, 0);
        replies[4] = {r.bytes, {a.get()}};
    }
    {
        blob r; // cap_offset inside the fixed part
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 0}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.head(5, flags, 8, 0x4000, 0);
        replies[5] = {r.bytes, {a.get()}};
    }
    {
        blob r; // a well-formed but endless-looking chain: 100 unknown caps, strictly increasing
        for (std::uint32_t i = 0; i < 100; ++i) {
            const std::uint32_t here = 32 + 8 * i;
            r.put(here, cap_header{0x77, 1, i + 1 < 100 ? here + 8 : 0});
        }
        r.head(6, flags, 32, 0x4000, 0);
        replies[6] = {r.bytes, {a.get()}};
    }
    {
        blob r; // a TYPE cap cut short by the end of the reply
        r.put(32, sparse_mmap_cap{{cap_sparse_mmap, 1, 64}, 1, 0});
        r.put(48, sparse_mmap_area{0x1000, 0x1000});
        r.put(64, cap_header{cap_type, 1, 0});
        r.put(72, std::uint32_t{vvu_fd_per_area_type});
        r.head(7, flags, 32, 0x4000, 0);
        replies[7] = {r.bytes, {a.get()}};
    }

    fake_server fs(std::move(replies));
    auto c = fs.connect();
    for (std::uint32_t i : {0u, 1u, 2u, 3u, 4u, 5u, 6u}) {
        INFO("reply " << i);
        expect_bad_reply(c, i, "bad capability chain");
    }
    expect_bad_reply(c, 7, "short type cap");
    CHECK(c.connected());
}

TEST_CASE("vfio-user server: require_sealed refuses DMA_MAP of an fd that can shrink") {
    auto unsealed = make_memfd("unsealed", 0x2000);
    auto sealed = sealed_memfd("sealed", 0x2000);
    scripted_device dev;

    SECTION("required") {
        server_options o;
        o.require_sealed = true;
        server_thread st(dev, "sealreq", o);
        CHECK(st.srv().options().require_sealed);
        CHECK(st.srv().dma().require_sealed());
        auto c = connect_ok(st.path());
        auto r = c.dma_map(unsealed.get(), 0, 0x10000, 0x1000);
        REQUIRE_FALSE(r);
        CHECK(r.error().code.value() == EINVAL);
        CHECK(st.log_contains("F_SEAL_SHRINK"));
        CHECK(c.connected());
        REQUIRE(c.dma_map(sealed.get(), 0x1000, 0x10000, 0x1000));
        REQUIRE(c.dma_unmap(0x10000, 0x1000));
    }
    SECTION("not required (the default): an unsealed memfd is accepted") {
        server_thread st(dev, "sealopt");
        CHECK_FALSE(st.srv().options().require_sealed);
        auto c = connect_ok(st.path());
        REQUIRE(c.dma_map(unsealed.get(), 0, 0x10000, 0x1000));
        REQUIRE(c.dma_map(sealed.get(), 0, 0x20000, 0x1000));
        CHECK_FALSE(st.log_contains("F_SEAL_SHRINK"));
    }
}

TEST_CASE("vfio-user region fds: a client without vvu_fd_per_area gets the region without areas or fds") {
    scripted_device dev;
    auto a = make_memfd("a", 0x1000);
    auto b = make_memfd("b", 0x2000);
    dev.regions[4] = {rw | region_flags::mmap | region_flags::caps, 0x10000, 0x5000, {{0x2000, 0x1000}, {0x8000, 0x2000}},
                      {a.get(), b.get()}, true};
    server_thread st(dev, "capplain");
    auto sock = raw_connect(st.path());
    raw_version(sock.get()); // as QEMU's client: no vvu capability
    constexpr std::uint16_t REGION_INFO = 5;
    REQUIRE(send_raw(sock.get(), message(REGION_INFO, bytes_of(region_info_payload{1024, 0, 4, 0, 0, 0}))));
    auto r = receive(sock.get());
    REQUIRE_FALSE(r.closed);
    REQUIRE_FALSE(r.is_error());
    CHECK(r.fds.empty());
    REQUIRE(r.payload.size() == sizeof(region_info_payload));
    const auto p = load<region_info_payload>(r.payload);
    CHECK(p.argsz == sizeof(region_info_payload));
    CHECK(p.flags == rw); // no MMAP, no CAPS: REGION_READ/WRITE reach it
    CHECK(p.cap_offset == 0);
    CHECK(p.size == 0x10000);
}
