// Applies Fossil deltas with centrifuge-js's own decoder, as its JSON codec does.
// The decoder is not exported by the package, so its source is cut out of the build.
// stdin: one JSON object per line {"source": base64, "patch": string}; the patch is
// UTF-8 encoded first (TextEncoder), exactly as centrifuge-js treats a JSON delta.
// stdout: one JSON line per input, {"target": base64} or {"error": message}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);
const build = readFileSync(require.resolve("centrifuge"), "utf8");
const start = build.indexOf("const zValue = [");
const fn = build.indexOf("function applyDelta(");
const end = build.indexOf("\n}\n", fn);
if (start < 0 || fn < 0 || end < 0) throw new Error("applyDelta not found in the centrifuge build");
const applyDelta = new Function(build.slice(start, end + 2) + "\nreturn applyDelta;")();

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { source, patch } = JSON.parse(line);
  try {
    const out = applyDelta(new Uint8Array(Buffer.from(source, "base64")), new TextEncoder().encode(patch));
    process.stdout.write(JSON.stringify({ target: Buffer.from(out).toString("base64") }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e) }) + "\n");
  }
}
