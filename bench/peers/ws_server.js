// Node `ws` broadcast peer for bench/run.py.
//   node ws_server.js PORT
// WebSocket subscribers connect to ws://127.0.0.1:PORT/ws.
// POST /publish with a JSON body broadcasts the body, as one text message, to
// every open client: the broadcast loop from the ws README.
// POST /publish?batch=K sends K copies of the body joined by "\n" in one frame
// (only used to measure the load generator's own ceiling, never for ratios).
// A message received from a client is echoed back to it (request/response), except
// {"join":["room",...]}: the client joins those rooms (a Map<room, Set<ws>>) and gets
// {"joined":N} back.
// POST /publish_rooms with [{"room":R,"data":D},...] sends each D (serialized once) to
// the members of room R.
// A client message {"to":R,"data":D} (many publishers) sends D (serialized once) to the
// members of room R, the sender included.
//   node ws_server.js PORT CERT.pem KEY.pem   serves https/wss instead (TLS connects).
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 8101);
const rooms = new Map(); // room -> Set<ws>

function sendToRoom(room, data) {
  const members = rooms.get(room);
  if (!members) return 0;
  const msg = JSON.stringify(data);
  let n = 0;
  for (const client of members) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(msg);
      n++;
    }
  }
  return n;
}

function handler(req, res) {
  if (req.method === 'POST' && req.url === '/publish_rooms') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let n = 0;
      for (const item of JSON.parse(Buffer.concat(chunks).toString())) n += sendToRoom(item.room, item.data);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"sent":${n}}`);
    });
    return;
  }
  if (req.method === 'POST' && req.url.startsWith('/publish')) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      const m = /[?&]batch=(\d+)/.exec(req.url);
      if (m && Number(m[1]) > 1) {
        body = Buffer.from(Array(Math.min(Number(m[1]), 1000)).fill(body.toString()).join('\n'));
      }
      let n = 0;
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) {
          client.send(body, { binary: false });
          n++;
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"clients":${n}}`);
    });
    return;
  }
  if (req.url === '/health') {
    res.end('ok');
    return;
  }
  res.statusCode = 404;
  res.end();
}

const server = process.argv[4]
  ? https.createServer({ cert: fs.readFileSync(process.argv[3]), key: fs.readFileSync(process.argv[4]) }, handler)
  : http.createServer(handler);

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    // "t" at offset 2: {"to":R,"data":D}; "j": {"join":[...]}; everything else is echoed
    if (!isBinary && data[2] === 0x74 && data.toString().startsWith('{"to":')) {
      const item = JSON.parse(data.toString());
      sendToRoom(item.to, item.data);
      return;
    }
    if (!isBinary && data[2] === 0x6a && data.toString().startsWith('{"join":')) {
      const joined = JSON.parse(data.toString()).join;
      ws.rooms = joined;
      for (const room of joined) {
        let members = rooms.get(room);
        if (!members) rooms.set(room, (members = new Set()));
        members.add(ws);
      }
      ws.send(`{"joined":${joined.length}}`);
      return;
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on('close', () => {
    for (const room of ws.rooms || []) {
      const members = rooms.get(room);
      if (members && members.delete(ws) && members.size === 0) rooms.delete(room);
    }
  });
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', 4096, () => console.log(`ws peer on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
