// fd_stream: file descriptors that travel beside a byte record (byte_io.hpp), in order. The
// record says at each place whether an fd is there (one byte); the fds themselves go in a list
// the sender passes by SCM_RIGHTS. A live update saves a component's state this way: the
// writer duplicates each fd it names (the component keeps its own), the reader takes them back
// in the same order and fails the record — latched, as byte_reader does — when one is missing.
#pragma once

#include <vvu/util/byte_io.hpp>
#include <vvu/util/unique_fd.hpp>

#include <cstddef>
#include <span>
#include <vector>

namespace vvu {

class fd_writer {
public:
    explicit fd_writer(std::vector<unique_fd>& out) noexcept : out_(out) {}

    // Notes whether `fd` (borrowed; -1 for none) is there and queues a duplicate of it.
    void put(byte_writer& w, int fd) {
        bool present = fd >= 0;
        if (present) {
            unique_fd d = dup_cloexec(fd);
            if (d) out_.push_back(std::move(d));
            else ok_ = present = false;
        }
        w.put_bool(present);
    }
    // False when an fd could not be duplicated (EMFILE): the record lacks it.
    [[nodiscard]] bool ok() const noexcept { return ok_; }

private:
    std::vector<unique_fd>& out_;
    bool ok_ = true;
};

class fd_reader {
public:
    explicit fd_reader(std::span<unique_fd> fds) noexcept : fds_(fds) {}

    // The next fd when the record says one is there; a record that names more fds than came
    // fails `r`.
    [[nodiscard]] unique_fd take(byte_reader& r) {
        if (!r.get_bool()) return {};
        if (next_ >= fds_.size() || !fds_[next_]) {
            r.fail();
            return {};
        }
        return std::move(fds_[next_++]);
    }
    // Every fd that came was named (a record that names fewer is malformed too).
    [[nodiscard]] bool all_taken() const noexcept { return next_ == fds_.size(); }

private:
    std::span<unique_fd> fds_;
    std::size_t next_ = 0;
};

} // namespace vvu
