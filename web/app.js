// fovea's page: the form, the engine's life cycle, the image, the gallery and the
// pruning figures.
//
// Plain ES modules, no framework and no build step, on purpose: the page is one form
// and one result view whose state lives in the wasm engine, so a framework would add a
// dependency, a toolchain (npm in the build, not only in the tests) and a rendering
// layer without removing any real complexity. The browser loads these files as they are
// in the repository, so what you read here is what runs, and `cargo xtask serve` needs
// nothing but the wasm bundle. Each module does one job: cache.js keeps and checks the
// weights, models.js finds a model's files, heatmap.js draws the pruning map.

import { clearCache } from "./cache.js";
import { describeCell, drawHeatMap, legendGradient } from "./heatmap.js";
import {
  DEFAULT_MODEL,
  FALLBACK_MODEL,
  SERVED_MODELS,
  fetchManifest,
  loadPicked,
  loadServed,
  loadServedTaesd,
} from "./models.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

/** The page's state, also read by the end-to-end test (window.fovea.state). */
const state = {
  state: "loading", // idle | loading | generating | done | error | no-webgpu
  message: "",
  adapter: null, // engine.info()
  model: null, // engine.loadModel's answer
  modelName: null,
  load: null, // {files, bytes, fromCache, refetched, verified, ms}
  step: null, // {step, total} of the last progress report
  taesd: false, // a fast decoder is loaded
};
window.fovea = { state, lastResult: null };

let engine = null;
let granularity = 8;
let cancelling = false;
let deviceGone = false; // after a lost device or an engine crash only a reload helps
const manifests = new Map(); // served model name -> manifest, or null when not offered
const manifestErrors = new Map(); // served model name -> why it is not offered
const gallery = []; // {id, result, params, modelName, wallMs, url}
let shown = null; // the gallery entry on display
let heatLayout = null;

// ---------------------------------------------------------------- status and messages

function setStatus(kind, text) {
  state.state = kind;
  state.message = text;
  const el = $("status");
  el.dataset.state = kind;
  el.textContent = text;
  const busy = kind === "loading" || kind === "generating";
  $("controls").setAttribute("aria-busy", String(busy));
  $("generate").disabled = !state.model || kind === "loading" || kind === "no-webgpu" || deviceGone;
  const closed = busy || kind === "no-webgpu" || deviceGone;
  $("model-select").disabled = closed;
  $("folder-input").disabled = closed;
}

function errorText(e) {
  if (e instanceof Error) return e.message;
  return typeof e === "string" ? e : JSON.stringify(e);
}

function showBanner(text, { reload = false } = {}) {
  $("banner-text").textContent = text;
  $("reload").hidden = !reload;
  $("banner").hidden = false;
}

/** Reports an engine error in words a user can act on. */
function reportError(e, during) {
  const text = errorText(e);
  if (/cancelled/i.test(text)) {
    setStatus("idle", `Stopped: ${text}.`);
    return;
  }
  if (/\blost\b/i.test(text)) {
    deviceGone = true;
    showBanner(
      "The GPU device was lost (the driver reset, memory ran out, or the system took the GPU back). " +
        "Reload the page to start again.",
      { reload: true },
    );
    setStatus("error", `GPU device lost ${during}: ${text}`);
    return;
  }
  if (/unreachable|RuntimeError|panicked/i.test(text)) {
    deviceGone = true;
    showBanner("The engine stopped with an internal error (details in the browser console). Reload the page to go on.", {
      reload: true,
    });
    setStatus("error", `Engine error ${during}: ${text}`);
    return;
  }
  // The engine names the adapter limit it hit (`max_buffer_size`, "above the adapter's
  // max_compute_workgroups_per_dimension", "exceeds the limit", ...).
  if (/limit|\bmax_\w+|above the adapter|exceed/i.test(text)) {
    setStatus(
      "error",
      `This is more than your GPU allows ${during}: ${text}. Try a smaller width and height, ` +
        "or a VAE tile size under Advanced.",
    );
    return;
  }
  setStatus("error", `Failed ${during}: ${text}`);
}

/** No WebGPU: `reason` is one sentence; `detail` (the engine's words) goes to the status. */
function noWebGpu(reason, detail = "") {
  showBanner(
    `fovea needs WebGPU, and ${reason} Try a current Chrome or Edge (on Linux, enable ` +
      "chrome://flags/#enable-unsafe-webgpu), Safari 26 or newer, or Firefox 141 or newer on Windows.",
  );
  setStatus("no-webgpu", `WebGPU is not available: ${reason}${detail ? ` (${detail})` : ""}`);
  $("adapter").textContent = "GPU: none (no WebGPU adapter)";
}

const formatBytes = (n) =>
  n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
const formatMs = (ms) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

const nextFrame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));

// ---------------------------------------------------------------- engine and model

async function start() {
  wireForm();
  $("legend-bar").style.background = legendGradient();
  if (!navigator.gpu) {
    noWebGpu("this browser does not offer it (navigator.gpu is missing).");
    return;
  }
  setStatus("loading", "Loading the engine…");
  let wasm;
  try {
    wasm = await import("./pkg/fovea_web.js");
    await wasm.default();
  } catch (e) {
    setStatus("error", `Could not load the engine (web/pkg): ${errorText(e)}. Build it with \`cargo xtask web\`.`);
    return;
  }
  // Ask the browser first: its answer makes a clearer message than wgpu's, which lists
  // native backends that a web page never has.
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    noWebGpu("this browser offers no GPU adapter for it (WebGPU may be switched off, or this GPU blocked).");
    return;
  }
  try {
    engine = await wasm.Engine.create(!query.has("f32"), isSoftwareAdapter(adapter));
    window.fovea.engine = engine; // for scripts and the end-to-end test
  } catch (e) {
    noWebGpu("the engine could not open the GPU adapter.", errorText(e));
    return;
  }
  const info = engine.info();
  state.adapter = info;
  if (!info.adapter) info.adapter = adapterName(adapter);
  const gib = (n) => `${(n / 2 ** 30).toFixed(n >= 2 ** 30 ? 0 : 2)} GiB`;
  $("adapter").textContent =
    `GPU: ${info.adapter || "unnamed adapter"} (${info.backend}) · ${info.f16 ? "f16" : "f32"} · ` +
    `max buffer ${gib(info.maxBufferSize)}, storage binding ${gib(info.maxStorageBufferBindingSize)}`;
  if (!info.f16) {
    $("model-note").hidden = false;
    $("model-note").textContent = query.has("f32")
      ? "Running in f32 as the page address asks (?f32)."
      : "This GPU adapter has no shader-f16, so fovea runs in f32: correct, but slower and with twice the memory.";
    $("model-note").dataset.kind = "f16";
  }
  await chooseServedModel();
}

/** Whether the browser says the adapter is a software one (SwiftShader, a fallback). */
function isSoftwareAdapter(adapter) {
  const i = adapter.info ?? {};
  const text = `${i.vendor ?? ""} ${i.architecture ?? ""} ${i.description ?? ""}`;
  return Boolean(adapter.isFallbackAdapter || i.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe|warp/i.test(text);
}

/** The adapter's description as the browser gives it (wgpu's name is empty on the web). */
function adapterName(adapter) {
  const i = adapter.info;
  return i ? i.description || [i.vendor, i.architecture].filter(Boolean).join(" ") : "";
}

/** Fills the model picker and loads the model the address asks for, or the default. */
async function chooseServedModel() {
  const select = $("model-select");
  const requested = query.get("model");
  const names = Object.keys(SERVED_MODELS);
  if (requested && !names.includes(requested)) names.push(requested);
  select.replaceChildren(
    ...names.map((n) => new Option(SERVED_MODELS[n] ?? `${n} (served)`, `served:${n}`)),
    new Option("A diffusers folder from your disk…", "folder"),
  );
  let name = requested ?? DEFAULT_MODEL;
  if (!(await manifestOf(name))) {
    const fallback = name === FALLBACK_MODEL ? DEFAULT_MODEL : FALLBACK_MODEL;
    const why = manifestErrors.get(name);
    if (!(await manifestOf(fallback))) {
      setStatus("idle", `This server offers no model (${why}): open a diffusers folder from your disk.`);
      return;
    }
    console.warn(`fovea: ${name} is not available: ${why}`);
    addNote(
      `${name} is not on this server, so the page uses ${fallback}` +
        (fallback === FALLBACK_MODEL ? ": a model with random weights, for testing. Its images are noise." : "."),
    );
    name = fallback;
  }
  for (const opt of select.options) {
    const n = opt.value.slice("served:".length);
    if (manifests.get(n) === null) {
      opt.disabled = true;
      opt.textContent += " (not on this server)";
    }
  }
  select.value = `served:${name}`;
  await loadServedModel(name);
}

/** The manifest of served model `name`, or null (the reason kept in manifestErrors). */
async function manifestOf(name) {
  if (!manifests.has(name)) {
    try {
      manifests.set(name, await fetchManifest(name));
    } catch (e) {
      manifests.set(name, null);
      manifestErrors.set(name, errorText(e));
    }
  }
  return manifests.get(name);
}

function addNote(text) {
  const el = document.createElement("p");
  el.className = "note";
  el.textContent = text;
  $("model-note").after(el);
}

function downloadProgress({ done, total, file }, verb) {
  const bar = $("download-progress");
  bar.max = Math.max(total, 1);
  bar.value = done;
  $("download-text").textContent = `${verb} ${formatBytes(done)} of ${formatBytes(total)}${file ? ` · ${file}` : ""}`;
}

async function loadServedModel(name) {
  setStatus("loading", `Fetching ${name}…`);
  $("download-label").textContent = "Weights";
  try {
    const manifest = await manifestOf(name);
    if (!manifest) throw new Error(manifestErrors.get(name));
    const folder = await loadServed(name, manifest, { onProgress: (p) => downloadProgress(p, "Fetched") });
    await installModel(name, folder);
  } catch (e) {
    restoreModelSelect();
    reportError(e, `loading ${name}`);
  }
}

/** After a failed load: the picker shows the model that is still loaded. */
function restoreModelSelect() {
  const select = $("model-select");
  const current = state.modelName && [...select.options].find((o) => o.value === `served:${state.modelName}`);
  if (current) select.value = current.value;
  else if (state.modelName) select.value = "folder";
}

async function loadFolder(fileList) {
  setStatus("loading", "Reading the folder…");
  $("download-label").textContent = "Reading";
  try {
    const folder = await loadPicked(fileList, { onProgress: (p) => downloadProgress(p, "Read") });
    await installModel(folder.origin, folder);
    const select = $("model-select");
    const opt = [...select.options].find((o) => o.value === "folder");
    opt.textContent = `Folder: ${folder.origin}`;
    select.value = "folder";
  } catch (e) {
    restoreModelSelect();
    reportError(e, "loading the folder");
  }
}

/** Hands fetched or read files to the engine and sets the form up for the model. */
async function installModel(name, folder) {
  const { stats } = folder;
  $("download-progress").max = Math.max(stats.bytes, 1);
  $("download-progress").value = stats.bytes;
  const cached = stats.fromCache ? ` (${stats.fromCache} of ${stats.files} files from the cache)` : "";
  const fixed = stats.refetched ? `; ${stats.refetched} corrupt cached file(s) fetched again` : "";
  $("download-text").textContent = `${formatBytes(stats.bytes)} in ${formatMs(stats.ms)}${cached}${fixed}`;
  setStatus("loading", `Preparing ${name} on the GPU…`);
  await nextFrame(); // let the status paint: loadModel blocks while it uploads
  // The engine keeps the model it has when the new one does not load, and so does the
  // page (the gallery and the form stay as they are).
  let info;
  try {
    info = engine.loadModel(folder.origin, folder.model, query.has("f32"));
  } finally {
    folder.model.clear();
  }
  state.model = info;
  state.modelName = name;
  state.load = stats;
  granularity = info.granularity;
  for (const id of ["width", "height"]) {
    const input = $(id);
    input.min = input.step = String(granularity);
    input.max = String(Math.max(2048, info.nativeSize));
    input.value = String(info.nativeSize);
  }
  $("size-help").textContent = `Multiples of ${granularity}; this model's native size is ${info.nativeSize}×${info.nativeSize}.`;
  const defaultName = info.scheduler;
  $("scheduler").options[0].textContent = defaultName ? `model default (${defaultName})` : "model default";
  await installTaesd(folder);
  $("model-info").textContent =
    `${name}: ${info.dtype}, native ${info.nativeSize}×${info.nativeSize}, sizes in steps of ${granularity}` +
    (defaultName ? `, sampler ${defaultName}` : "") +
    (state.taesd ? ", TAESD fast decoder" : "");
  setStatus("idle", `Ready: ${name}.`);
}

/** The fast decoder: a `taesd/` folder inside the model, or `?taesd=<served name>`. */
async function installTaesd(folder) {
  state.taesd = false;
  let files = folder.taesd;
  let origin = `${folder.origin}/taesd`;
  const served = query.get("taesd");
  if (!files && served) {
    const manifest = await manifestOf(served);
    if (manifest) {
      files = await loadServedTaesd(served, manifest);
      origin = `models/${served}`;
    }
  }
  if (files) {
    try {
      engine.loadTaesd(origin, files);
      state.taesd = true;
    } catch (e) {
      addNote(`The fast decoder did not load: ${errorText(e)}`);
    }
  }
  $("taesd-field").hidden = !state.taesd;
  if (!state.taesd) $("taesd").checked = false;
}

// ---------------------------------------------------------------- generation

function readNumber(id, { integer = false, min = -Infinity, max = Infinity } = {}) {
  const label = document.querySelector(`label[for=${id}]`)?.firstChild.textContent.trim() ?? id;
  const v = Number($(id).value);
  if ($(id).value.trim() === "" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    $(id).focus();
    throw new Error(`${label}: ${$(id).value || "empty"} is not ${integer ? "a whole number" : "a number"} from ${min} to ${max}`);
  }
  return v;
}

/** The form as engine.generate parameters; throws an Error naming the bad field. */
function readParams() {
  const size = (id) => {
    const v = readNumber(id, { integer: true, min: granularity, max: 4096 });
    if (v % granularity) {
      $(id).focus();
      throw new Error(`${id === "width" ? "Width" : "Height"}: ${v} is not a multiple of ${granularity}`);
    }
    return v;
  };
  const detailWords = $("detail-words")
    .value.split(",")
    .map((w) => w.trim())
    .filter(Boolean);
  const params = {
    prompt: $("prompt").value,
    negativePrompt: $("negative").value,
    seed: readNumber("seed", { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
    steps: readNumber("steps", { integer: true, min: 1, max: 1000 }),
    cfg: readNumber("cfg", { min: 0, max: 100 }),
    width: size("width"),
    height: size("height"),
    scheduler: $("scheduler").value,
    clipSkip: readNumber("clip-skip", { integer: true, min: 0, max: 64 }),
    taesd: $("taesd").checked,
    prune: {
      enabled: $("prune").checked,
      threshold: Number($("threshold").value),
      skip: $("skip").value,
      refresh: readNumber("refresh", { integer: true, min: 0, max: 1000 }),
      above: readNumber("above", { min: 0, max: 1 }),
      crossAttention: $("cross").checked,
    },
  };
  const tile = readNumber("vae-tile", { integer: true, min: 0, max: 4096 });
  if (tile > 0) params.vaeTile = tile;
  if (detailWords.length) params.prune.detailWords = detailWords;
  return params;
}

function stepProgress(step, total) {
  const bar = $("step-progress");
  bar.max = Math.max(total, 1);
  bar.value = step;
  const percent = total > 0 ? Math.round((100 * step) / total) : 0;
  bar.dataset.progress = String(percent);
  $("step-text").textContent = total ? `${step} of ${total} (${percent}%)` : "–";
}

async function generate() {
  let params;
  try {
    params = readParams();
  } catch (e) {
    setStatus("error", e.message);
    return;
  }
  cancelling = false;
  const button = $("generate");
  button.textContent = "Cancel";
  button.classList.add("cancel");
  stepProgress(0, params.steps);
  state.step = { step: 0, total: params.steps };
  setStatus("generating", "Encoding the prompt…");
  button.disabled = false;
  const started = performance.now();
  try {
    const result = await engine.generate(params, (step, total) => {
      state.step = { step, total };
      stepProgress(step, total);
      setStatus("generating", step < total ? `Denoising: step ${step} of ${total}…` : "Decoding the image…");
      $("generate").disabled = false;
      return !cancelling;
    });
    const wallMs = performance.now() - started;
    const entry = await addToGallery(result, params, wallMs);
    window.fovea.lastResult = { ...result, params, wallMs };
    showEntry(entry);
    setStatus("done", `Done in ${formatMs(wallMs)}.`);
  } catch (e) {
    reportError(e, "while generating");
  } finally {
    button.textContent = "Generate";
    button.classList.remove("cancel");
    button.disabled = !state.model || deviceGone;
  }
}

// ---------------------------------------------------------------- result and gallery

function pngBlob(rgba, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function settingsLine(entry) {
  const p = entry.params;
  const sched = p.scheduler || state.model?.scheduler || "default";
  const parts = [`seed ${p.seed}`, `${p.steps} step${p.steps === 1 ? "" : "s"}`, `CFG ${p.cfg}`, `${p.width}×${p.height}`, sched];
  if (p.taesd) parts.push("TAESD");
  const prune = entry.result.summary.prune;
  if (prune) parts.push(`pruned ${(100 * prune.skippedShare).toFixed(1)}%`);
  return parts.join(" · ");
}

async function addToGallery(result, params, wallMs) {
  const blob = await pngBlob(result.rgba, result.width, result.height);
  const entry = {
    id: gallery.length + 1,
    result,
    params,
    modelName: state.modelName,
    wallMs,
    url: URL.createObjectURL(blob),
  };
  gallery.push(entry);
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.id = String(entry.id);
  const img = document.createElement("img");
  img.src = entry.url;
  img.alt = "";
  img.width = 96;
  img.height = Math.round((96 * result.height) / result.width);
  if (result.width < 128) img.classList.add("pixelated");
  const text = document.createElement("span");
  const prompt = document.createElement("strong");
  prompt.textContent = params.prompt || "(no prompt)";
  const settings = document.createElement("small");
  settings.textContent = settingsLine(entry);
  text.append(prompt, settings);
  button.append(img, text);
  button.setAttribute("aria-label", `Show image ${entry.id}: ${params.prompt}, ${settingsLine(entry)}`);
  button.addEventListener("click", () => showEntry(entry));
  li.append(button);
  $("gallery").prepend(li);
  $("gallery-empty").hidden = true;
  return entry;
}

function showEntry(entry) {
  shown = entry;
  const { rgba, width, height, summary } = entry.result;
  const canvas = $("image");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
  canvas.classList.toggle("pixelated", width < 256);
  canvas.setAttribute("aria-label", `Generated image: ${entry.params.prompt}`);
  $("placeholder").hidden = true;
  $("download").disabled = false;
  $("reuse").disabled = false;
  $("image-caption").textContent = `${entry.params.prompt || "(no prompt)"} — ${settingsLine(entry)} · ${entry.modelName}`;
  const t = summary.timings;
  const perStep = t.steps ? t.denoiseMs / t.steps : 0;
  $("timings").textContent =
    `Text ${formatMs(t.textMs)} · denoise ${formatMs(t.denoiseMs)} (${formatMs(perStep)} per step) · ` +
    `decode ${formatMs(t.decodeMs)}${t.decodeTiles > 1 ? ` in ${t.decodeTiles} tiles` : ""} · total ${formatMs(entry.wallMs)}`;
  for (const b of $("gallery").querySelectorAll(".thumb")) {
    b.setAttribute("aria-current", String(b.dataset.id === String(entry.id)));
  }
  showPruning(summary.prune);
}

function figure(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function showPruning(report) {
  const section = $("pruning");
  section.hidden = !report;
  if (!report) return;
  const list = $("prune-figures");
  list.replaceChildren();
  const gflop = (f) => (f >= 1e9 ? `${(f / 1e9).toFixed(2)} GFLOP` : `${(f / 1e6).toFixed(2)} MFLOP`);
  figure(list, "Attention work skipped", `${(100 * report.skippedShare).toFixed(1)}% (${gflop(report.flopsSkipped)} of ${gflop(report.flopsTotal)})`);
  figure(list, "Threshold used", `${report.threshold.toFixed(3)} (after detail words and guidance)`);
  figure(list, "Detail words found", report.detailWords.length ? report.detailWords.join(", ") : "none");
  const self = report.layers.filter((l) => l.kind === "self").length;
  figure(list, "Layers", `${report.layers.length} (${self} self-, ${report.layers.length - self} cross-attention), ${report.forwards} UNet forwards`);
  drawShownHeatMap();
}

function drawShownHeatMap() {
  const report = shown?.result.summary.prune;
  if (!report) return;
  const wrap = document.querySelector(".heatmap-wrap");
  heatLayout = drawHeatMap($("heatmap"), report, Math.max(wrap.clientWidth - 2, 120));
  $("heatmap").setAttribute(
    "aria-label",
    `Heat map of pruned heads: ${report.layers.length} layers by ${heatLayout.cols} steps, ` +
      `${(100 * report.skippedShare).toFixed(1)}% of attention work skipped`,
  );
}

function downloadShown() {
  if (!shown) return;
  const slug = (shown.params.prompt || "image")
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, "-")
    .replace(/^-|-$/g, "")
    .slice(0, 40);
  const a = document.createElement("a");
  a.href = shown.url;
  a.download = `fovea-${slug || "image"}-${shown.params.seed}.png`;
  a.click();
}

function reuseSettings() {
  if (!shown) return;
  const p = shown.params;
  $("prompt").value = p.prompt;
  $("negative").value = p.negativePrompt;
  $("seed").value = String(p.seed);
  $("steps").value = String(p.steps);
  $("cfg").value = String(p.cfg);
  $("width").value = String(p.width);
  $("height").value = String(p.height);
  $("scheduler").value = p.scheduler;
  $("clip-skip").value = String(p.clipSkip);
  $("vae-tile").value = String(p.vaeTile ?? 0);
  $("taesd").checked = p.taesd && state.taesd;
  $("prune").checked = p.prune.enabled;
  $("threshold").value = String(p.prune.threshold);
  $("skip").value = p.prune.skip;
  $("refresh").value = String(p.prune.refresh);
  $("above").value = String(p.prune.above ?? 1);
  $("cross").checked = p.prune.crossAttention;
  $("detail-words").value = (p.prune.detailWords ?? []).join(", ");
  syncPruneControls();
}

// ---------------------------------------------------------------- wiring

function syncPruneControls() {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  const on = $("prune").checked;
  for (const id of ["threshold", "skip", "refresh", "above", "cross", "detail-words"]) $(id).disabled = !on;
}

function wireForm() {
  $("controls").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (state.state === "generating") {
      cancelling = true;
      engine.cancel();
      $("generate").disabled = true;
      setStatus("generating", "Stopping after this step…");
    } else {
      generate();
    }
  });
  $("randomise").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 32));
  });
  $("prune").addEventListener("change", syncPruneControls);
  $("threshold").addEventListener("input", syncPruneControls);
  syncPruneControls();
  for (const id of ["width", "height"]) {
    // Snap to the model's granularity when the field is left, so typing is not fought.
    $(id).addEventListener("change", () => {
      const v = Number($(id).value);
      if (Number.isFinite(v) && v > 0) $(id).value = String(Math.max(granularity, Math.round(v / granularity) * granularity));
    });
  }
  $("model-select").addEventListener("change", (ev) => {
    const v = ev.target.value;
    if (v === "folder") $("folder-input").click();
    else loadServedModel(v.slice("served:".length));
  });
  $("folder-input").addEventListener("change", (ev) => {
    if (ev.target.files?.length) loadFolder(ev.target.files);
  });
  $("clear-cache").addEventListener("click", async () => {
    await clearCache();
    $("download-text").textContent = "Cached weights cleared; the next load downloads them again.";
  });
  $("download").addEventListener("click", downloadShown);
  $("reuse").addEventListener("click", reuseSettings);
  $("reload").addEventListener("click", () => location.reload());
  const heat = $("heatmap");
  heat.addEventListener("mousemove", (ev) => {
    const report = shown?.result.summary.prune;
    if (!report || !heatLayout) return;
    const r = heat.getBoundingClientRect();
    $("heatmap-tip").textContent = describeCell(heatLayout, report, ev.clientX - r.left, ev.clientY - r.top);
  });
  heat.addEventListener("mouseleave", () => ($("heatmap-tip").textContent = ""));
  let heatWidth = 0;
  new ResizeObserver(([e]) => {
    if (Math.round(e.contentRect.width) === heatWidth) return;
    heatWidth = Math.round(e.contentRect.width);
    drawShownHeatMap();
  }).observe(document.querySelector(".heatmap-wrap"));
  window.addEventListener("unhandledrejection", (ev) => reportError(ev.reason, "in the page"));
}

start().catch((e) => reportError(e, "while starting"));
