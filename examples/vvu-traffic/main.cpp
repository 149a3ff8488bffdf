// vvu-traffic: a vhost-user front-end that generates and checks virtio-net traffic against any
// back-end (DPDK net_vhost, vvu-forward, …). A thin main over device::net::net_driver.
#include "../common/command_line.hpp"

#include <vvu/device/l2.hpp>
#include <vvu/device/net_driver.hpp>

#include <fmt/format.h>

#include <dirent.h>
#include <signal.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace vvu;
using clock_type = std::chrono::steady_clock;

constexpr const char* usage_text = R"(usage: vvu-traffic (--connect PATH | --listen PATH) [options]

A vhost-user front-end (virtio-net driver) that sends and receives test traffic through any
vhost-user net back-end: DPDK's net_vhost, vvu-forward, ...

Connection:
  --connect PATH     connect to a back-end listening on PATH (retried up to --timeout)
  --listen PATH      listen on PATH for a back-end in client mode (one connection)

Traffic:
  --mode MODE        tx:   send --packets frames on queue pair 0 (default)
                     rx:   receive --packets frames (or until --idle MS without a frame)
                     echo: send --packets frames and receive them back (a loopback back-end,
                           e.g. vvu-forward --mode loopback); never more in flight than the
                           receive ring holds, so a correct back-end loses nothing
  --packets N        frames to send / receive (default 1000000)
  --size B           frame size in bytes, >= 64 (default 64); rx: the size every frame must have
                     (0: any)
  --rate PPS         frames per second to send (default 0: as fast as possible)
  --break-ring       once the traffic is done, act as a hostile front-end: post one transmit
                     buffer at a guest address no shared region covers, kick, and wait up to
                     --timeout for the back-end's error eventfd (SET_VRING_ERR); then ask
                     GET_STATUS (with STATUS). The JSON gains "ring_broken":{"error_signalled":
                     true|false,"status":S|null}
  --seq check|ignore rx: track the sequence numbers in received frames (default check;
                     'ignore' for senders that do not number their frames, like testpmd)

Virtio:
  --packed           packed virtqueues (VIRTIO_F_RING_PACKED) instead of split ones
  --queue-size N     descriptors per virtqueue (default 256)
  --no-mrg-rxbuf     do not negotiate VIRTIO_NET_F_MRG_RXBUF
  --regions N        memfd regions of the shared memory (default 1)
  --mem-table        always share memory with SET_MEM_TABLE (not ADD_MEM_REG)

Limits:
  --timeout MS       bound of every control-message wait, of connecting, and of waiting for
                     the back-end to give buffers back (default 5000)
  --idle MS          rx/echo: stop after MS without progress once traffic began (default 2000)

Diagnostics:
  --stall-log US     rx/echo: at the end, one line on stderr per stall longer than US
                     microseconds (the first 10 000): "stall N us ended at T" (T: CLOCK_REALTIME,
                     ns), to line stalls up with events outside (e.g. a live update's steps)
  --help             this text

Sessions:
  --sessions N       run the whole session N times in a row (default 1): connect, negotiate,
                     share memory, set up the rings, move --packets frames, stop the rings,
                     disconnect. Given --sessions (even 1), every session must complete: all
                     --packets frames sent (tx: and given back), received (rx) or returned
                     (echo), none lost, none bad, no rx_errors; else vvu-traffic stops with
                     exit status 1 and a message naming the session. With --listen a new
                     back-end connection is awaited for each session.

Frames are UDP test frames carrying a 64-bit sequence number (device::net::make_test_frame).
At the end (or on SIGINT/SIGTERM) one JSON object is printed on stdout, e.g.
  {"mode":"echo","sessions":1,"sent":N,"received":N,"gaps":0,"lost":0,"late":0,
   "duplicates":0,"bad_frames":0,"seconds":S,"pps":P, ...}
"sessions" counts the sessions completed; the other counters are totals over every session
run (a failed one's too), seconds the sum of their traffic times, max_stall_us the longest.
fds_after_first, fds_at_end, maps_after_first and maps_at_end: this process's open file
descriptors and memory mappings (/proc/self) after the first session and after the last, equal
when every session released what it set up (-1: no session completed).
gaps: discontinuities in the received sequence; lost: frames never received (echo: sent -
received but duplicates; rx: numbers skipped); late: frames received after a later one, the
first time; duplicates: frames received again (within the last 65536 numbers; a back-end that
crashed after delivering a burst and before giving its TX chains back resends it — the echo
and rx modes count frames to receive without them); bad_frames: wrong
length or a net header with flags, GSO or num_buffers a virtio-net driver would not accept,
and in echo mode a frame whose bytes are not those sent with its sequence number (the MAC
addresses as sent or swapped, as a back-end forwarding in macswap mode returns them);
max_stall_us (rx, echo): the longest time between two received frames once traffic began —
with a steady --rate, the longest outage of the path (e.g. during a back-end's live update);
max_stall_end_ms: when that stall ended, in ms from its session's first frame; stalls_over_1ms:
how many times more than 1 ms passed between two received frames.
Exit status: 0 done, 1 protocol or connection error (message on stderr), 2 bad command line.
)";

std::atomic<bool> stop_requested{false};

enum class traffic_mode { tx, rx, echo };

struct options {
    std::string path;
    bool listen = false;
    traffic_mode mode = traffic_mode::tx;
    std::uint64_t packets = 1'000'000;
    std::size_t size = 64;
    bool size_given = false;
    std::uint64_t rate = 0;
    bool check_seq = true;
    bool break_ring = false;
    device::net::driver_options driver;
    std::chrono::milliseconds timeout{5000};
    std::chrono::milliseconds idle{2000};
    std::uint64_t stall_log_us = 0; // --stall-log: stalls longer than this are listed at the end
    std::uint64_t sessions = 1;
    bool every_session_complete = false; // --sessions given
};

std::optional<options> parse(int argc, char** argv) {
    options o;
    auto bad = [](std::string_view why) {
        fmt::print(stderr, "vvu-traffic: {}\n(--help for usage)\n", why);
        return std::nullopt;
    };
    examples::command_line args(argc, argv);
    while (const auto next = args.next()) {
        const std::string_view a = *next;
        auto value = [&] { return args.next(); };
        auto number = [&](auto& out) { return args.number(out); };
        if (a == "--help" || a == "-h") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (a == "--connect" || a == "--listen") {
            auto v = value();
            if (!v) return bad(fmt::format("{} needs a path", a));
            o.path = std::string(*v);
            o.listen = a == "--listen";
        } else if (a == "--mode") {
            auto v = value();
            if (v == "tx") o.mode = traffic_mode::tx;
            else if (v == "rx") o.mode = traffic_mode::rx;
            else if (v == "echo") o.mode = traffic_mode::echo;
            else return bad("--mode is tx, rx or echo");
        } else if (a == "--packets") {
            if (!number(o.packets)) return bad("--packets needs a number");
        } else if (a == "--size") {
            if (!number(o.size)) return bad("--size needs a number");
            o.size_given = true;
        } else if (a == "--rate") {
            if (!number(o.rate)) return bad("--rate needs a number");
        } else if (a == "--seq") {
            auto v = value();
            if (v == "check") o.check_seq = true;
            else if (v == "ignore") o.check_seq = false;
            else return bad("--seq is check or ignore");
        } else if (a == "--break-ring") {
            o.break_ring = true;
        } else if (a == "--packed") {
            o.driver.packed = true;
        } else if (a == "--queue-size") {
            if (!number(o.driver.queue_size)) return bad("--queue-size needs a number");
        } else if (a == "--no-mrg-rxbuf") {
            o.driver.mrg_rxbuf = false;
        } else if (a == "--regions") {
            if (!number(o.driver.memory_regions)) return bad("--regions needs a number");
        } else if (a == "--sessions") {
            if (!number(o.sessions) || o.sessions == 0) return bad("--sessions needs a number >= 1");
            o.every_session_complete = true;
        } else if (a == "--mem-table") {
            o.driver.use_mem_slots = false;
        } else if (a == "--timeout") {
            unsigned ms = 0;
            if (!number(ms)) return bad("--timeout needs milliseconds");
            o.timeout = std::chrono::milliseconds(ms);
        } else if (a == "--idle") {
            unsigned ms = 0;
            if (!number(ms)) return bad("--idle needs milliseconds");
            o.idle = std::chrono::milliseconds(ms);
        } else if (a == "--stall-log") {
            if (!number(o.stall_log_us) || o.stall_log_us == 0) return bad("--stall-log needs microseconds (> 0)");
        } else {
            return bad(fmt::format("unknown option {}", a));
        }
    }
    if (o.path.empty()) return bad("--connect PATH or --listen PATH is required");
    if (o.mode != traffic_mode::rx && o.size < device::net::test_frame_min_size)
        return bad("--size is at least 64 (a test frame)");
    if (o.size + device::net::net_hdr_size > 65536) return bad("--size is at most 65524");
    // Room for the frame behind its header in one transmit slot; receive buffers stay 2 KiB
    // (with MRG_RXBUF larger frames span several).
    o.driver.tx_buffer_size = static_cast<std::uint32_t>(std::max<std::size_t>(2048, o.size + device::net::net_hdr_size));
    if (!o.driver.mrg_rxbuf) o.driver.rx_buffer_size = o.driver.tx_buffer_size;
    o.driver.timeout = o.timeout;
    return o;
}

// Sequence-number bookkeeping of received frames. A number received again is a duplicate, not
// a late frame: a back-end that crashed between delivering a burst and giving its TX chains
// back sends it again (at-least-once delivery, net_port::received_burst). Numbers are told
// apart within the last `window` of them; an older one counts as late.
struct sequence_check {
    static constexpr std::uint64_t window = 1 << 16;
    std::uint64_t next = 0;
    std::uint64_t gaps = 0;
    std::uint64_t skipped = 0; // numbers jumped over (frames lost, unless they come late)
    std::uint64_t late = 0;
    std::uint64_t duplicates = 0;
    std::vector<std::uint64_t> seen = std::vector<std::uint64_t>(window / 64); // bit seq % window, for [next - window, next)

    void see(std::uint64_t seq) noexcept {
        if (seq >= next) {
            // The numbers jumped over were not seen (their bits may still say a window ago).
            for (std::uint64_t k = next; k < seq && k - next < window; ++k) mark(k, false);
            mark(seq, true);
            if (seq > next) {
                ++gaps;
                skipped += seq - next;
            }
            next = seq + 1;
        } else if (next - seq <= window && marked(seq)) {
            ++duplicates;
        } else {
            if (next - seq <= window) mark(seq, true);
            ++late;
            if (skipped != 0) --skipped;
        }
    }

private:
    bool marked(std::uint64_t seq) const noexcept { return (seen[(seq % window) / 64] >> (seq % 64)) & 1; }
    void mark(std::uint64_t seq, bool on) noexcept {
        auto& word = seen[(seq % window) / 64];
        const std::uint64_t bit = std::uint64_t{1} << (seq % 64);
        word = on ? word | bit : word & ~bit;
    }
};

struct report {
    std::uint64_t sent = 0, completed = 0, received = 0, bytes = 0, bad_frames = 0;
    sequence_check seq;
    clock_type::time_point first{}, last{};
    bool any = false;
    clock_type::duration max_stall{}; // longest time between two receive bursts
    clock_type::duration max_stall_end{}; // when it ended, from the first frame
    std::uint64_t stalls_over_1ms = 0;
    // --stall-log: stalls longer than log_above, as (end in CLOCK_REALTIME ns, length in us).
    clock_type::duration log_above{clock_type::duration::max()};
    std::vector<std::pair<std::int64_t, std::int64_t>> logged;
    clock_type::time_point last_rx{};
    bool any_rx = false;

    void stamp(clock_type::time_point now) {
        if (!any) first = now;
        last = now;
        any = true;
    }
    // A burst of frames arrived at `now`.
    void received_at(clock_type::time_point now) {
        if (any_rx) {
            const auto gap = now - last_rx;
            if (gap > std::chrono::milliseconds(1)) ++stalls_over_1ms;
            if (gap > log_above && logged.size() < 10000)
                logged.emplace_back(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
                        .count(),
                    std::chrono::duration_cast<std::chrono::microseconds>(gap).count());
            if (gap > max_stall) {
                max_stall = gap;
                max_stall_end = now - first;
            }
        }
        last_rx = now;
        any_rx = true;
        stamp(now);
    }
    // Frames received, counting a duplicate once.
    std::uint64_t distinct() const noexcept { return received - seq.duplicates; }
    double seconds() const { return any ? std::chrono::duration<double>(last - first).count() : 0.0; }
};

// A frame a virtio-net driver accepts: the expected length, a header without offloads we did
// not negotiate (flags, GSO), and, with MRG_RXBUF, num_buffers >= 1.
bool frame_ok(const device::net::virtio_net_hdr& h, std::span<const std::byte> f, std::size_t want_size, bool mrg) {
    if (want_size != 0 && f.size() != want_size) return false;
    if (h.flags != 0 || h.gso_type != 0) return false;
    if (mrg && h.num_buffers == 0) return false;
    return true;
}

// The addresses of every frame sent (build), which echo checks the returning frames against.
constexpr device::net::mac_address frame_src{0x52, 0x54, 0x00, 0x00, 0x00, 0x10};
constexpr device::net::mac_address frame_dst{0x52, 0x54, 0x00, 0x00, 0x00, 0x20};

// Echo: the frame that came back is the one sent with its sequence number, byte for byte —
// but for the two MAC addresses, which may come back as sent or swapped (a back-end in
// macswap mode). Rebuilt into `expected` (at least test_frame_min_size bytes).
bool echoed_intact(std::span<const std::byte> f, std::uint64_t seq, std::span<std::byte> expected) {
    const std::size_t n = device::net::make_test_frame(expected, f.size(), seq, frame_src, frame_dst);
    if (n != f.size()) return false;
    constexpr std::size_t macs = 12;
    if (std::memcmp(f.data() + macs, expected.data() + macs, n - macs) != 0) return false;
    if (std::memcmp(f.data(), expected.data(), macs) == 0) return true;
    return std::memcmp(f.data(), expected.data() + 6, 6) == 0 && std::memcmp(f.data() + 6, expected.data(), 6) == 0;
}

using driver_type = device::net::net_driver<protocol::socket_channel>;

// The counters of every session run so far.
struct totals {
    std::uint64_t sessions = 0; // completed
    std::uint64_t sent = 0, completed = 0, received = 0, bytes = 0;
    std::uint64_t gaps = 0, lost = 0, late = 0, duplicates = 0, bad_frames = 0, rx_errors = 0;
    clock_type::duration max_stall{};
    clock_type::duration max_stall_end{}; // from its session's first frame
    std::uint64_t stalls_over_1ms = 0;
    double seconds = 0;
    std::string ring_broken; // --break-ring: the JSON member the last session reported
};

// Frames [sent, sent + n) into `frames`, built once per slot of `pool`.
std::size_t build(std::vector<std::vector<std::byte>>& pool, std::vector<device::net::frame>& frames,
                  std::uint64_t first_seq, std::size_t n, std::size_t size) {
    frames.clear();
    for (std::size_t i = 0; i < n; ++i) {
        auto& buf = pool[i];
        const std::size_t len = device::net::make_test_frame(buf, size, first_seq + i, frame_src, frame_dst);
        frames.emplace_back(buf.data(), len);
    }
    return n;
}

// How many frames the rate allows now.
std::uint64_t allowed(const options& o, clock_type::time_point start, std::uint64_t sent) {
    if (o.rate == 0) return o.packets - sent;
    const double t = std::chrono::duration<double>(clock_type::now() - start).count();
    const auto budget = static_cast<std::uint64_t>(t * static_cast<double>(o.rate)) + 1;
    return budget > sent ? std::min(budget - sent, o.packets - sent) : 0;
}

// --break-ring: one transmit buffer where no region is (a descriptor a back-end must refuse,
// and then report), and what the back-end says: its error eventfd, and the device status.
std::string break_tx_ring(driver_type& nd, std::chrono::milliseconds timeout) {
    constexpr std::uint64_t nowhere = 0xfff0'0000'0000; // far above the memory vvu-traffic shares
    const ring::buffer outside{nowhere, 64};
    auto& v = nd.tx_vring(0);
    if (!v.add({&outside, 1}, {}, ring::max_queue_size)) return ",\"ring_broken\":{\"posted\":false}";
    v.kick();
    const bool signalled = v.wait_error(timeout);
    const auto status = nd.frontend().status();
    return fmt::format(",\"ring_broken\":{{\"posted\":true,\"error_signalled\":{},\"status\":{}}}", signalled,
                       status ? fmt::format("{}", *status) : std::string("null"));
}

// One session: connect, set up, move the traffic, stop the rings, disconnect. Its counters are
// added to `t`; the failure (empty: none) is returned.
std::string run_session(const options& o, totals& t) {
    auto channel = o.listen ? protocol::socket_channel::listen(o.path, o.timeout)
                            : protocol::socket_channel::connect(o.path, o.timeout);
    if (!channel) return channel.error().message();
    auto opened = driver_type::open(std::move(*channel), o.driver);
    if (!opened) return "setup failed: " + opened.error().message();
    driver_type& nd = **opened;
    nd.disable_interrupts(); // busy-polling
    auto& fe = nd.frontend();
    // One line per run, not per session: 10 000 sessions would bury the log.
    if (t.sessions == 0)
        fmt::print(stderr, "vvu-traffic: connected to {}: features 0x{:x}, protocol features 0x{:x}, {} rings, mrg_rxbuf {}\n",
                   o.path, fe.features(), fe.protocol_features(), o.driver.packed ? "packed" : "split", nd.mrg_rxbuf());

    report rep;
    if (o.stall_log_us != 0) {
        rep.log_above = std::chrono::microseconds(o.stall_log_us);
        rep.logged.reserve(10000); // no allocation on the receive path
    }
    std::vector<std::vector<std::byte>> pool(ring::max_burst, std::vector<std::byte>(std::max<std::size_t>(o.size, 64)));
    std::vector<device::net::frame> frames;
    frames.reserve(ring::max_burst);
    const bool mrg = nd.mrg_rxbuf();
    std::vector<std::byte> expected(device::net::max_frame_size); // echo: the frame as sent, rebuilt
    const std::size_t want_size = o.mode == traffic_mode::rx ? (o.size_given ? o.size : 0) : o.size;
    auto on_frame = [&](const device::net::virtio_net_hdr& h, std::span<const std::byte> f) {
        ++rep.received;
        rep.bytes += f.size();
        bool ok = frame_ok(h, f, want_size, mrg);
        if (o.check_seq) {
            if (auto s = device::net::test_frame_sequence(f)) {
                rep.seq.see(*s);
                if (o.mode == traffic_mode::echo && ok) ok = f.size() <= expected.size() && echoed_intact(f, *s, expected);
            }
        }
        if (!ok) ++rep.bad_frames;
    };

    const auto start = clock_type::now();
    auto last_progress = start;
    std::uint64_t spins = 0;
    std::string failure;
    const std::uint32_t window = nd.queue_size(); // echo: at most one receive ring in flight

    while (!stop_requested.load(std::memory_order_relaxed)) {
        bool progress = false;
        if (o.mode != traffic_mode::rx && rep.sent < o.packets) {
            std::uint64_t n = std::min<std::uint64_t>(allowed(o, start, rep.sent), ring::max_burst);
            if (o.mode == traffic_mode::echo) {
                const std::uint64_t in_flight = rep.sent - rep.distinct();
                n = std::min<std::uint64_t>(n, in_flight < window ? window - in_flight : 0);
            }
            if (n != 0) {
                build(pool, frames, rep.sent, n, o.size);
                const std::size_t s = nd.send(0, frames);
                if (s != 0) {
                    if (rep.sent == 0) rep.stamp(clock_type::now());
                    rep.sent += s;
                    progress = true;
                }
            }
        }
        if (o.mode != traffic_mode::rx) {
            if (nd.reap_tx(0) != 0) progress = true;
        }
        if (o.mode != traffic_mode::tx) {
            const auto before = rep.received;
            nd.receive(0, on_frame, std::min<std::uint64_t>(ring::max_burst, o.packets - std::min(o.packets, rep.distinct())));
            if (rep.received != before) {
                rep.received_at(clock_type::now());
                progress = true;
            }
        }
        const auto now = progress || (++spins & 0x3ff) == 0 ? clock_type::now() : last_progress;
        if (progress) {
            last_progress = now;
            if (o.mode == traffic_mode::tx && rep.sent == o.packets) rep.last = now;
        }
        // Done?
        if (o.mode == traffic_mode::tx && rep.sent == o.packets && nd.tx_outstanding(0) == 0) break;
        if (o.mode == traffic_mode::rx && rep.distinct() >= o.packets) break;
        if (o.mode == traffic_mode::echo && rep.distinct() >= o.packets) break;
        if (!progress) {
            const auto quiet = now - last_progress;
            if (o.mode == traffic_mode::tx && rep.sent == o.packets && quiet > o.timeout) {
                failure = fmt::format("the back-end did not give {} transmit buffers back within {} ms",
                                      nd.tx_outstanding(0), o.timeout.count());
                break;
            }
            if (o.mode == traffic_mode::tx && rep.sent < o.packets && o.rate == 0 && quiet > o.timeout) {
                failure = fmt::format("no transmit progress for {} ms (the back-end takes nothing)", o.timeout.count());
                break;
            }
            if (o.mode != traffic_mode::tx && rep.any && quiet > o.idle && (o.mode == traffic_mode::rx || rep.sent == o.packets))
                break; // the rest is lost
            if (o.mode == traffic_mode::rx && !rep.any && quiet > o.timeout + o.idle) {
                failure = fmt::format("no frame received within {} ms", (o.timeout + o.idle).count());
                break;
            }
            if (o.mode == traffic_mode::echo && rep.sent < o.packets && quiet > o.idle + o.timeout) {
                failure = fmt::format("echo stalled: {} sent, {} received, nothing moved for {} ms", rep.sent,
                                      rep.received, (o.idle + o.timeout).count());
                break;
            }
        }
        if ((spins & 0xfff) == 0) {
            if (auto r = fe.serve_backend_requests(); !r) {
                failure = r.error().message();
                break;
            }
        }
        if (!progress && o.rate != 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if (o.mode == traffic_mode::tx) {
        nd.reap_tx(0);
        if (!rep.any) rep.first = rep.last = clock_type::now();
    }
    rep.completed = nd.stats().tx_completed;

    const std::uint64_t lost = o.mode == traffic_mode::echo ? rep.sent - std::min(rep.sent, rep.distinct()) : rep.seq.skipped;
    t.sent += rep.sent;
    t.completed += rep.completed;
    t.received += rep.received;
    t.bytes += o.mode == traffic_mode::tx ? nd.stats().tx_bytes : rep.bytes;
    t.gaps += rep.seq.gaps;
    t.lost += lost;
    t.late += rep.seq.late;
    t.duplicates += rep.seq.duplicates;
    t.bad_frames += rep.bad_frames;
    t.rx_errors += nd.stats().rx_errors;
    if (rep.max_stall > t.max_stall) {
        t.max_stall = rep.max_stall;
        t.max_stall_end = rep.max_stall_end;
    }
    t.stalls_over_1ms += rep.stalls_over_1ms;
    for (const auto& [end_ns, us] : rep.logged) std::fprintf(stderr, "stall %lld us ended at %lld\n", static_cast<long long>(us), static_cast<long long>(end_ns));
    t.seconds += rep.seconds();
    if (o.break_ring && failure.empty()) t.ring_broken = break_tx_ring(nd, o.timeout);

    // Stop the rings cleanly (the back-end hands them back) before disconnecting.
    if (auto r = nd.close(); !r && failure.empty()) failure = "stopping the rings: " + r.error().message();
    if (!failure.empty() || !o.every_session_complete || stop_requested.load()) return failure;
    const bool complete = o.mode == traffic_mode::tx   ? rep.sent == o.packets && rep.completed == rep.sent
                          : o.mode == traffic_mode::rx ? rep.distinct() >= o.packets && (!o.check_seq || lost == 0)
                                                       : rep.sent == o.packets && rep.distinct() == rep.sent && lost == 0;
    if (!complete || rep.bad_frames != 0 || nd.stats().rx_errors != 0)
        return fmt::format("incomplete: {} of {} frames sent, {} completed, {} received, {} lost, {} bad, {} rx_errors", rep.sent,
                           o.packets, rep.completed, rep.received, lost, rep.bad_frames, nd.stats().rx_errors);
    return {};
}

// Entries of a /proc/self directory (fd) or lines of a /proc/self file (maps): -1 if unreadable.
long proc_self_fds() {
    DIR* d = opendir("/proc/self/fd");
    if (d == nullptr) return -1;
    long n = 0;
    while (const dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n - 1; // the directory's own descriptor
}

long proc_self_maps() {
    std::FILE* f = std::fopen("/proc/self/maps", "r");
    if (f == nullptr) return -1;
    long n = 0;
    for (int c; (c = std::fgetc(f)) != EOF;)
        if (c == '\n') ++n;
    std::fclose(f);
    return n;
}

int run(const options& o) {
    totals t;
    long fds_after_first = -1, maps_after_first = -1;
    std::string failure;
    for (std::uint64_t n = 1; n <= o.sessions && !stop_requested.load(); ++n) {
        if (auto why = run_session(o, t); !why.empty()) {
            failure = o.every_session_complete ? fmt::format("session {} of {}: {}", n, o.sessions, why) : why;
            break;
        }
        ++t.sessions;
        if (n == 1) {
            fds_after_first = proc_self_fds();
            maps_after_first = proc_self_maps();
        }
    }

    const std::uint64_t counted = o.mode == traffic_mode::tx ? t.sent : t.received;
    const double pps = t.seconds > 0 ? static_cast<double>(counted) / t.seconds : 0.0;
    std::string json = fmt::format(
        "{{\"mode\":\"{}\",\"sessions\":{},\"packed\":{},\"size\":{},\"sent\":{},\"completed\":{},\"received\":{},\"bytes\":{}",
        o.mode == traffic_mode::tx ? "tx" : o.mode == traffic_mode::rx ? "rx" : "echo", t.sessions, o.driver.packed, o.size,
        t.sent, t.completed, t.received, t.bytes);
    if (o.mode != traffic_mode::tx) {
        if (o.check_seq)
            json += fmt::format(",\"gaps\":{},\"lost\":{},\"late\":{},\"duplicates\":{}", t.gaps, t.lost, t.late, t.duplicates);
        else
            json += fmt::format(",\"gaps\":null,\"lost\":null,\"late\":null,\"duplicates\":null");
        using std::chrono::duration_cast;
        json += fmt::format(",\"bad_frames\":{},\"rx_errors\":{},\"max_stall_us\":{},\"max_stall_end_ms\":{},"
                            "\"stalls_over_1ms\":{}",
                            t.bad_frames, t.rx_errors, duration_cast<std::chrono::microseconds>(t.max_stall).count(),
                            duration_cast<std::chrono::milliseconds>(t.max_stall_end).count(), t.stalls_over_1ms);
    }
    json += fmt::format(",\"fds_after_first\":{},\"fds_at_end\":{},\"maps_after_first\":{},\"maps_at_end\":{}",
                        fds_after_first, proc_self_fds(), maps_after_first, proc_self_maps());
    json += t.ring_broken; // --break-ring: the last session's
    json += fmt::format(",\"seconds\":{:.6f},\"pps\":{:.0f}}}", t.seconds, pps);
    std::printf("%s\n", json.c_str());
    std::fflush(stdout);
    if (!failure.empty()) {
        fmt::print(stderr, "vvu-traffic: {}\n", failure);
        return 1;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    auto o = parse(argc, argv);
    if (!o) return 2;
    struct sigaction sa{};
    sa.sa_handler = [](int) { stop_requested.store(true); };
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    return run(*o);
}
