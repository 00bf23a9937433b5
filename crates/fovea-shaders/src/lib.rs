//! fovea's WGSL kernels as data: every kernel source (embedded from `shaders/`), the
//! define sets the engine may instantiate it with, the tiny preprocessor that turns a
//! (kernel, dtype, defines) triple into one WGSL module, and the single table of which
//! backends each variant can target. The GPU runtime compiles exactly these variants and
//! `cargo xtask shaders` validates exactly these variants, so the two cannot drift.
//!
//! The crate has no dependencies, so the dependency-light `xtask` can use it.

use std::fmt;

/// Storage dtype of a kernel's tensors. Arithmetic is always f32 inside the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// 32-bit float storage; available on every adapter.
    F32,
    /// 16-bit float storage; needs the adapter's `shader-f16` feature.
    F16,
}

impl Dtype {
    /// Both dtypes, f32 first.
    pub const ALL: [Dtype; 2] = [Dtype::F32, Dtype::F16];

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// The WGSL scalar type name.
    pub fn wgsl(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wgsl())
    }
}

/// A backend shading language that a kernel is translated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Vulkan.
    SpirV,
    /// Metal.
    Msl,
    /// Direct3D 12.
    Hlsl,
    /// OpenGL / GLES (wgpu's GL backend).
    Glsl,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 4] = [Target::SpirV, Target::Msl, Target::Hlsl, Target::Glsl];

    /// Short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Target::SpirV => "spirv",
            Target::Msl => "msl",
            Target::Hlsl => "hlsl",
            Target::Glsl => "glsl",
        }
    }
}

/// Source of the helpers every kernel may call (`silu`, `gelu`, `flat_workgroup`, ...).
pub const COMMON_SOURCE: &str = include_str!("../../../shaders/common.wgsl");

/// One WGSL file: an op family with its entry points and allowed define sets.
#[derive(Debug)]
pub struct Kernel {
    /// File stem in `shaders/`, also the first part of every pipeline label.
    pub name: &'static str,
    /// WGSL source (before preprocessing).
    pub source: &'static str,
    /// Compute entry points.
    pub entry_points: &'static [&'static str],
    /// Every define set the engine may instantiate; each is (name, value) pairs.
    /// Kernels without defines list one empty set.
    pub define_sets: &'static [&'static [(&'static str, u32)]],
}

macro_rules! kernel_source {
    ($name:literal) => {
        include_str!(concat!("../../../shaders/", $name, ".wgsl"))
    };
}

/// Elementwise activations, scale, broadcast add/mul, GEGLU; each also as a `_cpu` entry
/// point for software adapters (8-wide workgroups, 16 elements per invocation).
pub const ELEMENTWISE: Kernel = Kernel {
    name: "elementwise",
    source: kernel_source!("elementwise"),
    entry_points: &[
        "unary",
        "binary",
        "geglu",
        "unary_cpu",
        "binary_cpu",
        "geglu_cpu",
    ],
    define_sets: &[&[]],
};

/// [`ELEMENTWISE`]'s unary, binary and GEGLU ops for software adapters, a 16-byte block
/// of elements per load and store, for block-aligned operands.
pub const ELEMENTWISE_BLOCKS: Kernel = Kernel {
    name: "elementwise_blocks",
    source: kernel_source!("elementwise_blocks"),
    entry_points: &["unary_blocks", "binary_blocks", "geglu_blocks"],
    define_sets: &[&[]],
};

/// [`NORM`]'s software group norm (+SiLU) and layer norm, a 16-byte block of elements
/// per load and store, for block-aligned channels and rows.
pub const NORM_BLOCKS: Kernel = Kernel {
    name: "norm_blocks",
    source: kernel_source!("norm_blocks"),
    entry_points: &["group_norm_blocks", "layer_norm_blocks"],
    define_sets: &[&[]],
};

/// [`LAYOUT`]'s channel concat and nearest 2x upsampling for software adapters, a
/// 16-byte block of elements per load and store, for block-aligned planes and rows.
pub const LAYOUT_BLOCKS: Kernel = Kernel {
    name: "layout_blocks",
    source: kernel_source!("layout_blocks"),
    entry_points: &["copy_channels_blocks", "upsample_nearest2x_blocks"],
    define_sets: &[&[]],
};

/// Batched matmul with transposes and bias.
pub const MATMUL: Kernel = Kernel {
    name: "matmul",
    source: kernel_source!("matmul"),
    entry_points: &["matmul"],
    define_sets: &[&[]],
};

/// `matmul_cpu`'s define sets, one row of values per set in the order of the comment
/// at the list.
macro_rules! matmul_cpu_sets {
    ($([$ta:literal, $tb:literal, $sg:literal, $q:literal, $rg:literal, $geglu:literal]),* $(,)?) => {
        &[$(&[
            ("TRANS_A", $ta),
            ("TRANS_B", $tb),
            ("SUBGROUP", $sg),
            ("QUADS", $q),
            ("ROW_GROUPS", $rg),
            ("GEGLU", $geglu),
        ]),*]
    };
}

/// Batched matmul for the software (CPU) adapter class: no workgroup memory, 8 *
/// `ROW_GROUPS` rows x 32 columns per 8-lane workgroup (`ROW_GROUPS` 1 to 4 with
/// `SUBGROUP=1` and `QUADS=1`, chosen by M; 1 otherwise). `TRANS_A`/`TRANS_B` fix the
/// stored layouts; `SUBGROUP=1` shares lhs values with `subgroupBroadcast` (needs subgroups of exactly
/// 8 invocations), `SUBGROUP=0` loads them workgroup-uniformly (any adapter; chosen
/// by none by default, see `MatmulKernel::CpuUniform`).
/// `QUADS=1` (K and N multiples of 4) loads four consecutive values per load: along K
/// for both operands in the Linear layout (`TRANS_B=1`), along N for the rhs with
/// `TRANS_B=0` (four neighbouring columns per lane); with `TRANS_A=1` (`SUBGROUP=1`, M a
/// multiple of 4) along M for the lhs, regrouped by broadcasts; the quad stores add a
/// residual tensor when the parameters ask. `GEGLU=1` (the Linear layout with quads on
/// 8-lane subgroups) stores diffusers' GEGLU of the product, halving its columns.
pub const MATMUL_CPU: Kernel = Kernel {
    name: "matmul_cpu",
    source: kernel_source!("matmul_cpu"),
    entry_points: &["matmul_cpu"],
    define_sets: matmul_cpu_sets![
        // TRANS_A, TRANS_B, SUBGROUP, QUADS, ROW_GROUPS, GEGLU
        [0, 0, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [1, 0, 0, 0, 1, 0],
        [1, 1, 0, 0, 1, 0],
        [0, 0, 1, 0, 1, 0],
        [0, 1, 1, 0, 1, 0],
        [1, 0, 1, 0, 1, 0],
        [1, 1, 1, 0, 1, 0],
        [0, 1, 0, 1, 1, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 1, 1, 1, 2, 0],
        [0, 1, 1, 1, 3, 0],
        [0, 1, 1, 1, 4, 0],
        [0, 0, 1, 1, 2, 0],
        [0, 0, 1, 1, 3, 0],
        [0, 0, 1, 1, 4, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 2, 0],
        [1, 1, 1, 1, 3, 0],
        [1, 1, 1, 1, 4, 0],
        [1, 0, 1, 1, 1, 0],
        [1, 0, 1, 1, 2, 0],
        [1, 0, 1, 1, 3, 0],
        [1, 0, 1, 1, 4, 0],
        [0, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 2, 1],
        [0, 1, 1, 1, 3, 1],
        [0, 1, 1, 1, 4, 1],
    ],
};

/// Batched matmul for software adapters without value sharing between lanes
/// (SwiftShader, WARP): no workgroup memory, no barriers, an 8x8 block of the output per
/// invocation written out in registers (SwiftShader gathers every dynamically addressed
/// load and does not unroll loops). Any layout: transposes and bias are read from the
/// uniforms.
pub const MATMUL_BLOCKED: Kernel = Kernel {
    name: "matmul_blocked",
    source: kernel_source!("matmul_blocked"),
    entry_points: &["matmul_blocked"],
    define_sets: &[&[]],
};

/// 2D convolution for the software (CPU) adapter class, shaped as [`MATMUL_CPU`]: 8 *
/// `ROW_GROUPS` output channels x 32 pixels per 8-lane workgroup, square kernels of
/// `KSIZE` 1 or 3 (taps unrolled), `SUBGROUP` as in [`MATMUL_CPU`]. `PAIRS=1` (stride 1,
/// widths a multiple of 4, same width in and out) gives each lane four neighbouring
/// pixels and loads the input two columns at a time (`PAIRS=2`: the same at stride 2).
/// 3x3 kernels with `PAIRS` and `SUBGROUP=1` take `ROW_GROUPS=2`; the rest 1.
pub const CONV2D_CPU: Kernel = Kernel {
    name: "conv2d_cpu",
    source: kernel_source!("conv2d_cpu"),
    entry_points: &["conv2d_cpu"],
    define_sets: &[
        &[
            ("KSIZE", 1),
            ("SUBGROUP", 0),
            ("PAIRS", 0),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 3),
            ("SUBGROUP", 0),
            ("PAIRS", 0),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 1),
            ("SUBGROUP", 1),
            ("PAIRS", 0),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 3),
            ("SUBGROUP", 1),
            ("PAIRS", 0),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 1),
            ("SUBGROUP", 0),
            ("PAIRS", 1),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 3),
            ("SUBGROUP", 0),
            ("PAIRS", 1),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 1),
            ("SUBGROUP", 1),
            ("PAIRS", 1),
            ("ROW_GROUPS", 1),
        ],
        &[
            ("KSIZE", 3),
            ("SUBGROUP", 1),
            ("PAIRS", 1),
            ("ROW_GROUPS", 2),
        ],
        &[
            ("KSIZE", 3),
            ("SUBGROUP", 1),
            ("PAIRS", 2),
            ("ROW_GROUPS", 2),
        ],
    ],
};

/// Winograd convolution for the software (CPU) adapter class: the weight, input and
/// output transforms around the matrix products (run by [`MATMUL_CPU`]) that compute a
/// 3x3, stride-1, padding-1 convolution with fewer multiplies. `TILE4=0`: F(2x2, 3x3),
/// 16 products, 2.25x fewer multiplies than the direct convolution, transforms in the
/// dtype; `TILE4=1`: F(4x4, 3x3), 36 products, 4x fewer, its transformed weights, input
/// and products f32 in every variant (they amplify rounding too much for f16). `PAIRS=1`
/// (widths a multiple of 4, or 8 with `TILE4`) gives each invocation two neighbouring
/// tiles, loaded and stored two elements at a time.
pub const WINOGRAD_CPU: Kernel = Kernel {
    name: "winograd_cpu",
    source: kernel_source!("winograd_cpu"),
    entry_points: &["winograd_weights", "winograd_input", "winograd_output"],
    define_sets: &[
        &[("TILE4", 0), ("PAIRS", 0)],
        &[("TILE4", 0), ("PAIRS", 1)],
        &[("TILE4", 1), ("PAIRS", 0)],
        &[("TILE4", 1), ("PAIRS", 1)],
    ],
};

/// 3x3 convolution (stride 1, or 2 with `STRIDE2=1`) for software adapters without
/// value sharing between lanes, shaped as [`MATMUL_BLOCKED`]: 8 output channels x 8
/// neighbouring pixels of a row per invocation, in registers as four 4x4 matrices.
pub const CONV2D_BLOCKED: Kernel = Kernel {
    name: "conv2d_blocked",
    source: kernel_source!("conv2d_blocked"),
    entry_points: &["conv2d_blocked"],
    define_sets: &[&[("STRIDE2", 0)], &[("STRIDE2", 1)]],
};

/// 2D convolution (implicit GEMM).
pub const CONV2D: Kernel = Kernel {
    name: "conv2d",
    source: kernel_source!("conv2d"),
    entry_points: &["conv2d"],
    define_sets: &[&[]],
};

/// Group norm (+SiLU), layer norm, softmax; plus software-adapter variants of the two
/// norms (an 8-wide group norm, a row-per-lane layer norm).
pub const NORM: Kernel = Kernel {
    name: "norm",
    source: kernel_source!("norm"),
    entry_points: &[
        "group_norm",
        "group_norm_cpu",
        "layer_norm",
        "layer_norm_cpu",
        "softmax",
    ],
    define_sets: &[&[]],
};

/// Nearest 2x upsample and channel copies (concat, slice).
pub const LAYOUT: Kernel = Kernel {
    name: "layout",
    source: kernel_source!("layout"),
    entry_points: &["upsample_nearest2x", "copy_channels", "slice_channels"],
    define_sets: &[&[]],
};

/// Sinusoidal timestep embedding.
pub const TIMESTEP: Kernel = Kernel {
    name: "timestep",
    source: kernel_source!("timestep"),
    entry_points: &["timestep_embedding"],
    define_sets: &[&[]],
};

/// Fused attention with per-head entropy. `D_MAX` bounds the head dimension (the
/// per-thread query and accumulator rows are that long); `KEY_TILE` keys are staged in
/// workgroup memory at a time: (2 * KEY_TILE * D_MAX + 64) * 4 bytes, 8.3 KiB for
/// D_MAX 64 (inside WebGPU's 16 KiB default) and 20.3 KiB for D_MAX 160.
/// `COUNT_WORK` adds a test-only counter of computed scores.
pub const ATTENTION: Kernel = Kernel {
    name: "attention",
    source: kernel_source!("attention"),
    entry_points: &["attention"],
    define_sets: &[
        &[("D_MAX", 64), ("KEY_TILE", 16), ("COUNT_WORK", 0)],
        &[("D_MAX", 160), ("KEY_TILE", 16), ("COUNT_WORK", 0)],
        &[("D_MAX", 64), ("KEY_TILE", 16), ("COUNT_WORK", 1)],
        &[("D_MAX", 160), ("KEY_TILE", 16), ("COUNT_WORK", 1)],
    ],
};

macro_rules! attention_cpu {
    ($($d:literal),*) => {
        /// Head dimensions [`ATTENTION_CPU`] is compiled for (each fixes its loops'
        /// trip counts); other head dimensions use [`ATTENTION`].
        pub const ATTENTION_CPU_HEAD_DIMS: &[u32] = &[$($d),*];

        /// Fused attention for the software (CPU) adapter class with 8-lane subgroups:
        /// `QUERY_GROUPS` queries per lane ([`attention_cpu_queries_per_lane`]), each key
        /// and value row loaded by one lane and shared with `subgroupBroadcast`, no
        /// workgroup memory. `HEAD_DIM` is the
        /// exact head dimension (one of [`ATTENTION_CPU_HEAD_DIMS`]); `SUBGROUP` is
        /// always 1 (it marks the variants as needing the subgroup capability);
        /// `COUNT_WORK` as in [`ATTENTION`]; `QUADS=1` (k/v offsets and strides multiples
        /// of 4) reads key and value rows four elements per load.
        pub const ATTENTION_CPU: Kernel = Kernel {
            name: "attention_cpu",
            source: kernel_source!("attention_cpu"),
            entry_points: &["attention_cpu"],
            define_sets: &[$(
                &[("HEAD_DIM", $d), ("SUBGROUP", 1), ("COUNT_WORK", 0), ("QUADS", 0), ("QUERY_GROUPS", attention_cpu_queries_per_lane($d))],
                &[("HEAD_DIM", $d), ("SUBGROUP", 1), ("COUNT_WORK", 1), ("QUADS", 0), ("QUERY_GROUPS", attention_cpu_queries_per_lane($d))],
                &[("HEAD_DIM", $d), ("SUBGROUP", 1), ("COUNT_WORK", 0), ("QUADS", 1), ("QUERY_GROUPS", attention_cpu_queries_per_lane($d))],
                &[("HEAD_DIM", $d), ("SUBGROUP", 1), ("COUNT_WORK", 1), ("QUADS", 1), ("QUERY_GROUPS", attention_cpu_queries_per_lane($d))],
            )*],
        };
    };
}
attention_cpu!(8, 16, 24, 32, 40, 48, 64, 80, 96, 128);

/// Queries per lane of [`ATTENTION_CPU`] for `head_dim` (its `QUERY_GROUPS`): four from
/// 32 on, where sharing each loaded key and value row among 32 queries instead of 16
/// paid on lavapipe (one thread, best of 3: d 32 1.08-1.13x, d 40 1.17x, d 64
/// 1.04-1.08x), two below, where the exps and FMAs outweigh the loads and the extra
/// registers cost (d 16, 1024 tokens: 0.74x).
pub const fn attention_cpu_queries_per_lane(head_dim: u32) -> u32 {
    if head_dim >= 32 { 4 } else { 2 }
}

/// Fused attention for software adapters without value sharing between lanes
/// (SwiftShader, WARP): four queries per invocation, 64 per workgroup, rows in named
/// registers, no workgroup memory. Head dims up to 16, or 32 with `ROW32=1`
/// (zero-padded); `COUNT_WORK` as in [`ATTENTION`].
pub const ATTENTION_BLOCKED: Kernel = Kernel {
    name: "attention_blocked",
    source: kernel_source!("attention_blocked"),
    entry_points: &["attention_blocked"],
    define_sets: &[
        &[("ROW32", 0), ("COUNT_WORK", 0)],
        &[("ROW32", 1), ("COUNT_WORK", 0)],
        &[("ROW32", 0), ("COUNT_WORK", 1)],
        &[("ROW32", 1), ("COUNT_WORK", 1)],
    ],
};

/// Largest head dimension [`ATTENTION_BLOCKED`] covers; wider heads run [`ATTENTION`].
pub const ATTENTION_BLOCKED_MAX_HEAD_DIM: u32 = 32;

/// Per-head entropy means, active-head compaction, zeroing of skipped heads.
pub const ATTENTION_HEADS: Kernel = Kernel {
    name: "attention_heads",
    source: kernel_source!("attention_heads"),
    entry_points: &[
        "entropy_reduce",
        "decide_heads",
        "compact_heads",
        "zero_heads",
        "value_mean",
        "mean_heads",
    ],
    define_sets: &[&[]],
};

/// Every kernel the engine has.
pub const KERNELS: &[&Kernel] = &[
    &ELEMENTWISE,
    &ELEMENTWISE_BLOCKS,
    &MATMUL,
    &MATMUL_CPU,
    &MATMUL_BLOCKED,
    &CONV2D,
    &CONV2D_CPU,
    &CONV2D_BLOCKED,
    &WINOGRAD_CPU,
    &ATTENTION_BLOCKED,
    &NORM,
    &NORM_BLOCKS,
    &LAYOUT,
    &LAYOUT_BLOCKS,
    &TIMESTEP,
    &ATTENTION,
    &ATTENTION_CPU,
    &ATTENTION_HEADS,
];

/// A kernel instantiated with a dtype and one of its define sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Kernel file stem.
    pub kernel: &'static str,
    /// Storage dtype.
    pub dtype: Dtype,
    /// The define set, in the kernel's declared order.
    pub defines: Vec<(&'static str, u32)>,
}

/// Why a variant could not be instantiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantError {
    /// No kernel of that name.
    UnknownKernel(String),
    /// The define set is not one the kernel declares.
    UndeclaredDefines {
        /// Kernel name.
        kernel: &'static str,
        /// The requested defines.
        requested: String,
    },
    /// A `#if`/`#else`/`#endif` block is malformed.
    Preprocess {
        /// Kernel name.
        kernel: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for VariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VariantError::UnknownKernel(name) => write!(f, "no kernel named `{name}`"),
            VariantError::UndeclaredDefines { kernel, requested } => write!(
                f,
                "kernel `{kernel}` declares no define set {requested}; add it to its \
                 define_sets so that `cargo xtask shaders` validates it"
            ),
            VariantError::Preprocess {
                kernel,
                line,
                message,
            } => {
                write!(f, "{kernel}.wgsl line {line}: {message}")
            }
        }
    }
}

impl std::error::Error for VariantError {}

/// Looks a kernel up by name.
pub fn kernel(name: &str) -> Option<&'static Kernel> {
    KERNELS.iter().copied().find(|k| k.name == name)
}

impl Variant {
    /// Instantiates `kernel` with `dtype` and `defines`, which must be one of the
    /// kernel's declared define sets (order-insensitive).
    pub fn new(
        kernel_name: &str,
        dtype: Dtype,
        defines: &[(&str, u32)],
    ) -> Result<Variant, VariantError> {
        let k = kernel(kernel_name)
            .ok_or_else(|| VariantError::UnknownKernel(kernel_name.to_string()))?;
        let declared = k.define_sets.iter().find(|set| {
            set.len() == defines.len()
                && defines
                    .iter()
                    .all(|(n, v)| set.iter().any(|(sn, sv)| sn == n && sv == v))
        });
        match declared {
            Some(set) => Ok(Variant {
                kernel: k.name,
                dtype,
                defines: set.to_vec(),
            }),
            None => Err(VariantError::UndeclaredDefines {
                kernel: k.name,
                requested: format!("{defines:?}"),
            }),
        }
    }

    /// The kernel this variant instantiates.
    pub fn kernel(&self) -> &'static Kernel {
        kernel(self.kernel).expect("variants are only built from registered kernels")
    }

    /// A stable, human-readable label: `attention:f16:D_MAX=64,KEY_TILE=32,COUNT_WORK=0`.
    pub fn label(&self) -> String {
        let defs: Vec<String> = self
            .defines
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if defs.is_empty() {
            format!("{}:{}", self.kernel, self.dtype)
        } else {
            format!("{}:{}:{}", self.kernel, self.dtype, defs.join(","))
        }
    }

    /// The complete WGSL module for this variant.
    pub fn source(&self) -> Result<String, VariantError> {
        preprocess(self.kernel().source, self.kernel, self.dtype, &self.defines)
    }

    /// Whether the variant needs the adapter's `shader-f16` feature.
    pub fn needs_f16(&self) -> bool {
        self.dtype == Dtype::F16
    }

    /// Whether the variant uses subgroup builtins (define `SUBGROUP` nonzero), which
    /// need the adapter's subgroup feature.
    pub fn needs_subgroups(&self) -> bool {
        self.defines.iter().any(|&(n, v)| n == "SUBGROUP" && v != 0)
    }

    /// Backends this variant cannot target, each with the reason. This is the single
    /// place where such exceptions are declared; `cargo xtask shaders` translates every
    /// variant to every other target and fails on any error.
    pub fn unsupported_targets(&self) -> Vec<(Target, &'static str)> {
        let mut out = Vec::new();
        if self.dtype == Dtype::F16 {
            // wgpu's GL backend never exposes SHADER_F16; GL adapters run the f32 variants.
            out.push((
                Target::Glsl,
                "f16 storage: wgpu's GL backend has no shader-f16 (the f32 variant runs there)",
            ));
        }
        if self.needs_subgroups() {
            out.push((
                Target::Glsl,
                "subgroups: wgpu's GL backend has no SUBGROUP feature (its plan picks kernels without them)",
            ));
        }
        out
    }
}

/// Every variant the engine may instantiate: each kernel x dtype x declared define set.
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for k in KERNELS {
        for dtype in Dtype::ALL {
            for set in k.define_sets {
                out.push(Variant {
                    kernel: k.name,
                    dtype,
                    defines: set.to_vec(),
                });
            }
        }
    }
    out
}

/// Builds one WGSL module: a header (`enable f16;` when needed, `alias elem`, one
/// `const` per define, the two- and four-element words `Pair` and `Quad` with
/// `pair_values` and `quad_values`, and `pair_of` / `quad_of` for kernels that call
/// them), the common
/// helpers, then `source` with `#if NAME` / `#else` /
/// `#endif` lines resolved (NAME true when its define is nonzero). Lines removed by
/// the preprocessor become blank so naga's line numbers still match the file.
pub fn preprocess(
    source: &str,
    kernel_name: &str,
    dtype: Dtype,
    defines: &[(&str, u32)],
) -> Result<String, VariantError> {
    let mut out = String::with_capacity(source.len() + COMMON_SOURCE.len() + 256);
    if dtype == Dtype::F16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!("alias elem = {};\n", dtype.wgsl()));
    for (name, value) in defines {
        out.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    // Two and four consecutive elements as one storage word: kernels for software
    // adapters load them at once (a lane-varying load on llvmpipe is a loop over the
    // lanes whose cost grows far less than its width). A `Block` is 16 bytes, BLOCK_ELEMS
    // elements: `block_quads` gives them as two quads (f32: the one quad twice),
    // `block_of` packs them back (f32: the first quad), `block_elem` picks one.
    out.push_str(match dtype {
        Dtype::F16 => concat!(
            "alias Pair = u32;\n",
            "fn pair_values(p: Pair) -> vec2<f32> { return unpack2x16float(p); }\n",
            "alias Quad = vec2<u32>;\n",
            "fn quad_values(q: Quad) -> vec4<f32> { ",
            "return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)); }\n",
            "alias Block = vec4<u32>;\n",
            "const BLOCK_ELEMS: u32 = 8u;\n",
            "fn block_quads(b: Block) -> array<vec4<f32>, 2> { ",
            "return array<vec4<f32>, 2>(quad_values(b.xy), quad_values(b.zw)); }\n",
            "fn block_elem(b: Block, e: u32) -> f32 { ",
            "let p = unpack2x16float(b[e / 2u]); return select(p.x, p.y, (e & 1u) == 1u); }\n",
            "fn block_of(q: array<vec4<f32>, 2>) -> Block { return Block(",
            "pack2x16float(q[0].xy), pack2x16float(q[0].zw), ",
            "pack2x16float(q[1].xy), pack2x16float(q[1].zw)); }\n",
        ),
        Dtype::F32 => concat!(
            "alias Pair = vec2<f32>;\n",
            "fn pair_values(p: Pair) -> vec2<f32> { return p; }\n",
            "alias Quad = vec4<f32>;\n",
            "fn quad_values(q: Quad) -> vec4<f32> { return q; }\n",
            "alias Block = vec4<f32>;\n",
            "const BLOCK_ELEMS: u32 = 4u;\n",
            "fn block_quads(b: Block) -> array<vec4<f32>, 2> { return array<vec4<f32>, 2>(b, b); }\n",
            "fn block_elem(b: Block, e: u32) -> f32 { return b[e]; }\n",
            "fn block_of(q: array<vec4<f32>, 2>) -> Block { return q[0]; }\n",
        ),
    });
    // The packing helpers only where a kernel calls them: every other module's text
    // (and with it the drivers' shader caches, which llvmpipe on GL takes many minutes
    // to refill) stays as it was.
    if source.contains("pair_of(") {
        out.push_str(match dtype {
            Dtype::F16 => "fn pair_of(v: vec2<f32>) -> Pair { return pack2x16float(v); }\n",
            Dtype::F32 => "fn pair_of(v: vec2<f32>) -> Pair { return v; }\n",
        });
    }
    if source.contains("quad_of(") {
        out.push_str(match dtype {
            Dtype::F16 => concat!(
                "fn quad_of(v: vec4<f32>) -> Quad { ",
                "return Quad(pack2x16float(v.xy), pack2x16float(v.zw)); }\n"
            ),
            Dtype::F32 => "fn quad_of(v: vec4<f32>) -> Quad { return v; }\n",
        });
    }
    out.push_str(COMMON_SOURCE);
    out.push('\n');

    let err = |line: usize, message: String| VariantError::Preprocess {
        kernel: kernel_name.to_string(),
        line,
        message,
    };
    // Stack of (this block's condition, whether we are in its #else part).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        let active = stack.iter().all(|(cond, in_else)| *cond != *in_else);
        if let Some(name) = trimmed.strip_prefix("#if ") {
            let name = name.trim();
            let value = defines
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| err(i + 1, format!("#if on undefined name `{name}`")))?;
            stack.push((value != 0, false));
            out.push('\n');
        } else if trimmed == "#else" {
            match stack.last_mut() {
                Some((_, in_else)) if !*in_else => *in_else = true,
                _ => return Err(err(i + 1, "#else without #if".into())),
            }
            out.push('\n');
        } else if trimmed == "#endif" {
            stack
                .pop()
                .ok_or_else(|| err(i + 1, "#endif without #if".into()))?;
            out.push('\n');
        } else if trimmed.starts_with('#') {
            return Err(err(i + 1, format!("unknown directive `{trimmed}`")));
        } else if active {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err(source.lines().count(), "unterminated #if".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_keeps_only_the_taken_branch() {
        let src = "a\n#if X\nb\n#else\nc\n#endif\nd\n";
        let on = preprocess(src, "t", Dtype::F32, &[("X", 1)]).unwrap();
        let off = preprocess(src, "t", Dtype::F32, &[("X", 0)]).unwrap();
        let body = |s: &str| {
            s[s.find(COMMON_SOURCE).unwrap() + COMMON_SOURCE.len()..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(body(&on), "a b d");
        assert_eq!(body(&off), "a c d");
        assert!(on.starts_with("alias elem = f32;\nconst X: u32 = 1u;\n"));
        assert!(on.contains("alias Pair = vec2<f32>;") && on.contains("alias Quad = vec4<f32>;"));
        let f16 = preprocess(src, "t", Dtype::F16, &[("X", 1)]).unwrap();
        assert!(f16.contains("alias Pair = u32;") && f16.contains("alias Quad = vec2<u32>;"));
        // The packing helpers only for a kernel that calls them.
        assert!(!f16.contains("fn pair_of") && !f16.contains("fn quad_of"));
        let packs = preprocess("x = quad_of(v);\n", "t", Dtype::F16, &[]).unwrap();
        assert!(
            packs.contains("fn quad_of(v: vec4<f32>) -> Quad") && !packs.contains("fn pair_of")
        );
        let packs = preprocess("x = pair_of(v);\n", "t", Dtype::F32, &[]).unwrap();
        assert!(packs.contains("fn pair_of(v: vec2<f32>) -> Pair { return v; }"));
    }

    #[test]
    fn preprocessor_rejects_malformed_blocks() {
        for bad in [
            "#if X\na\n",
            "#endif\n",
            "#else\n",
            "#if Y\n#endif\n",
            "#pragma\n",
        ] {
            assert!(
                preprocess(bad, "t", Dtype::F32, &[("X", 1)]).is_err(),
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn f16_variants_enable_f16_first() {
        let v = Variant::new("matmul", Dtype::F16, &[]).unwrap();
        assert!(
            v.source()
                .unwrap()
                .starts_with("enable f16;\nalias elem = f16;\n")
        );
    }

    #[test]
    fn undeclared_define_sets_are_refused() {
        let e = Variant::new("attention", Dtype::F32, &[("D_MAX", 96)]).unwrap_err();
        assert!(e.to_string().contains("declares no define set"), "{e}");
        assert!(Variant::new("nope", Dtype::F32, &[]).is_err());
        let ok = Variant::new(
            "attention",
            Dtype::F32,
            &[("COUNT_WORK", 0), ("KEY_TILE", 16), ("D_MAX", 160)],
        )
        .unwrap();
        assert_eq!(
            ok.label(),
            "attention:f32:D_MAX=160,KEY_TILE=16,COUNT_WORK=0"
        );
    }

    #[test]
    fn every_variant_preprocesses_and_declares_all_entry_points() {
        for v in all_variants() {
            let src = v.source().unwrap();
            for entry in v.kernel().entry_points {
                assert!(
                    src.contains(&format!("fn {entry}(")),
                    "{} lacks {entry}",
                    v.label()
                );
            }
        }
    }
}
