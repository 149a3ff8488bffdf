#!/usr/bin/env python3
"""A vhost-user proxy that hides the dirty log from the back-end: the negative control of the
migration stream test (live.sh --check stream --blind-log).

  log-blind-proxy.py LISTEN BACKEND [--timeout S]

A front-end (QEMU) connects to LISTEN; the proxy connects to BACKEND and relays every message
both ways unchanged, file descriptors included (SCM_RIGHTS; memory, kick, call and the back-end
channel's fds go straight to the back-end, so the data path and the back-end channel never pass
through here) — except SET_LOG_BASE (request 6), which it answers itself (the reply LOG_SHMFD
asks for: the request code, no payload) and never forwards. The back-end then never gets a log
to write into, as if it logged nothing, and during a migration QEMU sends the pages the back-end
writes into guest memory only if something else dirtied them. One front-end at a time; after a
session it waits for the next. Ends on SIGTERM or after --timeout seconds (default 300).
Prints one line per intercepted SET_LOG_BASE on stderr.
"""
import select
import signal
import socket
import struct
import sys
import time

SET_LOG_BASE = 6
REPLY = 0x4
VERSION = 0x1


def recv_exact(sock, n, fds):
    data = b""
    while len(data) < n:
        chunk, got, _, _ = socket.recv_fds(sock, n - len(data), 8)
        if not chunk:
            raise ConnectionError("closed")
        fds.extend(got)
        data += chunk
    return data


def relay_one(src, dst, from_front):
    """One whole message from src to dst (fds included); SET_LOG_BASE from the front-end is
    answered here instead."""
    fds = []
    hdr = recv_exact(src, 12, fds)
    request, flags, size = struct.unpack("<III", hdr)
    payload = recv_exact(src, size, fds) if size else b""
    if from_front and request == SET_LOG_BASE:
        for fd in fds:
            socket.close(fd)
        print(f"log-blind-proxy: SET_LOG_BASE ({len(fds)} fd, payload {payload.hex()}) answered here, not forwarded",
              file=sys.stderr, flush=True)
        src.sendall(struct.pack("<III", SET_LOG_BASE, VERSION | REPLY, 0))
        return
    socket.send_fds(dst, [hdr + payload], fds)
    for fd in fds:
        socket.close(fd)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    listen_path, backend_path = argv[1], argv[2]
    timeout = float(argv[4]) if len(argv) > 4 and argv[3] == "--timeout" else 300.0
    deadline = time.monotonic() + timeout
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(1)
    while time.monotonic() < deadline:
        server.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            front, _ = server.accept()
        except socket.timeout:
            break
        back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        back.connect(backend_path)
        print("log-blind-proxy: front-end connected", file=sys.stderr, flush=True)
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([front, back], [], [], 0.5)
                for s in ready:
                    relay_one(s, back if s is front else front, s is front)
        except (ConnectionError, OSError) as e:
            print(f"log-blind-proxy: session ended ({e})", file=sys.stderr, flush=True)
        front.close()
        back.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
