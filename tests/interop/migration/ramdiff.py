#!/usr/bin/env python3
"""Compares two guest RAM images page by page (4 KiB), e.g. a migration's source and
destination taken with QMP pmemsave while both are stopped: they must be equal.

  ramdiff.py SOURCE DESTINATION [--show N]

Prints "ramdiff: pages=P differ=D" and, for the first N (default 20) differing pages, their
guest-physical address, how many bytes differ, the first differing offset, and 16 bytes of each
side from there. Exit 0 when the images are equal, 1 when pages differ, 2 on bad input.
"""
import sys

PAGE = 4096


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    show = int(argv[4]) if len(argv) > 4 and argv[3] == "--show" else 20
    with open(argv[1], "rb") as f:
        a = f.read()
    with open(argv[2], "rb") as f:
        b = f.read()
    if len(a) != len(b) or len(a) % PAGE:
        print(f"ramdiff: sizes differ or are not whole pages: {len(a)} and {len(b)}", file=sys.stderr)
        return 2
    pages = len(a) // PAGE
    differ = []
    # Whole-image equality first (fast), then page by page only where needed.
    if a != b:
        step = 256 * PAGE
        for base in range(0, len(a), step):
            if a[base:base + step] == b[base:base + step]:
                continue
            for off in range(base, min(base + step, len(a)), PAGE):
                if a[off:off + PAGE] != b[off:off + PAGE]:
                    differ.append(off)
    print(f"ramdiff: pages={pages} differ={len(differ)}")
    for off in differ[:show]:
        pa, pb = a[off:off + PAGE], b[off:off + PAGE]
        diffs = [i for i in range(PAGE) if pa[i] != pb[i]]
        i = diffs[0]
        zero_b = "destination page all zero" if not any(pb) else ""
        print(f"ramdiff: gpa=0x{off:x} bytes={len(diffs)} first=0x{i:x} "
              f"src={pa[i:i + 16].hex()} dst={pb[i:i + 16].hex()} {zero_b}".rstrip())
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
