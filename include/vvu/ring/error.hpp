// Ring errors: every way ring memory written by the other side can be malformed, plus setup
// failures. A device (or driver) side that meets one marks its ring broken and stops using it;
// the error travels as std::error_code (category "vvu.ring").
#pragma once

#include <vvu/util/error_category.hpp>

#include <string>
#include <system_error>

namespace vvu::ring {

enum class errc {
    // setup
    bad_queue_size = 1,        // split: not a power of two in [1, 32768]; packed: not in [1, 32768]
    ring_out_of_memory,        // a ring area is not inside the memory policy
    ring_misaligned,           // a ring area violates the alignment of virtio 1.2 §2.7 / §2.8
    // available side (seen by the device)
    avail_index_too_far,       // split: avail idx moved more than the queue size past the last seen;
                               // packed (tracked): more descriptors in flight than the ring holds
    head_out_of_range,         // split: avail ring entry >= queue size
    next_out_of_range,         // `next` beyond the descriptor table (or the indirect table)
    chain_loops,               // more steps in one table than it has entries
    chain_too_long,            // more descriptors than the chain length limit
    buffer_out_of_memory,      // a buffer's address/length is not inside the memory policy
    length_overflow,           // the chain's total length does not fit 32 bits
    readable_after_writable,   // a device-readable descriptor after a device-writable one
    indirect_not_negotiated,   // VIRTQ_DESC_F_INDIRECT without VIRTIO_RING_F_INDIRECT_DESC
    nested_indirect,           // an indirect descriptor inside an indirect table
    indirect_with_next,        // indirect descriptor with NEXT (split) / inside a list (packed)
    bad_indirect_length,       // indirect table length 0 or not a multiple of 16
    indirect_too_long,         // indirect table with more entries than the chain length limit
    indirect_out_of_memory,    // the indirect table is not inside the memory policy
    head_in_use,               // split head / packed buffer id already taken and not yet used
    id_out_of_range,           // packed: buffer id >= queue size
    chain_unavailable,         // packed: a chained descriptor was not made available
    // used side (seen by the driver)
    used_index_too_far,        // split: used idx moved more than the queue size
    bad_used_id,               // used element names a buffer that is not in flight
    // inflight tracking (ring/inflight.hpp)
    inflight_region_too_small, // the inflight region cannot hold this ring's entries
    inflight_region_mismatch,  // the inflight region is of another version or ring size
    inflight_region_corrupt,   // the inflight region holds what no back-end could have written
    inflight_position_mismatch, // the ring position given contradicts the inflight region
    // live update (split_driver::restore)
    bad_saved_state,           // a driver's saved state does not describe a ring of this size
};

[[nodiscard]] constexpr const char* describe(errc e) noexcept {
    switch (e) {
    case errc::bad_queue_size: return "invalid queue size for this ring layout";
    case errc::ring_out_of_memory: return "ring area outside guest memory";
    case errc::ring_misaligned: return "ring area misaligned";
    case errc::avail_index_too_far: return "available index moved more than the queue size";
    case errc::head_out_of_range: return "available ring entry out of range";
    case errc::next_out_of_range: return "next descriptor index out of range";
    case errc::chain_loops: return "descriptor chain loops";
    case errc::chain_too_long: return "descriptor chain too long";
    case errc::buffer_out_of_memory: return "buffer outside guest memory";
    case errc::length_overflow: return "descriptor chain total length overflows";
    case errc::readable_after_writable: return "readable descriptor after a writable one";
    case errc::indirect_not_negotiated: return "indirect descriptor not negotiated";
    case errc::nested_indirect: return "indirect descriptor inside an indirect table";
    case errc::indirect_with_next: return "indirect descriptor chained to other descriptors";
    case errc::bad_indirect_length: return "indirect table length not a non-zero multiple of 16";
    case errc::indirect_too_long: return "indirect table too long";
    case errc::indirect_out_of_memory: return "indirect table outside guest memory";
    case errc::head_in_use: return "descriptor chain already in flight";
    case errc::id_out_of_range: return "buffer id out of range";
    case errc::chain_unavailable: return "chained descriptor not available";
    case errc::used_index_too_far: return "used index moved more than the queue size";
    case errc::bad_used_id: return "used element names a buffer not in flight";
    case errc::inflight_region_too_small: return "inflight region too small for the ring";
    case errc::inflight_region_mismatch: return "inflight region of another version or ring size";
    case errc::inflight_region_corrupt: return "inflight region corrupt";
    case errc::inflight_position_mismatch: return "ring position contradicts the inflight region";
    case errc::bad_saved_state: return "saved driver state is inconsistent";
    }
    return "unknown ring error";
}

[[nodiscard]] inline const std::error_category& ring_category() noexcept {
    return enum_category<errc, "vvu.ring">::instance();
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), ring_category()};
}

} // namespace vvu::ring

template <>
struct std::is_error_code_enum<vvu::ring::errc> : std::true_type {};
