#!/usr/bin/env python3
# Demonstrates depends_on: a PNG label drawn from label.txt; editing that file changes the ETag.
import os, struct, sys, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE, MARGIN = 4, 2  # screen pixels per font dot; blank dots around the text

# 5x7 font: 7 rows per glyph (hex bytes), 5 bits per row, leftmost dot = 0x10.
_GLYPHS = iter("""
A 0e1111111f1111  B 1e11111e11111e  C 0e11101010110e  D 1c12111111121c
E 1f10101e10101f  F 1f10101e101010  G 0e11101711110f  H 1111111f111111
I 0e04040404040e  J 0702020202120c  K 11121418141211  L 1010101010101f
M 111b1515111111  N 11111915131111  O 0e11111111110e  P 1e11111e101010
Q 0e11111115120d  R 1e11111e141211  S 0f10100e01011e  T 1f040404040404
U 1111111111110e  V 11111111110a04  W 1111111515150a  X 11110a040a1111
Y 1111110a040404  Z 1f01020408101f  0 0e11131519110e  1 040c040404040e
2 0e11010204081f  3 1f02040201110e  4 02060a121f0202  5 1f101e0101110e
6 0608101e11110e  7 1f010204080808  8 0e11110e11110e  9 0e11110f01020c
""".split())
FONT = {c: bytes.fromhex(rows) for c, rows in zip(_GLYPHS, _GLYPHS)}
FONT[" "] = bytes(7)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(text):
    dots_w = MARGIN * 2 + max(len(text) * 6 - 1, 1)  # 5 dots per glyph + 1 between glyphs
    dots_h = MARGIN * 2 + 7
    raw = bytearray()
    for y in range(dots_h * SCALE):
        dy = y // SCALE - MARGIN
        row = bytearray(b"\xff" * dots_w)  # white background, 8-bit grayscale
        if 0 <= dy < 7:
            for i, c in enumerate(text):
                bits = FONT.get(c, FONT[" "])[dy]
                for dx in range(5):
                    if bits & (0x10 >> dx):
                        row[MARGIN + i * 6 + dx] = 0x00  # black dot
        raw += b"\x00" + bytes(p for p in row for _ in range(SCALE))  # filter 0, scaled row
    ihdr = struct.pack(">IIBBBBB", dots_w * SCALE, dots_h * SCALE, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


with open(os.path.join(HERE, "label.txt"), encoding="utf-8") as f:
    body = png(f.read().strip().upper()[:40])
sys.stdout.buffer.write(b"Content-Type: image/png\n\n" + body)
