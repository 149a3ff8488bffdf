// libFuzzer target for the back-end state machine: random message sequences, each message
// with a random number of fds (small memfds, which serve as memory regions, kick and call
// notifiers alike). The session ends at the first violation, as serve() ends it; the data path
// then drains whatever vrings started. Anything but a clean error is a finding.
//
// Input: repeated [u16 length][u8 fd count][length bytes of message].
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/util/eventfd.hpp>

#include "fuzz_transport.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace {

using namespace vvu;

using fuzzing::fuzz_transport;


unique_fd small_memfd() {
    unique_fd fd(::memfd_create("vvu-fuzz", MFD_CLOEXEC));
    if (fd && ::ftruncate(fd.get(), 1 << 16) != 0) fd.reset();
    return fd;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz_transport t;
    device::net::net_port port({.queue_pairs = 2});
    protocol::backend<fuzz_transport, device::net::net_port> backend(t, port);
    std::vector<std::byte> staging(ring::max_burst * device::net::max_frame_size);
    std::array<device::net::frame, ring::max_burst> frames;

    for (int messages = 0; size >= 3 && messages < 64; ++messages) {
        const std::size_t len = std::min<std::size_t>(data[0] | data[1] << 8, size - 3);
        const std::size_t nfds = data[2] % (wire::max_fds + 1);
        data += 3;
        size -= 3;
        transport::received_message m;
        const std::size_t n = std::min(len, m.storage.size());
        std::memcpy(m.storage.data(), data, n);
        data += len;
        size -= len;
        if (n < wire::header_size) break;
        m.header = wire::load_header(m.storage);
        // The transport's own framing guarantees bytes() covers exactly header + size.
        if (m.header.size > n - wire::header_size) break;
        for (std::size_t i = 0; i < nfds; ++i) (void)m.fds.push_back(small_memfd());
        if (!backend.handle(m)) break;
        (void)port.receive(staging, frames); // the data path runs between messages
        (void)port.discard();
    }
    return 0;
}
