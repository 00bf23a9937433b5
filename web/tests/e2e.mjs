// End-to-end test of the page in Debian's headless Chromium with WebGPU on SwiftShader
// (flags: ../../../shared/PLATFORM.md, "Browser"), driven by playwright-core.
//
//   cd web && npm ci && npm test
//
// 1. Starts `cargo xtask serve --port 8123` (or uses FOVEA_URL), runs the native CLI on
//    the tiny test model for the reference image.
// 2. Loads /?model=tiny-test, generates "a red apple" (seed 7, 3 steps, CFG 7.5, 16x16),
//    checks the step progress reached 100%, the image is not blank, and its RGBA equals
//    the native engine's (`fovea generate --f32`) within MAX_LEVEL_DIFF levels; the
//    canvas shows exactly the engine's pixels.
// 3. Generates again with pruning and checks the figures, the heat map and the gallery.
//    Starts a third run and cancels it after its first step. Misuse: an absurd width, a
//    second generate() while one runs, a picked folder that is not a diffusers folder, an
//    aborted download: each gets a message naming the problem; the gallery and the loaded
//    model survive. A lost device (engine.simulateDeviceLoss) gets a message and a
//    Reload button; after the reload the engine generates again.
// 4. Reloads: the weights come from the cache; corrupts a cached file and reloads: it is
//    fetched again and the model still loads.
// 5. Checks the page at a 360px-wide viewport does not scroll sideways, and that `/`
//    loads fovea-tiny, or says it falls back to tiny-test when the server lacks it.
//    With FOVEA_DEFAULT_RUN=1 it also generates with the default model at its native size
//    and the page's default settings (minutes on SwiftShader; not part of CI).
// 6. Launches Chromium without --enable-unsafe-webgpu and checks the no-WebGPU message.
//
// Screenshots and the browser console go to web/tests/out/. Environment: FOVEA_URL (a
// running server), FOVEA_PORT (default 8123), CHROMIUM (default
// /usr/lib/chromium/chromium), FOVEA_BIN (default target/debug/fovea, else
// target/release/fovea).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const OUT = join(HERE, "out");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/lib/chromium/chromium";
const PORT = Number(process.env.FOVEA_PORT ?? 8123);

/** The bound on |browser - native| per RGBA channel, in 8-bit levels. */
const MAX_LEVEL_DIFF = 2;
const PRUNE_THRESHOLD = 0.99;
const SETTINGS = { prompt: "a red apple", seed: 7, steps: 3, cfg: 7.5, width: 16, height: 16 };

// Base flags, then WebGPU (compute + readback; the page draws with a 2D canvas).
const BASE_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const WEBGPU_FLAGS = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-angle=vulkan",
  "--enable-unsafe-swiftshader",
];

// ---------------------------------------------------------------- reporting

const results = [];
const timings = [];
const started = performance.now();

function check(name, ok, detail = "") {
  results.push({ name, ok });
  console.log(`${ok ? "ok  " : "FAIL"}  ${name}${detail ? `: ${detail}` : ""}`);
  return ok;
}

async function timed(label, fn) {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    const ms = performance.now() - t0;
    timings.push([label, ms]);
    console.log(`      (${label}: ${(ms / 1000).toFixed(2)} s)`);
  }
}

// ---------------------------------------------------------------- helpers

function findBinary() {
  const candidates = process.env.FOVEA_BIN
    ? [process.env.FOVEA_BIN]
    : [join(ROOT, "target/debug/fovea"), join(ROOT, "target/release/fovea")];
  return candidates.find((p) => existsSync(p));
}

/** Runs the native CLI on the tiny model; returns the decoded PNG. */
function nativeImage(bin, extra = [], name = "native.png") {
  const out = join(OUT, name);
  const args = [
    "generate",
    "--model", join(ROOT, "tests/fixtures/tiny_pipeline"),
    "--prompt", SETTINGS.prompt,
    "--steps", String(SETTINGS.steps),
    "--seed", String(SETTINGS.seed),
    "--cfg", String(SETTINGS.cfg),
    "-W", String(SETTINGS.width),
    "-H", String(SETTINGS.height),
    "--f32",
    "-o", out,
    ...extra,
  ];
  const r = spawnSync(bin, args, {
    encoding: "utf8",
    env: { XDG_RUNTIME_DIR: "/tmp", ...process.env },
    timeout: 300_000,
  });
  if (r.status !== 0) {
    throw new Error(`${bin} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stderr}${r.stdout}`);
  }
  const summary = (r.stdout + r.stderr).trim().split("\n").filter((l) => /denoise|adapter/.test(l));
  summary.forEach((l) => console.log(`      native: ${l.trim()}`));
  return PNG.sync.read(readFileSync(out));
}

async function waitForServer(url, server, timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (server && server.exitCode !== null) {
      throw new Error(`cargo xtask serve exited (${server.exitCode}):\n${server.log.join("")}`);
    }
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not answer within ${timeoutMs / 1000} s${server ? `:\n${server.log.join("")}` : ""}`);
}

async function startServer() {
  if (process.env.FOVEA_URL) return { url: process.env.FOVEA_URL.replace(/\/?$/, "/"), stop() {} };
  const url = `http://127.0.0.1:${PORT}/`;
  try {
    await fetch(url);
    throw new Error(`something already listens on port ${PORT}: stop it, or set FOVEA_URL / FOVEA_PORT`);
  } catch (e) {
    if (e.message.startsWith("something")) throw e;
  }
  // Its own process group, so stopping it also stops the xtask binary cargo started.
  const child = spawn("cargo", ["xtask", "serve", "--port", String(PORT)], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.log = [];
  child.stdout.on("data", (d) => child.log.push(String(d)));
  child.stderr.on("data", (d) => child.log.push(String(d)));
  await waitForServer(url, child, 300_000);
  return {
    url,
    stop() {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
    },
  };
}

async function launch(flags) {
  // launch() gives every browser a fresh temporary profile (--user-data-dir), so the
  // weights cache starts empty.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_FLAGS, ...flags],
    env: { ...process.env, XDG_RUNTIME_DIR: "/tmp" },
  });
}

function watchConsole(page, log, tag) {
  page.on("console", (m) => log.push(`[${tag}] ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[${tag}] pageerror: ${e.message}`));
  page.on("requestfailed", (r) => log.push(`[${tag}] request failed: ${r.url()} ${r.failure()?.errorText}`));
}

async function waitForState(page, states, timeoutMs) {
  const selector = states.map((s) => `#status[data-state="${s}"]`).join(", ");
  try {
    await page.waitForSelector(selector, { timeout: timeoutMs });
  } catch {
    const now = await page.evaluate(() => [
      document.querySelector("#status")?.dataset.state,
      document.querySelector("#status")?.textContent,
    ]);
    throw new Error(`waited ${timeoutMs / 1000} s for ${states.join("|")}; the page says ${now[0]}: ${now[1]}`);
  }
  return page.evaluate(() => [document.querySelector("#status").dataset.state, document.querySelector("#status").textContent]);
}

async function fillSettings(page, { prune, steps = SETTINGS.steps }) {
  await page.fill("#prompt", SETTINGS.prompt);
  await page.fill("#negative", "");
  await page.fill("#seed", String(SETTINGS.seed));
  await page.fill("#steps", String(steps));
  await page.fill("#cfg", String(SETTINGS.cfg));
  await page.fill("#width", String(SETTINGS.width));
  await page.fill("#height", String(SETTINGS.height));
  await page.selectOption("#scheduler", "");
  await page.setChecked("#prune", prune);
}

/** Generates with the form as it is; returns the page's result and the wall time. */
async function generate(page, label, timeoutMs = 600_000) {
  const t0 = performance.now();
  await page.click("#generate");
  const [stateNow, text] = await waitForState(page, ["done", "error"], timeoutMs);
  const wallMs = performance.now() - t0;
  if (stateNow !== "done") throw new Error(`${label}: the page reports an error: ${text}`);
  const result = await page.evaluate(() => {
    const r = window.fovea.lastResult;
    return { rgba: Array.from(r.rgba), width: r.width, height: r.height, summary: r.summary, wallMs: r.wallMs };
  });
  console.log(
    `      ${label}: ${(wallMs / 1000).toFixed(2)} s in the page; engine: text ${result.summary.timings.textMs.toFixed(0)} ms, ` +
      `denoise ${result.summary.timings.denoiseMs.toFixed(0)} ms (${result.summary.timings.steps} steps), ` +
      `decode ${result.summary.timings.decodeMs.toFixed(0)} ms`,
  );
  timings.push([label, wallMs]);
  return result;
}

function compare(a, b) {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

function pixelSpread(rgba) {
  const seen = new Set();
  let lo = 255;
  let hi = 0;
  for (let i = 0; i < rgba.length; i += 4) {
    seen.add((rgba[i] << 16) | (rgba[i + 1] << 8) | rgba[i + 2]);
    for (let c = 0; c < 3; c++) {
      lo = Math.min(lo, rgba[i + c]);
      hi = Math.max(hi, rgba[i + c]);
    }
  }
  return { colours: seen.size, range: hi - lo };
}

// ---------------------------------------------------------------- the test

async function main() {
  mkdirSync(OUT, { recursive: true });
  rmSync(join(OUT, "console.log"), { force: true }); // a failure prints this run's log only
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  if (!process.env.FOVEA_URL && !existsSync(join(ROOT, "web/pkg/fovea_web.js"))) {
    throw new Error("web/pkg/fovea_web.js is missing: build the bundle with `cargo xtask web`");
  }
  const bin = findBinary();
  if (!bin) throw new Error("no native fovea binary (target/debug/fovea): `cargo build -p fovea-cli`, or set FOVEA_BIN");

  const native = await timed("native CLI, 3 steps 16x16 (lavapipe)", () => nativeImage(bin));
  const server = await timed("server start", startServer);
  const consoleLog = [];
  let browser;
  try {
    // ---- WebGPU browser
    browser = await timed("Chromium launch", () => launch(WEBGPU_FLAGS));
    const context = await browser.newContext({ viewport: { width: 1200, height: 1000 } });
    const page = await context.newPage();
    watchConsole(page, consoleLog, "webgpu");
    const url = `${server.url}?model=tiny-test`;
    await timed("page load, engine and model (first visit)", async () => {
      await page.goto(url);
      await waitForState(page, ["idle", "error", "no-webgpu"], 180_000).then(([s, text]) => {
        if (s !== "idle") throw new Error(`the page did not get ready: ${s}: ${text}`);
      });
    });
    const st = await page.evaluate(() => window.fovea.state);
    console.log(`      adapter: ${st.adapter.adapter} (${st.adapter.backend}), f16 ${st.adapter.f16}; model ${st.modelName} ${JSON.stringify(st.model)}`);
    check(
      "the engine runs SwiftShader with the software class (the browser names the adapter; wgpu cannot on the web)",
      /^class software; kernels: matmul cpu-blocked, conv2d cpu-blocked, norms\/elementwise narrow/.test(st.adapter.kernelPlan),
      `${st.adapter.adapter}: ${st.adapter.kernelPlan}`,
    );
    check("model tiny-test loaded from the network", st.modelName === "tiny-test" && st.load.fromCache === 0, JSON.stringify(st.load));
    if (!st.adapter.f16) {
      const note = await page.textContent("#model-note");
      check("the missing shader-f16 is explained (f32 fallback)", /shader-f16/.test(note) && /f32/.test(note), note);
    }

    // ---- plain run, against the native engine
    await fillSettings(page, { prune: false });
    const plain = await generate(page, "browser generate, 3 steps 16x16 (SwiftShader)");
    const progress = await page.evaluate(() => {
      const p = document.querySelector("#step-progress");
      return { value: p.value, max: p.max, percent: p.dataset.progress };
    });
    check("step progress reached 100%", progress.value === progress.max && progress.max === SETTINGS.steps && progress.percent === "100", JSON.stringify(progress));
    check("image is 16x16 RGBA", plain.width === 16 && plain.height === 16 && plain.rgba.length === 16 * 16 * 4);
    const spread = pixelSpread(plain.rgba);
    check("image is not blank", spread.colours > 16 && spread.range > 32, `${spread.colours} distinct colours, channel range ${spread.range}`);
    const diff = compare(plain.rgba, native.data);
    check(
      `RGBA equals native --f32 within ${MAX_LEVEL_DIFF} levels`,
      native.width === 16 && diff.max <= MAX_LEVEL_DIFF,
      `max ${diff.max} levels, mean ${diff.mean.toFixed(4)} levels over ${plain.rgba.length} channels`,
    );
    const canvasPixels = await page.evaluate(() => {
      const c = document.querySelector("#image");
      return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data);
    });
    check("the canvas shows the engine's pixels exactly", compare(canvasPixels, plain.rgba).max === 0);
    check("Download PNG is enabled", await page.isEnabled("#download"));
    await page.screenshot({ path: join(OUT, "page.png"), fullPage: true });

    // ---- pruned run: figures, heat map, gallery
    await fillSettings(page, { prune: true });
    // The tiny model's random weights attend almost uniformly (normalised entropy near
    // 1): only a threshold close to 1 prunes anything there.
    await page.fill("#threshold", String(PRUNE_THRESHOLD));
    const pruned = await generate(page, "browser generate with pruning");
    const report = pruned.summary.prune;
    check(
      "pruning report present",
      report && report.layers.length > 0 && report.entries.length > 0 && report.forwards === SETTINGS.steps && report.skippedShare > 0,
      report ? `skipped ${(100 * report.skippedShare).toFixed(1)}%, threshold ${report.threshold.toFixed(3)}, ${report.layers.length} layers, ${report.entries.length} entries` : "none",
    );
    const figures = await page.textContent("#prune-figures");
    check("pruning figures shown", (await page.isVisible("#pruning")) && /skipped/i.test(figures) && /Threshold/.test(figures), figures.replace(/\s+/g, " "));
    const heat = await page.evaluate(async () => {
      // Pixels of the grey measuring colour and of each applying cell's colour.
      const { shareColour } = await import("./heatmap.js");
      const report = window.fovea.lastResult.summary.prune;
      const want = new Set(report.entries.map(([, , active, heads]) => shareColour((heads - active) / heads)));
      const c = document.querySelector("#heatmap");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let grey = 0;
      let coloured = 0;
      for (let i = 0; i < d.length; i += 4) {
        const css = `rgb(${d[i]}, ${d[i + 1]}, ${d[i + 2]})`;
        if (d[i + 3] !== 255) continue;
        if (css === "rgb(128, 128, 128)") grey++;
        else if (want.has(css)) coloured++;
      }
      return { width: c.clientWidth, height: c.clientHeight, grey, coloured, colours: [...want] };
    });
    check("heat map drawn (grey measuring step and coloured applying steps)", heat.width > 0 && heat.height > 0 && heat.grey > 0 && heat.coloured > 0, JSON.stringify(heat));
    check("legend shown", await page.isVisible(".legend"));
    check("gallery holds both images", (await page.locator("#gallery .thumb").count()) === 2);
    const native_pruned = nativeImage(bin, ["--prune", "--prune-threshold", String(PRUNE_THRESHOLD)], "native-pruned.png");
    const pd = compare(pruned.rgba, native_pruned.data);
    // Head decisions compare entropies with the threshold, so a head whose entropy sat
    // within float error of it could flip between SwiftShader and lavapipe; both are
    // deterministic, and on these machines the two agree exactly.
    check(
      `pruned RGBA equals native --prune --f32 within ${MAX_LEVEL_DIFF} levels`,
      pd.max <= MAX_LEVEL_DIFF,
      `max ${pd.max} levels, mean ${pd.mean.toFixed(4)} levels`,
    );
    await page.screenshot({ path: join(OUT, "page-pruned.png"), fullPage: true });
    await page.click("#gallery .thumb >> nth=1"); // the older (plain) image
    check("clicking a gallery item shows it", !(await page.isVisible("#pruning")));

    // ---- Generate becomes Cancel; cancelling stops after the current step (a long run,
    // so that the click lands before its end however fast the steps are)
    const CANCEL_STEPS = 50;
    await fillSettings(page, { prune: false, steps: CANCEL_STEPS });
    await page.click("#generate");
    const cancelLabel = (await page.textContent("#generate")).trim();
    await page.waitForFunction(() => window.fovea.state.step?.step >= 1, null, { timeout: 300_000 });
    await page.click("#generate");
    const [afterCancel, cancelText] = await waitForState(page, ["idle", "done", "error"], 300_000);
    check(
      "Generate becomes Cancel, and cancelling stops the run",
      cancelLabel === "Cancel" && afterCancel === "idle" &&
        Number((/cancelled after step (\d+)\b/i.exec(cancelText) ?? [])[1]) < CANCEL_STEPS &&
        (await page.locator("#gallery .thumb").count()) === 2 && (await page.textContent("#generate")).trim() === "Generate",
      `${afterCancel}: ${cancelText}`,
    );

    // ---- misuse: each gets a message naming the problem, the gallery survives, and the
    // loaded model keeps working
    const galleryCount = () => page.locator("#gallery .thumb").count();
    await fillSettings(page, { prune: false });
    await page.fill("#width", "16384");
    await page.click("#generate");
    const [sizeState, sizeText] = await waitForState(page, ["error", "done", "idle"], 60_000);
    check(
      "an absurd width is refused before any work, naming the field and the limit",
      sizeState === "error" && /Width/.test(sizeText) && /4096/.test(sizeText) && (await galleryCount()) === 2 &&
        (await page.isEnabled("#generate")),
      `${sizeState}: ${sizeText}`,
    );
    await fillSettings(page, { prune: false });

    await page.click("#generate");
    const second = await page.evaluate(() =>
      window.fovea.engine
        .generate({ prompt: "again", steps: 1, width: 16, height: 16 })
        .then(() => "a second generation ran", (e) => e.message ?? String(e)),
    );
    await page.waitForFunction(() => window.fovea.state.step?.step >= 1, null, { timeout: 300_000 });
    await page.click("#generate"); // Cancel
    const [afterSecond] = await waitForState(page, ["idle", "done", "error"], 300_000);
    check(
      "a second generate while one runs is refused with a message, and the first run is unharmed",
      /already running/.test(second) && afterSecond === "idle" && (await galleryCount()) === 2,
      `${second}; then ${afterSecond}`,
    );

    const bogus = join(OUT, "not-a-model");
    rmSync(bogus, { recursive: true, force: true });
    mkdirSync(join(bogus, "unet"), { recursive: true });
    writeFileSync(join(bogus, "model_index.json"), "{}\n");
    writeFileSync(join(bogus, "unet", "config.json"), "{ this is not json\n");
    writeFileSync(join(bogus, "unet", "diffusion_pytorch_model.safetensors"), "not safetensors either");
    await page.setInputFiles("#folder-input", bogus);
    const [bogusState, bogusText] = await waitForState(page, ["error", "idle"], 120_000);
    const stillThere = await page.evaluate(() =>
      window.fovea.engine
        .generate({ prompt: "still here", steps: 1, width: 16, height: 16 })
        .then((r) => `${r.width}x${r.height}`, (e) => `failed: ${e.message ?? e}`),
    );
    check(
      "a picked folder that is not a diffusers folder gets a message naming the file; the loaded model still generates",
      bogusState === "error" && /not-a-model\//.test(bogusText) && stillThere === "16x16" &&
        (await galleryCount()) === 2 && (await page.evaluate(() => window.fovea.state.modelName)) === "tiny-test" &&
        (await page.isEnabled("#generate")),
      `${bogusState}: ${bogusText}; engine afterwards: ${stillThere}`,
    );

    const canSwitch = await page.evaluate(() =>
      [...document.querySelectorAll("#model-select option")].some((o) => o.value === "served:fovea-tiny" && !o.disabled),
    );
    if (canSwitch) {
      await page.route("**/models/fovea-tiny/unet/**", (route) => route.abort("connectionreset"));
      await page.selectOption("#model-select", "served:fovea-tiny");
      const [abortState, abortText] = await waitForState(page, ["error", "idle"], 300_000);
      await page.unroute("**/models/fovea-tiny/unet/**");
      check(
        "an aborted download names the file; the loaded model, the picker and the gallery stay",
        abortState === "error" && /unet\//.test(abortText) && /download failed/.test(abortText) &&
          (await page.evaluate(() => window.fovea.state.modelName)) === "tiny-test" &&
          (await page.inputValue("#model-select")) === "served:tiny-test" && (await galleryCount()) === 2 &&
          (await page.isEnabled("#generate")),
        `${abortState}: ${abortText}`,
      );
    }
    await page.screenshot({ path: join(OUT, "page-misuse.png"), fullPage: true });

    // ---- phone width
    await page.setViewportSize({ width: 360, height: 780 });
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    check("no sideways scrolling at 360px", overflow <= 360, `scrollWidth ${overflow}`);
    await page.screenshot({ path: join(OUT, "page-360.png"), fullPage: true });
    await page.setViewportSize({ width: 1200, height: 1000 });

    // ---- a lost device (Device::destroy): a clear message and a Reload button; after
    // the reload the engine generates again
    await fillSettings(page, { prune: false });
    await page.evaluate(() => window.fovea.engine.simulateDeviceLoss());
    await page.click("#generate");
    const [lostState, lostText] = await waitForState(page, ["error", "done", "idle"], 300_000);
    const lostBanner = (await page.isVisible("#banner")) ? await page.textContent("#banner") : "";
    check(
      "a lost device gets a message saying so and a Reload button; the gallery stays",
      lostState === "error" && /lost/i.test(lostText) && /lost/i.test(lostBanner) && (await page.isVisible("#reload")) &&
        (await galleryCount()) === 2,
      `${lostState}: ${lostText} | banner: ${lostBanner.trim()}`,
    );
    await page.screenshot({ path: join(OUT, "device-lost.png"), fullPage: true });

    // ---- the weights cache: a reload reads it; a corrupt entry is fetched again
    await timed("reload (weights from the cache)", async () => {
      await page.click("#reload");
      await waitForState(page, ["idle"], 180_000);
    });
    const recovered = await page.evaluate(() =>
      window.fovea.engine
        .generate({ prompt: "after the reload", steps: 1, width: 16, height: 16 })
        .then((r) => `${r.width}x${r.height}`, (e) => `failed: ${e.message ?? e}`),
    );
    check("after the reload the engine generates again", recovered === "16x16", recovered);
    const cached = await page.evaluate(() => window.fovea.state.load);
    check("a reload takes every weight file from the cache", cached.fromCache === cached.files && cached.refetched === 0, JSON.stringify(cached));
    const corrupted = await page.evaluate(async () => {
      const cache = await caches.open("fovea-models-v1");
      const key = (await cache.keys()).map((r) => r.url).find((u) => u.endsWith(".safetensors"));
      const bytes = new Uint8Array(await (await cache.match(key)).arrayBuffer());
      bytes[bytes.length >> 1] ^= 0xff; // same size, different hash
      await cache.put(key, new Response(bytes));
      return key;
    });
    await page.reload();
    await waitForState(page, ["idle", "error"], 180_000);
    const repaired = await page.evaluate(() => [window.fovea.state.state, window.fovea.state.load]);
    check(
      "a corrupt cache entry is fetched again and the model loads",
      repaired[0] === "idle" && repaired[1].refetched === 1 && repaired[1].fromCache === repaired[1].files - 1,
      `${corrupted.split("/models/")[1]}: ${JSON.stringify(repaired[1])}`,
    );
    // ---- no ?model=: the default model, or the labelled fallback when it is not served
    const hasDefault = (await fetch(`${server.url}models/fovea-tiny/manifest.json`)).ok;
    const page3 = await (await browser.newContext()).newPage();
    watchConsole(page3, consoleLog, "default");
    await page3.goto(server.url);
    await waitForState(page3, ["idle", "error"], 300_000);
    const chosen = await page3.evaluate(() => window.fovea.state.modelName);
    const notes = (await page3.locator(".note").allTextContents()).join(" ");
    check(
      hasDefault ? "/ loads the default model fovea-tiny" : "/ falls back to tiny-test, labelled, when fovea-tiny is not served",
      hasDefault ? chosen === "fovea-tiny" : chosen === "tiny-test" && /fovea-tiny is not on this server/.test(notes) && /random weights/.test(notes),
      `model ${chosen}${hasDefault ? "" : `; ${notes}`}`,
    );
    if (hasDefault && process.env.FOVEA_DEFAULT_RUN) {
      // Opt-in (minutes on SwiftShader): the default model at its native size with the
      // page's own defaults, as a visitor's first click does.
      await page3.fill("#prompt", "a large red apple in the center on a plain blue background");
      const r = await generate(page3, "browser generate, default model, page defaults (SwiftShader)", 3_600_000);
      const spread = pixelSpread(r.rgba);
      const native = await page3.evaluate(() => window.fovea.state.model.nativeSize);
      check(
        "the default model generates at its native size in the page",
        r.width === native && r.height === native && spread.range > 16,
        `${r.width}x${r.height}, ${r.summary.timings.steps} steps, ${(r.wallMs / 1000).toFixed(1)} s; ${JSON.stringify(spread)}`,
      );
      await page3.screenshot({ path: join(OUT, "default-model.png"), fullPage: true });
    }
    await browser.close();
    browser = null;

    // ---- no WebGPU
    browser = await launch([]);
    const page2 = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    watchConsole(page2, consoleLog, "no-webgpu");
    await page2.goto(url);
    const [s2, text2] = await waitForState(page2, ["no-webgpu", "idle", "error"], 120_000);
    const banner = await page2.textContent("#banner");
    check("without --enable-unsafe-webgpu the page says WebGPU is missing", s2 === "no-webgpu" && (await page2.isVisible("#banner")) && /WebGPU/.test(banner), `${s2}: ${text2}`);
    check("Generate stays disabled without WebGPU", !(await page2.isEnabled("#generate")));
    await page2.screenshot({ path: join(OUT, "no-webgpu.png"), fullPage: true });
  } finally {
    if (browser) await browser.close().catch(() => {});
    server.stop();
    writeFileSync(join(OUT, "console.log"), consoleLog.join("\n") + "\n");
  }
}

let fatal = null;
try {
  await main();
} catch (e) {
  fatal = e;
}
console.log("\ntimings:");
for (const [label, ms] of timings) console.log(`  ${(ms / 1000).toFixed(2).padStart(8)} s  ${label}`);
console.log(`  ${((performance.now() - started) / 1000).toFixed(2).padStart(8)} s  in all`);
console.log(`screenshots and console log: ${OUT}/`);
const failed = results.filter((r) => !r.ok);
if (fatal) {
  console.error(`\nFAIL: ${fatal.message}`);
  const log = existsSync(join(OUT, "console.log")) ? readFileSync(join(OUT, "console.log"), "utf8").trim() : "";
  if (log) console.error(`browser console (last lines):\n${log.split("\n").slice(-30).join("\n")}`);
}
console.log(`\ne2e: ${results.length - failed.length} passed, ${failed.length + (fatal ? 1 : 0)} failed`);
if (failed.length) console.error(`failed: ${failed.map((f) => f.name).join("; ")}`);
process.exit(failed.length || fatal ? 1 : 0);
