#!/usr/bin/python3
"""The origin and the clients of scripts/pushpin-latest.sh (Debian's python3-websockets, run
with /usr/bin/python3).

  pushpin_latest_peers.py origin HTTP_PORT WS_PORT
      HTTP origin on 127.0.0.1:HTTP_PORT:
        /plain    200, a fixed body (Content-Length)
        /stream   200, chunked, STREAM_PARTS parts; part n+1 is written only after a client
                  asked /release, so a client that sees part n before it releases has proof
                  that the response streams (nothing timed)
        /release  lets the open /stream write its next part
      WebSocket echo origin on 127.0.0.1:WS_PORT (every message sent back as it came).
  pushpin_latest_peers.py check proxy|stream|ws PUSHPIN_PORT ORIGIN_PORT
      One check through Pushpin; prints one line (what was seen) and exits 0 on success.
"""
import asyncio
import http.server
import socket
import socketserver
import sys
import threading

PLAIN_BODY = b"hello from origin\n"
STREAM_PARTS = 3
RELEASE_WAIT_SECS = 20  # an origin stream gives up if no client releases the next part


def part(n):
    return b"part %d of %d\n" % (n, STREAM_PARTS)


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release = threading.Semaphore(0)

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/plain":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(PLAIN_BODY)))
            self.end_headers()
            self.wfile.write(PLAIN_BODY)
        elif self.path == "/release":
            Origin.release.release()
            self.send_response(204)
            self.end_headers()
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(1, STREAM_PARTS + 1):
                if n > 1 and not Origin.release.acquire(timeout=RELEASE_WAIT_SECS):
                    return  # no client asked for more: cut the response
                p = part(n)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def origin(http_port, ws_port):
    import websockets

    srv = Server(("127.0.0.1", http_port), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    async def echo(ws, _path=None):
        async for m in ws:
            await ws.send(m)

    async def main():
        async with websockets.serve(echo, "127.0.0.1", ws_port):
            await asyncio.Future()

    asyncio.run(main())


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise RuntimeError("closed before the response head: %r" % buf[:200])
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def check_proxy(port, _origin):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        head, body = read_head(s)
        while True:
            d = s.recv(4096)
            if not d:
                break
            body += d
    status = head.split("\r\n")[0]
    print("status=%r body=%r" % (status, body))
    return status.startswith("HTTP/1.1 200 ") and body == PLAIN_BODY


def check_stream(port, origin_port):
    """Each part must arrive before the origin is allowed to write the next one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        head, data = read_head(s)
        chunked = "transfer-encoding: chunked" in head.lower()
        seen = []
        for n in range(1, STREAM_PARTS + 1):
            while part(n) not in data:
                d = s.recv(4096)
                if not d:
                    print("head=%r seen=%r: closed before part %d" % (head.split("\r\n")[0], seen, n))
                    return False
                data += d
            seen.append(n)
            if n < STREAM_PARTS:
                with socket.create_connection(("127.0.0.1", origin_port), timeout=5) as r:
                    r.sendall(b"GET /release HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
                    read_head(r)
        while not data.endswith(b"0\r\n\r\n"):
            d = s.recv(4096)
            if not d:
                break
            data += d
    status = head.split("\r\n")[0]
    ended = data.endswith(b"0\r\n\r\n")
    print("status=%r chunked=%s parts_seen_one_by_one=%r last_chunk=%s" % (status, chunked, seen, ended))
    return status.startswith("HTTP/1.1 200 ") and chunked and seen == list(range(1, STREAM_PARTS + 1)) and ended


def check_ws(port, _origin):
    import websockets

    async def run():
        async with websockets.connect("ws://127.0.0.1:%d/ws/echo" % port, open_timeout=10) as ws:
            got = []
            for m in ["hello", b"\x00\x01binary", "x" * 70000]:
                await ws.send(m)
                got.append(await asyncio.wait_for(ws.recv(), 10) == m)
            return got

    try:
        got = asyncio.run(run())
    except Exception as e:  # a refused upgrade, a timeout: what was seen is the result
        print("error=%r" % e)
        return False
    print("echoed(text, binary, 70 kB)=%r" % got)
    return all(got)


def main():
    a = sys.argv[1:]
    if a[:1] == ["origin"]:
        origin(int(a[1]), int(a[2]))
        return
    if a[:1] == ["check"]:
        fn = {"proxy": check_proxy, "stream": check_stream, "ws": check_ws}[a[1]]
        try:
            ok = fn(int(a[2]), int(a[3]))
        except Exception as e:
            print("error=%r" % e)
            ok = False
        sys.exit(0 if ok else 1)
    print(__doc__, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
