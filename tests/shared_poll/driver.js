// Drives centrifuge-js 5.8 shared-poll subscriptions for tests/shared_poll: one JSON command per
// stdin line, one JSON event per stdout line. Commands:
//   {"op": "connect", "id": "a", "url": "...", "token": "...", "protobuf": false}
//   {"op": "subscribe", "id": "a", "channel": "votes:feed", "secret": "...", "user": "42", "ttl": 3600}
//       getSignature signs the keys asked for with `secret` (a wrong secret: a refused track)
//   {"op": "track", "id": "a", "channel": "...", "keys": ["k1", "k2"]}
//   {"op": "untrack", "id": "a", "channel": "...", "keys": ["k1"]}
//   {"op": "unsubscribe", "id": "a", "channel": "..."}
//   {"op": "disconnect", "id": "a"}
// Events: connected {id}, subscribed {id, channel}, update {id, channel, key, data, version, removed},
// error {id, channel?, type, code, message}, done {op, id}.
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');

const { emit, leave, serve, unknown } = require('../js_lines');

const clients = new Map();

// Protobuf clients get data as bytes: the tests' payloads are JSON text.
function decode(data) {
  if (data === undefined || data === null) return null;
  if (data instanceof Uint8Array) return JSON.parse(Buffer.from(data).toString('utf8'));
  return data;
}

function sign(secret, user, channel, keys, ttl) {
  const now = Math.floor(Date.now() / 1000);
  const exp = ttl ? now + ttl : 0;
  const keysHash = crypto.createHash('sha256').update(keys.join('\x00')).digest('hex');
  const mac = crypto.createHmac('sha256', secret).update(`${now}:${exp}:${user}:${channel}:${keysHash}`).digest('hex');
  return `${now}:${exp}:${mac}`;
}

function handle(cmd) {
  const c = clients.get(cmd.id);
  switch (cmd.op) {
    case 'connect': {
      const { Centrifuge } = cmd.protobuf ? require('centrifuge/build/protobuf') : require('centrifuge');
      const client = new Centrifuge(cmd.url, {
        websocket: WebSocket,
        token: cmd.token,
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
      });
      client.on('connected', () => emit({ ev: 'connected', id: cmd.id }));
      client.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, type: ctx.type, code: ctx.error && ctx.error.code, message: String(ctx.error && ctx.error.message) }));
      clients.set(cmd.id, client);
      client.connect();
      break;
    }
    case 'subscribe': {
      const sub = c.newSharedPollSubscription(cmd.channel, {
        getSignature: async (ctx) => ({ keys: ctx.keys, signature: sign(cmd.secret, cmd.user, cmd.channel, ctx.keys, cmd.ttl || 3600) }),
      });
      sub.on('subscribed', () => emit({ ev: 'subscribed', id: cmd.id, channel: cmd.channel }));
      sub.on('update', (ctx) => emit({
        ev: 'update', id: cmd.id, channel: cmd.channel, key: ctx.key,
        data: decode(ctx.data), version: ctx.version || 0, removed: !!ctx.removed,
      }));
      sub.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, channel: cmd.channel, type: ctx.type, code: ctx.error && ctx.error.code, message: String(ctx.error && ctx.error.message) }));
      sub.subscribe();
      break;
    }
    case 'track':
      c.getSubscription(cmd.channel).track(cmd.keys);
      break;
    case 'untrack':
      c.getSubscription(cmd.channel).untrack(cmd.keys);
      break;
    case 'unsubscribe':
    case 'disconnect':
      leave(clients, cmd);
      break;
    default:
      unknown(cmd);
  }
}

serve(clients, handle, { done: true });
