// Trunkline demo chat: centrifuge-js against the Trunkline server, no framework.
//
// One connection, one subscription to chat:<room>. On the first subscribe (and when a
// reconnect could not recover) the page loads the room's recent history; after a reconnect
// the server's recovery sends what was missed. Every publication is shown once, in stream
// order: messages are keyed by (epoch, offset), so one that comes both from history and live
// is not shown twice. User text only ever goes through textContent.
//
// Who is who: POST /demo/token gives this browser a random user id per display name (kept in
// localStorage, so a reload or a second tab with the same name is the same user). The user id,
// not the name, decides which messages are "mine"; two users with the same name are told apart
// by a short tag from their ids ("Ann #3f2a").
//
// Transports: the "Transport" selector (or ?transports=http_stream,sse) picks the list handed to
// centrifuge-js. The default, [websocket, http_stream, sse], falls back by itself when a WebSocket
// cannot be opened (a proxy that breaks upgrades); commands over HTTP go to /emulation.
//
// window.__chat exposes the page state for tests:
//   {state, name, user, room, transports: [configured], transport: connected one,
//    messages: [{epoch, offset, name, label, user, mine, text, time, source}], online: [names],
//    members: [{user, name, label, me}], history: {count, epoch} | null, recovery}
"use strict";

(() => {
  const ROOM_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const TRANSPORTS = ["websocket", "http_stream", "sse"];
  const HISTORY_LIMIT = 50; // recent messages a late joiner sees
  const MAX_MESSAGES = 1000; // the page forgets older ones
  const IDS_KEY = "trunkline.demo.users"; // localStorage: {display name: user id}
  const MAX_IDS = 20;
  const $ = (id) => document.getElementById(id);

  const chat = {
    state: "disconnected",
    name: "",
    user: "",
    room: "",
    transports: [],
    transport: null,
    messages: [],
    online: [],
    members: [],
    history: null,
    recovery: null,
  };
  window.__chat = chat;

  let centrifuge = null;
  let sub = null;
  const members = new Map(); // client id -> {user, name}
  const known = new Map(); // user id -> display name, of everyone seen in presence or messages
  const seen = new Set(); // "epoch:offset" of every message shown
  const epochs = new Map(); // stream epoch -> its rank, in the order the page met them
  let epoch = ""; // the subscription's current stream epoch
  let labelsKey = ""; // which names need a tag, as last rendered
  let recovering = null; // while the subscribe reply's publications are delivered: {count}

  // ---- server access -------------------------------------------------------------------

  function wsURL() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/connection/websocket`;
  }

  function endpointOf(transport) {
    if (transport === "websocket") return wsURL();
    return `${location.origin}/connection/${transport}`;
  }

  // "websocket,http_stream" -> ["websocket", "http_stream"]: known names, each once, in order.
  function parseTransports(value) {
    const names = String(value || "")
      .split(",")
      .map((name) => name.trim())
      .filter((name) => TRANSPORTS.includes(name));
    return [...new Set(names)];
  }

  // A lone WebSocket keeps the plain URL form; anything else is the SDK's list of endpoints.
  function newClient(transports, options) {
    if (transports.length === 1 && transports[0] === "websocket") return new Centrifuge(wsURL(), options);
    const endpoints = transports.map((transport) => ({ transport, endpoint: endpointOf(transport) }));
    return new Centrifuge(endpoints, { ...options, emulationEndpoint: "/emulation" });
  }

  // The user id this browser was given for a display name, if any ({} without localStorage).
  function storedIds() {
    try {
      const ids = JSON.parse(localStorage.getItem(IDS_KEY) || "{}");
      return ids !== null && typeof ids === "object" && !Array.isArray(ids) ? ids : {};
    } catch {
      return {};
    }
  }

  function rememberId(name, user) {
    const ids = storedIds();
    delete ids[name];
    ids[name] = user; // most recent last; keep the newest MAX_IDS
    const kept = Object.entries(ids).slice(-MAX_IDS);
    try {
      localStorage.setItem(IDS_KEY, JSON.stringify(Object.fromEntries(kept)));
    } catch {
      // storage disabled or full: this page still keeps its id for its own lifetime
    }
  }

  // {token, user}: a token for display name `name` as user id `user` (a new id if none is given).
  async function fetchToken(name, user) {
    const request = user ? { user: name, id: user } : { user: name };
    const resp = await fetch("/demo/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = (await resp.json().catch(() => null)) || {};
    if (!resp.ok || typeof body.token !== "string" || typeof body.user !== "string") {
      const fallback =
        resp.status === 404
          ? "This server does not hand out demo tokens: enable [demo] in its config (make run does)."
          : `Token request failed (HTTP ${resp.status}).`;
      const err = new Error(body.error || fallback);
      err.status = resp.status;
      throw err;
    }
    return { token: body.token, user: body.user };
  }

  // A token for this page's name, keeping its user id if the browser has one for that name.
  async function tokenFor(name) {
    const earlier = storedIds()[name];
    try {
      return await fetchToken(name, typeof earlier === "string" ? earlier : "");
    } catch (err) {
      if (!earlier || err.status !== 400) throw err;
      return fetchToken(name, ""); // a stale stored id the server no longer accepts: start over
    }
  }

  // For the SDK: a 4xx answer is final (UnauthorizedError stops reconnecting), anything else is retried.
  async function getToken() {
    try {
      return (await fetchToken(chat.name, chat.user)).token;
    } catch (err) {
      if (err.status >= 400 && err.status < 500) throw new Centrifuge.UnauthorizedError(err.message);
      throw err;
    }
  }

  // ---- rendering -----------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setState(state) {
    chat.state = state;
    const badge = $("state");
    badge.textContent = state;
    badge.dataset.state = state;
  }

  function showNotice(text, kind) {
    const notice = $("notice");
    notice.textContent = text;
    notice.dataset.kind = kind;
    notice.hidden = false;
  }

  function displayName(info, data) {
    // The name in the token's info (conn_info) is the trusted one; data.name is what the sender wrote.
    const connName = info && info.connInfo && info.connInfo.name;
    if (typeof connName === "string" && connName) return connName;
    if (data && typeof data.name === "string" && data.name) return data.name;
    return info ? info.user || "anonymous" : "server";
  }

  // ---- who is who ----------------------------------------------------------------------

  function userOf(info) {
    return info && typeof info.user === "string" && info.user ? info.user : null;
  }

  function noteUser(user, name) {
    if (user !== null) known.set(user, name);
  }

  // user id -> tag, for the users whose display name some other known user also has. The tag is
  // the shortest prefix of the id (4 characters at least) that tells all of those users apart.
  function tags() {
    const byName = new Map();
    for (const [user, name] of known) byName.set(name, [...(byName.get(name) || []), user]);
    const result = new Map();
    for (const users of byName.values()) {
      if (users.length < 2) continue;
      let size = 4;
      while (size < 12 && new Set(users.map((user) => user.slice(0, size))).size < users.length) size += 1;
      for (const user of users) result.set(user, `#${user.slice(0, size)}`);
    }
    return result;
  }

  function labelOf(user, name, tagged) {
    const tag = user !== null && tagged.get(user);
    return tag ? `${name} ${tag}` : name;
  }

  // Re-label every author and online entry when the set of shared names changed.
  function relabel() {
    const tagged = tags();
    const key = JSON.stringify([...tagged]);
    if (key === labelsKey) return tagged;
    labelsKey = key;
    const items = $("messages").children; // in the same order as chat.messages
    chat.messages.forEach((msg, i) => {
      msg.label = labelOf(msg.user, msg.name, tagged);
      items[i].querySelector(".author").textContent = msg.label;
    });
    renderOnline(tagged);
    return tagged;
  }

  // ---- messages ------------------------------------------------------------------------

  function rankOf(streamEpoch) {
    if (!epochs.has(streamEpoch)) epochs.set(streamEpoch, epochs.size);
    return epochs.get(streamEpoch);
  }

  function before(a, b) {
    return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  }

  // The time a message was written, if the sender's page put a plausible one in it; else now.
  function sentAt(data) {
    const now = Date.now();
    const t = data.time;
    return typeof t === "number" && Number.isFinite(t) && t > 946684800000 && t < now + 86400000
      ? new Date(t)
      : new Date(now);
  }

  // Shows one publication in stream order; false if it is already shown.
  function addMessage(ctx, streamEpoch, source) {
    const offset = ctx.offset === undefined ? null : ctx.offset;
    if (offset !== null) {
      const id = `${streamEpoch}:${offset}`;
      if (seen.has(id)) return false;
      seen.add(id);
    }
    const data = ctx.data !== null && typeof ctx.data === "object" ? ctx.data : { text: String(ctx.data) };
    const user = userOf(ctx.info);
    const name = displayName(ctx.info, data);
    noteUser(user, name);
    const when = sentAt(data);
    const list = $("messages");
    const last = chat.messages.length ? chat.messages[chat.messages.length - 1].key : [-1, -1];
    // Without an offset there is no place in the stream: it goes last.
    const key = offset === null ? last : [rankOf(streamEpoch), offset];
    let at = chat.messages.length;
    while (at > 0 && before(key, chat.messages[at - 1].key)) at -= 1;

    const msg = {
      epoch: streamEpoch,
      offset,
      name,
      label: name,
      user,
      mine: user !== null && user === chat.user,
      text: typeof data.text === "string" ? data.text : JSON.stringify(data),
      time: when.toISOString(),
      source,
      key,
    };
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const item = el("li", msg.mine ? "message mine" : "message");
    if (offset !== null) item.dataset.offset = String(offset);
    item.dataset.source = source;
    const meta = el("div", "meta");
    const author = el("span", "author", name);
    if (user !== null) {
      author.dataset.user = user;
      author.title = `user ${user}`;
    }
    meta.append(author);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = msg.time;
    meta.append(time);
    item.append(meta, el("p", "text", msg.text));
    chat.messages.splice(at, 0, msg);
    list.insertBefore(item, list.children[at] || null);
    if (chat.messages.length > MAX_MESSAGES) {
      const dropped = chat.messages.shift();
      list.firstElementChild.remove();
      if (dropped.offset !== null) seen.delete(`${dropped.epoch}:${dropped.offset}`);
    }
    msg.label = labelOf(user, name, relabel());
    author.textContent = msg.label;
    if (atBottom || source !== "history") list.scrollTop = list.scrollHeight;
    return true;
  }

  function renderOnline(tagged = tags()) {
    const users = new Map(); // user id (or client id if none) -> name
    for (const [client, member] of members) users.set(member.user === null ? `client:${client}` : member.user, member);
    const list = [...users.values()]
      .map(({ user, name }) => ({ user, name, label: labelOf(user, name, tagged), me: user === chat.user }))
      .sort((a, b) => a.label.localeCompare(b.label) || String(a.user).localeCompare(String(b.user)));
    chat.members = list;
    chat.online = list.map((member) => member.name);
    $("online").replaceChildren(
      ...list.map((member) => {
        const item = el("li", member.me ? "me" : "", member.label);
        if (member.user !== null) item.title = `user ${member.user}`;
        if (member.me) item.append(el("span", "you", "you"));
        return item;
      }),
    );
    $("online-count").textContent = String(list.length);
    $("me").textContent = labelOf(chat.user || null, chat.name, tagged);
    fitOnline();
  }

  // Phone layout: the online strip shows two rows; a toggle shows everyone when more do not fit.
  function fitOnline() {
    const box = $("online").parentElement;
    const toggle = $("online-toggle");
    const list = $("online");
    const expanded = box.classList.contains("expanded");
    const overflows = list.scrollHeight > list.clientHeight + 1;
    toggle.hidden = !expanded && !overflows;
    toggle.textContent = expanded ? "Show less" : "Show all";
    toggle.setAttribute("aria-expanded", String(expanded));
  }

  // ---- presence ------------------------------------------------------------------------

  function addMember(info) {
    const member = { user: userOf(info), name: displayName(info, null) };
    members.set(info.client, member);
    noteUser(member.user, member.name);
  }

  async function loadPresence(current) {
    try {
      const result = await current.presence();
      if (current !== sub) return;
      for (const info of Object.values(result.clients)) addMember(info);
      renderOnline(relabel());
    } catch (err) {
      console.warn("presence failed", err);
    }
  }

  // ---- history -------------------------------------------------------------------------

  // The room's most recent messages, for a late joiner (or after a reconnect that could not
  // recover); those that also arrived live are shown once.
  async function loadHistory(current) {
    try {
      const result = await current.history({ limit: HISTORY_LIMIT, reverse: true });
      if (current !== sub) return;
      let count = 0;
      for (const pub of [...result.publications].reverse()) {
        if (addMessage(pub, result.epoch, "history")) count += 1;
      }
      chat.history = { count, epoch: result.epoch };
    } catch (err) {
      console.warn("history failed", err);
      chat.history = { count: 0, epoch: null, error: err.message || String(err) };
    }
  }

  // ---- joining and leaving -------------------------------------------------------------

  function start(name, user, room, token, transports) {
    Object.assign(chat, {
      name,
      user,
      room,
      transports,
      transport: null,
      messages: [],
      online: [],
      members: [],
      history: null,
      recovery: null,
    });
    members.clear();
    known.clear();
    seen.clear();
    epochs.clear();
    epoch = "";
    labelsKey = "";
    $("messages").replaceChildren();
    $("notice").hidden = true;
    $("room-name").textContent = room;
    $("me").textContent = name;
    $("join-form").hidden = true;
    $("chat").hidden = false;

    $("via").hidden = true;
    centrifuge = newClient(transports, { token, getToken });
    centrifuge.on("connecting", () => setState("connecting"));
    centrifuge.on("connected", (ctx) => {
      chat.transport = ctx.transport;
      $("transport-used").textContent = ctx.transport;
      $("via").hidden = false;
      setState("connected");
    });
    centrifuge.on("disconnected", (ctx) => {
      setState("disconnected");
      if (ctx.code !== 0) showNotice(`Disconnected: ${ctx.reason} (code ${ctx.code}).`, "error");
    });
    centrifuge.on("error", (ctx) => console.warn("centrifuge error", ctx));

    const current = centrifuge.newSubscription(`chat:${room}`);
    sub = current;
    current.on("subscribing", () => {
      members.clear();
      renderOnline();
    });
    current.on("subscribed", (ctx) => {
      epoch = (ctx.streamPosition && ctx.streamPosition.epoch) || "";
      loadPresence(current);
      if (!ctx.wasRecovering || !ctx.recovered) loadHistory(current);
      if (!ctx.wasRecovering) return;
      // Recovered publications are emitted synchronously right after this event: count them.
      const batch = { count: 0 };
      recovering = batch;
      queueMicrotask(() => {
        recovering = null;
        chat.recovery = { wasRecovering: true, recovered: ctx.recovered, count: batch.count };
        if (ctx.recovered) {
          const n = batch.count;
          showNotice(`Reconnected: ${n} missed message${n === 1 ? "" : "s"} recovered.`, "recovered");
        } else {
          showNotice("Reconnected, but missed messages could not be recovered (history is gone).", "lost");
        }
      });
    });
    current.on("unsubscribed", (ctx) => {
      if (ctx.code !== 0) showNotice(`Left the room: ${ctx.reason} (code ${ctx.code}).`, "error");
    });
    current.on("publication", (ctx) => {
      if (addMessage(ctx, epoch, recovering ? "recovered" : "live") && recovering) recovering.count += 1;
    });
    current.on("join", (ctx) => {
      addMember(ctx.info);
      renderOnline(relabel());
    });
    current.on("leave", (ctx) => {
      members.delete(ctx.info.client);
      renderOnline();
    });
    current.on("error", (ctx) => console.warn("subscription error", ctx));

    current.subscribe();
    centrifuge.connect();
  }

  function leave() {
    if (centrifuge) {
      centrifuge.disconnect();
      centrifuge.removeAllListeners();
    }
    if (sub) sub.removeAllListeners();
    centrifuge = null;
    sub = null;
    chat.transport = null;
    $("via").hidden = true;
    members.clear();
    renderOnline();
    setState("disconnected");
    $("chat").hidden = true;
    $("join-form").hidden = false;
    $("name").focus();
  }

  // ---- form wiring ---------------------------------------------------------------------

  $("join-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("join-error");
    error.hidden = true;
    const name = $("name").value.trim();
    const room = $("room").value.trim() || "lobby";
    if (!ROOM_RE.test(room)) {
      error.textContent = "Room names are 1-32 letters, digits, '_', '-' or '.'.";
      error.hidden = false;
      return;
    }
    if (typeof Centrifuge === "undefined") {
      error.textContent = "/static/vendor/centrifuge.js is missing: run make setup.";
      error.hidden = false;
      return;
    }
    const transports = parseTransports($("transport").value);
    if (transports.length === 0) {
      error.textContent = `Pick a transport: ${TRANSPORTS.join(", ")}.`;
      error.hidden = false;
      return;
    }
    const button = $("join");
    button.disabled = true;
    try {
      const { token, user } = await tokenFor(name);
      rememberId(name, user);
      start(name, user, room, token, transports);
      $("text").focus();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    if (!text || !sub) return;
    input.value = "";
    try {
      await sub.publish({ text, name: chat.name, time: Date.now() });
    } catch (err) {
      showNotice(`Not sent: ${err.message || "error"} (code ${err.code}).`, "error");
      if (!input.value) input.value = text;
    }
  });

  $("leave").addEventListener("click", leave);
  $("online-toggle").addEventListener("click", () => {
    $("online").parentElement.classList.toggle("expanded");
    fitOnline();
  });
  window.addEventListener("resize", fitOnline);

  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("room").value = params.get("room");
  // ?transports=sse,http_stream preselects that list (added to the selector if it is not there).
  const wanted = parseTransports(params.get("transports")).join(",");
  if (wanted) {
    const select = $("transport");
    if (![...select.options].some((option) => option.value === wanted)) {
      const option = document.createElement("option");
      option.value = wanted;
      option.textContent = wanted.replaceAll(",", ", then ");
      select.append(option);
    }
    select.value = wanted;
  }
  $("name").focus();
})();
