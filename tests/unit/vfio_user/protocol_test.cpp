// Byte-exact layouts of the vfio-user payloads and the VERSION capabilities JSON.
#include <vvu/vfio_user/device.hpp>
#include <vvu/vfio_user/protocol.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace vvu::vfio_user;

namespace {

template <class T>
std::vector<unsigned> bytes(const T& v) {
    std::vector<std::byte> b(sizeof(T));
    store(b, v);
    std::vector<unsigned> out;
    for (auto x : b) out.push_back(static_cast<unsigned>(x));
    return out;
}

std::vector<std::byte> data(std::string s, bool nul = true) {
    std::vector<std::byte> out;
    for (char c : s) out.push_back(static_cast<std::byte>(c));
    if (nul) out.push_back(std::byte{0});
    return out;
}

} // namespace

TEST_CASE("vfio-user header is 16 little-endian bytes") {
    const header h{0x0102, 10, 0x20, header_flags::type_reply | header_flags::error, 22};
    CHECK(bytes(h) == std::vector<unsigned>{0x02, 0x01, 10, 0, 0x20, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0});
    std::vector<std::byte> raw(16);
    store(raw, h);
    const auto back = load<header>(raw);
    CHECK(back.msg_id == 0x0102);
    CHECK(back.error_no == 22);
}

TEST_CASE("vfio-user DMA_MAP and DMA_UNMAP payloads") {
    const dma_map_payload m{32, dma_flags::read | dma_flags::write, 0x1000, 0x2'0000'0000, 0x3000};
    CHECK(bytes(m) == std::vector<unsigned>{32, 0, 0, 0, 3, 0, 0, 0,                 // argsz, flags
                                            0, 0x10, 0, 0, 0, 0, 0, 0,               // offset
                                            0, 0, 0, 0, 2, 0, 0, 0,                  // addr
                                            0, 0x30, 0, 0, 0, 0, 0, 0});             // size
    const dma_unmap_payload u{24, 0, 0x5000, 0x1000};
    CHECK(bytes(u) == std::vector<unsigned>{24, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0});
}

TEST_CASE("vfio-user region info, sparse cap and region access payloads") {
    const region_info_payload r{0x50, region_flags::read | region_flags::caps, 2, 32, 0x100, 0x7000};
    CHECK(bytes(r) == std::vector<unsigned>{0x50, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 32, 0, 0, 0,
                                            0, 1, 0, 0, 0, 0, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0});
    sparse_mmap_cap c;
    c.nr_areas = 2;
    CHECK(bytes(c) == std::vector<unsigned>{1, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0});
    const region_access_payload a{0x40, 7, 4};
    CHECK(bytes(a) == std::vector<unsigned>{0x40, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0});
}

TEST_CASE("vfio-user io fds, irq info and irq set payloads") {
    sub_region_ioeventfd e;
    e.offset = 0x10;
    e.size = 2;
    e.fd_index = 1;
    e.datamatch = 0xab;
    CHECK(bytes(e) == std::vector<unsigned>{0x10, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0, 0, 0, 0, 0, 0, 0});
    CHECK(bytes(region_io_fds_payload{56, 0, 2, 1}) == std::vector<unsigned>{56, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0});
    CHECK(bytes(irq_info_payload{16, 1, 2, 4}) == std::vector<unsigned>{16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0});
    const irq_set_payload s{20, irq_set_flags::data_eventfd | irq_set_flags::action_trigger, 2, 1, 3};
    CHECK(bytes(s) == std::vector<unsigned>{20, 0, 0, 0, 0x24, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0});
    CHECK(bytes(device_info_payload{16, 3, 9, 5}) == std::vector<unsigned>{16, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0});
    CHECK(bytes(version_payload{0, 2}) == std::vector<unsigned>{0, 0, 2, 0});
}

TEST_CASE("vfio-user command names") {
    CHECK(command_name(command::region_read) == "REGION_READ");
    CHECK(command_name(std::uint16_t{14}) == "UNKNOWN");
    CHECK(command_name(std::uint16_t{0}) == "UNKNOWN");
}

TEST_CASE("vfio-user capabilities: parse what libvfio-user and vvu send") {
    auto c = parse_capabilities(data(R"({"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,)"
                                     R"("migration":{"pgsize":4096},"twin_socket":{"supported":true,"fd_index":0}}})"));
    REQUIRE(c);
    CHECK(c->max_msg_fds == 16);
    CHECK(c->max_data_xfer_size == 1048576);
    CHECK(c->pgsizes == 4096);
    auto ours = parse_capabilities(data(format_capabilities({32, 1 << 20, 1024, 4096})));
    REQUIRE(ours);
    CHECK(ours->max_msg_fds == 32);
    CHECK(ours->max_dma_maps == 1024);
    // No data at all: the spec's defaults (one fd).
    auto none = parse_capabilities({});
    REQUIRE(none);
    CHECK(none->max_msg_fds == 1);
    // A nested "max_msg_fds" elsewhere is not a capability.
    auto nested = parse_capabilities(data(R"({"x":{"max_msg_fds":99},"capabilities":{}})"));
    REQUIRE(nested);
    CHECK(nested->max_msg_fds == 1);
    CHECK(parse_capabilities(data(" { } \n")));
    // vvu's own capability: sent only when set, read back; absent means 0 (QEMU's client).
    CHECK(format_capabilities({16, 1 << 20, 1024, 4096}).find("vvu_fd_per_area") == std::string::npos);
    auto with = parse_capabilities(data(format_capabilities({64, 1 << 20, 1024, 4096, 1})));
    REQUIRE(with);
    CHECK(with->vvu_fd_per_area == 1);
    CHECK(with->max_msg_fds == 64);
    CHECK(c->vvu_fd_per_area == 0);
    CHECK_FALSE(parse_capabilities(data(R"({"capabilities":{"vvu_fd_per_area":"yes"}})")));
}

TEST_CASE("vfio-user capabilities: hostile JSON is refused") {
    const char* bad[] = {
        "", "[]", "{", "{\"capabilities\":}", "{\"capabilities\":[1]}", "{\"capabilities\":{\"max_msg_fds\":-1}}",
        "{\"capabilities\":{\"max_msg_fds\":1.5}}", "{\"capabilities\":{\"pgsizes\":{}}}", "{\"capabilities\":{\"max_msg_fds\":\"8\"}}",
        "{\"capabilities\":{\"max_msg_fds\":99999999999999999999999}}", "{} {}", "{\"a\":tru}", "{\"a\":\"\\x\"}",
        "{\"a\":01x}", "{'a':1}", "{\"a\":1,}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    };
    for (const char* s : bad) {
        INFO(s);
        CHECK_FALSE(parse_capabilities(data(s)));
    }
    // Deep nesting inside the object is refused too, without recursion trouble.
    std::string deep = "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}";
    CHECK_FALSE(parse_capabilities(data(deep)));
    CHECK_FALSE(parse_capabilities(data("{}", false)));             // no NUL
    auto inner_nul = data("{}");
    inner_nul.insert(inner_nul.begin() + 1, std::byte{0});
    CHECK_FALSE(parse_capabilities(inner_nul));
}
