#!/usr/bin/python3
"""A TLS keep-alive client that stays connected (run by tests/tls.rs):
    hold.py PORT SERVER_NAME CA_FILE
Connects with SNI SERVER_NAME, trusting CA_FILE, sends GET /hello and prints
`status LINE fp SHA256` (the served certificate's fingerprint). Then, for each line read from
stdin, sends another GET /hello on the same connection and prints `status LINE`. Exits at
end of input; prints `FAIL ...` and exits 1 on any error."""
import hashlib
import socket
import ssl
import sys


def request(tls, host):
    tls.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            raise EOFError("closed before a response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            raise EOFError("closed mid-body")
        body += chunk
    return head.split(b"\r\n")[0].decode()


def main(port, name, ca):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        fp = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        print(f"status {request(tls, name)} fp {fp}", flush=True)
        for _ in sys.stdin:
            print(f"status {request(tls, name)}", flush=True)


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported in one line
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
