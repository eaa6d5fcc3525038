// Trunkline dashboard: live node figures over Trunkline's own WebSocket.
//
// Gets an admin connection token from /dashboard/token (the login cookie is sent
// along), connects to /connection/websocket with the vendored centrifuge.js,
// subscribes to the node's "__trunkline:stats" channel (one document per second)
// and draws them with uPlot. Recent documents are loaded from /dashboard/stats
// first so the charts start filled. Hovering a chart shows the values under the
// cursor in its legend. The connection is created at once (state.client), so
// admin.js can add its own subscriptions before it connects. Tests read
// window.__dashboard.
//
// With several nodes (the workers of `trunkline serve --workers N`, or hosts) the
// connections and subscriptions tiles and chart show the whole server (the document's
// "server" sums over its nodes); users and channels stay this node's, since one user or
// channel on two nodes is one. The nodes table names each worker and ends with the sums.
(function () {
  "use strict";

  const STATS_CHANNEL = "__trunkline:stats";
  const MAX_POINTS = 300;
  const COLORS = ["#2f7ed8", "#e4572e", "#17a589", "#a05195", "#f0a202"];

  // time, then one array per series; kept in step
  const data = {
    connections: [[], [], []], // connections, subscriptions
    messages: [[], [], []], // in/s, out/s
    latency: [[], [], [], [], []], // command p50, p99, delivery p50, p99 (ms)
  };
  const state = { updates: 0, last: null, state: "connecting", charts: {}, data: data, lastTime: 0 };
  window.__dashboard = state;

  const $ = (id) => document.getElementById(id);

  function chartWidth(el) {
    return Math.max(200, Math.floor(el.getBoundingClientRect().width) - 4);
  }

  function makeChart(key, labels, valueFmt) {
    const el = $("chart-" + key);
    const series = [{}].concat(
      labels.map((label, i) => ({
        label: label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        spanGaps: false,
        value: (u, v) => (v == null ? "–" : valueFmt(v)),
      })),
    );
    const opts = {
      width: chartWidth(el),
      height: 220,
      series: series,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map(valueFmt) }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    const chart = new uPlot(opts, data[key], el);
    state.charts[key] = chart;
    return chart;
  }

  function num(v) {
    if (v == null) return "–";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function ms(v) {
    if (v == null) return "–";
    return v < 1 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  }

  function duration(seconds) {
    if (seconds == null) return "";
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }

  function push(arrays, values) {
    values.forEach((v, i) => {
      arrays[i].push(v);
      if (arrays[i].length > MAX_POINTS) arrays[i].shift();
    });
  }

  // connections and subscriptions of the whole server when it has several nodes, else this node's
  function totals(doc) {
    const server = doc.server;
    if (server && server.nodes > 1) return { nodes: server.nodes, connections: server.connections, subscriptions: server.subscriptions };
    return { nodes: 1, connections: doc.connections, subscriptions: doc.subscriptions };
  }

  function addPoint(doc) {
    if (!doc || typeof doc.time !== "number" || doc.time <= state.lastTime) return false;
    state.lastTime = doc.time;
    const lat = doc.latency_ms || {};
    const sums = totals(doc);
    push(data.connections, [doc.time, sums.connections, sums.subscriptions]);
    push(data.messages, [doc.time, doc.messages_in_per_sec, doc.messages_out_per_sec]);
    push(data.latency, [doc.time, lat.command_p50, lat.command_p99, lat.delivery_p50, lat.delivery_p99]);
    return true;
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function renderTables(doc) {
    const nsBody = $("namespaces").tBodies[0];
    nsBody.replaceChildren();
    const top = doc.top_namespaces || [];
    if (!top.length) {
      const row = nsBody.insertRow();
      const td = document.createElement("td");
      td.colSpan = 4;
      td.className = "muted";
      td.textContent = "no traffic yet";
      row.appendChild(td);
    }
    for (const ns of top) {
      const row = nsBody.insertRow();
      cell(row, ns.namespace === "_" ? "(no namespace)" : ns.namespace);
      cell(row, num(ns.deliveries_per_sec), "num");
      cell(row, num(ns.publications_per_sec), "num");
      cell(row, num(ns.deliveries), "num");
    }
    const table = $("nodes");
    const nodes = doc.nodes || [];
    const workers = nodes.some((n) => n.worker != null);
    for (const el of table.querySelectorAll(".worker")) el.hidden = !workers;
    const nodeBody = table.tBodies[0];
    nodeBody.replaceChildren();
    for (const n of nodes) {
      const row = nodeBody.insertRow();
      if (n.uid === doc.node) row.className = "self";
      cell(row, n.name || n.uid);
      if (workers) cell(row, n.worker == null ? "" : String(n.worker), "num worker");
      cell(row, n.version || "");
      cell(row, num(n.num_clients), "num");
      cell(row, num(n.num_users), "num");
      cell(row, num(n.num_subs), "num");
      cell(row, num(n.num_channels), "num");
      cell(row, duration(n.uptime), "num");
    }
    const sums = totals(doc);
    table.tFoot.hidden = sums.nodes < 2;
    $("total-clients").textContent = num(sums.connections);
    $("total-subs").textContent = num(sums.subscriptions);
  }

  function render(doc) {
    $("node-name").textContent = doc.name + " · v" + doc.version;
    $("uptime").textContent = "up " + duration(doc.uptime);
    const sums = totals(doc);
    const whole = sums.nodes > 1 ? " · " + sums.nodes + " nodes" : "";
    const own = sums.nodes > 1 ? " · this node" : "";
    $("label-connections").textContent = "Connections" + whole;
    $("label-subscriptions").textContent = "Subscriptions" + whole;
    $("label-users").textContent = "Users" + own;
    $("label-channels").textContent = "Channels" + own;
    $("tile-connections").textContent = num(sums.connections);
    $("tile-users").textContent = num(doc.users);
    $("tile-subscriptions").textContent = num(sums.subscriptions);
    $("tile-channels").textContent = num(doc.channels);
    $("tile-in").textContent = num(doc.messages_in_per_sec);
    $("tile-out").textContent = num(doc.messages_out_per_sec);
    renderTables(doc);
    for (const key of Object.keys(state.charts)) state.charts[key].setData(data[key]);
  }

  function setStatus(text) {
    state.state = text;
    const el = $("status");
    el.textContent = text;
    el.className = "status " + text;
  }

  async function getToken() {
    const res = await fetch("/dashboard/token", { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) {
      window.location.assign("/dashboard");
      throw new Centrifuge.UnauthorizedError("login required");
    }
    if (!res.ok) throw new Error("dashboard token: HTTP " + res.status);
    return (await res.json()).token;
  }

  async function backfill() {
    try {
      const res = await fetch("/dashboard/stats", { credentials: "same-origin", cache: "no-store" });
      if (!res.ok) return;
      const body = await res.json();
      let last = null;
      for (const doc of body.recent || []) if (addPoint(doc)) last = doc;
      if (last) render(last);
    } catch (err) {
      console.warn("dashboard: cannot load recent stats", err);
    }
  }

  function makeClient() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const client = new Centrifuge(scheme + window.location.host + "/connection/websocket", { getToken: getToken });
    client.on("connecting", () => setStatus("connecting"));
    client.on("connected", () => setStatus("live"));
    client.on("disconnected", () => setStatus("disconnected"));
    const sub = client.newSubscription(STATS_CHANNEL);
    sub.on("publication", (ctx) => {
      state.updates += 1;
      state.last = ctx.data;
      addPoint(ctx.data);
      render(ctx.data);
    });
    sub.on("error", (ctx) => console.warn("dashboard subscription error", ctx));
    sub.subscribe();
    state.client = client;
    return client;
  }

  function resizeCharts() {
    for (const key of Object.keys(state.charts)) {
      const chart = state.charts[key];
      chart.setSize({ width: chartWidth($("chart-" + key)), height: 220 });
    }
  }
  state.resizeCharts = resizeCharts;

  function start() {
    makeChart("connections", ["connections", "subscriptions"], num);
    makeChart("messages", ["in /s", "out /s"], num);
    makeChart("latency", ["command p50", "command p99", "delivery p50", "delivery p99"], ms);
    window.addEventListener("resize", resizeCharts);
    const client = makeClient();
    backfill().finally(() => client.connect());
  }

  start();
})();
