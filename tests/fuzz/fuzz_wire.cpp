// libFuzzer target for the wire codec. Input: one control byte, then one message.
//   control bits 0-3: how many fds came with the message (0-15; more than 8 must be refused)
//   control bits 4-5: 0 = front-end request, 1 = back-end request, 2 = reply on the main
//                     socket, 3 = reply on the back-end channel
// Whatever decodes must re-encode to exactly the input bytes and fds.
#include <vvu/wire/codec.hpp>
#include <vvu/wire/format.hpp>

#include <algorithm>
#include <array>
#include <cstdlib>

namespace {

template <class Decoded>
void round_trip(const Decoded& decoded, std::span<const std::byte> bytes, std::span<const int> fds) {
    if (!decoded) {
        (void)decoded.error().message();
        return;
    }
    (void)vvu::wire::describe(*decoded);
    auto again = vvu::wire::encode(*decoded);
    if (!again || !std::ranges::equal(again->bytes(), bytes) || !std::ranges::equal(again->fds.span(), fds)) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace vvu::wire;
    if (size == 0) return 0;
    const unsigned control = data[0];
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    std::array<int, 15> fd_values{};
    for (std::size_t i = 0; i < fd_values.size(); ++i) fd_values[i] = static_cast<int>(100 + i);
    const std::span<const int> fds(fd_values.data(), control & 0xf);

    switch ((control >> 4) & 0x3) {
    case 0: round_trip(decode<front_request>(bytes, fds), bytes, fds); break;
    case 1: round_trip(decode<back_request>(bytes, fds), bytes, fds); break;
    case 2: round_trip(decode_any_reply<front_request>(bytes, fds), bytes, fds); break;
    case 3: round_trip(decode_any_reply<back_request>(bytes, fds), bytes, fds); break;
    }
    return 0;
}
