// vvu-blk: a vhost-user front-end for virtio-blk back-ends (qemu-storage-daemon, …): device
// info, reads, writes, a whole-disk write/read-back check and a random-I/O load. A thin main
// over device::blk::blk_driver.
#include "../common/command_line.hpp"

#include <vvu/device/blk_driver.hpp>

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace vvu;
using clock_type = std::chrono::steady_clock;

constexpr const char* usage_text = R"(usage: vvu-blk (--connect PATH | --listen PATH) [options] COMMAND [command options]

A vhost-user front-end (virtio-blk driver) for any vhost-user-blk back-end, e.g.
  qemu-storage-daemon --blockdev driver=file,node-name=f,filename=disk.img \
    --blockdev driver=raw,node-name=d,file=f \
    --export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=SOCK,writable=on

Commands (each prints one JSON object on stdout):
  info                          capacity (GET_CONFIG, 512-byte sectors), block size, features,
                                device id
  read --sector N --count N [--out FILE]
                                read N sectors (to FILE, else only a checksum is printed)
  write --sector N --in FILE    write FILE (a multiple of 512 bytes) from sector N on
  flush                         VIRTIO_BLK_T_FLUSH
  verify [--seed N] [--pattern-out FILE]
                                write a pseudo-random pattern (mt19937_64 seeded with N; a
                                random seed is chosen and printed when none is given) over the
                                whole disk, flush, read it all back and compare; --pattern-out
                                writes the expected disk image to FILE (cmp it with the image)
  randio --rw read|write [--block BYTES] [--seconds S | --requests N] [--seed N]
                                random requests of BYTES (default 4096, a multiple of 512) at
                                block-aligned offsets drawn uniformly over the whole disk
                                (mt19937_64, seed default 1), --depth of them in flight, for S
                                seconds (default 5) or N requests; prints IOPS and the latency
                                from submission to completion (p50, p99, max, in µs). Writes
                                overwrite the disk with pseudo-random bytes.

Options:
  --connect PATH     connect to a back-end listening on PATH (retried up to --timeout)
  --listen PATH      listen on PATH for a back-end in client mode
  --packed           packed virtqueue instead of split
  --queue-size N     descriptors in the virtqueue (default 128)
  --chunk BYTES      bytes per request (default 262144, a multiple of 512)
  --depth N          requests in flight (default 16; at most --queue-size / 3)
  --timeout MS       bound of every control-message wait and of every wait for a completion
                     (default 5000)
  --help             this text

Exit status: 0 done (verify: no mismatch), 1 error or mismatch (message on stderr),
2 bad command line.
)";

struct options {
    std::string path;
    bool listen = false;
    device::blk::driver_options driver;
    std::string command;
    std::uint64_t sector = 0, count = 0;
    std::string in, out, pattern_out;
    std::optional<std::uint64_t> seed;
    std::string rw;                  // randio: read or write
    std::uint32_t block = 4096;      // randio
    double seconds = 0;              // randio: 0 with no --requests means 5
    std::uint64_t requests = 0;      // randio
};

std::optional<options> parse(int argc, char** argv) {
    options o;
    auto bad = [](std::string_view why) {
        fmt::print(stderr, "vvu-blk: {}\n(--help for usage)\n", why);
        return std::nullopt;
    };
    examples::command_line args(argc, argv);
    while (const auto next = args.next()) {
        const std::string_view a = *next;
        auto number = [&](auto& v) { return args.number(v); };
        auto text = [&](std::string& v) { return args.text(v); };
        if (a == "--help" || a == "-h") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (a == "--connect" || a == "--listen") {
            if (!text(o.path)) return bad(fmt::format("{} needs a path", a));
            o.listen = a == "--listen";
        } else if (a == "--packed") {
            o.driver.packed = true;
        } else if (a == "--queue-size") {
            if (!number(o.driver.queue_size)) return bad("--queue-size needs a number");
        } else if (a == "--chunk") {
            if (!number(o.driver.chunk) || o.driver.chunk == 0 || o.driver.chunk % 512 != 0)
                return bad("--chunk needs a multiple of 512");
        } else if (a == "--depth") {
            if (!number(o.driver.depth) || o.driver.depth == 0) return bad("--depth needs a number >= 1");
        } else if (a == "--timeout") {
            unsigned ms = 0;
            if (!number(ms)) return bad("--timeout needs milliseconds");
            o.driver.timeout = std::chrono::milliseconds(ms);
        } else if (a == "--sector") {
            if (!number(o.sector)) return bad("--sector needs a number");
        } else if (a == "--count") {
            if (!number(o.count)) return bad("--count needs a number");
        } else if (a == "--in") {
            if (!text(o.in)) return bad("--in needs a file");
        } else if (a == "--out") {
            if (!text(o.out)) return bad("--out needs a file");
        } else if (a == "--pattern-out") {
            if (!text(o.pattern_out)) return bad("--pattern-out needs a file");
        } else if (a == "--seed") {
            std::uint64_t s = 0;
            if (!number(s)) return bad("--seed needs a number");
            o.seed = s;
        } else if (a == "--rw") {
            if (!text(o.rw) || (o.rw != "read" && o.rw != "write")) return bad("--rw is read or write");
        } else if (a == "--block") {
            if (!number(o.block) || o.block == 0 || o.block % 512 != 0) return bad("--block needs a multiple of 512");
        } else if (a == "--seconds") {
            std::string v;
            char* end = nullptr;
            if (text(v)) o.seconds = std::strtod(v.c_str(), &end);
            if (v.empty() || end != v.c_str() + v.size() || !(o.seconds > 0 && o.seconds <= 1e6))
                return bad("--seconds needs a number in (0, 1e6]");
        } else if (a == "--requests") {
            if (!number(o.requests) || o.requests == 0) return bad("--requests needs a number >= 1");
        } else if (!a.starts_with("-") && o.command.empty()) {
            o.command = std::string(a);
        } else {
            return bad(fmt::format("unknown argument {}", a));
        }
    }
    if (o.path.empty()) return bad("--connect PATH or --listen PATH is required");
    if (o.command != "info" && o.command != "read" && o.command != "write" && o.command != "flush" &&
        o.command != "verify" && o.command != "randio")
        return bad("a command is required: info, read, write, flush, verify or randio");
    if (o.command == "read" && o.count == 0) return bad("read needs --count N (sectors)");
    if (o.command == "write" && o.in.empty()) return bad("write needs --in FILE");
    if (o.command == "randio") {
        if (o.rw.empty()) return bad("randio needs --rw read or --rw write");
        if (o.seconds > 0 && o.requests != 0) return bad("randio takes --seconds or --requests, not both");
        if (o.block > o.driver.chunk) return bad("--block is larger than --chunk");
    }
    return o;
}

// FNV-1a, to print something recognisable for what was read.
std::uint64_t checksum(std::span<const std::byte> b) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::byte x : b) h = (h ^ static_cast<std::uint8_t>(x)) * 0x100000001b3ULL;
    return h;
}

// The pattern: consecutive 64-bit words of mt19937_64(seed), little-endian.
void fill(std::mt19937_64& gen, std::span<std::byte> out) {
    for (std::size_t i = 0; i < out.size(); i += 8) {
        const std::uint64_t w = gen();
        for (std::size_t k = 0; k < 8 && i + k < out.size(); ++k) out[i + k] = static_cast<std::byte>(w >> (8 * k));
    }
}

double mib_per_s(std::uint64_t bytes, clock_type::duration d) {
    const double s = std::chrono::duration<double>(d).count();
    return s > 0 ? static_cast<double>(bytes) / (1024.0 * 1024.0) / s : 0.0;
}

using driver_type = device::blk::blk_driver<protocol::socket_channel>;

int verify(driver_type& bd, const options& o) {
    const std::uint64_t seed = o.seed ? *o.seed : std::random_device{}() * 0x100000001ULL + std::random_device{}();
    fmt::print(stderr, "vvu-blk: verify: seed {}\n", seed);
    const std::uint64_t total = bd.capacity_bytes();
    constexpr std::size_t piece = std::size_t{4} << 20; // generated and compared 4 MiB at a time
    std::vector<std::byte> want(piece), got(piece);
    std::ofstream pattern;
    if (!o.pattern_out.empty()) {
        pattern.open(o.pattern_out, std::ios::binary | std::ios::trunc);
        if (!pattern) {
            fmt::print(stderr, "vvu-blk: cannot write {}\n", o.pattern_out);
            return 1;
        }
    }
    std::mt19937_64 gen(seed);
    const auto t0 = clock_type::now();
    for (std::uint64_t off = 0; off < total; off += piece) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(piece, total - off));
        fill(gen, std::span(want).first(n));
        if (pattern) pattern.write(reinterpret_cast<const char*>(want.data()), static_cast<std::streamsize>(n));
        if (auto r = bd.write(off / device::blk::sector_size, std::span(want).first(n)); !r) {
            fmt::print(stderr, "vvu-blk: verify: {}\n", r.error().message());
            return 1;
        }
    }
    if (auto r = bd.flush(); !r) {
        fmt::print(stderr, "vvu-blk: verify: {}\n", r.error().message());
        return 1;
    }
    const auto t1 = clock_type::now();
    if (pattern) {
        pattern.close();
        if (!pattern) {
            fmt::print(stderr, "vvu-blk: writing {} failed\n", o.pattern_out);
            return 1;
        }
    }
    gen.seed(seed);
    std::uint64_t mismatched = 0;
    std::optional<std::uint64_t> first;
    for (std::uint64_t off = 0; off < total; off += piece) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(piece, total - off));
        fill(gen, std::span(want).first(n));
        if (auto r = bd.read(off / device::blk::sector_size, std::span(got).first(n)); !r) {
            fmt::print(stderr, "vvu-blk: verify: {}\n", r.error().message());
            return 1;
        }
        for (std::size_t i = 0; i < n; ++i)
            if (want[i] != got[i]) {
                if (!first) first = off + i;
                ++mismatched;
            }
    }
    const auto t2 = clock_type::now();
    fmt::print("{{\"command\":\"verify\",\"seed\":{},\"bytes\":{},\"mismatched_bytes\":{},\"first_mismatch\":{},"
               "\"write_mib_s\":{:.1f},\"read_mib_s\":{:.1f}}}\n",
               seed, total, mismatched, first ? std::to_string(*first) : "null", mib_per_s(total, t1 - t0),
               mib_per_s(total, t2 - t1));
    if (mismatched != 0) {
        fmt::print(stderr, "vvu-blk: verify: {} bytes differ, the first at byte {}\n", mismatched, *first);
        return 1;
    }
    return 0;
}

int randio(driver_type& bd, const options& o) {
    device::blk::random_io_options r;
    r.block = o.block;
    r.read_percent = o.rw == "read" ? 100 : 0;
    r.depth = o.driver.depth; // an error when the queue cannot hold that many
    r.requests = o.requests;
    if (o.requests == 0)
        r.duration = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(o.seconds > 0 ? o.seconds : 5.0));
    r.seed = o.seed.value_or(1);
    auto rep = bd.random_io(r);
    if (!rep) {
        fmt::print(stderr, "vvu-blk: randio: {}\n", rep.error().message());
        return 1;
    }
    fmt::print("{{\"command\":\"randio\",\"rw\":\"{}\",\"block\":{},\"depth\":{},\"seed\":{},\"requests\":{},"
               "\"bytes\":{},\"seconds\":{:.3f},\"iops\":{:.0f},\"mean_us\":{:.1f},\"p50_us\":{:.1f},"
               "\"p99_us\":{:.1f},\"max_us\":{:.1f}}}\n",
               o.rw, rep->block, rep->depth, r.seed, rep->requests, rep->bytes, rep->seconds, rep->iops, rep->mean_us,
               rep->p50_us, rep->p99_us, rep->max_us);
    return 0;
}

int run(const options& o) {
    auto channel = o.listen ? protocol::socket_channel::listen(o.path, o.driver.timeout)
                            : protocol::socket_channel::connect(o.path, o.driver.timeout);
    if (!channel) {
        fmt::print(stderr, "vvu-blk: {}\n", channel.error().message());
        return 1;
    }
    auto opened = driver_type::open(std::move(*channel), o.driver);
    if (!opened) {
        fmt::print(stderr, "vvu-blk: setup failed: {}\n", opened.error().message());
        return 1;
    }
    driver_type& bd = **opened;
    auto fail = [](const protocol::frontend_error& e) {
        fmt::print(stderr, "vvu-blk: {}\n", e.message());
        return 1;
    };
    int rc = 0;
    if (o.command == "info") {
        auto id = bd.get_id();
        const auto& fe = bd.frontend();
        fmt::print("{{\"command\":\"info\",\"capacity_sectors\":{},\"capacity_bytes\":{},\"block_size\":{},"
                   "\"read_only\":{},\"flush\":{},\"size_max\":{},\"seg_max\":{},\"num_queues\":{},\"features\":\"0x{:x}\","
                   "\"protocol_features\":\"0x{:x}\",\"id\":\"{}\"}}\n",
                   bd.capacity_sectors(), bd.capacity_bytes(), bd.block_size(), bd.read_only(), bd.has_flush(),
                   bd.device_config().size_max, bd.device_config().seg_max, bd.device_config().num_queues,
                   fe.features(), fe.protocol_features(), id ? *id : std::string());
        if (!id) fmt::print(stderr, "vvu-blk: get-id: {}\n", id.error().message());
    } else if (o.command == "read") {
        std::vector<std::byte> buf(o.count * device::blk::sector_size);
        if (auto r = bd.read(o.sector, buf); !r) return fail(r.error());
        if (!o.out.empty()) {
            std::ofstream f(o.out, std::ios::binary | std::ios::trunc);
            f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
            if (!f) {
                fmt::print(stderr, "vvu-blk: cannot write {}\n", o.out);
                return 1;
            }
        }
        fmt::print("{{\"command\":\"read\",\"sector\":{},\"bytes\":{},\"fnv1a\":\"{:016x}\"}}\n", o.sector, buf.size(),
                   checksum(buf));
    } else if (o.command == "write") {
        std::ifstream f(o.in, std::ios::binary);
        std::vector<std::byte> buf;
        if (f) {
            f.seekg(0, std::ios::end);
            buf.resize(static_cast<std::size_t>(f.tellg()));
            f.seekg(0);
            f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
        }
        if (!f || buf.size() % device::blk::sector_size != 0) {
            fmt::print(stderr, "vvu-blk: {}: unreadable, or not a multiple of 512 bytes\n", o.in);
            return 1;
        }
        if (auto r = bd.write(o.sector, buf); !r) return fail(r.error());
        if (auto r = bd.flush(); !r) return fail(r.error());
        fmt::print("{{\"command\":\"write\",\"sector\":{},\"bytes\":{}}}\n", o.sector, buf.size());
    } else if (o.command == "flush") {
        if (auto r = bd.flush(); !r) return fail(r.error());
        fmt::print("{{\"command\":\"flush\",\"supported\":{}}}\n", bd.has_flush());
    } else if (o.command == "randio") {
        rc = randio(bd, o);
    } else {
        rc = verify(bd, o);
    }
    std::fflush(stdout);
    if (auto r = bd.close(); !r) {
        fmt::print(stderr, "vvu-blk: stopping the virtqueue: {}\n", r.error().message());
        return 1;
    }
    return rc;
}

} // namespace

int main(int argc, char** argv) {
    auto o = parse(argc, argv);
    if (!o) return 2;
    return run(*o);
}
