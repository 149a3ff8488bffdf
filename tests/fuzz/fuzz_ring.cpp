// libFuzzer target: the device side of both ring layouts over ring memory built from the input.
//
// Input: byte 0 picks layout (bit 0: packed), features (bit 1 event_idx, bit 2 indirect,
// bit 3 in_order) and queue size (bits 4-7 index a size table); byte 1 the chain length limit.
// The rest is copied into guest memory from offset 0: descriptor table first, then the
// avail/used rings (split) or event structures (packed), then indirect tables and buffers,
// so the fuzzer controls every descriptor, index and table. The device pops, writes into the
// writable parts, pushes and re-arms notifications for a bounded number of rounds; guard bytes
// around guest memory must stay intact.
#include "vvu/ring/ring.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace vvu::ring;

namespace {

// Large enough for the biggest ring in `sizes` (a packed ring of 1024: 16 KiB of descriptors
// and its event structures) with room for indirect tables and buffers after it.
constexpr std::size_t mem_size = 32 * 1024, guard = 64;
constexpr std::uint32_t sizes[16] = {1, 2, 3, 4, 5, 7, 8, 16, 32, 64, 100, 128, 255, 256, 512, 1024};

template <class Dev>
void drive(Dev& dev, std::byte* scratch) {
    for (int round = 0; round < 8 && !dev.broken(); ++round) {
        chain c[max_burst];
        const std::size_t n = dev.pop_burst(c);
        used_element u[max_burst];
        for (std::size_t i = 0; i < n; ++i) {
            std::size_t got = c[i].copy_from(std::span<std::byte>(scratch, 256));
            got = c[i].copy_to(std::span<const std::byte>(scratch, got));
            u[i] = {c[i].id(), static_cast<std::uint32_t>(got)};
        }
        (void)dev.push_burst(std::span<const used_element>(u, n));
        (void)dev.needs_interrupt();
        if (!dev.enable_notifications()) dev.disable_notifications();
        if (n == 0) break;
    }
    std::uint32_t count = 0;
    dev.for_each_inflight([&](std::uint16_t) { ++count; });
    if (count != dev.inflight_count()) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t sel = data[0];
    const bool packed = sel & 1;
    ring_features f{(sel & 2) != 0, (sel & 4) != 0, (sel & 8) != 0};
    std::uint32_t qs = sizes[sel >> 4];
    if (!packed) qs = std::min<std::uint32_t>(std::bit_floor(qs), 256);
    const std::uint32_t limit = data[1];

    static std::vector<std::byte> raw(mem_size + 2 * guard);
    std::fill(raw.begin(), raw.end(), std::byte{0xA5});
    std::byte* mem_p = raw.data() + guard;
    std::memset(mem_p, 0, mem_size);
    std::memcpy(mem_p, data + 2, std::min(size - 2, mem_size));
    local_memory mem({mem_p, mem_size}, 0x1000);
    alignas(16) static std::byte scratch[256];

    const std::uint64_t base = 0x1000;
    if (packed) {
        packed_config c{qs, base, base + 16ULL * qs, base + 16ULL * qs + 4, f, limit};
        auto dev = packed_device<local_memory>::create(mem, c);
        if (dev) drive(*dev, scratch);
    } else {
        const std::uint64_t avail = base + 16ULL * qs;
        const std::uint64_t used = (avail + split_layout::avail_bytes(qs) + 3) & ~3ULL;
        split_config c{qs, base, avail, used, f, limit};
        auto dev = split_device<local_memory>::create(mem, c);
        if (dev) drive(*dev, scratch);
    }
    for (std::size_t i = 0; i < guard; ++i)
        if (raw[i] != std::byte{0xA5} || raw[raw.size() - 1 - i] != std::byte{0xA5}) std::abort();
    return 0;
}
