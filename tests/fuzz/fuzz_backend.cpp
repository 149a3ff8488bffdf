// libFuzzer target for the back-end state machine and the data path behind it: random message
// sequences with fds, random bytes written into the front-end's memory, and both directions
// of the net device's data path run over whatever vrings started. Anything but a clean error
// is a finding.
//
// The fds a message carries are what its request needs, so that sessions get past set-up:
// SET_MEM_TABLE and ADD_MEM_REG get memfds sized from the regions they describe (bounded:
// max_region_bytes each), SET_INFLIGHT_FD and SET_LOG_BASE one sized from their description, the vring
// notifiers eventfds, anything else a small memfd. The input is a sequence of records,
//   [u16 length][u8 control][length bytes]
//   control < 0xf0   a message (its bytes), with control % (max_fds + 1) fds
//   control = 0xf0   a memory write: [u8 region][u32 offset][bytes] into that region of the
//                    last table (the rings' descriptors and buffers come this way)
//   control = 0xf1   the data path: the front-end's TX vrings drained, then the bytes sent as
//                    frames (u16 length-prefixed) to its RX vrings
// and the data path also runs (both directions) after every message. At exit the target
// prints how many inputs started a vring and moved frames each way, and how many wrote frames
// while dirty logging was on (the CI log shows it).
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/util/endian.hpp>
#include <vvu/util/eventfd.hpp>

#include "fuzz_transport.hpp"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using namespace vvu;
using fuzzing::fuzz_transport;
using fr = wire::front_request;

constexpr std::uint64_t max_region_bytes = 4u << 20;
constexpr std::size_t max_records = 96;

// What the inputs reached, printed once at exit.
struct reach_counts {
    std::uint64_t inputs = 0, started = 0, received = 0, transmitted = 0, logged = 0;
    ~reach_counts() {
        std::fprintf(stderr,
                     "fuzz_backend: %llu inputs; %llu started a vring, %llu moved a frame from a TX vring, "
                     "%llu wrote a frame into an RX vring, %llu of them with dirty logging on\n",
                     static_cast<unsigned long long>(inputs), static_cast<unsigned long long>(started),
                     static_cast<unsigned long long>(received), static_cast<unsigned long long>(transmitted),
                     static_cast<unsigned long long>(logged));
    }
} reach;

unique_fd memfd_of(std::uint64_t bytes) {
    unique_fd fd(::memfd_create("vvu-fuzz", MFD_CLOEXEC));
    if (fd && ::ftruncate(fd.get(), static_cast<off_t>(std::min(bytes, max_region_bytes))) != 0) fd.reset();
    return fd;
}

// The sizes of the files a message's regions (or inflight area) want, in fd order.
std::vector<std::uint64_t> wanted_sizes(fr request, std::span<const std::byte> payload) {
    std::vector<std::uint64_t> sizes;
    auto region_end = [&](std::size_t at) {
        if (payload.size() < at + 32) return std::uint64_t{0};
        const auto size = le::load<std::uint64_t>(payload.data() + at + 8);
        const auto offset = le::load<std::uint64_t>(payload.data() + at + 24);
        return offset > max_region_bytes || size > max_region_bytes ? max_region_bytes : offset + size;
    };
    if (request == fr::set_mem_table && payload.size() >= 8) {
        const auto n = std::min<std::uint32_t>(le::load<std::uint32_t>(payload.data()), wire::max_fds);
        for (std::uint32_t i = 0; i < n; ++i) sizes.push_back(region_end(8 + 32 * std::size_t{i}));
    } else if (request == fr::add_mem_reg) {
        sizes.push_back(region_end(8));
    } else if ((request == fr::set_inflight_fd || request == fr::set_log_base) && payload.size() >= 16) {
        const auto size = le::load<std::uint64_t>(payload.data());
        const auto offset = le::load<std::uint64_t>(payload.data() + 8);
        sizes.push_back(offset > max_region_bytes || size > max_region_bytes ? max_region_bytes : offset + size);
    }
    return sizes;
}

bool is_vring_notifier(fr r) { return r == fr::set_vring_kick || r == fr::set_vring_call || r == fr::set_vring_err; }

struct harness {
    fuzz_transport transport;
    device::net::net_port port{{.queue_pairs = 2}};
    protocol::backend<fuzz_transport, device::net::net_port> backend{transport, port};
    std::vector<std::byte> staging = std::vector<std::byte>(ring::max_burst * device::net::max_frame_size);
    std::array<device::net::frame, ring::max_burst> frames{};
    unsigned passes = 0;
    volatile unsigned bytes_seen = 0;
    std::vector<unique_fd> regions; // the last table's files (duplicates), for memory writes
    bool started = false, received = false, transmitted = false, logged = false;
    bool log_set = false; // a SET_LOG_BASE was taken

    // A message; false when the session ended (a violation, as serve() would end it).
    bool message(std::span<const std::byte> bytes, std::size_t nfds) {
        transport::received_message m;
        if (bytes.size() < wire::header_size || bytes.size() > m.storage.size()) return false;
        std::memcpy(m.storage.data(), bytes.data(), bytes.size());
        m.header = wire::load_header(m.storage);
        // The transport's own framing guarantees bytes() covers exactly header + size.
        if (m.header.size != bytes.size() - wire::header_size) return false;
        const auto request = static_cast<fr>(m.header.request);
        const auto sizes = wanted_sizes(request, bytes.subspan(wire::header_size));
        std::vector<unique_fd> table;
        for (std::size_t i = 0; i < nfds; ++i) {
            unique_fd fd;
            if (i < sizes.size()) fd = memfd_of(sizes[i]);
            else if (is_vring_notifier(request)) fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
            else fd = memfd_of(1 << 16);
            if (i < sizes.size() && request != fr::set_inflight_fd && request != fr::set_log_base)
                table.push_back(dup_cloexec(fd.get()));
            (void)m.fds.push_back(std::move(fd));
        }
        if (request == fr::set_mem_table) regions = std::move(table);
        else if (request == fr::add_mem_reg)
            for (auto& fd : table) regions.push_back(std::move(fd));
        const bool ok = static_cast<bool>(backend.handle(m));
        log_set |= ok && request == fr::set_log_base;
        for (const auto& v : backend.state().vrings) started |= v.started;
        return ok;
    }

    void write_memory(std::span<const std::byte> b) {
        if (b.size() < 5 || regions.empty()) return;
        const auto& fd = regions[static_cast<std::uint8_t>(b[0]) % regions.size()];
        const auto offset = le::load<std::uint32_t>(b.data() + 1);
        if (fd) [[maybe_unused]] auto n = ::pwrite(fd.get(), b.data() + 5, b.size() - 5, offset);
    }

    // Both directions: what the front-end transmitted is taken (copied, or on every other call
    // left in place, then read through and dropped), and the frames in `out` (u16
    // length-prefixed) are written into its receive buffers.
    void data_path(std::span<const std::byte> out) {
        using device::net::frame_placement;
        const auto placement = passes++ % 2 ? frame_placement::in_place : frame_placement::staged;
        {
            auto burst = port.receive(staging, frames, 0, placement);
            received |= burst.size() != 0;
            for (const auto& f : std::span(frames).first(burst.size()))
                for (std::byte b : f) bytes_seen = bytes_seen + std::to_integer<unsigned>(b); // every byte of the view
        } // (the chains go back here)
        (void)port.discard();
        std::array<device::net::frame, 8> burst{};
        std::size_t n = 0;
        while (out.size() >= 2 && n < burst.size()) {
            const std::size_t len = std::min<std::size_t>(le::load<std::uint16_t>(out.data()), out.size() - 2);
            burst[n++] = device::net::frame(out.subspan(2, len));
            out = out.subspan(2 + len);
        }
        if (n != 0) {
            bool sent = false;
            for (std::uint32_t q = 0; q < 2; ++q) sent |= port.transmit(std::span(burst).first(n), q) != 0;
            transmitted |= sent;
            logged |= sent && log_set && wire::has(backend.state().features, wire::vhost_feature::log_all);
        }
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    harness h;
    std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
    for (std::size_t records = 0; in.size() >= 3 && records < max_records; ++records) {
        const std::size_t len = std::min<std::size_t>(le::load<std::uint16_t>(in.data()), in.size() - 3);
        const auto control = static_cast<std::uint8_t>(in[2]);
        const auto body = in.subspan(3, len);
        in = in.subspan(3 + len);
        if (control == 0xf0) {
            h.write_memory(body);
        } else if (control == 0xf1) {
            h.data_path(body);
        } else if (control < 0xf0) {
            if (!h.message(body, control % (wire::max_fds + 1))) break;
            h.data_path({}); // the data path runs between messages
        }
    }
    ++reach.inputs;
    reach.started += h.started;
    reach.received += h.received;
    reach.transmitted += h.transmitted;
    reach.logged += h.logged;
    return 0;
}
