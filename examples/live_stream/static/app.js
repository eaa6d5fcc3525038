// Grand Prix Live: the page of the live stream room example (examples/live_stream).
//
// One centrifuge-js client, three subscriptions:
//   events:main     the live feed: race telemetry at hundreds of publications a second, each with
//                   its publish time (the page measures end-to-end latency), and the viewer count
//   chat:main       chat messages and moderators' tombstones; history fills a late joiner's chat,
//                   recovery fills a reconnecting page's gap; presenceStats gives the first count
//   reactions:main  emoji reactions of every viewer
// Publishing chat and reactions is decided by the server's on_publish hook (slow mode); its
// refusals (error 111) are shown under the input. Moderators (?mod=<key>) get two buttons per
// message, which call the runner's /mod routes (they use Trunkline's server HTTP API).
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);
  const MAX_MESSAGES = 150;
  const LAT_SAMPLES = 20000;

  const state = {
    user: "",
    name: "",
    role: "viewer",
    token: "",
    everConnected: false,
    connection: "idle",
    disconnect: null, // {code, reason} of a terminal disconnect
    events: 0,
    lastSeq: -1,
    seqGaps: 0,
    cars: new Map(), // car -> {car, dist, speed}
    lat: new Float64Array(LAT_SAMPLES),
    latCount: 0,
    viewers: null,
    messages: new Map(), // id -> {msg, offset, el}
    removed: new Set(),
    reactions: [], // every reaction seen: {emoji, user, name}
    reactionCounts: {},
    recoveries: [], // subscribed contexts of chat:main
    errors: [],
  };

  // ------------------------------------------------------------------ connection and identity

  function displayName() {
    const wanted = params.get("name") || localStorage.getItem("live-name");
    if (wanted) return wanted;
    const name = `guest ${Math.floor(1000 + Math.random() * 9000)}`;
    localStorage.setItem("live-name", name);
    return name;
  }

  async function fetchToken() {
    const body = { name: displayName() };
    if (params.get("mod")) body.mod = params.get("mod");
    const r = await fetch("/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await r.json();
    if (r.status === 403) {
      state.disconnect = { code: 403, reason: answer.error };
      showBanner(`Cannot join: ${answer.error}.`);
      throw new Centrifuge.UnauthorizedError(answer.error); // the SDK stops trying
    }
    if (!r.ok) throw new Error(answer.error || `token: HTTP ${r.status}`);
    Object.assign(state, { user: answer.user, name: answer.name, role: answer.role, token: answer.token });
    $("#me").textContent = answer.name;
    document.body.classList.toggle("is-mod", answer.role === "moderator");
    $("#mod-badge").hidden = answer.role !== "moderator";
    return answer.token;
  }

  function setStatus(text, kind) {
    state.connection = kind;
    $("#status").dataset.state = kind;
    $("#status-text").textContent = text;
    const usable = kind === "connected";
    $("#text").disabled = !usable;
    $("#send").disabled = !usable;
    for (const b of document.querySelectorAll("#reaction-bar button")) b.disabled = !usable;
  }

  function showBanner(text) {
    const el = $("#banner");
    el.textContent = text;
    el.hidden = false;
  }

  // ------------------------------------------------------------------ the feed

  function onEvent(d) {
    if (d.type === "viewers") {
      setViewers(d.users);
      return;
    }
    if (d.type !== "tick") return;
    state.events++;
    if (state.lastSeq >= 0 && d.seq !== state.lastSeq + 1) state.seqGaps++;
    state.lastSeq = d.seq;
    state.lat[state.latCount % LAT_SAMPLES] = Date.now() - d.ts;
    state.latCount++;
    state.cars.set(d.car, d);
    boardDirty = true;
  }

  function setViewers(n) {
    state.viewers = n;
    $("#viewer-count").textContent = n.toLocaleString();
  }

  function latency() {
    const n = Math.min(state.latCount, LAT_SAMPLES);
    if (!n) return { n: 0, p50: null, p99: null, max: null };
    const sorted = Float64Array.from(state.lat.subarray(0, n)).sort();
    const at = (q) => sorted[Math.min(n - 1, Math.floor(q * n))];
    return { n, p50: at(0.5), p99: at(0.99), max: sorted[n - 1] };
  }

  let boardDirty = false;
  function renderBoard() {
    if (!boardDirty) return;
    boardDirty = false;
    const cars = [...state.cars.values()].sort((a, b) => b.dist - a.dist);
    if (!cars.length) return;
    const lead = cars[0].dist;
    const last = cars[cars.length - 1].dist;
    $("#lap").textContent = String(1 + Math.floor(lead / 5000));
    const board = $("#board");
    while (board.children.length < cars.length) {
      const li = document.createElement("li");
      li.innerHTML = '<span class="car"></span><span class="bar"><i></i></span><span class="gap"></span><span class="speed"></span>';
      board.append(li);
    }
    cars.forEach((c, i) => {
      const li = board.children[i];
      li.dataset.car = c.car;
      li.children[0].textContent = c.car;
      const span = Math.max(1, lead - last);
      li.children[1].firstChild.style.width = `${100 - (70 * (lead - c.dist)) / span}%`;
      li.children[2].textContent = i === 0 ? "leader" : `+${((lead - c.dist) / (c.speed / 3.6)).toFixed(2)}s`;
      li.children[3].textContent = `${Math.round(c.speed)} km/h`;
    });
  }

  let lastCount = 0;
  function everySecond() {
    $("#rate").textContent = String(state.events - lastCount);
    lastCount = state.events;
    const l = latency();
    if (l.n) {
      $("#p50").textContent = `${Math.round(l.p50)} ms`;
      $("#p99").textContent = `${Math.round(l.p99)} ms`;
    }
  }

  // ------------------------------------------------------------------ chat

  function messageEl(msg) {
    const li = document.createElement("li");
    li.dataset.id = msg.id;
    li.dataset.user = msg.user;
    if (msg.user === state.user) li.classList.add("mine");
    if (msg.role === "moderator") {
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = "mod";
      li.append(role);
    }
    const name = document.createElement("span");
    name.className = "name";
    name.style.color = colorOf(msg.user);
    name.textContent = `${msg.name}:`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    li.append(name, text);
    const tools = document.createElement("span");
    tools.className = "tools";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => moderate("remove", { id: msg.id }));
    tools.append(remove);
    if (!msg.bot && msg.user !== state.user) {
      const kick = document.createElement("button");
      kick.type = "button";
      kick.className = "kick";
      kick.textContent = "Disconnect user";
      kick.addEventListener("click", () => moderate("disconnect", { user: msg.user }));
      tools.append(kick);
    }
    li.append(tools);
    return li;
  }

  function colorOf(user) {
    let h = 0;
    for (const ch of user) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return `hsl(${h % 360} 80% 68%)`;
  }

  function onChat(data, offset) {
    if (data.type === "remove") {
      state.removed.add(data.id);
      const m = state.messages.get(data.id);
      if (m) {
        m.el.remove();
        state.messages.delete(data.id);
      }
      return;
    }
    if (data.type !== "msg" || state.messages.has(data.id) || state.removed.has(data.id)) return;
    const el = messageEl(data);
    const list = $("#messages");
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    // keep the list in stream order (history and live publications may interleave on a join)
    let before = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      const other = state.messages.get(node.dataset.id);
      if (other && offset && other.offset && other.offset > offset) before = node;
      else break;
    }
    list.insertBefore(el, before);
    state.messages.set(data.id, { msg: data, offset: offset || 0, el });
    while (list.children.length > MAX_MESSAGES) {
      const first = list.firstElementChild;
      state.messages.delete(first.dataset.id);
      first.remove();
    }
    if (stick) list.scrollTop = list.scrollHeight;
  }

  async function loadHistory(chat) {
    try {
      const h = await chat.history({ limit: 60, reverse: true });
      for (const pub of h.publications.reverse()) onChat(pub.data, pub.offset);
    } catch (e) {
      state.errors.push(`history: ${e.message}`);
    }
  }

  async function moderate(action, body) {
    const r = await fetch(`/mod/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.token}` },
      body: JSON.stringify(body),
    });
    const answer = await r.json();
    if (!r.ok) $("#chat-error").textContent = `moderation: ${answer.error}`;
    else if (action === "disconnect") systemLine(`${body.user} was disconnected`);
  }

  function systemLine(text) {
    const li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    $("#messages").append(li);
  }

  // ------------------------------------------------------------------ reactions

  function onReaction(r) {
    state.reactions.push(r);
    state.reactionCounts[r.emoji] = (state.reactionCounts[r.emoji] || 0) + 1;
    const button = document.querySelector(`#reaction-bar button[data-emoji="${r.emoji}"] span`);
    if (button) button.textContent = String(state.reactionCounts[r.emoji]);
    const floaters = $("#floaters");
    if (floaters.children.length > 30) return;
    const f = document.createElement("span");
    f.className = "floater";
    f.textContent = r.emoji;
    f.style.right = `${6 + Math.random() * 18}%`;
    f.addEventListener("animationend", () => f.remove());
    floaters.append(f);
  }

  // ------------------------------------------------------------------ wiring

  async function start() {
    const cfg = await (await fetch("/config.json")).json();
    $("#slow-badge").textContent = `🐢 Slow mode · ${cfg.slow_mode.interval} s`;
    const client = new Centrifuge(cfg.centrifugo, { getToken: fetchToken, name: "live-stream-page" });
    client.on("connecting", (ctx) => {
      setStatus(state.everConnected ? "Reconnecting…" : "Connecting…", "connecting");
      if (state.everConnected) state.errors.push(`connecting: ${ctx.code} ${ctx.reason}`);
    });
    client.on("connected", () => {
      state.everConnected = true;
      setStatus(`Connected as ${state.name}`, "connected");
    });
    client.on("disconnected", (ctx) => {
      setStatus("Disconnected", "disconnected");
      if (!state.disconnect) state.disconnect = { code: ctx.code, reason: ctx.reason };
      if (ctx.code === 3503) showBanner(`You were disconnected by a moderator (${ctx.reason}). This page will not reconnect.`);
      else if (state.disconnect.code !== 403) showBanner(`Disconnected: ${ctx.reason} (${ctx.code}).`);
    });

    const events = client.newSubscription("events:main");
    events.on("publication", (ctx) => onEvent(ctx.data));

    const chat = client.newSubscription("chat:main");
    chat.on("publication", (ctx) => onChat(ctx.data, ctx.offset));
    chat.on("subscribed", async (ctx) => {
      state.recoveries.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
      if (!ctx.wasRecovering || !ctx.recovered) await loadHistory(chat); // else the SDK replays the gap
      try {
        const stats = await chat.presenceStats();
        setViewers(stats.numUsers);
      } catch (e) {
        state.errors.push(`presence stats: ${e.message}`);
      }
    });

    const reactions = client.newSubscription("reactions:main");
    reactions.on("publication", (ctx) => onReaction(ctx.data));

    $("#composer").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("#text");
      const text = input.value.trim();
      if (!text) return;
      const error = $("#chat-error");
      try {
        await chat.publish({ text });
        input.value = "";
        error.textContent = "";
      } catch (e) {
        error.textContent = e.code === 111 ? `🐢 ${e.message}` : `not sent: ${e.message} (${e.code})`;
        error.dataset.code = String(e.code);
      }
    });
    for (const b of document.querySelectorAll("#reaction-bar button")) {
      b.addEventListener("click", async () => {
        try {
          await reactions.publish({ emoji: b.dataset.emoji });
          $("#reaction-error").textContent = "";
        } catch (e) {
          $("#reaction-error").textContent = e.message;
        }
      });
    }

    events.subscribe();
    chat.subscribe();
    reactions.subscribe();
    client.connect();
    setInterval(renderBoard, 100);
    setInterval(everySecond, 1000);
    window.live.client = client;
  }

  window.live = { state, latency, client: null };
  setStatus("Not connected", "idle");
  start().catch((e) => {
    state.errors.push(String(e));
    setStatus(`Error: ${e.message}`, "disconnected");
  });
})();
