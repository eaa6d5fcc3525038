// The IoT dashboard: one page, two client protocols on the same Trunkline channels.
//
// centrifuge-js: devices online = the map presence channel `fleet:devices:fleet`, readings from
//   `sensors:<device>/telemetry` (the last minute from history first), acks from
//   `devices:<device>/acks`, commands published to `devices:<device>/commands`.
// mqtt.js: devices online = retained `devices/+/status` (and the devices' last wills),
//   readings from `sensors/+/telemetry`, acks from `devices/+/acks`, commands published
//   (QoS 1) to `devices/<device>/commands`.
"use strict";

(function () {
  const WINDOW_MS = 5 * 60 * 1000; // the chart shows the last five minutes
  const MAX_POINTS = 600; // per device
  const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7e8c", "#cf5f00", "#57606a"];
  const $ = (sel) => document.querySelector(sel);

  const state = {
    protocol: "centrifugo",
    link: null,
    user: "",
    token: "",
    devices: new Map(), // name -> {name, model, online, clients:Set, last, led, interval, color, el}
    readings: new Map(), // name -> [{t, temperature, humidity}]
    acks: [], // every ack received, for tests and the log
    sent: 0,
    charts: null,
    redraw: 0,
  };

  // ------------------------------------------------------------------------------ setup

  async function config() {
    const r = await fetch("/config.json");
    return r.json();
  }

  async function fetchToken() {
    const params = new URLSearchParams(location.search);
    const wanted = params.get("user") || localStorage.getItem("iot-user") || `viewer${Math.floor(Math.random() * 1e4)}`;
    const r = await fetch("/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: wanted }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `token: HTTP ${r.status}`);
    localStorage.setItem("iot-user", wanted);
    state.user = body.user;
    state.token = body.token;
    return body.token;
  }

  function setStatus(text, kind) {
    const el = $("#status");
    el.textContent = text;
    el.dataset.state = kind || "idle";
  }

  function log(text, cls, id) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    if (id) li.dataset.id = id;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    li.append(time, document.createTextNode(text));
    const list = $("#log");
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  }

  // ------------------------------------------------------------------------------ devices

  function device(name, info) {
    let d = state.devices.get(name);
    if (!d) {
      d = {
        name,
        model: "",
        online: false,
        clients: new Set(),
        last: null,
        led: false,
        interval: null,
        color: COLORS[state.devices.size % COLORS.length],
        el: null,
      };
      state.devices.set(name, d);
      d.el = deviceElement(d);
      $("#devices").append(d.el);
      rebuildCharts();
    }
    if (info && info.model) d.model = info.model;
    renderDevice(d);
    return d;
  }

  function deviceElement(d) {
    const li = document.createElement("li");
    li.className = "device";
    li.dataset.device = d.name;
    li.innerHTML = `
      <div class="head"><span class="dot"></span><span class="name"></span><span class="model"></span></div>
      <div class="reading">waiting for a reading…</div>
      <div class="actions">
        <span class="led" title="LED"></span>
        <button type="button" class="toggle-led">Toggle LED</button>
        <select class="interval" aria-label="interval">
          <option value="0.5">0.5 s</option><option value="1" selected>1 s</option>
          <option value="2">2 s</option><option value="5">5 s</option>
        </select>
        <button type="button" class="set-interval">Set interval</button>
      </div>`;
    li.querySelector(".name").textContent = d.name;
    li.querySelector(".name").style.color = d.color;
    li.querySelector(".toggle-led").addEventListener("click", () => command(d.name, { cmd: "toggle_led" }));
    li.querySelector(".set-interval").addEventListener("click", () => {
      const value = Number(li.querySelector(".interval").value);
      command(d.name, { cmd: "set_interval", value });
    });
    return li;
  }

  function renderDevice(d) {
    const el = d.el;
    el.classList.toggle("online", d.online);
    el.classList.toggle("offline", !d.online);
    el.querySelector(".model").textContent = d.model ? `${d.model}${d.online ? "" : " · offline"}` : d.online ? "" : "offline";
    if (d.last) {
      el.querySelector(".reading").textContent =
        `${d.last.temperature.toFixed(1)} °C · ${d.last.humidity.toFixed(0)} % · every ${d.last.interval} s`;
    }
    el.querySelector(".led").classList.toggle("on", !!d.led);
    $("#no-devices").hidden = state.devices.size > 0;
  }

  function online(name, info, client) {
    const d = device(name, info);
    if (client) d.clients.add(client);
    d.online = true;
    renderDevice(d);
  }

  function offline(name, client) {
    const d = state.devices.get(name);
    if (!d) return;
    if (client) d.clients.delete(client);
    if (!client || d.clients.size === 0) d.online = false;
    renderDevice(d);
  }

  function reading(r) {
    if (!r || typeof r.device !== "string" || typeof r.temperature !== "number") return;
    const d = device(r.device);
    const list = state.readings.get(r.device) || [];
    state.readings.set(r.device, list);
    if (list.length && list[list.length - 1].t >= r.t) {
      if (list.some((p) => p.t === r.t)) return; // already drawn (history and live overlap)
      list.push(r);
      list.sort((a, b) => a.t - b.t);
    } else {
      list.push(r);
    }
    while (list.length > MAX_POINTS || (list.length && list[0].t < Date.now() - WINDOW_MS)) list.shift();
    if (!d.last) {
      const select = d.el.querySelector(".interval");
      if ([...select.options].some((o) => Number(o.value) === r.interval)) select.value = String(r.interval);
    }
    if (!d.last || r.t >= d.last.t) {
      d.last = r;
      d.led = r.led;
      d.interval = r.interval;
    }
    renderDevice(d);
    scheduleRedraw();
  }

  function ack(a) {
    if (!a || typeof a.device !== "string") return;
    state.acks.push(a);
    const d = state.devices.get(a.device);
    if (d && a.state) {
      d.led = a.state.led;
      renderDevice(d);
    }
    const what = a.cmd === "set_interval" ? `interval ${a.state && a.state.interval} s` : `LED ${a.state && a.state.led ? "on" : "off"}`;
    const text = a.ok ? `✓ ${a.device} acknowledged ${a.cmd}: ${what}` : `✗ ${a.device} refused ${a.cmd}: ${a.error}`;
    log(text, a.ok ? "ack" : "ack failed", a.id);
  }

  async function command(name, cmd) {
    if (!state.link) return;
    state.sent += 1;
    const msg = { id: `${state.user}-${Date.now().toString(36)}-${state.sent}`, ...cmd };
    log(`→ ${cmd.cmd}${cmd.value !== undefined ? " " + cmd.value : ""} sent to ${name} over ${state.protocol}`, "sent", msg.id);
    try {
      await state.link.command(name, msg);
    } catch (err) {
      log(`command to ${name} failed: ${err.message || err}`, "error");
    }
  }

  // ------------------------------------------------------------------------------ chart

  function chartOptions(label, width, names) {
    return {
      width,
      height: 220,
      scales: { x: { time: true } },
      axes: [{}, { label }],
      legend: { show: true },
      series: [{}, ...names.map((n) => ({ label: n, stroke: state.devices.get(n).color, width: 2, spanGaps: true }))],
    };
  }

  function chartData(names, key) {
    const xs = new Set();
    for (const n of names) for (const p of state.readings.get(n) || []) xs.add(p.t);
    const x = [...xs].sort((a, b) => a - b);
    const index = new Map(x.map((t, i) => [t, i]));
    const ys = names.map((n) => {
      const y = new Array(x.length).fill(null);
      for (const p of state.readings.get(n) || []) y[index.get(p.t)] = p[key];
      return y;
    });
    return [x.map((t) => t / 1000), ...ys];
  }

  function rebuildCharts() {
    if (state.charts) for (const c of state.charts) c.destroy();
    const names = [...state.devices.keys()];
    const width = Math.max(300, $("#chart").clientWidth || 600);
    state.charts = [
      new uPlot(chartOptions("°C", width, names), chartData(names, "temperature"), $("#chart")),
      new uPlot(chartOptions("%", width, names), chartData(names, "humidity"), $("#chart-humidity")),
    ];
    state.charts[0].key = "temperature";
    state.charts[1].key = "humidity";
  }

  function scheduleRedraw() {
    if (state.redraw) return;
    state.redraw = setTimeout(() => {
      state.redraw = 0;
      const names = [...state.devices.keys()];
      for (const c of state.charts || []) c.setData(chartData(names, c.key));
    }, 100);
  }

  // ------------------------------------------------------------------------------ centrifuge-js

  function centrifugoLink(cfg) {
    const c = new Centrifuge(cfg.centrifugo, { token: state.token, getToken: fetchToken });
    const perDevice = new Set();

    function watch(name) {
      if (perDevice.has(name)) return;
      perDevice.add(name);
      const sensors = c.newSubscription(`sensors:${name}/telemetry`);
      sensors.on("publication", (ctx) => reading(ctx.data));
      sensors.on("subscribed", async () => {
        try {
          const h = await sensors.history({ limit: 60, reverse: true });
          for (const p of h.publications.reverse()) reading(p.data);
        } catch (err) {
          console.warn("history", err);
        }
      });
      sensors.subscribe();
      const acks = c.newSubscription(`devices:${name}/acks`);
      acks.on("publication", (ctx) => ack(ctx.data));
      acks.subscribe();
    }

    function seen(info, up) {
      const name = info && info.connInfo && info.connInfo.device;
      if (typeof name !== "string") return; // a dashboard, not a device
      if (up) {
        online(name, info.connInfo, info.client);
        watch(name);
      } else {
        offline(name, info.client);
      }
    }

    // The fleet is a map channel: every device's subscription to devices:fleet is a key of
    // fleet:devices:fleet (key = the device's MQTT client id, info = its connection info), gone
    // when the device leaves, or by the key's TTL when its Trunkline node dies.
    const fleet = c.newMapClientsSubscription("fleet:devices:fleet");
    const names = new Map(); // key (client id) -> device name, for removals (they carry no info)
    function entry(key, info) {
      const name = info && info.connInfo && info.connInfo.device;
      if (typeof name !== "string") return; // a dashboard, not a device
      names.set(key, name);
      seen(info, true);
    }
    fleet.on("sync", (ctx) => {
      for (const d of state.devices.values()) d.clients.clear();
      names.clear();
      for (const e of ctx.entries) entry(e.key, e.info);
      const here = new Set(names.values());
      for (const d of state.devices.values()) if (!here.has(d.name)) offline(d.name);
    });
    fleet.on("update", (ctx) => {
      if (!ctx.removed) {
        entry(ctx.key, ctx.info);
        return;
      }
      const name = names.get(ctx.key);
      names.delete(ctx.key);
      if (name !== undefined) offline(name, ctx.key);
    });
    c.on("connecting", (ctx) => setStatus(`centrifuge-js: connecting (${ctx.reason})`, "idle"));
    c.on("connected", () => setStatus(`centrifuge-js: connected as ${state.user}`, "connected"));
    c.on("disconnected", (ctx) => setStatus(`centrifuge-js: disconnected (${ctx.reason})`, "error"));
    fleet.subscribe();
    c.connect();
    $("#device-source").textContent = "map fleet:devices:fleet";
    return {
      command: (name, msg) => c.publish(`devices:${name}/commands`, msg),
      stop: () => c.disconnect(),
    };
  }

  // ------------------------------------------------------------------------------ mqtt.js

  function mqttLink(cfg) {
    const decoder = new TextDecoder();
    const client = mqtt.connect(cfg.mqtt, {
      protocolVersion: 5,
      clientId: `${state.user}-${Math.random().toString(16).slice(2, 10)}`,
      username: state.user,
      password: state.token,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: 10000,
    });
    client.on("connect", () => {
      setStatus(`mqtt.js: connected as ${state.user}`, "connected");
      client.subscribe(
        [
          ["devices/+/status", { qos: 1 }],
          ["sensors/+/telemetry", { qos: 0 }],
          ["devices/+/acks", { qos: 1 }],
        ].reduce((o, [t, opts]) => ((o[t] = opts), o), {}),
        (err) => err && setStatus(`mqtt.js: subscribe failed: ${err.message}`, "error"),
      );
    });
    client.on("reconnect", () => setStatus("mqtt.js: reconnecting", "idle"));
    client.on("close", () => setStatus("mqtt.js: disconnected", "error"));
    client.on("error", (err) => setStatus(`mqtt.js: ${err.message}`, "error"));
    client.on("message", (topic, payload) => {
      const [root, name, what] = topic.split("/");
      let data;
      try {
        data = JSON.parse(decoder.decode(payload));
      } catch {
        return; // not one of ours
      }
      if (root === "sensors" && what === "telemetry") reading(data);
      else if (root === "devices" && what === "acks") ack(data);
      else if (root === "devices" && what === "status") {
        if (data.online) online(name, data);
        else offline(name);
      }
    });
    $("#device-source").textContent = "retained devices/+/status";
    return {
      command: (name, msg) =>
        new Promise((resolve, reject) =>
          client.publish(`devices/${name}/commands`, JSON.stringify(msg), { qos: 1 }, (err) => (err ? reject(err) : resolve())),
        ),
      stop: () => client.end(true),
    };
  }

  // ------------------------------------------------------------------------------ switching

  let cfgPromise = null;

  async function use(protocol) {
    if (state.link) state.link.stop();
    state.link = null;
    state.protocol = protocol;
    state.devices.clear();
    state.readings.clear();
    $("#devices").replaceChildren();
    rebuildCharts();
    setStatus(`${protocol}: connecting`, "idle");
    try {
      const cfg = await (cfgPromise || (cfgPromise = config()));
      if (!state.token) await fetchToken();
      state.link = protocol === "mqtt" ? mqttLink(cfg) : centrifugoLink(cfg);
      log(`switched to ${protocol === "mqtt" ? "mqtt.js (MQTT 5 over WebSocket)" : "centrifuge-js"}`, "info");
    } catch (err) {
      setStatus(`${protocol}: ${err.message || err}`, "error");
    }
    renderEmpty();
  }

  function renderEmpty() {
    $("#no-devices").hidden = state.devices.size > 0;
  }

  for (const input of document.querySelectorAll('input[name="protocol"]')) {
    input.addEventListener("change", () => input.checked && use(input.value));
  }
  window.addEventListener("resize", () => rebuildCharts());

  // what the tests read
  window.iot = {
    state,
    points: () => [...state.readings.values()].reduce((n, l) => n + l.length, 0),
    online: () => [...state.devices.values()].filter((d) => d.online).map((d) => d.name).sort(),
  };

  const initial = new URLSearchParams(location.search).get("protocol") === "mqtt" ? "mqtt" : "centrifugo";
  $(`#proto-${initial}`).checked = true;
  use(initial);
})();
