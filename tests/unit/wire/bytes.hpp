// Test helper: builds little-endian byte vectors field by field, independently of the codec,
// so that expected wire images are written from the spec's tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace vvu::test {

class le_bytes {
public:
    le_bytes& u8(std::uint8_t v) { return put(v, 1); }
    le_bytes& u16(std::uint16_t v) { return put(v, 2); }
    le_bytes& u32(std::uint32_t v) { return put(v, 4); }
    le_bytes& u64(std::uint64_t v) { return put(v, 8); }
    le_bytes& zeros(std::size_t n) { return put(0, 1, n); }
    le_bytes& fill(std::uint8_t v, std::size_t n) { return put(v, 1, n); }
    // A header: request, flags, size.
    le_bytes& header(std::uint32_t request, std::uint32_t flags, std::uint32_t size) {
        return u32(request).u32(flags).u32(size);
    }
    [[nodiscard]] const std::vector<std::byte>& get() const { return bytes_; }
    operator const std::vector<std::byte>&() const { return bytes_; }

private:
    le_bytes& put(std::uint64_t v, int width, std::size_t times = 1) {
        for (std::size_t t = 0; t < times; ++t)
            for (int i = 0; i < width; ++i) bytes_.push_back(static_cast<std::byte>(v >> (8 * i)));
        return *this;
    }
    std::vector<std::byte> bytes_;
};

} // namespace vvu::test
