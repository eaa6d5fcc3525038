// centrifuge-js 5.8 clients for bench/map.py: JSON commands on stdin, JSON results on stdout.
//   {"op": "populate", "url", "token", "channel", "keys": 10000, "bytes": 100}
//   {"op": "snapshot", "url", "token", "channel", "pageSize": 1000, "protobuf": false}
//   {"op": "subscribers", "url", "token", "channel", "n": 1000, "kind": "map" | "stream"}
//   {"op": "blast", "channel", "kind", "count": 200, "inflight": 16}
//   {"op": "drop"}                      disconnect the subscribers
'use strict';

const readline = require('readline');
const WebSocket = require('ws');
const json = require('centrifuge');
const pb = require('centrifuge/build/protobuf');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function client(url, token, protobuf) {
  const Centrifuge = protobuf ? pb.Centrifuge : json.Centrifuge;
  const c = new Centrifuge(url, { websocket: WebSocket, token, timeout: 30000 });
  c.connect();
  return c;
}

let subscribers = { map: [], stream: [] };
let publisher = null;
const deliveries = { map: 0, stream: 0 };
let lastDelivery = 0;

async function populate(cmd) {
  const c = client(cmd.url, cmd.token, false);
  await c.ready(10000);
  const pad = 'x'.repeat(Math.max(0, cmd.bytes - 30));
  const started = Date.now();
  for (let i = 0; i < cmd.keys; i += 500) {
    const batch = [];
    for (let k = i; k < Math.min(cmd.keys, i + 500); k++) {
      batch.push(c.mapPublish(cmd.channel, 'key-' + String(k).padStart(6, '0'), { n: k, pad }));
    }
    await Promise.all(batch);
  }
  c.disconnect();
  emit({ ev: 'populated', keys: cmd.keys, ms: Date.now() - started });
}

function snapshot(cmd) {
  const c = client(cmd.url, cmd.token, cmd.protobuf);
  const sub = c.newMapSubscription(cmd.channel, { mapPageSize: cmd.pageSize });
  const started = process.hrtime.bigint();
  sub.on('sync', (ctx) => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    c.disconnect();
    emit({ ev: 'snapshot', ms, entries: ctx.entries.length });
  });
  sub.on('error', (ctx) => emit({ ev: 'error', message: JSON.stringify(ctx.error) }));
  sub.subscribe();
}

async function makeSubscribers(cmd) {
  const ready = [];
  for (let i = 0; i < cmd.n; i++) {
    const c = client(cmd.url, cmd.token, false);
    const sub = cmd.kind === 'map' ? c.newMapSubscription(cmd.channel) : c.newSubscription(cmd.channel);
    const count = () => { deliveries[cmd.kind]++; lastDelivery = Date.now(); };
    sub.on(cmd.kind === 'map' ? 'update' : 'publication', count);
    ready.push(new Promise((resolve) => sub.on('subscribed', resolve)));
    sub.subscribe();
    subscribers[cmd.kind].push(c);
  }
  await Promise.all(ready);
  if (publisher === null) {
    publisher = client(cmd.url, cmd.token, false);
    await publisher.ready(10000);
  }
  emit({ ev: 'subscribed', n: subscribers[cmd.kind].length });
}

async function blast(cmd) {
  deliveries[cmd.kind] = 0;
  const expected = cmd.count * subscribers[cmd.kind].length;
  const started = Date.now();
  let sent = 0;
  const one = () => {
    const i = sent++;
    const data = { n: i, t: Date.now() };
    return cmd.kind === 'map'
      ? publisher.mapPublish(cmd.channel, 'hot-' + (i % 50), data)
      : publisher.publish(cmd.channel, data);
  };
  const workers = [];
  for (let w = 0; w < cmd.inflight; w++) {
    workers.push((async () => {
      while (sent < cmd.count) {
        await one();
      }
    })());
  }
  await Promise.all(workers);
  const deadline = Date.now() + 60000;
  while (deliveries[cmd.kind] < expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (lastDelivery - started) / 1000;
  emit({ ev: 'blast', deliveries: deliveries[cmd.kind], expected, seconds });
}

function all() {
  return [...subscribers.map, ...subscribers.stream];
}

function drop() {
  for (const c of all()) c.disconnect();
  subscribers = { map: [], stream: [] };
  emit({ ev: 'dropped' });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  const ops = { populate, snapshot, subscribers: makeSubscribers, blast, drop };
  Promise.resolve()
    .then(() => ops[cmd.op](cmd))
    .catch((e) => emit({ ev: 'error', message: String(e && (e.stack || e.message || JSON.stringify(e))) }));
});
rl.on('close', () => {
  for (const c of all()) c.disconnect();
  if (publisher) publisher.disconnect();
  setTimeout(() => process.exit(0), 50);
});
