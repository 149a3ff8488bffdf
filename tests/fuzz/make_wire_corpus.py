#!/usr/bin/env python3
"""Writes the wire fuzzer's seed corpus from the captured sessions in tests/captures/.

Each seed is one control byte (fd count | channel << 4, see fuzz_wire.cpp) followed by one
captured message. Run from the repository root: python3 tests/fuzz/make_wire_corpus.py
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
