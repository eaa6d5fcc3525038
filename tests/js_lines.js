// The JSON-lines loop (and the common commands) of the tests' centrifuge-js drivers (tests/map/*.js, tests/shared_poll/driver.js):
// one JSON command per stdin line in, one JSON event per stdout line out. On the end of stdin
// every client is disconnected and the process exits.
'use strict';

const readline = require('readline');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// Run handle(cmd) for each command line; a command that throws is an error event with its stack.
// With `done`, each command handled is followed by a done {op, id} event. `clients` (id ->
// Centrifuge) are the ones disconnected at the end.
function serve(clients, handle, { done = false } = {}) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    try {
      const cmd = JSON.parse(line);
      handle(cmd);
      if (done) emit({ ev: 'done', op: cmd.op, id: cmd.id });
    } catch (e) {
      emit({ ev: 'error', message: String(e && e.stack) });
    }
  });
  rl.on('close', () => {
    for (const c of clients.values()) c.disconnect();
    setTimeout(() => process.exit(0), 50);
  });
}

// A command of an op the driver does not have.
function unknown(cmd) {
  throw new Error('unknown op ' + cmd.op);
}

// The "unsubscribe" (a subscription the client does not hold is nothing to do) and "disconnect"
// commands, which every driver has: {op, id, channel?}.
function leave(clients, cmd) {
  const c = clients.get(cmd.id);
  if (cmd.op === 'disconnect') {
    c.disconnect();
    clients.delete(cmd.id);
    return;
  }
  const sub = c.getSubscription(cmd.channel);
  if (sub) {
    sub.unsubscribe();
    c.removeSubscription(sub);
  }
}

module.exports = { emit, leave, serve, unknown };
