#!/usr/bin/env python3
"""A bounded QMP client for the migration tests: one command per run, or a wait.

  qmp.py SOCK [--timeout S] execute COMMAND [JSON-ARGUMENTS]
      runs COMMAND and prints its "return" as one JSON line (exit 1 on an "error" reply)
  qmp.py SOCK [--timeout S] wait-migrate
      polls query-migrate every 0.1 s until the status is completed (prints the final
      query-migrate as one JSON line, exit 0), failed or cancelled (prints it, exit 1)
  qmp.py SOCK [--timeout S] wait-status STATUS
      polls query-status every 0.1 s until the VM's status is STATUS (e.g. running), exit 0

Every step is bounded by --timeout (default 60 s): connecting (QEMU creates the socket as it
starts), each reply and the whole wait; on expiry it prints why and exits 2. QEMU serves one
QMP client at a time on a socket: each run connects, works and disconnects.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.buf = b""
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"cannot connect to {path}: {e}")
                time.sleep(0.05)
        self.read()  # the greeting
        self.execute("qmp_capabilities")

    def read(self):
        """The next reply or greeting; events (QEMU sends them unasked) are skipped."""
        while True:
            while b"\n" not in self.buf:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no reply from QEMU")
                self.sock.settimeout(left)
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("QEMU closed the QMP connection")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command, arguments=None):
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        reply = self.read()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")


def main(argv):
    args = argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = args.pop(0)
    timeout = 60.0
    if args[0] == "--timeout":
        timeout = float(args[1])
        args = args[2:]
    deadline = time.monotonic() + timeout
    what = args.pop(0)
    try:
        qmp = Qmp(path, deadline)
        if what == "execute":
            ret = qmp.execute(args[0], json.loads(args[1]) if len(args) > 1 else None)
            print(json.dumps(ret))
            return 0
        if what == "wait-migrate":
            while True:
                info = qmp.execute("query-migrate")
                status = info.get("status", "none")
                if status in ("completed", "failed", "cancelled"):
                    print(json.dumps(info))
                    return 0 if status == "completed" else 1
                if time.monotonic() >= deadline:
                    print(json.dumps(info))
                    print(f"qmp.py: migration still '{status}' after {timeout:.0f} s", file=sys.stderr)
                    return 2
                time.sleep(0.1)
        if what == "wait-status":
            while True:
                status = qmp.execute("query-status").get("status")
                if status == args[0]:
                    print(status)
                    return 0
                if time.monotonic() >= deadline:
                    print(f"qmp.py: VM status '{status}', not '{args[0]}', after {timeout:.0f} s", file=sys.stderr)
                    return 2
                time.sleep(0.1)
        print(f"qmp.py: unknown action {what}", file=sys.stderr)
        return 2
    except (TimeoutError, socket.timeout) as e:
        print(f"qmp.py: {path}: {e} (within {timeout:.0f} s)", file=sys.stderr)
        return 2
    except (OSError, ConnectionError, RuntimeError, ValueError) as e:
        print(f"qmp.py: {path}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
