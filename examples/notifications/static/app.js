// Relay: per-user notifications with centrifuge-js against Trunkline, no framework.
//
// The connection token comes from the backend (GET /token, the session cookie says who you are),
// and Trunkline subscribes every connection, server-side, to its user's personal channel
// notify:#<user> (client.subscribe_to_user_personal_channel). Publications on it:
//   {"type": "notification", "id", "from", "text", "sent_at": <ms>}   one notification
//   {"type": "read", "upTo": <offset>}                               "read up to here", from any tab
//
// Exactly once, by stream position (offset + epoch), never by guessing:
// - a reconnect: centrifuge-js recovers the server-side subscription from its last offset and the
//   server sends exactly what was missed (history + recovery);
// - a page opened later: the position it reached last time is in localStorage, and the page asks
//   for the channel's history since that position, then applies the live publications that
//   arrived meanwhile; an offset it has already applied is skipped.
// localStorage (per user) keeps the position, the read marker and the last 50 notifications, so
// every tab of a user in this browser shows the same inbox.
//
// window.notify exposes the state for tests: {state, user, channel, centrifuge, items, unread,
// offset, epoch, readUpTo, latencies: [ms], catchUps: [{missed, gap}], applied: [offsets]}.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEEP = 50;
  const COLORS = ["#0e7c86", "#6d4aff", "#d9480f", "#2b8a3e", "#c2255c", "#1971c2", "#e67700"];

  const notify = {
    state: "disconnected", user: "", channel: "", centrifuge: null, items: [], unread: 0,
    offset: 0, epoch: "", readUpTo: 0, latencies: [], catchUps: [], applied: [],
  };
  window.notify = notify;
  let wasConnected = false;
  let catching = null; // while catching up from history: the live publications held back

  // ---- storage (per user, shared by the user's tabs in this browser) ---------------------------

  const storageKey = () => `relay:v1:${notify.user}`;

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey()) || "null");
      if (saved && typeof saved.offset === "number" && typeof saved.epoch === "string") return saved;
    } catch (_) {
      /* a corrupt entry is a first visit */
    }
    return null;
  }

  function save() {
    const { offset, epoch, readUpTo, items } = notify;
    localStorage.setItem(storageKey(), JSON.stringify({ offset, epoch, readUpTo, items: items.slice(-KEEP) }));
  }

  // ---- applying publications -------------------------------------------------------------------

  // Every publication of the personal channel goes through here, in offset order, once.
  function apply(pub, fresh) {
    if (pub.offset <= notify.offset) return false; // already applied (a history page racing live ones)
    notify.offset = pub.offset;
    notify.applied.push(pub.offset);
    const msg = pub.data || {};
    if (msg.type === "notification") {
      notify.items.push({ offset: pub.offset, id: msg.id, from: msg.from, text: msg.text, sentAt: msg.sent_at });
      if (notify.items.length > KEEP) notify.items.splice(0, notify.items.length - KEEP);
      if (fresh && typeof msg.sent_at === "number" && notify.latencies.length < 10000) {
        notify.latencies.push(performance.timeOrigin + performance.now() - msg.sent_at);
      }
    } else if (msg.type === "read" && typeof msg.upTo === "number") {
      notify.readUpTo = Math.max(notify.readUpTo, msg.upTo);
    }
    return true;
  }

  function onPublication(ctx) {
    if (ctx.channel !== notify.channel) return;
    if (catching) {
      catching.push(ctx);
      return;
    }
    if (apply(ctx, true)) {
      save();
      render(ctx.data && ctx.data.type === "notification" ? ctx.offset : null);
    }
  }

  // A page opened (or a position the server could not recover): read what was missed from history.
  async function catchUp(top) {
    catching = [];
    const saved = load();
    let since = { offset: 0, epoch: top.epoch }; // first visit: everything the channel still keeps
    if (saved && saved.epoch === top.epoch) {
      since = { offset: saved.offset, epoch: saved.epoch };
    } else if (saved) {
      notice("The server's history was reset since your last visit; older notifications may be missing.");
    }
    notify.epoch = top.epoch;
    notify.offset = since.offset;
    const before = notify.items.length;
    let gap = false;
    try {
      if (top.offset > since.offset) {
        const res = await notify.centrifuge.history(notify.channel, { since, limit: 100 });
        const pubs = res.publications || [];
        gap = pubs.length > 0 && pubs[0].offset !== since.offset + 1; // the oldest ones expired
        for (const pub of pubs) apply(pub, false);
      }
    } catch (err) {
      notice(`Could not load missed notifications (${err.code || ""} ${err.message || err}).`);
    }
    const held = catching;
    catching = null;
    for (const ctx of held) apply(ctx, true);
    const missed = notify.items.length - before;
    notify.catchUps.push({ missed, gap });
    save();
    render(null);
    if (saved && missed > 0) {
      const el = $("caught-up");
      el.textContent = `${missed} new while you were away${gap ? " (older ones expired)" : ""}.`;
      el.hidden = false;
    }
  }

  // ---- rendering -------------------------------------------------------------------------------

  function colorOf(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return COLORS[h % COLORS.length];
  }

  function ago(ms) {
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(ms).toLocaleDateString();
  }

  function render(freshOffset) {
    const unread = notify.items.filter((it) => it.offset > notify.readUpTo).length;
    const changed = unread !== notify.unread;
    notify.unread = unread;
    const badge = $("badge");
    badge.hidden = unread === 0;
    badge.textContent = unread > 99 ? "99+" : String(unread);
    if (changed && unread > 0) {
      badge.classList.remove("bump");
      void badge.offsetWidth; // restart the animation
      badge.classList.add("bump");
    }
    $("bell").setAttribute("aria-label", `Notifications, ${unread} unread`);
    $("unread-label").textContent = unread ? `· ${unread} unread` : "";
    $("mark-read").disabled = unread === 0;
    document.title = unread ? `(${unread}) Inbox · Relay` : "Inbox · Relay";
    $("empty").hidden = notify.items.length > 0;

    const list = $("items");
    list.replaceChildren();
    for (const it of [...notify.items].reverse()) { // newest first
      const li = document.createElement("li");
      li.className = "item" + (it.offset > notify.readUpTo ? " unread" : "") + (it.offset === freshOffset ? " fresh" : "");
      li.dataset.offset = String(it.offset);
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.style.background = colorOf(it.from || "?");
      avatar.textContent = (it.from || "?").slice(0, 1);
      const body = document.createElement("div");
      body.className = "body";
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = it.from;
      const text = document.createElement("p");
      text.className = "text";
      text.textContent = it.text;
      body.append(from, text);
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = typeof it.sentAt === "number" ? ago(it.sentAt) : "";
      li.append(avatar, body, when);
      list.append(li);
    }
  }

  function notice(text) {
    const el = $("banner");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function setState(state) {
    notify.state = state;
    const pill = $("state");
    pill.dataset.state = state;
    pill.textContent = { connected: "live", connecting: wasConnected ? "reconnecting…" : "connecting…" }[state] || "offline";
    if (state === "connecting" && wasConnected) notice("Connection lost. Reconnecting… nothing sent meanwhile will be lost.");
    else if (state === "connected") notice(null);
  }

  // ---- backend calls ---------------------------------------------------------------------------

  async function call(method, path, body) {
    const resp = await fetch(path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
    });
    const reply = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(reply.error || `HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return reply;
  }

  async function refreshUsers() {
    try {
      const { users } = await call("GET", "/users");
      $("users").replaceChildren(...users.map((u) => Object.assign(document.createElement("option"), { value: u })));
    } catch (_) {
      /* only a convenience */
    }
  }

  // ---- start -----------------------------------------------------------------------------------

  function start(me) {
    notify.user = me.user;
    notify.channel = me.channel;
    const saved = load();
    if (saved) {
      notify.items = Array.isArray(saved.items) ? saved.items : [];
      notify.readUpTo = saved.readUpTo || 0;
    }
    $("signin").hidden = true;
    $("app").hidden = false;
    for (const id of ["bell", "me", "logout"]) $(id).hidden = false;
    $("me").textContent = me.user;
    $("channel").textContent = me.channel;
    render(null);
    refreshUsers();

    const c = new Centrifuge(me.websocket, {
      name: "relay-notifications",
      getToken: async () => (await call("GET", "/token")).token,
    });
    notify.centrifuge = c;
    c.on("connecting", () => setState("connecting"));
    c.on("connected", () => {
      setState("connected");
      wasConnected = true;
    });
    c.on("disconnected", () => setState("disconnected"));
    c.on("publication", onPublication);
    c.on("subscribed", (ctx) => {
      if (ctx.channel !== notify.channel) return;
      // A recovered reconnect needs nothing: the missed publications follow this event.
      if (ctx.wasRecovering && ctx.recovered) return;
      catchUp(ctx.streamPosition || { offset: 0, epoch: "" });
    });
    c.connect();
  }

  async function main() {
    $("signin").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await call("POST", "/login", { name: $("name").value });
        start(await call("GET", "/me"));
      } catch (err) {
        $("signin-error").textContent = err.message;
        $("signin-error").hidden = false;
      }
    });
    $("logout").addEventListener("click", async () => {
      await call("POST", "/logout").catch(() => null);
      location.reload();
    });
    $("mark-read").addEventListener("click", async () => {
      const last = notify.items.length ? notify.items[notify.items.length - 1].offset : 0;
      await call("POST", "/read", { upTo: last }).catch((err) => notice(`Could not mark read: ${err.message}`));
    });
    $("bell").addEventListener("click", () => $("items").scrollIntoView({ behavior: "smooth", block: "start" }));
    $("compose").addEventListener("submit", async (e) => {
      e.preventDefault();
      const result = $("send-result");
      const to = $("to").value.trim().toLowerCase();
      try {
        await call("POST", "/notify", { to, text: $("text").value });
        result.textContent = `Sent to ${to}.`;
        result.className = "result";
        $("text").value = "";
      } catch (err) {
        result.textContent = err.message;
        result.className = "result bad";
      }
      result.hidden = false;
    });
    setInterval(() => notify.user && render(null), 30000); // "just now" -> "1 min ago"
    try {
      start(await call("GET", "/me"));
    } catch (_) {
      $("signin").hidden = false; // signed out
      $("name").focus();
    }
  }

  main();
})();
