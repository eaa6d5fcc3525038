// Trunkline Docs: the page of the collaborative editing example (examples/collab).
//
// The document is a Y.Doc with one Y.Text ("text") bound to a <textarea>. Every local change is
// a Yjs update, published base64 in JSON on doc:<room>; the server's on_publish hook merges it
// into its own copy (pycrdt) before Trunkline fans it out, so the server always has the whole
// document. On every (re)subscribe the page calls the `sync` RPC with its state vector: the
// answer is exactly what this tab lacks (the whole document for a late joiner), and the
// server's state vector tells the page what to send back (edits made while offline).
// Recovery (force_recovery in trunkline.toml) replays the updates a reconnecting tab missed.
// Cursors: a map subscription to cursor:<room>, one key per tab (the server keys each tab's
// write by its client id), value = the selection as Yjs relative positions. A new tab gets every
// cursor in its first sync; a tab that leaves is removed at once (remove_client_on_unsubscribe),
// one that vanishes with its node by the key's TTL. Who is here: the map presence channel
// here:cursor:<room> (map_clients), one key per subscribed tab with its ClientInfo.
import * as Y from "yjs";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const ROOM_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const room = ROOM_RE.test(params.get("room") || "") ? params.get("room") : "welcome";
const INPUT = "textarea"; // transaction origins
const REMOTE = "remote";
const SCRIPT = "script";

const doc = new Y.Doc();
const ytext = doc.getText("text");
const ta = $("#text");
const mirror = $("#mirror");

const state = {
  room,
  user: "",
  name: "",
  color: "",
  client: "",
  connection: "idle",
  everConnected: false,
  subscribed: false,
  synced: false,
  pending: false, // local edits the server may not have (sent by the next sync)
  sent: 0,
  received: 0,
  syncs: [], // {ms, bytes, pushed}
  recoveries: [], // subscribed contexts of doc:<room>
  people: new Map(), // client -> {user, name, color}  (the here:cursor:<room> map)
  cursors: new Map(), // client -> {name, color, a, h}  (the cursor:<room> map, without this tab)
  cursorSyncs: [], // keys of each sync of the cursor map
  cursorWrites: 0,
  errors: [],
  loadedAt: null, // ms after navigation start when the first sync was applied
};

// ------------------------------------------------------------------ base64 of Uint8Array

function toB64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromB64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// ------------------------------------------------------------------ the textarea <-> Y.Text binding

ta.addEventListener("input", () => {
  const before = ytext.toString();
  const after = ta.value;
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  let endBefore = before.length;
  let endAfter = after.length;
  while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) {
    endBefore--;
    endAfter--;
  }
  doc.transact(() => {
    if (endBefore > start) ytext.delete(start, endBefore - start);
    if (endAfter > start) ytext.insert(start, after.slice(start, endAfter));
  }, INPUT);
  sendCursor();
});

// Another tab's (or the script's) change: rewrite the textarea and keep this tab's selection
// where it was in the text, through Yjs relative positions taken before the change.
let savedSelection = null;
doc.on("beforeTransaction", (tr) => {
  if (tr.origin === INPUT) return;
  savedSelection = [
    Y.createRelativePositionFromTypeIndex(ytext, ta.selectionStart),
    Y.createRelativePositionFromTypeIndex(ytext, ta.selectionEnd),
  ];
});
ytext.observe((event) => {
  if (event.transaction.origin !== INPUT) {
    const focused = document.activeElement === ta;
    const text = ytext.toString();
    if (ta.value !== text) ta.value = text;
    if (focused && savedSelection) {
      const [s, e] = savedSelection.map((r) => Y.createAbsolutePositionFromRelativePosition(r, doc));
      if (s && e) ta.setSelectionRange(s.index, e.index);
    }
  }
  $("#chars").textContent = ytext.length.toLocaleString();
  renderOverlay();
});

// ------------------------------------------------------------------ publishing updates

let docSub = null;
doc.on("update", (update, origin) => {
  if (origin === REMOTE) return;
  if (!state.subscribed) {
    markPending();
    return;
  }
  state.sent++;
  $("#sent").textContent = String(state.sent);
  docSub.publish({ u: toB64(update) }).catch((e) => {
    state.errors.push(`publish: ${e.code} ${e.message}`);
    markPending();
  });
});

// An update the server may not have: the next sync sends it. While connected that sync comes
// a second later (a refused or timed-out publish); otherwise on the next subscribe.
let resyncTimer = null;
function markPending() {
  state.pending = true;
  if (!state.subscribed) {
    setSync("pending", "Offline edits: sent when the connection is back");
    return;
  }
  setSync("pending", "Saving…");
  if (resyncTimer) return;
  resyncTimer = setTimeout(() => {
    resyncTimer = null;
    if (state.subscribed) sync(window.collab.client).catch((e) => markPendingLater(e));
  }, 1000);
}

function markPendingLater(e) {
  state.errors.push(`sync: ${e.code} ${e.message}`);
  markPending();
}

function applyRemote(update) {
  Y.applyUpdate(doc, update, REMOTE);
}

async function sync(client) {
  const started = performance.now();
  const sv = Y.encodeStateVector(doc);
  const reply = await client.rpc("sync", { room, sv: toB64(sv) });
  const update = fromB64(reply.data.update);
  applyRemote(update);
  // what the server lacks: edits made here while offline (or whose publish failed)
  const missing = Y.encodeStateAsUpdate(doc, fromB64(reply.data.sv));
  let pushed = 0;
  if (missing.length > 2) {
    await docSub.publish({ u: toB64(missing) });
    pushed = missing.length;
  }
  state.pending = false;
  state.synced = true;
  const ms = performance.now() - started;
  state.syncs.push({ ms, bytes: update.length, pushed });
  if (state.loadedAt === null) state.loadedAt = performance.now();
  $("#last-sync").textContent = `${update.length.toLocaleString()} B in ${Math.round(ms)} ms`;
  setSync("synced", pushed ? "Synced · offline edits sent" : "Synced · all changes saved on the server");
}

function setSync(kind, text) {
  const el = $("#sync-state");
  el.dataset.state = kind;
  el.textContent = text;
}

// ------------------------------------------------------------------ cursors and presence

let cursorSub = null;
let cursorTimer = null;
const CURSOR_REFRESH_MS = 10_000; // the map's key_ttl is 30 s: an idle tab rewrites its key
function sendCursor() {
  if (cursorTimer) return;
  cursorTimer = setTimeout(() => {
    cursorTimer = null;
    if (!cursorSub || cursorSub.state !== "subscribed") return;
    const body =
      document.activeElement === ta
        ? {
            a: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(ytext, ta.selectionStart)),
            h: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(ytext, ta.selectionEnd)),
          }
        : {};
    // the key is the server's choice (map.client_key = "client_id"): this tab's client id
    cursorSub
      .publish(state.client, body)
      .then(() => state.cursorWrites++)
      .catch((e) => state.errors.push(`cursor: ${e.code} ${e.message}`));
  }, 80);
}
for (const ev of ["keyup", "mouseup", "select", "focus", "blur"]) ta.addEventListener(ev, sendCursor);
document.addEventListener("selectionchange", () => document.activeElement === ta && sendCursor());
setInterval(sendCursor, CURSOR_REFRESH_MS);

// An entry of the cursor map: key = the writer's client id, info = its connection's ClientInfo.
function setCursor(key, info, data) {
  if (key === state.client) return; // this tab draws its own selection natively
  const p = info ? person(info) : state.cursors.get(key) || { name: "?", color: "#888" };
  const body = data && typeof data === "object" ? data : {};
  state.cursors.set(key, { name: p.name, color: p.color, a: body.a, h: body.h });
}

function absolute(json) {
  try {
    const pos = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc);
    return pos ? pos.index : null;
  } catch {
    return null;
  }
}

// Carets are drawn once per frame however many changes arrive in it.
let overlayQueued = false;
function renderOverlay() {
  if (overlayQueued) return;
  overlayQueued = true;
  requestAnimationFrame(() => {
    overlayQueued = false;
    drawOverlay();
  });
}

function drawOverlay() {
  const text = ytext.toString();
  const marks = [];
  for (const [client, c] of state.cursors) {
    if (!c.a || !c.h) continue;
    const a = absolute(c.a);
    const h = absolute(c.h);
    if (a === null || h === null) continue;
    marks.push({ client, from: Math.min(a, h), to: Math.max(a, h), head: h, color: c.color, name: c.name });
  }
  const points = new Set([0, text.length]);
  for (const m of marks) points.add(m.from).add(m.to).add(m.head);
  const sorted = [...points].filter((p) => p <= text.length).sort((x, y) => x - y);
  const parts = [];
  sorted.forEach((p, i) => {
    for (const m of marks) {
      if (m.head !== p) continue;
      const caret = document.createElement("span");
      caret.className = "caret";
      caret.dataset.name = m.name;
      caret.dataset.client = m.client;
      caret.style.setProperty("--c", m.color);
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = m.name;
      caret.append(label);
      parts.push(caret);
    }
    const next = sorted[i + 1];
    if (next === undefined) return;
    const segment = text.slice(p, next);
    const cover = marks.find((m) => m.from < m.to && m.from <= p && next <= m.to);
    if (cover) {
      const mark = document.createElement("mark");
      mark.style.setProperty("--c", cover.color);
      mark.textContent = segment;
      parts.push(mark);
    } else parts.push(document.createTextNode(segment));
  });
  parts.push(document.createTextNode("\u200b")); // a last empty line has a height too
  mirror.replaceChildren(...parts);
  mirror.scrollTop = ta.scrollTop;
}
ta.addEventListener("scroll", () => (mirror.scrollTop = ta.scrollTop));
new ResizeObserver(renderOverlay).observe(ta);

function renderPeople() {
  const users = new Map();
  for (const p of state.people.values()) {
    const u = users.get(p.user) || { ...p, tabs: 0 };
    u.tabs++;
    users.set(p.user, u);
  }
  const avatars = [];
  const rows = [];
  for (const u of users.values()) {
    const a = document.createElement("li");
    a.style.setProperty("--c", u.color);
    a.title = u.name;
    a.dataset.user = u.user;
    a.textContent = u.name.slice(0, 1).toUpperCase();
    avatars.push(a);
    const row = document.createElement("li");
    row.dataset.user = u.user;
    row.style.setProperty("--c", u.color);
    const dot = document.createElement("span");
    dot.className = "dot";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = u.name;
    row.append(dot, name);
    const note = document.createElement("span");
    note.className = "you";
    note.textContent = [u.user === state.user ? "you" : "", u.tabs > 1 ? `${u.tabs} tabs` : ""].filter(Boolean).join(" · ");
    row.append(note);
    rows.push(row);
  }
  $("#people").replaceChildren(...avatars);
  $("#people-list").replaceChildren(...rows);
}

function person(info) {
  const ci = info.connInfo || {};
  return { user: info.user, name: ci.name || info.user, color: ci.color || "#888" };
}

// ------------------------------------------------------------------ connection

function setStatus(text, kind) {
  state.connection = kind;
  $("#status").dataset.state = kind;
  $("#status-text").textContent = text;
}

function displayName() {
  const wanted = params.get("name") || localStorage.getItem("collab-name");
  if (wanted) return wanted;
  const names = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia"];
  const name = `${names[Math.floor(Math.random() * names.length)]} ${Math.floor(10 + Math.random() * 90)}`;
  localStorage.setItem("collab-name", name);
  return name;
}

async function fetchToken() {
  const r = await fetch("/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: displayName() }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `token: HTTP ${r.status}`);
  Object.assign(state, { user: body.user, name: body.name, color: body.color });
  return body.token;
}

async function start() {
  $("#room").textContent = room;
  $("#title").textContent = room.replace(/-/g, " ").replace(/^./, (c) => c.toUpperCase());
  for (const el of document.querySelectorAll(".room-name")) el.textContent = room;
  const cfg = await (await fetch("/config.json")).json();
  const client = new Centrifuge(cfg.centrifugo, { getToken: fetchToken, name: "collab-page" });
  client.on("connecting", (ctx) => {
    setStatus(state.everConnected ? "Reconnecting…" : "Connecting…", "connecting");
    state.subscribed = false;
    if (state.everConnected) state.errors.push(`connecting: ${ctx.code} ${ctx.reason}`);
  });
  client.on("connected", (ctx) => {
    state.everConnected = true;
    state.client = ctx.client;
    setStatus(`Connected as ${state.name}`, "connected");
  });
  client.on("disconnected", (ctx) => {
    state.subscribed = false;
    setStatus(`Disconnected: ${ctx.reason}`, "disconnected");
  });

  docSub = client.newSubscription(`doc:${room}`);
  docSub.on("publication", (ctx) => {
    state.received++;
    $("#received").textContent = String(state.received);
    try {
      applyRemote(fromB64(ctx.data.u));
    } catch (e) {
      state.errors.push(`update: ${e}`);
    }
  });
  docSub.on("subscribed", async (ctx) => {
    state.recoveries.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
    state.subscribed = true;
    try {
      await sync(client);
      ta.disabled = false;
    } catch (e) {
      state.errors.push(`sync: ${e.code} ${e.message}`);
      setSync("pending", `Sync failed: ${e.message}`);
    }
  });
  docSub.on("unsubscribed", () => (state.subscribed = false));
  docSub.on("subscribing", () => {
    state.subscribed = false;
    if (state.synced) setSync("pending", "Reconnecting: edits are kept here");
  });

  // cursors: the state first (every tab's latest selection), then one update per change
  cursorSub = client.newMapSubscription(`cursor:${room}`);
  cursorSub.on("sync", (ctx) => {
    state.cursors.clear();
    state.cursorSyncs.push(ctx.entries.map((e) => e.key));
    for (const e of ctx.entries) setCursor(e.key, e.info, e.data);
    renderOverlay();
  });
  cursorSub.on("update", (ctx) => {
    if (ctx.removed) state.cursors.delete(ctx.key);
    else setCursor(ctx.key, ctx.info, ctx.data);
    renderOverlay();
  });
  cursorSub.on("subscribed", () => sendCursor());
  cursorSub.on("error", (ctx) => state.errors.push(`cursor map: ${ctx.error && ctx.error.message}`));

  // who is here: each tab's subscription to cursor:<room> is a key of here:cursor:<room>
  const hereSub = client.newMapClientsSubscription(`here:cursor:${room}`);
  hereSub.on("sync", (ctx) => {
    state.people.clear();
    for (const e of ctx.entries) if (e.info) state.people.set(e.key, person(e.info));
    renderPeople();
  });
  hereSub.on("update", (ctx) => {
    if (ctx.removed) {
      state.people.delete(ctx.key);
      state.cursors.delete(ctx.key);
      renderOverlay();
    } else if (ctx.info) state.people.set(ctx.key, person(ctx.info));
    renderPeople();
  });

  docSub.subscribe();
  cursorSub.subscribe();
  hereSub.subscribe();
  client.connect();
  window.collab.client = client;
}

// For tests and measurements: `n` edits at random places, `perSecond` of them a second (each its
// own transaction, so its own update and publication, as if typed).
async function typeBurst(n, perSecond = 300) {
  const started = performance.now();
  const perTick = Math.max(1, Math.floor(perSecond / 100));
  let done = 0;
  while (done < n) {
    // never more than perTick per 10 ms, and no catching up after a stall: the server's
    // command rate limit (client.command_rate_limit, 500/s) stays out of reach
    const due = Math.min(n, done + perTick, 1 + Math.floor(((performance.now() - started) / 1000) * perSecond));
    for (; done < due; done++) {
      const at = Math.floor(Math.random() * (ytext.length + 1));
      doc.transact(() => ytext.insert(at, String.fromCharCode(97 + (done % 26))), SCRIPT);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

window.collab = { state, doc, text: () => ytext.toString(), typeBurst, client: null };
setStatus("Not connected", "idle");
start().catch((e) => {
  state.errors.push(String(e));
  setStatus(`Error: ${e.message}`, "disconnected");
});
