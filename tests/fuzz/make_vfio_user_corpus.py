#!/usr/bin/env python3
"""Writes the seed corpus of vvu-fuzz-vfio_user: short vfio-user sessions, well-formed and
hostile (input format: see tests/fuzz/fuzz_vfio_user.cpp). Run: python3 tests/fuzz/make_vfio_user_corpus.py"""
import os
import pathlib
import struct

out = pathlib.Path(__file__).resolve().parent / 'corpus' / 'vfio_user'
os.makedirs(out, exist_ok=True)


def msg(cmd, payload=b'', msg_id=1, flags=0, size=None):
    return struct.pack('<HHIII', msg_id, cmd, 16 + len(payload) if size is None else size, flags, 0) + payload


def rec(data, nfds=0, first=0):
    """One sendmsg: nfds fds from the pool starting at `first` (0, 2: memfds; 1, 3: eventfds)."""
    return bytes([(nfds & 3) | ((first & 3) << 2)]) + struct.pack('<H', len(data)) + data


VERSION = rec(msg(1, struct.pack('<HH', 0, 0) + b'{"capabilities":{"max_msg_fds":8}}\0'))
RW = 3


def dma_map(iova, size, off=0, flags=RW):
    return msg(2, struct.pack('<IIQQQ', 32, flags, off, iova, size))


def dma_unmap(iova, size, flags=0):
    return msg(3, struct.pack('<IIQQ', 24, flags, iova, size))


def region_read(region, off, count):
    return msg(9, struct.pack('<QII', off, region, count))


def region_write(region, off, data):
    return msg(10, struct.pack('<QII', off, region, len(data)) + data)


def set_irqs(flags, index, start, count, data=b''):
    return msg(8, struct.pack('<IIIII', 20 + len(data), flags, index, start, count) + data)


seeds = {
    'info': VERSION + rec(msg(4, struct.pack('<IIII', 16, 0, 0, 0)))
    + rec(msg(5, struct.pack('<IIIIQQ', 80, 0, 0, 0, 0, 0)))
    + rec(msg(5, struct.pack('<IIIIQQ', 32, 0, 4, 0, 0, 0)))
    + rec(msg(6, struct.pack('<IIII', 16 + 40, 0, 2, 0)))
    + rec(msg(7, struct.pack('<IIII', 16, 0, 2, 0))) + rec(msg(13)),
    'regions': VERSION + rec(region_read(7, 0, 4)) + rec(region_write(7, 4, b'\x06\x00'))
    + rec(region_read(0, 0x1000, 64)) + rec(region_write(2, 0x20, b'\x34\x12'))
    + rec(region_read(7, 252, 8)) + rec(region_read(7, 2**64 - 16, 32)),
    'dma': VERSION + rec(dma_map(0x10000, 0x2000), 1, 0) + rec(dma_map(0x11000, 0x1000), 1, 2)
    + rec(dma_unmap(0x10000, 0x1000)) + rec(dma_unmap(0x10000, 0x2000))
    + rec(dma_map(2**64 - 0x800, 0x1000), 1, 0) + rec(dma_map(0x20000, 0x1000), 0),
    'irqs': VERSION + rec(set_irqs(0x24, 2, 0, 2), 2, 1) + rec(set_irqs(0x24, 0, 0, 1), 1, 3)
    + rec(set_irqs(0x22, 2, 0, 4, b'\x01\x00\x01\x00')) + rec(set_irqs(0x21, 2, 0, 0))
    + rec(set_irqs(0x24, 2, 3, 2), 1, 1) + rec(set_irqs(0x24, 2, 0, 1), 1, 0),
    'hostile-frames': VERSION + rec(msg(99, b'\0' * 8)) + rec(msg(4, b'\0' * 16, flags=1))
    + rec(region_read(7, 0, 4), 2, 0) + rec(msg(4, b'', size=8)),
    'split-message': VERSION + rec(region_write(7, 8, b'\xaa' * 8)[:10]) + rec(region_write(7, 8, b'\xaa' * 8)[10:]),
    'bad-version': rec(msg(1, struct.pack('<HH', 1, 0) + b'{"capabilities":[]}\0')),
    'no-version': rec(region_read(7, 0, 4)),
}
for name, data in seeds.items():
    (out / name).write_bytes(data)
