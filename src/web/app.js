// trimtab's operator page: polls the HTTP API and draws what it returns on canvas and SVG; no libraries.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(250, Number(params.get("poll")) || 1000);
  const COLORS = ["#2f6fdf", "#d9822b", "#2a9d5c", "#a33ea1", "#c0392b", "#6b7a8f"];

  // What each chart drew last, for people reading the legend and for the browser test.
  const drawn = {};
  // Past one-step-ahead forecasts per series, so the chart shows forecasts against what then happened.
  const pastForecasts = {};
  // Lag as seen in /v1/state, kept here when no metric store is served.
  const stateLag = [];
  window.trimtab = { drawn, pastForecasts, polls: 0, errors: [] };

  const $ = (id) => document.getElementById(id);

  function token() {
    return $("token").value.trim();
  }

  function say(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.className = isError ? "status error" : "status";
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    const t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
    if (!r.ok) {
      const e = new Error((data && data.error) || ("HTTP " + r.status));
      e.status = r.status;
      throw e;
    }
    return data;
  }

  function clock(unix) {
    return new Date(unix * 1000).toISOString().substring(11, 19);
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "?";
    const a = Math.abs(v);
    return a >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(a >= 10 ? 1 : 2);
  }

  // Draws lines (series: [{label, points: [[t, v]]}]), an optional interval band ([[t, lo, hi]]) and dots.
  function lineChart(id, series, opts) {
    opts = opts || {};
    const canvas = $(id);
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, L = 48, R = 10, T = 10, B = 24;
    ctx.clearRect(0, 0, W, H);
    const band = opts.band || [];
    let t0 = Infinity, t1 = -Infinity, vmax = 0;
    for (const s of series) for (const [t, v] of s.points) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); vmax = Math.max(vmax, v); }
    for (const [t, , hi] of band) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); vmax = Math.max(vmax, hi); }
    const count = series.reduce((n, s) => n + s.points.length, 0);
    drawn[id] = { series: series.map((s) => ({ label: s.label, points: s.points.slice() })), band: band.slice() };
    canvas.dataset.points = String(count);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#666";
    if (!Number.isFinite(t0)) {
      ctx.fillText(opts.empty || "no data yet", L, H / 2);
      return;
    }
    if (t1 === t0) t1 = t0 + 1;
    vmax = vmax > 0 ? vmax * 1.1 : 1;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => H - B - (v / vmax) * (H - T - B);
    ctx.strokeStyle = "#d5d9de";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = (vmax * i) / 4;
      ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
      ctx.fillText(fmt(v), 4, y(v) + 4);
    }
    for (let i = 0; i <= 3; i++) {
      const t = t0 + ((t1 - t0) * i) / 3;
      ctx.fillText(clock(t), Math.min(x(t) - 20, W - R - 48), H - 6);
    }
    if (band.length > 1) {
      ctx.fillStyle = "rgba(217,130,43,0.18)";
      ctx.beginPath();
      band.forEach(([t, , hi], i) => (i ? ctx.lineTo(x(t), y(hi)) : ctx.moveTo(x(t), y(hi))));
      for (let i = band.length - 1; i >= 0; i--) ctx.lineTo(x(band[i][0]), y(band[i][1]));
      ctx.closePath();
      ctx.fill();
    }
    series.forEach((s, i) => {
      ctx.strokeStyle = s.color || COLORS[i % COLORS.length];
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      s.points.forEach(([t, v], j) => (j ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
      ctx.setLineDash([]);
      if (s.dots || s.points.length === 1) for (const [t, v] of s.points) { ctx.beginPath(); ctx.arc(x(t), y(v), 2.5, 0, 7); ctx.fill(); }
    });
  }

  function legend(id, series, unit) {
    $(id).textContent = series
      .map((s) => {
        const last = s.points[s.points.length - 1];
        return last ? `${s.label}: ${fmt(last[1])} ${unit} at ${clock(last[0])}` : `${s.label}: no data`;
      })
      .join(" · ");
  }

  function seriesFrom(windows, labelKey) {
    return windows
      .filter((w) => w.samples.length > 0)
      .map((w) => ({ label: w.labels[labelKey] || w.name, points: w.samples.map((s) => [s.at, s.value]) }));
  }

  async function drawDepth() {
    const data = await api("GET", "/v1/metrics/series?name=queue_active");
    const series = seriesFrom(data.series, "entity");
    lineChart("chart-depth", series, { empty: "waiting for the first depth sample" });
    legend("legend-depth", series, "messages");
  }

  async function drawLag(state) {
    let series;
    try {
      const data = await api("GET", "/v1/metrics/series?name=lag_oldest_age_s");
      series = seriesFrom(data.series, "key");
    } catch (e) {
      if (e.status !== 503) throw e;
      // No metric store here: draw what /v1/state said over this page's lifetime.
      series = [{ label: "all partitions", points: stateLag.slice() }];
    }
    if (state) {
      stateLag.push([Date.parse(state.lag.taken_at) / 1000, state.lag.overall.oldest_age_ms / 1000]);
      if (stateLag.length > 600) stateLag.shift();
    }
    lineChart("chart-lag", series, { empty: "no lag measured yet" });
    legend("legend-lag", series, "s");
  }

  async function drawForecast() {
    const data = await api("GET", "/v1/forecasts");
    const list = data.forecasts || [];
    const f = list.find((x) => x.name === "arrival_rate") || list[0];
    if (!f) {
      lineChart("chart-forecast", [], { empty: "no forecast yet: the agent needs some history first" });
      $("legend-forecast").textContent = "";
      return;
    }
    const key = f.name + JSON.stringify(f.labels);
    const past = (pastForecasts[key] = pastForecasts[key] || {});
    if (f.points.length > 0) past[f.points[0].at] = f.points[0];
    const pastPoints = Object.values(past).sort((a, b) => a.at - b.at);
    const ahead = f.points;
    const actual = { label: "actual", points: f.actual.map((s) => [s.at, s.value]), color: COLORS[0] };
    const earlier = { label: "forecast one step ahead", points: pastPoints.map((p) => [p.at, p.value]), color: COLORS[1], dots: true };
    const next = { label: "forecast", points: ahead.map((p) => [p.at, p.value]), color: COLORS[1], dashed: true, dots: true };
    const band = pastPoints.concat(ahead.filter((p) => !(p.at in past)))
      .filter((p) => p.lower !== null && p.upper !== null)
      .map((p) => [p.at, Math.max(0, p.lower), p.upper]);
    lineChart("chart-forecast", [actual, earlier, next], { band });
    const lastActual = actual.points[actual.points.length - 1];
    const first = ahead[0];
    const mase = f.accuracy && f.accuracy.rolling_mase !== null && f.accuracy.rolling_mase !== undefined
      ? `, rolling MASE ${fmt(f.accuracy.rolling_mase)}` : "";
    $("legend-forecast").textContent =
      `${f.name}: actual ${lastActual ? fmt(lastActual[1]) + " at " + clock(lastActual[0]) : "?"}; ` +
      (first ? `next ${fmt(first.value)} [${fmt(first.lower)}, ${fmt(first.upper)}] at ${clock(first.at)}` : "") +
      ` (${f.model}, ${Math.round(f.coverage * 100)}% interval${mase})`;
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  async function drawPlacement() {
    const data = await api("GET", "/v1/placement");
    const root = $("placement");
    while (root.firstChild) root.removeChild(root.firstChild);
    const p = data.placement;
    if (!p || !p.pools || p.pools.length === 0) {
      root.appendChild(svg("text", { x: 48, y: 110, fill: "#666" }, "no placement read yet"));
      root.dataset.cells = "0";
      drawn.placement = [];
      return;
    }
    const nodes = [...new Set(p.pools.map((x) => x.node))].sort();
    const pools = [...new Set(p.pools.map((x) => x.pool))].sort();
    const W = 560, H = 220, L = 90, T = 22;
    const cw = (W - L - 6) / nodes.length, ch = Math.min(48, (H - T - 6) / pools.length);
    nodes.forEach((n, i) => root.appendChild(svg("text", { x: L + i * cw + 4, y: 14, "font-size": 11 }, n)));
    pools.forEach((pool, j) => root.appendChild(svg("text", { x: 4, y: T + j * ch + ch / 2 + 4, "font-size": 11 }, pool)));
    drawn.placement = [];
    for (const c of p.pools) {
      const i = nodes.indexOf(c.node), j = pools.indexOf(c.pool);
      const used = c.total_kib > 0 ? 1 - c.free_kib / c.total_kib : 0;
      const g = svg("g", { "data-node": c.node, "data-pool": c.pool, "data-replicas": c.replicas });
      g.appendChild(svg("rect", { x: L + i * cw + 1, y: T + j * ch + 1, width: cw - 2, height: ch - 2, fill: "#eef1f5", stroke: "#c9ced6" }));
      g.appendChild(svg("rect", { x: L + i * cw + 1, y: T + j * ch + 1, width: Math.max(0, (cw - 2) * used), height: ch - 2, fill: used > 0.85 ? "#e8a0a0" : "#b8cdf0" }));
      g.appendChild(svg("text", { x: L + i * cw + 6, y: T + j * ch + ch / 2 - 2, "font-size": 13, "font-weight": 600 }, String(c.replicas)));
      g.appendChild(svg("text", { x: L + i * cw + 6, y: T + j * ch + ch / 2 + 12, "font-size": 10, fill: "#555" }, `${Math.round(used * 100)}% used`));
      g.appendChild(svg("title", {}, `${c.node}/${c.pool}: ${c.replicas} replicas, ${c.free_kib} KiB free of ${c.total_kib}`));
      root.appendChild(g);
      drawn.placement.push({ node: c.node, pool: c.pool, replicas: c.replicas, free_kib: c.free_kib });
    }
    root.dataset.cells = String(p.pools.length);
    const total = p.pools.reduce((n, c) => n + c.replicas, 0);
    $("legend-placement").textContent =
      `Replicas per node (columns) and pool (rows), bars show how full each pool is. ${total} diskful replicas over ${nodes.length} nodes and ${pools.length} pools as read at ${clock(data.sampled_at)}; ` +
      `${p.under_replicated.length} under-replicated, ${p.degraded.length} degraded`;
  }

  function verb(p) {
    return (p.change && p.change.action && p.change.action.verb) || "?";
  }

  async function drawProposals() {
    const list = await api("GET", "/v1/proposals");
    const body = $("proposals").tBodies[0];
    // Rebuild only when something changed, so a button is not replaced under a pointer on its way to it.
    const signature = JSON.stringify(list.slice(0, 50).map((p) => [p.id, p.status]));
    if (body.dataset.signature === signature) return;
    body.dataset.signature = signature;
    body.textContent = "";
    for (const p of list.slice(0, 50)) {
      const tr = document.createElement("tr");
      tr.dataset.id = p.id;
      const open = p.status.state === "recommended" || p.status.state === "pending";
      for (const [cls, text] of [["id", p.id], ["state", p.status.state], ["verb", verb(p)], ["target", p.change.target], ["reason", p.change.reason.summary]]) {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      if (open) {
        for (const [what, label] of [["approve", "Approve"], ["reject", "Reject"]]) {
          const b = document.createElement("button");
          b.type = "button";
          b.textContent = label;
          b.dataset[what] = p.id;
          b.addEventListener("click", () => decide(p.id, what));
          td.appendChild(b);
        }
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  async function drawAudit() {
    const data = await api("GET", "/v1/audit?limit=30");
    const body = $("audit").tBodies[0];
    const signature = data.records.map((r) => r.hash).join();
    if (body.dataset.signature === signature) return;
    body.dataset.signature = signature;
    body.textContent = "";
    for (const r of data.records.slice().reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.seq = r.seq;
      for (const text of [r.seq, new Date(r.at_unix_ms).toISOString().substring(0, 19) + "Z", r.kind, r.actor, r.subject]) {
        const td = document.createElement("td");
        td.textContent = String(text);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  async function drawMode() {
    const m = await api("GET", "/v1/mode");
    const el = $("mode");
    const paused = m.paused ? ` · PAUSED by ${m.paused.by}` : "";
    const effective = m.effective && m.effective !== m.configured ? ` (acting as ${m.effective}: ${m.why || ""})` : "";
    $("mode-text").textContent = m.agent_running ? `${m.configured}${effective}${paused}` : `no control loop${paused}`;
    el.dataset.mode = m.effective || m.configured || "";
    el.dataset.paused = m.paused ? "true" : "false";
  }

  async function decide(id, what) {
    try {
      const p = await api("POST", `/v1/proposals/${encodeURIComponent(id)}/${what}`, { by: $("by").value });
      say(`${what === "approve" ? "approved" : "rejected"} ${p.id}: now ${p.status.state}`);
      await drawProposals();
      await drawAudit();
    } catch (e) {
      say(`${what} ${id} failed: ${e.message}`, true);
    }
  }

  async function toggle(path) {
    try {
      await api("POST", path, { by: $("by").value });
      say(path === "/v1/pause" ? "paused: nothing is applied until resume" : "resumed");
      await drawMode();
      await drawAudit();
    } catch (e) {
      say(`${path.substring(4)} failed: ${e.message}`, true);
    }
  }

  async function poll() {
    let state = null;
    try { state = await api("GET", "/v1/state"); } catch (e) { window.trimtab.errors.push("state: " + e.message); }
    const parts = [["mode", drawMode], ["depth", drawDepth], ["lag", () => drawLag(state)], ["forecast", drawForecast],
      ["placement", drawPlacement], ["proposals", drawProposals], ["audit", drawAudit]];
    const failures = [];
    await Promise.all(parts.map(async ([name, f]) => {
      try { await f(); } catch (e) { if (e.status !== 503) failures.push(`${name}: ${e.message}`); }
    }));
    window.trimtab.polls += 1;
    window.trimtab.errors = failures;
    if (failures.length) {
      say(failures.join("; "), true);
    } else if ($("status").classList.contains("error") && $("status").textContent.indexOf("failed") < 0) {
      say("");
    }
    setTimeout(poll, POLL_MS);
  }

  $("pause").addEventListener("click", () => toggle("/v1/pause"));
  $("resume").addEventListener("click", () => toggle("/v1/resume"));
  poll();
})();
