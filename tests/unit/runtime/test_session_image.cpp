// protocol::session_image: the bytes of a live update's session survive a round trip, and a
// decoder fed anything else — every truncation, a wrong magic or version, fd indices that are
// out of range, repeated or missing, a region without its fd, trailing bytes — refuses it with
// a message and leaks nothing.
#include <vvu/protocol/session_image.hpp>

#include <catch2/catch.hpp>

#include <sys/eventfd.h>

using namespace vvu;

namespace {

unique_fd new_fd() { return unique_fd(::eventfd(0, EFD_CLOEXEC)); }

protocol::session_image sample() {
    protocol::session_image img;
    img.owner = true;
    img.features = 0x140018000;
    img.features_set = true;
    img.protocol_features = 0x18229;
    img.status = 0xf;
    for (std::uint32_t i = 0; i < 2; ++i) {
        protocol::image_vring v;
        v.settings.size = 256;
        v.settings.addr = {i, 0, 0x1000 * (i + 1), 0x2000 * (i + 1), 0x3000 * (i + 1), 0};
        v.settings.addr_set = true;
        v.settings.base = 0x80058005 + i;
        v.settings.base_exact = true;
        v.settings.enabled = true;
        v.settings.kick_set = true;
        v.settings.started = true;
        v.kick = new_fd();
        v.call = new_fd();
        if (i == 1) v.err = new_fd();
        img.vrings.push_back(std::move(v));
    }
    img.has_memory = true;
    img.regions.push_back({{0, 1 << 20, 0x7f0000000000, 0}, new_fd()});
    img.regions.push_back({{1 << 20, 1 << 20, 0x7f0000100000, 4096}, new_fd()});
    img.backend_channel = new_fd();
    img.device_state = {std::byte{1}, std::byte{2}, std::byte{3}};
    return img;
}

// The received side of an encoded image: the fds as the kernel would hand them over (dups).
std::vector<unique_fd> received(const protocol::encoded_image& e) {
    std::vector<unique_fd> out;
    for (const auto& fd : e.fds) out.push_back(dup_cloexec(fd.get()));
    return out;
}

} // namespace

TEST_CASE("a session image survives encode and decode", "[runtime][image]") {
    auto img = sample();
    const auto state = img.state();
    auto enc = protocol::encode(std::move(img));
    CHECK(enc.fds.size() == 2 * 2 + 1 + 2 + 1); // kick+call ×2, one err, two regions, channel
    auto fds = received(enc);
    auto back = protocol::decode_image(enc.bytes, fds);
    if (!back) FAIL(back.error());
    CHECK(back->state() == state);
    CHECK(back->vrings[0].settings.base == 0x80058005);
    CHECK(back->vrings[0].settings.base_exact);
    CHECK(back->vrings[0].kick.valid());
    CHECK(!back->vrings[0].err.valid());
    CHECK(back->vrings[1].err.valid());
    REQUIRE(back->regions.size() == 2);
    CHECK(back->regions[1].desc.mmap_offset == 4096);
    CHECK(back->regions[1].fd.valid());
    CHECK(back->backend_channel.valid());
    CHECK(back->device_state.size() == 3);
    for (const auto& fd : fds) CHECK(!fd.valid()); // every fd was taken
}

TEST_CASE("resources made by the transport cross as markers, in a version 2 image", "[runtime][image]") {
    auto img = sample();
    CHECK(protocol::encode(sample()).bytes[4] == std::byte{1}); // nothing transport-made: version 1
    img.vrings[0].call = unique_fd{};
    img.vrings[0].call_by_transport = true;
    img.regions[1].fd = unique_fd{};
    img.regions[1].by_transport = true;
    img.backend_channel = unique_fd{};
    img.backend_channel_by_transport = true;
    auto enc = protocol::encode(std::move(img));
    CHECK(le::load<std::uint32_t>(enc.bytes.data() + 4) == 2);
    CHECK(enc.fds.size() == 2 * 2 + 1 + 2 + 1 - 3);
    auto fds = received(enc);
    auto back = protocol::decode_image(enc.bytes, fds);
    if (!back) FAIL(back.error());
    CHECK(back->vrings[0].call_by_transport);
    CHECK(!back->vrings[0].call.valid());
    CHECK(back->vrings[0].kick.valid());
    CHECK(!back->vrings[0].kick_by_transport);
    CHECK(back->regions[1].by_transport);
    CHECK(!back->regions[0].by_transport);
    CHECK(back->regions[0].fd.valid());
    CHECK(back->backend_channel_by_transport);
    for (const auto& fd : fds) CHECK(!fd.valid());
}

TEST_CASE("every truncation of a session image is refused", "[runtime][image][hostile]") {
    auto enc = protocol::encode(sample());
    for (std::size_t n = 0; n < enc.bytes.size(); ++n) {
        auto fds = received(enc);
        auto r = protocol::decode_image(std::span(enc.bytes).first(n), fds);
        REQUIRE(!r);
    }
}

TEST_CASE("malformed session images are refused with a reason", "[runtime][image][hostile]") {
    auto enc = protocol::encode(sample());
    auto decode = [&](std::vector<std::byte> bytes, std::vector<unique_fd> fds) {
        return protocol::decode_image(bytes, fds);
    };
    SECTION("wrong magic") {
        auto b = enc.bytes;
        b[0] = std::byte{0};
        auto r = decode(b, received(enc));
        REQUIRE(!r);
        CHECK(r.error() == "not a session image");
    }
    SECTION("another version") {
        auto b = enc.bytes;
        le::store<std::uint32_t>(b.data() + 4, 3);
        auto r = decode(b, received(enc));
        REQUIRE(!r);
        CHECK(r.error().find("version 3") != std::string::npos);
    }
    SECTION("a transport-made resource in a version 1 image") {
        // vring 0's kick index turned into the "made by the transport" marker: only version 2 has it.
        const std::size_t first_vring = 4 + 4 + 1 + 8 + 1 + 8 + 8 + 4;
        const std::size_t kick_at = first_vring + 4 + 4 + 4 + 8 * 4 + 1 + 4 + 1 + 1 + 1 + 1;
        auto b = enc.bytes;
        REQUIRE(le::load<std::uint32_t>(b.data() + 4) == 1);
        le::store<std::uint32_t>(b.data() + kick_at, 0xfffffffe);
        REQUIRE(!decode(b, received(enc)));
    }
    SECTION("a trailing byte") {
        auto b = enc.bytes;
        b.push_back(std::byte{0});
        REQUIRE(!decode(b, received(enc)));
    }
    SECTION("fewer fds than named") {
        auto fds = received(enc);
        fds.pop_back();
        auto r = decode(enc.bytes, std::move(fds));
        REQUIRE(!r);
        CHECK(r.error().find("fd index") != std::string::npos);
    }
    SECTION("an fd nobody names") {
        auto fds = received(enc);
        fds.push_back(new_fd());
        auto r = decode(enc.bytes, std::move(fds));
        REQUIRE(!r);
        CHECK(r.error().find("is not named") != std::string::npos);
    }
    SECTION("one fd named twice") {
        // vring 0's call fd index (1) where its kick (0) is: offset of the first kick index.
        const std::size_t first_vring = 4 + 4 + 1 + 8 + 1 + 8 + 8 + 4;
        const std::size_t kick_at = first_vring + 4 + 4 + 4 + 8 * 4 + 1 + 4 + 1 + 1 + 1 + 1;
        auto b = enc.bytes;
        REQUIRE(le::load<std::uint32_t>(b.data() + kick_at) == 0);
        le::store<std::uint32_t>(b.data() + kick_at, 1);
        auto r = decode(b, received(enc));
        REQUIRE(!r);
        CHECK(r.error().find("fd index 1") != std::string::npos);
    }
    SECTION("a vring count no device has") {
        auto b = enc.bytes;
        le::store<std::uint32_t>(b.data() + 4 + 4 + 1 + 8 + 1 + 8 + 8, 100000);
        auto r = decode(b, received(enc));
        REQUIRE(!r);
        CHECK(r.error().find("100000 vrings") != std::string::npos);
    }
    SECTION("a boolean that is neither 0 nor 1") {
        auto b = enc.bytes;
        b[8] = std::byte{7}; // owner
        REQUIRE(!decode(b, received(enc)));
    }
}

TEST_CASE("a region without an fd is refused", "[runtime][image][hostile]") {
    auto img = sample();
    img.regions[0].fd.reset();
    auto enc = protocol::encode(std::move(img));
    auto fds = received(enc);
    auto r = protocol::decode_image(enc.bytes, fds);
    REQUIRE(!r);
    CHECK(r.error() == "region 0 has no fd");
}
