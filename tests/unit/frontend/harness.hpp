// Test harness of the front-end tests: vvu's own back-end on one end of a socketpair (a minimal
// Transport over it), and a scripted back-end whose answers a test can bend, one request at a time.
#pragma once

#include <vvu/device/net_forward.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/protocol/frontend.hpp>
#include <vvu/transport/backend_channel.hpp>
#include <vvu/transport/framed_socket.hpp>
#include <vvu/util/eventfd.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace vvu::test {

using namespace std::chrono_literals;

inline std::pair<unique_fd, unique_fd> socket_pair() {
    int sv[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
    return {unique_fd(sv[0]), unique_fd(sv[1])};
}

// The Transport concept over an already connected socket (one session).
struct pair_transport {
    using kick_notifier = eventfd_notifier;
    using call_notifier = eventfd_notifier;
    using backend_channel = transport::backend_channel;

    transport::framed_socket socket;

    expected<void, transport::error> wait_for_frontend() { return {}; }
    expected<transport::received_message, transport::error> receive() {
        return socket.receive(wire::channel::front, std::chrono::seconds(30));
    }
    expected<void, transport::error> send(const wire::frame& f) { return socket.send(f, std::chrono::seconds(5)); }
    void close_session() noexcept { socket.close(); }
    expected<memory::region, memory::error> map_region(const wire::memory_region& d, unique_fd fd) {
        return memory::region::map(d, std::move(fd));
    }
    expected<kick_notifier, transport::error> make_kick_notifier(std::uint32_t, unique_fd fd) {
        return eventfd_notifier(std::move(fd));
    }
    expected<call_notifier, transport::error> make_call_notifier(std::uint32_t, unique_fd fd) {
        return eventfd_notifier(std::move(fd));
    }
    expected<call_notifier, transport::error> make_error_notifier(std::uint32_t q, unique_fd fd) {
        return make_call_notifier(q, std::move(fd));
    }
    expected<backend_channel, transport::error> make_backend_channel(unique_fd fd) {
        return backend_channel(std::move(fd));
    }
};
static_assert(transport::transport<pair_transport>);

// vvu's back-end (protocol::backend + net_port) serving one end of a socketpair on a thread,
// and a forwarding thread in `mode` over the port. The front-end gets the other end.
class vvu_backend {
public:
    vvu_backend(std::uint32_t queue_pairs, device::net::forward_mode mode)
        : port_({.queue_pairs = queue_pairs}) {
        auto [a, b] = socket_pair();
        transport_.socket = transport::framed_socket(std::move(a));
        frontend_end_ = std::move(b);
        control_ = std::thread([this] {
            protocol::backend<pair_transport, device::net::net_port> backend(transport_, port_);
            why_ = backend.serve();
            state_ = backend.state();
        });
        data_ = std::thread([this, mode] {
            device::net::forwarder fwd({&port_}, mode);
            while (running_.load(std::memory_order_relaxed))
                if (fwd.poll() == 0) std::this_thread::yield();
        });
    }
    ~vvu_backend() {
        if (control_.joinable()) {
            transport_.socket.close(); // not reached when the front-end hung up first
            control_.join();
        }
        running_ = false;
        data_.join();
    }
    unique_fd take_frontend_end() { return std::move(frontend_end_); }
    // Waits for the session to end (the front-end closed its end) and returns why it ended.
    std::string join() {
        control_.join();
        return why_;
    }
    const protocol::session_state& final_state() const { return state_; }
    device::net::net_port& port() { return port_; }

private:
    device::net::net_port port_;
    pair_transport transport_;
    unique_fd frontend_end_;
    std::string why_;
    protocol::session_state state_;
    std::atomic<bool> running_{true};
    std::thread control_;
    std::thread data_;
};

// A back-end that answers like a minimal well-behaved one unless the test's hook says otherwise
// for a request. Runs on a thread until the front-end closes its end (or the hook says close).
class scripted_backend {
public:
    struct action {
        enum kind_t { normal, silent, close, raw } kind = normal;
        std::vector<std::byte> bytes; // raw: sent instead of the normal answer
    };
    // The hook sees each request (header and message) and the back-end channel, if any.
    using hook = std::function<action(const wire::header&, transport::framed_socket* backend_channel)>;

    std::uint64_t features = wire::virtio_feature::version_1 | wire::vhost_feature::protocol_features |
                             wire::net_feature::mrg_rxbuf;
    std::uint64_t protocol_features = wire::protocol_feature::reply_ack | wire::protocol_feature::config |
                                      wire::protocol_feature::backend_req | wire::protocol_feature::mq;

    explicit scripted_backend(hook h) : hook_(std::move(h)) {
        auto [a, b] = socket_pair();
        socket_ = transport::framed_socket(std::move(a));
        frontend_end_ = std::move(b);
    }
    ~scripted_backend() {
        socket_.close();
        if (thread_.joinable()) thread_.join();
    }
    void start() {
        thread_ = std::thread([this] { run(); });
    }
    unique_fd take_frontend_end() { return std::move(frontend_end_); }
    std::vector<wire::front_request> seen() {
        if (thread_.joinable()) thread_.join();
        return seen_;
    }

    // A reply frame: header {request, REPLY | version, payload size} + payload bytes.
    static std::vector<std::byte> reply_bytes(std::uint32_t request, std::span<const std::byte> payload,
                                              std::uint32_t flags = wire::flags::version | wire::flags::reply) {
        std::vector<std::byte> out(wire::header_size + payload.size());
        wire::store_header({request, flags, static_cast<std::uint32_t>(payload.size())}, out);
        std::copy(payload.begin(), payload.end(), out.begin() + wire::header_size);
        return out;
    }
    static std::vector<std::byte> u64_reply(std::uint32_t request, std::uint64_t v,
                                            std::uint32_t flags = wire::flags::version | wire::flags::reply) {
        std::array<std::byte, 8> p{};
        le::store(p.data(), v);
        return reply_bytes(request, p, flags);
    }

private:
    void run() {
        std::uint64_t acked_protocol = 0;
        for (;;) {
            auto m = socket_.receive(wire::channel::front, std::chrono::seconds(10));
            if (!m) return;
            const wire::header h = m->header;
            const auto req = static_cast<wire::front_request>(h.request);
            seen_.push_back(req);
            if (req == wire::front_request::set_backend_req_fd && !m->fds.empty())
                channel_ = transport::framed_socket(m->fds.take(0));
            action a = hook_ ? hook_(h, channel_.is_open() ? &channel_ : nullptr) : action{};
            if (a.kind == action::close) {
                socket_.close();
                return;
            }
            if (a.kind == action::silent) continue;
            if (a.kind == action::raw) {
                if (!socket_.send(a.bytes, {}, std::chrono::seconds(5))) return;
                continue;
            }
            std::vector<std::byte> out;
            using fr = wire::front_request;
            switch (req) {
            case fr::get_features: out = u64_reply(h.request, features); break;
            case fr::get_protocol_features: out = u64_reply(h.request, protocol_features); break;
            case fr::get_queue_num: out = u64_reply(h.request, 1); break;
            case fr::set_protocol_features:
                acked_protocol = le::load<std::uint64_t>(m->payload().data());
                break;
            case fr::get_config: {
                std::vector<std::byte> p(m->payload().begin(), m->payload().end());
                for (std::size_t i = 12; i < p.size(); ++i) p[i] = static_cast<std::byte>(i - 12 + 0xa0);
                out = reply_bytes(h.request, p);
                break;
            }
            case fr::get_vring_base: {
                std::vector<std::byte> p(m->payload().begin(), m->payload().end());
                out = reply_bytes(h.request, p);
                break;
            }
            default: break;
            }
            if (out.empty() && h.need_reply() && wire::has(acked_protocol, wire::protocol_feature::reply_ack))
                out = u64_reply(h.request, 0);
            if (!out.empty() && !socket_.send(out, {}, std::chrono::seconds(5))) return;
        }
    }

    hook hook_;
    transport::framed_socket socket_;
    transport::framed_socket channel_;
    unique_fd frontend_end_;
    std::vector<wire::front_request> seen_;
    std::thread thread_;
};

} // namespace vvu::test
