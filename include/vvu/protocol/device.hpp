// The line between the protocol state machine and a device (virtio-net, later blk, …): about
// a dozen small operations, the way rust-vmm's VhostUserBackend draws it. A device never sees
// a message, a socket or a PCI BAR: it sees features, config space and started vrings.
#pragma once

#include <vvu/protocol/vring.hpp>

#include <cstdint>
#include <memory>
#include <span>

namespace vvu::protocol {

// Requirements on a device type D, for d of type D:
//
//   d.features()              -> uint64_t   virtio feature bits the device offers (device-specific
//                                           ones; the state machine adds the ring and vhost bits)
//   d.protocol_features()     -> uint64_t   protocol features the device implements itself
//                                           (CONFIG, NET_MTU, RARP …); the state machine adds MQ,
//                                           REPLY_ACK, BACKEND_REQ, STATUS, CONFIGURE_MEM_SLOTS …
//   d.vring_count()           -> uint32_t   vrings the device serves (net: 2 per queue pair)
//   d.set_features(acked)                   the features the front-end accepted (SET_FEATURES)
//   d.read_config(offset, out) -> bool      GET_CONFIG; false if the range is not readable
//   d.write_config(offset, in) -> bool      SET_CONFIG; false if the range is not writable
//   d.start_vring(std::unique_ptr<vring>)   the data path takes a started vring
//   d.stop_vring(index) -> unique_ptr<vring> the data path gives it back and no longer touches
//                                           it or its memory when this returns
//   d.reset()                               back to the initial state (RESET_DEVICE, disconnect)
//
// Optional, detected when present: d.send_rarp(mac) (SEND_RARP), d.set_mtu(mtu) -> bool
// (NET_SET_MTU), and the device's own state for a live update (backend::export_session /
// import_session): d.save_state() -> std::vector<std::byte>, d.load_state(span<const byte>)
// -> bool (false: refused; the import fails). A device without them carries none.
template <class D>
concept device = requires(D& d, const D& cd, std::uint64_t value, std::uint32_t offset, std::uint32_t index,
                          std::span<std::uint8_t> out, std::span<const std::uint8_t> in,
                          std::unique_ptr<vring> v) {
    { cd.features() } -> std::same_as<std::uint64_t>;
    { cd.protocol_features() } -> std::same_as<std::uint64_t>;
    { cd.vring_count() } -> std::same_as<std::uint32_t>;
    d.set_features(value);
    { d.read_config(offset, out) } -> std::same_as<bool>;
    { d.write_config(offset, in) } -> std::same_as<bool>;
    d.start_vring(std::move(v));
    { d.stop_vring(index) } -> std::same_as<std::unique_ptr<vring>>;
    d.reset();
};

} // namespace vvu::protocol
