// vvu::vvu_device::device_model: the virtio-vhost-user device (shared/vvu-spec.md; design.md layer 7).
// It terminates a front-end's vhost-user socket and presents the session to a driver as the
// VVU PCI function, served over vfio-user — the role QEMU's virtio-vhost-user device plays
// for a guest, run here as a process (examples/vvu-device).
//
//   front-end ──vhost-user──▶ device_model ──vfio-user (PCI function 1af4:106b)──▶ driver
//
//   messages   front-end request → checked → its fds consumed → header + payload copied into
//              one rxq buffer; replies and back-end requests come back on the txq, checked,
//              and go to the socket (replies) or the back-end channel (requests).
//   memory     SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG fds become the shared-memory window
//              of BAR 2 (pci::vvu_function::window_layout); the driver maps them from the fds
//              the device hands out with GET_REGION_INFO — no copy. Memory messages are
//              forwarded one at a time: the window changes as the device takes one, so it
//              waits for the driver to handle each before it reads the socket further (else a
//              REM_MEM_REG right behind a SET_MEM_TABLE would take a region away before the
//              driver mapped it). The proof is the reply to the memory message when the
//              front-end asked for one (REPLY_ACK), else the reply to a GET_FEATURES the device
//              queues right behind it and swallows (the driver answers in order).
//   kicks      each front-end kick eventfd raises the MSI-X vector the driver chose for that
//              vring (one hop through the device).
//   calls      each call eventfd is the ioeventfd of that vring's doorbell (GET_REGION_IO_FDS):
//              a driver ringing it signals the front-end directly; a doorbell write that does
//              reach the device is passed on.
//
// Connection state (vvu-spec.md): INITIAL → BACKEND_UP (driver ready) or SOCKET_OPEN (a
// front-end connected) → CONNECTED (both: FRONTEND_UP set, config interrupt, messages flow).
// Socket close, a protocol violation by either side, BACKEND_UP cleared or the driver breaking
// or unmapping the function's queues disconnect: the front-end's socket is closed, its fds
// dropped, FRONTEND_UP cleared and — unless the driver caused it — a config interrupt sent.
// After a disconnect the driver did not cause, the device waits for the driver to clear and
// set BACKEND_UP again before it connects the next front-end, so no message of the old session
// can be taken for one of the new (the spec draft leaves this race open).
//
// Driver restart (the back-end's VM restarted or updated, vvu-forward crashed or replaced):
// a driver that goes away while CONNECTED — its vfio-user connection closes, or it resets the
// function — without clearing BACKEND_UP first does not end the front-end's session. The
// device keeps the socket, the memory regions (the window), the kick/call fds and the back-end
// channel, clears FRONTEND_UP (no interrupt: no driver), stops turning kicks into interrupts
// and stops reading the socket (the front-end's messages wait there: the kernel buffer is the
// back-pressure, nothing is queued in the device). Replies to the lost driver's back-end
// requests that arrive meanwhile are dropped (whoever asked is gone). The state shows as
// SOCKET_OPEN. When a driver next sets BACKEND_UP, FRONTEND_UP rises and is announced as for a
// fresh session, and before any new front-end message the device replays into the rxq what
// the front-end had set up, from a record kept as its requests passed (the last of each):
//   SET_OWNER, SET_PROTOCOL_FEATURES, SET_FEATURES, SET_BACKEND_REQ_FD, NET_SET_MTU,
//   SET_CONFIG (per range), the memory table (the window as it stands, compacted: one
//   SET_MEM_TABLE of up to 8 regions and an ADD_MEM_REG per further region), per vring
//   SET_VRING_NUM/ADDR/BASE/CALL/ERR/ENABLE/KICK, SET_STATUS.
// The fds it kept become the new driver's window, doorbells and MSI-X routing as when they
// first passed. With REPLY_ACK negotiated the replayed requests carry NEED_REPLY and the
// driver's acks are swallowed (a refusal, or any other reply before them, is a driver
// violation: the front-end is disconnected as for any); without it they carry none.
// GET_VRING_BASE is never replayed: its reply turns the vring's record into "stopped at that
// base" (no kick). SET_VRING_BASE is the front-end's value: a split ring resumes at the used
// index in ring memory (protocol/vring.hpp), so chains the lost driver took and never
// completed are taken again. Packed rings have no such rule and their position cannot be read
// back from ring memory: a session with a running packed ring is disconnected when its driver
// goes, as before. A memory message the lost driver had not handled no longer holds the
// socket: the replay carries the window as it stands, and the device reads the socket again
// once the new driver has handled it (the replay's last ack, or a GET_FEATURES behind it, as
// above). Requests the lost driver left unanswered are sent to the new driver again
// after the replay when they have a reply of their own (GET_*); acks the front-end still waits
// for are given by the device once the replay has been acknowledged. Other messages the lost
// driver had not been given yet are not sent again (their effect is in the record; a pending
// SEND_RARP is dropped). Only BACKEND_UP cleared ends a session by the driver's choice.
//
// Live update of the device itself (vvu-device --control / --takeover, docs/live-update.md):
// handover() is the device as a runtime::handover_port, so runtime::handover_listener and
// runtime::take_over move it to a new process as they move a back-end's ports. park() stops
// run() between two events (no message is ever half read there: each is read whole), the
// image is everything the device holds — both listening sockets, the driver's vfio-user
// connection with what VERSION negotiated and its DMA maps, the PCI function (config space,
// registers, MSI-X table, irq eventfds), the function's rxq/txq positions, the front-end's
// socket, back-end channel, window, kick/call/err fds, the session record, the messages on
// their way to the driver and the replies awaited — and the new process goes on from there.
// Neither the front-end nor the driver sees a message or a disconnect; a kick or a driver
// request that arrives meanwhile waits in its eventfd or socket. A device made with
// device_options::listen false binds nothing: it is filled by import_port before run().
//
// Single-threaded: run() is an epoll loop over the two listening sockets, the driver's and the
// front-end's connections, the back-end channel and the kick eventfds. stop() may be called
// from any thread or a signal handler.
#pragma once

#include <vvu/runtime/handover_port.hpp>
#include <vvu/util/expected.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace vvu::vvu_device {

// What a peer of the device can wait for, as it stands between two batches of events
// (device_options::progress). A harness that feeds a front-end paces itself by it instead of
// by time (tests/fuzz/fuzz_device.cpp): it sends the next message once the device has read
// every byte so far and owes the driver nothing, and connects a front-end once one would be
// CONNECTED at once.
struct device_progress {
    std::uint64_t frontend_sockets = 0; // front-end sockets accepted; "this socket" is the last
    std::uint64_t sessions_ended = 0;   // front-end sockets the device closed (counters().disconnects)
    std::uint64_t frontend_bytes = 0;   // bytes of whole front-end messages read, this socket
    std::uint64_t to_driver = 0;        // messages put on the rxq, this socket (barriers included)
    // A message waits for an rxq buffer or for the driver's reply, or a memory message holds the
    // socket until the driver has handled it.
    bool driver_owed = false;
    // No front-end socket, BACKEND_UP set and no re-acknowledgement awaited: a front-end that
    // connects now is CONNECTED at once.
    bool ready_for_frontend = false;
    bool operator==(const device_progress&) const = default;
};

struct device_options {
    std::string vhost_user_path; // where the front-end connects (listening)
    std::string pci_path;        // where the driver attaches over vfio-user (listening)
    std::uint32_t max_queues = 64; // vhost-user vrings served (device config max_vhost_queues)
    std::array<std::uint8_t, 16> uuid{};
    // How long a peer may take to finish a message it started; then it is dropped.
    std::chrono::milliseconds message_timeout{2000};
    // One line per event worth a log (connections, disconnects and why); may be empty.
    std::function<void(std::string_view)> log;
    // Called on run()'s thread after a batch of events that changed device_progress (and once
    // as run() starts); may be empty. It must not call back into the device.
    std::function<void(const device_progress&)> progress;
    // False: bind neither socket; a live update brings them (handover().import_port before run).
    bool listen = true;
};

// The protocol features that can cross the device: those whose fds the device carries (or
// that carry none). Masked, and why: LOG_SHMFD (the log is a front-end fd the device would have
// to expose as well; migration is a later issue), INFLIGHT_SHMFD (GET_INFLIGHT_FD replies
// carry a back-end fd; the driver has none to send), BACKEND_SEND_FD (back-end requests with
// fds: the driver has no fds), HOST_NOTIFIER (needs BACKEND_SEND_FD), PAGEFAULT (postcopy: a
// userfaultfd), INBAND_NOTIFICATIONS, XEN_MMAP, SHARED_OBJECT, DEVICE_STATE (an fd), and
// CRYPTO_SESSION and CROSS_ENDIAN (no such device here).
std::uint64_t passthrough_protocol_features() noexcept;

// The most DMA maps a driver may make (its VERSION reply's max_dma_maps): the device keeps
// each map's fd, so that a live update can hand it on.
inline constexpr std::size_t max_dma_maps = 256;

// The most memory slots the device lets a front-end use (GET_MAX_MEM_SLOTS replies are
// lowered to it): every region's fd must fit in one GET_REGION_INFO reply.
inline constexpr std::uint64_t max_mem_slots = 32;

struct device_counters {
    std::uint64_t frontends = 0;          // front-ends that reached CONNECTED
    std::uint64_t disconnects = 0;
    std::uint64_t drivers = 0;            // vfio-user clients attached
    std::uint64_t to_driver = 0;          // messages put on the rxq (memory barriers included)
    std::uint64_t to_frontend = 0;        // replies written to the socket
    std::uint64_t backend_requests = 0;   // back-end requests written to the back-end channel
    std::uint64_t kicks = 0;              // front-end kicks turned into interrupts
    std::uint64_t doorbells = 0;          // doorbell writes that reached the device
    std::uint64_t config_interrupts = 0;
    std::uint64_t driver_restarts = 0;    // sessions kept across a driver change (and resumed)
    std::uint64_t replayed = 0;           // messages the device put on the rxq to resume them
};

enum class connection_state { initial, backend_up, socket_open, connected };

class device_model {
public:
    // Listens on both sockets. Errors name the socket and the reason.
    [[nodiscard]] static expected<std::unique_ptr<device_model>, std::string> create(device_options options);
    ~device_model();
    device_model(const device_model&) = delete;
    device_model& operator=(const device_model&) = delete;

    // Serves until stop(). An error only for a failure of the device itself (epoll); peers'
    // failures are logged and served around.
    [[nodiscard]] expected<void, std::string> run();
    // Async-signal-safe: makes run() return.
    void stop() noexcept;

    // Not synchronised with run(): read them on run()'s thread or after it returned. A session
    // kept for the next driver shows as socket_open.
    [[nodiscard]] device_counters counters() const noexcept;
    [[nodiscard]] connection_state state() const noexcept;

    // The device as one port of a live update (see above). park() and export_port() may be
    // called from any thread while run() runs; import_port() before run().
    [[nodiscard]] runtime::handover_port& handover() noexcept;
    // "vvu-device <vhost-user path> <pci path> max_queues=N": what an old and a new process
    // compare before a hand-over (runtime::handover_listener's port list).
    [[nodiscard]] std::string handover_description() const;

private:
    struct impl;
    explicit device_model(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> impl_;
};

} // namespace vvu::vvu_device
