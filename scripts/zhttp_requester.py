#!/usr/bin/python3
"""A ZHTTP requester (the role pushpin-proxy plays toward a client-mode connection manager),
for zring's client mode and, for parity, zurl 1.11. python3-zmq with /usr/bin/python3.

Usage: zhttp_requester.py IN IN_STREAM OUT SCENARIO [ORIGIN_URL] [--credit-step N]

Connects PUSH to IN, ROUTER (identity "req-py") to IN_STREAM and SUB to OUT, runs one named
scenario and prints every reply packet for it as one JSON line (bytes as latin-1 strings,
bodies over 64 bytes replaced by their length and a checksum), so two responders' replies
can be compared line by line (scripts/zurl-parity.py).
"""
import json
import sys
import time
import zlib

import zmq

FROM = b"req-py"


def tn_dump(v):
    if isinstance(v, bool):
        p = b"true" if v else b"false"
        return b"%d:%s!" % (len(p), p)
    if isinstance(v, int):
        p = str(v).encode()
        return b"%d:%s#" % (len(p), p)
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s," % (len(v), v)
    if isinstance(v, list):
        p = b"".join(tn_dump(x) for x in v)
        return b"%d:%s]" % (len(p), p)
    if isinstance(v, dict):
        p = b"".join(tn_dump(k) + tn_dump(x) for k, x in v.items())
        return b"%d:%s}" % (len(p), p)
    if v is None:
        return b"0:~"
    raise TypeError(v)


def tn_load(b, i=0):
    colon = b.index(b":", i)
    n = int(b[i:colon])
    start = colon + 1
    payload = b[start:start + n]
    tag = b[start + n:start + n + 1]
    end = start + n + 1
    if tag == b",":
        return payload, end
    if tag == b"#":
        return int(payload), end
    if tag == b"!":
        return payload == b"true", end
    if tag == b"~":
        return None, end
    if tag == b"]":
        out, j = [], 0
        while j < len(payload):
            v, j = tn_load(payload, j)
            out.append(v)
        return out, end
    if tag == b"}":
        out, j = {}, 0
        while j < len(payload):
            k, j = tn_load(payload, j)
            v, j = tn_load(payload, j)
            out[k.decode()] = v
        return out, end
    raise ValueError(tag)


def printable(v):
    if isinstance(v, bytes):
        if len(v) > 64:
            return "<%d bytes crc32 %08x>" % (len(v), zlib.crc32(v))
        return v.decode("latin-1")
    if isinstance(v, list):
        return [printable(x) for x in v]
    if isinstance(v, dict):
        return {k: printable(x) for k, x in v.items()}
    return v


class Requester:
    def __init__(self, in_spec, in_stream_spec, out_spec):
        ctx = zmq.Context.instance()
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(in_spec)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, FROM)
        self.router.connect(in_stream_spec)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, FROM + b" ")
        self.sub.connect(out_spec)
        self.responder = None
        time.sleep(0.5)

    def start(self, rid, fields):
        d = {"from": FROM, "id": rid, "seq": 0}
        d.update(fields)
        self.push.send(b"T" + tn_dump(d))

    def send(self, rid, seq, fields):
        d = {"from": FROM, "id": rid, "seq": seq}
        d.update(fields)
        self.router.send_multipart([self.responder, b"", b"T" + tn_dump(d)])

    def recv(self, timeout_ms):
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self.sub in ready:
            m = self.sub.recv()
            payload = m[m.index(b" ") + 1:]
        elif self.router in ready:
            payload = self.router.recv_multipart()[-1]
        else:
            return None
        v, _ = tn_load(payload, 1)
        if v.get("from"):
            self.responder = v["from"]
        return v

    def collect(self, rid, credit_step=0, timeout=20.0):
        out, seq = [], 1
        end = time.time() + timeout
        while time.time() < end:
            p = self.recv(200)
            if p is None or p.get("id") != rid.encode():
                continue
            out.append(p)
            kind = p.get("type", b"data")
            if kind in (b"error", b"cancel"):
                break
            if kind == b"data" and not p.get("more"):
                break
            if kind == b"data" and credit_step and p.get("body"):
                self.send(rid, seq, {"type": "credit", "credits": len(p["body"])})
                seq += 1
        else:
            out.append({"type": b"TIMEOUT"})
        return out


def scenario(r, name, origin):
    base = {"credits": 200000, "ext": {"multi": True}}
    get = dict(base, method="GET", headers=[["User-Agent", "parity"]])
    cases = {
        "get": dict(get, uri=origin + "/get"),
        "chunked": dict(get, uri=origin + "/chunked"),
        "eof": dict(get, uri=origin + "/eof"),
        "head": dict(get, method="HEAD", uri=origin + "/head"),
        "204": dict(get, uri=origin + "/204"),
        "304": dict(get, uri=origin + "/304"),
        "post": dict(base, method="POST", uri=origin + "/echo", body="a=1&b=2"),
        "redirect": dict(get, uri=origin + "/redirect/2", **{"follow-redirects": True}),
        "refused": dict(get, uri="http://127.0.0.1:9/"),
        "dns": dict(get, uri="http://nonexistent.invalid/"),
        "user-data": dict(get, uri=origin + "/get", **{"user-data": {"k": "v"}}),
        "nostream": dict(get, uri=origin + "/get", stream=False),
        "max-size": dict(get, uri=origin + "/get", **{"max-size": 3}),
        "big": dict(base, method="GET", uri=origin + "/big/10485760", credits=65536),
    }
    rid = "r-" + name
    r.start(rid, cases[name])
    return r.collect(rid, credit_step=1 if name == "big" else 0, timeout=60)


def main():
    a = sys.argv[1:]
    in_spec, in_stream, out_spec, name = a[:4]
    origin = a[4] if len(a) > 4 else ""
    r = Requester(in_spec, in_stream, out_spec)
    for p in scenario(r, name, origin):
        if name == "big" and p.get("type", b"data") == b"data" and "code" not in p:
            continue  # the bodies of a big response: summarised below
        print(json.dumps(printable(p), sort_keys=True))
    if name == "big":
        print(json.dumps({"summary": "big done"}))


if __name__ == "__main__":
    main()
