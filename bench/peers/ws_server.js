// Node `ws` broadcast peer for bench/run.py.
//   node ws_server.js PORT
// WebSocket subscribers connect to ws://127.0.0.1:PORT/ws.
// POST /publish with a JSON body broadcasts the body, as one text message, to
// every open client: the broadcast loop from the ws README.
// POST /publish?batch=K sends K copies of the body joined by "\n" in one frame
// (only used to measure the load generator's own ceiling, never for ratios).
// A message received from a client is echoed back to it (request/response).
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 8101);

const server = http.createServer((req, res) => {
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
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', 4096, () => console.log(`ws peer on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
