// mapping: sole owner of one mmap()ed range (munmap on destruction). Move-only.
#pragma once

#include <vvu/util/expected.hpp>

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>

namespace vvu::memory {

class mapping {
public:
    mapping() noexcept = default;
    // Adopts a range returned by mmap (the caller gives up unmapping it).
    mapping(void* addr, std::size_t length) noexcept : addr_(addr), length_(length) {}
    mapping(const mapping&) = delete;
    mapping& operator=(const mapping&) = delete;
    mapping(mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
    mapping& operator=(mapping&& o) noexcept {
        if (this != &o) {
            reset();
            addr_ = std::exchange(o.addr_, nullptr);
            length_ = std::exchange(o.length_, 0);
        }
        return *this;
    }
    ~mapping() { reset(); }

    // mmap(fd, offset, length); errno as a system error_code on failure.
    [[nodiscard]] static expected<mapping, std::error_code> map(int fd, std::uint64_t offset, std::size_t length,
                                                                int prot = PROT_READ | PROT_WRITE,
                                                                int flags = MAP_SHARED) noexcept;

    [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
    [[nodiscard]] std::size_t size() const noexcept { return length_; }
    [[nodiscard]] bool valid() const noexcept { return addr_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }

    void reset() noexcept {
        if (addr_ != nullptr) ::munmap(addr_, length_);
        addr_ = nullptr;
        length_ = 0;
    }

private:
    void* addr_ = nullptr;
    std::size_t length_ = 0;
};

} // namespace vvu::memory
