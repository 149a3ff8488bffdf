// protocol::backend<Transport, Device>: the vhost-user back-end state machine, written once for
// every transport (QEMU docs/interop/vhost-user.rst). It decodes each message, checks it against
// the session, acts through the device and the front-end's memory, and answers.
//
// A protocol violation ends the session: handle() returns a `violation` naming the request and
// the reason, serve() logs it, answers a NEED_REPLY request with a failure ack, and returns so the
// caller can accept the next front-end. Nothing a front-end sends can make the process crash.
#pragma once

#include <vvu/memory/dirty_log.hpp>
#include <vvu/memory/guest_memory.hpp>
#include <vvu/protocol/device.hpp>
#include <vvu/protocol/device_status.hpp>
#include <vvu/protocol/inflight_area.hpp>
#include <vvu/protocol/session.hpp>
#include <vvu/protocol/session_image.hpp>
#include <vvu/protocol/vring.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/util/unique_fd.hpp>
#include <vvu/wire/codec.hpp>
#include <vvu/wire/features.hpp>

#include <atomic>
#include <memory>

#include <fmt/format.h>

#include <sys/stat.h>

#include <array>
#include <functional>
#include <cerrno>
#include <cstring>
#include <optional>
#include <span>
#include <string>

namespace vvu::protocol {

// Why a session ended early: the request and the reason, as one log line
// ("SET_VRING_NUM: vring 9 out of range (4 vrings)").
struct violation {
    wire::front_request request{};
    std::string text;
    [[nodiscard]] const std::string& message() const noexcept { return text; }
};

// The virtio and vhost feature bits the state machine and the ring layer implement themselves
// (LOG_ALL: dirty-page logging for live migration, memory/dirty_log.hpp).
inline constexpr std::uint64_t backend_virtio_features =
    wire::virtio_feature::version_1 | wire::virtio_feature::ring_indirect_desc | wire::virtio_feature::ring_event_idx |
    wire::virtio_feature::ring_packed | wire::virtio_feature::in_order | wire::vhost_feature::protocol_features |
    wire::vhost_feature::log_all;

// The protocol features the state machine implements for every device (INFLIGHT_SHMFD: split
// and packed rings record what they took in the front-end's inflight file, so a restarted
// back-end resubmits it; LOG_SHMFD: the dirty log is shared memory, SET_LOG_BASE's fd). Not
// offered, and why: PAGEFAULT (postcopy),
// HOST_NOTIFIER (a back-end over eventfds has no MMIO notify area to hand out),
// INBAND_NOTIFICATIONS (simulation only), CROSS_ENDIAN (legacy devices), XEN_MMAP,
// SHARED_OBJECT, DEVICE_STATE, CRYPTO_SESSION (no such device here).
inline constexpr std::uint64_t backend_protocol_features =
    wire::protocol_feature::mq | wire::protocol_feature::reply_ack | wire::protocol_feature::backend_req |
    wire::protocol_feature::status | wire::protocol_feature::configure_mem_slots | wire::protocol_feature::reset_device |
    wire::protocol_feature::inflight_shmfd | wire::protocol_feature::log_shmfd;

template <class Transport, class Device>
    requires transport::transport<Transport> && device<Device>
class backend {
public:
    using memory_type = memory::guest_memory;
    using vring_type = vring;
    using result = expected<std::optional<wire::frame>, violation>;

    backend(Transport& transport, Device& device) : transport_(transport), device_(device) { reset_session(); }
    backend(const backend&) = delete;
    backend& operator=(const backend&) = delete;
    ~backend() { stop_all(); }

    const session_state& state() const noexcept { return state_; }
    // The front-end's memory as it stands (null before a memory table).
    const memory_type::ptr& memory() const noexcept { return memory_; }
    std::uint64_t offered_features() const noexcept { return device_.features() | backend_virtio_features; }
    std::uint64_t offered_protocol_features() const noexcept {
        return device_.protocol_features() | backend_protocol_features;
    }

    // Serves the connected front-end until it goes away or breaks the protocol. Returns the
    // reason the session ended; the state machine is reset and ready for the next front-end
    // (the caller closes the transport's session and waits for it).
    std::string serve() {
        std::string why;
        for (;;) {
            auto msg = transport_.receive();
            if (!msg) {
                why = msg.error().message();
                break;
            }
            if (auto r = serve_message(*msg); !r) {
                why = r.error().message();
                break;
            }
        }
        end_session();
        return why;
    }

    // Handles one received message and sends its reply, if any. An error ends the session: a
    // violation (answered with a failure ack where the front-end asked for one) or the reply
    // could not be sent. The caller then calls end_session().
    expected<void, violation> serve_message(transport::received_message& msg) {
        auto r = handle(msg);
        if (!r) {
            answer_failure(msg.bytes());
            return unexpected(std::move(r.error()));
        }
        if (*r) {
            if (auto sent = transport_.send(**r); !sent)
                return unexpected(violation{static_cast<wire::front_request>(msg.header.request),
                                            fmt::format("sending the reply: {}", sent.error().message())});
        }
        return {};
    }

    // Drops the session: rings stopped, memory and notifiers released, state back to initial.
    void end_session() { reset_session(); }

    // Called (on the control thread) with what the state machine did that a log should show
    // although it is no error, e.g. a ring resumed at its used index after a reconnect.
    void on_notice(std::function<void(const std::string&)> f) { on_notice_ = std::move(f); }

    // ------------------------------------------------------------------- live update
    // The session as an image another process can resume (session_image.hpp). Its fds are
    // duplicates: this back-end is unchanged and keeps serving if the hand-over fails. Call it
    // with the data path paused at a burst boundary (no vring in use by another thread). Fails
    // when a ring has chains in flight (the device must complete them before pausing) or a
    // notifier has no fd to hand on — unless the transport makes its regions, notifiers and
    // back-end channel again from the session alone (Transport::remakes_resources, the VVU
    // transport): those cross "made by the transport", with no fd.
    expected<session_image, std::string> export_session() {
        constexpr bool remakes = transport::remakes_resources<Transport>;
        // A migration in progress logs into a file the image has no field for: refused rather
        // than handed over half (the new back-end would stop logging unseen).
        if (logging()) return unexpected(std::string("dirty logging is on (a migration in progress): not handed over"));
        session_image img;
        img.owner = state_.owner;
        img.features = state_.features;
        img.features_set = state_.features_set;
        img.protocol_features = state_.protocol_features;
        img.status = state_.status;
        for (std::uint32_t i = 0; i < state_.vrings.size(); ++i) {
            image_vring v;
            v.settings = state_.vrings[i];
            int kick = kicks_[i].native_handle(), call = calls_[i].native_handle(), err = errs_[i].native_handle();
            bool has_kick = static_cast<bool>(kicks_[i]), has_call = static_cast<bool>(calls_[i]),
                 has_err = static_cast<bool>(errs_[i]);
            if (auto* running = running_[i]) {
                if (const auto n = running->inflight_count(); n != 0)
                    return unexpected(fmt::format("vring {}: {} chains in flight", i, n));
                v.settings.base = running->base();
                v.settings.base_exact = true;
                kick = running->kick().native_handle();
                call = running->call().native_handle();
                err = running->error_notifier().native_handle();
                has_kick = static_cast<bool>(running->kick());
                has_call = static_cast<bool>(running->call());
                has_err = static_cast<bool>(running->error_notifier());
            }
            auto dup_of = [&](bool present, int fd, const char* what, bool& by_transport) -> expected<unique_fd, std::string> {
                if (!present) return unique_fd{};
                if (fd < 0 && remakes) {
                    by_transport = true;
                    return unique_fd{};
                }
                if (fd < 0) return unexpected(fmt::format("vring {}: the {} notifier has no fd to hand on", i, what));
                unique_fd d = dup_cloexec(fd);
                if (!d) return unexpected(fmt::format("vring {}: dup of the {} fd: {}", i, what, std::strerror(errno)));
                return d;
            };
            auto k = dup_of(has_kick, kick, "kick", v.kick_by_transport);
            auto c = dup_of(has_call, call, "call", v.call_by_transport);
            auto e = dup_of(has_err, err, "error", v.err_by_transport);
            if (!k) return unexpected(k.error());
            if (!c) return unexpected(c.error());
            if (!e) return unexpected(e.error());
            v.kick = std::move(*k);
            v.call = std::move(*c);
            v.err = std::move(*e);
            img.vrings.push_back(std::move(v));
        }
        if (memory_) {
            img.has_memory = true;
            for (const auto& r : memory_->regions()) {
                if (r.fd() < 0 && remakes) {
                    img.regions.push_back({r.desc(), unique_fd{}, true});
                    continue;
                }
                if (r.fd() < 0) return unexpected(fmt::format("region at 0x{:x} has no fd to hand on", r.guest_phys_addr()));
                unique_fd d = dup_cloexec(r.fd());
                if (!d) return unexpected(fmt::format("dup of a region fd: {}", std::strerror(errno)));
                img.regions.push_back({r.desc(), std::move(d)});
            }
        }
        if (backend_channel_) {
            int fd = -1;
            if constexpr (requires { backend_channel_->native_handle(); }) fd = backend_channel_->native_handle();
            if (fd < 0 && remakes) img.backend_channel_by_transport = true;
            else if (fd < 0) return unexpected(std::string("the back-end channel has no fd to hand on"));
            if (fd >= 0) img.backend_channel = dup_cloexec(fd);
            if (fd >= 0 && !img.backend_channel) return unexpected(fmt::format("dup of the back-end channel: {}", std::strerror(errno)));
        }
        if (inflight_) {
            img.inflight = inflight_->description();
            if (inflight_->fd() < 0 && remakes) {
                img.inflight_by_transport = true;
            } else {
                img.inflight_fd = dup_cloexec(inflight_->fd());
                if (!img.inflight_fd) return unexpected(fmt::format("dup of the inflight fd: {}", std::strerror(errno)));
            }
        }
        if constexpr (requires { device_.save_state(); }) img.device_state = device_.save_state();
        return img;
    }

    // Takes over the session of an image, in place of this back-end's (which must be new, or
    // just ended): maps the memory, makes the notifiers and the back-end channel, restores the
    // device's state and starts each ring that was running where it stopped. Everything in
    // the image is checked as if the front-end had sent it; on failure the session is empty.
    // `premapped`: regions mapped ahead of time (a live update maps the memory before the old
    // process pauses); an image region of the same description and file uses one instead of
    // being mapped again.
    expected<void, std::string> import_session(session_image img, std::vector<memory::region> premapped = {}) {
        reset_session();
        auto failed = [&](std::string why) {
            reset_session();
            return unexpected(std::move(why));
        };
        if (img.vrings.size() != state_.vrings.size())
            return failed(fmt::format("the session has {} vrings, this device {}", img.vrings.size(), state_.vrings.size()));
        if (const std::uint64_t unknown = img.features & ~offered_features(); unknown != 0)
            return failed(fmt::format("features 0x{:x} are not offered here", unknown));
        if (const std::uint64_t unknown = img.protocol_features & ~offered_protocol_features(); unknown != 0)
            return failed(fmt::format("protocol features 0x{:x} are not offered here", unknown));
        state_.owner = img.owner;
        state_.features = img.features;
        state_.features_set = img.features_set;
        state_.protocol_features = img.protocol_features;
        state_.status = img.status;
        if (img.features_set) device_.set_features(img.features);
        if (img.has_memory) {
            std::vector<memory::region> regions;
            for (auto& r : img.regions) {
                if (auto pre = same_region(premapped, r)) {
                    regions.push_back(std::move(*pre));
                    continue;
                }
                auto mapped = transport_.map_region(r.desc, std::move(r.fd));
                if (!mapped) return failed(fmt::format("region at 0x{:x}: {}", r.desc.guest_phys_addr, mapped.error().message()));
                regions.push_back(std::move(*mapped));
            }
            auto table = memory_type::make(std::move(regions));
            if (!table) return failed(table.error().message());
            memory_ = std::move(*table);
        } else if (!img.regions.empty()) {
            return failed("regions without a memory table");
        }
        for (std::uint32_t i = 0; i < img.vrings.size(); ++i) {
            auto& v = img.vrings[i];
            if (v.settings.size > ring::max_queue_size) return failed(fmt::format("vring {}: size {}", i, v.settings.size));
            state_.vrings[i] = v.settings;
            state_.vrings[i].started = false;
            if (v.kick || v.kick_by_transport) {
                auto kick = transport_.make_kick_notifier(i, std::move(v.kick));
                if (!kick) return failed(fmt::format("vring {} kick: {}", i, kick.error().message()));
                kicks_[i] = any_kick_notifier(std::move(*kick));
            }
            if (v.call || v.call_by_transport) {
                auto call = transport_.make_call_notifier(i, std::move(v.call));
                if (!call) return failed(fmt::format("vring {} call: {}", i, call.error().message()));
                calls_[i] = any_call_notifier(std::move(*call));
            }
            if (v.err || v.err_by_transport) {
                auto err = transport_.make_error_notifier(i, std::move(v.err));
                if (!err) return failed(fmt::format("vring {} error: {}", i, err.error().message()));
                errs_[i] = any_call_notifier(std::move(*err));
            }
        }
        if (img.inflight_fd || img.inflight_by_transport) {
            auto area = adopt_inflight(img.inflight, std::move(img.inflight_fd));
            if (!area) return failed("inflight area: " + area.error());
            inflight_ = std::move(*area);
        }
        if (img.backend_channel || img.backend_channel_by_transport) {
            auto channel = transport_.make_backend_channel(std::move(img.backend_channel));
            if (!channel) return failed(fmt::format("back-end channel: {}", channel.error().message()));
            backend_channel_.emplace(std::move(*channel));
        }
        if constexpr (requires { device_.load_state(std::span<const std::byte>{}); }) {
            if (!device_.load_state(std::span<const std::byte>(img.device_state)))
                return failed("the device refused its saved state");
        } else if (!img.device_state.empty()) {
            return failed("the image has device state this device cannot load");
        }
        for (std::uint32_t i = 0; i < img.vrings.size(); ++i) {
            if (!img.vrings[i].settings.started) continue;
            if (auto r = start_vring(i); !r) return failed(r.error());
            if (!state_.vrings[i].started) return failed(fmt::format("vring {} was running and cannot start here", i));
        }
        return {};
    }

    // Handles one received message; returns the reply to send, if any. Takes the fds it keeps
    // out of the message; the others are closed with it.
    result handle(transport::received_message& msg) {
        auto decoded = wire::decode<wire::front_request>(msg.bytes(), msg.fds.span());
        if (!decoded)
            return unexpected(violation{static_cast<wire::front_request>(decoded.error().request), decoded.error().message()});
        return std::visit([&](const auto& m) { return dispatch(m, msg.fds); }, *decoded);
    }

private:
    // A premapped region of the same description whose fd is the same file as the image's.
    static std::optional<memory::region> same_region(const std::vector<memory::region>& premapped, const image_region& r) {
        struct stat a {};
        if (::fstat(r.fd.get(), &a) != 0) return std::nullopt;
        for (const auto& p : premapped) {
            struct stat b {};
            if (p.desc() == r.desc && p.fd() >= 0 && ::fstat(p.fd(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                return p;
        }
        return std::nullopt;
    }

    template <auto R>
    result dispatch(const wire::message<R>& m, transport::owned_fds& fds) {
        auto outcome = on(m, fds);
        if (!outcome) return unexpected(violation{R, fmt::format("{}: {}", wire::name(R), outcome.error())});
        if (outcome->has_value()) return std::move(*outcome);
        // Requests with a reply of their own answered above; the others may want an ack.
        if constexpr (std::same_as<typename wire::reply<R>::payload_type, wire::u64_payload>)
            if (wire::expects_reply(R, m.flags, state_.protocol_features)) return ack<R>(0);
        return std::nullopt;
    }

    using step = expected<std::optional<wire::frame>, std::string>;
    static step done() { return std::optional<wire::frame>{}; }
    static unexpected<std::string> fail(std::string why) { return unexpected(std::move(why)); }

    template <auto R>
    static std::optional<wire::frame> ack(std::uint64_t value) {
        wire::reply<R> r;
        r.payload.value = value;
        return *wire::encode(r);
    }
    template <auto R>
    static step answer(typename wire::reply<R>::payload_type payload) {
        wire::reply<R> r;
        r.payload = payload;
        auto f = wire::encode(r);
        if (!f) return fail(f.error().message());
        return std::optional<wire::frame>(*f);
    }

    bool negotiated(std::uint64_t protocol_feature) const noexcept {
        return wire::has(state_.protocol_features, protocol_feature);
    }
    step require(std::uint64_t protocol_feature, std::string_view feature_name) const {
        if (negotiated(protocol_feature)) return done();
        return fail(fmt::format("requires protocol feature {} (not negotiated)", feature_name));
    }
    step check_vring(std::uint32_t index) const {
        if (index < state_.vrings.size()) return done();
        return fail(fmt::format("vring {} out of range ({} vrings)", index, state_.vrings.size()));
    }

    // ----------------------------------------------------------------- features and ownership
    step on(const wire::message<wire::front_request::get_features>&, transport::owned_fds&) {
        return answer<wire::front_request::get_features>({offered_features()});
    }
    step on(const wire::message<wire::front_request::set_features>& m, transport::owned_fds&) {
        const std::uint64_t unknown = m.payload.value & ~offered_features();
        if (unknown != 0) return fail(fmt::format("features 0x{:x} were not offered", unknown));
        if (state_.features_set && ring_layout_changes(m.payload.value) && any_started())
            return fail("ring layout changed while rings run");
        const bool was_logging = logging();
        state_.features = m.payload.value;
        state_.features_set = true;
        device_.set_features(m.payload.value);
        // LOG_ALL turned on or off (a migration starts or ends): the running rings restart
        // with or without the log.
        if (logging() != was_logging)
            if (auto r = restart_rings(); !r) return r;
        // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled ("Ring states").
        if (!wire::has(m.payload.value, wire::vhost_feature::protocol_features))
            for (std::uint32_t i = 0; i < state_.vrings.size(); ++i) set_enabled(i, true);
        return done();
    }
    step on(const wire::message<wire::front_request::get_protocol_features>&, transport::owned_fds&) {
        return answer<wire::front_request::get_protocol_features>({offered_protocol_features()});
    }
    step on(const wire::message<wire::front_request::set_protocol_features>& m, transport::owned_fds&) {
        const std::uint64_t unknown = m.payload.value & ~offered_protocol_features();
        if (unknown != 0) return fail(fmt::format("protocol features 0x{:x} were not offered", unknown));
        state_.protocol_features = m.payload.value;
        return done();
    }
    step on(const wire::message<wire::front_request::set_owner>&, transport::owned_fds&) {
        state_.owner = true;
        return done();
    }
    step on(const wire::message<wire::front_request::reset_owner>&, transport::owned_fds&) {
        // Deprecated; "back-ends either ignore this message, or use it to disable all rings".
        for (std::uint32_t i = 0; i < state_.vrings.size(); ++i) set_enabled(i, false);
        return done();
    }
    step on(const wire::message<wire::front_request::reset_device>&, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::reset_device, "RESET_DEVICE"); !r) return r;
        const auto protocol_features = state_.protocol_features;
        reset_session();
        state_.owner = true; // "The back-end retains ownership of the device"
        state_.protocol_features = protocol_features;
        return done();
    }
    step on(const wire::message<wire::front_request::get_queue_num>&, transport::owned_fds&) {
        // Queue pairs for net; vhost-user counts "queues" as the device defines them.
        return answer<wire::front_request::get_queue_num>({queue_num()});
    }
    step on(const wire::message<wire::front_request::set_status>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::status, "STATUS"); !r) return r;
        state_.status = m.payload.value & 0xff;
        if (state_.status == 0) needs_reset_->store(false); // the driver reset the device
        return done();
    }
    step on(const wire::message<wire::front_request::get_status>&, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::status, "STATUS"); !r) return r;
        // A ring the front-end broke sets DEVICE_NEEDS_RESET (virtio 1.2 §2.1.1): the driver
        // learns that only a reset brings the device back.
        const std::uint64_t needs_reset = needs_reset_->load() ? device_status::needs_reset : 0;
        return answer<wire::front_request::get_status>({state_.status | needs_reset});
    }

    // ----------------------------------------------------------------------------- memory
    step on(const wire::message<wire::front_request::set_mem_table>& m, transport::owned_fds& fds) {
        std::vector<memory::region> regions;
        for (std::uint32_t i = 0; i < m.payload.nregions; ++i) {
            auto r = transport_.map_region(m.payload.regions[i], fds.take(i));
            if (!r) return fail(fmt::format("region {}: {}", i, r.error().message()));
            regions.push_back(std::move(*r));
        }
        auto table = memory_type::make(std::move(regions));
        if (!table) return fail(table.error().message());
        return replace_memory(std::move(*table));
    }
    step on(const wire::message<wire::front_request::get_max_mem_slots>&, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::configure_mem_slots, "CONFIGURE_MEM_SLOTS"); !r) return r;
        return answer<wire::front_request::get_max_mem_slots>({memory_type::max_slots});
    }
    step on(const wire::message<wire::front_request::add_mem_reg>& m, transport::owned_fds& fds) {
        if (auto r = require(wire::protocol_feature::configure_mem_slots, "CONFIGURE_MEM_SLOTS"); !r) return r;
        auto region = transport_.map_region(m.payload.region, fds.take(0));
        if (!region) return fail(region.error().message());
        auto table = (memory_ ? memory_ : memory_type::empty())->with(std::move(*region));
        if (!table) return fail(table.error().message());
        return replace_memory(std::move(*table));
    }
    step on(const wire::message<wire::front_request::rem_mem_reg>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::configure_mem_slots, "CONFIGURE_MEM_SLOTS"); !r) return r;
        if (!memory_) return fail("no memory table to remove a region from");
        auto table = memory_->without(m.payload.region);
        if (!table) return fail(table.error().message());
        return replace_memory(std::move(*table));
    }

    // ----------------------------------------------------------------------------- vrings
    step on(const wire::message<wire::front_request::set_vring_num>& m, transport::owned_fds&) {
        if (auto r = check_vring(m.payload.index); !r) return r;
        if (m.payload.num == 0 || m.payload.num > ring::max_queue_size)
            return fail(fmt::format("vring size {} out of range [1, {}]", m.payload.num, ring::max_queue_size));
        if (state_.vrings[m.payload.index].started) return fail("vring is running");
        state_.vrings[m.payload.index].size = m.payload.num;
        return done();
    }
    step on(const wire::message<wire::front_request::set_vring_addr>& m, transport::owned_fds&) {
        if (auto r = check_vring(m.payload.index); !r) return r;
        auto& v = state_.vrings[m.payload.index];
        // A running ring gets this when a migration turns VHOST_VRING_F_LOG on or off (QEMU's
        // vhost_dev_set_log): it restarts where it stands, over the new addresses and flags.
        const bool was_started = v.started;
        if (was_started) stop_vring(m.payload.index);
        v.addr = m.payload;
        v.addr_set = true;
        return was_started ? start_vring(m.payload.index) : done();
    }
    step on(const wire::message<wire::front_request::set_vring_base>& m, transport::owned_fds&) {
        if (auto r = check_vring(m.payload.index); !r) return r;
        auto& v = state_.vrings[m.payload.index];
        if (v.started) return fail("vring is running");
        v.base = m.payload.num;
        v.base_exact = false;
        return done();
    }
    step on(const wire::message<wire::front_request::get_vring_base>& m, transport::owned_fds&) {
        if (auto r = check_vring(m.payload.index); !r) return r;
        stop_vring(m.payload.index);
        // The ring is stopped: it starts again on the next kick fd ("Ring states").
        auto& v = state_.vrings[m.payload.index];
        v.kick_set = false;
        kicks_[m.payload.index] = {};
        return answer<wire::front_request::get_vring_base>({m.payload.index, v.base});
    }
    step on(const wire::message<wire::front_request::set_vring_kick>& m, transport::owned_fds& fds) {
        const std::uint32_t index = m.payload.index();
        if (auto r = check_vring(index); !r) return r;
        if (state_.vrings[index].started) stop_vring(index);
        kicks_[index] = {};
        if (!m.payload.no_fd()) { // "no fd": the ring is polled
            auto kick = transport_.make_kick_notifier(index, fds.take(0));
            if (!kick) return fail(kick.error().message());
            kicks_[index] = any_kick_notifier(std::move(*kick));
        }
        state_.vrings[index].kick_set = true;
        return start_vring(index);
    }
    step on(const wire::message<wire::front_request::set_vring_call>& m, transport::owned_fds& fds) {
        const std::uint32_t index = m.payload.index();
        if (auto r = check_vring(index); !r) return r;
        const bool was_started = state_.vrings[index].started;
        if (was_started) stop_vring(index);
        calls_[index] = {};
        if (!m.payload.no_fd()) {
            auto call = transport_.make_call_notifier(index, fds.take(0));
            if (!call) return fail(call.error().message());
            calls_[index] = any_call_notifier(std::move(*call));
        }
        return was_started ? start_vring(index) : done();
    }
    step on(const wire::message<wire::front_request::set_vring_err>& m, transport::owned_fds& fds) {
        const std::uint32_t index = m.payload.index();
        if (auto r = check_vring(index); !r) return r;
        const bool was_started = state_.vrings[index].started; // a running ring holds its error notifier
        if (was_started) stop_vring(index);
        errs_[index] = {};
        if (!m.payload.no_fd()) {
            auto err = transport_.make_error_notifier(index, fds.take(0));
            if (!err) return fail(err.error().message());
            errs_[index] = any_call_notifier(std::move(*err));
        }
        return was_started ? start_vring(index) : done();
    }
    step on(const wire::message<wire::front_request::set_vring_enable>& m, transport::owned_fds&) {
        if (auto r = check_vring(m.payload.index); !r) return r;
        if (m.payload.num > 1) return fail(fmt::format("enable value {} is neither 0 nor 1", m.payload.num));
        set_enabled(m.payload.index, m.payload.num == 1);
        return done();
    }

    // ------------------------------------------------------------------- config and extras
    step on(const wire::message<wire::front_request::get_config>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::config, "CONFIG"); !r) return r;
        wire::config_space reply = m.payload;
        // "vhost-user back-end uses zero length of payload to indicate an error".
        if (!device_.read_config(m.payload.offset, std::span(reply.region).first(m.payload.size))) reply.size = 0;
        return answer<wire::front_request::get_config>(reply);
    }
    step on(const wire::message<wire::front_request::set_config>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::config, "CONFIG"); !r) return r;
        if (!device_.write_config(m.payload.offset, std::span(m.payload.region).first(m.payload.size)))
            return fail(fmt::format("config range [{}, +{}) is not writable", m.payload.offset, m.payload.size));
        return done();
    }
    step on(const wire::message<wire::front_request::set_backend_req_fd>&, transport::owned_fds& fds) {
        if (auto r = require(wire::protocol_feature::backend_req, "BACKEND_REQ"); !r) return r;
        auto channel = transport_.make_backend_channel(fds.take(0));
        if (!channel) return fail(channel.error().message());
        backend_channel_.emplace(std::move(*channel));
        return done();
    }
    step on(const wire::message<wire::front_request::send_rarp>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::rarp, "RARP"); !r) return r;
        if constexpr (requires { device_.send_rarp(std::uint64_t{}); }) device_.send_rarp(m.payload.value);
        return done();
    }
    step on(const wire::message<wire::front_request::net_set_mtu>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::net_mtu, "NET_MTU"); !r) return r;
        bool ok = false;
        if constexpr (requires { device_.set_mtu(std::uint64_t{}); }) ok = device_.set_mtu(m.payload.value);
        // "the back-end must respond with zero in case the specified MTU is valid".
        if (m.need_reply() && negotiated(wire::protocol_feature::reply_ack))
            return ack<wire::front_request::net_set_mtu>(ok ? 0 : 1);
        return ok ? done() : fail(fmt::format("MTU {} refused", m.payload.value));
    }

    // ------------------------------------------------------------ dirty-page logging
    // SET_LOG_BASE: the log the rings mark from now on (a migration starts, or the front-end's
    // memory grew and the log with it). Answered — with LOG_SHMFD, u64 0 — only once the
    // rings run over the new log, so that the front-end may free the old one then.
    step on(const wire::message<wire::front_request::set_log_base>& m, transport::owned_fds& fds) {
        if (auto r = require(wire::protocol_feature::log_shmfd, "LOG_SHMFD"); !r) return r;
        const auto& d = m.payload;
        if (d.mmap_size == 0 || d.mmap_size > memory::dirty_log::max_bytes)
            return fail(fmt::format("log size {} outside [1, {}]", d.mmap_size, memory::dirty_log::max_bytes));
        // A transport that places the log itself (VVU: an area of the window) maps it its way;
        // the others map the fd like a region of mmap_size bytes at mmap_offset.
        auto mapped = [&] {
            if constexpr (requires { transport_.map_log(d, unique_fd{}); }) return transport_.map_log(d, fds.take(0));
            else return transport_.map_region(d.as_region(), fds.take(0));
        }();
        if (!mapped) return fail(fmt::format("log of {} bytes at offset {}: {}", d.mmap_size, d.mmap_offset,
                                             mapped.error().message()));
        auto log = std::make_shared<const memory::dirty_log>(std::move(*mapped));
        // A log that cannot cover the memory would leave pages unlogged, and their copies stale.
        if (memory_ && memory_end(*memory_) > log->covered())
            return fail(fmt::format("the log covers guest memory up to 0x{:x}, the memory table up to 0x{:x}",
                                    log->covered(), memory_end(*memory_)));
        log_ = std::move(log);
        if (logging())
            if (auto r = restart_rings(); !r) return r;
        return done();
    }
    // SET_LOG_FD: an eventfd a back-end whose log is not shared memory would signal. vvu's log
    // is (LOG_SHMFD), so the front-end reads it without being told; the fd is kept, unused,
    // until the session ends.
    step on(const wire::message<wire::front_request::set_log_fd>&, transport::owned_fds& fds) {
        log_fd_ = fds.take(0);
        return done();
    }

    // ------------------------------------------------------------ inflight I/O tracking
    step on(const wire::message<wire::front_request::get_inflight_fd>& m, transport::owned_fds&) {
        if (auto r = require(wire::protocol_feature::inflight_shmfd, "INFLIGHT_SHMFD"); !r) return r;
        if (m.payload.num_queues > state_.vrings.size())
            return fail(fmt::format("{} queues ({} vrings)", m.payload.num_queues, state_.vrings.size()));
        auto area = inflight_area::create(m.payload.num_queues, m.payload.queue_size);
        if (!area) return fail(area.error());
        inflight_ = std::move(*area);
        wire::reply<wire::front_request::get_inflight_fd> r;
        r.payload = inflight_->description();
        r.fds = {inflight_->fd()};
        auto f = wire::encode(r);
        if (!f) return fail(f.error().message());
        return std::optional<wire::frame>(*f);
    }
    step on(const wire::message<wire::front_request::set_inflight_fd>& m, transport::owned_fds& fds) {
        if (auto r = require(wire::protocol_feature::inflight_shmfd, "INFLIGHT_SHMFD"); !r) return r;
        if (any_started()) return fail("rings are running");
        // An area with parts for more queues than this device has is taken: the parts beyond
        // its vrings stay unused (vvu-device sizes the area it makes for its max_vhost_queues).
        auto area = adopt_inflight(m.payload, fds.take(0));
        if (!area) return fail(area.error());
        inflight_ = std::move(*area);
        return done();
    }
    // The front-end's file (checked, then mapped), or, for a transport that places the area
    // itself (VVU: an area of the window), its mapping there.
    expected<std::shared_ptr<inflight_area>, std::string> adopt_inflight(const wire::inflight_description& d, unique_fd fd) {
        if constexpr (requires { transport_.map_inflight(d, unique_fd{}); }) {
            if (!fd) {
                auto mapped = transport_.map_inflight(d, unique_fd{});
                if (!mapped) return unexpected(mapped.error().message());
                return inflight_area::over(d, std::move(*mapped));
            }
        }
        return inflight_area::adopt(d, std::move(fd));
    }

    // Everything vvu never offers: asking for it is a violation.
    template <auto R>
    step on(const wire::message<R>&, transport::owned_fds&) {
        return fail("not supported by this back-end");
    }

    // ------------------------------------------------------------------------- helpers
    // GET_QUEUE_NUM counts queues as the device defines them (net: queue pairs).
    std::uint64_t queue_num() const noexcept {
        if constexpr (requires { device_.max_queues(); }) return device_.max_queues();
        else return device_.vring_count();
    }

    bool any_started() const noexcept {
        for (const auto& v : state_.vrings)
            if (v.started) return true;
        return false;
    }
    bool ring_layout_changes(std::uint64_t features) const noexcept {
        return ((features ^ state_.features) & wire::virtio_feature::ring_packed) != 0;
    }

    void set_enabled(std::uint32_t index, bool on) {
        state_.vrings[index].enabled = on;
        if (auto* v = running_[index]) v->set_enabled(on);
    }

    // A ring runs once it has a size, addresses, memory and a kick ("Ring states").
    step start_vring(std::uint32_t index) {
        auto& v = state_.vrings[index];
        if (v.started || !v.kick_set || !v.addr_set || v.size == 0 || !memory_) return done();
        const bool packed = wire::has(state_.features, wire::virtio_feature::ring_packed);
        if (!packed && (v.size & (v.size - 1)) != 0) return fail(fmt::format("split vring size {} is not a power of 2", v.size));
        vring_start s;
        s.index = index;
        s.size = v.size;
        s.packed = packed;
        s.base = v.base;
        s.base_exact = v.base_exact;
        s.features = {wire::has(state_.features, wire::virtio_feature::ring_event_idx),
                      wire::has(state_.features, wire::virtio_feature::ring_indirect_desc),
                      wire::has(state_.features, wire::virtio_feature::in_order)};
        // Ring addresses are front-end virtual addresses (no IOMMU is offered).
        auto desc = memory_->user_to_guest(v.addr.desc_user_addr);
        auto avail = memory_->user_to_guest(v.addr.avail_user_addr);
        auto used = memory_->user_to_guest(v.addr.used_user_addr);
        if (!desc || !avail || !used) return fail(fmt::format("vring {} addresses are outside the memory table", index));
        s.desc_gpa = *desc;
        s.avail_gpa = *avail;
        s.used_gpa = *used;
        if (logging()) {
            s.log = log_;
            s.log_used = (v.addr.flags & wire::vring_addr::flag_log) != 0;
        }
        if (inflight_) { // split and packed rings alike (the area's parts have room for either layout)
            s.inflight = inflight_->queue(index);
            if (s.inflight.empty()) return fail(fmt::format("vring {} has no part in the inflight area", index));
            if (v.size > inflight_->description().queue_size)
                return fail(fmt::format("vring {} has {} descriptors, the inflight area {}", index, v.size,
                                        inflight_->description().queue_size));
            s.inflight_keepalive = inflight_;
        }
        // The vring holds kick and call while it runs and gives them back when it stops.
        s.on_broken = [flag = needs_reset_, notice = on_notice_](std::uint32_t i, std::error_code why) {
            flag->store(true);
            if (notice)
                notice(fmt::format("vring {} broken by the front-end ({}): it takes no more chains; error eventfd "
                                   "signalled, DEVICE_NEEDS_RESET set",
                                   i, why.message()));
        };
        auto started = vring_type::start(s, memory_, std::move(kicks_[index]), std::move(calls_[index]), std::move(errs_[index]));
        if (!started) return fail(fmt::format("vring {}: {}", index, started.error().message()));
        (*started)->set_enabled(v.enabled);
        if (!(*started)->notice().empty() && on_notice_) on_notice_((*started)->notice());
        running_[index] = started->get();
        device_.start_vring(std::move(*started));
        v.started = true;
        return done();
    }

    void stop_vring(std::uint32_t index) {
        auto& v = state_.vrings[index];
        if (!v.started) return;
        auto stopped = device_.stop_vring(index);
        running_[index] = nullptr;
        v.base = stopped->base();
        v.base_exact = true;
        v.started = false;
        kicks_[index] = stopped->take_kick();
        calls_[index] = stopped->take_call();
        errs_[index] = stopped->take_error();
    }

    void stop_all() {
        for (std::uint32_t i = 0; i < state_.vrings.size(); ++i) stop_vring(i);
    }

    // "a new table replaces the old one only once the rings stopped using it": running rings
    // are stopped (their state kept), the table swapped, and the rings restarted over it.
    step replace_memory(memory_type::ptr table) {
        // A front-end grows its log before its memory (and shrinks it after): a table past the
        // log while logging would go partly unlogged.
        if (logging() && memory_end(*table) > log_->covered())
            return fail(fmt::format("the memory table reaches 0x{:x}, past the dirty log's 0x{:x}", memory_end(*table),
                                    log_->covered()));
        stop_all();
        memory_ = std::move(table);
        return start_all();
    }
    step start_all() {
        for (std::uint32_t i = 0; i < state_.vrings.size(); ++i)
            if (auto r = start_vring(i); !r) return r;
        return done();
    }
    // The running rings again, where they stand (what they log changed).
    step restart_rings() {
        stop_all();
        return start_all();
    }

    static std::uint64_t memory_end(const memory_type& m) noexcept {
        const auto regions = m.regions(); // sorted by guest address
        return regions.empty() ? 0 : regions.back().guest_phys_addr() + regions.back().size();
    }

    // Do the rings log their writes? LOG_ALL negotiated and a log given.
    bool logging() const noexcept {
        return log_ != nullptr && wire::has(state_.features, wire::vhost_feature::log_all);
    }

    // A request that wanted an ack gets a failure ack before the session ends.
    void answer_failure(std::span<const std::byte> bytes) {
        if (bytes.size() < wire::header_size) return;
        const wire::header h = wire::load_header(bytes);
        if (!h.need_reply() || !negotiated(wire::protocol_feature::reply_ack)) return;
        std::array<std::byte, wire::header_size + 8> reply{};
        wire::store_header({h.request, wire::flags::version | wire::flags::reply, 8}, reply);
        le::store<std::uint64_t>(reply.data() + wire::header_size, 1);
        wire::frame f;
        std::copy(reply.begin(), reply.end(), f.storage.begin());
        f.size = reply.size();
        (void)transport_.send(f);
    }

    void reset_session() {
        stop_all();
        device_.reset();
        state_ = {};
        state_.vrings.resize(device_.vring_count());
        running_.assign(device_.vring_count(), nullptr);
        kicks_.clear();
        kicks_.resize(device_.vring_count());
        calls_.clear();
        calls_.resize(device_.vring_count());
        errs_.clear();
        errs_.resize(device_.vring_count());
        memory_.reset();
        backend_channel_.reset();
        inflight_.reset();
        log_.reset();
        log_fd_.reset();
        needs_reset_->store(false);
    }

    Transport& transport_;
    Device& device_;
    session_state state_;
    memory_type::ptr memory_;
    std::vector<vring_type*> running_; // non-owning: the device holds started vrings
    std::vector<any_kick_notifier> kicks_; // of stopped vrings; a running vring holds its own
    std::vector<any_call_notifier> calls_;
    std::vector<any_call_notifier> errs_;
    std::optional<typename Transport::backend_channel> backend_channel_;
    std::shared_ptr<inflight_area> inflight_; // INFLIGHT_SHMFD: the file the rings record in
    std::shared_ptr<const memory::dirty_log> log_; // SET_LOG_BASE (rings hold it while they run)
    unique_fd log_fd_;                             // SET_LOG_FD
    std::function<void(const std::string&)> on_notice_;
    // Set from a data-path thread when a ring breaks (vring::report_if_broken); shared with the
    // rings' on_broken so that a ring outliving this object cannot touch a dead one.
    std::shared_ptr<std::atomic<bool>> needs_reset_ = std::make_shared<std::atomic<bool>>(false);
};

} // namespace vvu::protocol
