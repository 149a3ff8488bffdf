// device::blk::blk_device, request by request: chains of any shape built by a driver ring over
// test memory, served by the device over an image in a memfd. Hostile requests must end with
// an error status (or length 0 when there is no status byte) and leave every image byte
// outside the ranges written unchanged.
#include "../ring/harness.hpp"

#include <vvu/device/blk_device.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <cstring>
#include <vector>

namespace {

using namespace vvu;
using namespace vvu::device::blk;
using ringtest::guest;

constexpr std::uint64_t image_bytes = 1 << 20; // 2048 sectors

// A memfd image holding a known pattern, and the same pattern in `expected` to compare with.
struct test_image {
    int fd = -1;
    std::vector<std::byte> expected = std::vector<std::byte>(image_bytes);
    test_image() {
        fd = ::memfd_create("vvu-blk-test", MFD_CLOEXEC);
        REQUIRE(fd >= 0);
        for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = std::byte(static_cast<std::uint8_t>(i * 7 + (i >> 9)));
        REQUIRE(::pwrite(fd, expected.data(), expected.size(), 0) == static_cast<ssize_t>(expected.size()));
    }
    image open(bool read_only = false) const {
        auto img = image::adopt(unique_fd(::dup(fd)), read_only);
        REQUIRE(img);
        return std::move(*img);
    }
    std::vector<std::byte> contents() const {
        std::vector<std::byte> b(image_bytes);
        REQUIRE(::pread(fd, b.data(), b.size(), 0) == static_cast<ssize_t>(b.size()));
        return b;
    }
    ~test_image() { ::close(fd); }
};

// A driver ring and a device ring over one test memory: add() puts a chain of the given shape
// (bytes for the readable part, sizes of the writable part), serve() lets the device take and
// complete it.
struct bench {
    guest g{4 << 20};
    ring::split_config cfg = ringtest::place_split(g, 256);
    ring::split_driver<ring::local_memory> drv = *ring::split_driver<ring::local_memory>::create(g.mem(), cfg);
    ring::split_device<ring::local_memory> dev = *ring::split_device<ring::local_memory>::create(g.mem(), cfg);
    std::vector<std::uint64_t> writable_at; // guest addresses of the last chain's writable buffers
    std::vector<std::uint32_t> writable_len;

    void add(const std::vector<std::vector<std::byte>>& readable, const std::vector<std::uint32_t>& writable) {
        std::vector<ring::buffer> r, w;
        for (const auto& b : readable) {
            const auto a = g.alloc(std::max<std::size_t>(b.size(), 1));
            std::memcpy(g.at(a), b.data(), b.size());
            r.push_back({a, static_cast<std::uint32_t>(b.size())});
        }
        writable_at.clear();
        writable_len = writable;
        for (auto n : writable) {
            const auto a = g.alloc(std::max<std::uint32_t>(n, 1));
            std::memset(g.at(a), 0xEE, n);
            w.push_back({a, n});
            writable_at.push_back(a);
        }
        REQUIRE(drv.add(r, w, 1));
    }
    // The device serves the chain; returns the used length.
    std::uint32_t serve(blk_device& d) {
        ring::chain c;
        REQUIRE(dev.pop(c));
        const auto len = d.serve(c);
        REQUIRE(dev.push(c.id(), len));
        ring::used_buffer u;
        REQUIRE(drv.reap(u));
        CHECK(u.len == len);
        return len;
    }
    // The writable part's bytes, in order.
    std::vector<std::byte> written() {
        std::vector<std::byte> out;
        for (std::size_t i = 0; i < writable_at.size(); ++i)
            out.insert(out.end(), g.at(writable_at[i]), g.at(writable_at[i]) + writable_len[i]);
        return out;
    }
    std::uint8_t status_byte() { return static_cast<std::uint8_t>(written().back()); }
};

std::vector<std::byte> header(request_type t, std::uint64_t sector) {
    std::vector<std::byte> h(header_size);
    store_header({static_cast<std::uint32_t>(t), 0, sector}, h.data());
    return h;
}
std::vector<std::byte> pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::byte> b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<std::uint8_t>(seed + i * 13));
    return b;
}
std::vector<std::byte> range(std::uint64_t sector, std::uint32_t sectors, std::uint32_t flags) {
    std::vector<std::byte> r(range_size);
    le::store(r.data(), sector);
    le::store(r.data() + 8, sectors);
    le::store(r.data() + 12, flags);
    return r;
}
constexpr auto ok = static_cast<std::uint8_t>(status::ok);
constexpr auto ioerr = static_cast<std::uint8_t>(status::ioerr);
constexpr auto unsupp = static_cast<std::uint8_t>(status::unsupp);

} // namespace

TEST_CASE("blk_device: writes and reads whole sectors, whatever the chain's shape", "[device][blk]") {
    test_image ti;
    blk_device d(ti.open(), {});
    bench b;
    // Header split over two descriptors, data over three of odd sizes, status alone.
    auto data = pattern(4096, 3);
    auto h = header(request_type::out, 8);
    b.add({{h.begin(), h.begin() + 5}, {h.begin() + 5, h.end()}, {data.begin(), data.begin() + 1000},
           {data.begin() + 1000, data.begin() + 1001}, {data.begin() + 1001, data.end()}},
          {1});
    CHECK(b.serve(d) == 1);
    CHECK(b.status_byte() == ok);
    std::memcpy(ti.expected.data() + 8 * 512, data.data(), data.size());
    CHECK(ti.contents() == ti.expected);

    // Read back into two buffers, the status byte sharing the second one.
    b.add({header(request_type::in, 8)}, {3000, 1097});
    CHECK(b.serve(d) == 4097);
    auto got = b.written();
    CHECK(got.back() == std::byte{ok});
    got.pop_back();
    CHECK(got == data);
    const auto s = d.stats();
    CHECK(s.written_bytes == 4096);
    CHECK(s.read_bytes == 4096);
    CHECK(s.io_errors == 0);
}

TEST_CASE("blk_device: flush, GET_ID, write-zeroes, discard", "[device][blk]") {
    test_image ti;
    blk_device::options o;
    o.serial = "a-serial-longer-than-twenty-bytes";
    blk_device d(ti.open(), o);
    bench b;
    b.add({header(request_type::flush, 0)}, {1});
    CHECK(b.serve(d) == 1);
    CHECK(b.status_byte() == ok);

    b.add({header(request_type::get_id, 0)}, {id_bytes, 1});
    CHECK(b.serve(d) == id_bytes + 1);
    auto id = b.written();
    CHECK(std::string(reinterpret_cast<const char*>(id.data()), id_bytes) == o.serial.substr(0, id_bytes));

    b.add({header(request_type::write_zeroes, 0), range(100, 3, 0)}, {1});
    CHECK(b.serve(d) == 1);
    CHECK(b.status_byte() == ok);
    std::fill_n(ti.expected.begin() + 100 * 512, 3 * 512, std::byte{0});
    b.add({header(request_type::write_zeroes, 0), range(200, 1, range_flag_unmap)}, {1});
    CHECK(b.serve(d) == 1);
    CHECK(b.status_byte() == ok);
    std::fill_n(ti.expected.begin() + 200 * 512, 512, std::byte{0});
    CHECK(ti.contents() == ti.expected);

    // A discarded range's contents are unspecified; the status says it was done.
    b.add({header(request_type::discard, 0), range(400, 8, 0)}, {1});
    CHECK(b.serve(d) == 1);
    CHECK(b.status_byte() == ok);
}

TEST_CASE("blk_device: hostile requests get an error status and touch no byte of the image", "[device][blk]") {
    test_image ti;
    blk_device d(ti.open(), {});
    bench b;
    const auto capacity = image_bytes / 512;
    const auto data = pattern(1024, 9);
    struct hostile {
        const char* what;
        std::vector<std::vector<std::byte>> readable;
        std::vector<std::uint32_t> writable;
        std::uint8_t want;
    };
    const std::vector<hostile> cases = {
        {"write past the end", {header(request_type::out, capacity - 1), data}, {1}, ioerr},
        {"write at the last sector + 1", {header(request_type::out, capacity), {data.begin(), data.begin() + 512}}, {1}, ioerr},
        {"write at a sector whose byte offset overflows", {header(request_type::out, ~0ULL / 256), data}, {1}, ioerr},
        {"read past the end", {header(request_type::in, capacity - 1)}, {1024, 1}, ioerr},
        {"write of a partial sector", {header(request_type::out, 0), {data.begin(), data.begin() + 100}}, {1}, ioerr},
        {"read of a partial sector", {header(request_type::in, 0)}, {100, 1}, ioerr},
        {"write whose data is device-writable", {header(request_type::out, 0)}, {512, 1}, ioerr},
        {"read whose data is device-readable", {header(request_type::in, 0), data}, {1}, ioerr},
        {"header shorter than 16 bytes", {{data.begin(), data.begin() + 8}}, {1}, ioerr},
        {"no header at all", {}, {512, 1}, ioerr},
        {"unknown request type", {header(static_cast<request_type>(99), 0)}, {1}, unsupp},
        {"discard with the unmap flag", {header(request_type::discard, 0), range(0, 1, range_flag_unmap)}, {1}, unsupp},
        {"write-zeroes with an unknown flag", {header(request_type::write_zeroes, 0), range(0, 1, 2)}, {1}, unsupp},
        {"discard past the end", {header(request_type::discard, 0), range(capacity - 1, 2, 0)}, {1}, ioerr},
        {"write-zeroes of an overflowing range", {header(request_type::write_zeroes, 0), range(~0ULL, 8, 0)}, {1}, ioerr},
        {"discard with a partial range", {header(request_type::discard, 0), {data.begin(), data.begin() + 10}}, {1}, ioerr},
        {"discard with two ranges (max 1)", {header(request_type::discard, 0), range(0, 1, 0), range(8, 1, 0)}, {1}, ioerr},
        {"flush carrying data", {header(request_type::flush, 0), data}, {1}, ioerr},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        b.add(c.readable, c.writable);
        b.serve(d);
        CHECK(b.status_byte() == c.want);
    }
    // No status byte: nothing can be said; completed with length 0 and counted.
    b.add({header(request_type::out, 0), data}, {});
    CHECK(b.serve(d) == 0);
    b.add({header(request_type::in, 0)}, {});
    CHECK(b.serve(d) == 0);
    const auto s = d.stats();
    CHECK(s.no_status == 2);
    CHECK(s.requests == cases.size() + 2);
    CHECK(s.written_bytes == 0);
    CHECK(ti.contents() == ti.expected);
}

TEST_CASE("blk_device: a read-only image refuses writes, discards and write-zeroes", "[device][blk]") {
    test_image ti;
    blk_device d(ti.open(true), {});
    CHECK((d.features() & feature::ro) != 0);
    CHECK((d.features() & (feature::discard | feature::write_zeroes)) == 0);
    bench b;
    b.add({header(request_type::out, 0), pattern(512, 1)}, {1});
    b.serve(d);
    CHECK(b.status_byte() == ioerr);
    b.add({header(request_type::write_zeroes, 0), range(0, 1, 0)}, {1});
    b.serve(d);
    CHECK(b.status_byte() == ioerr);
    b.add({header(request_type::in, 0)}, {512, 1});
    CHECK(b.serve(d) == 513);
    CHECK(b.status_byte() == ok);
    CHECK(ti.contents() == ti.expected);
}

TEST_CASE("blk_device: the config space says capacity, queues and limits", "[device][blk]") {
    test_image ti;
    blk_device::options o;
    o.queues = 4;
    blk_device d(ti.open(), o);
    CHECK(d.vring_count() == 4);
    CHECK((d.features() & feature::mq) != 0);
    std::array<std::uint8_t, 60> cfg{};
    REQUIRE(d.read_config(0, cfg));
    const auto parsed = config::parse(cfg);
    REQUIRE(parsed);
    CHECK(parsed->capacity == image_bytes / 512);
    CHECK(parsed->num_queues == 4);
    CHECK(parsed->blk_size == 512);
    CHECK(parsed->size_max == 1u << 20);
    CHECK(parsed->seg_max == 126);
    CHECK(le::load<std::uint32_t>(reinterpret_cast<const std::byte*>(cfg.data()) + config_offset::max_discard_seg) == 1);
    std::array<std::uint8_t, 8> tail{};
    CHECK(d.read_config(248, tail));
    CHECK_FALSE(d.read_config(249, tail)); // past the 256 bytes vhost-user carries
    CHECK_FALSE(d.read_config(~0u, tail));
    CHECK_FALSE(d.write_config(32, std::span<const std::uint8_t>(tail).first(1)));
}
