// spikestore view: the page. Talks to the server's /api/* routes (JSON) and draws with
// Plotly (served from the installed plotly package). No framework, no build step.
// What the store holds (names, units, errors) is untrusted: it reaches the page only as
// text (textContent, attributes, createElement), never as HTML.
"use strict";

// The server writes the token (URL-quoted) into the page; no cookie carries it.
const tokenMeta = document.querySelector('meta[name="spikestore-token"]');
const token = tokenMeta ? decodeURIComponent(tokenMeta.content)
  : new URLSearchParams(location.search).get("token") || "";
const POLL_MS = 2000;
const RECENT = 2000;
const SVG_POINTS = 20000; // above this many points a chart draws with WebGL // steps of raster and traces shown when the window is too long
const $ = (id) => document.getElementById(id);
const state = { rank: null, layers: [], sel: null, range: null, steps: -1, busy: false, meta: null,
  neuronsEdited: false };
const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const fmt = (n) => Number(n).toLocaleString("en-US");
// Plotly reads a few HTML tags in its texts: a store's words go there escaped, as text.
const plain = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

async function api(route, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) q.set(k, v);
  if (state.rank !== null) q.set("rank", state.rank);
  const resp = await fetch(`api/${route}?${q}`, { headers: { "X-Spikestore-Token": token } });
  let body;
  try { body = await resp.json(); } catch (e) { throw new Error(`${route}: ${resp.status} ${resp.statusText}`); }
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }
const keyOf = (l) => `${l.monitor}/${l.layer}`;
const selected = () => state.layers.find((l) => keyOf(l) === state.sel);
const plotWidth = (id) => Math.max(100, $(id).clientWidth - 90);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function sparkline(values) {
  const ok = (values || []).filter((v) => v !== null).map(Number).filter(Number.isFinite);
  const hi = Math.max(...ok, 0), lo = Math.min(...ok, 0), n = (values || []).length;
  if (!n) return null;
  const pts = [];
  values.forEach((v, i) => {
    if (v !== null && Number.isFinite(Number(v)))
      pts.push(`${(i / Math.max(1, n - 1)) * 100},${20 - ((Number(v) - lo) / ((hi - lo) || 1)) * 18}`);
  });
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 100 22");
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  return svg;
}

function writerBadge(w) {
  const b = $("writer");
  let cls = "idle", text = "no writer";
  if (w.locked) { cls = "active"; text = "writer active"; }
  else if (w.growing) { cls = "growing"; text = "growing"; }
  else if (w.locked === null) text = "writer unknown";
  b.className = `badge ${cls}`;
  b.textContent = `● ${text} · ${fmt(w.steps)} steps`;
}

function renderLayers() {
  const nav = $("layers");
  nav.replaceChildren();
  for (const l of state.layers) {
    const div = el("div", "layer");
    if (l.kind === "spikes" || l.kind === "values") div.classList.add(l.kind);
    if (keyOf(l) === state.sel) div.classList.add("selected");
    div.dataset.key = keyOf(l);
    const shape = !Array.isArray(l.shape) ? "?" : l.shape.length ? l.shape.join("×") : "scalar";
    const what = l.kind === "spikes" ? "rate" : l.kind === "values" ? "mean" : String(l.error || "");
    const name = el("div", "name");
    // a layer named "" (the model itself) shows as ''
    name.append(el("span", "monitor", `${l.monitor} /`), " ", el("span", "lname", l.layer || "''"));
    div.append(name, el("div", "meta", `${fmt(l.steps)} steps · ${shape} · ${what}`));
    const spark = sparkline(l.spark);
    if (spark) div.appendChild(spark);
    div.title = `${l.monitor} / ${l.layer}` + (l.dims ? ` (${l.dims.join(", ")})` : "");
    div.onclick = () => select(keyOf(l));
    nav.appendChild(div);
  }
  // Monitors and layers the reader left out (damaged metadata): named, as text.
  for (const d of (state.meta && state.meta.damaged) || []) nav.appendChild(el("div", "layer damaged", `cannot be read: ${d}`));
  const ts = $("trace-layer"), keep = ts.value;
  ts.replaceChildren();
  for (const l of state.layers) {
    const o = document.createElement("option");
    o.value = keyOf(l); o.textContent = keyOf(l);
    ts.appendChild(o);
  }
  if (keep && state.layers.some((l) => keyOf(l) === keep)) ts.value = keep;
  else pickTraceLayer();
}

function pickTraceLayer() {
  const cur = selected();
  if (!cur) return;
  // A membrane layer of the same name (v, v_seq, mem...), recorded as often if there is one.
  const named = (l) => l.kind === "values" && l.layer === cur.layer;
  const membrane = (l) => named(l) && /^(v|mem|volt|membrane)(_|$)/i.test(l.monitor);
  const twin = state.layers.find((l) => membrane(l) && l.steps === cur.steps) || state.layers.find(membrane)
    || state.layers.find((l) => named(l) && l.steps === cur.steps) || state.layers.find(named) || cur;
  $("trace-layer").value = keyOf(twin);
}

async function loadLayers() {
  const body = await api("layers");
  state.meta = body;
  state.layers = body.layers;
  $("path").textContent = body.path;
  $("run").textContent = body.dt ? `dt ${body.dt} ${body.time_unit || ""}` : "";
  if (!body.ranks) { // a store of one process (again, if a ranked one was replaced)
    $("rank-box").hidden = true;
    $("rank").replaceChildren();
    state.rank = null;
  } else if (!$("rank").options.length) {
    $("rank-box").hidden = false;
    for (const r of body.ranks) $("rank").add(new Option(`rank ${r}`, r));
    state.rank = body.rank;
  }
  if (!state.sel || !selected()) {
    const first = state.layers.find((l) => l.kind === "spikes") || state.layers[0];
    state.sel = first ? keyOf(first) : null;
  }
  writerBadge(body.writer);
  state.steps = body.writer.steps;
  renderLayers();
}

function window_(l) {
  // The steps in view: the zoomed range, else the whole run.
  if (!state.range) return [0, l.steps];
  return [Math.max(0, state.range[0]), Math.min(l.steps, state.range[1])];
}

function markShapes(marks, n) {
  const keys = Object.keys(marks || {});
  const key = keys.includes("epoch") ? "epoch" : keys[0];
  if (!key || !marks[key].intervals) return { shapes: [], annotations: [], note: key ? `${fmt(marks[key].count)} ${key} marks` : "" };
  const iv = marks[key].intervals;
  const shapes = iv.map((r, i) => ({ type: "rect", xref: "x", yref: "paper", x0: r[0] - 0.5, x1: r[1] - 0.5, y0: 0, y1: 1,
    fillcolor: i % 2 ? "rgba(9,105,218,0.07)" : "rgba(130,80,223,0.07)", line: { width: 0 }, layer: "below" }));
  const annotations = iv.length <= 40 ? iv.map((r) => ({ x: (r[0] + r[1]) / 2, y: 1, xref: "x", yref: "paper", yanchor: "bottom",
    text: plain(`${key} ${r[2]}`), showarrow: false, font: { size: 10, color: "#6e7781" } })) : [];
  return { shapes, annotations, note: `shaded: ${key} (${iv.length})` + (keys.length > 1 ? `; marks: ${keys.join(", ")}` : "") };
}

async function drawOverview() {
  const l = selected();
  if (!l) return;
  const [a, b] = window_(l);
  const ov = await api("overview", { monitor: l.monitor, layer: l.layer, start: state.range ? a : null,
    stop: state.range ? b : null, bins: Math.min(4000, plotWidth("overview")) });
  const x = ov.x.map((s) => s + (ov.k - 1) / 2);
  const what = ov.kind === "spikes" ? "spike rate" : "mean";
  const m = markShapes(ov.marks, ov.steps);
  for (const [start, , index] of (ov.runs || []).slice(1)) { // each writer opening after the first
    m.shapes.push({ type: "line", xref: "x", yref: "paper", x0: start - 0.5, x1: start - 0.5, y0: 0, y1: 1,
      line: { color: "#cf222e", width: 1, dash: "dash" } });
    m.annotations.push({ x: start, y: 0.98, xref: "x", yref: "paper", xanchor: "left", yanchor: "top",
      text: `run ${index}`, showarrow: false, font: { size: 10, color: "#cf222e" } });
  }
  if ((ov.runs || []).length > 1) m.note += `${m.note ? " · " : ""}${ov.runs.length} runs`;
  const traces = [
    { x, y: ov.min, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false },
    { x, y: ov.max, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(9,105,218,0.2)",
      name: "min–max", hoverinfo: "skip" },
    { x, y: ov.mean, mode: "lines", line: { width: 1.3, color: "#0969da" }, name: ov.k > 1 ? "mean" : what },
  ];
  const layout = {
    margin: { l: 60, r: 20, t: 18, b: 36 }, uirevision: state.sel, showlegend: false,
    xaxis: { title: { text: "step", standoff: 4 }, range: state.range ? [a - 0.5, b - 0.5] : undefined,
      autorange: state.range ? false : true },
    yaxis: { title: { text: what }, rangemode: "tozero" }, shapes: m.shapes, annotations: m.annotations,
  };
  await Plotly.react("overview", traces, layout, config);
  $("ov-title").textContent = `${l.monitor} / ${l.layer}: ${what}, ${fmt(ov.steps)} steps`;
  $("ov-title").dataset.steps = ov.steps;
  $("ov-note").textContent = (ov.k > 1 ? `bins of ${fmt(ov.k)} steps (min, mean, max)` : "every step") +
    (m.note ? ` · ${m.note}` : "");
}

function lastSteps(a, b, maxSteps) { return [Math.max(a, b - Math.max(1, maxSteps)), b]; }

async function drawRaster() {
  const l = selected();
  if (!l) return;
  let [a, b] = window_(l);
  if (!state.range) [a, b] = lastSteps(a, b, RECENT);
  if (l.kind !== "spikes") {
    Plotly.purge("raster");
    $("raster-title").textContent = `raster: ${l.monitor} / ${l.layer} holds values, not spikes`;
    $("raster-note").textContent = "choose a spike layer for its raster; its values are in the traces below";
    return;
  }
  const h = $("raster").clientHeight - 50;
  let r = await api("raster", { monitor: l.monitor, layer: l.layer, start: a, stop: b, width: plotWidth("raster"), height: h });
  let note = "";
  if (r.mode === "too_large") {
    note = `window too long for a raster: last ${fmt(r.max_steps)} steps`;
    r = await api("raster", { monitor: l.monitor, layer: l.layer, start: Math.max(a, b - r.max_steps), stop: b,
      width: plotWidth("raster"), height: h });
  }
  const T = r.time_len, xt = T > 1 ? `time step (step × ${T} + t)` : "step";
  let data;
  if (r.mode === "density") {
    const xs = Array.from({ length: r.nx }, (_, i) => r.x0 + r.kx * (i + 0.5) - 0.5);
    const ys = Array.from({ length: r.ny }, (_, j) => r.y0 + r.ky * (j + 0.5) - 0.5);
    data = [{ type: "heatmap", x: xs, y: ys, z: r.z, colorscale: [[0, "#ffffff"], [1, "#0b2e59"]], zmin: 0,
      colorbar: { title: { text: "spikes/bin", side: "right" }, thickness: 10 } }];
    const unit = T > 1 ? "time step" : "step";
    note = `${note ? note + " · " : ""}density: spikes per bin of ${r.kx} ${unit}${r.kx > 1 ? "s" : ""} × ${r.ky} neuron${r.ky > 1 ? "s" : ""}`;
  } else {
    // SVG for a few thousand marks: WebGL costs more to start than it saves there.
    data = [{ type: r.t.length > SVG_POINTS ? "scattergl" : "scatter", mode: "markers", x: r.t, y: r.n, marker: { size: 3, color: "#1f2328", symbol: "square" },
      hovertemplate: "t=%{x} neuron %{y}<extra></extra>" }];
  }
  const layout = { margin: { l: 60, r: 20, t: 10, b: 36 }, uirevision: `${state.sel}:${r.start}:${r.stop}`,
    xaxis: { title: { text: xt, standoff: 4 }, range: [r.start * T - 0.5, r.stop * T - 0.5] },
    yaxis: { title: { text: "neuron" }, range: [r.lo - 0.5, r.hi - 0.5] } };
  await Plotly.react("raster", data, layout, config);
  $("raster-title").textContent = `raster of steps ${fmt(r.start)}–${fmt(r.stop)}: ${fmt(r.total)} ${r.spikes ? "spikes" : "events"}`;
  $("raster-note").textContent = note;
}

async function drawTraces() {
  const key = $("trace-layer").value;
  const l = state.layers.find((x) => keyOf(x) === key);
  if (!l) return;
  if (!state.neuronsEdited) { // the first three neurons, or as many as the layer has
    const n = Number.isFinite(l.neurons) ? l.neurons : 3;
    $("trace-neurons").value = [0, 1, 2].filter((i) => i < n).join(",");
  }
  const ids = $("trace-neurons").value.split(/[ ,]+/).filter(Boolean).map(Number);
  if (!ids.length) {
    Plotly.purge("traces");
    $("trace-note").textContent = "no neurons to show";
    return;
  }
  const cur = selected();
  // The window in view where the layer counts steps as the selected one does, else its last steps.
  const alike = cur && Math.abs(cur.steps - l.steps) <= Math.max(64, l.steps / 100);
  let [a, b] = state.range && alike ? [state.range[0], Math.min(state.range[1], l.steps)] : [0, l.steps];
  if (!(state.range && alike)) [a, b] = lastSteps(a, b, RECENT);
  let t = await api("traces", { monitor: l.monitor, layer: l.layer, neurons: ids.join(","), start: a, stop: b });
  let note = "";
  if (t.mode === "too_large") {
    note = `last ${fmt(t.max_steps)} steps`;
    t = await api("traces", { monitor: l.monitor, layer: l.layer, neurons: ids.join(","), start: b - t.max_steps, stop: b });
  }
  const data = [];
  const kind = t.x.length * t.neurons.length > SVG_POINTS ? "scattergl" : "scatter";
  t.neurons.forEach((n, j) => {
    data.push({ type: kind, mode: "lines", x: t.x, y: t.y[j], name: `neuron ${n}`, line: { width: 1 } });
    if (t.spikes && t.spikes[j].length) {
      const y = t.spikes[j].map((s) => t.y[j][s - t.x[0]]);
      data.push({ type: kind, mode: "markers", x: t.spikes[j], y, name: `spikes ${n}`, showlegend: false,
        marker: { symbol: "triangle-down", size: 7, color: "#cf222e" } });
    }
  });
  const T = t.time_len;
  const layout = { margin: { l: 60, r: 20, t: 10, b: 36 }, legend: { orientation: "h", y: 1.12 },
    uirevision: `${key}:${ids}:${t.start}:${t.stop}`,
    xaxis: { title: { text: T > 1 ? `time step (step × ${T} + t)` : "step", standoff: 4 }, range: [t.start * T - 0.5, t.stop * T - 0.5] },
    yaxis: { title: { text: plain(l.units || "value") } } };
  await Plotly.react("traces", data, layout, config);
  $("trace-note").textContent = `steps ${fmt(t.start)}–${fmt(t.stop)}` + (note ? ` (${note})` : "") +
    (t.spikes_from ? ` · spikes from ${t.spikes_from.join(" / ")}` : " · no spike layer of this shape");
}

async function drawAll() {
  // The overview first (it answers from the summaries alone), then the two windows at once.
  try {
    await drawOverview();
    await Promise.all([drawRaster(), drawTraces()]);
    showError(null);
  } catch (e) { showError(e); }
}

async function select(key) {
  state.sel = key;
  state.range = null;
  $("follow").checked = true;
  renderLayers();
  pickTraceLayer();
  await drawAll();
}

async function poll() {
  try {
    const s = await api("status");
    writerBadge(s.writer);
    if (s.writer.steps !== state.steps && !state.busy) {
      state.busy = true;
      try {
        await loadLayers();
        const l = selected();
        if ($("follow").checked && state.range && l) {
          const w = state.range[1] - state.range[0];
          state.range = [Math.max(0, l.steps - w), l.steps];
        }
        if ($("follow").checked || !state.range) await drawAll(); else await drawOverview();
      } finally { state.busy = false; }
    }
  } catch (e) {
    // A ranked store replaced by one of one process: ask without a rank from now on.
    if (state.rank !== null && /not a ranked store/.test(String(e.message))) { state.rank = null; state.steps = -1; }
    showError(e);
  }
  setTimeout(poll, POLL_MS);
}

let zoomTimer = null;
function onZoom(ev) {
  const l = selected();
  if (!l) return;
  const r = ev["xaxis.range"] || (ev["xaxis.range[0]"] !== undefined ? [ev["xaxis.range[0]"], ev["xaxis.range[1]"]] : null);
  if (ev["xaxis.autorange"]) { state.range = null; }
  else if (r) {
    const a = Math.floor(Number(r[0]) + 0.5), b = Math.ceil(Number(r[1]) + 0.5);
    state.range = [Math.max(0, a), Math.max(a + 1, b)];
    if (b < l.steps) $("follow").checked = false;
  } else return;
  clearTimeout(zoomTimer);
  zoomTimer = setTimeout(drawAll, 150);
}

async function main() {
  try {
    await loadLayers();
    await drawAll();
  } catch (e) { showError(e); }
  if ($("overview").on) $("overview").on("plotly_relayout", onZoom);
  $("whole").onclick = () => { state.range = null; $("follow").checked = true; drawAll(); };
  $("rank").onchange = async () => { state.rank = Number($("rank").value); await loadLayers(); await drawAll(); };
  $("trace-layer").onchange = () => drawTraces().catch(showError);
  $("trace-neurons").onchange = () => { state.neuronsEdited = true; drawTraces().catch(showError); };
  setTimeout(poll, POLL_MS);
}

main();
