// Test harness: a vfio_user::server on its own thread (the event loop vvu-device would run),
// raw-socket helpers for hostile messages, and an fd counter for leak checks.
#pragma once

#include "test_device.hpp"

#include <vvu/vfio_user/server.hpp>

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace vvu_test {

inline int count_open_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    while (const dirent* e = ::readdir(d)) if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n - 1; // the DIR's own fd
}

// Waits up to 3 s for the fd count to come back to `want` (the server thread closes a dropped
// client's socket asynchronously); returns the last count seen.
inline int settle_fds(int want) {
    int n = count_open_fds();
    for (int i = 0; i < 300 && n != want; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        n = count_open_fds();
    }
    return n;
}

inline std::string temp_socket_path(const char* tag) {
    return std::string("/tmp/vvu-vfu-") + tag + "-" + std::to_string(::getpid()) + ".sock";
}

class server_thread {
public:
    explicit server_thread(device& dev, const char* tag, server_options opts = {})
        : path_(temp_socket_path(tag)), stop_(::eventfd(0, EFD_CLOEXEC)) {
        opts.io_timeout = std::chrono::milliseconds(500);
        opts.log = [this](std::string_view s) {
            std::lock_guard l(mu_);
            log_.emplace_back(s);
        };
        auto s = server::listen(path_, dev, std::move(opts));
        if (!s) throw std::runtime_error(s.error().message());
        srv_ = std::move(*s);
        thread_ = std::thread([this] { run(); });
    }
    ~server_thread() {
        const std::uint64_t one = 1;
        (void)!::write(stop_.get(), &one, 8);
        thread_.join();
    }
    const std::string& path() const { return path_; }
    std::vector<std::string> log() {
        std::lock_guard l(mu_);
        return log_;
    }
    bool log_contains(std::string_view needle) {
        for (const auto& s : log()) if (s.find(needle) != std::string::npos) return true;
        return false;
    }
    server& srv() { return *srv_; }

private:
    void run() {
        for (;;) {
            pollfd p[3] = {{stop_.get(), POLLIN, 0}, {srv_->native_handle(), POLLIN, 0}, {srv_->listen_fd(), POLLIN, 0}};
            if (::poll(p, 3, -1) < 0) continue;
            if (p[0].revents) return;
            // The client first: a closed connection is dropped before the next one is accepted.
            if (p[1].revents && srv_->has_client())
                if (!srv_->serve_one()) srv_->drop_client();
            if (p[2].revents) (void)srv_->accept_one();
        }
    }

    std::string path_;
    unique_fd stop_;
    std::unique_ptr<server> srv_;
    std::mutex mu_;
    std::vector<std::string> log_;
    std::thread thread_;
};

inline unique_fd raw_connect(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) throw std::runtime_error("connect");
    return fd;
}

// Bytes of one message: a header (msg_size computed unless given) and a payload.
inline std::vector<std::byte> message(std::uint16_t cmd, std::vector<std::byte> payload, std::uint16_t id = 7,
                                      std::uint32_t flags = 0, std::optional<std::uint32_t> msg_size = {}) {
    std::vector<std::byte> out(header_size + payload.size());
    store(out, header{id, cmd, msg_size.value_or(static_cast<std::uint32_t>(out.size())), flags, 0});
    if (!payload.empty()) std::memcpy(out.data() + header_size, payload.data(), payload.size());
    return out;
}
template <class T>
std::vector<std::byte> bytes_of(const T& v, std::size_t extra = 0) {
    std::vector<std::byte> out(sizeof(T) + extra);
    store(out, v);
    return out;
}

inline bool send_raw(int sock, std::span<const std::byte> bytes, std::span<const int> fds = {}) {
    auto r = vfio_user::detail::send_message(sock, bytes, {}, fds,
                                             std::chrono::steady_clock::now() + std::chrono::seconds(2));
    return static_cast<bool>(r);
}

// What came back for one message: a reply header (+ payload, fds) or the connection closed.
struct answer {
    bool closed = false;
    header h{};
    std::vector<std::byte> payload;
    std::vector<unique_fd> fds;
    bool is_error() const { return !closed && (h.flags & header_flags::error); }
};

inline answer receive(int sock, std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    answer a;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::array<std::byte, header_size> head{};
    if (!vfio_user::detail::read_exact(sock, head, a.fds, deadline)) {
        a.closed = true;
        return a;
    }
    a.h = load<header>(head);
    a.payload.resize(a.h.msg_size >= header_size ? a.h.msg_size - header_size : 0);
    if (!vfio_user::detail::read_exact(sock, a.payload, a.fds, deadline)) a.closed = true;
    return a;
}

// The raw VERSION exchange a hostile test starts with.
inline void raw_version(int sock, const std::string& json = R"({"capabilities":{"max_msg_fds":8}})") {
    std::vector<std::byte> p(4 + json.size() + 1);
    store(p, version_payload{0, 0});
    std::memcpy(p.data() + 4, json.data(), json.size());
    if (!send_raw(sock, message(1, p))) throw std::runtime_error("send VERSION");
    auto a = receive(sock);
    if (a.closed || a.is_error()) throw std::runtime_error("VERSION refused");
}

} // namespace vvu_test
