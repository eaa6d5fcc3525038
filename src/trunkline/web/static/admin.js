// Trunkline dashboard: the administration pages (channels, connections, actions, events).
//
// Loaded after dashboard.js, which owns the admin WebSocket connection
// (window.__dashboard.client); this script adds the "__trunkline:events"
// subscription to it before it connects. Every state-changing request carries the
// session's CSRF token (from /dashboard/session) in the X-CSRF-Token header.
// Tests read window.__admin.
(function () {
  "use strict";

  const EVENTS_CHANNEL = "__trunkline:events";
  const MAX_EVENTS = 500; // rows kept in the page (the server keeps its own ring buffer)
  const VIEWS = ["overview", "channels", "connections", "actions", "events"];
  const TEMPLATES = {
    publish: { channel: "news", data: { text: "hello from the dashboard" } },
    broadcast: { channels: ["news", "chat:lobby"], data: { text: "hello everyone" } },
    subscribe: { user: "42", channel: "news" },
    unsubscribe: { user: "42", channel: "news" },
    disconnect: { user: "42", disconnect: { code: 4000, reason: "disconnected by an admin" } },
    refresh: { user: "42", expired: true },
    presence: { channel: "news" },
    presence_stats: { channel: "news" },
    history: { channel: "news", limit: 10, reverse: true },
    history_remove: { channel: "news" },
    channels: { pattern: "*" },
    info: {},
    batch: { commands: [{ publish: { channel: "news", data: { n: 1 } } }, { presence_stats: { channel: "news" } }] },
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    csrf: null,
    view: "overview",
    events: [], // newest last, at most MAX_EVENTS
    eventsReceived: 0,
    eventsShown: 0,
    paused: false,
    pausedAt: 0,
    skipped: {},
    channelsLoaded: 0,
    channelLoaded: null,
    usersLoaded: 0,
    userLoaded: null,
    lastAction: null,
  };
  window.__admin = state;

  // ------------------------------------------------------------------ helpers

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function row(tbody, cells) {
    const tr = tbody.insertRow();
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = c == null ? "" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  function emptyRow(tbody, cols, text) {
    const td = el("td", text, "muted");
    td.colSpan = cols;
    tbody.insertRow().appendChild(td);
  }

  function link(text, hash) {
    const a = el("a", text);
    a.href = hash;
    return a;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function short(value, max) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > max ? text.slice(0, max) + "…" : text;
  }

  async function getJSON(path) {
    const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) {
      window.location.assign("/dashboard");
      throw new Error("login required");
    }
    return res.json();
  }

  async function session() {
    if (!state.csrf) {
      const body = await getJSON("/dashboard/session");
      state.csrf = body.csrf;
      state.session = body.session;
      $("logout-csrf").value = body.csrf;
    }
    return state.csrf;
  }

  // POST /dashboard/api/<method>: the server API's answer (or an HTTP refusal's {"error": "..."})
  async function api(method, params) {
    const csrf = await session();
    const res = await fetch("/dashboard/api/" + encodeURIComponent(method), {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: typeof params === "string" ? params : JSON.stringify(params),
    });
    let body;
    try {
      body = await res.json();
    } catch (err) {
      body = { error: "HTTP " + res.status };
    }
    return { status: res.status, body: body };
  }
  state.api = api;

  function errorText(body) {
    const e = body && body.error;
    if (!e) return "";
    return typeof e === "string" ? e : e.code + " " + e.message;
  }

  // ------------------------------------------------------------------ views

  function route() {
    const hash = decodeURIComponent(window.location.hash.slice(1));
    const slash = hash.indexOf("/");
    const name = slash < 0 ? hash : hash.slice(0, slash);
    const arg = slash < 0 ? null : hash.slice(slash + 1);
    const view = VIEWS.includes(name) ? name : "overview";
    state.view = view;
    for (const v of VIEWS) $("view-" + v).hidden = v !== view;
    for (const a of document.querySelectorAll("nav.tabs a")) {
      if (a.dataset.view === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (view === "overview" && window.__dashboard && window.__dashboard.resizeCharts) window.__dashboard.resizeCharts();
    if (view === "channels") {
      loadChannels();
      if (arg) loadChannel(arg);
      else $("channel-detail").hidden = true;
    }
    if (view === "connections") {
      loadUsers();
      if (arg) loadUser(arg);
      else $("user-detail").hidden = true;
    }
    if (view === "events") renderEvents();
  }

  // channels: the server API's "channels", grouped by namespace
  async function loadChannels() {
    const pattern = $("channels-pattern").value.trim();
    const body = await getJSON("/dashboard/channels?pattern=" + encodeURIComponent(pattern));
    const list = $("channels-list");
    list.replaceChildren();
    if (body.error) {
      list.appendChild(el("p", errorText(body), "error"));
      return;
    }
    $("channels-summary").textContent =
      body.total + " active channel" + (body.total === 1 ? "" : "s") + (body.truncated ? " (busiest shown)" : "");
    if (!body.namespaces.length) list.appendChild(el("p", "No channel has subscribers.", "muted"));
    for (const ns of body.namespaces) {
      const panel = el("div", null, "panel");
      panel.dataset.namespace = ns.namespace;
      const title = el("h2", ns.namespace === "" ? "(no namespace)" : ns.namespace);
      title.appendChild(el("span", " " + ns.num_clients + " subscriber" + (ns.num_clients === 1 ? "" : "s"), "muted"));
      panel.appendChild(title);
      const wrap = el("div", null, "table-wrap");
      const table = el("table");
      table.createTHead().appendChild(document.createElement("tr"));
      table.tHead.rows[0].append(el("th", "Channel"), el("th", "Subscribers", "num"));
      const tbody = table.createTBody();
      for (const ch of ns.channels) {
        const tr = row(tbody, [link(ch.channel, "#channels/" + encodeURIComponent(ch.channel)), ch.num_clients]);
        tr.cells[1].className = "num";
        tr.dataset.channel = ch.channel;
      }
      wrap.appendChild(table);
      panel.appendChild(wrap);
      list.appendChild(panel);
    }
    state.channelsLoaded += 1;
  }

  async function loadChannel(name) {
    const body = await getJSON("/dashboard/channel?name=" + encodeURIComponent(name));
    $("channel-detail").hidden = false;
    $("channel-name").textContent = name;
    if (body.error) {
      $("channel-counts").textContent = errorText(body);
      return;
    }
    const stats = body.presence_stats.result;
    $("channel-counts").textContent =
      body.local_subscribers +
      " subscribers on this node" +
      (stats ? " · presence: " + stats.num_clients + " clients, " + stats.num_users + " users" : "");
    const presence = $("channel-presence").tBodies[0];
    presence.replaceChildren();
    if (body.presence.error) emptyRow(presence, 3, errorText(body.presence));
    else {
      const members = Object.values(body.presence.result.presence);
      if (!members.length) emptyRow(presence, 3, "nobody");
      for (const m of members) {
        const tr = row(presence, [
          link(m.user || "(anonymous)", "#connections/" + encodeURIComponent(m.user)),
          m.client,
          m.conn_info == null ? "" : short(m.conn_info, 80),
        ]);
        tr.cells[1].className = "id";
        tr.dataset.client = m.client;
      }
    }
    const history = $("channel-history").tBodies[0];
    history.replaceChildren();
    if (body.history.error) emptyRow(history, 3, errorText(body.history));
    else {
      const pubs = body.history.result.publications;
      if (!pubs.length) emptyRow(history, 3, "empty");
      for (const p of pubs) {
        row(history, [p.offset == null ? "" : p.offset, p.info ? p.info.user : "(server)", short(p.data, 200)]);
      }
    }
    state.channelLoaded = name;
  }

  // connections: users of this node, and one user's connections
  async function loadUsers() {
    const search = $("users-search").value.trim();
    const body = await getJSON("/dashboard/connections?search=" + encodeURIComponent(search));
    const tbody = $("users").tBodies[0];
    tbody.replaceChildren();
    $("users-summary").textContent =
      body.total + " user" + (body.total === 1 ? "" : "s") + " connected" + (body.truncated ? " (most connected shown)" : "");
    if (!body.users.length) emptyRow(tbody, 2, "nobody connected");
    for (const u of body.users) {
      const tr = row(tbody, [link(u.user || "(anonymous)", "#connections/" + encodeURIComponent(u.user)), u.connections]);
      tr.cells[1].className = "num";
      tr.dataset.user = u.user;
    }
    state.usersLoaded += 1;
  }

  async function loadUser(user) {
    const body = await getJSON("/dashboard/connections?user=" + encodeURIComponent(user));
    $("user-detail").hidden = false;
    $("user-name").textContent = user || "(anonymous)";
    $("user-disconnect").dataset.user = user;
    const tbody = $("user-connections").tBodies[0];
    tbody.replaceChildren();
    if (!body.connections.length) emptyRow(tbody, 5, "no connection on this node");
    for (const c of body.connections) {
      const subs = el("span", c.subscriptions.join(", ") + (c.num_subscriptions > c.subscriptions.length ? ", …" : ""));
      const button = el("button", "Disconnect", "danger");
      button.type = "button";
      button.addEventListener("click", () => disconnect(user, c.client));
      const tr = row(tbody, [c.client, c.transport + (c.protocol ? " (" + c.protocol + ")" : ""), c.remote, subs, button]);
      tr.cells[0].className = "id";
      tr.dataset.client = c.client;
    }
    state.userLoaded = user;
  }

  async function disconnect(user, client) {
    const params = { user: user };
    if (client) params.client = client;
    const answer = await api("disconnect", params);
    $("user-action").textContent = answer.body.error
      ? "refused: " + errorText(answer.body)
      : "disconnected " + (client ? "client " + client : "every connection");
    state.lastAction = answer;
    // the connections close asynchronously (other nodes too): look again shortly
    setTimeout(() => loadUser(user), 300);
  }

  // actions: any server API method with a JSON form
  function setupActions(methods) {
    const select = $("action-method");
    select.replaceChildren();
    for (const m of methods) select.appendChild(new Option(m, m));
    select.value = methods.includes("publish") ? "publish" : methods[0];
    const fill = () => {
      $("action-params").value = JSON.stringify(TEMPLATES[select.value] || {}, null, 2);
    };
    select.addEventListener("change", fill);
    fill();
    $("action-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const method = select.value;
      const text = $("action-params").value;
      try {
        JSON.parse(text);
      } catch (err) {
        $("action-status").textContent = "not JSON: " + err.message;
        return;
      }
      $("action-status").textContent = "running…";
      const answer = await api(method, text);
      state.lastAction = answer;
      const failed = answer.status !== 200 || (answer.body && answer.body.error);
      $("action-status").textContent = failed ? "error" : "done";
      $("action-result").className = "result" + (failed ? " failed" : "");
      $("action-result").textContent = JSON.stringify(answer.body, null, 2);
    });
  }

  // events: a live log with a pause button, bounded here as on the server
  function describeEvent(e) {
    const who = (e.user ? "user " + e.user : "anonymous") + (e.client ? " · client " + e.client : "");
    switch (e.type) {
      case "connect":
        return who + " · " + e.transport + (e.remote ? " · " + e.remote : "");
      case "disconnect":
        return who + " · code " + e.code + (e.reason ? " (" + e.reason + ")" : "");
      case "subscribe":
      case "unsubscribe":
        return e.channel + " · " + who;
      case "publication":
        return e.channel + (e.offset ? " · offset " + e.offset : "") + " · " + e.size + " B · " + e.data;
      default:
        return JSON.stringify(e);
    }
  }

  function addEvents(events, skipped) {
    // the backfill and the live batches overlap and may arrive in either order: merge by sequence number
    const seen = new Set(state.events.map((e) => e.seq));
    let added = 0;
    for (const e of events) {
      if (seen.has(e.seq)) continue;
      seen.add(e.seq);
      state.events.push(e);
      added += 1;
    }
    if (!added && !Object.keys(skipped || {}).length) return;
    state.eventsReceived += added;
    state.events.sort((a, b) => a.seq - b.seq);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    for (const [kind, n] of Object.entries(skipped || {})) state.skipped[kind] = (state.skipped[kind] || 0) + n;
    if (!state.paused && state.view === "events") renderEvents();
    else if (state.paused) summary();
  }

  function summary() {
    const skipped = Object.entries(state.skipped)
      .map(([k, n]) => n + " " + k + (n === 1 ? "" : "s"))
      .join(", ");
    const waiting = state.paused ? state.eventsReceived - state.pausedAt : 0;
    $("events-summary").textContent =
      (state.paused ? "paused · " + waiting + " new event" + (waiting === 1 ? "" : "s") + " waiting · " : "live · ") +
      "showing the last " +
      state.events.length +
      (skipped ? " · sampled out: " + skipped : "");
  }

  function renderEvents() {
    if (state.paused) return summary();
    const tbody = $("events").tBodies[0];
    tbody.replaceChildren();
    if (!state.events.length) emptyRow(tbody, 3, "waiting for events…");
    for (let i = state.events.length - 1; i >= 0; i--) {
      const e = state.events[i];
      const tr = row(tbody, [clock(e.time), el("span", e.type, "badge " + e.type), describeEvent(e)]);
      tr.dataset.type = e.type;
      if (e.client) tr.dataset.client = e.client;
    }
    state.eventsShown = state.events.length;
    summary();
  }

  function setupEvents() {
    $("events-pause").addEventListener("click", () => {
      state.paused = !state.paused;
      state.pausedAt = state.eventsReceived;
      $("events-pause").textContent = state.paused ? "Resume" : "Pause";
      $("events-pause").setAttribute("aria-pressed", String(state.paused));
      renderEvents();
    });
    $("events-clear").addEventListener("click", () => {
      state.events = [];
      state.skipped = {};
      renderEvents();
    });
    const client = window.__dashboard && window.__dashboard.client;
    if (client) {
      const sub = client.newSubscription(EVENTS_CHANNEL);
      sub.on("publication", (ctx) => addEvents(ctx.data.events || [], ctx.data.skipped));
      sub.on("subscribed", async () => {
        // what happened before (or while the connection was down), from the server's ring buffer
        const body = await getJSON("/dashboard/events");
        addEvents(body.recent || [], {});
      });
      sub.on("error", (ctx) => console.warn("event log subscription error", ctx));
      sub.subscribe();
      state.eventsSub = sub;
    }
  }

  async function start() {
    $("channels-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      loadChannels();
    });
    $("users-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      loadUsers();
    });
    $("user-disconnect").addEventListener("click", () => disconnect($("user-disconnect").dataset.user, ""));
    setupEvents();
    window.addEventListener("hashchange", route);
    route();
    const body = await getJSON("/dashboard/session");
    state.csrf = body.csrf;
    state.session = body.session;
    $("logout-csrf").value = body.csrf;
    setupActions(body.methods || Object.keys(TEMPLATES));
    state.ready = true;
  }

  start();
})();
