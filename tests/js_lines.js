// The JSON-lines loop of the tests' centrifuge-js drivers (tests/map/*.js, tests/shared_poll/driver.js):
// one JSON command per stdin line in, one JSON event per stdout line out. On the end of stdin
// every client is disconnected and the process exits.
'use strict';

const readline = require('readline');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// Run handle(cmd) for each command line; a command that throws is an error event with its stack.
// `clients` (id -> Centrifuge) are the ones disconnected at the end.
function serve(clients, handle) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    try {
      handle(JSON.parse(line));
    } catch (e) {
      emit({ ev: 'error', message: String(e && e.stack) });
    }
  });
  rl.on('close', () => {
    for (const c of clients.values()) c.disconnect();
    setTimeout(() => process.exit(0), 50);
  });
}

module.exports = { emit, serve };
