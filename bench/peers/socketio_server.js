// Socket.IO (Node) peer for bench/run.py.
//   node socketio_server.js PORT
// Clients connect with the WebSocket transport only
// (ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket).
// POST /publish with a JSON body does io.emit("m", body): one broadcast to every
// client of the default namespace (Socket.IO encodes the packet once).
// A client event "pub" with an ack callback is acknowledged with {} (request/response).
// A client event "join" with a list of rooms does socket.join(rooms) and acks {}.
// POST /publish_rooms with [{"room":R,"data":D},...] does io.to(R).emit("m", D) per item.
// A client event "say" with (room, data) does io.to(room).emit("m", data) (many publishers).
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 8102);

const httpServer = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish_rooms') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      for (const item of JSON.parse(Buffer.concat(chunks).toString())) io.to(item.room).emit('m', item.data);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    return;
  }
  if (req.method === 'POST' && req.url.startsWith('/publish')) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      io.emit('m', JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"clients":${io.engine.clientsCount}}`);
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

const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});
io.on('connection', (socket) => {
  socket.on('pub', (data, ack) => {
    if (typeof ack === 'function') ack({});
  });
  socket.on('say', (room, data) => {
    io.to(room).emit('m', data);
  });
  socket.on('join', (rooms, ack) => {
    socket.join(rooms);
    if (typeof ack === 'function') ack({});
  });
});

httpServer.listen(port, '127.0.0.1', 4096, () => console.log(`socket.io peer on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
