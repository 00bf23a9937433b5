//! fovea in the browser. The wasm build exposes an `Engine` class to JavaScript
//! (wasm-bindgen): open the page's WebGPU adapter, load a diffusers folder from bytes the
//! page fetched or the user picked, generate with every pipeline and pruning parameter
//! with a per-step callback, cancel, and get RGBA plus statistics.
//!
//! ```js
//! import init, { Engine } from "./pkg/fovea_web.js";
//! await init();
//! const engine = await Engine.create(true);           // allow shader-f16
//! engine.info();                                      // adapter, f16, limits
//! engine.loadModel("models/fovea-tiny", files, false); // Map(path -> Uint8Array)
//! const r = await engine.generate({ prompt: "a red apple", steps: 20 },
//!                                 (step, total) => true);
//! r.rgba; r.summary.timings; r.summary.prune;
//! ```

pub mod params;

#[cfg(target_arch = "wasm32")]
mod bindings;
