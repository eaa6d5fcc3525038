// Drives centrifuge-js 5.8 clients for tests/map/test_presence.py: one JSON command per stdin
// line, one JSON event per stdout line. Commands:
//   {"op": "connect", "id": "a", "url": "...", "token": "..."}
//   {"op": "subscribe", "id": "a", "channel": "game:1", "map"?: true}   a stream (or map) subscription
//   {"op": "watch", "id": "a", "channel": "clients:game:1", "kind": "clients" | "users"}
//   {"op": "unsubscribe", "id": "a", "channel": "..."}
//   {"op": "disconnect", "id": "a"}
// Events: connected {id, client}, subscribed {id, channel}, sync {id, channel, entries},
// update {id, channel, key, removed, data, info}, error {id, channel?, message}, done {op, id}.
'use strict';

const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

const { emit, leave, serve, unknown } = require('../js_lines');

const clients = new Map();

function entryOf(e) {
  const out = { key: e.key, data: e.data === undefined ? null : e.data };
  if (e.removed) out.removed = true;
  if (e.info) out.info = { user: e.info.user, client: e.info.client, connInfo: e.info.connInfo || null };
  return out;
}

function handle(cmd) {
  const c = clients.get(cmd.id);
  switch (cmd.op) {
    case 'connect': {
      const client = new Centrifuge(cmd.url, {
        websocket: WebSocket,
        token: cmd.token,
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
      });
      client.on('connected', (ctx) => emit({ ev: 'connected', id: cmd.id, client: ctx.client }));
      client.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, message: String(ctx.error && ctx.error.message) }));
      clients.set(cmd.id, client);
      client.connect();
      break;
    }
    case 'subscribe': {
      const sub = cmd.map ? c.newMapSubscription(cmd.channel) : c.newSubscription(cmd.channel);
      sub.on('subscribed', () => emit({ ev: 'subscribed', id: cmd.id, channel: cmd.channel }));
      sub.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, channel: cmd.channel, message: String(ctx.error && ctx.error.message) }));
      sub.subscribe();
      break;
    }
    case 'watch': {
      const sub = cmd.kind === 'users' ? c.newMapUsersSubscription(cmd.channel) : c.newMapClientsSubscription(cmd.channel);
      sub.on('subscribed', () => emit({ ev: 'subscribed', id: cmd.id, channel: cmd.channel }));
      sub.on('sync', (ctx) => emit({ ev: 'sync', id: cmd.id, channel: cmd.channel, entries: ctx.entries.map(entryOf) }));
      sub.on('update', (ctx) => emit({ ev: 'update', id: cmd.id, channel: cmd.channel, ...entryOf(ctx) }));
      sub.on('error', (ctx) => emit({ ev: 'error', id: cmd.id, channel: cmd.channel, message: String(ctx.error && ctx.error.message) }));
      sub.subscribe();
      break;
    }
    case 'unsubscribe':
    case 'disconnect':
      leave(clients, cmd);
      break;
    default:
      unknown(cmd);
  }
}

serve(clients, handle, { done: true });
