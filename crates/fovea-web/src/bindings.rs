//! The wasm-bindgen surface. One [`Engine`] per page: a WebGPU device, at most one
//! loaded model, one generation at a time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fovea_gpu::{AdapterClass, DType, Gpu, GpuOptions};
use fovea_pipeline::{MemoryFolder, StableDiffusion, StepInfo};
use js_sys::{Object, Reflect, Uint8Array, Uint8ClampedArray};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::params::{WebParams, WebSummary};

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

struct Inner {
    gpu: Gpu,
    model: RefCell<Option<StableDiffusion>>,
    cancel: Cell<bool>,
    /// A generation is running (the page's UI prevents a second one; this refuses a
    /// second call from script, which would interleave with the first at its awaits).
    busy: Cell<bool>,
}

/// Clears the busy flag when a generation ends, however it ends.
struct Idle<'a>(&'a Cell<bool>);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The engine on the page's WebGPU adapter.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_err)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdapterInfo {
    adapter: String,
    backend: String,
    /// shader-f16: without it the engine runs f32 (slower, twice the memory).
    f16: bool,
    subgroups: bool,
    timestamps: bool,
    max_storage_buffer_binding_size: u64,
    max_buffer_size: u64,
    max_compute_workgroup_storage_size: u32,
    max_compute_invocations_per_workgroup: u32,
    max_storage_buffers_per_shader_stage: u32,
    /// The adapter class and kernel variants the engine chose (as `fovea info` prints).
    kernel_plan: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelInfo {
    native_size: usize,
    granularity: usize,
    scheduler: Option<String>,
    dtype: String,
}

#[wasm_bindgen]
impl Engine {
    /// Opens the page's WebGPU adapter; fails with a clear message when the browser has
    /// no WebGPU or no adapter. `allow_f16` = false forces the f32 path. `software`: the
    /// browser says the adapter is a software one (SwiftShader, a fallback adapter),
    /// which wgpu cannot see on the web; the engine then runs the software-class
    /// kernels where they are faster there (norms, elementwise).
    pub async fn create(allow_f16: bool, software: bool) -> Result<Engine, JsError> {
        let gpu = Gpu::new(GpuOptions {
            allow_f16,
            adapter_class: software.then_some(AdapterClass::Software),
            ..Default::default()
        })
        .await
        .map_err(js_err)?;
        Ok(Engine {
            inner: Rc::new(Inner {
                gpu,
                model: RefCell::new(None),
                busy: Cell::new(false),
                cancel: Cell::new(false),
            }),
        })
    }

    /// The adapter and what fovea uses of it.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let g = &self.inner.gpu;
        let (info, caps, l) = (g.adapter_info(), g.capabilities(), g.limits());
        to_js(&AdapterInfo {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            f16: caps.shader_f16,
            subgroups: caps.subgroups,
            timestamps: caps.timestamps,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            kernel_plan: g.kernel_plan().describe(),
        })
    }

    /// Loads a diffusers folder from `files` (a Map of relative path -> Uint8Array; the
    /// bytes are copied into the engine). `origin` names the folder in errors. Uses f16
    /// when the adapter has it unless `force_f32`. When the folder does not load, the
    /// model loaded before stays.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(
        &self,
        origin: &str,
        files: &js_sys::Map,
        force_f32: bool,
    ) -> Result<JsValue, JsError> {
        let mut slot = self
            .inner
            .model
            .try_borrow_mut()
            .map_err(|_| js_err("a generation is running; cancel it before loading a model"))?;
        let folder = collect_files(origin, files)?;
        let dtype = if self.inner.gpu.capabilities().shader_f16 && !force_f32 {
            DType::F16
        } else {
            DType::F32
        };
        let sd = StableDiffusion::from_folder(&self.inner.gpu, folder, dtype).map_err(js_err)?;
        let info = ModelInfo {
            native_size: sd.native_size(),
            granularity: sd.granularity(),
            scheduler: sd.default_scheduler().map(|k| k.name().to_string()),
            dtype: dtype.to_string(),
        };
        *slot = Some(sd);
        to_js(&info)
    }

    /// Loads a TAESD folder (Map of path -> bytes) as the fast decoder (`taesd: true`).
    #[wasm_bindgen(js_name = loadTaesd)]
    pub fn load_taesd(&self, origin: &str, files: &js_sys::Map) -> Result<(), JsError> {
        let mut slot = self
            .inner
            .model
            .try_borrow_mut()
            .map_err(|_| js_err("a generation is running"))?;
        let sd = slot.as_mut().ok_or_else(|| js_err("load a model first"))?;
        sd.load_taesd_folder(collect_files(origin, files)?)
            .map_err(js_err)
    }

    /// Generates one image. `params`: see the README (prompt, negativePrompt, steps,
    /// cfg, seed, width, height, scheduler, clipSkip, strength, vaeTile, taesd, prune:
    /// {enabled, threshold, skip, refresh, crossAttention, detailWords}). `on_step(step,
    /// total)` is called after every denoising step; returning `false` cancels. Resolves
    /// to `{rgba: Uint8ClampedArray, width, height, summary}`.
    pub fn generate(&self, params: JsValue, on_step: Option<js_sys::Function>) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let web: WebParams = serde_wasm_bindgen::from_value(params)
                .map_err(|e| js_err(format!("generate parameters: {e}")))?;
            if inner.busy.replace(true) {
                return Err(js_err(
                    "a generation is already running: wait for it to finish, or cancel it",
                )
                .into());
            }
            let _idle = Idle(&inner.busy);
            let model = inner
                .model
                .try_borrow()
                .map_err(|_| js_err("the model is being replaced"))?;
            let sd = model.as_ref().ok_or_else(|| js_err("no model loaded"))?;
            let p = web.to_generate(sd.native_size()).map_err(js_err)?;
            inner.cancel.set(false);
            let mut step = |s: StepInfo| {
                if let Some(f) = &on_step {
                    let r = f.call2(&JsValue::NULL, &s.step.into(), &s.total.into());
                    if matches!(r, Ok(v) if v == JsValue::FALSE) {
                        return false;
                    }
                }
                !inner.cancel.get()
            };
            let image = sd.txt2img(&p, None, &mut step).await.map_err(js_err)?;
            let out = Object::new();
            let rgba = Uint8ClampedArray::from(&image.rgba[..]);
            let summary = to_js(&WebSummary::new(&image, p.seed))?;
            for (k, v) in [
                ("rgba", JsValue::from(rgba)),
                ("width", image.width.into()),
                ("height", image.height.into()),
                ("summary", summary),
            ] {
                Reflect::set(&out, &k.into(), &v)?;
            }
            Ok(out.into())
        })
    }

    /// Destroys the GPU device, as a driver reset or the browser reclaiming the GPU
    /// would: for tests of the lost-device path (the page then asks for a reload).
    #[wasm_bindgen(js_name = simulateDeviceLoss)]
    pub fn simulate_device_loss(&self) {
        self.inner.gpu.device().destroy();
    }

    /// Asks the running generation to stop after its current step.
    pub fn cancel(&self) {
        self.inner.cancel.set(true);
    }
}

fn collect_files(origin: &str, files: &js_sys::Map) -> Result<MemoryFolder, JsError> {
    let mut folder = MemoryFolder::new(origin);
    let mut bad = None;
    files.for_each(
        &mut |value, key| match (key.as_string(), value.dyn_into::<Uint8Array>()) {
            (Some(path), Ok(bytes)) => folder.insert(&path, bytes.to_vec()),
            (path, _) => bad = Some(path.unwrap_or_else(|| "a non-string key".into())),
        },
    );
    match bad {
        Some(path) => Err(js_err(format!(
            "model file {path}: expected a Uint8Array of its bytes"
        ))),
        None => Ok(folder),
    }
}
