#!/usr/bin/env python3
"""Writes the seed corpus of the conn_script fuzz target (fuzz/corpus/conn_script/).

Each seed is a readable action list in the target's byte code (see the table at the top of
fuzz/fuzz_targets/conn_script.rs); rerun after changing that code.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus", "conn_script")

STREAM, REQ, TLS = 0, 1, 2
GET, POST = 0, 1
# Packet kinds and response codes (indexes into the target's tables).
RESPONSE, DATA, CREDIT, CLOSE = 0, 1, 2, 6
CODE_200, CODE_101 = 0x00, 0x10  # or-ed into the kind
MORE, CREDITS = 0x40, 0x80
BINARY = 0x10
SECOND, FIVE_SECONDS, TWO_MINUTES = 4, 6, 11


def u16(n):
    return list(struct.pack("<H", n))


def connect(listener):
    return [0, listener]


def head(c, method, path, flags, length=0):
    return [2, c, method, path, flags] + u16(length)


def body(c, n, fill):
    return [3, c] + u16(n) + [ord(fill)]


def chunk(c, n, fill="c"):
    return [4, c] + u16(n) + [ord(fill)]


def upgrade(c, flags=0):
    return [5, c, flags]


def frame(c, opcode, payload_len, fill="e"):
    assert payload_len < 126
    return [6, c, opcode, payload_len, ord(fill)]


def packet(kind, flags=0, body_len=0, fill="a", credits=0, code=CODE_200):
    return [kind | code, flags] + u16(body_len) + [ord(fill) - ord("a")] + u16(credits)


def reply(n, pkt):
    return [9, n] + pkt


def advance(i):
    return [11, i]


SEEDS = {
    # GET, a one-packet response, a second of idle keep-alive.
    "seed-get-response": connect(STREAM)
    + head(0, GET, 1, 0)
    + reply(0, packet(RESPONSE, 0, 2, "h"))
    + advance(SECOND),
    # POST with Content-Length 3000: the body goes as the handler grants 1000, then 4000.
    "seed-post-credits": connect(STREAM)
    + head(0, POST, 0, 1, 3000)
    + body(0, 3000, "x")
    + reply(0, packet(CREDIT, credits=1000))
    + reply(0, packet(CREDIT, credits=4000))
    + reply(0, packet(RESPONSE, 0, 2, "o"))
    + advance(SECOND),
    # Chunked POST in req mode: the whole body in one packet, answered on the DEALER.
    "seed-req-chunked": connect(REQ)
    + head(0, POST, 0, 2)
    + chunk(0, 100)
    + chunk(0, 0)
    + reply(0, packet(RESPONSE, 0, 5, "r"))
    + advance(SECOND),
    # WebSocket: upgrade, 101 with credits, a text message echoed, the close handshake.
    "seed-ws-echo-close": connect(STREAM)
    + upgrade(0)
    + reply(0, packet(RESPONSE, CREDITS, credits=4096, code=CODE_101))
    + frame(0, 0x1, 5, "e")
    + reply(0, packet(DATA, 0, 5, "e"))
    + frame(0, 0x8, 2)
    + reply(0, packet(CLOSE))
    + advance(FIVE_SECONDS),
    # TLS: a GET over a rustls client, a streamed response, then two minutes.
    "seed-tls-stream": connect(TLS)
    + head(0, GET, 0, 0)
    + reply(0, packet(RESPONSE, MORE, 100, "t"))
    + reply(0, packet(DATA, 0, 10, "u"))
    + advance(TWO_MINUTES),
}

os.makedirs(OUT, exist_ok=True)
for name, actions in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(actions))
