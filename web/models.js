// Where a model's files come from: a folder the server offers (`/models/<name>/`, with
// a generated manifest.json of paths, sizes and SHA-256), or a diffusers folder the user
// picks from disk. Either way the result is a Map(relative path -> Uint8Array) for
// `engine.loadModel`, holding only the files the engine reads.

import { fetchVerified } from "./cache.js";

/** The served models the page knows, in the order it tries them. */
export const SERVED_MODELS = {
  "fovea-tiny": "fovea-tiny: fovea's small default model",
  "tiny-test": "tiny-test: random weights for testing (images are noise)",
};

/** The default model and the one used when the server does not have it. */
export const DEFAULT_MODEL = "fovea-tiny";
export const FALLBACK_MODEL = "tiny-test";

// The diffusers components the engine loads. Others (safety_checker: 1.2 GB,
// feature_extractor) are never read, so they are not downloaded or read from disk.
// `taesd/` is fovea's own convention: a fast decoder kept beside the model.
const COMPONENTS = new Set(["tokenizer", "text_encoder", "unet", "vae", "scheduler", "taesd"]);
const WANTED_FILE = /\.(json|txt|safetensors)$/i;

/**
 * The paths of a diffusers folder the engine needs: config / JSON / text files and
 * safetensors of the components it loads. Per component, the weights it would pick
 * (crates/fovea-models `pick_weight_files`): the files without a variant when there
 * are any, otherwise one variant (fp16 preferred); the rest are never loaded, so they
 * are not fetched (an SD folder often has both fp32 and fp16 copies).
 */
export function selectFiles(paths) {
  const keep = paths.filter((p) => {
    const parts = p.split("/");
    if (!WANTED_FILE.test(p)) return false;
    if (parts.length === 1) return p.endsWith(".json"); // model_index.json
    return COMPONENTS.has(parts[0]) && parts.length === 2;
  });
  const weightsByDir = new Map();
  for (const p of keep) {
    if (!p.endsWith(".safetensors")) continue;
    const [dir, name] = p.split("/");
    const stem = name.slice(0, -".safetensors".length);
    const dot = stem.lastIndexOf(".");
    const variant = dot < 0 ? "" : stem.slice(dot + 1);
    if (!weightsByDir.has(dir)) weightsByDir.set(dir, new Map());
    const variants = weightsByDir.get(dir);
    if (!variants.has(variant)) variants.set(variant, []);
    variants.get(variant).push(p);
  }
  const dropped = new Set();
  for (const variants of weightsByDir.values()) {
    const chosen = variants.has("")
      ? ""
      : variants.size === 1
        ? [...variants.keys()][0]
        : variants.has("fp16")
          ? "fp16"
          : null; // several unknown variants: pass them all, the engine's error names them
    if (chosen === null) continue;
    for (const [v, files] of variants) if (v !== chosen) files.forEach((f) => dropped.add(f));
  }
  return keep.filter((p) => !dropped.has(p));
}

/** Splits the selected files into the model's and the `taesd/` decoder's (paths inside it). */
function splitTaesd(files) {
  const model = new Map();
  const taesd = new Map();
  for (const [path, bytes] of files) {
    if (path.startsWith("taesd/")) taesd.set(path.slice("taesd/".length), bytes);
    else model.set(path, bytes);
  }
  return { model, taesd: taesd.has("config.json") ? taesd : null };
}

/**
 * The manifest of served model `name`. Rejects with an Error saying why when the server
 * does not offer it (any HTTP error: a missing folder may answer 404, 403 or 500).
 */
export async function fetchManifest(name) {
  const url = `models/${encodeURIComponent(name)}/manifest.json`;
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) {
    const body = (await res.text().catch(() => "")).trim().slice(0, 200);
    throw new Error(`${url}: HTTP ${res.status}${body ? ` (${body})` : ""}`);
  }
  const manifest = await res.json();
  if (!Array.isArray(manifest.files)) throw new Error(`${url}: no "files" list`);
  return manifest;
}

/**
 * Fetches served model `name` (files checked and cached by cache.js).
 * `onProgress({done, total, file})` reports bytes. Resolves to {origin, files, taesd,
 * stats: {files, bytes, fromCache, refetched, verified, ms}}.
 */
export async function loadServed(name, manifest, { onProgress, signal } = {}) {
  const started = performance.now();
  const byPath = new Map(manifest.files.map((f) => [f.path, f]));
  const paths = selectFiles([...byPath.keys()]);
  if (!paths.length) throw new Error(`models/${name}: the manifest lists no model files`);
  const total = paths.reduce((s, p) => s + byPath.get(p).size, 0);
  const stats = { files: paths.length, bytes: total, fromCache: 0, refetched: 0, verified: true };
  const files = new Map();
  let done = 0;
  // One file at a time: simple progress, and at most one large file in flight.
  for (const path of paths) {
    const entry = byPath.get(path);
    const url = new URL(`models/${name}/${path}`, document.baseURI).href;
    const r = await fetchVerified(url, entry, {
      signal,
      onProgress: (n) => onProgress?.({ done: done + n, total, file: path }),
    });
    done += entry.size;
    files.set(path, r.bytes);
    if (r.source === "cache") stats.fromCache++;
    if (r.refetched) stats.refetched++;
    stats.verified &&= r.verified;
  }
  stats.ms = performance.now() - started;
  return { origin: `models/${name}`, ...splitTaesd(files), stats };
}

/**
 * Fetches a served TAESD folder (config.json and weights at its top level) as a Map
 * for `engine.loadTaesd`.
 */
export async function loadServedTaesd(name, manifest, { signal } = {}) {
  const files = new Map();
  for (const entry of manifest.files) {
    if (entry.path.includes("/") || !WANTED_FILE.test(entry.path)) continue;
    const url = new URL(`models/${name}/${entry.path}`, document.baseURI).href;
    files.set(entry.path, (await fetchVerified(url, entry, { signal })).bytes);
  }
  return files;
}

/**
 * Reads a folder picked with <input type=file webkitdirectory> (a FileList whose
 * webkitRelativePath starts with the folder's own name, which is stripped).
 * `onProgress({done, total, file})` reports bytes read. Same result as loadServed.
 */
export async function loadPicked(fileList, { onProgress } = {}) {
  const started = performance.now();
  const all = Array.from(fileList);
  if (!all.length) throw new Error("the picked folder is empty");
  const root = all[0].webkitRelativePath.split("/")[0] || "picked folder";
  const byPath = new Map();
  for (const f of all) {
    const rel = f.webkitRelativePath || f.name;
    byPath.set(rel.includes("/") ? rel.slice(rel.indexOf("/") + 1) : rel, f);
  }
  const paths = selectFiles([...byPath.keys()]);
  if (!paths.some((p) => p.startsWith("unet/"))) {
    throw new Error(
      `${root}: not a diffusers Stable Diffusion folder (no unet/ inside; pick the folder that holds model_index.json)`,
    );
  }
  const total = paths.reduce((s, p) => s + byPath.get(p).size, 0);
  const files = new Map();
  let done = 0;
  for (const path of paths) {
    const file = byPath.get(path);
    files.set(path, new Uint8Array(await file.arrayBuffer()));
    done += file.size;
    onProgress?.({ done, total, file: path });
  }
  const stats = { files: paths.length, bytes: total, fromCache: 0, refetched: 0, verified: false };
  stats.ms = performance.now() - started;
  return { origin: root, ...splitTaesd(files), stats };
}
