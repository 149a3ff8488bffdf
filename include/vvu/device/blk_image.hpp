// The storage behind a virtio-blk back-end: a regular file (an image) or a block device, read
// and written with preadv/pwritev straight from and into the front-end's buffers. Every
// operation takes a byte range the caller has already checked against capacity(); the image
// checks it again (a range outside the image is an error here too, never an access).
#pragma once

#include <vvu/util/expected.hpp>
#include <vvu/util/range.hpp>
#include <vvu/util/unique_fd.hpp>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

namespace vvu::device::blk {

class image {
public:
    // Opens PATH for reading and (unless read_only) writing. A regular file's size, a block
    // device's BLKGETSIZE64, rounded down to whole 512-byte sectors, is the capacity.
    static expected<image, std::error_code> open(const std::string& path, bool read_only) {
        unique_fd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
        if (!fd) return unexpected(std::error_code(errno, std::system_category()));
        return adopt(std::move(fd), read_only);
    }
    static expected<image, std::error_code> adopt(unique_fd fd, bool read_only) {
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) return unexpected(std::error_code(errno, std::system_category()));
        std::uint64_t bytes = 0;
        const bool block_device = S_ISBLK(st.st_mode);
        if (block_device) {
            if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) return unexpected(std::error_code(errno, std::system_category()));
        } else if (S_ISREG(st.st_mode)) {
            bytes = static_cast<std::uint64_t>(st.st_size);
        } else {
            return unexpected(std::make_error_code(std::errc::invalid_argument)); // a pipe, a socket, …
        }
        return image(std::move(fd), bytes & ~std::uint64_t{511}, read_only, block_device);
    }

    std::uint64_t size_bytes() const noexcept { return bytes_; }
    std::uint64_t capacity_sectors() const noexcept { return bytes_ / 512; }
    bool read_only() const noexcept { return read_only_; }
    int native_handle() const noexcept { return fd_.get(); }

    // Whether [offset, offset + length) lies inside the image (overflow-safe).
    bool holds(std::uint64_t offset, std::uint64_t length) const noexcept { return range_within(offset, length, bytes_); }

    // Reads into / writes from the buffers, in order, starting at `offset`; all or an error.
    std::error_code read(std::uint64_t offset, std::span<const iovec> buffers) const noexcept {
        return transfer(offset, buffers, false);
    }
    std::error_code write(std::uint64_t offset, std::span<const iovec> buffers) const noexcept {
        if (read_only_) return std::make_error_code(std::errc::read_only_file_system);
        return transfer(offset, buffers, true);
    }
    std::error_code flush() const noexcept {
        return ::fdatasync(fd_.get()) == 0 ? std::error_code{} : std::error_code(errno, std::system_category());
    }
    // DISCARD: the range's contents become unspecified; the space is given back where the
    // storage can (a hole in a file, BLKDISCARD on a device). Storage that cannot is not an error.
    std::error_code discard(std::uint64_t offset, std::uint64_t length) const noexcept {
        if (read_only_ || !holds(offset, length)) return std::make_error_code(std::errc::invalid_argument);
        if (block_device_) {
            std::uint64_t range[2] = {offset, length};
            if (::ioctl(fd_.get(), BLKDISCARD, range) == 0 || errno == EOPNOTSUPP) return {};
            return std::error_code(errno, std::system_category());
        }
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                        static_cast<off_t>(length)) == 0 || errno == EOPNOTSUPP)
            return {};
        return std::error_code(errno, std::system_category());
    }
    // WRITE_ZEROES: the range reads back as zeroes; `may_unmap` lets it become a hole.
    std::error_code write_zeroes(std::uint64_t offset, std::uint64_t length, bool may_unmap) const noexcept {
        if (read_only_ || !holds(offset, length)) return std::make_error_code(std::errc::invalid_argument);
        if (block_device_) {
            std::uint64_t range[2] = {offset, length};
            if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return {};
        } else {
            const int mode = may_unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_ZERO_RANGE;
            if (::fallocate(fd_.get(), mode, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return {};
        }
        // The storage has no shortcut: write the zeroes.
        static const std::byte zeroes[64 * 1024] = {};
        while (length != 0) {
            const auto n = std::min<std::uint64_t>(length, sizeof zeroes);
            const iovec v{const_cast<std::byte*>(zeroes), static_cast<std::size_t>(n)};
            if (auto e = transfer(offset, {&v, 1}, true)) return e;
            offset += n;
            length -= n;
        }
        return {};
    }

private:
    image(unique_fd fd, std::uint64_t bytes, bool read_only, bool block_device)
        : fd_(std::move(fd)), bytes_(bytes), read_only_(read_only), block_device_(block_device) {}

    std::error_code transfer(std::uint64_t offset, std::span<const iovec> buffers, bool write) const noexcept {
        std::uint64_t total = 0;
        for (const iovec& v : buffers) total += v.iov_len;
        if (!holds(offset, total)) return std::make_error_code(std::errc::invalid_argument);
        // preadv/pwritev take at most IOV_MAX buffers and may do part of the work: go on from
        // where each call stopped, within one buffer if need be.
        constexpr std::size_t iov_max = 1024;
        std::size_t first = 0;
        std::size_t skip = 0; // bytes of buffers[first] already done
        while (first < buffers.size()) {
            iovec batch[iov_max];
            std::size_t n = 0;
            for (std::size_t i = first; i < buffers.size() && n < iov_max; ++i, ++n) {
                batch[n] = buffers[i];
                if (i == first) {
                    batch[n].iov_base = static_cast<std::byte*>(batch[n].iov_base) + skip;
                    batch[n].iov_len -= skip;
                }
            }
            const ssize_t r = write ? ::pwritev(fd_.get(), batch, static_cast<int>(n), static_cast<off_t>(offset))
                                    : ::preadv(fd_.get(), batch, static_cast<int>(n), static_cast<off_t>(offset));
            if (r < 0) {
                if (errno == EINTR) continue;
                return std::error_code(errno, std::system_category());
            }
            if (r == 0) {
                bool nothing_left = true;
                for (std::size_t i = 0; i < n; ++i) nothing_left = nothing_left && batch[i].iov_len == 0;
                if (nothing_left) { first += n; skip = 0; continue; }
                return std::make_error_code(std::errc::io_error); // the file shrank under us
            }
            offset += static_cast<std::uint64_t>(r);
            auto done = static_cast<std::size_t>(r);
            while (done != 0) {
                const std::size_t left = buffers[first].iov_len - skip;
                if (done < left) { skip += done; done = 0; }
                else { done -= left; ++first; skip = 0; }
            }
            while (first < buffers.size() && buffers[first].iov_len == skip) { ++first; skip = 0; }
        }
        return {};
    }

    unique_fd fd_;
    std::uint64_t bytes_;
    bool read_only_;
    bool block_device_;
};

} // namespace vvu::device::blk
