#!/usr/bin/env python3
"""Writes the seed corpus of vvu-fuzz-ring: small valid rings of both layouts plus a few
hostile ones (input format: see tests/fuzz/fuzz_ring.cpp). Run: python3 tests/fuzz/make_ring_corpus.py"""
import os
import pathlib
import struct
out = str(pathlib.Path(__file__).resolve().parent / 'corpus' / 'ring')
os.makedirs(out, exist_ok=True)
BASE = 0x1000
def desc(addr, ln, a, b):  # split: flags,next ; packed: id,flags
    return struct.pack('<QIHH', addr, ln, a, b)
def split_seed(sel, limit, qs, descs, heads, extra=b''):
    d = b''.join(descs).ljust(16 * qs, b'\0')
    avail = struct.pack('<HH', 0, len(heads)) + b''.join(struct.pack('<H', h) for h in heads)
    avail = avail.ljust(6 + 2 * qs, b'\0')
    body = d + avail
    body = body.ljust((len(body) + 3) & ~3, b'\0') + b'\0' * (6 + 8 * qs)
    buf_off = len(body)
    return bytes([sel, limit]) + body + extra, buf_off
def packed_seed(sel, limit, qs, descs, extra=b''):
    d = b''.join(descs).ljust(16 * qs, b'\0')
    return bytes([sel, limit]) + d + b'\0' * 8 + extra
A, U = 1 << 7, 1 << 15
# split size 8 (sel>>4 = 6), indirect + event_idx: two chains, one direct r+w, one indirect
sel = (6 << 4) | 0x6
seed, off = split_seed(sel, 0, 8, [desc(BASE + 600, 16, 1, 1), desc(BASE + 640, 16, 2, 0),
                                   desc(BASE + 700, 32, 4, 0)], [0, 2])
seed = seed.ljust(2 + 700, b'\0') + desc(BASE + 600, 8, 1, 1) + desc(BASE + 650, 8, 2, 0)
open(f'{out}/split-direct-indirect', 'wb').write(seed)
# split loop
seed, _ = split_seed(sel, 0, 8, [desc(BASE + 600, 16, 1, 1), desc(BASE + 640, 16, 1, 0)], [0])
open(f'{out}/split-loop', 'wb').write(seed)
# split size 1 in_order
seed, _ = split_seed((0 << 4) | 0x8, 0, 1, [desc(BASE + 200, 16, 0, 0)], [0])
open(f'{out}/split-size1', 'wb').write(seed)
# packed size 3 (sel>>4=2) event_idx+indirect: chain of 2, then indirect
sel = (2 << 4) | 0x7
seed = packed_seed(sel, 0, 3, [desc(BASE + 400, 16, 0, A | 1), desc(BASE + 420, 16, 0, A | 2),
                               desc(BASE + 500, 32, 1, A | 4)])
seed = seed.ljust(2 + 500, b'\0') + desc(BASE + 400, 8, 0, 0) + desc(BASE + 450, 8, 0, 2)
open(f'{out}/packed-chain-indirect', 'wb').write(seed)
# packed size 100 (sel>>4=10), in_order, 4 single descriptors
sel = (10 << 4) | 0x9
seed = packed_seed(sel, 0, 100, [desc(BASE + 1800 + 32 * i, 16, i, A | (2 if i % 2 else 0)) for i in range(4)])
open(f'{out}/packed-inorder', 'wb').write(seed)
# packed hostile: id out of range, next runs into unavailable
seed = packed_seed((4 << 4) | 1, 0, 5, [desc(BASE + 200, 8, 9, A)])
open(f'{out}/packed-bad-id', 'wb').write(seed)
seed = packed_seed((4 << 4) | 1, 0, 5, [desc(BASE + 200, 8, 0, A | 1), desc(BASE + 200, 8, 0, U)])
open(f'{out}/packed-unavailable', 'wb').write(seed)
