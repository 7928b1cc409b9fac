#!/usr/bin/python3
"""A raw WebSocket-over-TLS client that checks how the server ends the connection (run by
tests/tls.rs):
    ws_close_notify.py PORT CA_FILE
Opens wss://localhost:PORT/ws, sends a masked close frame (1000), reads the server's close
frame, then reads to the end: prints `close CODE` and `close_notify` when the TLS session
ended with close_notify, or `FAIL ...` (exit 1) if it ended with a bare TCP close."""
import base64
import os
import socket
import ssl
import struct
import sys

port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
# Python sets OP_IGNORE_UNEXPECTED_EOF, which reads a bare TCP close as a clean end.
ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
tls = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
key = base64.b64encode(os.urandom(16)).decode()
tls.sendall(
    (
        f"GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
)
data = b""
while b"\r\n\r\n" not in data:
    chunk = tls.recv(4096)
    if not chunk:
        print("FAIL closed before the 101")
        sys.exit(1)
    data += chunk
head, _, rest = data.partition(b"\r\n\r\n")
if not head.startswith(b"HTTP/1.1 101"):
    print("FAIL", head.split(b"\r\n")[0].decode())
    sys.exit(1)
mask = os.urandom(4)
payload = struct.pack("!H", 1000)
masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
tls.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + masked)
buf = rest
try:
    while True:
        chunk = tls.recv(4096)
        if not chunk:
            break  # close_notify: a clean TLS end
        buf += chunk
except (ssl.SSLEOFError, ssl.SSLError) as e:
    print("FAIL tcp closed without close_notify:", e)
    sys.exit(1)
if len(buf) < 4 or buf[0] != 0x88:
    print("FAIL no close frame:", buf[:16])
    sys.exit(1)
print("close", struct.unpack("!H", buf[2:4])[0])
print("close_notify")
