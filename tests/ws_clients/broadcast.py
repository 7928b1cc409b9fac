#!/usr/bin/python3
"""Broadcast check with Python's `websockets` library (Debian python3-websockets 10.4; run by
tests/ws_compression.rs):
    broadcast.py URL CLIENTS TEXT...
Opens CLIENTS connections to URL (the example handler's /ws/broadcast) with the library's
default permessage-deflate offer, prints each connection's `extension <response value>`,
then has the first send `broadcast <TEXT>` for each TEXT: every client must receive every
TEXT, in order, inflated by the library. Prints `ok N TEXT-LENGTH` per message received
and `done` at the end; exits 1 at the first mismatch or error."""
import asyncio
import sys

import websockets


async def main(url, clients, texts):
    conns = []
    for _ in range(clients):
        ws = await websockets.connect(url, max_size=None, ping_interval=None,
                                      open_timeout=10, close_timeout=10)
        conns.append(ws)
        print(f"extension {ws.response_headers.get('Sec-WebSocket-Extensions', '')}", flush=True)
    for text in texts:
        await conns[0].send(f"broadcast {text}")
        for i, ws in enumerate(conns):
            got = await asyncio.wait_for(ws.recv(), 30)
            if got != text:
                print(f"FAIL client {i}: got {len(got)} chars, not the {len(text)} sent")
                sys.exit(1)
            print(f"ok {i} {len(got)}", flush=True)
    for ws in conns:
        await ws.close(1000, "done")
    print("done")


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
    except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported in one line
        print(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)
