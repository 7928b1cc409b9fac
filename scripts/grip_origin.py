#!/usr/bin/python3
"""The origin behind Pushpin for scripts/pushpin-m2-compare.sh: answers `/hello` with a
plain 200 (`hello\\n`, keep-alive) and `/stream` with a GRIP stream hold on channel `test`
(initial body `stream open\\n`). One asyncio loop, no framework: it must not be what limits
the requests/s of the stack in front of it. Prints `ready` once listening.

usage: grip_origin.py PORT"""
import asyncio
import sys

HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
STREAM_BODY = b"stream open\n"
STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\n"
          b"Grip-Channel: test\r\nContent-Length: %d\r\n\r\n" % len(STREAM_BODY)) + STREAM_BODY
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class Origin(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            # Requests through Pushpin here have no body (GET); a Content-Length is skipped.
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.buf = self.buf[int(value):]
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if path == b"/hello":
                self.transport.write(HELLO)
            elif path == b"/stream":
                self.transport.write(STREAM)
            else:
                self.transport.write(NOT_FOUND)


async def main(port):
    server = await asyncio.get_running_loop().create_server(Origin, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
