// convlens explorer: one page over the JSON API under /api (no framework, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, model: null, image: null, imageName: "", target: null, view: "cam",
  layers: null, journey: null, runs: [], run: null, seq: {},
};

// ---------------------------------------------------------------- helpers
// an image with fewer pixels than it is drawn with (a 28x28 digit) is drawn as crisp pixels, not blurred
document.addEventListener("load", (e) => {
  const img = e.target;
  if (img instanceof HTMLImageElement) img.classList.toggle("small-source", img.naturalWidth > 0 && img.naturalWidth < 128);
}, true);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path, opts = {}) {
  const res = await fetch(path, opts);
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return { body, headers: res.headers };
}

// Only the latest request of each kind updates the page.
function ticket(kind) { state.seq[kind] = (state.seq[kind] || 0) + 1; return state.seq[kind]; }
function current(kind, t) { return state.seq[kind] === t; }

function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

function status(id, msg) { const s = $(id); if (s) s.textContent = msg || ""; }

function pct(p) { return (100 * p).toFixed(p >= 0.1 ? 1 : 2) + "%"; }

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
}

function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

// ---------------------------------------------------------------- startup
async function init() {
  const { body: info } = await api("/api/info");
  state.info = info;
  state.model = info.default_model;
  const models = $("model");
  for (const m of info.models) models.append(el("option", { value: m }, m));
  models.value = state.model;
  models.addEventListener("change", () => selectModel(models.value));
  $("upload-limit").textContent = `PNG, JPEG, GIF, BMP, TIFF, WebP, PGM · up to ${(info.max_upload_bytes / 1048576).toFixed(0)} MB`;

  const samples = $("samples");
  for (const s of info.samples) {
    const b = el("button", { class: "sample", role: "listitem", title: s.name, "data-id": s.id,
                             onclick: () => selectImage(s.id, s.name + ".png") },
                 el("img", { src: `/api/images/${encodeURIComponent(s.id)}?size=160`, alt: s.name }),
                 el("span", {}, s.name));
    samples.append(b);
  }
  setupUpload();
  setupTabs();
  setupCam();
  setupJourney();
  setupKernels();
  setupFeaturevis();
  setupRuns();
  await loadLayers();
  if (info.samples.length) await selectImage(info.samples[0].id, info.samples[0].name + ".png");
}

function setupTabs() {
  // every view is always there; the runs view only when the server was given a runs folder
  const avail = { cam: true, journey: true, kernels: true, featurevis: true, runs: state.info.capabilities.runs };
  for (const b of document.querySelectorAll(".tabs [role=tab]")) {
    const v = b.dataset.view;
    if (!avail[v]) { b.hidden = true; continue; }
    b.addEventListener("click", () => showView(v));
  }
  const first = ["cam", "journey", "kernels", "featurevis", "runs"].find((v) => avail[v]);
  showView(first);
}

function showView(v) {
  state.view = v;
  for (const b of document.querySelectorAll(".tabs [role=tab]")) b.setAttribute("aria-selected", b.dataset.view === v ? "true" : "false");
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + v;
  refreshView();
}

function refreshView() {
  if (!state.image) return;
  if (state.view === "cam") updateCam();
  else if (state.view === "journey") updateJourney();
  else if (state.view === "kernels") updateKernels();
  else if (state.view === "runs") loadRuns();
}

async function selectModel(m) {
  state.model = m;
  $("model").value = m;
  state.target = null;
  state.journey = null;
  await loadLayers();
  if (state.image) { await predict(); refreshView(); }
}

async function loadLayers() {
  try {
    const { body } = await api("/api/layers?" + query({ model: state.model }));
    state.layers = body;
  } catch (e) { showError(e.message); return; }
  const camLayer = $("cam-layer");
  camLayer.replaceChildren(el("option", { value: "" }, body_default_label()));
  for (const r of state.layers.layers) {  // only the layers a map can be computed on, with their grid
    if (!r.cam || !r.grid) continue;
    const how = r.layout === "tokens" ? " · tokens" : r.layout === "nhwc" ? " · channels-last" : "";
    camLayer.append(el("option", { value: r.name },
                       `${r.name} · ${r.type} · ${r.grid.join("x")} grid · ${r.output_shape[0]} ch${how}`));
  }
  const fv = $("fv-layer");
  fv.replaceChildren();
  for (const r of state.layers.layers) if (/Conv/.test(r.type)) fv.append(el("option", { value: r.name }, `${r.name} · ${r.output_shape ? r.output_shape.join("×") : ""}`));
}

function body_default_label() {
  const d = state.layers && state.layers.default_cam_layer;
  return d ? `auto (${d})` : "auto (last conv stage)";
}

// ---------------------------------------------------------------- images & predictions
async function selectImage(id, name) {
  showError("");
  state.image = id;
  state.imageName = name || id;
  state.target = null;
  for (const b of document.querySelectorAll(".sample")) b.classList.toggle("active", b.dataset.id === id);
  const src = `/api/images/${encodeURIComponent(id)}`;
  $("current-img").src = src + "?size=480";
  $("current-name").textContent = state.imageName;
  $("current").hidden = false;
  $("cam-base").src = src + "?size=1024";
  await predict();
  refreshView();
}

async function predict() {
  const t = ticket("predict");
  const fd = new FormData();
  fd.append("image", state.image);
  fd.append("model", state.model);
  fd.append("top_k", "5");
  const list = $("predictions");
  list.classList.add("loading");
  try {
    const { body } = await api("/api/predict", { method: "POST", body: fd });
    if (!current("predict", t)) return;
    renderPredictions(body);
  } catch (e) {
    if (current("predict", t)) showError(e.message);
  } finally {
    list.classList.remove("loading");
  }
}

function renderPredictions(pred) {
  const list = $("predictions");
  list.replaceChildren();
  const top = pred.predictions[0] ? pred.predictions[0].probability : 1;
  for (const p of pred.predictions) {
    const fill = el("span", { class: "fill" });
    fill.style.width = Math.max(1, 100 * p.probability / Math.max(top, 1e-9)) + "%";
    const b = el("button", { class: "bar", title: `explain “${p.label}” (class ${p.index})`,
                             "data-index": p.index,
                             onclick: () => { state.target = p.index; markTarget(); showView("cam"); } },
                 el("span", { class: "label" }, p.label.split(",")[0]),
                 el("span", { class: "prob" }, pct(p.probability)),
                 el("span", { class: "track" }, fill));
    list.append(el("li", {}, b));
  }
  markTarget();
}

function markTarget() {
  for (const b of document.querySelectorAll("#predictions .bar")) {
    b.classList.toggle("active", state.target !== null && String(state.target) === b.dataset.index);
  }
}

function setupUpload() {
  const input = $("file");
  const zone = $("dropzone");
  input.addEventListener("change", () => { if (input.files[0]) upload(input.files[0]); input.value = ""; });
  for (const ev of ["dragenter", "dragover"]) zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) upload(f); });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => e.preventDefault());
}

async function upload(file) {
  showError("");
  if (file.size > state.info.max_upload_bytes) {
    showError(`${file.name}: upload is too large (limit ${(state.info.max_upload_bytes / 1048576).toFixed(0)} MB)`);
    return;
  }
  const fd = new FormData();
  fd.append("file", file, file.name);
  try {
    const { body } = await api("/api/images", { method: "POST", body: fd });
    await selectImage(body.id, body.name);
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- CAM
function setupCam() {
  const methods = $("cam-method");
  for (const m of state.info.cam_methods) methods.append(el("option", { value: m }, m));
  methods.addEventListener("change", updateCam);
  $("cam-layer").addEventListener("change", updateCam);
  const alpha = $("cam-alpha");
  const apply = () => { $("cam-heat").style.opacity = alpha.value; };
  alpha.addEventListener("input", apply);
  apply();
}

async function updateCam() {
  if (!state.image) return;
  const t = ticket("cam");
  const params = { image: state.image, model: state.model, method: $("cam-method").value,
                   layer: $("cam-layer").value, target: state.target };
  status("cam-status", "computing…");
  $("cam-stack").classList.add("loading");
  try {
    const { body } = await api("/api/cam?" + query(params));
    if (!current("cam", t)) return;
    $("cam-heat").src = body.heatmap_png;
    $("cam-raw").src = body.raw_png;
    $("cam-empty").textContent = body.note || "";
    $("cam-empty").hidden = !body.empty;
    $("cam-stack").classList.toggle("empty", Boolean(body.empty));
    const tgt = body.target || {};
    const label = tgt.label !== undefined ? `${String(tgt.label).split(",")[0]} (class ${tgt.index})` : "top class";
    $("cam-target").textContent = "explaining: " + label;
    $("cam-caption").textContent = `${body.method} · ${body.layer || "auto layer"} · ${state.imageName}`;
    $("cam-stack").dataset.method = body.method;
    status("cam-status", "");
  } catch (e) {
    if (current("cam", t)) { status("cam-status", ""); showError(e.message); }
  } finally {
    if (current("cam", t)) $("cam-stack").classList.remove("loading");
  }
}

// ---------------------------------------------------------------- journey
function setupJourney() {
  const slider = $("journey-slider");
  slider.addEventListener("input", debounce(() => updateJourney(Number(slider.value)), 60));
}

async function updateJourney(index) {
  if (!state.image) return;
  const t = ticket("journey");
  let layer = null;
  if (state.journey && state.journey.image === state.image && state.journey.model === state.model && index !== undefined) {
    layer = state.journey.layers[index];
  } else if (state.journey && state.journey.image === state.image && state.journey.model === state.model) {
    // a refresh (e.g. predictions arriving late) keeps the layer the slider shows, which may be a
    // choice whose feature maps are still on their way
    layer = state.journey.layers[Number($("journey-slider").value)] ?? state.journey.layer;
  }
  status("journey-status", "computing feature maps…");
  try {
    const { body } = await api("/api/journey?" + query({ image: state.image, model: state.model, layer }));
    if (!current("journey", t)) return;
    state.journey = { ...body, image: state.image, model: state.model };
    const slider = $("journey-slider");
    slider.max = String(body.layers.length - 1);
    slider.value = String(body.index);
    $("journey-layer").textContent = `${body.index + 1}/${body.layers.length} · ${body.layer} · ${body.types[body.layer] || ""} · ${body.shape.join("×")}`;
    const tiles = $("journey-tiles");
    tiles.replaceChildren();
    for (const tile of body.tiles) {
      tiles.append(el("button", { class: "channel", title: `channel ${tile.channel}`, "data-channel": tile.channel,
                                  onclick: () => enlarge(body.layer, tile.channel) },
                      el("img", { src: tile.png, alt: `channel ${tile.channel}` }),
                      el("span", {}, tile.channel)));
    }
    const more = body.n_channels - body.channels.length;
    status("journey-status", more > 0 ? `first ${body.channels.length} of ${body.n_channels} channels · click one to enlarge` : `${body.n_channels} channels · click one to enlarge`);
    $("journey-big").hidden = true;
  } catch (e) {
    if (current("journey", t)) { status("journey-status", ""); showError(e.message); }
  }
}

async function enlarge(layer, channel) {
  const t = ticket("channel");
  try {
    const { body } = await api("/api/journey/channel?" + query({ image: state.image, model: state.model, layer, channel }));
    if (!current("channel", t)) return;
    $("journey-big-img").src = body.png;
    $("journey-big-caption").textContent = `${layer} · channel ${channel} · ${body.shape.join("×")} · min ${body.min.toFixed(3)}, max ${body.max.toFixed(3)}`;
    $("journey-big").hidden = false;
    for (const b of document.querySelectorAll("#journey-tiles .channel")) b.classList.toggle("active", b.dataset.channel === String(channel));
  } catch (e) { showError(e.message); }
}

// ---------------------------------------------------------------- kernels lab
const NAMED = {};

function setupKernels() {
  const names = $("kernel-name");
  names.append(el("option", { value: "" }, "custom"));
  for (const k of state.info.kernels) names.append(el("option", { value: k }, k));
  names.value = "vertical-edge";
  buildMatrix(3, [[1, 0, -1], [1, 0, -1], [1, 0, -1]]);
  const live = debounce(updateKernels, 120);
  names.addEventListener("change", () => { if (names.value) fillNamed(names.value).then(live); else live(); });
  $("kernel-size").addEventListener("change", () => {
    names.value = "";
    const n = Number($("kernel-size").value);
    const m = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === (n - 1) / 2 && j === (n - 1) / 2 ? 1 : 0)));
    buildMatrix(n, m);
    live();
  });
  for (const id of ["kernel-color", "kernel-stride", "kernel-padding", "kernel-repeat", "kernel-pool", "kernel-pool-size"]) {
    $(id).addEventListener("input", live);
    $(id).addEventListener("change", live);
  }
  $("kernel-matrix").addEventListener("input", () => { names.value = ""; live(); });
}

function buildMatrix(n, values) {
  const box = $("kernel-matrix");
  box.replaceChildren();
  box.dataset.n = String(n);
  box.className = "matrix n" + n;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const v = values && values[i] ? values[i][j] : 0;
    box.append(el("input", { type: "text", inputmode: "decimal", value: fmt(v), "aria-label": `row ${i + 1} column ${j + 1}` }));
  }
}

function fmt(v) { return Number.isInteger(v) ? String(v) : String(Math.round(v * 10000) / 10000); }

async function fillNamed(name) {
  // The server knows the matrices; ask it once with a tiny image.
  if (!NAMED[name]) {
    const { body } = await api("/api/kernels", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: state.image || state.info.samples[0].id, kernel: name, size: 16 }) });
    NAMED[name] = body.kernel.matrix;
  }
  const m = NAMED[name];
  $("kernel-size").value = String(m.length);
  buildMatrix(m.length, m);
}

function matrixText() {
  const box = $("kernel-matrix");
  const n = Number(box.dataset.n);
  const vals = [...box.querySelectorAll("input")].map((i) => i.value.trim() || "0");
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(vals.slice(i * n, (i + 1) * n).join(","));
  return rows.join(";");
}

async function updateKernels() {
  if (!state.image) return;
  const t = ticket("kernels");
  const name = $("kernel-name").value;
  const req = {
    image: state.image, kernel: name || matrixText(), color: $("kernel-color").value,
    stride: Number($("kernel-stride").value) || 1, padding: $("kernel-padding").value,
    repeat: Number($("kernel-repeat").value) || 1, pool: $("kernel-pool").value || null,
    pool_size: Number($("kernel-pool-size").value) || 2,
  };
  try {
    const { body } = await api("/api/kernels", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req) });
    if (!current("kernels", t)) return;
    showError("");
    const stages = $("kernel-stages");
    stages.replaceChildren(el("figure", {}, el("img", { src: body.input_png, alt: "input" }),
                                          el("figcaption", {}, `input · ${body.input.shape.join("×")}`)));
    body.stages.forEach((s, i) => {
      stages.append(el("figure", { class: "stage" }, el("img", { src: body.stage_pngs[i], alt: s.label }),
                       el("figcaption", {}, `${s.label} · `, el("strong", { class: "shape" }, s.shape.join("×")))));
    });
    $("kernel-arith").replaceChildren(...body.arithmetic.map((a) => el("li", {}, a)));
    status("kernel-status", `kernel ${body.kernel.name} ${body.kernel.size.join("×")} · output ${body.shapes[body.shapes.length - 1].join("×")}`);
  } catch (e) {
    if (current("kernels", t)) showError(e.message);
  }
}

// ---------------------------------------------------------------- feature visualization
function setupFeaturevis() {
  $("fv-go").addEventListener("click", async () => {
    const t = ticket("fv");
    status("fv-status", "optimizing images… (this takes a while on a CPU)");
    try {
      const { body } = await api("/api/featurevis?" + query({ model: state.model, layer: $("fv-layer").value, channels: $("fv-channels").value }));
      if (!current("fv", t)) return;
      const out = $("fv-out");
      out.replaceChildren();
      if (body.filters_png) out.append(el("figure", {}, el("img", { src: body.filters_png, alt: "filters" }), el("figcaption", {}, `filters of ${body.layer}`)));
      else if (body.filters_error) out.append(el("p", { class: "muted" }, body.filters_error));
      out.append(el("figure", {}, el("img", { src: body.vis_png, alt: "activation maximization" }), el("figcaption", {}, `activation maximization · ${body.layer}`)));
      status("fv-status", "");
    } catch (e) { if (current("fv", t)) { status("fv-status", ""); showError(e.message); } }
  });
}

// ---------------------------------------------------------------- runs
function setupRuns() {
  $("run-use").addEventListener("click", () => { if (state.run) selectModel(state.run.model); });
  $("compare-form").addEventListener("submit", (ev) => { ev.preventDefault(); compareRuns($("compare-a").value, $("compare-b").value); });
}

function fillCompare(runs) {
  const form = $("compare-form");
  form.hidden = runs.length < 2;
  if (form.hidden) return;
  for (const [id, pick] of [["compare-a", 0], ["compare-b", 1]]) {
    $(id).replaceChildren(...runs.map((r, i) => { const o = el("option", { value: r.id }, r.id); o.selected = i === pick; return o; }));
  }
}

async function compareRuns(a, b) {
  if (a === b) { showError("pick two different runs to compare"); return; }
  const t = ticket("compare");
  status("runs-status", "comparing runs…");
  try {
    const { body } = await api(`/api/compare?run=${encodeURIComponent(a)}&run=${encodeURIComponent(b)}`);
    if (!current("compare", t)) return;
    showError("");
    $("compare").hidden = false;
    $("compare-title").textContent = `${a} vs ${b} (${body.data})`;
    const cols = [["run", "run"], ["arch", "architecture"], ["params", "parameters"], ["trainable", "trainable"],
                  ["accuracy", "accuracy"], ["macro_f1", "macro F1"], ["epochs", "epochs"], ["seconds", "time (s)"]];
    const cell = (r, k) => (k === "accuracy" || k === "macro_f1") ? pct(r[k])
      : (k === "seconds" && r[k] !== null && r[k] !== undefined) ? r[k].toFixed(1)
      : (k === "params" || k === "trainable") ? r[k].toLocaleString("en") : String(r[k] ?? "–");
    $("compare-table").replaceChildren(
      el("thead", {}, el("tr", {}, ...cols.map(([, h]) => el("th", {}, h)))),
      el("tbody", {}, ...body.runs.map((r) => el("tr", {}, ...cols.map(([k]) => el("td", {}, cell(r, k)))))));
    $("compare-figure").src = body.figure_png;
    status("runs-status", "");
  } catch (e) { if (current("compare", t)) { status("runs-status", ""); showError(e.message); } }
}

async function loadRuns() {
  if (!state.info.capabilities.runs) return;
  try {
    const { body } = await api("/api/runs");
    state.runs = body;
  } catch (e) { showError(e.message); return; }
  const list = $("runs-list");
  list.replaceChildren();
  if (!state.runs.length) { status("runs-status", "no runs in this folder yet (train one with `convlens train`)"); return; }
  for (const r of state.runs) {
    const acc = r.accuracy !== null && r.accuracy !== undefined ? pct(r.accuracy) : "–";
    list.append(el("button", { class: "run-card", "data-run": r.id, onclick: () => openRun(r.id) },
                   el("strong", {}, r.id), el("span", { class: "muted" }, `accuracy ${acc}`)));
  }
  fillCompare(state.runs);
  if (!state.run && state.runs.length) openRun(state.runs[0].id);
}

async function openRun(id) {
  const t = ticket("run");
  status("runs-status", "loading run…");
  try {
    const { body } = await api("/api/runs/" + encodeURIComponent(id));
    if (!current("run", t)) return;
    state.run = body;
    renderRun(body);
    status("runs-status", "");
    loadTopLosses(id, t);
  } catch (e) { if (current("run", t)) { status("runs-status", ""); showError(e.message); } }
}

function renderRun(run) {
  for (const b of document.querySelectorAll(".run-card")) b.classList.toggle("active", b.dataset.run === run.id);
  $("run").hidden = false;
  $("run-title").textContent = run.id;
  const m = run.metrics || {};
  const tiles = [["accuracy", m.accuracy], ["balanced accuracy", m.balanced_accuracy], ["macro F1", m.macro_f1]];
  $("run-metrics").replaceChildren(
    ...tiles.map(([k, v]) => el("div", { class: "tile" }, el("b", {}, v === undefined || v === null ? "–" : pct(v)), el("span", {}, k))),
    el("div", { class: "tile" }, el("b", {}, m.n_test ?? "–"), el("span", {}, "test images")));
  const curves = $("run-curves");
  if (run.has_curves) { curves.src = `/api/runs/${encodeURIComponent(run.id)}/curves.png`; curves.parentElement.hidden = false; }
  else curves.parentElement.hidden = true;
  renderConfusion(m.confusion || [], run.class_names || []);
  renderPerClass(m.per_class || {}, run.class_names || []);
}

function renderConfusion(conf, names) {
  const table = $("run-confusion");
  table.replaceChildren();
  if (!conf.length) return;
  const max = Math.max(1, ...conf.flat());
  const head = el("tr", {}, el("th", { class: "corner" }, "true ↓ / predicted →"));
  conf[0].forEach((_, j) => head.append(el("th", { title: names[j] || j }, short(names[j] ?? j))));
  table.append(el("thead", {}, head));
  const tbody = el("tbody");
  conf.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { title: names[i] || i }, short(names[i] ?? i)));
    row.forEach((v, j) => {
      const td = el("td", { class: i === j ? "diag" : "" }, v);
      const a = v / max;
      td.style.background = i === j ? `rgba(79, 70, 229, ${0.08 + 0.8 * a})` : (v ? `rgba(220, 38, 38, ${0.1 + 0.7 * a})` : "transparent");
      if (a > 0.55) td.style.color = "#fff";
      tr.append(td);
    });
    tbody.append(tr);
  });
  table.append(tbody);
}

function short(s) { s = String(s); return s.length > 12 ? s.slice(0, 11) + "…" : s; }

function renderPerClass(per, names) {
  const table = $("run-per-class");
  table.replaceChildren();
  const rows = Array.isArray(per) ? per.map((r, i) => [r.name ?? r.label ?? names[i] ?? i, r]) : Object.entries(per);
  if (!rows.length) return;
  const keys = Object.keys(rows[0][1]).filter((k) => typeof rows[0][1][k] === "number");
  table.append(el("thead", {}, el("tr", {}, el("th", {}, "class"), ...keys.map((k) => el("th", {}, k.replace("_", " "))))));
  const tbody = el("tbody");
  for (const [name, r] of rows) {
    tbody.append(el("tr", {}, el("td", {}, name), ...keys.map((k) => el("td", { class: "num" }, k === "support" || k === "n" ? r[k] : r[k].toFixed(3)))));
  }
  table.append(tbody);
}

async function loadTopLosses(id, t) {
  const box = $("run-losses");
  box.replaceChildren(el("p", { class: "muted" }, "finding the top losses…"));
  try {
    const { body } = await api(`/api/runs/${encodeURIComponent(id)}/top-losses?k=8`);
    if (!current("run", t)) return;
    box.replaceChildren();
    for (const it of body.items) {
      const pics = el("div", { class: "pair" }, el("img", { src: it.image_png, alt: "test image" }));
      if (it.cam_png) pics.append(el("img", { src: it.cam_png, alt: "heatmap" }));
      box.append(el("figure", { class: "loss" }, pics,
        el("figcaption", {}, el("span", {}, `true ${it.true_label ?? it.true}`), el("span", { class: "bad" }, `pred ${it.predicted_label ?? it.predicted}`),
           el("span", { class: "muted" }, `loss ${Number(it.loss).toFixed(2)}`))));
    }
    if (!body.items.length) box.replaceChildren(el("p", { class: "muted" }, "no test images"));
  } catch (e) {
    if (current("run", t)) box.replaceChildren(el("p", { class: "muted" }, "top losses unavailable: " + e.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((e) => showError("could not start: " + e.message));
});
