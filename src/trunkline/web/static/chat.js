// Trunkline demo chat: centrifuge-js against the Trunkline server, no framework.
//
// One connection, one subscription to chat:<room>. Every publication is rendered once,
// as it arrives (live or recovered after a reconnect): the server's recovery decides what
// is missing, the page never deduplicates. User text only ever goes through textContent.
//
// Transports: the "Transport" selector (or ?transports=http_stream,sse) picks the list handed to
// centrifuge-js. The default, [websocket, http_stream, sse], falls back by itself when a WebSocket
// cannot be opened (a proxy that breaks upgrades); commands over HTTP go to /emulation.
//
// window.__chat exposes the page state for tests:
//   {state, name, room, transports: [configured], transport: connected one,
//    messages: [{offset, name, user, text, time}], online: [names], recovery}
"use strict";

(() => {
  const ROOM_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const TRANSPORTS = ["websocket", "http_stream", "sse"];
  const $ = (id) => document.getElementById(id);

  const chat = {
    state: "disconnected",
    name: "",
    room: "",
    transports: [],
    transport: null,
    messages: [],
    online: [],
    recovery: null,
  };
  window.__chat = chat;

  let centrifuge = null;
  let sub = null;
  const members = new Map(); // client id -> display name
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

  async function fetchToken(name) {
    const resp = await fetch("/demo/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: name }),
    });
    const body = (await resp.json().catch(() => null)) || {};
    if (!resp.ok || typeof body.token !== "string") {
      const fallback =
        resp.status === 404
          ? "This server does not hand out demo tokens: enable [demo] in its config (make run does)."
          : `Token request failed (HTTP ${resp.status}).`;
      const err = new Error(body.error || fallback);
      err.status = resp.status;
      throw err;
    }
    return body.token;
  }

  // For the SDK: a 4xx answer is final (UnauthorizedError stops reconnecting), anything else is retried.
  async function getToken() {
    try {
      return await fetchToken(chat.name);
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

  function addMessage(ctx) {
    const data = ctx.data !== null && typeof ctx.data === "object" ? ctx.data : { text: String(ctx.data) };
    const now = new Date();
    const msg = {
      offset: ctx.offset === undefined ? null : ctx.offset,
      name: displayName(ctx.info, data),
      user: ctx.info ? ctx.info.user : null,
      text: typeof data.text === "string" ? data.text : JSON.stringify(data),
      time: now.toISOString(),
    };
    chat.messages.push(msg);

    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const item = el("li", msg.user !== null && msg.user === chat.name ? "message mine" : "message");
    if (msg.offset !== null) item.dataset.offset = String(msg.offset);
    const meta = el("div", "meta");
    meta.append(el("span", "author", msg.name));
    const time = el("time", "time", now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = msg.time;
    meta.append(time);
    item.append(meta, el("p", "text", msg.text));
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function renderOnline() {
    const names = [...new Set(members.values())].sort((a, b) => a.localeCompare(b));
    chat.online = names;
    $("online").replaceChildren(...names.map((name) => el("li", name === chat.name ? "me" : "", name)));
    $("online-count").textContent = String(names.length);
  }

  // ---- presence ------------------------------------------------------------------------

  function memberName(info) {
    return displayName(info, null);
  }

  async function loadPresence(current) {
    try {
      const result = await current.presence();
      if (current !== sub) return;
      for (const [client, info] of Object.entries(result.clients)) members.set(client, memberName(info));
      renderOnline();
    } catch (err) {
      console.warn("presence failed", err);
    }
  }

  // ---- joining and leaving -------------------------------------------------------------

  function start(name, room, token, transports) {
    Object.assign(chat, { name, room, transports, transport: null, messages: [], online: [], recovery: null });
    members.clear();
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
      loadPresence(current);
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
      if (recovering) recovering.count += 1;
      addMessage(ctx);
    });
    current.on("join", (ctx) => {
      members.set(ctx.info.client, memberName(ctx.info));
      renderOnline();
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
      start(name, room, await fetchToken(name), transports);
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
      await sub.publish({ text, name: chat.name });
    } catch (err) {
      showNotice(`Not sent: ${err.message || "error"} (code ${err.code}).`, "error");
      if (!input.value) input.value = text;
    }
  });

  $("leave").addEventListener("click", leave);

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
