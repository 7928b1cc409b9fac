#!/usr/bin/python3
"""Opens N keep-alive connections to host:port, sends one request on each and reads the
response, then holds them idle until stdin closes. Prints 'ready <n>' when all are idle."""
import socket, sys, selectors

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = sys.argv[4] if len(sys.argv) > 4 else "/hello"
req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    socks.append(s)
# Send in bulk, then read each answer (a keep-alive response ends with the body 'hello\n').
for s in socks:
    s.sendall(req)
for s in socks:
    s.settimeout(120)
    got = b""
    while not got.endswith(b"hello\n"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection closed early: {got!r}")
        got += chunk
print(f"ready {len(socks)}", flush=True)
sys.stdin.read()
