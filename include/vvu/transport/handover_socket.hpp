// handover_socket: the control connection of a live update — records with file descriptors
// between a running back-end and the process that takes it over (docs/live-update.md).
//
// A record is a 16-byte header — magic "VVUL", version, type, payload size, fd count, all
// little-endian — then the payload; its fds (SCM_RIGHTS) ride with the header's first byte.
// This layer knows record framing only: what a type means is the runtime's (runtime/live_update.hpp).
//
// Every record from the other side is checked before a payload byte is read: the magic, the
// version (errc::unsupported_version — the caller may say so and close), a payload of at most
// max_payload bytes, at most max_fds fds and exactly as many as the header announces
// (errc::malformed). Every wait is bounded by the caller's timeout. Received fds are
// close-on-exec and owned by the record; none leaks on any error.
#pragma once

#include <vvu/transport/error.hpp>
#include <vvu/util/expected.hpp>
#include <vvu/util/scm_rights.hpp>
#include <vvu/util/unique_fd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vvu::transport {

class handover_socket {
public:
    static constexpr std::uint32_t magic = 0x4c555656; // "VVUL" in the first four bytes
    // 2: a `vvu:` port's transport state carries the window's inflight area (after the log's).
    static constexpr std::uint16_t version = 2;
    static constexpr std::size_t header_size = 16;
    static constexpr std::size_t max_payload = 8u << 20;
    static constexpr std::size_t max_fds = scm::max_fds;

    struct record {
        std::uint16_t version = 0;
        std::uint16_t type = 0;
        std::vector<std::byte> payload;
        std::vector<unique_fd> fds;
    };

    handover_socket() = default;
    explicit handover_socket(unique_fd connected) noexcept : fd_(std::move(connected)) {}

    // Connects to a control socket at `path`, retrying while it is missing or refuses, up to
    // `timeout`.
    [[nodiscard]] static expected<handover_socket, error> connect(const std::string& path, std::chrono::milliseconds timeout);

    [[nodiscard]] expected<void, error> send(std::uint16_t type, std::span<const std::byte> payload,
                                             std::span<const int> fds, std::chrono::milliseconds timeout);
    [[nodiscard]] expected<record, error> receive(std::chrono::milliseconds timeout);

    [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
    [[nodiscard]] bool is_open() const noexcept { return fd_.valid(); }
    void close() noexcept { fd_.reset(); }

private:
    unique_fd fd_;
};

} // namespace vvu::transport
