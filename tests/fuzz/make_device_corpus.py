#!/usr/bin/env python3
"""Seeds for fuzz_device (tests/fuzz/fuzz_device.cpp): vhost-user streams a front-end sends to
vvu-device, in that target's chunk format (u8 fds, u16le length, bytes), written to
tests/fuzz/corpus/device/. Run from anywhere; it rewrites the directory."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "device")
VERSION, NEED_REPLY = 0x1, 0x8
EVENTFD, MEMFD = 1, 1 | 4  # one fd: an eventfd / a memfd


def msg(request, payload=b"", flags=VERSION):
    return struct.pack("<III", request, flags, len(payload)) + payload


def chunk(data, fds=0):
    return struct.pack("<BH", fds, len(data)) + data


def u64(v):
    return struct.pack("<Q", v)


UADDR = 0x7F00_0000_0000
REGION = struct.pack("<QQQQ", 0, 0x10000, UADDR, 0)
opening = [
    chunk(msg(1)),                                   # GET_FEATURES
    chunk(msg(15)),                                  # GET_PROTOCOL_FEATURES
    chunk(msg(16, u64(0x8209))),                     # SET_PROTOCOL_FEATURES: MQ REPLY_ACK CONFIG CONFIGURE_MEM_SLOTS
    chunk(msg(3)),                                   # SET_OWNER
    chunk(msg(17)),                                  # GET_QUEUE_NUM
    chunk(msg(2, u64((1 << 32) | (1 << 30)))),       # SET_FEATURES: VERSION_1 PROTOCOL_FEATURES
    chunk(msg(5, struct.pack("<II", 1, 0) + REGION, VERSION | NEED_REPLY), MEMFD),  # SET_MEM_TABLE
    chunk(msg(8, struct.pack("<II", 0, 256))),       # SET_VRING_NUM
    chunk(msg(9, struct.pack("<IIQQQQ", 0, 0, UADDR, UADDR + 0x2000, UADDR + 0x1000, 0))),  # SET_VRING_ADDR
    chunk(msg(10, struct.pack("<II", 0, 0))),        # SET_VRING_BASE
    chunk(msg(13, u64(0)), EVENTFD),                 # SET_VRING_CALL
    chunk(msg(12, u64(0)), EVENTFD),                 # SET_VRING_KICK
    chunk(msg(18, struct.pack("<II", 0, 1))),        # SET_VRING_ENABLE
    chunk(msg(11, struct.pack("<II", 0, 0))),        # GET_VRING_BASE
]
seeds = {
    "get-features": [chunk(msg(1))],
    "opening": opening,
    "memory-slots": [chunk(msg(36)), chunk(msg(37, u64(0) + REGION), MEMFD),
                     chunk(msg(38, u64(0) + REGION))],  # GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG
    "kick-beyond-max-queues": [chunk(msg(12, u64(100)), EVENTFD)],
    "fd-where-none": [chunk(msg(1), EVENTFD)],
    "split-header": [chunk(msg(1)[:5]), chunk(msg(1)[5:])],
    "backend-channel": [chunk(msg(21), EVENTFD)],
}
os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.remove(os.path.join(OUT, f))
for name, chunks in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"".join(chunks))
print(f"{len(seeds)} seeds in {OUT}")
