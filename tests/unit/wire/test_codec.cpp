// Byte-exact vectors for every request and reply, built field by field from the tables of
// QEMU's docs/interop/vhost-user.rst: decode(bytes) gives the typed message, encode(message)
// gives the bytes back.
#include <vvu/wire/codec.hpp>

#include "bytes.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <vector>

using namespace vvu::wire;
using vvu::test::le_bytes;

namespace {

constexpr std::uint32_t v1 = flags::version;
constexpr std::uint32_t reply_flags = flags::version | flags::reply;

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
    return std::ranges::equal(a, b);
}

template <auto R>
void check_request(const message<R>& expected, const std::vector<std::byte>& bytes, std::vector<int> fds = {}) {
    INFO(name(R));
    auto decoded = decode<decltype(R)>(bytes, fds);
    if (!decoded) FAIL(decoded.error().message());
    REQUIRE(std::holds_alternative<message<R>>(*decoded));
    CHECK(std::get<message<R>>(*decoded) == expected);
    auto encoded = encode(expected);
    if (!encoded) FAIL(encoded.error().message());
    CHECK(same_bytes(encoded->bytes(), bytes));
    CHECK(std::ranges::equal(encoded->fds.span(), fds));
}

template <auto R>
void check_reply(const reply<R>& expected, const std::vector<std::byte>& bytes, std::vector<int> fds = {}) {
    INFO("reply to " << name(R));
    auto decoded = decode_reply<R>(bytes, fds);
    if (!decoded) FAIL(decoded.error().message());
    CHECK(*decoded == expected);
    auto encoded = encode(expected);
    if (!encoded) FAIL(encoded.error().message());
    CHECK(same_bytes(encoded->bytes(), bytes));
    // The same bytes through the observer's entry point.
    auto any = decode_any_reply<decltype(R)>(bytes, fds);
    REQUIRE(any);
    CHECK(std::get<reply<R>>(*any) == expected);
}

template <auto R>
message<R> make(typename message<R>::payload_type payload, fd_list fds = {}, std::uint32_t f = v1) {
    message<R> m;
    m.flags = f;
    m.payload = payload;
    m.fds = fds;
    return m;
}

template <auto R>
reply<R> make_reply(typename reply<R>::payload_type payload, fd_list fds = {}) {
    reply<R> r;
    r.payload = payload;
    r.fds = fds;
    return r;
}

memory_region region(std::uint64_t gpa, std::uint64_t size, std::uint64_t uaddr, std::uint64_t offset) {
    return {gpa, size, uaddr, offset};
}

} // namespace

using fr = front_request;
using br = back_request;

TEST_CASE("header: 12 bytes, version 1, REPLY and NEED_REPLY bits", "[wire][header]") {
    const std::vector<std::byte> bytes = le_bytes{}.header(3, 0x9, 0);
    const header h = load_header(bytes);
    CHECK(h.request == 3);
    CHECK(h.version() == 1);
    CHECK(h.need_reply());
    CHECK_FALSE(h.is_reply());
    std::array<std::byte, header_size> out{};
    store_header(h, out);
    CHECK(same_bytes(out, bytes));
}

TEST_CASE("requests without payload", "[wire][codec]") {
    check_request(make<fr::get_features>({}), le_bytes{}.header(1, v1, 0));
    check_request(make<fr::set_owner>({}), le_bytes{}.header(3, v1, 0));
    check_request(make<fr::reset_owner>({}), le_bytes{}.header(4, v1, 0));
    check_request(make<fr::get_protocol_features>({}), le_bytes{}.header(15, v1, 0));
    check_request(make<fr::get_queue_num>({}), le_bytes{}.header(17, v1, 0));
    check_request(make<fr::postcopy_advise>({}), le_bytes{}.header(28, v1, 0));
    check_request(make<fr::postcopy_listen>({}), le_bytes{}.header(29, v1, 0));
    check_request(make<fr::postcopy_end>({}), le_bytes{}.header(30, v1, 0));
    check_request(make<fr::reset_device>({}), le_bytes{}.header(34, v1, 0));
    check_request(make<fr::get_max_mem_slots>({}), le_bytes{}.header(36, v1, 0));
    check_request(make<fr::get_status>({}), le_bytes{}.header(40, v1, 0));
    check_request(make<fr::check_device_state>({}), le_bytes{}.header(43, v1, 0));
    check_request(make<br::config_change_msg>({}), le_bytes{}.header(2, v1, 0));
}

TEST_CASE("requests that carry one fd and no payload", "[wire][codec]") {
    check_request(make<fr::set_log_fd>({}, {7}), le_bytes{}.header(7, v1, 0), {7});
    check_request(make<fr::set_backend_req_fd>({}, {9}, v1 | flags::need_reply),
                  le_bytes{}.header(21, v1 | flags::need_reply, 0), {9});
    check_request(make<fr::gpu_set_socket>({}, {4}), le_bytes{}.header(33, v1, 0), {4});
}

TEST_CASE("requests with a u64 payload", "[wire][codec]") {
    const std::uint64_t features = 0x1'7020'8000ull;
    check_request(make<fr::set_features>({features}), le_bytes{}.header(2, v1, 8).u64(features));
    check_request(make<fr::set_protocol_features>({0x1'0b2b}), le_bytes{}.header(16, v1, 8).u64(0x1'0b2b));
    // SEND_RARP: the first 6 bytes are the guest's MAC.
    check_request(make<fr::send_rarp>({0x0000'5634'1200'5452ull}),
                  le_bytes{}.header(19, v1, 8).u8(0x52).u8(0x54).u8(0x00).u8(0x12).u8(0x34).u8(0x56).u16(0));
    check_request(make<fr::net_set_mtu>({1500}, {}, v1 | flags::need_reply),
                  le_bytes{}.header(20, v1 | flags::need_reply, 8).u64(1500));
    check_request(make<fr::close_crypto_session>({42}), le_bytes{}.header(27, v1, 8).u64(42));
    check_request(make<fr::set_status>({0xf}), le_bytes{}.header(39, v1, 8).u64(0xf));
}

TEST_CASE("SET_VRING_KICK/CALL/ERR: index in bits 0-7, bit 8 means no fd", "[wire][codec]") {
    check_request(make<fr::set_vring_kick>({1}, {11}), le_bytes{}.header(12, v1, 8).u64(1), {11});
    check_request(make<fr::set_vring_kick>({0x100 | 3}), le_bytes{}.header(12, v1, 8).u64(0x103));
    check_request(make<fr::set_vring_call>({0}, {12}), le_bytes{}.header(13, v1, 8).u64(0), {12});
    check_request(make<fr::set_vring_err>({0x100 | 255}), le_bytes{}.header(14, v1, 8).u64(0x1ff));
    vring_fd_payload p{0x100 | 5};
    CHECK(p.index() == 5);
    CHECK(p.no_fd());
}

TEST_CASE("requests with a vring state", "[wire][codec]") {
    check_request(make<fr::set_vring_num>({1, 256}), le_bytes{}.header(8, v1, 8).u32(1).u32(256));
    check_request(make<fr::set_vring_base>({0, 0}), le_bytes{}.header(10, v1, 8).u32(0).u32(0));
    check_request(make<fr::get_vring_base>({1, 0}), le_bytes{}.header(11, v1, 8).u32(1).u32(0));
    check_request(make<fr::set_vring_enable>({1, 1}), le_bytes{}.header(18, v1, 8).u32(1).u32(1));
    check_request(make<fr::set_vring_endian>({0, 1}), le_bytes{}.header(23, v1, 8).u32(0).u32(1));
    check_request(make<fr::vring_kick>({3, 0}), le_bytes{}.header(35, v1, 8).u32(3).u32(0));
    check_request(make<br::vring_call>({2, 0}), le_bytes{}.header(4, v1, 8).u32(2).u32(0));
    check_request(make<br::vring_err>({2, 0}), le_bytes{}.header(5, v1, 8).u32(2).u32(0));
}

TEST_CASE("packed ring base: avail index and wrap in bits 0-15, used in 16-31", "[wire][codec]") {
    const auto base = packed_vring_base::from_num(0x8005'0007);
    CHECK(base.avail_index == 7);
    CHECK_FALSE(base.avail_wrap);
    CHECK(base.used_index == 5);
    CHECK(base.used_wrap);
    CHECK(base.to_num() == 0x8005'0007);
    CHECK(packed_vring_base{0x7fff, true, 0, false}.to_num() == 0x0000'ffff);
}

TEST_CASE("SET_VRING_ADDR: index, flags, desc, used, avail, log", "[wire][codec]") {
    check_request(make<fr::set_vring_addr>({1, vring_addr::flag_log, 0x7f00'0000'1000, 0x7f00'0000'3000,
                                            0x7f00'0000'2000, 0x4000}),
                  le_bytes{}.header(9, v1, 40).u32(1).u32(1).u64(0x7f00'0000'1000).u64(0x7f00'0000'3000)
                      .u64(0x7f00'0000'2000).u64(0x4000));
}

TEST_CASE("SET_MEM_TABLE: nregions, padding, one 32-byte region and one fd per region", "[wire][codec]") {
    memory_table t;
    t.nregions = 2;
    t.regions[0] = region(0, 0xa0000, 0x7f12'0000'0000, 0);
    t.regions[1] = region(0x100000, 0x3ff0'0000, 0x7f12'0010'0000, 0x100000);
    check_request(make<fr::set_mem_table>(t, {20, 21}),
                  le_bytes{}.header(5, v1, 8 + 2 * 32).u32(2).u32(0)
                      .u64(0).u64(0xa0000).u64(0x7f12'0000'0000).u64(0)
                      .u64(0x100000).u64(0x3ff0'0000).u64(0x7f12'0010'0000).u64(0x100000),
                  {20, 21});
    // Eight regions, the most the message can carry.
    memory_table full;
    full.nregions = 8;
    le_bytes bytes;
    bytes.header(5, v1, 8 + 8 * 32).u32(8).u32(0);
    std::vector<int> fds;
    fd_list fl;
    for (int i = 0; i < 8; ++i) {
        full.regions[i] = region(i * 0x1000'0000ull, 0x1000, 0x7000'0000'0000ull + i * 0x10000ull, 0);
        bytes.u64(i * 0x1000'0000ull).u64(0x1000).u64(0x7000'0000'0000ull + i * 0x10000ull).u64(0);
        fds.push_back(30 + i);
        fl.push_back(30 + i);
    }
    check_request(make<fr::set_mem_table>(full, fl), bytes, fds);
}

TEST_CASE("SET_LOG_BASE: log size and offset, with the log fd", "[wire][codec]") {
    check_request(make<fr::set_log_base>({0x2000, 0x1000}, {5}), le_bytes{}.header(6, v1, 16).u64(0x2000).u64(0x1000),
                  {5});
}

TEST_CASE("ADD_MEM_REG and REM_MEM_REG: padding then one region", "[wire][codec]") {
    const single_memory_region r{0, region(0x1'0000'0000, 0x4000'0000, 0x7f00'4000'0000, 0x1000)};
    const auto body = le_bytes{}.u64(0).u64(0x1'0000'0000).u64(0x4000'0000).u64(0x7f00'4000'0000).u64(0x1000);
    auto with_header = [&](std::uint32_t id) {
        le_bytes b;
        b.header(id, v1, 40);
        std::vector<std::byte> v = b.get();
        v.insert(v.end(), body.get().begin(), body.get().end());
        return v;
    };
    check_request(make<fr::add_mem_reg>(r, {6}), with_header(37), {6});
    check_request(make<fr::rem_mem_reg>(r), with_header(38));
    // REM_MEM_REG "MAY accept messages with one file descriptor".
    check_request(make<fr::rem_mem_reg>(r, {6}), with_header(38), {6});
}

TEST_CASE("IOTLB_MSG: iova, size, uaddr, perm, type, padded to 32", "[wire][codec]") {
    const iotlb_message update{0x1000, 0x2000, 0x7f00'0000'0000, iotlb_message::read_write, iotlb_message::update, {}};
    const auto bytes = [](std::uint32_t id) {
        return le_bytes{}.header(id, v1, 32).u64(0x1000).u64(0x2000).u64(0x7f00'0000'0000).u8(3).u8(2).zeros(6).get();
    };
    check_request(make<fr::iotlb_msg>(update), bytes(22));
    check_request(make<br::iotlb_msg>(update), bytes(1));
}

TEST_CASE("GET_CONFIG and SET_CONFIG: offset, size, flags, then size bytes", "[wire][codec]") {
    config_space c;
    c.offset = 0;
    c.size = 6;
    c.flags = config_space::flag_writable;
    for (int i = 0; i < 6; ++i) c.region[i] = static_cast<std::uint8_t>(0x52 + i);
    check_request(make<fr::set_config>(c),
                  le_bytes{}.header(25, v1, 12 + 6).u32(0).u32(6).u32(0).u8(0x52).u8(0x53).u8(0x54).u8(0x55).u8(0x56).u8(0x57));
    config_space get;
    get.size = 256;
    check_request(make<fr::get_config>(get), le_bytes{}.header(24, v1, 12 + 256).u32(0).u32(256).u32(0).zeros(256));
}

TEST_CASE("CREATE_CRYPTO_SESSION: 632 bytes", "[wire][codec]") {
    crypto_session s;
    s.session_id = -1;
    s.parameters[0] = 1;
    s.cipher_key[0] = 0xaa;
    s.auth_key[511] = 0xbb;
    check_request(make<fr::create_crypto_session>(s),
                  le_bytes{}.header(26, v1, 632).u64(~0ull).u8(1).zeros(47).u8(0xaa).zeros(63).zeros(511).u8(0xbb));
}

TEST_CASE("GET_INFLIGHT_FD and SET_INFLIGHT_FD: inflight description", "[wire][codec]") {
    const inflight_description d{0x3000, 0, 2, 256, 0};
    check_request(make<fr::get_inflight_fd>(d), le_bytes{}.header(31, v1, 24).u64(0x3000).u64(0).u16(2).u16(256).u32(0));
    check_request(make<fr::set_inflight_fd>(d, {8}),
                  le_bytes{}.header(32, v1, 24).u64(0x3000).u64(0).u16(2).u16(256).u32(0), {8});
}

TEST_CASE("shared objects: a 16-byte UUID", "[wire][codec]") {
    shared_object o;
    for (int i = 0; i < 16; ++i) o.uuid[i] = static_cast<std::uint8_t>(i);
    auto bytes = [](std::uint32_t id) {
        le_bytes b;
        b.header(id, v1, 16);
        for (int i = 0; i < 16; ++i) b.u8(static_cast<std::uint8_t>(i));
        return b.get();
    };
    check_request(make<fr::get_shared_object>(o), bytes(41));
    check_request(make<br::shared_object_add>(o), bytes(6));
    check_request(make<br::shared_object_remove>(o), bytes(7));
    check_request(make<br::shared_object_lookup>(o), bytes(8));
}

TEST_CASE("SET_DEVICE_STATE_FD: direction and phase, with the transfer fd", "[wire][codec]") {
    check_request(make<fr::set_device_state_fd>({device_state_transfer::load, device_state_transfer::stopped}, {3}),
                  le_bytes{}.header(42, v1, 8).u32(1).u32(0), {3});
}

TEST_CASE("BACKEND_VRING_HOST_NOTIFIER_MSG: vring area, fd unless bit 8", "[wire][codec]") {
    check_request(make<br::vring_host_notifier_msg>({1, 0x1000, 0x3000}, {9}),
                  le_bytes{}.header(3, v1, 24).u64(1).u64(0x1000).u64(0x3000), {9});
    check_request(make<br::vring_host_notifier_msg>({0x101, 0, 0}), le_bytes{}.header(3, v1, 24).u64(0x101).u64(0).u64(0));
}

TEST_CASE("every front-end request id 1..44 and back-end id 1..10 decodes to its own type", "[wire][codec]") {
    for (std::uint32_t id = 1; id <= 44; ++id) CHECK(is_known<front_request>(id));
    CHECK_FALSE(is_known<front_request>(0));
    CHECK_FALSE(is_known<front_request>(45));
    for (std::uint32_t id = 1; id <= 10; ++id) CHECK(is_known<back_request>(id));
    CHECK_FALSE(is_known<back_request>(11));
    CHECK(name(front_request::check_device_state) == "CHECK_DEVICE_STATE");
    CHECK(name(front_request::get_shmem_config) == "GET_SHMEM_CONFIG");
    CHECK(name(back_request::shared_object_lookup) == "BACKEND_SHARED_OBJECT_LOOKUP");
    CHECK(name(back_request::shmem_map) == "BACKEND_SHMEM_MAP");
    CHECK(name(back_request::shmem_unmap) == "BACKEND_SHMEM_UNMAP");
    STATIC_REQUIRE(std::variant_size_v<any_front_message> == 44);
    STATIC_REQUIRE(std::variant_size_v<any_back_message> == 10);
    STATIC_REQUIRE(front_message_type<message<front_request::set_mem_table>>);
    STATIC_REQUIRE_FALSE(front_message_type<message<back_request::vring_call>>);
    STATIC_REQUIRE(back_message_type<message<back_request::vring_call>>);
    STATIC_REQUIRE_FALSE(back_message_type<message<front_request::set_mem_table>>);
}

// The 2025-2026 additions of vhost-user.rst: VIRTIO Shared Memory Regions (protocol feature
// SHMEM, bit 22): the front-end's GET_SHMEM_CONFIG (44) and the back-end's SHMEM_MAP (9) and
// SHMEM_UNMAP (10), whose payload is the "MMAP request".
TEST_CASE("GET_SHMEM_CONFIG: no payload; the reply carries all 256 region sizes", "[wire][codec][shmem]") {
    check_request(make<fr::get_shmem_config>({}), le_bytes{}.header(44, v1, 0));
    shmem_config c;
    c.nregions = 2;
    c.memory_sizes[0] = 0x10'0000;
    c.memory_sizes[1] = 0x20'0000;
    check_reply(make_reply<fr::get_shmem_config>(c),
                le_bytes{}.header(44, reply_flags, 2056).u32(2).u32(0).u64(0x10'0000).u64(0x20'0000).zeros(254 * 8));
    // A size may be 0 ("the region is unused"), and every region up to shmid 255 can be named.
    shmem_config full;
    full.nregions = 256;
    le_bytes all;
    all.header(44, reply_flags, 2056).u32(256).u32(0);
    for (std::uint64_t i = 0; i < 256; ++i) {
        full.memory_sizes[i] = i * 0x1000;
        all.u64(i * 0x1000);
    }
    check_reply(make_reply<fr::get_shmem_config>(full), all);
    CHECK(expects_reply(front_request::get_shmem_config, v1, 0));
}

TEST_CASE("GET_SHMEM_CONFIG reply: a short array, or more than 256 regions, is refused", "[wire][codec][shmem]") {
    const auto short_reply = le_bytes{}.header(44, reply_flags, 16).u32(1).u32(0).u64(0x1000).get();
    CHECK(decode_reply<fr::get_shmem_config>(short_reply, {}).error().code == errc::bad_payload_size);
    const auto too_many = le_bytes{}.header(44, reply_flags, 2056).u32(257).u32(0).zeros(2048).get();
    const auto e = decode_reply<fr::get_shmem_config>(too_many, {}).error();
    CHECK(e.code == errc::bad_count);
    CHECK(e.got == 257);
    CHECK(e.want == 256);
    shmem_config c;
    c.nregions = 300;
    CHECK(encode(make_reply<fr::get_shmem_config>(c)).error().code == errc::bad_count);
}

TEST_CASE("BACKEND_SHMEM_MAP: MMAP request with the fd to map; SHMEM_UNMAP: without", "[wire][codec][shmem]") {
    shmem_mapping m;
    m.shmid = 3;
    m.fd_offset = 0x2000;
    m.shm_offset = 0x10'0000;
    m.len = 0x4000;
    m.flags = shmem_mapping::flag_read_write;
    const auto map_bytes = le_bytes{}.header(9, v1 | flags::need_reply, 40).u8(3).zeros(7).u64(0x2000).u64(0x10'0000)
                               .u64(0x4000).u64(1).get();
    check_request(make<br::shmem_map>(m, {21}, v1 | flags::need_reply), map_bytes, {21});
    CHECK(decode<back_request>(map_bytes, {}).error().code == errc::missing_fd);
    CHECK(named_fds<back_request>(map_bytes).value() == 1u);

    shmem_mapping u = m;
    u.fd_offset = 0;
    u.flags = 0;
    const auto unmap_bytes =
        le_bytes{}.header(10, v1, 40).u8(3).zeros(7).u64(0).u64(0x10'0000).u64(0x4000).u64(0).get();
    check_request(make<br::shmem_unmap>(u), unmap_bytes);
    const std::array<int, 1> stray{5};
    CHECK(decode<back_request>(unmap_bytes, stray).error().code == errc::unexpected_fds);
    CHECK(named_fds<back_request>(unmap_bytes).value() == 0u);

    // The replies are REPLY_ACK u64s, sent when the back-end set NEED_REPLY.
    check_reply(make_reply<br::shmem_map>({0}), le_bytes{}.header(9, reply_flags, 8).u64(0));
    check_reply(make_reply<br::shmem_unmap>({1}), le_bytes{}.header(10, reply_flags, 8).u64(1));
    CHECK(expects_reply(back_request::shmem_map, v1 | flags::need_reply, protocol_feature::reply_ack));
    CHECK_FALSE(expects_reply(back_request::shmem_map, v1, protocol_feature::reply_ack));
}

TEST_CASE("BACKEND_SHMEM_MAP: a range that wraps, or a wrong size, is refused", "[wire][codec][shmem]") {
    const auto wraps = le_bytes{}.header(9, v1, 40).u8(0).zeros(7).u64(0).u64(0xffff'ffff'ffff'f000).u64(0x2000)
                           .u64(0).get();
    const std::array<int, 1> fd{7};
    CHECK(decode<back_request>(wraps, fd).error().code == errc::region_wraps);
    const auto short_map = le_bytes{}.header(10, v1, 32).u8(0).zeros(7).u64(0).u64(0).u64(0x1000).get();
    CHECK(decode<back_request>(short_map, {}).error().code == errc::bad_payload_size);
}

TEST_CASE("protocol features added since 2025: bits 20, 21 and 22", "[wire][features]") {
    CHECK(protocol_feature::get_vring_base_inflight == (1ull << 20));
    CHECK(protocol_feature::gpa_addresses == (1ull << 21));
    CHECK(protocol_feature::shmem == (1ull << 22));
}

TEST_CASE("replies with a payload of their own", "[wire][codec][reply]") {
    check_reply(make_reply<fr::get_features>({0x1'7020'8000}), le_bytes{}.header(1, reply_flags, 8).u64(0x1'7020'8000));
    check_reply(make_reply<fr::get_protocol_features>({0x8203}), le_bytes{}.header(15, reply_flags, 8).u64(0x8203));
    check_reply(make_reply<fr::get_queue_num>({2}), le_bytes{}.header(17, reply_flags, 8).u64(2));
    check_reply(make_reply<fr::get_vring_base>({1, 42}), le_bytes{}.header(11, reply_flags, 8).u32(1).u32(42));
    check_reply(make_reply<fr::get_max_mem_slots>({509}), le_bytes{}.header(36, reply_flags, 8).u64(509));
    check_reply(make_reply<fr::get_status>({0xf}), le_bytes{}.header(40, reply_flags, 8).u64(0xf));
    check_reply(make_reply<fr::iotlb_msg>({0}), le_bytes{}.header(22, reply_flags, 8).u64(0));
    check_reply(make_reply<fr::postcopy_end>({0}), le_bytes{}.header(30, reply_flags, 8).u64(0));
    check_reply(make_reply<fr::check_device_state>({0}), le_bytes{}.header(43, reply_flags, 8).u64(0));
    check_reply(make_reply<fr::set_log_base>({0}), le_bytes{}.header(6, reply_flags, 8).u64(0));
    config_space c;
    c.size = 4;
    c.region = {1, 2, 3, 4};
    check_reply(make_reply<fr::get_config>(c), le_bytes{}.header(24, reply_flags, 16).u32(0).u32(4).u32(0).u8(1).u8(2).u8(3).u8(4));
    crypto_session s;
    s.session_id = 7;
    check_reply(make_reply<fr::create_crypto_session>(s), le_bytes{}.header(26, reply_flags, 632).u64(7).zeros(624));
}

TEST_CASE("replies that carry fds", "[wire][codec][reply]") {
    check_reply(make_reply<fr::get_inflight_fd>({0x3000, 0, 2, 256, 0}, {10}),
                le_bytes{}.header(31, reply_flags, 24).u64(0x3000).u64(0).u16(2).u16(256).u32(0), {10});
    check_reply(make_reply<fr::postcopy_advise>({}, {11}), le_bytes{}.header(28, reply_flags, 0), {11});
    check_reply(make_reply<fr::get_shared_object>({0}, {12}), le_bytes{}.header(41, reply_flags, 8).u64(0), {12});
    check_reply(make_reply<fr::get_shared_object>({1}), le_bytes{}.header(41, reply_flags, 8).u64(1));
    // SET_DEVICE_STATE_FD: bit 8 set means the back-end returns no fd of its own.
    check_reply(make_reply<fr::set_device_state_fd>({0x100}), le_bytes{}.header(42, reply_flags, 8).u64(0x100));
    check_reply(make_reply<fr::set_device_state_fd>({0}, {13}), le_bytes{}.header(42, reply_flags, 8).u64(0), {13});
    check_reply(make_reply<br::shared_object_lookup>({0}, {14}), le_bytes{}.header(8, reply_flags, 8).u64(0), {14});
}

TEST_CASE("REPLY_ACK replies are a u64, zero for success", "[wire][codec][reply]") {
    check_reply(make_reply<fr::set_mem_table>({0}), le_bytes{}.header(5, reply_flags, 8).u64(0));
    check_reply(make_reply<fr::set_vring_addr>({1}), le_bytes{}.header(9, reply_flags, 8).u64(1));
    check_reply(make_reply<fr::set_backend_req_fd>({0}), le_bytes{}.header(21, reply_flags, 8).u64(0));
    check_reply(make_reply<br::config_change_msg>({0}), le_bytes{}.header(2, reply_flags, 8).u64(0));
    check_reply(make_reply<br::vring_host_notifier_msg>({0}), le_bytes{}.header(3, reply_flags, 8).u64(0));
}
