#include <vvu/transport/message.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>

namespace {
bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }
} // namespace

TEST_CASE("owned_fds owns at most 8 fds and closes what is not taken", "[transport]") {
    using vvu::unique_fd;
    std::vector<int> raw;
    int kept = -1;
    {
        vvu::transport::owned_fds fds;
        for (int i = 0; i < 8; ++i) {
            raw.push_back(::eventfd(0, EFD_CLOEXEC));
            CHECK(fds.push_back(unique_fd(raw.back())));
        }
        const int ninth = ::eventfd(0, EFD_CLOEXEC);
        CHECK_FALSE(fds.push_back(unique_fd(ninth)));
        CHECK_FALSE(is_open(ninth)); // refused and closed
        CHECK(fds.size() == 8);
        CHECK(fds.span()[3] == raw[3]);

        unique_fd taken = fds.take(3);
        CHECK(taken.get() == raw[3]);
        CHECK(fds[3] == -1);
        CHECK_FALSE(fds.take(3).valid());
        CHECK_FALSE(fds.take(9).valid());
        kept = taken.release();

        vvu::transport::owned_fds moved(std::move(fds));
        CHECK(fds.empty());
        CHECK(moved.size() == 8);
    }
    for (int i = 0; i < 8; ++i)
        if (i != 3) CHECK_FALSE(is_open(raw[static_cast<std::size_t>(i)]));
    CHECK(is_open(kept));
    ::close(kept);
}

TEST_CASE("received_message spans cover header and payload", "[transport]") {
    vvu::transport::received_message m;
    m.header = {2, 1, 8};
    CHECK(m.bytes().size() == 20);
    CHECK(m.payload().size() == 8);
    CHECK(m.payload().data() == m.storage.data() + 12);
}
