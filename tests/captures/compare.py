#!/usr/bin/env python3
"""Compare two vhost-user capture files on what must be stable between runs of the same peer.

    compare.py A.vhu B.vhu

Each message line is reduced to (direction, request, flags, size, fd count); addresses, features,
fds' numbers and other payload values may differ. Both files are also checked for well-formedness
(hex, header size field == payload length, version 1). Exit 0: same sequence; 1: different (a
unified diff is printed); 2: a file is malformed or unreadable. Python 3 standard library only.
"""

import difflib
import os
import struct
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture import request_name  # noqa: E402  (the name table of capture.py)


class Malformed(Exception):
    pass


def shape(path):
    """The stable shape of each message in a capture file, one string per message."""
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            where = "%s:%d" % (path, lineno)
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] not in (">", "<") or not parts[1].isdigit():
                raise Malformed("%s: expected '> NFDS HEX' or '< NFDS HEX'" % where)
            direction, nfds, text = parts[0], int(parts[1]), parts[2]
            if text != text.lower():
                raise Malformed("%s: hex must be lowercase" % where)
            try:
                data = bytes.fromhex(text)
            except ValueError:
                raise Malformed("%s: bad hex" % where)
            if len(data) < 12:
                raise Malformed("%s: %d bytes, shorter than the 12-byte header" % (where, len(data)))
            request, flags, size = struct.unpack_from("<III", data)
            if size != len(data) - 12:
                raise Malformed("%s: header size %d but %d payload bytes" % (where, size, len(data) - 12))
            if flags & 0x3 != 1:
                raise Malformed("%s: version %d, expected 1" % (where, flags & 0x3))
            if (direction == "<") != bool(flags & 0x4):
                raise Malformed("%s: REPLY flag (0x4) does not match direction %s" % (where, direction))
            out.append("%s %-22s id=%-2d flags=0x%x size=%d fds=%d"
                       % (direction, request_name(request), request, flags, size, nfds))
    if not out:
        raise Malformed("%s: no messages" % path)
    return out


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    a_path, b_path = argv[1], argv[2]
    try:
        a, b = shape(a_path), shape(b_path)
    except (Malformed, OSError) as e:
        print("compare.py: %s" % e, file=sys.stderr)
        return 2
    if a == b:
        print("compare.py: same sequence, %d messages: %s == %s" % (len(a), a_path, b_path))
        return 0
    print("compare.py: MISMATCH between %s (%d messages) and %s (%d messages)"
          % (a_path, len(a), b_path, len(b)))
    # The hunk headers (@@ -N,.. +M,.. @@) count messages from 1.
    diff = difflib.unified_diff(a, b, fromfile=a_path, tofile=b_path, lineterm="", n=3)
    for line in diff:
        print(line)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
