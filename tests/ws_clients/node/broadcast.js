// Broadcast check with node's `ws` library (tests/ws_compression.rs runs it):
//   node broadcast.js URL CLIENTS TEXT...
// Opens CLIENTS connections to URL (the example handler's /ws/broadcast) with the library's
// default permessage-deflate offer, prints each connection's `extension <response value>`,
// then has the first send `broadcast <TEXT>` for each TEXT: every client must receive every
// TEXT, in order, inflated by the library. Prints `ok N TEXT-LENGTH` per message received
// and `done` at the end; exits 1 at the first mismatch or error.
'use strict';
const WebSocket = require('ws');

const [url, count, ...texts] = process.argv.slice(2);

function fail(msg) {
  console.log(`FAIL ${msg}`);
  process.exit(1);
}

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: true, handshakeTimeout: 10000 });
    const inbox = [];
    let waiting = null;
    ws.on('upgrade', (res) => {
      console.log(`extension ${res.headers['sec-websocket-extensions'] || ''}`);
    });
    ws.on('message', (data, isBinary) => {
      const m = { text: data.toString('utf8'), isBinary };
      if (waiting) {
        const w = waiting;
        waiting = null;
        w(m);
      } else {
        inbox.push(m);
      }
    });
    ws.on('error', (e) => reject(e));
    ws.on('open', () => resolve({
      ws,
      next: () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((res, rej) => {
        const t = setTimeout(() => rej(new Error('no message within 30 s')), 30000);
        waiting = (m) => { clearTimeout(t); res(m); };
      })),
    }));
  });
}

(async () => {
  try {
    const conns = [];
    for (let i = 0; i < Number(count); i++) conns.push(await open());
    for (const text of texts) {
      conns[0].ws.send(`broadcast ${text}`);
      for (let i = 0; i < conns.length; i++) {
        const m = await conns[i].next();
        if (m.isBinary || m.text !== text) fail(`client ${i}: got ${m.text.length} chars, not the ${text.length} sent`);
        console.log(`ok ${i} ${m.text.length}`);
      }
    }
    for (const c of conns) c.ws.close(1000, 'done');
    console.log('done');
    process.exit(0);
  } catch (e) {
    fail(e.message);
  }
})();
