// vvu-test-vfio-gpio SOCKET: vfio_user::client against libvfio-user's gpio-pci-idio-16 sample
// (an independent vfio-user server). Every check prints what it saw; the first failure ends
// the run with exit 1.
//
// What the sample does (samples/gpio-pci-idio-16.c at efd091b): vendor 0x494f, device 0x0dc8;
// BAR 2 is 0x100 bytes of registers: a write to 0x0 (0x4) counts one pulse on each output pin
// 0-7 (8-15) whose bit is set in the written byte; a read of 0x1 (0x5) returns, for pins 0-7
// (8-15), bit i set when pin i's pulse count is a multiple of 3. Its counts live as long as
// the process, so the probe reasons about changes, never about absolute values. One INTx
// vector; libvfio-user signals the INTx eventfd when the client triggers it with
// SET_IRQS(DATA_NONE | ACTION_TRIGGER).
#include <vvu/vfio_user/client.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>

using namespace vvu;
using namespace vvu::vfio_user;

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    std::exit(1);
}
void ok(const std::string& what) { std::printf("ok: %s\n", what.c_str()); }

template <class T>
T must(expected<T, error> r, const std::string& what) {
    if (!r) die(what + ": " + r.error().message());
    return std::move(*r);
}
void must(expected<void, error> r, const std::string& what) {
    if (!r) die(what + ": " + r.error().message());
}

std::uint8_t read_reg(client& c, std::uint64_t off) {
    std::array<std::byte, 1> b{};
    must(c.region_read(2, off, b), fmt::format("REGION_READ BAR 2 at {:#x}", off));
    return static_cast<std::uint8_t>(b[0]);
}
void write_reg(client& c, std::uint64_t off, std::uint8_t v) {
    const std::array<std::byte, 1> b{std::byte{v}};
    must(c.region_write(2, off, b), fmt::format("REGION_WRITE BAR 2 at {:#x}", off));
}

// Pulses pin `bit` of the output register three times through `pulse` and checks what the
// input register shows: the pin's bit is set after exactly one of the three pulses (its count
// takes three consecutive values, one of them a multiple of 3) and no other bit moves.
template <class Pulse>
void check_pin(client& c, std::uint64_t in_reg, int bit, const char* how, Pulse pulse) {
    const std::uint8_t before = read_reg(c, in_reg);
    int set = 0;
    std::string seen = fmt::format("{:#04x}", before);
    for (int i = 0; i < 3; ++i) {
        pulse();
        const std::uint8_t now = read_reg(c, in_reg);
        seen += fmt::format(" -> {:#04x}", now);
        if ((now ^ before) & ~(1u << bit) & 0xff)
            die(fmt::format("{}: input register {:#x} changed other bits ({})", how, in_reg, seen));
        if (now & (1u << bit)) ++set;
    }
    if (set != 1)
        die(fmt::format("{}: pin bit {} of register {:#x} was set after {} of 3 pulses, want 1 ({})", how, bit, in_reg,
                        set, seen));
    ok(fmt::format("{}: register {:#x} went {} (pin bit {} set after exactly one of three pulses)", how, in_reg, seen,
                   bit));
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
        return 2;
    }
    auto c = must(client::connect(argv[1], std::chrono::milliseconds(5000)), "connect + VERSION");
    ok(fmt::format("VERSION {}.{}: server max_msg_fds {} max_data_xfer_size {}", c.version().major, c.version().minor,
                   c.version().server.max_msg_fds, c.version().server.max_data_xfer_size));

    const auto info = must(c.get_device_info(), "DEVICE_GET_INFO");
    if (!(info.flags & device_flags::pci)) die(fmt::format("DEVICE_GET_INFO: flags {:#x} without PCI", info.flags));
    if (info.num_regions < 9 || info.num_irqs < 1)
        die(fmt::format("DEVICE_GET_INFO: {} regions, {} irq types", info.num_regions, info.num_irqs));
    ok(fmt::format("DEVICE_GET_INFO: flags {:#x}, {} regions, {} irq types", info.flags, info.num_regions, info.num_irqs));

    std::array<std::byte, 4> id{};
    must(c.config_read(0, id), "config space read");
    const unsigned vendor = static_cast<unsigned>(id[0]) | static_cast<unsigned>(id[1]) << 8;
    const unsigned device = static_cast<unsigned>(id[2]) | static_cast<unsigned>(id[3]) << 8;
    if (vendor != 0x494f || device != 0x0dc8)
        die(fmt::format("config space: vendor {:#06x} device {:#06x}, want 0x494f 0x0dc8", vendor, device));
    ok(fmt::format("config space: vendor {:#06x} device {:#06x}", vendor, device));

    const auto bar2 = must(c.region_info(2), "GET_REGION_INFO BAR 2");
    if (bar2.size != 0x100 || !(bar2.flags & region_flags::read) || !(bar2.flags & region_flags::write))
        die(fmt::format("GET_REGION_INFO BAR 2: size {:#x} flags {:#x}, want 0x100 read/write", bar2.size, bar2.flags));
    ok(fmt::format("GET_REGION_INFO BAR 2: size {:#x} flags {:#x}, {} fds", bar2.size, bar2.flags, bar2.fds.size()));
    const auto cfg = must(c.region_info(config_region), "GET_REGION_INFO config");
    ok(fmt::format("GET_REGION_INFO config: size {:#x}", cfg.size));
    if (auto w = c.map_window(2, 0, 0x100); w) die("map_window BAR 2 succeeded, but the sample's BAR 2 has no mmap");
    else ok("map_window BAR 2 refused (not mappable): " + w.error().message());

    ok(fmt::format("BAR 2 input registers: 0x1 = {:#04x}, 0x5 = {:#04x}", read_reg(c, 1), read_reg(c, 5)));
    check_pin(c, 0x1, 0, "REGION_WRITE 0x01 at 0x0", [&] { write_reg(c, 0x0, 0x01); });
    check_pin(c, 0x1, 3, "REGION_WRITE 0x08 at 0x0", [&] { write_reg(c, 0x0, 0x08); });

    // No ioeventfds here: the doorbell falls back to a 16-bit REGION_WRITE (low byte 0x01 at
    // 0x4 pulses pin 8).
    const auto io = must(c.region_io_fds(2), "GET_REGION_IO_FDS BAR 2");
    ok(fmt::format("GET_REGION_IO_FDS BAR 2: {} sub-regions", io.sub_regions.size()));
    const auto bell = must(c.doorbell(2, 0x4, 0x0001), "doorbell BAR 2 at 0x4");
    check_pin(c, 0x5, 0, "doorbell (REGION_WRITE fallback) at 0x4", [&] { bell.ring(); });

    // DMA: a memfd mapped at a bus address, a wrong-size unmap refused, the exact unmap done.
    unique_fd mem(::memfd_create("vvu-gpio-dma", MFD_CLOEXEC));
    if (!mem || ::ftruncate(mem.get(), 0x4000) != 0) die("memfd");
    must(c.dma_map(mem.get(), 0x1000, 0x1'0000'0000, 0x2000), "DMA_MAP [0x100000000, +0x2000)");
    ok("DMA_MAP of a memfd at 0x100000000 (+0x2000, file offset 0x1000)");
    if (auto r = c.dma_unmap(0x1'0000'0000, 0x1000); r)
        std::printf("note: the server accepted DMA_UNMAP of part of a map\n");
    else
        ok("DMA_UNMAP of part of the map refused: " + r.error().message());
    must(c.dma_unmap(0x1'0000'0000, 0x2000), "DMA_UNMAP [0x100000000, +0x2000)");
    ok("DMA_UNMAP of the whole map");

    // INTx: one vector; our eventfd, then a client-side trigger the server must signal.
    const std::uint32_t intx = must(c.irq_count(pci::irq_kind::intx), "GET_IRQ_INFO INTx");
    if (intx != 1) die(fmt::format("GET_IRQ_INFO INTx: {} vectors, want 1", intx));
    ok("GET_IRQ_INFO INTx: 1 vector");
    unique_fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const int fds[1] = {efd.get()};
    must(c.set_irq_eventfds(pci::irq_kind::intx, 0, fds), "SET_IRQS INTx eventfd");
    ok("SET_IRQS INTx: DATA_EVENTFD | ACTION_TRIGGER accepted");
    must(c.set_irqs(irq_set_flags::data_none | irq_set_flags::action_trigger, 0, 0, 1), "SET_IRQS INTx trigger");
    pollfd p{efd.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) die("SET_IRQS trigger: the INTx eventfd was not signalled within 2 s");
    std::uint64_t count = 0;
    if (::read(efd.get(), &count, sizeof(count)) != sizeof(count) || count == 0) die("INTx eventfd read");
    ok(fmt::format("INTx eventfd signalled by the server (count {})", count));
    const int detach[1] = {-1};
    must(c.set_irq_eventfds(pci::irq_kind::intx, 0, detach), "SET_IRQS INTx de-assign");
    must(c.set_irqs(irq_set_flags::data_none | irq_set_flags::action_trigger, 0, 0, 1), "SET_IRQS INTx trigger");
    if (::poll(&p, 1, 200) != 0) die("INTx eventfd signalled after it was de-assigned");
    ok("INTx eventfd de-assigned: a trigger no longer signals it");

    if (info.flags & device_flags::reset) {
        must(c.reset(), "DEVICE_RESET");
        ok("DEVICE_RESET");
    }
    if (auto r = c.get_irq_info(9); r) die("GET_IRQ_INFO index 9 succeeded");
    else ok("GET_IRQ_INFO index 9 refused: " + r.error().message());
    must(c.config_read(0, id), "config read after an error reply");
    ok("the connection survives error replies");
    std::printf("PASS: vvu vfio_user::client against libvfio-user gpio-pci-idio-16\n");
    return 0;
}
