#!/usr/bin/python3
"""Parity of zring's client mode with Debian's zurl 1.11: the same requester
(scripts/zhttp_requester.py) runs the same scenarios against both, each against the same local
origin; the replies are compared field by field after the normalisation below, which is exactly
the list of intended differences (docs/protocols.md, "Client mode", keeps it in words):

  * `from` is each responder's own id; `Date` differs by the clock.
  * zring sends the head alone (`more: true`) and the body after it, as pushpin-connmgr does;
    zurl puts the first body bytes into the head packet. Requesters take both: compared is the
    head's fields plus the concatenated body.
  * A read-to-EOF body: zring ends it with an empty last packet (it learns the end from the
    close); zurl reads to the close before it sends anything. Same body, same end.
  * zring puts `ext.multi` on every packet (pushpin-connmgr); zurl only on its ack.

Usage: zurl-parity.py ZRING_BIN [uring|epoll]   (needs zurl and python3-zmq: scripts/setup.sh)
Exit status 0 when every scenario matches, 1 otherwise (each difference is printed).
"""
import http.server
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zhttp_requester as zr  # noqa: E402

SCENARIOS = ["get", "chunked", "eof", "head", "204", "304", "post", "redirect", "refused",
             "dns", "user-data", "nostream", "max-size", "big"]


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body=b"", extra=()):
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        p = self.path
        if p == "/get":
            self.reply(200, b"hello", [("X-Origin", "yes")])
        elif p.startswith("/redirect/"):
            n = int(p[10:])
            if n == 0:
                self.reply(200, b"landed")
            else:
                self.reply(302, b"", [("Location", "/redirect/%d" % (n - 1))])
        elif p == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        elif p == "/eof":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until close")
            self.close_connection = True
        elif p == "/head":
            self.reply(200, b"0123456789")
        elif p == "/204":
            self.reply(204)
        elif p == "/304":
            self.send_response(304)
            self.send_header("Content-Length", "5")
            self.end_headers()
        elif p.startswith("/big/"):
            n = int(p[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            piece = bytes(i % 251 for i in range(65536))
            left = n
            while left > 0:
                k = min(left, len(piece))
                self.wfile.write(piece[:k])
                left -= k
        else:
            self.reply(404, b"no")

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.reply(200, body, [("X-Method", "POST")])

    def log_message(self, *a):
        pass


def canonical(packets):
    """One exchange's replies with the intended differences taken out."""
    out = {"ack": None, "head": None, "body": b"", "end": None, "user-data": set()}
    for p in packets:
        kind = p.get("type", b"data")
        out["user-data"].add(repr(p.get("user-data")))
        if out["ack"] is None:
            out["ack"] = kind
            if kind == b"keep-alive":
                continue
        if kind in (b"error", b"cancel"):
            out["end"] = (kind, p.get("condition"))
            continue
        if kind == b"TIMEOUT":
            out["end"] = "timeout"
            continue
        if "code" in p:
            headers = [h for h in p.get("headers", []) if h[0].lower() != b"date"]
            out["head"] = (p["code"], p.get("reason"), headers)
        out["body"] += p.get("body", b"")
        if not p.get("more"):
            out["end"] = "complete"
    out["body"] = "<%d bytes crc %08x>" % (len(out["body"]), zr.zlib.crc32(out["body"]))
    return out


def wait_path(path, proc, what):
    end = time.time() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() > end:
            raise SystemExit("%s did not start" % what)
        time.sleep(0.05)


def main():
    zring_bin = sys.argv[1]
    runtime = sys.argv[2] if len(sys.argv) > 2 else "epoll"
    if shutil.which("zurl") is None:
        raise SystemExit("zurl is not installed (scripts/setup.sh test installs it)")
    d = tempfile.mkdtemp(prefix="zurl-parity-")
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = "http://127.0.0.1:%d" % server.server_address[1]
    with open(os.path.join(d, "zurl.conf"), "w") as f:
        f.write("[General]\ninstance_id=zurl-p\nin_spec=ipc://%s/z-in\n"
                "in_stream_spec=ipc://%s/z-in-stream\nout_spec=ipc://%s/z-out\n"
                "defpolicy=allow\nbuffer_size=200000\ntimeout=600\n" % (d, d, d))
    procs = []
    try:
        zurl = subprocess.Popen(["zurl", "--config=%s/zurl.conf" % d],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(zurl)
        zring = subprocess.Popen([zring_bin, "--runtime", runtime, "--zserver-stream",
                                  "ipc://%s/r" % d, "--id", "zring-p", "--workers", "2",
                                  "--log-level", "1"], stdout=subprocess.DEVNULL)
        procs.append(zring)
        wait_path(os.path.join(d, "z-out"), zurl, "zurl")
        wait_path(os.path.join(d, "r-in-stream"), zring, "zring")
        peers = {
            "zurl": zr.Requester("ipc://%s/z-in" % d, "ipc://%s/z-in-stream" % d,
                                 "ipc://%s/z-out" % d),
            "zring": zr.Requester("ipc://%s/r-in" % d, "ipc://%s/r-in-stream" % d,
                                  "ipc://%s/r-out" % d),
        }
        failed = 0
        for name in SCENARIOS:
            got = {k: canonical(zr.scenario(r, name, origin)) for k, r in peers.items()}
            if got["zurl"] == got["zring"]:
                print("same      %s" % name)
                continue
            failed += 1
            print("DIFFERENT %s" % name)
            for field in got["zurl"]:
                if got["zurl"][field] != got["zring"][field]:
                    print("  %s: zurl %r" % (field, got["zurl"][field]))
                    print("  %s: zring %r" % (" " * len(field), got["zring"][field]))
        print("%d of %d scenarios differ" % (failed, len(SCENARIOS)))
        sys.exit(1 if failed else 0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
