// The VVU PCI function model, byte by byte: config space and capabilities, BAR sizing, the
// virtio initialisation sequence, interrupts through eventfds, BAR 2, and hostile accesses.
#include <vvu/vvu/function_model.hpp>

#include "../vfio_user/harness.hpp"

#include <vvu/vfio_user/client.hpp>

#include <vvu/util/endian.hpp>
#include <vvu/wire/features.hpp>

#include <catch2/catch.hpp>

#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <utility>
#include <vector>

using namespace ::vvu::vvu_device;
using ::vvu::unique_fd;
namespace le = ::vvu::le;
namespace vfio_user = ::vvu::vfio_user;
namespace vf = ::vvu::pci::vvu_function;
namespace regs = ::vvu::pci::vvu_function::registers;
namespace cc = ::vvu::pci::common;

namespace {

constexpr std::uint32_t cfg_region = vfio_user::config_region;
constexpr std::uint32_t bar4 = regs::bar;
constexpr std::uint32_t bar2 = vf::vvu_bar::bar;

// Records every callback; window reads/writes go to a small buffer.
struct test_owner final : function_owner {
    std::vector<std::uint16_t> notified;
    std::vector<std::uint32_t> doorbells;
    std::vector<std::pair<std::uint8_t, std::uint8_t>> statuses;
    std::vector<std::uint32_t> backend_writes;
    std::vector<window_area> areas;
    std::map<std::uint32_t, int> call_fds;
    int detached = 0;
    int routing_changes = 0;
    int window_errno = 0;
    std::vector<std::pair<std::uint64_t, std::vector<std::byte>>> window_writes;
    std::uint64_t last_window_read = ~0ull;

    void queue_notified(std::uint16_t q) override { notified.push_back(q); }
    void doorbell_rung(std::uint32_t v) override { doorbells.push_back(v); }
    void status_changed(std::uint8_t o, std::uint8_t n) override { statuses.emplace_back(o, n); }
    void backend_status_written(std::uint32_t v) override { backend_writes.push_back(v); }
    int window_read(std::uint64_t offset, std::span<std::byte> out) override {
        last_window_read = offset;
        std::fill(out.begin(), out.end(), std::byte{0x5a});
        return window_errno;
    }
    int window_write(std::uint64_t offset, std::span<const std::byte> in) override {
        window_writes.emplace_back(offset, std::vector<std::byte>(in.begin(), in.end()));
        return window_errno;
    }
    std::vector<window_area> window_areas() override { return areas; }
    int doorbell_eventfd(std::uint32_t vring) override {
        auto it = call_fds.find(vring);
        return it == call_fds.end() ? -1 : it->second;
    }
    void client_detached() override { ++detached; }
    void interrupts_changed() override { ++routing_changes; }
};

struct fixture {
    test_owner owner;
    function_model fn;
    explicit fixture(std::uint32_t max_queues = 8, std::uint32_t vectors = 0)
        : fn(function_options{.max_queues = max_queues,
                              .uuid = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
                                       0x1c, 0x1d, 0x1e, 0x1f},
                              .msix_vectors = vectors},
             owner) {}

    template <class T>
    T read(std::uint32_t region, std::uint64_t offset) {
        std::array<std::byte, sizeof(T)> b{};
        REQUIRE(fn.region_read(region, offset, b) == 0);
        return le::load<T>(b.data());
    }
    template <class T>
    void write(std::uint32_t region, std::uint64_t offset, T value) {
        std::array<std::byte, sizeof(T)> b{};
        le::store<T>(b.data(), value);
        REQUIRE(fn.region_write(region, offset, b) == 0);
    }
    std::uint8_t status() { return read<std::uint8_t>(bar4, regs::common + cc::device_status); }
    void set_status(std::uint8_t s) { write<std::uint8_t>(bar4, regs::common + cc::device_status, s); }
    void select_queue(std::uint16_t q) { write<std::uint16_t>(bar4, regs::common + cc::queue_select, q); }
    void write_driver_features(std::uint64_t f) {
        write<std::uint32_t>(bar4, regs::common + cc::driver_feature_select, 0);
        write<std::uint32_t>(bar4, regs::common + cc::driver_feature, static_cast<std::uint32_t>(f));
        write<std::uint32_t>(bar4, regs::common + cc::driver_feature_select, 1);
        write<std::uint32_t>(bar4, regs::common + cc::driver_feature, static_cast<std::uint32_t>(f >> 32));
    }
};

struct eventfd_guard {
    unique_fd fd{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
    // The counter since the last take (0 when not signalled).
    std::uint64_t take() const {
        std::uint64_t v = 0;
        if (::read(fd.get(), &v, sizeof v) != sizeof v) return 0;
        return v;
    }
};

// Hands `fds` (dup()ed: the model takes ownership) to SET_IRQS DATA_EVENTFD|TRIGGER.
int attach(function_model& fn, std::uint32_t index, std::uint32_t start, std::vector<int> fds) {
    std::vector<unique_fd> owned;
    for (int fd : fds) owned.emplace_back(fd >= 0 ? ::dup(fd) : -1);
    vfio_user::irq_set s{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                         .index = index,
                         .start = start,
                         .count = static_cast<std::uint32_t>(owned.size()),
                         .fds = owned,
                         .bools = {}};
    return fn.set_irqs(s);
}

int irq_action(function_model& fn, std::uint32_t index, std::uint32_t flags, std::uint32_t start, std::uint32_t count,
               std::vector<std::byte> bools = {}) {
    vfio_user::irq_set s{.flags = flags, .index = index, .start = start, .count = count, .fds = {}, .bools = bools};
    return fn.set_irqs(s);
}

} // namespace

TEST_CASE("vvu function: config header identifies a modern virtio-vhost-user function", "[vvu][function]") {
    fixture f;
    CHECK(f.read<std::uint16_t>(cfg_region, 0x00) == 0x1af4);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x02) == 0x1040 + 43);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x08) == 1);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x09) == 0x00);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x0a) == 0x00);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x0b) == 0xff);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x0e) == 0);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x06) == 0x0010);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x2c) == 0x1af4);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x2e) == 43);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x3d) == 1);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x18) == 0xc); // BAR 2: 64-bit prefetchable
    CHECK(f.read<std::uint32_t>(cfg_region, 0x20) == 0x4); // BAR 4: 64-bit
    CHECK(f.read<std::uint32_t>(cfg_region, 0x10) == 0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x14) == 0);
    CHECK(f.fn.device_flags() == (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET));
}

TEST_CASE("vvu function: the capability list locates every structure", "[vvu][function]") {
    fixture f(8);
    const auto layout = vf::bar2_layout::for_queues(8);
    std::array<std::byte, 256> c{};
    REQUIRE(f.fn.region_read(cfg_region, 0, c) == 0);
    auto u8 = [&](std::size_t at) { return std::to_integer<std::uint32_t>(c.at(at)); };
    auto u32 = [&](std::size_t at) { return le::load<std::uint32_t>(c.data() + at); };

    struct seen_cap {
        std::uint32_t at;
        std::uint32_t id;
        std::uint32_t type;
    };
    std::vector<seen_cap> caps;
    std::uint32_t at = u8(0x34);
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
        REQUIRE(at >= 0x40);
        REQUIRE(at % 4 == 0);
        REQUIRE(at + 2 <= 256);
        caps.push_back({at, u8(at), u8(at) == 0x09 ? u8(at + 3) : 0});
        at = u8(at + 1);
    }
    REQUIRE(at == 0);
    REQUIRE(caps.size() == 8);

    std::map<std::uint32_t, std::uint32_t> by_type; // cfg_type → position
    std::uint32_t msix_at = 0;
    for (const auto& cap : caps) {
        if (cap.id == 0x11) msix_at = cap.at;
        else {
            REQUIRE(cap.id == 0x09);
            by_type[cap.type] = cap.at;
        }
    }
    REQUIRE(by_type.size() == 7);
    auto check_cap = [&](std::uint32_t type, std::uint32_t len, std::uint32_t bar, std::uint32_t offset,
                         std::uint32_t length) {
        INFO("cfg_type " << type);
        REQUIRE(by_type.count(type) == 1);
        const std::uint32_t p = by_type[type];
        CHECK(u8(p + 2) == len);
        CHECK(u8(p + 4) == bar);
        CHECK(u8(p + 5) == 0); // id
        CHECK(u32(p + 8) == offset);
        CHECK(u32(p + 12) == length);
        return p;
    };
    check_cap(1, 16, 4, regs::common, cc::size);
    const auto notify = check_cap(2, 20, 4, regs::notify, 2 * regs::notify_multiplier);
    CHECK(u32(notify + 16) == regs::notify_multiplier);
    check_cap(3, 16, 4, regs::isr, regs::isr_size);
    check_cap(4, 16, 4, regs::device, vf::device_config::size);
    const auto bell = check_cap(6, 20, 2, static_cast<std::uint32_t>(layout.doorbells),
                                static_cast<std::uint32_t>(layout.doorbells_size));
    CHECK(u32(bell + 16) == vf::vvu_bar::doorbell_multiplier);
    check_cap(7, 16, 2, static_cast<std::uint32_t>(layout.notification), vf::vvu_bar::notification_size);
    const auto shm = check_cap(8, 24, 2, static_cast<std::uint32_t>(layout.shared_memory),
                               static_cast<std::uint32_t>(layout.shared_memory_size));
    CHECK(u32(shm + 16) == static_cast<std::uint32_t>(layout.shared_memory >> 32));
    CHECK(u32(shm + 20) == static_cast<std::uint32_t>(layout.shared_memory_size >> 32));
    CHECK((std::uint64_t{u32(shm + 20)} << 32 | u32(shm + 12)) == vf::vvu_bar::size - layout.shared_memory);
    // Cap BAR 2 regions fit in BAR 2.
    CHECK(layout.shared_memory + layout.shared_memory_size == vf::vvu_bar::size);

    REQUIRE(msix_at != 0);
    CHECK(le::load<std::uint16_t>(c.data() + msix_at + 2) == f.fn.msix_vectors() - 1);
    CHECK(f.fn.msix_vectors() == 3 + 8);
    CHECK(u32(msix_at + 4) == (regs::msix_table | 4));
    CHECK(u32(msix_at + 8) == (regs::msix_pba | 4));

    // Read-only bytes ignore writes: capability pointers, ids, vendor id.
    std::array<std::byte, 256> ones;
    ones.fill(std::byte{0xff});
    REQUIRE(f.fn.region_write(cfg_region, 0x34, std::span(ones).first(1)) == 0);
    REQUIRE(f.fn.region_write(cfg_region, 0x40, std::span(ones).first(0xc0)) == 0);
    REQUIRE(f.fn.region_write(cfg_region, 0, std::span(ones).first(4)) == 0);
    std::array<std::byte, 256> after{};
    REQUIRE(f.fn.region_read(cfg_region, 0, after) == 0);
    for (std::uint32_t i = 0; i < 256; ++i) {
        INFO("config byte " << i);
        if (i == msix_at + 3) CHECK(std::to_integer<int>(after[i]) == (std::to_integer<int>(c[i]) | 0xc0));
        else if (i >= 0x40 || i < 4 || i == 0x34) CHECK(after[i] == c[i]);
    }
}

TEST_CASE("vvu function: BAR sizing and the command register", "[vvu][function]") {
    fixture f;
    for (std::uint32_t off = 0x10; off < 0x28; off += 4) f.write<std::uint32_t>(cfg_region, off, 0xffffffff);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x10) == 0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x14) == 0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x18) == 0x0000000c); // 2^36: no low address bits
    CHECK(f.read<std::uint32_t>(cfg_region, 0x1c) == 0xfffffff0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x20) == 0xffff8004); // 32 KiB
    CHECK(f.read<std::uint32_t>(cfg_region, 0x24) == 0xffffffff);

    f.write<std::uint32_t>(cfg_region, 0x18, 0x12345678);
    f.write<std::uint32_t>(cfg_region, 0x1c, 0x00000020);
    f.write<std::uint32_t>(cfg_region, 0x20, 0xfebf1234);
    f.write<std::uint32_t>(cfg_region, 0x24, 0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x18) == 0x0000000c);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x1c) == 0x00000020);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x20) == 0xfebf0004);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x24) == 0);
    // A byte write lands in its byte only.
    f.write<std::uint8_t>(cfg_region, 0x22, 0x00);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x20) == 0xfe000004);
    // An 8-byte write across BAR 4/5.
    f.write<std::uint64_t>(cfg_region, 0x20, 0x0000000180000000ull);
    CHECK(f.read<std::uint64_t>(cfg_region, 0x20) == 0x0000000180000004ull);

    f.write<std::uint16_t>(cfg_region, 0x04, 0xffff);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x04) == 0x0406);
    f.write<std::uint16_t>(cfg_region, 0x04, 0x0002);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x04) == 0x0002);
    f.write<std::uint8_t>(cfg_region, 0x3c, 0x0b); // interrupt line: scratch
    CHECK(f.read<std::uint8_t>(cfg_region, 0x3c) == 0x0b);
    f.write<std::uint8_t>(cfg_region, 0x3d, 0x04); // interrupt pin: read-only
    CHECK(f.read<std::uint8_t>(cfg_region, 0x3d) == 1);
    f.write<std::uint16_t>(cfg_region, 0x06, 0xffff); // status: read-only here
    CHECK(f.read<std::uint16_t>(cfg_region, 0x06) == 0x0010);

    // A function-level reset clears what the OS programmed.
    REQUIRE(f.fn.reset() == 0);
    CHECK(f.read<std::uint32_t>(cfg_region, 0x20) == 0x4);
    CHECK(f.read<std::uint16_t>(cfg_region, 0x04) == 0);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x3c) == 0);
}

TEST_CASE("vvu function: virtio initialisation sequence", "[vvu][function]") {
    namespace st = vvu::pci::status;
    fixture f;
    const std::uint32_t common = regs::common;

    f.set_status(0);
    REQUIRE(f.owner.statuses.size() == 1);
    CHECK(f.owner.statuses.back() == std::pair<std::uint8_t, std::uint8_t>(0, 0));
    f.set_status(st::acknowledge);
    f.set_status(st::acknowledge | st::driver);
    CHECK(f.status() == (st::acknowledge | st::driver));
    CHECK(f.owner.statuses.back() == std::pair<std::uint8_t, std::uint8_t>(st::acknowledge, st::acknowledge | st::driver));

    // Device features: VERSION_1 only.
    f.write<std::uint32_t>(bar4, common + cc::device_feature_select, 0);
    CHECK(f.read<std::uint32_t>(bar4, common + cc::device_feature) == 0);
    f.write<std::uint32_t>(bar4, common + cc::device_feature_select, 1);
    CHECK(f.read<std::uint32_t>(bar4, common + cc::device_feature) == 1);
    f.write<std::uint32_t>(bar4, common + cc::device_feature_select, 2);
    CHECK(f.read<std::uint32_t>(bar4, common + cc::device_feature) == 0);
    CHECK(f.read<std::uint32_t>(bar4, common + cc::device_feature_select) == 2);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::num_queues) == 2);

    f.write_driver_features(vf::feature_version_1);
    CHECK(f.read<std::uint32_t>(bar4, common + cc::driver_feature) == 1); // select is 1
    f.set_status(st::acknowledge | st::driver | st::features_ok);
    CHECK(f.status() == (st::acknowledge | st::driver | st::features_ok));
    CHECK(f.fn.driver_features() == vf::feature_version_1);
    // Frozen now.
    f.write_driver_features(vf::feature_version_1 | 1);
    CHECK(f.fn.driver_features() == vf::feature_version_1);

    // Queues.
    for (std::uint16_t q = 0; q < 2; ++q) {
        f.select_queue(q);
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_size) == vf::max_queue_size);
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_notify_off) == q);
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_msix_vector) == 0xffff);
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_enable) == 0);
        f.write<std::uint16_t>(bar4, common + cc::queue_size, 100); // not a power of 2: ignored
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_size) == vf::max_queue_size);
        f.write<std::uint16_t>(bar4, common + cc::queue_size, 512); // above the maximum: ignored
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_size) == vf::max_queue_size);
        f.write<std::uint16_t>(bar4, common + cc::queue_size, 64);
        f.write<std::uint16_t>(bar4, common + cc::queue_msix_vector, static_cast<std::uint16_t>(1 + q));
        f.write<std::uint64_t>(bar4, common + cc::queue_desc, 0x1122334455667788ull + q);
        f.write<std::uint32_t>(bar4, common + cc::queue_driver, 0xaabbccdd);     // low half
        f.write<std::uint32_t>(bar4, common + cc::queue_driver + 4, 0x00000001); // high half
        f.write<std::uint32_t>(bar4, common + cc::queue_device, 0x00002000);
        f.write<std::uint32_t>(bar4, common + cc::queue_device + 4, 0);
        f.write<std::uint16_t>(bar4, common + cc::queue_enable, 1);
        CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_enable) == 1);
        CHECK(f.read<std::uint64_t>(bar4, common + cc::queue_desc) == 0x1122334455667788ull + q);
        CHECK(f.read<std::uint32_t>(bar4, common + cc::queue_driver + 4) == 1);
        // Frozen while enabled; queue_enable 0 is not a thing.
        f.write<std::uint16_t>(bar4, common + cc::queue_size, 32);
        f.write<std::uint64_t>(bar4, common + cc::queue_desc, 0);
        f.write<std::uint16_t>(bar4, common + cc::queue_enable, 0);
        const auto qs = f.fn.queue_state(q);
        CHECK(qs.size == 64);
        CHECK(qs.desc == 0x1122334455667788ull + q);
        CHECK(qs.driver == 0x1aabbccddull);
        CHECK(qs.device == 0x2000);
        CHECK(qs.enabled);
        CHECK(qs.msix_vector == 1 + q);
    }
    f.write<std::uint16_t>(bar4, common + cc::config_msix_vector, 0);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::config_msix_vector) == 0);

    f.set_status(st::acknowledge | st::driver | st::features_ok | st::driver_ok);
    CHECK(f.status() == 0x0f);
    CHECK(f.owner.statuses.back() == std::pair<std::uint8_t, std::uint8_t>(0x0b, 0x0f));
    // Bits stick: a write without them changes nothing.
    const auto reports = f.owner.statuses.size();
    f.set_status(st::acknowledge);
    CHECK(f.status() == 0x0f);
    CHECK(f.owner.statuses.size() == reports);

    // Reset clears everything the driver set.
    f.set_status(0);
    CHECK(f.owner.statuses.back() == std::pair<std::uint8_t, std::uint8_t>(0x0f, 0));
    CHECK(f.status() == 0);
    CHECK(f.fn.driver_features() == 0);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::config_msix_vector) == 0xffff);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_select) == 0);
    for (std::uint16_t q = 0; q < 2; ++q) {
        const auto qs = f.fn.queue_state(q);
        CHECK(qs.size == vf::max_queue_size);
        CHECK(qs.desc == 0);
        CHECK(qs.driver == 0);
        CHECK(qs.device == 0);
        CHECK_FALSE(qs.enabled);
        CHECK(qs.msix_vector == 0xffff);
    }
}

TEST_CASE("vvu function: FEATURES_OK is refused for features not offered or without VERSION_1", "[vvu][function]") {
    namespace st = vvu::pci::status;
    fixture f;
    const std::uint8_t ad = st::acknowledge | st::driver;

    f.set_status(ad);
    f.write_driver_features(vf::feature_version_1 | (1ull << 5)); // bit 5 is not offered
    f.set_status(ad | st::features_ok);
    CHECK(f.status() == ad);
    // DRIVER_OK without FEATURES_OK does not stick either.
    f.set_status(ad | st::features_ok | st::driver_ok);
    CHECK(f.status() == ad);

    f.set_status(0);
    f.set_status(ad);
    f.write_driver_features(0); // a legacy driver
    f.set_status(ad | st::features_ok);
    CHECK(f.status() == ad);

    f.set_status(0);
    f.set_status(ad);
    f.write_driver_features(vf::feature_version_1);
    // Feature words beyond 64 bits: nothing offered, writes ignored.
    f.write<std::uint32_t>(bar4, regs::common + cc::driver_feature_select, 7);
    f.write<std::uint32_t>(bar4, regs::common + cc::driver_feature, 0xffffffff);
    CHECK(f.read<std::uint32_t>(bar4, regs::common + cc::driver_feature) == 0);
    f.set_status(ad | st::features_ok);
    CHECK(f.status() == (ad | st::features_ok));
    // The driver cannot set DEVICE_NEEDS_RESET.
    f.set_status(ad | st::features_ok | st::device_needs_reset);
    CHECK(f.status() == (ad | st::features_ok));
}

TEST_CASE("vvu function: ISR reads clear it; INTx follows the ISR", "[vvu][function]") {
    fixture f;
    eventfd_guard intx;
    REQUIRE(attach(f.fn, VFIO_PCI_INTX_IRQ_INDEX, 0, {intx.fd.get()}) == 0);

    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0);
    CHECK(f.fn.signal_queue(0));
    CHECK(intx.take() == 1);
    CHECK((f.read<std::uint16_t>(cfg_region, 0x06) & 0x08) != 0); // interrupt status
    // Still asserted: no second edge.
    CHECK_FALSE(f.fn.signal_queue(1));
    CHECK(intx.take() == 0);
    f.fn.signal_config();
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0x3);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0);
    CHECK((f.read<std::uint16_t>(cfg_region, 0x06) & 0x08) == 0);
    CHECK(intx.take() == 0);

    // A vring kick without MSI-X: the ISR config bit (shared/vvu-spec.md).
    CHECK(f.fn.signal_vring_kick(3));
    CHECK(intx.take() == 1);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0x2);

    // Masked: nothing; unmasking while the ISR holds an event fires.
    REQUIRE(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, 0, 1) == 0);
    CHECK_FALSE(f.fn.signal_queue(0));
    CHECK(intx.take() == 0);
    REQUIRE(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1) == 0);
    CHECK(intx.take() == 1);
    // UNMASK re-arms even without an ISR read (VFIO automask).
    REQUIRE(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                       {std::byte{1}}) == 0);
    CHECK(intx.take() == 1);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0x1);

    // Command INTx disable holds the line; clearing it asserts again.
    f.write<std::uint16_t>(cfg_region, 0x04, 0x0400);
    CHECK_FALSE(f.fn.signal_queue(0));
    CHECK(intx.take() == 0);
    f.write<std::uint16_t>(cfg_region, 0x04, 0x0000);
    CHECK(intx.take() == 1);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0x1);

    // Software trigger, then detach.
    REQUIRE(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) == 0);
    CHECK(intx.take() == 1);
    REQUIRE(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0) == 0);
    CHECK_FALSE(f.fn.signal_queue(0));
    CHECK(intx.take() == 0);
    // Resample eventfds are not supported.
    CHECK(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 0) ==
          ENOTSUP);
}

TEST_CASE("vvu function: MSI-X vectors for queues, config changes and vring kicks", "[vvu][function]") {
    fixture f(8);
    std::array<eventfd_guard, 6> vec;
    eventfd_guard intx;
    REQUIRE(attach(f.fn, VFIO_PCI_INTX_IRQ_INDEX, 0, {intx.fd.get()}) == 0);
    const int before = f.owner.routing_changes;
    REQUIRE(attach(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, 0,
                   {vec[0].fd.get(), vec[1].fd.get(), vec[2].fd.get(), vec[3].fd.get(), vec[4].fd.get()}) == 0);
    CHECK(f.owner.routing_changes == before + 1);

    f.write<std::uint16_t>(bar4, regs::common + cc::config_msix_vector, 0);
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 1);
    f.select_queue(1);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 2);
    const auto layout = f.fn.bar2();
    f.write<std::uint16_t>(bar2, layout.notification + 0, 5); // notification_select
    f.write<std::uint16_t>(bar2, layout.notification + 2, 4); // notification_msix_vector
    CHECK(f.read<std::uint16_t>(bar2, layout.notification + 0) == 5);
    CHECK(f.read<std::uint16_t>(bar2, layout.notification + 2) == 4);
    CHECK(f.read<std::uint32_t>(bar2, layout.notification) == (4u << 16 | 5u));

    CHECK(f.fn.signal_queue(0));
    CHECK(vec[1].take() == 1);
    CHECK(f.fn.signal_queue(1));
    CHECK(f.fn.signal_queue(1));
    CHECK(vec[2].take() == 2);
    CHECK(f.fn.signal_config());
    CHECK(vec[0].take() == 1);
    CHECK(f.fn.signal_vring_kick(5));
    CHECK(vec[4].take() == 1);
    CHECK(f.fn.vring_vector_eventfd(5) >= 0);
    CHECK(f.fn.vring_vector_eventfd(4) == -1); // no vector chosen
    CHECK(f.fn.vring_vector_eventfd(8) == -1); // no such vring
    // Splicing: a write to the raw fd is the vector.
    const std::uint64_t one = 1;
    REQUIRE(::write(f.fn.vring_vector_eventfd(5), &one, sizeof one) == sizeof one);
    CHECK(vec[4].take() == 1);
    // A vring without a vector, or a vector without an eventfd: nothing, and no INTx.
    CHECK_FALSE(f.fn.signal_vring_kick(4));
    f.write<std::uint16_t>(bar2, layout.notification + 0, 4);
    f.write<std::uint16_t>(bar2, layout.notification + 2, 7);
    CHECK_FALSE(f.fn.signal_vring_kick(4));
    CHECK(intx.take() == 0);
    CHECK(vec[5].take() == 0);

    // Software triggers.
    REQUIRE(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 3,
                       {std::byte{0}, std::byte{1}, std::byte{1}}) == 0);
    CHECK(vec[1].take() == 0);
    CHECK(vec[2].take() == 1);
    CHECK(vec[3].take() == 1);
    REQUIRE(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) == 0);
    CHECK(vec[0].take() == 1);
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, 0, 1) == EINVAL);

    // Detach one with an invalid fd, then all: queues fall back to INTx.
    REQUIRE(attach(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, 1, {-1}) == 0);
    CHECK_FALSE(f.fn.signal_queue(0));
    CHECK(vec[1].take() == 0);
    REQUIRE(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0) == 0);
    CHECK(f.fn.signal_queue(0));
    CHECK(intx.take() == 1);
    // The config bit is from signal_config() above: the ISR records config changes always.
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == (vvu::pci::isr::queue | vvu::pci::isr::config));
    CHECK(f.fn.vring_vector_eventfd(5) == -1);

    // The MSI-X enable bit alone also means MSI-X is in use (no INTx).
    const std::uint32_t msix_control = 0xc0 + 2;
    f.write<std::uint16_t>(cfg_region, msix_control, 0x8000);
    CHECK((f.read<std::uint16_t>(cfg_region, msix_control) & 0x8000) != 0);
    CHECK_FALSE(f.fn.signal_queue(0));
    CHECK(intx.take() == 0);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0);
}

TEST_CASE("vvu function: set_irqs refuses what is not an eventfd and out-of-range vectors", "[vvu][function]") {
    fixture f(4);
    int p[2];
    REQUIRE(::pipe(p) == 0);
    unique_fd r(p[0]), w(p[1]);
    eventfd_guard good;
    CHECK(attach(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, 0, {good.fd.get(), w.get()}) == EINVAL);
    // Nothing was taken: no vector in use, queues still go to INTx.
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 0);
    f.fn.signal_queue(0);
    CHECK(good.take() == 0);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 1);
    CHECK(attach(f.fn, VFIO_PCI_INTX_IRQ_INDEX, 0, {w.get()}) == EINVAL);

    const std::uint32_t n = f.fn.msix_vectors();
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, n, 1) == EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0xffffffff, 2) ==
          EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 2) == EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) == EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0) == 0);
    CHECK(irq_action(f.fn, 9, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0) == EINVAL);
    // Two data kinds, no action, a BOOL without its bytes.
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX,
                     VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) == EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE, 0, 1) == EINVAL);
    CHECK(irq_action(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 2) == EINVAL);

    // irq info as vfio-pci reports it.
    auto intx = f.fn.describe_irq(VFIO_PCI_INTX_IRQ_INDEX);
    CHECK(intx.count == 1);
    CHECK(intx.flags == (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED));
    auto msix = f.fn.describe_irq(VFIO_PCI_MSIX_IRQ_INDEX);
    CHECK(msix.count == 3 + 4);
    CHECK(msix.flags == (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE));
    CHECK(f.fn.describe_irq(VFIO_PCI_MSI_IRQ_INDEX).count == 0);
    CHECK(f.fn.describe_irq(VFIO_PCI_ERR_IRQ_INDEX).count == 0);
    CHECK(f.fn.describe_irq(VFIO_PCI_REQ_IRQ_INDEX).count == 0);
}

TEST_CASE("vvu function: doorbells, notify registers and the device config", "[vvu][function]") {
    fixture f(8);
    const auto layout = f.fn.bar2();
    f.write<std::uint16_t>(bar2, layout.doorbell(0), 0);
    f.write<std::uint16_t>(bar2, layout.doorbell(7), 7);
    f.write<std::uint16_t>(bar2, layout.doorbell(8), 8); // the log doorbell
    f.write<std::uint16_t>(bar2, layout.doorbell(layout.error_doorbell_index(0)), 9);  // vring 0's error
    f.write<std::uint16_t>(bar2, layout.doorbell(layout.error_doorbell_index(7)), 16); // vring 7's error
    f.write<std::uint16_t>(bar2, layout.doorbell(layout.error_doorbell_index(8)), 17); // beyond: ignored
    f.write<std::uint16_t>(bar2, layout.doorbell(3) + 2, 3); // not at a doorbell: ignored
    f.write<std::uint32_t>(bar2, layout.doorbell(2), 2);
    CHECK(f.owner.doorbells == std::vector<std::uint32_t>{0, 7, 8, 9, 16, 2});
    CHECK(f.read<std::uint32_t>(bar2, layout.doorbell(0)) == 0);

    f.write<std::uint16_t>(bar4, regs::notify + 0, 0);
    f.write<std::uint16_t>(bar4, regs::notify + 4, 1);
    f.write<std::uint16_t>(bar4, regs::notify + 8, 2);  // no third queue
    f.write<std::uint16_t>(bar4, regs::notify + 2, 0);  // not at a register
    CHECK(f.owner.notified == std::vector<std::uint16_t>{0, 1});
    CHECK(f.read<std::uint16_t>(bar4, regs::notify) == 0);

    namespace dc = vf::device_config;
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::status) == 0);
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::max_vhost_queues) == 8);
    std::array<std::byte, 16> uuid{};
    REQUIRE(f.fn.region_read(bar4, regs::device + dc::uuid, uuid) == 0);
    for (int i = 0; i < 16; ++i) CHECK(std::to_integer<int>(uuid[i]) == 0x10 + i);
    // The driver writes BACKEND_UP; FRONTEND_UP is not its to set.
    f.write<std::uint32_t>(bar4, regs::device + dc::status, dc::backend_up | dc::frontend_up);
    CHECK(f.owner.backend_writes == std::vector<std::uint32_t>{dc::backend_up});
    CHECK(f.fn.backend_status() == dc::backend_up);
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::status) == dc::backend_up);
    // uuid and max_vhost_queues are read-only; a 1-byte status write is not a status write.
    f.write<std::uint32_t>(bar4, regs::device + dc::max_vhost_queues, 99);
    f.write<std::uint8_t>(bar4, regs::device + dc::status, 0);
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::max_vhost_queues) == 8);
    CHECK(f.owner.backend_writes.size() == 1);

    const auto generation = f.read<std::uint8_t>(bar4, regs::common + cc::config_generation);
    CHECK(f.fn.set_frontend_up(true));
    CHECK_FALSE(f.fn.set_frontend_up(true));
    CHECK(f.fn.frontend_up());
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::status) == (dc::backend_up | dc::frontend_up));
    CHECK(f.read<std::uint8_t>(bar4, regs::common + cc::config_generation) == static_cast<std::uint8_t>(generation + 1));
    // Reset clears BACKEND_UP; FRONTEND_UP is the owner's.
    f.set_status(0);
    CHECK(f.fn.backend_status() == 0);
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::status) == dc::frontend_up);
    CHECK(f.fn.set_frontend_up(false));
    CHECK(f.read<std::uint32_t>(bar4, regs::device + dc::status) == 0);
}

TEST_CASE("vvu function: region info, sparse window areas and io fds", "[vvu][function]") {
    fixture f(4);
    const auto layout = f.fn.bar2();

    auto r2 = f.fn.describe_region(bar2);
    CHECK(r2.flags == (vfio_user::region_flags::read | vfio_user::region_flags::write));
    CHECK(r2.size == vf::vvu_bar::size);
    CHECK(r2.areas.empty());
    CHECK(r2.fds.empty());
    CHECK_FALSE(r2.fd_per_area); // nothing to map: no marking

    f.owner.areas = {{0, 0x200000, 11},
                     {0x200000, 0x100000, 12},
                     {0x300000, 0, 13},                             // empty: dropped
                     {layout.shared_memory_size - 0x1000, 0x2000, 14}, // past the window: dropped
                     {~0ull - 10, 0x1000, 15},                      // wraps: dropped
                     {0x400000, 0x1000, -1}};                       // no fd: dropped
    r2 = f.fn.describe_region(bar2);
    CHECK(r2.flags == (vfio_user::region_flags::read | vfio_user::region_flags::write | vfio_user::region_flags::mmap |
                       vfio_user::region_flags::caps));
    REQUIRE(r2.areas.size() == 2);
    CHECK(r2.areas[0].offset == layout.shared_memory);
    CHECK(r2.areas[0].size == 0x200000);
    CHECK(r2.areas[1].offset == layout.shared_memory + 0x200000);
    CHECK(r2.areas[1].size == 0x100000);
    CHECK(r2.fds == std::vector<int>{11, 12});
    CHECK(r2.fd_per_area); // each area is its own fd, from file offset 0
    // One area + one fd is still per-area (the ambiguous shape the marking settles).
    f.owner.areas = {{0x1000, 0x1000, 11}};
    r2 = f.fn.describe_region(bar2);
    REQUIRE(r2.areas.size() == 1);
    CHECK(r2.fds == std::vector<int>{11});
    CHECK(r2.fd_per_area);
    f.owner.areas = {{0, 0x200000, 11}, {0x200000, 0x100000, 12}};

    auto r4 = f.fn.describe_region(bar4);
    CHECK(r4.flags == (vfio_user::region_flags::read | vfio_user::region_flags::write));
    CHECK(r4.size == regs::size);
    auto rc = f.fn.describe_region(cfg_region);
    CHECK(rc.flags == (vfio_user::region_flags::read | vfio_user::region_flags::write));
    CHECK(rc.size == 256);
    for (std::uint32_t i : {0u, 1u, 3u, 5u, 6u, 8u}) {
        auto r = f.fn.describe_region(i);
        CHECK(r.size == 0);
        CHECK(r.flags == 0);
        CHECK(f.fn.region_io_fds(i).empty());
    }

    CHECK(f.fn.region_io_fds(bar2).empty());
    f.owner.call_fds = {{0, 21}, {2, 23}, {4, 25} /* the log doorbell: never an io fd */};
    const auto io = f.fn.region_io_fds(bar2);
    REQUIRE(io.size() == 2);
    CHECK(io[0].offset == layout.doorbell(0));
    CHECK(io[0].size == 2);
    CHECK(io[0].fd == 21);
    CHECK(io[1].offset == layout.doorbell(2));
    CHECK(io[1].size == 2);
    CHECK(io[1].fd == 23);

    // The window through REGION_READ/WRITE goes to the owner, offsets relative to the window.
    std::array<std::byte, 8> buf{};
    REQUIRE(f.fn.region_read(bar2, layout.shared_memory + 0x1234, buf) == 0);
    CHECK(f.owner.last_window_read == 0x1234);
    CHECK(buf[7] == std::byte{0x5a});
    REQUIRE(f.fn.region_write(bar2, layout.shared_memory + 8, buf) == 0);
    REQUIRE(f.owner.window_writes.size() == 1);
    CHECK(f.owner.window_writes[0].first == 8);
    CHECK(f.owner.window_writes[0].second.size() == 8);
    f.owner.window_errno = EFAULT;
    CHECK(f.fn.region_read(bar2, layout.shared_memory, buf) == EFAULT);
    CHECK(f.fn.region_write(bar2, vf::vvu_bar::size - 8, buf) == EFAULT);
}

TEST_CASE("vvu function: reset keeps irq eventfds, detach drops them", "[vvu][function]") {
    fixture f(4);
    eventfd_guard v1;
    REQUIRE(attach(f.fn, VFIO_PCI_MSIX_IRQ_INDEX, 1, {v1.fd.get()}) == 0);
    f.set_status(1);
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 1);
    CHECK(f.fn.signal_queue(0));
    CHECK(v1.take() == 1);

    f.owner.statuses.clear();
    REQUIRE(f.fn.reset() == 0);
    CHECK(f.owner.statuses == std::vector<std::pair<std::uint8_t, std::uint8_t>>{{1, 0}});
    CHECK(f.fn.queue_state(0).msix_vector == 0xffff);
    CHECK_FALSE(f.fn.signal_queue(0)); // no vector after the reset, MSI-X still in use
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 1);
    CHECK(f.fn.signal_queue(0));
    CHECK(v1.take() == 1);

    f.fn.client_detached();
    CHECK(f.owner.detached == 1);
    CHECK(f.status() == 0);
    CHECK(f.fn.queue_state(0).msix_vector == 0xffff);
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 1);
    CHECK_FALSE(f.fn.signal_queue(0)); // INTx now, and no INTx eventfd
    CHECK(v1.take() == 0);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 1);
}

TEST_CASE("vvu function: hostile accesses read back defined values", "[vvu][function]") {
    fixture f(4);
    const auto layout = f.fn.bar2();
    const std::uint32_t common = regs::common;

    // Outside the regions: refused (the server checks too).
    std::array<std::byte, 8> b{};
    CHECK(f.fn.region_read(cfg_region, 252, b) == EINVAL);
    CHECK(f.fn.region_write(cfg_region, 256, std::span(b).first(1)) == EINVAL);
    CHECK(f.fn.region_read(bar4, regs::size - 4, b) == EINVAL);
    CHECK(f.fn.region_read(bar4, ~0ull, std::span(b).first(1)) == EINVAL);
    CHECK(f.fn.region_read(bar2, vf::vvu_bar::size, std::span(b).first(1)) == EINVAL);
    CHECK(f.fn.region_read(0, 0, std::span(b).first(1)) == EINVAL);
    CHECK(f.fn.region_write(6, 0, std::span(b).first(1)) == EINVAL);
    CHECK(f.fn.region_read(bar4, 0, std::span(b).first(0)) == 0);

    // The last bytes of each region.
    CHECK(f.read<std::uint8_t>(cfg_region, 255) == 0);
    CHECK(f.read<std::uint8_t>(bar4, regs::size - 1) == 0);
    f.write<std::uint8_t>(bar4, regs::size - 1, 0xff);
    CHECK(f.read<std::uint32_t>(bar4, regs::size - 4) == 0);
    CHECK(f.read<std::uint16_t>(bar2, layout.shared_memory - 2) == 0);

    // 3-byte accesses: reads return the bytes, writes change nothing.
    f.set_status(1);
    std::array<std::byte, 3> three{};
    REQUIRE(f.fn.region_read(bar4, common + cc::config_msix_vector, three) == 0);
    CHECK(three == std::array<std::byte, 3>{std::byte{0xff}, std::byte{0xff}, std::byte{2}});
    three.fill(std::byte{0});
    REQUIRE(f.fn.region_write(bar4, common + cc::num_queues, three) == 0); // covers device_status
    CHECK(f.status() == 1);
    // A 2-byte write over device_status and config_generation is not a status write.
    f.write<std::uint16_t>(bar4, common + cc::device_status, 0);
    CHECK(f.status() == 1);
    // Unaligned 8-byte address writes are ignored.
    f.write<std::uint64_t>(bar4, common + cc::queue_desc + 4, 0x1234);
    CHECK(f.fn.queue_state(0).desc == 0);

    // queue_select out of range: size 0, no vector, writes ignored.
    f.select_queue(2);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_select) == 2);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_size) == 0);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_msix_vector) == 0xffff);
    f.write<std::uint16_t>(bar4, common + cc::queue_size, 16);
    f.write<std::uint16_t>(bar4, common + cc::queue_enable, 1);
    f.write<std::uint64_t>(bar4, common + cc::queue_desc, 0x1000);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_size) == 0);
    CHECK(f.read<std::uint64_t>(bar4, common + cc::queue_desc) == 0);
    f.select_queue(0xffff);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_enable) == 0);
    CHECK(f.fn.queue_state(0xffff).size == vf::max_queue_size);
    CHECK_FALSE(f.fn.signal_queue(7));

    // Vector numbers out of range read back NO_VECTOR.
    const auto n = static_cast<std::uint16_t>(f.fn.msix_vectors());
    f.select_queue(0);
    f.write<std::uint16_t>(bar4, common + cc::queue_msix_vector, n);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_msix_vector) == 0xffff);
    f.write<std::uint16_t>(bar4, common + cc::queue_msix_vector, static_cast<std::uint16_t>(n - 1));
    CHECK(f.read<std::uint16_t>(bar4, common + cc::queue_msix_vector) == n - 1);
    f.write<std::uint16_t>(bar4, common + cc::config_msix_vector, 0x8000);
    CHECK(f.read<std::uint16_t>(bar4, common + cc::config_msix_vector) == 0xffff);
    f.write<std::uint16_t>(bar2, layout.notification, 1);
    f.write<std::uint16_t>(bar2, layout.notification + 2, n);
    CHECK(f.read<std::uint16_t>(bar2, layout.notification + 2) == 0xffff);

    // notification_select out of range (vring 4 of 4): vector reads NO_VECTOR, writes ignored.
    f.write<std::uint16_t>(bar2, layout.notification, 4);
    f.write<std::uint16_t>(bar2, layout.notification + 2, 0);
    CHECK(f.read<std::uint16_t>(bar2, layout.notification + 2) == 0xffff);
    f.write<std::uint16_t>(bar2, layout.notification, 0xffff);
    CHECK(f.read<std::uint16_t>(bar2, layout.notification + 2) == 0xffff);
    CHECK_FALSE(f.fn.signal_vring_kick(4));
    CHECK_FALSE(f.fn.signal_vring_kick(0xffffffff));
    CHECK(f.fn.vring_vector_eventfd(0xffffffff) == -1);

    // MSI-X table: plain storage, entries start masked; the PBA reads 0 and ignores writes.
    CHECK(f.read<std::uint32_t>(bar4, regs::msix_table + 12) == 1);
    f.write<std::uint64_t>(bar4, regs::msix_table + 16, 0xfee00000'00000000ull);
    f.write<std::uint32_t>(bar4, regs::msix_table + 24, 0x4021);
    f.write<std::uint32_t>(bar4, regs::msix_table + 28, 0);
    CHECK(f.read<std::uint64_t>(bar4, regs::msix_table + 16) == 0xfee00000'00000000ull);
    CHECK(f.read<std::uint32_t>(bar4, regs::msix_table + 24) == 0x4021);
    CHECK(f.read<std::uint32_t>(bar4, regs::msix_table + 28) == 0);
    const std::uint32_t past = regs::msix_table + n * 16u;
    f.write<std::uint32_t>(bar4, past, 0xdeadbeef);
    CHECK(f.read<std::uint32_t>(bar4, past) == 0);
    f.write<std::uint64_t>(bar4, regs::msix_pba, ~0ull);
    CHECK(f.read<std::uint64_t>(bar4, regs::msix_pba) == 0);
    // The ISR ignores writes.
    f.write<std::uint8_t>(bar4, regs::isr, 0xff);
    CHECK(f.read<std::uint8_t>(bar4, regs::isr) == 0);

    // Every size at every offset of config space, and across BAR 4's structures.
    std::array<std::byte, 16> any{};
    for (std::uint64_t off = 0; off < 256; ++off)
        for (std::size_t len = 1; len <= 16 && off + len <= 256; ++len)
            REQUIRE(f.fn.region_read(cfg_region, off, std::span(any).first(len)) == 0);
    for (std::uint64_t base : {std::uint64_t{regs::common}, std::uint64_t{regs::isr}, std::uint64_t{regs::device},
                               std::uint64_t{regs::notify}, std::uint64_t{regs::msix_table},
                               std::uint64_t{regs::msix_pba}})
        for (std::uint64_t off = base; off < base + 80; ++off)
            for (std::size_t len = 1; len <= 16; ++len)
                REQUIRE(f.fn.region_read(bar4, off, std::span(any).first(len)) == 0);
}

TEST_CASE("vvu function: random writes everywhere keep the function sane", "[vvu][function]") {
    fixture f(16);
    eventfd_guard intx;
    REQUIRE(attach(f.fn, VFIO_PCI_INTX_IRQ_INDEX, 0, {intx.fd.get()}) == 0);
    const auto layout = f.fn.bar2();
    std::mt19937_64 rng(7);
    std::array<std::byte, 16> data{};
    for (int i = 0; i < 200000; ++i) {
        for (auto& d : data) d = static_cast<std::byte>(rng());
        const std::size_t len = 1 + rng() % 16;
        const auto which = rng() % 4;
        if (which == 0) {
            const auto off = rng() % (256 - len + 1);
            REQUIRE(f.fn.region_write(cfg_region, off, std::span(data).first(len)) == 0);
        } else if (which == 1) {
            // Mostly the interesting first 0x80 bytes of each 4 KiB structure.
            const auto off = (rng() % 8) * 0x1000 + rng() % 0x80;
            REQUIRE(f.fn.region_write(bar4, off, std::span(data).first(len)) == 0);
        } else if (which == 2) {
            const auto off = rng() % (layout.shared_memory + 16) ;
            const auto clipped = std::min<std::uint64_t>(len, vf::vvu_bar::size - off);
            (void)f.fn.region_write(bar2, off, std::span(data).first(clipped));
        } else {
            const auto off = (rng() % 8) * 0x1000 + rng() % 0x80;
            REQUIRE(f.fn.region_read(bar4, off, std::span(data).first(len)) == 0);
        }
        if (i % 97 == 0) {
            f.fn.signal_queue(static_cast<std::uint16_t>(rng() % 3));
            f.fn.signal_config();
            f.fn.signal_vring_kick(static_cast<std::uint32_t>(rng() % 20));
        }
    }
    CHECK(f.read<std::uint16_t>(cfg_region, 0) == 0x1af4);
    CHECK(f.read<std::uint8_t>(cfg_region, 0x34) == 0x40);
    CHECK(f.read<std::uint16_t>(bar4, regs::common + cc::num_queues) == 2);
    for (std::uint16_t q = 0; q < 2; ++q) {
        const auto qs = f.fn.queue_state(q);
        CHECK((qs.size != 0 && (qs.size & (qs.size - 1)) == 0 && qs.size <= vf::max_queue_size));
        CHECK((qs.msix_vector == 0xffff || qs.msix_vector < f.fn.msix_vectors()));
    }
    const auto s = f.fn.device_status();
    if (s & vvu::pci::status::features_ok) CHECK((f.fn.driver_features() & ~vf::feature_version_1) == 0);
    if (s & vvu::pci::status::driver_ok) CHECK((s & vvu::pci::status::features_ok) != 0);
    CHECK(f.owner.doorbells.size() > 0);
    for (auto v : f.owner.doorbells) CHECK(v < vf::bar2_layout::doorbell_count(16)); // calls, log, errors
    for (auto q : f.owner.notified) CHECK(q < 2u);
}

TEST_CASE("vvu function: construction limits", "[vvu][function]") {
    test_owner owner;
    CHECK_THROWS_AS(function_model(function_options{.max_queues = 0}, owner), std::invalid_argument);
    CHECK_THROWS_AS(function_model(function_options{.max_queues = 1025}, owner), std::invalid_argument);
    function_model big(function_options{.max_queues = 1024}, owner);
    CHECK(big.msix_vectors() == regs::max_msix_vectors);
    CHECK(big.bar2().max_queues == 1024);
    function_model few(function_options{.max_queues = 1, .msix_vectors = 100000}, owner);
    CHECK(few.msix_vectors() == regs::max_msix_vectors);
    function_model one(function_options{.max_queues = 1, .msix_vectors = 1}, owner);
    CHECK(one.msix_vectors() == 1);
    std::array<std::byte, 2> control{};
    REQUIRE(one.region_read(cfg_region, 0xc2, control) == 0);
    CHECK(le::load<std::uint16_t>(control.data()) == 0);
    // A 1024-vring function: 1024 calls, the log doorbell, 1024 errors — 8196 bytes, three pages.
    CHECK(big.bar2().doorbells_size == 0x3000);
    CHECK(big.bar2().notification == 0x3000);
}

TEST_CASE("vvu function: a one-area window is mapped per area over vfio-user", "[vvu][function]") {
    // One front-end region at window offset 0x1000, its own memfd: the client must map it from
    // the memfd's offset 0 (the marking), not at mmap_offset + BAR offset (the standard rule,
    // which would be far past this file).
    fixture f(4);
    const auto layout = f.fn.bar2();
    auto mem = vvu_test::make_memfd("vvu-window", 0x2000);
    const std::byte pattern{0x77};
    REQUIRE(::pwrite(mem.get(), &pattern, 1, 0x20) == 1);
    f.owner.areas = {{0x1000, 0x2000, mem.get()}};
    vvu_test::server_thread st(f.fn, "vvu-window");
    auto c = vfio_user::client::connect(st.path(), std::chrono::milliseconds(3000));
    REQUIRE(c);
    auto reg = c->region_info(bar2);
    REQUIRE(reg);
    CHECK(reg->fd_per_area);
    REQUIRE(reg->areas.size() == 1);
    CHECK(reg->areas[0].offset == layout.shared_memory + 0x1000);
    CHECK(reg->fds.size() == 1);
    auto w = c->map_window(bar2, layout.shared_memory + 0x1000 + 0x20, 0x10);
    REQUIRE(w);
    CHECK(w->host[0] == pattern);
    w->host[1] = std::byte{0x78};
    std::byte back{};
    REQUIRE(::pread(mem.get(), &back, 1, 0x21) == 1);
    CHECK(back == std::byte{0x78});
}

TEST_CASE("vvu function: save and restore carry the whole function to another model (a live update)", "[vvu][function]") {
    fixture from;
    // A driver's set-up: features, a queue, MSI-X vectors with eventfds, DRIVER_OK, BACKEND_UP.
    eventfd_guard rxq_irq, config_irq, vring_irq;
    REQUIRE(attach(from.fn, VFIO_PCI_MSIX_IRQ_INDEX, 0, {rxq_irq.fd.get(), -1, config_irq.fd.get(), vring_irq.fd.get()}) == 0);
    from.write<std::uint16_t>(bar4, regs::common + cc::config_msix_vector, 2);
    from.set_status(vvu::pci::status::acknowledge | vvu::pci::status::driver);
    from.write_driver_features(vvu::wire::virtio_feature::version_1);
    from.set_status(from.status() | vvu::pci::status::features_ok);
    from.select_queue(0);
    from.write<std::uint16_t>(bar4, regs::common + cc::queue_size, 64);
    from.write<std::uint64_t>(bar4, regs::common + cc::queue_desc, 0x10000);
    from.write<std::uint16_t>(bar4, regs::common + cc::queue_msix_vector, 0);
    from.write<std::uint16_t>(bar4, regs::common + cc::queue_enable, 1);
    from.set_status(from.status() | vvu::pci::status::driver_ok);
    from.write<std::uint32_t>(bar4, regs::device + vf::device_config::status, vf::device_config::backend_up);
    from.write<std::uint16_t>(bar2, from.fn.bar2().notification + vf::vvu_bar::notification_select, 0);
    from.write<std::uint16_t>(bar2, from.fn.bar2().notification + vf::vvu_bar::notification_msix_vector, 3);
    from.fn.set_frontend_up(true);

    vvu::byte_writer w;
    std::vector<unique_fd> fds;
    vvu::fd_writer fw(fds);
    from.fn.save(w, fw);
    REQUIRE(fw.ok());
    CHECK(fds.size() == 3); // the three vector eventfds
    const auto bytes = w.take();

    SECTION("the new model reads back what the driver set, and interrupts reach the same eventfds") {
        fixture to;
        vvu::byte_reader r(bytes);
        vvu::fd_reader fr(fds);
        auto restored = to.fn.restore(r, fr);
        if (!restored) FAIL(restored.error());
        CHECK(r.done());
        CHECK(to.owner.statuses.empty()); // no callback: nothing happened, as far as anyone sees
        // Every register the driver can read back, byte for byte.
        for (std::uint64_t at = 0; at < 256; at += 4)
            CHECK(to.read<std::uint32_t>(cfg_region, at) == from.read<std::uint32_t>(cfg_region, at));
        for (std::uint64_t at = regs::common; at < regs::common + cc::size; at += 2)
            CHECK(to.read<std::uint16_t>(bar4, at) == from.read<std::uint16_t>(bar4, at));
        CHECK(to.fn.device_status() == from.fn.device_status());
        CHECK(to.fn.driver_features() == from.fn.driver_features());
        CHECK(to.fn.backend_status() == from.fn.backend_status());
        CHECK(to.fn.frontend_up());
        CHECK(to.fn.queue_state(0).enabled);
        CHECK(to.fn.queue_state(0).desc == 0x10000);
        CHECK(to.fn.queue_state(0).size == 64);
        CHECK(to.fn.signal_queue(0));
        CHECK(rxq_irq.take() == 1);
        CHECK(to.fn.signal_config());
        CHECK(config_irq.take() == 1);
        CHECK(to.fn.signal_vring_kick(0));
        CHECK(vring_irq.take() == 1);
    }
    SECTION("a model of another size refuses the state and stays reset") {
        fixture to(16);
        vvu::byte_reader r(bytes);
        vvu::fd_reader fr(fds);
        CHECK(!to.fn.restore(r, fr));
        CHECK(to.fn.device_status() == 0);
    }
    SECTION("a state whose eventfds are short is refused; the model holds none") {
        fixture to;
        vvu::byte_reader r(bytes);
        fds.pop_back();
        vvu::fd_reader fr(fds);
        CHECK(!to.fn.restore(r, fr));
        CHECK(to.fn.device_status() == 0);
        CHECK(to.fn.vring_vector_eventfd(0) == -1);
    }
}
