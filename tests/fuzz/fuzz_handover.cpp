// libFuzzer target for the new process's side of a live update: a session image as it arrives
// from the old process — any bytes, with fds (small sealed memfds, which serve as memory
// regions, notifiers, the back-end channel and the inflight area alike) — decoded, imported
// into a back-end (regions mapped, notifiers made, rings started where the image says), run
// through the data path, then exported and decoded again. Anything but a clean error is a
// finding; an image that imports must export to one that decodes to the same state.
//
// Input: [u8 fd count][the image bytes]. Seeds: make_handover_corpus.py.
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/protocol/session_image.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/util/eventfd.hpp>

#include "fuzz_transport.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

namespace {

using namespace vvu;

using fuzzing::fuzz_transport;


unique_fd sealed_memfd() {
    unique_fd fd(::memfd_create("vvu-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd && (::ftruncate(fd.get(), 1 << 16) != 0 || ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0))
        fd.reset();
    return fd;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t nfds = data[0] % 24;
    std::vector<unique_fd> fds;
    for (std::size_t i = 0; i < nfds; ++i) fds.push_back(sealed_memfd());
    const auto bytes = std::as_bytes(std::span(data + 1, size - 1));

    auto img = protocol::decode_image(bytes, fds);
    if (!img) return 0;
    const auto state = img->state();

    fuzz_transport t;
    device::net::net_port port({.queue_pairs = 2});
    protocol::backend<fuzz_transport, device::net::net_port> backend(t, port);
    if (!backend.import_session(std::move(*img))) return 0;
    std::vector<std::byte> staging(ring::max_burst * device::net::max_frame_size);
    std::array<device::net::frame, ring::max_burst> frames;
    for (int pass = 0; pass < 4; ++pass) {
        (void)port.receive(staging, frames);
        (void)port.discard();
    }
    // An imported session exports again, and what it exports decodes to the same settings
    // (rings that ran may have moved: their positions are compared only for stopped rings).
    auto again = backend.export_session();
    if (!again) return 0; // e.g. a ring left broken by the data path with chains in flight
    auto enc = protocol::encode(std::move(*again));
    auto back = protocol::decode_image(enc.bytes, enc.fds);
    if (!back) std::abort();
    const auto s2 = back->state();
    if (s2.features != state.features || s2.protocol_features != state.protocol_features || s2.vrings.size() != state.vrings.size())
        std::abort();
    for (std::size_t i = 0; i < s2.vrings.size(); ++i)
        if (s2.vrings[i].size != state.vrings[i].size || s2.vrings[i].addr != state.vrings[i].addr ||
            s2.vrings[i].started != state.vrings[i].started)
            std::abort();
    return 0;
}
