// vfio_user::client against vfio_user::server over a real UNIX socket, every command.
#include "harness.hpp"

#include <vvu/vfio_user/client.hpp>

#include <catch2/catch.hpp>

#include <sys/eventfd.h>
#include <sys/mman.h>

using namespace vvu;
using namespace vvu::vfio_user;
using namespace vvu_test;

namespace {

client connect_ok(const std::string& path) {
    auto c = client::connect(path, std::chrono::milliseconds(3000));
    if (!c) FAIL("connect: " << c.error().message());
    return std::move(*c);
}

std::uint64_t eventfd_count(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) return 0;
    std::uint64_t n = 0;
    return ::read(fd, &n, 8) == 8 ? n : 0;
}

} // namespace

TEST_CASE("vfio-user client: VERSION, device info, region and irq info") {
    register_device dev;
    server_thread st(dev, "info");
    auto c = connect_ok(st.path());
    CHECK(c.version().major == 0);
    CHECK(c.version().server.max_msg_fds == 16);
    CHECK(c.version().server.max_data_xfer_size == (1u << 20));
    CHECK(c.version().server.pgsizes == 4096);

    auto info = c.get_device_info();
    REQUIRE(info);
    CHECK(info->flags == (device_flags::pci | device_flags::reset));
    CHECK(info->num_regions == 9);
    CHECK(info->num_irqs == 5);

    auto cfg = c.region_info(7);
    REQUIRE(cfg);
    CHECK(cfg->size == 256);
    CHECK(cfg->areas.empty());
    CHECK(cfg->fds.empty());

    auto bar0 = c.region_info(0);
    REQUIRE(bar0);
    CHECK((bar0->flags & region_flags::caps));
    REQUIRE(bar0->areas.size() == 2);
    CHECK(bar0->areas[0].offset == 0x1000);
    CHECK(bar0->areas[0].size == 0x800);
    CHECK(bar0->areas[1].offset == 0x1800);
    CHECK(bar0->fds.size() == 1);
    CHECK_FALSE(bar0->fd_per_area);

    auto win = c.region_info(4);
    REQUIRE(win);
    CHECK(win->areas.size() == 2);
    CHECK(win->fds.size() == 2);
    CHECK(win->fd_per_area);

    auto bad = c.region_info(9);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code.value() == EINVAL);
    CHECK(c.connected()); // an error reply leaves the connection usable

    auto irq = c.get_irq_info(2);
    REQUIRE(irq);
    CHECK(irq->count == 4);
    CHECK(c.irq_count(pci::irq_kind::intx).value() == 1);
    CHECK_FALSE(c.get_irq_info(5));

    auto io = c.region_io_fds(2);
    REQUIRE(io);
    REQUIRE(io->sub_regions.size() == 1);
    CHECK(io->sub_regions[0].offset == register_device::bar2_doorbell);
    CHECK(io->sub_regions[0].size == 2);
    CHECK(io->fds.size() == 1);
    auto none = c.region_io_fds(7);
    REQUIRE(none);
    CHECK(none->sub_regions.empty());

    REQUIRE(c.reset());
    CHECK(dev.resets == 1);
}

TEST_CASE("vfio-user client: config and region read/write, map_window agrees with REGION_READ") {
    register_device dev;
    server_thread st(dev, "rw");
    auto c = connect_ok(st.path());

    std::array<std::byte, 4> id{};
    REQUIRE(c.config_read(0, id));
    CHECK(id == std::array<std::byte, 4>{std::byte{0x36}, std::byte{0x1b}, std::byte{0x99}, std::byte{0}});
    const std::array<std::byte, 2> cmd{std::byte{6}, std::byte{0}};
    REQUIRE(c.config_write(4, cmd));
    std::array<std::byte, 2> back{};
    REQUIRE(c.config_read(4, back));
    CHECK(back == cmd);
    std::array<std::byte, 8> over{};
    auto r = c.config_read(252, over);
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == EINVAL);
    CHECK(r.error().message().find("REGION_READ region 7") != std::string::npos);

    // BAR 0: the mappable half through a window, the same bytes through REGION_READ/WRITE.
    auto w = c.map_window(0, 0x1100, 0x100);
    REQUIRE(w);
    CHECK(w->length == 0x100);
    for (int i = 0; i < 0x100; ++i) w->host[i] = static_cast<std::byte>(i ^ 0x3c);
    std::vector<std::byte> via_msg(0x100);
    REQUIRE(c.region_read(0, 0x1100, via_msg));
    CHECK(std::equal(via_msg.begin(), via_msg.end(), w->host));
    const std::array<std::byte, 3> poke{std::byte{1}, std::byte{2}, std::byte{3}};
    REQUIRE(c.region_write(0, 0x1180, poke));
    CHECK(w->host[0x80] == std::byte{1});
    CHECK(w->host[0x82] == std::byte{3});
    CHECK_FALSE(c.map_window(0, 0x0, 0x100));      // the registers half is not mappable
    CHECK_FALSE(c.map_window(0, 0x1f00, 0x200));   // past the region
    CHECK_FALSE(c.map_window(0, 0x17f0, 0x20));    // straddles two areas
    auto w2 = c.map_window(0, 0x1800, 0x10);       // the second area, same fd
    REQUIRE(w2);
    w2->host[0] = std::byte{0x5e};
    std::array<std::byte, 1> b2{};
    REQUIRE(c.region_read(0, 0x1800, b2));
    CHECK(b2[0] == std::byte{0x5e});
    CHECK_FALSE(c.map_window(2, 0, 0x10));         // BAR 2 has no MMAP
    CHECK_FALSE(c.map_window(0, 0x1000, 0));

    // BAR 4: per-area fds — area 1 is its own file, mapped from its offset 0.
    auto w1 = c.map_window(4, 0x1010, 0x20);
    REQUIRE(w1);
    w1->host[0] = std::byte{0xee};
    std::byte b{};
    REQUIRE(::pread(dev.window_fd(1), &b, 1, 0x10) == 1);
    CHECK(b == std::byte{0xee});
    std::array<std::byte, 1> rb{};
    REQUIRE(c.region_read(4, 0x1010, rb));
    CHECK(rb[0] == std::byte{0xee});
    CHECK_FALSE(c.map_window(4, 0xff0, 0x20)); // straddles the two areas

    // A large read is split into max_data_xfer_size pieces transparently (here one piece).
    std::vector<std::byte> big(0x2000);
    REQUIRE(c.region_read(0, 0, big));
    CHECK(big[0x1100] == static_cast<std::byte>(0 ^ 0x3c));
}

TEST_CASE("vfio-user client: doorbells through the ioeventfd and through REGION_WRITE") {
    register_device dev;
    server_thread st(dev, "bell");
    auto c = connect_ok(st.path());
    auto fast = c.doorbell(2, register_device::bar2_doorbell, 1);
    REQUIRE(fast);
    const int writes_before = dev.writes;
    fast->ring();
    fast->ring();
    CHECK(dev.doorbell_count() == 2);
    CHECK(dev.writes == writes_before); // no message for an ioeventfd doorbell

    auto slow = c.doorbell(2, register_device::bar2_register, 0x1234);
    REQUIRE(slow);
    slow->ring();
    CHECK(dev.register_writes == 1);
    CHECK(dev.bar2_byte(register_device::bar2_register) == 0x34);
    CHECK(dev.bar2_byte(register_device::bar2_register + 1) == 0x12);
    // Ringing from other threads at once is safe.
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i) ts.emplace_back([&] { for (int k = 0; k < 25; ++k) slow->ring(); });
    for (auto& t : ts) t.join();
    CHECK(dev.register_writes == 101);
    CHECK_FALSE(c.doorbell(2, register_device::bar2_size - 1, 0)); // no room for 16 bits
}

TEST_CASE("vfio-user client: DMA map of a memfd is seen through dma_space, unmap, irqs") {
    register_device dev;
    server_thread st(dev, "dma");
    auto c = connect_ok(st.path());
    auto mem = make_memfd("guest", 0x4000);
    auto* mine = static_cast<std::byte*>(::mmap(nullptr, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0));
    REQUIRE(mine != MAP_FAILED);
    REQUIRE(c.dma_map(mem.get(), 0x1000, 0x8000'0000, 0x2000));
    CHECK(dev.maps == 1);
    mine[0x1000 + 0x44] = std::byte{0x99};
    // The server thread is idle between messages: its dma_space is stable here.
    std::byte* seen = st.srv().dma().translate(0x8000'0044, 1);
    REQUIRE(seen);
    CHECK(*seen == std::byte{0x99});
    auto again = c.dma_map(mem.get(), 0, 0x8000'1000, 0x1000);
    REQUIRE_FALSE(again);
    CHECK(again.error().code.value() == EEXIST);
    auto wrong = c.dma_unmap(0x8000'0000, 0x1000);
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code.value() == EINVAL);
    REQUIRE(c.dma_unmap(0x8000'0000, 0x2000));
    CHECK(dev.unmaps == 1);
    CHECK(st.srv().dma().translate(0x8000'0044, 1) == nullptr);
    ::munmap(mine, 0x4000);

    // MSI-X eventfds: vectors 1 and 3 (2 de-assigned), then the device signals them.
    unique_fd e1(::eventfd(0, EFD_CLOEXEC)), e3(::eventfd(0, EFD_CLOEXEC));
    const int fds[3] = {e1.get(), -1, e3.get()};
    REQUIRE(c.set_irq_eventfds(pci::irq_kind::msix, 1, fds));
    CHECK(dev.trigger(2, 1));
    CHECK_FALSE(dev.trigger(2, 2));
    CHECK(dev.trigger(2, 3));
    CHECK(eventfd_count(e1.get()) == 1);
    CHECK(eventfd_count(e3.get()) == 1);
    const int too_many[2] = {e1.get(), e3.get()};
    auto beyond = c.set_irq_eventfds(pci::irq_kind::msix, 3, too_many);
    REQUIRE_FALSE(beyond);
    CHECK(beyond.error().code.value() == EINVAL);
    // Detach all (count 0), then the device has nothing to signal.
    REQUIRE(c.set_irqs(irq_set_flags::data_none | irq_set_flags::action_trigger, 2, 0, 0));
    CHECK_FALSE(dev.trigger(2, 1));
}

TEST_CASE("vfio-user server: a second client is refused while one is attached; detach clears state") {
    register_device dev;
    server_thread st(dev, "busy");
    const int before = count_open_fds();
    {
        auto c = connect_ok(st.path());
        auto mem = make_memfd("guest", 0x1000);
        REQUIRE(c.dma_map(mem.get(), 0, 0x1000, 0x1000));
        auto second = client::connect(st.path(), std::chrono::milliseconds(1000));
        CHECK_FALSE(second);
        std::array<std::byte, 2> still{};
        CHECK(c.config_read(0, still).has_value()); // the first client is unaffected
    }
    // The first client went: DMA cleared, device told, the next client attaches.
    CHECK(settle_fds(before) == before);
    // (drop_client closes the socket before it tells the device: wait for that too)
    for (int i = 0; i < 300 && dev.detaches < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(dev.detaches >= 1);
    auto c2 = connect_ok(st.path());
    std::array<std::byte, 2> v{};
    REQUIRE(c2.config_read(0, v));
    CHECK(v[0] == std::byte{0x36});
    CHECK(st.srv().dma().size() == 0);
}
