#!/usr/bin/python3
"""Opens N keep-alive connections to host:port, sends one request on each and reads the
response, then holds them idle until stdin closes. Prints 'ready <n>' when all are idle.

With --ws each connection is a WebSocket instead: the upgrade request goes to PATH (default
/ws; the example handler accepts it), the 101 is read, and the connection then stays open and
idle (the server's keep-alives are ZHTTP-side only; nothing is sent on the socket).

With --tls each connection is TLS first (server name `localhost`, trusting the CA file named
by ZRING_CA), then HTTP or WebSocket as above.

With --until=TEXT an HTTP connection is ready once TEXT has arrived (a response that does
not end, such as a GRIP stream's first chunk), instead of at the keep-alive body `hello\n`.
Then a response with another status than 200 is an error.

With --batch=B the requests go B at a time, each batch answered before the next is sent
(Pushpin's proxy answers 502 to part of a burst of 1,000 GRIP streams opened at once).

usage: idle_clients.py [--ws] [--tls] [--until=TEXT] [--batch=B] HOST PORT N [PATH]"""
import os, socket, ssl, sys

args = [a for a in sys.argv[1:] if a not in ("--ws", "--tls") and not a.startswith(("--until=", "--batch="))]
batch = next((int(a[len("--batch="):]) for a in sys.argv[1:] if a.startswith("--batch=")), 0)
until = next((a[len("--until="):].encode() for a in sys.argv[1:] if a.startswith("--until=")), None)
ws = "--ws" in sys.argv[1:]
tls = ssl.create_default_context(cafile=os.environ["ZRING_CA"]) if "--tls" in sys.argv[1:] else None
host, port, n = args[0], int(args[1]), int(args[2])
path = args[3] if len(args) > 3 else ("/ws" if ws else "/hello")
if ws:
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    done = lambda got: b"\r\n\r\n" in got  # noqa: E731
else:
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = lambda got: got.endswith(b"hello\n")  # noqa: E731 - keep-alive body is 'hello\n'
if until is not None:
    done = lambda got: until in got  # noqa: E731
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    if tls:
        s = tls.wrap_socket(s, server_hostname="localhost")
    socks.append(s)
# Send in bulk (or a batch at a time), then read each answer.
batch = batch or max(n, 1)
for first in range(0, n, batch):
    group = socks[first:first + batch]
    for s in group:
        s.sendall(req)
    for s in group:
        s.settimeout(120)
        got = b""
        while not done(got):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"connection closed early: {got!r}")
            got += chunk
            if until is not None and b"\r\n" in got and not got.startswith(b"HTTP/1.1 200 "):
                sys.exit(f"refused: {got[:200]!r}")
        if ws and not got.startswith(b"HTTP/1.1 101 "):
            sys.exit(f"WebSocket refused: {got[:200]!r}")
print(f"ready {len(socks)}", flush=True)
sys.stdin.read()
