#!/usr/bin/env python3
"""Writes the wire fuzzer's seed corpus from the captured sessions in tests/captures/.

Each seed is one control byte (fd count | channel << 4, see fuzz_wire.cpp) followed by one
captured message; and the back-end fuzzer's seeds. Run: python3 tests/fuzz/make_corpora.py
"""
import hashlib
import pathlib

root = pathlib.Path(__file__).resolve().parents[2]
out = root / "tests/fuzz/corpus/wire"
out.mkdir(parents=True, exist_ok=True)
seen = set()
for capture in sorted((root / "tests/captures").glob("*.vhu")):
    for line in capture.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] not in "<>":
            continue
        channel = 0 if parts[0] == ">" else 2
        seed = bytes([int(parts[1]) | channel << 4]) + bytes.fromhex(parts[2])
        digest = hashlib.sha1(seed).hexdigest()[:16]
        if digest not in seen:
            seen.add(digest)
            (out / digest).write_bytes(seed)
print(f"{len(seen)} seeds in {out.relative_to(root)}")

# The back-end fuzzer's seeds: each capture's front-end messages as one sequence
# ([u16 length][u8 fd count][message] repeated, see fuzz_backend.cpp).
backend_out = root / "tests/fuzz/corpus/backend"
backend_out.mkdir(parents=True, exist_ok=True)
for capture in sorted((root / "tests/captures").glob("*.vhu")):
    seed = b""
    for line in capture.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] != ">":
            continue
        message = bytes.fromhex(parts[2])
        seed += len(message).to_bytes(2, "little") + bytes([int(parts[1])]) + message
    (backend_out / capture.stem).write_bytes(seed)
print(f"backend seeds in {backend_out.relative_to(root)}")

# Seeds that reach the data path (fuzz_backend.cpp's records): a whole session — features, a
# memory table of one 1 MiB region, an RX vring (0) and a TX vring (1) of 256 entries placed
# in it — then memory writes that make frames available on the TX ring and buffers on the RX
# ring, and a data-path record with frames to write into them. Split and packed rings.
import struct

REGION_GPA, REGION_SIZE, REGION_UADDR = 0x0, 0x100000, 0x7F0000000000
QSIZE = 256
F_VERSION_1, F_RING_PACKED, F_MRG_RXBUF = 1 << 32, 1 << 34, 1 << 15
F_LOG_ALL, PF_LOG_SHMFD, VRING_F_LOG = 1 << 26, 1 << 1, 1


def message(request, payload=b""):
    return struct.pack("<III", request, 0x1, len(payload)) + payload


def record(control, body):
    return struct.pack("<HB", len(body), control) + body


def mem_write(offset, data):
    return record(0xF0, struct.pack("<BI", 0, offset) + data)


def session(packed, frames, logged=False):
    features = F_VERSION_1 | F_MRG_RXBUF | (F_RING_PACKED if packed else 0) | (F_LOG_ALL if logged else 0)
    out = record(0, message(3))  # SET_OWNER
    if logged:
        out += record(0, message(16, struct.pack("<Q", PF_LOG_SHMFD)))  # SET_PROTOCOL_FEATURES
    out += record(0, message(2, struct.pack("<Q", features)))  # SET_FEATURES
    table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", REGION_GPA, REGION_SIZE, REGION_UADDR, 0)
    out += record(1, message(5, table))  # SET_MEM_TABLE, one fd
    if logged:  # SET_LOG_BASE: one bit per 4 KiB page of the 1 MiB region, one fd
        out += record(1, message(6, struct.pack("<QQ", REGION_SIZE // 4096 // 8, 0)))
    # vring i's areas at 0x10000 * (1 + 3 i); its buffers at 0x80000 + 0x20000 i.
    for vring in (0, 1):
        base = 0x10000 * (1 + 3 * vring)
        desc, driver, device = base, base + 0x10000, base + 0x20000
        buffers = 0x80000 + 0x20000 * vring
        out += record(0, message(8, struct.pack("<II", vring, QSIZE)))  # SET_VRING_NUM
        addr = struct.pack("<IIQQQQ", vring, VRING_F_LOG if logged else 0, REGION_UADDR + desc,
                           REGION_UADDR + device, REGION_UADDR + driver, REGION_GPA + device if logged else 0)
        out += record(0, message(9, addr))  # SET_VRING_ADDR
        out += record(0, message(10, struct.pack("<II", vring, 0x8000 if packed else 0)))  # SET_VRING_BASE
        # The ring's contents before it starts: `frames` descriptors, TX readable, RX writable.
        count = frames
        table = b""
        for i in range(count):
            addr_i = REGION_GPA + buffers + 0x800 * i
            if vring == 1:
                frame = bytes(12) + bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xB5]) + bytes([i]) * 50
                out += mem_write(buffers + 0x800 * i, frame)
                length, write = len(frame), 0
            else:
                length, write = 0x800, 2
            if packed:
                table += struct.pack("<QIHH", addr_i, length, i, 0x80 | write)  # AVAIL set, USED clear: wrap 1
            else:
                table += struct.pack("<QIHH", addr_i, length, write, 0)
        out += mem_write(desc, table)
        if not packed:
            out += mem_write(driver, struct.pack("<HH", 0, count) + b"".join(struct.pack("<H", i) for i in range(count)))
        out += record(1, message(13, struct.pack("<Q", vring)))  # SET_VRING_CALL, one eventfd
        out += record(1, message(12, struct.pack("<Q", vring)))  # SET_VRING_KICK: the ring starts
    frames_out = b"".join(struct.pack("<H", 60) + bytes([0xFF] * 6 + [2, 0, 0, 0, 0, 9] + [i] * 48) for i in range(4))
    out += record(0xF1, frames_out)
    return out


for packed in (False, True):
    for frames in (1, 32):
        name = f"session-{'packed' if packed else 'split'}-{frames}"
        (backend_out / name).write_bytes(session(packed, frames))
    # The same with dirty logging on (a migration in progress): the data path logs as it writes.
    name = f"session-logged-{'packed' if packed else 'split'}-32"
    (backend_out / name).write_bytes(session(packed, 32, logged=True))
print(f"data-path seeds in {backend_out.relative_to(root)}")
