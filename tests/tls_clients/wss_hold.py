#!/usr/bin/python3
"""A WebSocket over TLS that stays open (run by tests/reload.rs), written on Python's `ssl`
with the frames by hand (RFC 6455), so it needs nothing but the standard library:
    wss_hold.py PORT SERVER_NAME CA_FILE
Connects with SNI SERVER_NAME trusting CA_FILE, upgrades on /ws, sends a text message and
prints `echo TEXT fp SHA256` (the served certificate's fingerprint). Then, for each line
read from stdin, sends that line as a message and prints `echo TEXT`. At end of input sends
a close 1000 and prints `closed CODE`. Prints `FAIL ...` and exits 1 on any error."""
import base64
import hashlib
import os
import socket
import ssl
import struct
import sys


def read_exact(tls, n):
    data = b""
    while len(data) < n:
        chunk = tls.recv(n - len(data))
        if not chunk:
            raise EOFError("closed mid-frame")
        data += chunk
    return data


def send_frame(tls, opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    tls.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_frame(tls):
    b0, b1 = read_exact(tls, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(tls, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(tls, 8))[0]
    return b0 & 0x0F, read_exact(tls, n)


def echo(tls, text):
    send_frame(tls, 0x1, text.encode())
    opcode, payload = read_frame(tls)
    if opcode != 0x1 or payload.decode() != text:
        raise ValueError(f"echo of {text!r}: opcode {opcode} {payload!r}")
    return text


def main(port, name, ca):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        fp = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        key = base64.b64encode(os.urandom(16)).decode()
        tls.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += read_exact(tls, 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ValueError(f"no upgrade: {head!r}")
        print(f"echo {echo(tls, 'first')} fp {fp}", flush=True)
        for line in sys.stdin:
            print(f"echo {echo(tls, line.strip())}", flush=True)
        send_frame(tls, 0x8, struct.pack("!H", 1000))
        opcode, payload = read_frame(tls)
        code = struct.unpack("!H", payload[:2])[0] if opcode == 0x8 and len(payload) >= 2 else None
        print(f"closed {code}", flush=True)


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported in one line
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
