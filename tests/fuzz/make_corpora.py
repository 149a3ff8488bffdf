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
