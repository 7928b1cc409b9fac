// Echo check with node's `ws` library (tests/ws_interop.rs runs it):
//   node echo.js URL SIZE...
// For each size, a text then a binary message of that many bytes goes out and must come
// back identical and of the same type. Prints `ok text N` / `ok binary N` per message and
// `closed CODE` at the end; exits 1 at the first mismatch or error.
'use strict';
const WebSocket = require('ws');

const [url, ...sizes] = process.argv.slice(2);

// Exactly n bytes of UTF-8: "abcdefgh€" (11 bytes) repeated, padded with 'x'.
function textOf(n) {
  return 'abcdefgh\u20ac'.repeat(Math.floor(n / 11)) + 'x'.repeat(n % 11);
}

function binOf(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + Math.floor(i / 256)) & 0xff;
  return b;
}

function fail(msg) {
  console.log(`FAIL ${msg}`);
  process.exit(1);
}

const ws = new WebSocket(url, { maxPayload: 64 << 20, handshakeTimeout: 10000 });
const queue = [];
let waiting = null;
ws.on('message', (data, isBinary) => {
  if (waiting) {
    const w = waiting;
    waiting = null;
    w({ data, isBinary });
  } else {
    queue.push({ data, isBinary });
  }
});
ws.on('error', (e) => fail(`error ${e.message}`));

function next() {
  if (queue.length) return Promise.resolve(queue.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no echo within 60 s')), 60000);
    waiting = (m) => {
      clearTimeout(t);
      resolve(m);
    };
  });
}

ws.on('open', async () => {
  console.error(`extensions ${ws.extensions}`);
  try {
    for (const s of sizes) {
      const n = Number(s);
      for (const binary of [false, true]) {
        const sent = binary ? binOf(n) : textOf(n);
        ws.send(sent, { binary });
        const got = await next();
        const want = binary ? sent : Buffer.from(sent, 'utf8');
        if (got.isBinary !== binary) fail(`${binary ? 'binary' : 'text'} ${n}: came back as the other type`);
        if (!Buffer.from(got.data).equals(want)) fail(`${binary ? 'binary' : 'text'} ${n}: ${got.data.length} bytes differ`);
        console.log(`ok ${binary ? 'binary' : 'text'} ${n}`);
      }
    }
    ws.on('close', (code) => {
      console.log(`closed ${code}`);
      process.exit(0);
    });
    ws.close(1000, 'done');
  } catch (e) {
    fail(e.message);
  }
});
