// Drives centrifuge-js 5.8 map subscriptions for tests/map/test_map_js.py: one JSON command per
// stdin line, one JSON event per stdout line. Commands:
//   {"op": "connect", "id": "a", "url": "...", "token": "...", "protobuf": false}
//   {"op": "map", "id": "a", "channel": "m:1", "pageSize": 0}     newMapSubscription
//   {"op": "publish", "id": "a", "channel": "m:1", "key": "k", "data": {...}, "req": 7}
//   {"op": "remove", "id": "a", "channel": "m:1", "key": "k", "req": 8}
//   {"op": "unsubscribe", "id": "a", "channel": "..."}
//   {"op": "disconnect", "id": "a"}
// Events: connected {id, client}, disconnected {id, code}, subscribing {id, channel, code},
// subscribed {id, channel, recovered}, sync {id, channel, entries}, update {id, channel, key,
// removed, data, offset}, error {id, channel?, code, message}, reply {id, req, ok, code}.
'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const pb = require('centrifuge/build/protobuf');

const { emit, leave, serve, unknown } = require('../js_lines');

const clients = new Map();

function decode(data, protobuf) {
  if (data === undefined || data === null) return null;
  if (protobuf) return data.length ? JSON.parse(Buffer.from(data).toString("utf8")) : null;
  return data;
}

function encode(data, protobuf) {
  return protobuf ? new TextEncoder().encode(JSON.stringify(data)) : data;
}

function entryOf(e, protobuf) {
  const out = { key: e.key, data: decode(e.data, protobuf) };
  if (e.removed) out.removed = true;
  if (e.offset !== undefined) out.offset = e.offset;
  return out;
}

function handle(cmd) {
  const c = clients.get(cmd.id);
  switch (cmd.op) {
    case 'connect': {
      const Centrifuge = cmd.protobuf ? pb.Centrifuge : json.Centrifuge;
      const client = new Centrifuge(cmd.url, {
        websocket: WebSocket,
        token: cmd.token,
        minReconnectDelay: 50,
        maxReconnectDelay: 300,
      });
      client._tlProtobuf = !!cmd.protobuf;
      client.on('connected', (ctx) => emit({ ev: 'connected', id: cmd.id, client: ctx.client }));
      client.on('disconnected', (ctx) => emit({ ev: 'disconnected', id: cmd.id, code: ctx.code }));
      client.on('connecting', (ctx) => emit({ ev: 'connecting', id: cmd.id, code: ctx.code }));
      client.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, code: ctx.error && ctx.error.code, message: String(ctx.error && ctx.error.message) }));
      clients.set(cmd.id, client);
      client.connect();
      break;
    }
    case 'map': {
      const protobuf = c._tlProtobuf;
      const opts = {};
      if (cmd.pageSize) opts.mapPageSize = cmd.pageSize;
      const sub = c.newMapSubscription(cmd.channel, opts);
      sub.on('subscribing', (ctx) => emit({ ev: 'subscribing', id: cmd.id, channel: cmd.channel, code: ctx.code }));
      sub.on('subscribed', (ctx) => emit({ ev: 'subscribed', id: cmd.id, channel: cmd.channel, recovered: !!ctx.recovered }));
      sub.on('sync', (ctx) => emit({ ev: 'sync', id: cmd.id, channel: cmd.channel, entries: ctx.entries.map((e) => entryOf(e, protobuf)) }));
      sub.on('update', (ctx) => emit({ ev: 'update', id: cmd.id, channel: cmd.channel, ...entryOf(ctx, protobuf) }));
      sub.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, channel: cmd.channel, code: ctx.error && ctx.error.code, message: String(ctx.error && ctx.error.message) }));
      sub.on('unsubscribed', (ctx) => emit({ ev: 'unsubscribed', id: cmd.id, channel: cmd.channel, code: ctx.code }));
      sub.subscribe();
      break;
    }
    case 'publish':
    case 'remove': {
      const call = cmd.op === 'publish'
        ? c.mapPublish(cmd.channel, cmd.key, encode(cmd.data, c._tlProtobuf))
        : c.mapRemove(cmd.channel, cmd.key);
      call.then(
        () => emit({ ev: 'reply', id: cmd.id, req: cmd.req, ok: true }),
        (err) => emit({ ev: 'reply', id: cmd.id, req: cmd.req, ok: false, code: err.code, message: err.message }),
      );
      break;
    }
    case 'unsubscribe':
    case 'disconnect':
      leave(clients, cmd);
      emit({ ev: 'done', op: cmd.op, id: cmd.id });
      break;
    default:
      unknown(cmd);
  }
}

serve(clients, handle);
