// The reply rules: which requests get a reply, and when REPLY_ACK adds one.
#include <vvu/wire/request.hpp>

#include <catch2/catch.hpp>

using namespace vvu::wire;

TEST_CASE("requests with a reply of their own always get it", "[wire][reply]") {
    for (auto r : {front_request::get_features, front_request::get_protocol_features, front_request::get_vring_base,
                   front_request::get_queue_num, front_request::get_config, front_request::get_inflight_fd,
                   front_request::get_max_mem_slots, front_request::get_status, front_request::iotlb_msg,
                   front_request::create_crypto_session, front_request::postcopy_advise, front_request::postcopy_end,
                   front_request::get_shared_object, front_request::set_device_state_fd,
                   front_request::check_device_state}) {
        INFO(name(r));
        CHECK(expects_reply(r, flags::version, 0));
        CHECK(expects_reply(r, flags::version | flags::need_reply, protocol_feature::reply_ack));
    }
    CHECK(expects_reply(back_request::shared_object_lookup, flags::version, 0));
}

TEST_CASE("other requests get an ack only with NEED_REPLY and REPLY_ACK negotiated", "[wire][reply]") {
    for (auto r : {front_request::set_features, front_request::set_mem_table, front_request::set_vring_addr,
                   front_request::set_vring_kick, front_request::set_backend_req_fd, front_request::add_mem_reg,
                   front_request::set_status, front_request::net_set_mtu}) {
        INFO(name(r));
        CHECK_FALSE(expects_reply(r, flags::version, protocol_feature::reply_ack));
        CHECK_FALSE(expects_reply(r, flags::version | flags::need_reply, 0));
        CHECK(expects_reply(r, flags::version | flags::need_reply, protocol_feature::reply_ack));
    }
    CHECK(expects_reply(back_request::config_change_msg, flags::version | flags::need_reply, protocol_feature::reply_ack));
    CHECK_FALSE(expects_reply(back_request::config_change_msg, flags::version, protocol_feature::reply_ack));
}

TEST_CASE("SET_LOG_BASE is answered when LOG_SHMFD is negotiated", "[wire][reply]") {
    CHECK(expects_reply(front_request::set_log_base, flags::version, protocol_feature::log_shmfd));
    CHECK_FALSE(expects_reply(front_request::set_log_base, flags::version, 0));
}

TEST_CASE("feature bits from the spec", "[wire][features]") {
    CHECK(vhost_feature::protocol_features == (1ull << 30));
    CHECK(virtio_feature::version_1 == (1ull << 32));
    CHECK(virtio_feature::ring_packed == (1ull << 34));
    CHECK(protocol_feature::configure_mem_slots == (1ull << 15));
    CHECK(protocol_feature::device_state == (1ull << 19));
    CHECK(has(bit(3) | bit(5), bit(3)));
    CHECK_FALSE(has(bit(3), bit(3) | bit(5)));
}
