"""Sends N FastCGI requests, one after another on one kept connection, for bench/profile.sh.

Usage: fcgi_client.py SOCKET N NAME=VALUE...  Exits non-zero unless every answer is a 304.
"""
import socket
import struct
import sys


def record(kind, request_id, content=b""):
    return struct.pack(">BBHHBB", 1, kind, request_id, len(content), 0, 0) + content


def pair(name, value):
    def length(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    params = b"".join(pair(*(part.encode() for part in arg.split("=", 1))) for arg in sys.argv[3:])
    one = (record(1, 1, struct.pack(">HB5x", 1, 1)) + record(4, 1, params) + record(4, 1)
           + record(5, 1))
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(path)
    buffer = b""
    for _ in range(count):
        conn.sendall(one)
        stdout = b""
        while True:
            while len(buffer) < 8:
                buffer += conn.recv(65536)
            _, kind, _, length, padding, _ = struct.unpack(">BBHHBB", buffer[:8])
            while len(buffer) < 8 + length + padding:
                buffer += conn.recv(65536)
            content, buffer = buffer[8:8 + length], buffer[8 + length + padding:]
            if kind == 6:
                stdout += content
            if kind == 3:
                break
        if not stdout.startswith(b"Status: 304"):
            sys.exit(f"not a 304: {stdout[:200]!r}")


main()
