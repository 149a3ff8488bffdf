#!/usr/bin/env python3
"""Impersonate a vhost-user virtio-net back-end and record the session a front-end opens.

Listens on a UNIX socket, accepts one front-end (QEMU, DPDK virtio-user, ...), answers each
request the way a plausible virtio-net back-end would, and writes every message in both
directions to a capture file (format: tests/captures/README.md):

    # comment lines
    > NFDS HEX      front-end -> back-end, NFDS = fds received with it, HEX = header + payload
    < NFDS HEX      back-end -> front-end (our replies)

Received fds are counted and closed at once; the capture keeps only the count.
Protocol reference: QEMU docs/interop/vhost-user.rst. Python 3 standard library only.
"""

import argparse
import array
import datetime
import os
import select
import signal
import socket
import struct
import sys
import time

HEADER = struct.Struct("<III")  # request, flags, size
MAX_FDS = 8  # VHOST_MEMORY_BASELINE_NREGIONS: the most fds one message may carry

FLAG_VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

# Front-end requests, vhost-user.rst "Front-end message types".
REQUEST_NAMES = {
    1: "GET_FEATURES",
    2: "SET_FEATURES",
    3: "SET_OWNER",
    4: "RESET_OWNER",
    5: "SET_MEM_TABLE",
    6: "SET_LOG_BASE",
    7: "SET_LOG_FD",
    8: "SET_VRING_NUM",
    9: "SET_VRING_ADDR",
    10: "SET_VRING_BASE",
    11: "GET_VRING_BASE",
    12: "SET_VRING_KICK",
    13: "SET_VRING_CALL",
    14: "SET_VRING_ERR",
    15: "GET_PROTOCOL_FEATURES",
    16: "SET_PROTOCOL_FEATURES",
    17: "GET_QUEUE_NUM",
    18: "SET_VRING_ENABLE",
    19: "SEND_RARP",
    20: "NET_SET_MTU",
    21: "SET_BACKEND_REQ_FD",
    22: "IOTLB_MSG",
    23: "SET_VRING_ENDIAN",
    24: "GET_CONFIG",
    25: "SET_CONFIG",
    26: "CREATE_CRYPTO_SESSION",
    27: "CLOSE_CRYPTO_SESSION",
    28: "POSTCOPY_ADVISE",
    29: "POSTCOPY_LISTEN",
    30: "POSTCOPY_END",
    31: "GET_INFLIGHT_FD",
    32: "SET_INFLIGHT_FD",
    33: "GPU_SET_SOCKET",
    34: "RESET_DEVICE",
    35: "VRING_KICK",
    36: "GET_MAX_MEM_SLOTS",
    37: "ADD_MEM_REG",
    38: "REM_MEM_REG",
    39: "SET_STATUS",
    40: "GET_STATUS",
    41: "GET_SHARED_OBJECT",
    42: "SET_DEVICE_STATE_FD",
    43: "CHECK_DEVICE_STATE",
}

PROTOCOL_F_LOG_SHMFD = 1

# Device features offered by default: VERSION_1, RING_PACKED, IN_ORDER,
# VHOST_USER_F_PROTOCOL_FEATURES, RING_EVENT_IDX, RING_INDIRECT_DESC, NET_MRG_RXBUF.
DEFAULT_FEATURES = (1 << 32) | (1 << 34) | (1 << 35) | (1 << 30) | (1 << 29) | (1 << 28) | (1 << 15)
# Protocol features offered by default: MQ, REPLY_ACK, BACKEND_REQ, STATUS. Not CONFIG: QEMU 7.2
# warns that its vhost-user net does not support it, and DPDK 22.11 virtio-user does not use it.
DEFAULT_PROTOCOL_FEATURES = (1 << 0) | (1 << 3) | (1 << 5) | (1 << 16)


def request_name(request):
    return REQUEST_NAMES.get(request, "UNKNOWN_%d" % request)


def parse_int(text):
    return int(text, 0)


def parse_hex(text):
    return int(text, 16)


class PeerClosed(Exception):
    pass


class Backend:
    """Reply policy of a plausible virtio-net back-end; state needed for the replies."""

    def __init__(self, args):
        self.features = args.features
        self.protocol_features = args.protocol_features
        self.queue_num = args.queue_num
        self.max_mem_slots = args.max_mem_slots
        self.acked_protocol_features = 0
        self.status = 0

    def reply_payload(self, request, flags, payload):
        """The reply's payload, or None when the request gets no reply."""
        u64 = struct.Struct("<Q")
        if request == 1:  # GET_FEATURES
            return u64.pack(self.features)
        if request == 15:  # GET_PROTOCOL_FEATURES
            return u64.pack(self.protocol_features)
        if request == 16 and len(payload) >= 8:  # SET_PROTOCOL_FEATURES
            self.acked_protocol_features = u64.unpack_from(payload)[0]
        if request == 17:  # GET_QUEUE_NUM
            return u64.pack(self.queue_num)
        if request == 11:  # GET_VRING_BASE: same index, num 0
            index = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else 0
            return struct.pack("<II", index, 0)
        if request == 24:  # GET_CONFIG: echo offset/size/flags, size zero bytes of config
            offset, size, cflags = struct.unpack_from("<III", payload) if len(payload) >= 12 else (0, 0, 0)
            return struct.pack("<III", offset, size, cflags) + bytes(size)
        if request == 36:  # GET_MAX_MEM_SLOTS
            return u64.pack(self.max_mem_slots)
        if request == 39 and len(payload) >= 8:  # SET_STATUS
            self.status = u64.unpack_from(payload)[0]
        if request == 40:  # GET_STATUS
            return u64.pack(self.status)
        if request in (42, 43):  # SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE: always answered
            return u64.pack(0)
        if request == 6 and self.acked_protocol_features & (1 << PROTOCOL_F_LOG_SHMFD):
            return u64.pack(0)  # SET_LOG_BASE is answered once LOG_SHMFD is negotiated
        if flags & FLAG_NEED_REPLY:  # REPLY_ACK: u64 0 = success
            return u64.pack(0)
        return None


def recv_exact(conn, n, deadline_fn):
    data = b""
    while len(data) < n:
        deadline_fn()
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise PeerClosed("peer closed mid-message (%d of %d bytes)" % (len(data), n))
        data += chunk
    return data


def close_fds_from(ancdata):
    """Close every fd in SCM_RIGHTS ancillary data; return how many there were."""
    count = 0
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
                count += 1
    return count


def listen_atomically(path):
    """Bind and listen under a temporary name, then rename into place: once `path` exists,
    connecting to it succeeds (no window between bind() and listen())."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    for p in (path, tmp):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(tmp)
    server.listen(1)
    os.rename(tmp, path)
    return server


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True, metavar="PATH", help="UNIX socket path to listen on")
    ap.add_argument("--out", metavar="FILE", help="capture file to write (default: stdout)")
    ap.add_argument("--comment", action="append", default=[], metavar="TEXT",
                    help="comment line for the capture header (repeatable)")
    ap.add_argument("--features", type=parse_hex, default=DEFAULT_FEATURES, metavar="HEX",
                    help="GET_FEATURES reply (default %#x)" % DEFAULT_FEATURES)
    ap.add_argument("--protocol-features", type=parse_hex, default=DEFAULT_PROTOCOL_FEATURES, metavar="HEX",
                    help="GET_PROTOCOL_FEATURES reply (default %#x)" % DEFAULT_PROTOCOL_FEATURES)
    ap.add_argument("--queue-num", type=parse_int, default=2, metavar="N",
                    help="GET_QUEUE_NUM reply: queues the back-end supports (default 2)")
    ap.add_argument("--max-mem-slots", type=parse_int, default=8, metavar="N",
                    help="GET_MAX_MEM_SLOTS reply (default 8)")
    ap.add_argument("--idle", type=float, default=3.0, metavar="SECONDS",
                    help="end after this long without a message (default 3)")
    ap.add_argument("--accept-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="fail if no front-end connects within this time (default 60)")
    ap.add_argument("--max-messages", type=parse_int, default=0, metavar="N",
                    help="end after N front-end messages (default: no limit)")
    ap.add_argument("--stop-peer-pidfile", metavar="FILE",
                    help="at the first idle period, send SIGTERM to the pid in FILE (a peer the caller "
                         "started) and keep recording its shutdown until it closes or idles again")
    ap.add_argument("--quiet", action="store_true", help="no per-message summary on stderr")
    args = ap.parse_args()

    backend = Backend(args)
    server = listen_atomically(args.listen)
    try:
        ready, _, _ = select.select([server], [], [], args.accept_timeout)
        if not ready:
            print("capture.py: no front-end connected within %gs" % args.accept_timeout, file=sys.stderr)
            return 2
        conn, _ = server.accept()
    finally:
        server.close()
        try:
            os.unlink(args.listen)
        except FileNotFoundError:
            pass

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    ending = "?"
    received = 0
    notes = []

    def log(direction, request, flags, size, nfds):
        if not args.quiet:
            print("%3d %s %-22s flags=0x%x size=%d fds=%d"
                  % (len(lines), direction, request_name(request), flags, size, nfds), file=sys.stderr)

    def idle_guard():
        ready, _, _ = select.select([conn], [], [], args.idle)
        if not ready:
            raise TimeoutError

    with conn:
        try:
            while not args.max_messages or received < args.max_messages:
                try:
                    idle_guard()
                except TimeoutError:
                    if args.stop_peer_pidfile and not notes:
                        with open(args.stop_peer_pidfile) as f:
                            pid = int(f.read().split()[0])
                        os.kill(pid, signal.SIGTERM)
                        notes.append("idle for %gs after %d front-end messages: sent SIGTERM to the peer, "
                                     "recorded its shutdown" % (args.idle, received))
                        if not args.quiet:
                            print("capture.py: " + notes[-1], file=sys.stderr)
                        continue
                    ending = "idle for %gs" % args.idle
                    break
                # The header alone, so the fds (sent with the message's first byte) come with it.
                header, ancdata, msg_flags, _ = conn.recvmsg(
                    HEADER.size, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize),
                    socket.MSG_CMSG_CLOEXEC)
                nfds = close_fds_from(ancdata)
                if not header:
                    ending = "peer closed"
                    break
                if msg_flags & socket.MSG_CTRUNC:
                    print("capture.py: more than %d fds on one message (truncated)" % MAX_FDS, file=sys.stderr)
                if len(header) < HEADER.size:
                    header += recv_exact(conn, HEADER.size - len(header), idle_guard)
                request, flags, size = HEADER.unpack(header)
                payload = recv_exact(conn, size, idle_guard) if size else b""
                received += 1
                log(">", request, flags, size, nfds)
                lines.append("> %d %s" % (nfds, (header + payload).hex()))

                reply = backend.reply_payload(request, flags, payload)
                if reply is not None:
                    rflags = FLAG_VERSION | FLAG_REPLY
                    message = HEADER.pack(request, rflags, len(reply)) + reply
                    conn.sendall(message)
                    log("<", request, rflags, len(reply), 0)
                    lines.append("< 0 %s" % message.hex())
            else:
                ending = "max messages (%d)" % args.max_messages
        except PeerClosed as e:
            ending = str(e)
        except TimeoutError:
            ending = "idle for %gs mid-message" % args.idle
        except (ConnectionResetError, BrokenPipeError) as e:
            ending = "peer closed (%s)" % e.strerror

    header_lines = ["# " + c for c in args.comment]
    header_lines += [
        "# captured %s by tests/captures/capture.py" % started,
        "# replies: GET_FEATURES=%#x GET_PROTOCOL_FEATURES=%#x GET_QUEUE_NUM=%d GET_MAX_MEM_SLOTS=%d;"
        % (args.features, args.protocol_features, args.queue_num, args.max_mem_slots),
        "#   GET_VRING_BASE=(same index, num 0); GET_CONFIG=echo offset/size/flags + size zero bytes;",
        "#   GET_STATUS=last SET_STATUS; any other request with NEED_REPLY (0x8) -> u64 0 ack",
    ]
    header_lines += ["# " + n for n in notes]
    header_lines += ["# ended: %s; %d front-end messages" % (ending, received)]
    text = "\n".join(header_lines + lines) + "\n"
    if args.out:
        tmp = args.out + ".part"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    else:
        sys.stdout.write(text)
    if not args.quiet:
        print("capture.py: %d front-end messages, ended: %s" % (received, ending), file=sys.stderr)
    return 0 if received else 1


if __name__ == "__main__":
    sys.exit(main())
