#!/usr/bin/python3
"""Echo check with Python's `websockets` library (Debian python3-websockets 10.4; run by
tests/ws_interop.rs):
    echo.py URL SIZE...
For each size, a text then a binary message of that many bytes goes out and must come back
identical and of the same type. Prints `ok text N` / `ok binary N` per message and
`closed CODE` at the end; exits 1 at the first mismatch or error.
For a wss:// URL, ZRING_CA names the CA file to trust (Python `ssl`, hostname checked)."""
import asyncio
import os
import ssl
import sys

import websockets


def text_of(n):
    # Exactly n bytes of UTF-8: "abcdefgh€" (11 bytes) repeated, padded with 'x'.
    return "abcdefgh\u20ac" * (n // 11) + "x" * (n % 11)


def bin_of(n):
    return bytes((i * 7 + i // 256) & 0xFF for i in range(n))


async def main(url, sizes):
    tls = None
    if url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=os.environ["ZRING_CA"])
    async with websockets.connect(url, ssl=tls, max_size=None, max_queue=None, ping_interval=None,
                                  open_timeout=10, close_timeout=10) as ws:
        # Negotiated extensions, for the test's check when zring runs with --compression.
        print(f"extensions {' '.join(e.name for e in ws.extensions)}", file=sys.stderr, flush=True)
        for n in sizes:
            for binary in (False, True):
                sent = bin_of(n) if binary else text_of(n)
                await ws.send(sent)
                got = await asyncio.wait_for(ws.recv(), 60)
                kind = "binary" if binary else "text"
                if type(got) is not type(sent):
                    print(f"FAIL {kind} {n}: came back as {type(got).__name__}")
                    sys.exit(1)
                if got != sent:
                    print(f"FAIL {kind} {n}: {len(got)} bytes/chars differ")
                    sys.exit(1)
                print(f"ok {kind} {n}", flush=True)
        await ws.close(1000, "done")
        print(f"closed {ws.close_code}")


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], [int(s) for s in sys.argv[2:]]))
    except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported in one line
        print(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)
