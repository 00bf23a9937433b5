//! safetensors weights looked up by diffusers key paths. Files are memory-mapped
//! natively (so the weights are never held twice in RAM: the GPU upload reads straight
//! from the mapping) and given as bytes on the web. Every file is fully validated on
//! open (header, dtypes, offsets, length) by the `safetensors` crate, and every lookup
//! error names the key, the file and the expected/found shape.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    range: std::ops::Range<usize>,
}

struct WeightFile {
    name: String,
    bytes: Bytes,
    entries: HashMap<String, Entry>,
}

impl WeightFile {
    fn parse(name: String, bytes: Bytes) -> Result<WeightFile> {
        let err = |e: safetensors::SafeTensorError| ModelError::Safetensors {
            path: name.clone(),
            message: e.to_string(),
        };
        // Full validation: header JSON, dtypes, offsets inside the buffer, exact length.
        SafeTensors::deserialize(&bytes).map_err(err)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(err)?;
        let data_start = 8 + header_len;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(key, info)| {
                let (s, e) = info.data_offsets;
                (
                    key,
                    Entry {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range: data_start + s..data_start + e,
                    },
                )
            })
            .collect();
        Ok(WeightFile {
            name,
            bytes,
            entries,
        })
    }
}

/// One tensor as stored.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    /// Diffusers key path.
    pub key: &'a str,
    /// File it came from.
    pub file: &'a str,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Stored shape.
    pub shape: &'a [usize],
    /// Raw little-endian bytes.
    pub data: &'a [u8],
}

impl<'a> WeightView<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` along the first dimension (e.g. one embedding vector).
    pub fn row(&self, i: usize) -> Option<WeightView<'a>> {
        let rows = *self.shape.first()?;
        if i >= rows {
            return None;
        }
        let row_bytes = self.data.len() / rows;
        Some(WeightView {
            data: &self.data[i * row_bytes..(i + 1) * row_bytes],
            shape: &self.shape[1..],
            ..*self
        })
    }

    fn dtype_err(&self) -> ModelError {
        ModelError::TensorDtype {
            key: self.key.to_string(),
            path: self.file.to_string(),
            dtype: format!("{:?}", self.dtype),
        }
    }

    /// The values as f32 (from F32, F16 or BF16 storage).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec(self.data),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(self.data)
                .into_iter()
                .map(f32::from)
                .collect(),
            Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(self.data)
                .into_iter()
                .map(f32::from)
                .collect(),
            _ => return Err(self.dtype_err()),
        })
    }

    /// The values as f16 (rounding from F32/BF16 to nearest).
    pub fn to_f16(&self) -> Result<Vec<half::f16>> {
        Ok(match self.dtype {
            Dtype::F16 => bytemuck::pod_collect_to_vec(self.data),
            Dtype::F32 | Dtype::BF16 => self
                .to_f32()?
                .into_iter()
                .map(half::f16::from_f32)
                .collect(),
            _ => return Err(self.dtype_err()),
        })
    }
}

/// The weights of one model component (e.g. `unet/`), possibly sharded.
pub struct Weights {
    files: Vec<WeightFile>,
    /// key -> index into `files`.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("files", &self.file_names())
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl Weights {
    /// Weights from in-memory safetensors files, as (name, bytes).
    pub fn from_bytes(files: Vec<(String, Vec<u8>)>) -> Result<Weights> {
        let files = files
            .into_iter()
            .map(|(name, b)| WeightFile::parse(name, Bytes::Owned(b)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::index(files))
    }

    /// Random f16 weights with the given keys and shapes, for benchmarks of full-size
    /// architectures without their checkpoints (`name` stands for the file in errors).
    /// Matrices and kernels are uniform in ±sqrt(3/fan-in) (variance 1/fan-in, so a
    /// layer keeps the scale of unit inputs); 1-D `*.weight` (norm scales) are 1,
    /// biases 0. A
    /// SplitMix64 stream seeded by `seed` fills them: statistical quality does not
    /// matter here, speed and being the same everywhere do.
    pub fn random(name: &str, shapes: &[(String, Vec<usize>)], seed: u64) -> Weights {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let total: usize = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        let mut bytes = Vec::with_capacity(total * 2);
        let mut entries = HashMap::new();
        for (key, shape) in shapes {
            let n: usize = shape.iter().product();
            let start = bytes.len();
            let fan_in: usize = shape.iter().skip(1).product();
            if shape.len() >= 2 {
                let bound = (3.0 / fan_in.max(1) as f32).sqrt();
                for _ in 0..n {
                    let u = (next() >> 40) as f32 / (1u64 << 24) as f32;
                    let v = half::f16::from_f32((2.0 * u - 1.0) * bound);
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            } else {
                let v = half::f16::from_f32(if key.ends_with(".weight") { 1.0 } else { 0.0 });
                for _ in 0..n {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            entries.insert(
                key.clone(),
                Entry {
                    dtype: Dtype::F16,
                    shape: shape.clone(),
                    range: start..bytes.len(),
                },
            );
        }
        Self::index(vec![WeightFile {
            name: name.to_string(),
            bytes: Bytes::Owned(bytes),
            entries,
        }])
    }

    /// Opens the safetensors weights of a diffusers component folder. With a variant
    /// (e.g. `fp16`) the `*.fp16.safetensors` files are used; otherwise the files
    /// without a variant, falling back to the variant files when those are all there
    /// is. Sharded checkpoints are all their shards.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &Path, variant: Option<&str>) -> Result<Weights> {
        let listing = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut names = Vec::new();
        for entry in listing {
            let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                names.push(name.to_string());
            }
        }
        let files = pick_weight_files(&dir.display().to_string(), &names, variant)?
            .into_iter()
            .map(|name| {
                let path = dir.join(name);
                let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
                // SAFETY: the mapping is read-only; a file changed underneath while
                // mapped is outside what fovea supports (as for every mmap reader).
                let map =
                    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
                WeightFile::parse(path.display().to_string(), Bytes::Mapped(map))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::index(files))
    }

    fn index(files: Vec<WeightFile>) -> Weights {
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for key in f.entries.keys() {
                index.insert(key.clone(), i);
            }
        }
        Weights { files, index }
    }

    /// Names of the files, in order.
    pub fn file_names(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.name.as_str()).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.index.keys().map(String::as_str).collect();
        k.sort();
        k
    }

    /// The tensor at `key`.
    pub fn get(&self, key: &str) -> Result<WeightView<'_>> {
        let (stored_key, &i) =
            self.index
                .get_key_value(key)
                .ok_or_else(|| ModelError::MissingTensor {
                    key: key.to_string(),
                    files: self.file_names().join(", "),
                })?;
        let f = &self.files[i];
        let e = &f.entries[key];
        Ok(WeightView {
            key: stored_key,
            file: &f.name,
            dtype: e.dtype,
            shape: &e.shape,
            data: &f.bytes[e.range.clone()],
        })
    }

    /// The tensor at the first of `keys` that exists (diffusers accepts some legacy
    /// names); the error names all of them.
    pub fn get_any(&self, keys: &[&str]) -> Result<WeightView<'_>> {
        for k in keys {
            if self.contains(k) {
                return self.get(k);
            }
        }
        Err(ModelError::MissingTensor {
            key: keys.join("` or `"),
            files: self.file_names().join(", "),
        })
    }

    /// Uploads the tensor at `key` (which must have `shape`) to the GPU in `dtype`.
    pub fn upload(
        &self,
        gpu: &fovea_gpu::Gpu,
        key: &str,
        shape: &[usize],
        dtype: fovea_gpu::DType,
    ) -> Result<fovea_gpu::Tensor> {
        let v = self.expect(key, shape)?;
        Ok(match dtype {
            fovea_gpu::DType::F16 => gpu.upload_f16(key, shape, &v.to_f16()?)?,
            _ => gpu.upload_f32(key, shape, dtype, &v.to_f32()?)?,
        })
    }

    /// The tensor at `key`, which must have `shape`.
    pub fn expect(&self, key: &str, shape: &[usize]) -> Result<WeightView<'_>> {
        let v = self.get(key)?;
        if v.shape != shape {
            return Err(ModelError::TensorShape {
                key: key.to_string(),
                path: v.file.to_string(),
                expected: shape.to_vec(),
                found: v.shape.to_vec(),
            });
        }
        Ok(v)
    }
}

/// Reads `dir/config.json` as `C`, validates it, and opens the folder's weights: the
/// first step of loading any diffusers model component.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn open_component<C>(
    dir: &Path,
    validate: impl Fn(&C, &Path) -> Result<()>,
) -> Result<(C, Weights)>
where
    C: for<'de> serde::Deserialize<'de>,
{
    let config_path = dir.join("config.json");
    let config: C = crate::config::read_json(&config_path)?;
    validate(&config, &config_path)?;
    Ok((config, Weights::open_dir(dir, None)?))
}

/// Which of a component folder's files hold its weights (see [`Weights::open_dir`]):
/// `*.safetensors` without a variant, or those of `variant`, or the only variant there
/// is; sorted, so shards come in order. `folder` names the folder in errors.
pub fn pick_weight_files(
    folder: &str,
    names: &[String],
    variant: Option<&str>,
) -> Result<Vec<String>> {
    let mut plain = Vec::new();
    let mut variants: HashMap<String, Vec<String>> = HashMap::new();
    for name in names {
        let Some(stem) = name.strip_suffix(".safetensors") else {
            continue;
        };
        // `model.fp16` / `model-00001-of-00002.fp16`: the variant is the last dotted part.
        match stem.rsplit_once('.') {
            Some((_, v)) => variants
                .entry(v.to_string())
                .or_default()
                .push(name.clone()),
            None => plain.push(name.clone()),
        }
    }
    let mut chosen = match variant {
        Some(v) => variants.remove(v).ok_or_else(|| ModelError::Io {
            path: folder.to_string(),
            message: format!(
                "no `*.{v}.safetensors` weights (found variants: {:?})",
                variants.keys().collect::<Vec<_>>()
            ),
        })?,
        None if !plain.is_empty() => plain,
        None if variants.len() == 1 => variants.into_values().next().expect("one variant"),
        None => {
            return Err(ModelError::Io {
                path: folder.to_string(),
                message: if variants.is_empty() {
                    "no *.safetensors weights here".into()
                } else {
                    format!(
                        "several weight variants {:?}; choose one",
                        variants.keys().collect::<Vec<_>>()
                    )
                },
            });
        }
    };
    chosen.sort();
    Ok(chosen)
}
