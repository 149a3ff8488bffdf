#!/usr/bin/env python3
"""Writes the hand-over fuzzer's seeds (fuzz_handover.cpp): [u8 fd count][a session image].

The images follow docs/live-update.md ("A session image", version 1): a virtio-net port of two
queue pairs (4 vrings) over one 64 KiB memory region (fd 0), vring 1 running split or packed
with kick (fd 1) and call (fd 2), optionally an inflight area (fd 3).
Run: python3 tests/fuzz/make_handover_corpus.py
"""
import pathlib
import struct

root = pathlib.Path(__file__).resolve().parents[2]
out = root / "tests/fuzz/corpus/handover"
out.mkdir(parents=True, exist_ok=True)

NO_FD = 0xFFFFFFFF
VERSION_1, PROTOCOL_FEATURES, RING_PACKED = 1 << 32, 1 << 30, 1 << 34
INFLIGHT_SHMFD = 1 << 12
GPA, UADDR = 0x10000000, 0x7F0000000000


def image(packed: bool, inflight: bool, running: bool) -> bytes:
    b = struct.pack("<II", 0x56565553, 1)
    features = VERSION_1 | PROTOCOL_FEATURES | (RING_PACKED if packed else 0)
    b += struct.pack("<?Q?QQ", True, features, True, INFLIGHT_SHMFD if inflight else 0, 0xF)
    b += struct.pack("<I", 4)
    for i in range(4):
        on = i == 1
        b += struct.pack("<III", 256 if on else 0, i, 0)
        b += struct.pack("<QQQQ", UADDR if on else 0, UADDR + 0x3000 if on else 0, UADDR + 0x1000 if on else 0, 0)
        b += struct.pack("<?I????", on, 0x80008000 if packed else 0, packed, on, on, on and running)
        b += struct.pack("<III", 1 if on else NO_FD, 2 if on else NO_FD, NO_FD)
    b += struct.pack("<?I", True, 1)
    b += struct.pack("<QQQQI", GPA, 1 << 16, UADDR, 0, 0)
    b += struct.pack("<I", NO_FD)  # back-end channel
    if inflight:
        stride = (32 + 32 * 256 + 63) & ~63
        b += struct.pack("<QQHHI", 4 * stride, 0, 4, 256, 3)
    else:
        b += struct.pack("<QQHHI", 0, 0, 0, 0, NO_FD)
    state = struct.pack("<I6QH", 1, 0, 0, 0, 0, 0, 0, 1500) + struct.pack("<I", 0)
    b += struct.pack("<I", len(state)) + state
    return b


count = 0
for packed in (False, True):
    for inflight in (False, True):
        for running in (False, True):
            nfds = 4 if inflight else 3
            name = f"{'packed' if packed else 'split'}-{'inflight' if inflight else 'plain'}-{'running' if running else 'stopped'}"
            (out / name).write_bytes(bytes([nfds]) + image(packed, inflight, running))
            count += 1
print(f"{count} seeds in {out.relative_to(root)}")
