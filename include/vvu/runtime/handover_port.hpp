// handover_port: what a live update needs of one port of a back-end (runtime::server models
// it). The old process parks each port's control thread at a message boundary and exports its
// session; the new process imports it before starting the port. docs/live-update.md has the
// whole exchange.
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/unique_fd.hpp>

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace vvu::runtime {

// One port's session as it crosses to the new process: bytes, and the fds they name by index.
struct port_image {
    std::vector<std::byte> bytes;
    std::vector<unique_fd> fds;
};

class handover_port {
public:
    virtual ~handover_port() = default;

    // Old process. park(): the control thread stops at a message boundary (nothing changes the
    // session until unpark() or retire()). export_port(): the session, with duplicated fds —
    // the port itself is unchanged. unpark(): serve on (the hand-over failed). retire(): let
    // go of every fd without a trace (the session lives on in the new process).
    virtual expected<void, std::string> park(std::chrono::milliseconds timeout) = 0;
    // Old process, before anything pauses: the front-end's memory regions (descriptions and
    // duplicated fds), for the new process to map ahead of the outage. Empty without memory.
    virtual expected<port_image, std::string> preview_memory(std::chrono::milliseconds timeout) = 0;
    virtual expected<port_image, std::string> export_port() = 0;
    virtual void unpark() = 0;
    virtual void retire() = 0;

    // New process, before the port starts: takes the session over (its fds are taken out of
    // `fds`). On failure the caller retires the port: nothing it adopted may be unlinked.
    virtual expected<void, std::string> import_port(std::span<const std::byte> bytes, std::span<unique_fd> fds) = 0;
    // New process, before import_port: maps (and prefaults) what preview_memory() sent; the
    // import then uses these mappings for the regions that did not change meanwhile.
    virtual void premap(std::span<const std::byte> bytes, std::span<unique_fd> fds) = 0;
};

} // namespace vvu::runtime
