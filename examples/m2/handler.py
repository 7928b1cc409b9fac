#!/usr/bin/python3
"""A Mongrel2 handler in the style of Mongrel2's own docs (examples/python/mongrel2/handler.py):
PULL requests from send_spec, PUB replies to recv_spec. It knows nothing of zring; the same
script runs against mongrel2 1.12.2.

  /usr/bin/python3 handler.py SEND_SPEC RECV_SPEC [SECONDS]

Routes (by PATH): /hold* is held until /fanout answers every held id with one message;
/close gets a reply then the empty close message; /ws* echoes WebSocket frames; anything
else gets reply_http with the request echoed. Disconnect notices are counted.
"""
import json, sys, time, zmq

def parse_netstring(ns):
    length, rest = ns.split(b':', 1)
    length = int(length)
    return rest[:length], rest[length + 1:]

def parse(msg):
    sender, conn_id, path, rest = msg.split(b' ', 3)
    headers, rest = parse_netstring(rest)
    body, _ = parse_netstring(rest)
    if headers.startswith(b'{'):
        headers = json.loads(headers)
    else:
        headers = tnet_dict(headers)
    return sender, conn_id, path, headers, body

def tnet_dict(data):
    out = {}
    while data:
        k, data = tnet(data)
        v, data = tnet(data)
        out[k.decode() if isinstance(k, bytes) else k] = v
    return out

def tnet(data):
    length, rest = data.split(b':', 1)
    n = int(length)
    payload, tag, rest = rest[:n], rest[n:n + 1], rest[n + 1:]
    if tag == b',':
        return payload.decode(), rest
    if tag == b']':
        items = []
        while payload:
            v, payload = tnet(payload)
            items.append(v)
        return items, rest
    if tag == b'}':
        return tnet_dict(payload), rest
    return payload, rest

def send(pub, uuid, ids, body):
    ids = b' '.join(str(i).encode() for i in ids)
    pub.send(uuid + b' ' + str(len(ids)).encode() + b':' + ids + b', ' + body)

def http_response(body, code=200, status='OK'):
    return ('HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n' % (code, status, len(body))).encode() + body

def ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, 'big')
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, 'big')
    return head + payload

def main():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(sys.argv[1])
    pub = ctx.socket(zmq.PUB)
    pub.connect(sys.argv[2])
    until = time.time() + float(sys.argv[3] if len(sys.argv) > 3 else 600)
    held = []
    while time.time() < until:
        if not pull.poll(200):
            continue
        sender, conn_id, path, headers, body = parse(pull.recv())
        method = headers.get('METHOD')
        if method == 'JSON':
            continue  # disconnect notice
        if method == 'WEBSOCKET_HANDSHAKE':
            send(pub, sender, [conn_id.decode()], (
                'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                'Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' % body.decode()).encode())
            continue
        if method == 'WEBSOCKET':
            op = int(headers['FLAGS'], 16) & 0xf
            if op == 0x9:
                send(pub, sender, [conn_id.decode()], ws_frame(0xA, body))
            elif op == 0x8:
                send(pub, sender, [conn_id.decode()], ws_frame(0x8, body))
                send(pub, sender, [conn_id.decode()], b'')
            elif op in (0x1, 0x2):
                send(pub, sender, [conn_id.decode()], ws_frame(op, b'echo:' + body))
            continue
        if path.startswith(b'/json/hold') or path.startswith(b'/hold'):
            held.append(conn_id.decode())
            continue
        if path.endswith(b'/fanout'):
            for i in range(0, len(held), 128):
                send(pub, sender, held[i:i + 128], http_response(b'fanout\n'))
            send(pub, sender, [conn_id.decode()], http_response(str(len(held)).encode()))
            held = []
            continue
        reply = http_response(b'%s %s %s\n' % (method.encode(), path, body))
        send(pub, sender, [conn_id.decode()], reply)
        if path.endswith(b'/close') or headers.get('connection', '').lower() == 'close' \
                or headers.get('VERSION') == 'HTTP/1.0':
            send(pub, sender, [conn_id.decode()], b'')

main()
