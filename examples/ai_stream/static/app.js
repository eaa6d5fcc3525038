// Answers: centrifuge-js against Trunkline, no framework.
//
// Asking:     centrifuge.rpc("ask", {question}) -> {job, channel, epoch}; the page subscribes to the
//             job's channel from offset 0 of that epoch ({since}), so it gets every token however
//             late it subscribes, then renders each token as it arrives.
// Resuming:   the channel keeps history and recovers. When the connection drops (a sleeping laptop,
//             a tunnel), centrifuge-js reconnects and resubscribes from the last offset it received:
//             the server sends exactly the tokens after it. The page renders what arrives, in order,
//             and never deduplicates: the offsets are the server's guarantee.
// Cancelling: centrifuge.rpc("cancel", {job}); the job publishes an end marker {reason: "cancelled"}.
//
// window.ai exposes the state for tests: {state, user, centrifuge, jobs: [...], latencies: [ms],
// resumes: [{job, ms, caughtUp}]}. Each job: {id, channel, question, text, tokens, status,
// offsets: [offset of every publication], lastIndex, outOfOrder}.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const MAX_SAMPLES = 20000;

  const ai = { state: "disconnected", user: "", centrifuge: null, jobs: [], latencies: [], resumes: [] };
  window.ai = ai;
  let config = null;
  let wasConnected = false;
  let onlineAt = null; // when the browser came back online (performance.now()), for the resume time

  const clock = () => performance.timeOrigin + performance.now(); // ms, same clock as the server's ts

  // ---- connection ------------------------------------------------------------------------------

  async function fetchToken() {
    const resp = await fetch("/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: ai.user }),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok || typeof body.token !== "string") throw new Error(body.error || `token: HTTP ${resp.status}`);
    return body.token;
  }

  function setState(state) {
    ai.state = state;
    const pill = $("state");
    pill.dataset.state = state;
    pill.textContent = { connected: "live", connecting: wasConnected ? "reconnecting…" : "connecting…" }[state] || "offline";
    const streaming = ai.jobs.some((j) => j.status === "streaming");
    if (state === "connecting" && wasConnected) {
      banner(streaming ? "Connection lost. Reconnecting… the answer resumes where it stopped." : "Connection lost. Reconnecting…");
    } else if (state === "connected" && $("banner").dataset.kind !== "resumed") {
      banner(null);
    }
  }

  function banner(text, kind = "warn") {
    const el = $("banner");
    el.hidden = !text;
    el.textContent = text || "";
    el.dataset.kind = text ? kind : "";
  }

  function connect() {
    const c = new Centrifuge(config.websocket, { getToken: fetchToken, name: "ai-stream-example" });
    ai.centrifuge = c;
    c.on("connecting", () => setState("connecting"));
    c.on("connected", () => {
      setState("connected");
      wasConnected = true;
    });
    c.on("disconnected", () => setState("disconnected"));
    window.addEventListener("online", () => (onlineAt = performance.now()));
    c.connect();
  }

  // ---- jobs --------------------------------------------------------------------------------------

  function render(job) {
    job.el.dataset.status = job.status;
    job.textEl.textContent = job.text;
    const secs = job.firstAt && job.lastAt > job.firstAt ? (job.lastAt - job.firstAt) / 1000 : 0;
    const rate = secs > 0 ? ` · ${((job.tokens - 1) / secs).toFixed(0)} tokens/s` : "";
    const label = { streaming: "streaming", done: "done", cancelled: "stopped", error: "failed" }[job.status];
    job.statusEl.textContent = label;
    job.countEl.textContent = `${job.tokens} tokens${rate}`;
    job.resumeEl.textContent = job.resumed ? `resumed ${job.resumed}× after reconnect` : "";
    $("stop").hidden = !ai.jobs.some((j) => j.status === "streaming");
  }

  function onPublication(job, ctx, recovering) {
    const msg = ctx.data;
    job.offsets.push(ctx.offset);
    if (msg.type === "token") {
      if (msg.i !== job.lastIndex + 1) job.outOfOrder += 1;
      job.lastIndex = msg.i;
      job.text += msg.text;
      job.tokens += 1;
      job.lastAt = performance.now();
      if (!job.firstAt) job.firstAt = job.lastAt;
      render(job);
      if (!recovering.now && ai.latencies.length < MAX_SAMPLES) ai.latencies.push(clock() - msg.ts);
      if (recovering.now) recovering.count += 1;
    } else if (msg.type === "end") {
      job.status = msg.reason === "done" ? "done" : msg.reason;
      if (msg.reason === "cancelled") {
        const mark = document.createElement("span");
        mark.className = "marker";
        mark.textContent = "cancelled";
        job.textEl.after(mark);
      }
      render(job);
      job.sub.unsubscribe();
      ai.centrifuge.removeSubscription(job.sub);
    }
  }

  function addTurn(question) {
    const li = document.createElement("li");
    li.className = "turn";
    li.innerHTML =
      '<div class="question"></div><div class="answer card"><p class="text"></p>' +
      '<div class="meta"><span class="status"></span><span class="count"></span><span class="resumes"></span></div></div>';
    li.querySelector(".question").textContent = question;
    $("thread").append(li);
    $("empty").hidden = true;
    return li;
  }

  async function ask(question) {
    $("ask-error").hidden = true;
    let reply;
    try {
      reply = (await ai.centrifuge.rpc("ask", { question })).data;
    } catch (err) {
      $("ask-error").textContent = `Could not ask: ${err.message || err} (${err.code || "?"})`;
      $("ask-error").hidden = false;
      return;
    }
    const el = addTurn(question);
    const job = {
      id: reply.job, channel: reply.channel, question, text: "", tokens: 0, status: "streaming",
      offsets: [], lastIndex: -1, outOfOrder: 0, resumed: 0, firstAt: 0, lastAt: 0,
      el, textEl: el.querySelector(".text"), statusEl: el.querySelector(".status"),
      countEl: el.querySelector(".count"), resumeEl: el.querySelector(".resumes"), sub: null,
    };
    ai.jobs.push(job);
    render(job);
    const recovering = { now: false, count: 0 };
    const sub = ai.centrifuge.newSubscription(job.channel, { since: { offset: 0, epoch: reply.epoch } });
    job.sub = sub;
    sub.on("publication", (ctx) => onPublication(job, ctx, recovering));
    sub.on("subscribed", (ctx) => {
      // Publications recovered with the subscribe reply are delivered right after this event,
      // in the same task: they are counted as caught up, not as live latency samples.
      if (!ctx.wasRecovering || job.offsets.length === 0) return;
      recovering.now = true;
      recovering.count = 0;
      queueMicrotask(() => {
        recovering.now = false;
        job.resumed += 1;
        const ms = onlineAt === null ? null : performance.now() - onlineAt;
        ai.resumes.push({ job: job.id, ms, caughtUp: recovering.count, recovered: ctx.recovered });
        render(job);
        if (job.status === "streaming" || recovering.count) {
          const lost = ctx.recovered ? "" : " Some tokens could not be recovered.";
          banner(`Back online: ${recovering.count} tokens caught up, none lost or repeated.${lost}`, "resumed");
          setTimeout(() => $("banner").dataset.kind === "resumed" && banner(null), 4000);
        }
      });
    });
    sub.on("error", (ctx) => console.warn("subscription error", ctx.error));
    sub.subscribe();
  }

  async function cancelRunning() {
    for (const job of ai.jobs.filter((j) => j.status === "streaming")) {
      try {
        await ai.centrifuge.rpc("cancel", { job: job.id });
      } catch (err) {
        console.warn("cancel failed", err);
      }
    }
  }

  // ---- page --------------------------------------------------------------------------------------

  function start(user) {
    ai.user = user;
    $("signin").hidden = true;
    $("chat").hidden = false;
    $("me").hidden = false;
    $("me").textContent = user;
    $("pace").textContent = String(config.tokens_per_second);
    connect();
    $("question").focus();
  }

  async function main() {
    config = await (await fetch("/config.json")).json();
    $("ask").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = $("question").value.trim();
      if (!q) return;
      $("question").value = "";
      ask(q);
    });
    $("question").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        $("ask").requestSubmit();
      }
    });
    $("stop").addEventListener("click", cancelRunning);
    for (const chip of document.querySelectorAll(".chip")) {
      chip.addEventListener("click", () => ask(chip.textContent));
    }
    $("signin").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = $("name").value.trim();
      if (!NAME_RE.test(name)) {
        $("signin-error").textContent = "1-32 letters, digits, '_', '-' or '.'";
        $("signin-error").hidden = false;
        return;
      }
      localStorage.setItem("ai-stream-user", name);
      start(name);
    });
    const fromUrl = new URLSearchParams(location.search).get("user");
    const user = fromUrl && NAME_RE.test(fromUrl) ? fromUrl : localStorage.getItem("ai-stream-user");
    if (user && NAME_RE.test(user)) start(user);
    else $("signin").hidden = false;
  }

  main();
})();
