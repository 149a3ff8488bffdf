// virtio-pci modern driver (pci::virtio_driver), its DMA arena and the capability walk, against
// an in-memory PCI function that implements the virtio 1.2 common configuration semantics
// (§4.1.4.3) and records what the driver does: status writes, features, DMA maps, doorbells,
// MSI-X eventfds. Hostile-device cases check that each misbehaviour is a clear error.
#include <vvu/pci/capabilities.hpp>
#include <vvu/pci/dma_arena.hpp>
#include <vvu/pci/function.hpp>
#include <vvu/pci/virtio_driver.hpp>
#include <vvu/pci/virtio_pci.hpp>
#include <vvu/ring/split.hpp>
#include <vvu/wire/features.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

using namespace vvu;
using namespace vvu::pci;
using namespace std::chrono_literals;
namespace vf = vvu::wire::virtio_feature;

namespace {

constexpr std::uint32_t regs_bar = 4;
constexpr std::uint64_t common_at = 0x0000, isr_at = 0x1000, device_at = 0x2000, notify_at = 0x3000;
constexpr std::uint32_t notify_multiplier = 4;

pci::error fail(int e, std::string what) { return pci::error{std::error_code(e, std::system_category()), std::move(what)}; }

// ------------------------------------------------------------------ config space builder
struct config_builder {
    std::array<std::byte, 256> bytes{};

    config_builder() {
        put16(config::vendor_id, virtio_vendor_id);
        put16(config::status, config::status_capability_list);
    }
    // Bytes past the end of config space are dropped (hostile layouts run off its end).
    void put8(std::uint32_t off, std::uint8_t v) {
        if (off < bytes.size()) bytes[off] = std::byte{v};
    }
    void put16(std::uint32_t off, std::uint16_t v) {
        for (std::uint32_t i = 0; i < 2; ++i) put8(off + i, static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void put32(std::uint32_t off, std::uint32_t v) {
        for (std::uint32_t i = 0; i < 4; ++i) put8(off + i, static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void first(std::uint8_t at) { put8(config::capabilities_pointer, at); }
    void vendor(std::uint8_t at, std::uint8_t next, cap_type t, std::uint8_t bar, std::uint32_t offset,
                std::uint32_t length, std::uint8_t cap_len = 16, std::uint32_t extra0 = 0, std::uint32_t extra1 = 0,
                std::uint8_t id = 0) {
        put8(at + cap::vndr, config::cap_id_vendor);
        put8(at + cap::next, next);
        put8(at + cap::len, cap_len);
        put8(at + cap::cfg_type, static_cast<std::uint8_t>(t));
        put8(at + cap::bar, bar);
        put8(at + cap::id, id);
        put32(at + cap::offset, offset);
        put32(at + cap::length, length);
        if (cap_len >= 20) put32(at + 16, extra0);
        if (cap_len >= 24) put32(at + 20, extra1);
    }
    void msix_cap(std::uint8_t at, std::uint8_t next, std::uint16_t vectors) {
        put8(at, config::cap_id_msix);
        put8(at + 1, next);
        put16(at + msix::message_control, static_cast<std::uint16_t>(vectors - 1));
        put32(at + msix::table, 0x4000 | regs_bar);
        put32(at + msix::pba, 0x6000 | regs_bar);
    }
    void other(std::uint8_t at, std::uint8_t id, std::uint8_t next) {
        put8(at, id);
        put8(at + 1, next);
    }

    // A well-formed virtio-pci function, laid out like the VVU function's BAR 4.
    static config_builder standard(std::uint16_t vectors = 8) {
        config_builder c;
        c.first(0x40);
        c.vendor(0x40, 0x50, cap_type::common, regs_bar, common_at, 0x1000);
        c.vendor(0x50, 0x68, cap_type::notify, regs_bar, notify_at, 0x1000, 20, notify_multiplier);
        c.vendor(0x68, 0x78, cap_type::isr, regs_bar, isr_at, 4);
        c.vendor(0x78, 0x88, cap_type::device, regs_bar, device_at, 24);
        c.other(0x88, 0x01, 0x8c);                           // a power-management cap: skipped
        c.msix_cap(0x8c, 0x98, vectors);
        c.vendor(0x98, 0, cap_type::shared_memory, 2, 0x2000, 0, 24, 0x1, 0xf, 0); // cap64: 0x1'0000'2000, 0xf'0000'0000
        return c;
    }
};

// ------------------------------------------------------------------ the test double
class fake_function {
public:
    struct queue_regs {
        std::uint16_t max_size = 256;
        std::uint16_t size = 0;
        std::uint16_t msix = msix::no_vector;
        std::uint16_t enable = 0;
        std::uint16_t notify_off = 0;
        std::uint64_t desc = 0, driver = 0, device = 0;
    };
    struct dma_map_call {
        int fd;
        std::uint64_t file_off, iova, len;
        std::byte* host; // the device's own view of the memory (mapped from the fd)
    };
    struct doorbell_call {
        std::uint32_t bar;
        std::uint64_t off;
        std::uint16_t value;
    };
    struct irq_call {
        irq_kind kind;
        std::uint32_t first;
        std::vector<int> fds;
    };

    // Device side of DMA: the iovas the driver mapped, through the fd it passed (what a
    // vfio-user server does), as a ring memory policy.
    struct dma_view {
        fake_function* f;
        std::byte* translate(std::uint64_t iova, std::uint64_t len) noexcept {
            for (const auto& m : f->dma_maps)
                if (m.host != nullptr && iova >= m.iova && iova - m.iova <= m.len && len <= m.len - (iova - m.iova))
                    return m.host + (iova - m.iova);
            return nullptr;
        }
    };

    explicit fake_function(config_builder c = config_builder::standard()) : config_(c.bytes) {
        queues.resize(2);
        queues[1].notify_off = 1;
    }
    fake_function(const fake_function&) = delete;
    ~fake_function() {
        for (auto& m : dma_maps)
            if (m.host != nullptr) ::munmap(m.host, m.len);
    }

    // ---- knobs (a hostile device)
    std::uint64_t offered_features = vf::version_1 | vf::ring_event_idx | vf::ring_indirect_desc | wire::bit(0);
    std::vector<queue_regs> queues;
    std::uint32_t msix_vectors = 8;
    bool status_never_clears = false;
    bool refuse_features_ok = false;
    int refuse_vector = -1;       // this vector number reads back NO_VECTOR
    bool generation_flaps = false;
    std::uint8_t isr = 0;
    std::array<std::byte, 24> device_config{};

    // ---- records
    std::vector<std::uint8_t> status_writes;
    std::uint64_t driver_features = 0;
    std::uint16_t config_vector = msix::no_vector;
    std::vector<dma_map_call> dma_maps;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> dma_unmaps;
    std::vector<doorbell_call> doorbells; // created
    std::vector<doorbell_call> rings;     // rung
    std::vector<irq_call> irq_sets;
    std::vector<int> msix_fds = std::vector<int>(64, -1);
    std::uint8_t status = 0;

    [[nodiscard]] std::uint16_t command() const { return le::load<std::uint16_t>(config_.data() + config::command); }
    dma_view dma() { return {this}; }
    // The device raises MSI-X vector v (what KVM's irqfd / a vfio-user server does).
    void raise(std::uint16_t vector) {
        REQUIRE(vector < msix_fds.size());
        REQUIRE(msix_fds[vector] >= 0);
        const std::uint64_t one = 1;
        REQUIRE(::write(msix_fds[vector], &one, sizeof one) == sizeof one);
    }

    // ---- pci_function
    expected<void, pci::error> config_read(std::uint64_t off, std::span<std::byte> out) {
        if (off > config_.size() || out.size() > config_.size() - off) return unexpected(fail(EINVAL, "config read out of range"));
        std::memcpy(out.data(), config_.data() + off, out.size());
        return {};
    }
    expected<void, pci::error> config_write(std::uint64_t off, std::span<const std::byte> in) {
        if (off != config::command || in.size() != 2) return unexpected(fail(EINVAL, "unexpected config write"));
        std::memcpy(config_.data() + off, in.data(), in.size());
        return {};
    }
    expected<void, pci::error> region_read(std::uint32_t bar, std::uint64_t off, std::span<std::byte> out) {
        if (bar != regs_bar) return unexpected(fail(EINVAL, "read of BAR " + std::to_string(bar)));
        if (off >= common_at && off < common_at + common::size) return common_read(off - common_at, out);
        if (off == isr_at && out.size() == 1) {
            out[0] = std::byte{std::exchange(isr, 0)}; // §4.1.4.5: reading clears
            return {};
        }
        if (off >= device_at && off - device_at <= device_config.size() && out.size() <= device_config.size() - (off - device_at)) {
            std::memcpy(out.data(), device_config.data() + (off - device_at), out.size());
            return {};
        }
        return unexpected(fail(EINVAL, "read of BAR 4 at " + std::to_string(off)));
    }
    expected<void, pci::error> region_write(std::uint32_t bar, std::uint64_t off, std::span<const std::byte> in) {
        if (bar != regs_bar) return unexpected(fail(EINVAL, "write of BAR " + std::to_string(bar)));
        if (off >= common_at && off < common_at + common::size) return common_write(off - common_at, in);
        if (off >= device_at && off - device_at <= device_config.size() && in.size() <= device_config.size() - (off - device_at)) {
            std::memcpy(device_config.data() + (off - device_at), in.data(), in.size());
            return {};
        }
        return unexpected(fail(EINVAL, "write of BAR 4 at " + std::to_string(off)));
    }
    expected<window, pci::error> map_window(std::uint32_t, std::uint64_t, std::uint64_t) {
        return unexpected(fail(ENOTSUP, "no windows"));
    }
    expected<pci::doorbell, pci::error> doorbell(std::uint32_t bar, std::uint64_t off, std::uint16_t value) {
        doorbells.push_back({bar, off, value});
        return pci::doorbell([this, bar, off, value] { rings.push_back({bar, off, value}); });
    }
    expected<void, pci::error> dma_map(int fd, std::uint64_t file_off, std::uint64_t iova, std::uint64_t len) {
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(file_off));
        if (p == MAP_FAILED) return unexpected(fail(errno, "mmap of the DMA fd"));
        dma_maps.push_back({fd, file_off, iova, len, static_cast<std::byte*>(p)});
        return {};
    }
    expected<void, pci::error> dma_unmap(std::uint64_t iova, std::uint64_t len) {
        dma_unmaps.emplace_back(iova, len);
        for (auto& m : dma_maps)
            if (m.iova == iova && m.len == len && m.host != nullptr) {
                ::munmap(m.host, m.len);
                m.host = nullptr;
                return {};
            }
        return unexpected(fail(ENOENT, "no such DMA mapping"));
    }
    expected<std::uint32_t, pci::error> irq_count(irq_kind kind) {
        return kind == irq_kind::msix ? msix_vectors : std::uint32_t{1};
    }
    expected<void, pci::error> set_irq_eventfds(irq_kind kind, std::uint32_t first, std::span<const int> fds) {
        irq_sets.push_back({kind, first, {fds.begin(), fds.end()}});
        if (kind != irq_kind::msix || first + fds.size() > msix_fds.size()) return unexpected(fail(EINVAL, "bad irq set"));
        for (std::size_t i = 0; i < fds.size(); ++i) msix_fds[first + i] = fds[i];
        return {};
    }
    expected<void, pci::error> reset() {
        device_reset();
        return {};
    }

private:
    queue_regs* selected() { return queue_select_ < queues.size() ? &queues[queue_select_] : nullptr; }

    void device_reset() {
        status = 0;
        driver_features = 0;
        config_vector = msix::no_vector;
        for (auto& q : queues) {
            q.size = q.max_size;
            q.msix = msix::no_vector;
            q.enable = 0;
            q.desc = q.driver = q.device = 0;
        }
    }
    std::uint16_t accept_vector(std::uint16_t v) const {
        if (v == msix::no_vector || v >= msix_vectors || static_cast<int>(v) == refuse_vector) return msix::no_vector;
        return v;
    }

    // §4.1.3.1: each field with an access of its own width; 64-bit ones as 32-bit halves.
    // Any other access is refused, so a successful attach also proves the widths.
    static bool width_ok(std::uint64_t field, std::size_t n) {
        switch (field) {
        case common::device_feature_select: case common::device_feature: case common::driver_feature_select:
        case common::driver_feature: case common::queue_desc: case common::queue_desc + 4: case common::queue_driver:
        case common::queue_driver + 4: case common::queue_device: case common::queue_device + 4:
            return n == 4;
        case common::device_status: case common::config_generation: return n == 1;
        default: return n == 2;
        }
    }

    expected<void, pci::error> common_read(std::uint64_t field, std::span<std::byte> out) {
        if (!width_ok(field, out.size())) return unexpected(fail(EINVAL, "common read width " + std::to_string(out.size()) + " at " + std::to_string(field)));
        std::uint64_t v = 0;
        auto* q = selected();
        switch (field) {
        case common::device_feature: v = device_feature_select_ < 2 ? (offered_features >> (32 * device_feature_select_)) & 0xffffffff : 0; break;
        case common::device_feature_select: v = device_feature_select_; break;
        case common::driver_feature_select: v = driver_feature_select_; break;
        case common::driver_feature: v = driver_feature_select_ < 2 ? (driver_features >> (32 * driver_feature_select_)) & 0xffffffff : 0; break;
        case common::config_msix_vector: v = config_vector; break;
        case common::num_queues: v = queues.size(); break;
        case common::device_status: v = status; break;
        case common::config_generation: v = generation_flaps ? ++generation_ : generation_; break;
        case common::queue_select: v = queue_select_; break;
        case common::queue_size: v = q ? q->size : 0; break;
        case common::queue_msix_vector: v = q ? q->msix : msix::no_vector; break;
        case common::queue_enable: v = q ? q->enable : 0; break;
        case common::queue_notify_off: v = q ? q->notify_off : 0; break;
        case common::queue_desc: v = q ? q->desc & 0xffffffff : 0; break;
        case common::queue_desc + 4: v = q ? q->desc >> 32 : 0; break;
        case common::queue_driver: v = q ? q->driver & 0xffffffff : 0; break;
        case common::queue_driver + 4: v = q ? q->driver >> 32 : 0; break;
        case common::queue_device: v = q ? q->device & 0xffffffff : 0; break;
        case common::queue_device + 4: v = q ? q->device >> 32 : 0; break;
        default: return unexpected(fail(EINVAL, "common read at " + std::to_string(field)));
        }
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::byte(static_cast<std::uint8_t>(v >> (8 * i)));
        return {};
    }

    expected<void, pci::error> common_write(std::uint64_t field, std::span<const std::byte> in) {
        if (!width_ok(field, in.size())) return unexpected(fail(EINVAL, "common write width " + std::to_string(in.size()) + " at " + std::to_string(field)));
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < in.size(); ++i) v |= std::uint64_t{std::to_integer<std::uint8_t>(in[i])} << (8 * i);
        auto* q = selected();
        const auto set_lo = [](std::uint64_t& r, std::uint64_t x) { r = (r & ~0xffffffffull) | x; };
        const auto set_hi = [](std::uint64_t& r, std::uint64_t x) { r = (r & 0xffffffffull) | (x << 32); };
        switch (field) {
        case common::device_feature_select: device_feature_select_ = static_cast<std::uint32_t>(v); break;
        case common::driver_feature_select: driver_feature_select_ = static_cast<std::uint32_t>(v); break;
        case common::driver_feature:
            if (driver_feature_select_ == 0) set_lo(driver_features, v);
            else if (driver_feature_select_ == 1) set_hi(driver_features, v);
            break;
        case common::config_msix_vector: config_vector = accept_vector(static_cast<std::uint16_t>(v)); break;
        case common::device_status: {
            const auto s = static_cast<std::uint8_t>(v);
            status_writes.push_back(s);
            if (s == 0) {
                if (status_never_clears) status = status::acknowledge;
                else device_reset();
            } else {
                status = refuse_features_ok ? static_cast<std::uint8_t>(s & ~status::features_ok) : s;
            }
            break;
        }
        case common::queue_select: queue_select_ = static_cast<std::uint16_t>(v); break;
        case common::queue_size: if (q) q->size = static_cast<std::uint16_t>(v); break;
        case common::queue_msix_vector: if (q) q->msix = accept_vector(static_cast<std::uint16_t>(v)); break;
        case common::queue_enable: if (q) q->enable = static_cast<std::uint16_t>(v); break;
        case common::queue_desc: if (q) set_lo(q->desc, v); break;
        case common::queue_desc + 4: if (q) set_hi(q->desc, v); break;
        case common::queue_driver: if (q) set_lo(q->driver, v); break;
        case common::queue_driver + 4: if (q) set_hi(q->driver, v); break;
        case common::queue_device: if (q) set_lo(q->device, v); break;
        case common::queue_device + 4: if (q) set_hi(q->device, v); break;
        default: return unexpected(fail(EINVAL, "common write at " + std::to_string(field)));
        }
        return {};
    }

    std::array<std::byte, 256> config_;
    std::uint32_t device_feature_select_ = 0;
    std::uint32_t driver_feature_select_ = 0;
    std::uint16_t queue_select_ = 0;
    std::uint8_t generation_ = 0;
};

static_assert(pci_function<fake_function>);
static_assert(ring::memory_policy<fake_function::dma_view>);

using test_driver = virtio_driver<fake_function>;

virtio_driver_options two_queues(std::uint16_t size0 = 256, std::uint16_t size1 = 128) {
    virtio_driver_options o;
    o.wanted_features = vf::ring_event_idx | vf::in_order | wire::bit(0);
    o.queues = {{.size = size0}, {.size = size1}};
    o.arena_size = 256 * 1024;
    o.arena_iova = 0x2'0000'0000;
    o.reset_timeout = 50ms;
    return o;
}

std::string attach_error(fake_function& f, const virtio_driver_options& o = two_queues()) {
    auto d = test_driver::attach(f, o);
    REQUIRE_FALSE(d);
    INFO(d.error().message());
    return d.error().message();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

} // namespace

// ====================================================================== capabilities
TEST_CASE("capabilities: a well-formed list is parsed, cap64 and multipliers included", "[pci][caps]") {
    const auto c = config_builder::standard(8);
    auto caps = parse_capabilities(c.bytes);
    REQUIRE(caps);
    CHECK(caps->total == 7);
    REQUIRE(caps->virtio.size() == 5);
    const auto* n = caps->find(cap_type::notify);
    REQUIRE(n != nullptr);
    CHECK(n->bar == regs_bar);
    CHECK(n->offset == notify_at);
    CHECK(n->multiplier == notify_multiplier);
    CHECK(n->position == 0x50);
    const auto* shm = caps->find(cap_type::shared_memory, 0);
    REQUIRE(shm != nullptr);
    CHECK(shm->bar == 2);
    CHECK(shm->offset == 0x1'0000'2000ull);
    CHECK(shm->length == 0xf'0000'0000ull);
    CHECK(caps->find(cap_type::shared_memory, 1) == nullptr);
    CHECK(caps->find(cap_type::doorbell) == nullptr);
    REQUIRE(caps->msix);
    CHECK(caps->msix->table_size == 8);
    CHECK(caps->msix->table_bar == regs_bar);
    CHECK(caps->msix->table_offset == 0x4000);
    CHECK(caps->msix->pba_offset == 0x6000);
    CHECK_FALSE(caps->msix->enabled);
}

TEST_CASE("capabilities: hostile lists are refused with the rule they break", "[pci][caps][hostile]") {
    auto expect_error = [](const config_builder& c, const std::string& part) {
        auto caps = parse_capabilities(c.bytes);
        REQUIRE_FALSE(caps);
        INFO(caps.error().message());
        CHECK(contains(caps.error().message(), part));
        CHECK(caps.error().code == std::errc::protocol_error);
    };
    SECTION("a loop") {
        auto c = config_builder::standard();
        c.put8(0x98 + 1, 0x50); // the last cap points back to the notify cap
        expect_error(c, "loops back to 0x50");
    }
    SECTION("a self-loop") {
        config_builder c;
        c.first(0x40);
        c.other(0x40, 0x01, 0x40);
        expect_error(c, "loops back to 0x40");
    }
    SECTION("a pointer into the header") {
        auto c = config_builder::standard();
        c.put8(0x40 + 1, 0x20);
        expect_error(c, "points into the config header");
    }
    SECTION("an unaligned pointer") {
        auto c = config_builder::standard();
        c.first(0x41);
        expect_error(c, "not dword-aligned");
    }
    SECTION("a virtio cap running past config space") {
        config_builder c;
        c.first(0xf8);
        c.vendor(0xf8, 0, cap_type::common, regs_bar, 0, 0x1000, 16);
        expect_error(c, "extends past config space");
    }
    SECTION("a cap_len too short for the cap") {
        auto c = config_builder::standard();
        c.put8(0x50 + cap::len, 16); // notify cap without its multiplier
        expect_error(c, "needs 20");
        c = config_builder::standard();
        c.put8(0x40 + cap::len, 8);
        expect_error(c, "cap_len 8");
    }
    SECTION("an MSI-X cap past config space") {
        config_builder c;
        c.first(0xf8);
        c.msix_cap(0xf8, 0, 4);
        expect_error(c, "MSI-X capability at 0xf8 extends past");
    }
    SECTION("no capability list bit") {
        auto c = config_builder::standard();
        c.put16(config::status, 0);
        expect_error(c, "bit 4 clear");
    }
    SECTION("cap64 offset + length wraps") {
        auto c = config_builder::standard();
        c.put32(0x98 + cap::length_hi, 0xffffffff);
        c.put32(0x98 + cap::offset_hi, 0xffffffff);
        expect_error(c, "overflows 64 bits");
    }
}

TEST_CASE("capabilities: a cap with a reserved BAR is ignored (§4.1.4)", "[pci][caps]") {
    auto c = config_builder::standard();
    c.put8(0x68 + cap::bar, 7); // the ISR cap
    auto caps = parse_capabilities(c.bytes);
    REQUIRE(caps);
    CHECK(caps->find(cap_type::isr) == nullptr);
    CHECK(caps->find(cap_type::common) != nullptr);
}

TEST_CASE("capabilities: 48 distinct caps are walked, a 49th cannot exist", "[pci][caps]") {
    config_builder c;
    c.first(0x40);
    for (std::uint32_t at = 0x40; at <= 0xfc; at += 4) c.other(static_cast<std::uint8_t>(at), 0x01, at == 0xfc ? 0 : static_cast<std::uint8_t>(at + 4));
    auto caps = parse_capabilities(c.bytes);
    REQUIRE(caps);
    CHECK(caps->total == 48);
}

// ====================================================================== dma_arena
TEST_CASE("dma_arena: in huge pages, a whole 2 MiB page, or an error that says so", "[pci][arena]") {
    // Whether this machine has a free 2 MiB page (vm.nr_hugepages) is its own business: the
    // arena either takes one, or fails at create() — never later, on first touch (SIGBUS).
    fake_function f; // outlives the arena, which unmaps through it
    auto a = dma_arena::create(10000, "vvu-test-huge", true);
    if (a) {
        CHECK(a->size() == dma_arena::huge_page_size);
        REQUIRE(a->attach(f, 0x4000'0000));
        auto at = a->allocate(dma_arena::huge_page_size - 4096, 4096);
        REQUIRE(at);
        std::memset(a->translate(*at, dma_arena::huge_page_size - 4096), 0x5a, dma_arena::huge_page_size - 4096);
        CHECK(f.dma_maps.at(0).len == dma_arena::huge_page_size);
    } else {
        CHECK(a.error().message().find("huge pages") != std::string::npos);
    }
}

TEST_CASE("dma_arena: attach maps the memfd, allocations are aligned iovas, detach unmaps", "[pci][arena]") {
    fake_function f;
    auto a = dma_arena::create(10000);
    REQUIRE(a);
    CHECK(a->size() == 12288);
    CHECK_FALSE(a->allocate(16));                 // no iova before attach
    CHECK(a->translate(0, 0) == nullptr);
    CHECK_FALSE(a->attach(f, 0x1001));            // not page-aligned
    REQUIRE(a->attach(f, 0x10000));
    CHECK_FALSE(a->attach(f, 0x20000));           // already attached
    REQUIRE(f.dma_maps.size() == 1);
    CHECK(f.dma_maps[0].fd == a->fd());
    CHECK(f.dma_maps[0].iova == 0x10000);
    CHECK(f.dma_maps[0].len == 12288);
    CHECK(f.dma_maps[0].file_off == 0);

    auto x = a->allocate(3, 1);
    auto y = a->allocate(100, 4096);
    auto z = a->allocate(8, 16);
    REQUIRE((x && y && z));
    CHECK(*x == 0x10000);
    CHECK(*y == 0x11000);
    CHECK(*z == 0x11070);
    CHECK_FALSE(a->allocate(8, 3));               // not a power of two
    CHECK_FALSE(a->allocate(8, 8192));            // above a page
    CHECK_FALSE(a->allocate(1 << 20));            // exhausted
    CHECK(a->translate(*y, 100) == a->data() + 0x1000);
    CHECK(a->translate(0x10000 + 12288, 0) != nullptr);
    CHECK(a->translate(0x10000 + 12288, 1) == nullptr);
    CHECK(a->translate(0xffff, 1) == nullptr);
    CHECK(a->translate(0x10000, ~0ull) == nullptr);
    CHECK(a->iova_of(a->data() + 5) == 0x10005);

    // The device sees what we write (same memfd pages).
    std::memcpy(a->translate(*y, 5), "hello", 5);
    CHECK(std::memcmp(f.dma().translate(*y, 5), "hello", 5) == 0);

    dma_arena moved = std::move(*a);
    CHECK(moved.attached());
    CHECK(f.dma_unmaps.empty());
    { dma_arena gone = std::move(moved); }
    REQUIRE(f.dma_unmaps.size() == 1);
    CHECK(f.dma_unmaps[0] == std::pair<std::uint64_t, std::uint64_t>{0x10000, 12288});
}

// ====================================================================== bring-up
TEST_CASE("virtio_driver: bring-up follows §3.1.1 and programs every queue", "[pci][driver]") {
    fake_function f;
    f.queues[1].max_size = 64; // wanted 128: lowered to the device's 64
    auto o = two_queues();
    {
        auto d = test_driver::attach(f, o);
        REQUIRE(d);

        using namespace vvu::pci::status;
        CHECK(f.status_writes == std::vector<std::uint8_t>{0, acknowledge, acknowledge | driver,
                                                            acknowledge | driver | features_ok,
                                                            acknowledge | driver | features_ok | driver_ok});
        CHECK(f.status == (acknowledge | driver | features_ok | driver_ok));
        auto st = d->device_status();
        REQUIRE(st);
        CHECK(*st == f.status);
        CHECK((f.command() & config::command_bus_master) != 0);
        CHECK((f.command() & config::command_memory) != 0);

        // Features: what was wanted and offered, plus VERSION_1; IN_ORDER was not offered.
        CHECK(f.driver_features == (vf::version_1 | vf::ring_event_idx | wire::bit(0)));
        CHECK(d->features() == f.driver_features);
        CHECK(d->device_features() == f.offered_features);

        // One DMA mapping: the arena, at the chosen iova.
        REQUIRE(f.dma_maps.size() == 1);
        const auto& m = f.dma_maps[0];
        CHECK(m.iova == o.arena_iova);
        CHECK(m.len == o.arena_size);
        CHECK(m.fd == d->arena().fd());

        // Queues: size, areas inside the mapping, aligned, not overlapping, as the ring uses them.
        REQUIRE(d->queue_count() == 2);
        const std::uint32_t want_size[2] = {256, 64};
        std::vector<std::pair<std::uint64_t, std::uint64_t>> areas;
        for (std::uint16_t q = 0; q < 2; ++q) {
            const auto& regs = f.queues[q];
            const auto& vq = d->queue(q);
            CHECK(regs.size == want_size[q]);
            CHECK(vq.size() == want_size[q]);
            CHECK(regs.enable == 1);
            CHECK(regs.desc == vq.layout().desc_addr);
            CHECK(regs.driver == vq.layout().avail_addr);
            CHECK(regs.device == vq.layout().used_addr);
            CHECK(regs.desc % 16 == 0);
            CHECK(regs.driver % 2 == 0);
            CHECK(regs.device % 4 == 0);
            const std::uint64_t n = regs.size;
            for (auto [addr, len] : {std::pair{regs.desc, ring::split_layout::desc_bytes(n)},
                                     std::pair{regs.driver, ring::split_layout::avail_bytes(n)},
                                     std::pair{regs.device, ring::split_layout::used_bytes(n)}}) {
                CHECK(addr >= m.iova);
                CHECK(addr + len <= m.iova + m.len);
                areas.emplace_back(addr, len);
            }
            // MSI-X: vector 1 + q, read back by the device.
            CHECK(regs.msix == 1 + q);
            CHECK(vq.msix_vector() == 1 + q);
        }
        std::sort(areas.begin(), areas.end());
        for (std::size_t i = 1; i < areas.size(); ++i) CHECK(areas[i - 1].first + areas[i - 1].second <= areas[i].first);
        CHECK(f.config_vector == 0);

        // Doorbells: one per queue at notify + queue_notify_off × multiplier, value = index.
        REQUIRE(f.doorbells.size() == 2);
        for (std::uint16_t q = 0; q < 2; ++q) {
            CHECK(f.doorbells[q].bar == regs_bar);
            CHECK(f.doorbells[q].off == notify_at + f.queues[q].notify_off * notify_multiplier);
            CHECK(f.doorbells[q].value == q);
            CHECK(d->queue(q).notify_offset() == f.doorbells[q].off);
        }

        // MSI-X eventfds: vector 0 config, 1 + q queue q, handed over in one call.
        REQUIRE(f.irq_sets.size() == 1);
        CHECK(f.irq_sets[0].kind == irq_kind::msix);
        CHECK(f.irq_sets[0].first == 0);
        CHECK(f.irq_sets[0].fds == std::vector<int>{d->config_eventfd(), d->queue_eventfd(0), d->queue_eventfd(1)});
        CHECK(d->msix());

        // Capabilities reachable for a transport built on top.
        const auto* shm = d->capability(cap_type::shared_memory);
        REQUIRE(shm != nullptr);
        CHECK(shm->length == 0xf'0000'0000ull);
    }
    // Teardown: reset (status 0 read back), eventfds withdrawn, arena unmapped.
    CHECK(f.status_writes.back() == 0);
    CHECK(f.status == 0);
    REQUIRE(f.irq_sets.size() == 2);
    CHECK(f.irq_sets[1].fds == std::vector<int>(3, -1));
    REQUIRE(f.dma_unmaps.size() == 1);
    CHECK(f.dma_unmaps[0].first == o.arena_iova);
}

TEST_CASE("virtio_driver: a posted buffer rings the queue's doorbell with its index and vectors wake the driver", "[pci][driver]") {
    fake_function f;
    auto d = test_driver::attach(f, two_queues());
    REQUIRE(d);
    auto buf = d->arena().allocate(64);
    REQUIRE(buf);
    const ring::buffer b{*buf, 64};
    REQUIRE(d->queue(1).add({&b, 1}, {}, 7));
    CHECK(d->notify(1));
    REQUIRE(f.rings.size() == 1);
    CHECK(f.rings[0].value == 1);
    CHECK(f.rings[0].off == notify_at + 1 * notify_multiplier);
    CHECK_FALSE(d->notify(1)); // nothing new since

    // Nothing pending: no wake-up.
    CHECK_FALSE(d->queue(0).wait(0ms));
    f.raise(f.queues[0].msix);
    CHECK(d->queue(0).wait(1000ms));
    CHECK_FALSE(d->queue(1).wait(0ms)); // vector 1 woke queue 0 only
    f.raise(f.config_vector);
    CHECK(d->config_interrupt().wait(1000ms));
}

TEST_CASE("virtio_driver: buffers on queue 0 go through a split_device over the same memory and come back", "[pci][driver]") {
    fake_function f;
    auto o = two_queues();
    o.wanted_features |= vf::ring_indirect_desc;
    o.queues[0].indirect_entries = 4;
    auto d = test_driver::attach(f, o);
    REQUIRE(d);
    CHECK((d->features() & vf::ring_indirect_desc) != 0);

    // The device side: the queue as the device learnt it from the common cfg, through its own
    // mapping of the DMA fd.
    auto view = f.dma();
    ring::split_config dev_cfg;
    dev_cfg.size = f.queues[0].size;
    dev_cfg.desc_addr = f.queues[0].desc;
    dev_cfg.avail_addr = f.queues[0].driver;
    dev_cfg.used_addr = f.queues[0].device;
    dev_cfg.features = {.event_idx = true, .indirect = true, .in_order = false};
    auto dev = ring::split_device<fake_function::dma_view>::create(view, dev_cfg);
    REQUIRE(dev);

    auto& q = d->queue(0);
    auto& arena = d->arena();
    constexpr int count = 40;
    std::vector<std::uint64_t> out_iova(count), in_iova(count);
    for (int i = 0; i < count; ++i) {
        auto a = arena.allocate(32, 8);
        auto b = arena.allocate(48, 8);
        REQUIRE((a && b));
        out_iova[i] = *a;
        in_iova[i] = *b;
        for (int j = 0; j < 32; ++j) arena.translate(*a, 32)[j] = std::byte(static_cast<std::uint8_t>(i * 3 + j));
    }
    int reaped = 0, posted = 0;
    while (reaped < count) {
        // Driver posts what fits (a mix of direct and indirect chains).
        while (posted < count && q.ring().free_descriptors() >= 2) {
            const ring::buffer r{out_iova[posted], 32}, w{in_iova[posted], 48};
            REQUIRE(q.add({&r, 1}, {&w, 1}, static_cast<std::uint64_t>(posted), posted % 2 == 1));
            ++posted;
        }
        q.notify();
        // Device: take everything, check the bytes, answer, interrupt.
        ring::chain c;
        while (dev->pop(c)) {
            std::array<std::byte, 32> got{};
            REQUIRE(c.copy_from(got) == 32);
            const auto i = static_cast<int>(std::to_integer<std::uint8_t>(got[0])) / 3;
            for (int j = 0; j < 32; ++j) REQUIRE(got[j] == std::byte(static_cast<std::uint8_t>(i * 3 + j)));
            std::array<std::byte, 40> reply{};
            for (int j = 0; j < 40; ++j) reply[j] = std::byte(static_cast<std::uint8_t>(0xA0 ^ (i + j)));
            REQUIRE(c.copy_to(reply) == 40);
            REQUIRE(dev->push(c.id(), 40));
        }
        if (dev->needs_interrupt()) f.raise(f.queues[0].msix);
        // Driver: wake, reap, check.
        REQUIRE(q.wait(1000ms));
        ring::used_buffer u;
        while (q.reap(u)) {
            const auto i = static_cast<int>(u.token);
            CHECK(u.len == 40);
            const std::byte* p = arena.translate(in_iova[i], 48);
            for (int j = 0; j < 40; ++j) REQUIRE(p[j] == std::byte(static_cast<std::uint8_t>(0xA0 ^ (i + j))));
            ++reaped;
        }
        q.enable_interrupts();
    }
    CHECK_FALSE(q.broken());
    CHECK_FALSE(dev->broken());
    CHECK(q.ring().outstanding() == 0);
    CHECK(f.rings.size() >= 1);
    for (const auto& r : f.rings) CHECK(r.value == 0);
}

TEST_CASE("virtio_driver: reset writes 0, withdraws the eventfds and keeps the rings' memory", "[pci][driver]") {
    fake_function f;
    auto d = test_driver::attach(f, two_queues());
    REQUIRE(d);
    REQUIRE(d->reset());
    CHECK(f.status_writes.back() == 0);
    CHECK(f.status == 0);
    REQUIRE(f.irq_sets.size() == 2);
    CHECK(f.irq_sets[1].fds == std::vector<int>(3, -1));
    CHECK(d->arena().attached());
    CHECK(d->arena().translate(d->queue(0).layout().desc_addr, 16) != nullptr);
    const auto writes = f.status_writes.size();
    d = test_driver::attach(f, two_queues()).value(); // move-assign: the old driver needs no second reset
    CHECK(f.status_writes.size() == writes + 5);
    CHECK(f.dma_unmaps.size() == 1);             // the first arena went
}

TEST_CASE("virtio_driver: INTx mode has no vectors and read_isr reads and clears the ISR", "[pci][driver]") {
    fake_function f;
    auto o = two_queues();
    o.use_msix = false;
    auto d = test_driver::attach(f, o);
    REQUIRE(d);
    CHECK(f.irq_sets.empty());
    CHECK(f.config_vector == msix::no_vector);
    CHECK(f.queues[0].msix == msix::no_vector);
    CHECK(d->queue_eventfd(0) < 0);
    CHECK(d->config_eventfd() < 0);
    CHECK_FALSE(d->queue(0).wait(10ms));
    f.isr = isr::queue | isr::config;
    auto v = d->read_isr();
    REQUIRE(v);
    CHECK(*v == (isr::queue | isr::config));
    v = d->read_isr();
    REQUIRE(v);
    CHECK(*v == 0);
}

TEST_CASE("virtio_driver: device config reads and writes go through the device cap, bounded", "[pci][driver]") {
    fake_function f;
    for (std::size_t i = 0; i < f.device_config.size(); ++i) f.device_config[i] = std::byte(static_cast<std::uint8_t>(i + 1));
    auto d = test_driver::attach(f, two_queues());
    REQUIRE(d);
    std::array<std::byte, 4> v{};
    REQUIRE(d->device_config_read(4, v));
    CHECK(v == std::array<std::byte, 4>{std::byte{5}, std::byte{6}, std::byte{7}, std::byte{8}});
    const std::array<std::byte, 2> w{std::byte{0xaa}, std::byte{0xbb}};
    REQUIRE(d->device_config_write(22, w));
    CHECK(f.device_config[23] == std::byte{0xbb});
    auto past = d->device_config_read(22, v);
    REQUIRE_FALSE(past);
    CHECK(contains(past.error().message(), "outside the 24-byte structure"));
    CHECK_FALSE(d->device_config_write(~0ull, w));

    f.generation_flaps = true;
    auto flapping = d->device_config_read(0, v);
    REQUIRE_FALSE(flapping);
    CHECK(contains(flapping.error().message(), "config_generation kept changing"));
}

// ====================================================================== hostile devices
TEST_CASE("virtio_driver: a hostile or broken device is a clear error, never a crash or a hang", "[pci][driver][hostile]") {
    SECTION("a capability loop") {
        auto c = config_builder::standard();
        c.put8(0x98 + 1, 0x40);
        fake_function f(c);
        CHECK(contains(attach_error(f), "loops back to 0x40"));
        CHECK(f.status_writes.empty());
        CHECK(f.dma_maps.empty());
    }
    SECTION("a capability pointing outside config space") {
        config_builder c = config_builder::standard();
        c.vendor(0xf4, 0, cap_type::device, regs_bar, device_at, 24, 16);
        c.put8(0x98 + 1, 0xf4);
        fake_function f(c);
        CHECK(contains(attach_error(f), "extends past config space"));
    }
    SECTION("no common cap") {
        auto c = config_builder::standard();
        c.put8(0x40 + cap::cfg_type, static_cast<std::uint8_t>(cap_type::pci_cfg));
        fake_function f(c);
        CHECK(contains(attach_error(f), "no common configuration capability"));
        CHECK(f.status_writes.empty());
    }
    SECTION("a common cap too short for the queue registers") {
        auto c = config_builder::standard();
        c.put32(0x40 + cap::length, 32);
        fake_function f(c);
        CHECK(contains(attach_error(f), "common configuration capability is 32 bytes"));
    }
    SECTION("no notify cap") {
        auto c = config_builder::standard();
        c.put8(0x50 + cap::cfg_type, 99);
        fake_function f(c);
        CHECK(contains(attach_error(f), "no notify capability"));
    }
    SECTION("FEATURES_OK not accepted") {
        fake_function f;
        f.refuse_features_ok = true;
        CHECK(contains(attach_error(f), "FEATURES_OK refused by the device"));
        // FAILED set (§3.1.1), then a reset before the memory went.
        REQUIRE(f.status_writes.size() >= 2);
        CHECK((f.status_writes[f.status_writes.size() - 2] & status::failed) != 0);
        CHECK(f.status_writes.back() == 0);
    }
    SECTION("VERSION_1 not offered") {
        fake_function f;
        f.offered_features = vf::ring_event_idx;
        CHECK(contains(attach_error(f), "lacks required features 0x100000000"));
    }
    SECTION("queue size 0") {
        fake_function f;
        f.queues[1].max_size = 0;
        CHECK(contains(attach_error(f), "queue 1: size 0"));
        CHECK(f.dma_unmaps.size() == f.dma_maps.size());      // the arena was withdrawn
        CHECK(f.irq_sets.back().fds == std::vector<int>(3, -1)); // and the eventfds
    }
    SECTION("queue size not a power of two") {
        fake_function f;
        f.queues[0].max_size = 100;
        CHECK(contains(attach_error(f), "queue 0: the device offers size 100, not a power of two"));
    }
    SECTION("fewer queues than wanted") {
        fake_function f;
        f.queues.resize(1);
        CHECK(contains(attach_error(f), "the device has 1 queues, 2 wanted"));
    }
    SECTION("status never clears on reset") {
        fake_function f;
        f.status_never_clears = true;
        const auto t0 = std::chrono::steady_clock::now();
        auto d = test_driver::attach(f, two_queues());
        REQUIRE_FALSE(d);
        CHECK(d.error().code == std::errc::timed_out);
        CHECK(contains(d.error().message(), "reset: device_status still reads 0x1 after 50 ms"));
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        CHECK(f.status_writes == std::vector<std::uint8_t>{0}); // nothing more was tried
    }
    SECTION("a queue vector refused") {
        fake_function f;
        f.refuse_vector = 2;
        CHECK(contains(attach_error(f), "queue 1: MSI-X vector 2 refused by the device (reads back 0xffff)"));
    }
    SECTION("the config vector refused") {
        fake_function f;
        f.refuse_vector = 0;
        CHECK(contains(attach_error(f), "config: MSI-X vector 0 refused"));
    }
    SECTION("too few MSI-X vectors") {
        fake_function f;
        f.msix_vectors = 2;
        CHECK(contains(attach_error(f), "offers 2 MSI-X vectors, 3 needed"));
    }
    SECTION("an MSI-X table too small") {
        fake_function f(config_builder::standard(2));
        CHECK(contains(attach_error(f), "MSI-X table has 2 vectors, 3 needed"));
    }
    SECTION("a notify offset outside the notify structure") {
        fake_function f;
        f.queues[1].notify_off = 0x400; // × 4 = 0x1000: the register would start at the end
        CHECK(contains(attach_error(f), "queue 1: notify offset 1024 x multiplier 4 lies outside"));
    }
    SECTION("options the driver cannot honour") {
        fake_function f;
        auto o = two_queues();
        o.wanted_features |= vf::ring_packed;
        CHECK(contains(attach_error(f, o), "not supported by this driver"));
        o = two_queues(100);
        CHECK(contains(attach_error(f, o), "queue 0 size 100 is not a power of two"));
        o = two_queues();
        o.arena_size = 4096; // two rings of 256 and 128 do not fit
        CHECK(contains(attach_error(f, o), "DMA arena exhausted"));
        CHECK(f.status_writes.back() == 0);
    }
}
