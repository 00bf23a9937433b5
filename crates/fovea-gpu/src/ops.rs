//! The kernel library's host side: one method on [`Batch`] per op. Each validates
//! shapes, dtypes and limits (errors name the op, the shapes and the limit), allocates
//! its output from the pool, builds the [`Dispatch`](crate::Dispatch) and records it.
//!
//! Shapes are listed per op; all tensors are contiguous row-major.

use bytemuck::{Pod, Zeroable};
use fovea_shaders::Variant;

use crate::batch::{Batch, Bind, Workgroups, spread_workgroups};
use crate::error::{GpuError, Result};
use crate::pipeline::PipelineKey;
use crate::plan::MatmulKernel;
use crate::tensor::{DType, Tensor, fmt_shape};

mod winograd;
pub use winograd::ConvAdds;
pub use winograd::{
    WINOGRAD_RUN_ELEMS, WINOGRAD_TILE_ELEMS, WINOGRAD2_MIN_CHANNELS, WINOGRAD4_MAX_WEIGHT_BYTES,
    WINOGRAD4_MIN_TILES, WINOGRAD4_TILE_ELEMS, WinogradTile,
};

/// Activation applied by [`Batch::unary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x
    Identity = 0,
    /// x * sigmoid(x)
    Silu = 1,
    /// exact (erf) GELU
    Gelu = 2,
    /// x * sigmoid(1.702 x), CLIP's quick_gelu
    QuickGelu = 3,
    /// max(x, 0)
    Relu = 4,
    /// tanh(x)
    Tanh = 5,
    /// exp(x / 2) with x clamped to [-30, 20]: a diagonal Gaussian's standard deviation
    /// from its log-variance (diffusers' `DiagonalGaussianDistribution`)
    GaussianStd = 6,
}

/// Binary op of [`Batch::binary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// a + alpha * b
    Add = 0,
    /// alpha * a * b
    Mul = 1,
}

/// Options of [`Batch::matmul`].
#[derive(Clone, Copy, Debug)]
pub struct MatmulOptions {
    /// `a` is stored (..., K, M).
    pub trans_a: bool,
    /// `b` is stored (..., N, K) (e.g. a PyTorch Linear weight).
    pub trans_b: bool,
    /// Scale applied to the product before the bias.
    pub alpha: f32,
    /// The bias has M elements, one per output row (e.g. a projection applied to
    /// channel-first data), instead of N.
    pub bias_per_row: bool,
}

impl Default for MatmulOptions {
    fn default() -> Self {
        MatmulOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            bias_per_row: false,
        }
    }
}

fn op_err(op: &'static str, message: String) -> GpuError {
    GpuError::Shape { op, message }
}

fn param_err(
    op: &'static str,
    param: &'static str,
    value: impl std::fmt::Display,
    expected: &str,
) -> GpuError {
    GpuError::Param {
        op,
        param,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Checks that every tensor is a float tensor of one dtype and returns the kernel dtype.
fn float_dtype(op: &'static str, tensors: &[&Tensor]) -> Result<fovea_shaders::Dtype> {
    let first = tensors[0].dtype();
    let storage = first.storage().ok_or_else(|| GpuError::Dtype {
        op,
        dtype: first,
        reason: "this op takes float tensors".into(),
    })?;
    for t in &tensors[1..] {
        if t.dtype() != first {
            return Err(GpuError::Dtype {
                op,
                dtype: t.dtype(),
                reason: format!("inputs mix {} and {}; convert first", first, t.dtype()),
            });
        }
    }
    Ok(storage)
}

fn key(
    kernel: &str,
    dtype: fovea_shaders::Dtype,
    defines: &[(&str, u32)],
    entry: &'static str,
) -> Result<PipelineKey> {
    Ok(PipelineKey {
        variant: Variant::new(kernel, dtype, defines)?,
        entry,
    })
}

/// What a matmul does with its product as it stores it.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Stores it.
    Store,
    /// Adds this tensor of the product's shape (a skip connection).
    Residual(&'a Tensor),
    /// Stores diffusers' GEGLU of it: the first half of the columns times GELU of the
    /// second half, (..., M, N / 2).
    Geglu,
}

/// Whether `matmul_cpu` loads and stores four values at a time (its `QUADS` variant):
/// K and N multiples of 4, so that every row of the operands and of the output, and with
/// it every batch item, starts on a quad, with lhs (M, K) (rhs (N, K), the Linear
/// layout, or (K, N)), or lhs (K, M) (`trans_a`) with M a multiple of 4 on 8-lane
/// subgroups (`subgroup`), which regroup quads along M into quads along K.
fn matmul_cpu_quads(opts: MatmulOptions, subgroup: bool, m: usize, k: usize, n: usize) -> bool {
    k.is_multiple_of(4)
        && n.is_multiple_of(4)
        && (!opts.trans_a || (subgroup && m.is_multiple_of(4)))
}

/// Groups of 8 rows per `matmul_cpu` workgroup (its `ROW_GROUPS` define), 1 to
/// `max_groups`, for M rows. A workgroup of g groups costs about
/// g + 4/7 units on lavapipe (matmul 1024^3 on one thread: 89.5, 72.0, 67.2 and 64.5 ms
/// for 1 to 4 groups): the count with the cheapest workgroups over M wins, the larger on
/// a tie.
fn row_groups(m: usize, max_groups: usize) -> usize {
    (1..=max_groups.max(1))
        .rev()
        .min_by_key(|&g| m.div_ceil(8 * g) * (7 * g + 4))
        .expect("a non-empty range")
}

/// Whether `conv2d_cpu` gives each lane four neighbouring pixels and loads the input and
/// weights two elements at a time (its `PAIRS` variant), and for which stride: 1 for
/// stride 1 (a width that is a multiple of 4 kept by the convolution, so a lane's pixels
/// share a row and every row starts on a pair, and the left padding of a centred
/// kernel), 2 for a 3x3 kernel at stride 2 with padding 1 that halves the width (an
/// output width that is a multiple of 4; with 8-lane subgroups only), 0 otherwise. Both
/// need an even number of weights (so the last one's word lies inside the tensor).
fn conv2d_cpu_pairs(p: &ConvParams, subgroup: bool) -> u32 {
    let weights = p.c_out * p.c_in * p.kernel_h * p.kernel_w;
    if !weights.is_multiple_of(2) {
        return 0;
    }
    if p.stride == 1
        && p.w_in.is_multiple_of(4)
        && p.w_out == p.w_in
        && p.pad_left == p.kernel_w / 2
    {
        return 1;
    }
    let halving_3x3 = p.stride == 2 && p.kernel_w == 3 && p.pad_left == 1 && p.pad_top == 1;
    if subgroup && halving_3x3 && p.w_out.is_multiple_of(4) && p.w_in == 2 * p.w_out {
        return 2;
    }
    0
}

fn u32_dim(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| op_err(op, format!("{what} = {v} exceeds u32 indexing")))
}

fn dtype_of(t: fovea_shaders::Dtype) -> DType {
    match t {
        fovea_shaders::Dtype::F32 => DType::F32,
        fovea_shaders::Dtype::F16 => DType::F16,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    op: u32,
    alpha: f32,
    beta: f32,
    shape: [u32; 4],
    a_strides: [u32; 4],
    b_strides: [u32; 4],
    row_len: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    trans_a: u32,
    trans_b: u32,
    bias_mode: u32,
    alpha: f32,
    // 1: add the residual binding as the output is stored (matmul_cpu's quad paths).
    residual: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConvParams {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormParams {
    rows: u32,
    channels: u32,
    spatial: u32,
    groups: u32,
    eps: f32,
    fuse_silu: u32,
    affine: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LayoutParams {
    len: u32,
    h: u32,
    w: u32,
    src_channels: u32,
    dst_channels: u32,
    dst_channel_offset: u32,
    full_h: u32,
    full_w: u32,
    y0: u32,
    x0: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TimestepParams {
    batch: u32,
    dim: u32,
    flip_sin_to_cos: u32,
    _pad: u32,
    scale: f32,
    _pad1: [f32; 3],
}

/// Numpy-style broadcast of two shapes (up to 4 dims); returns the output shape.
fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    if rank > 4 {
        return Err(op_err(
            op,
            format!(
                "rank {rank} > 4 is not supported ({} and {})",
                fmt_shape(a),
                fmt_shape(b)
            ),
        ));
    }
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(op_err(
                    op,
                    format!(
                        "shapes {} and {} do not broadcast (dim {i}: {da} vs {db})",
                        fmt_shape(a),
                        fmt_shape(b)
                    ),
                ));
            }
        };
    }
    Ok(out)
}

/// Element strides of `shape` right-aligned in 4 dims; 0 on size-1 (broadcast) dims.
fn broadcast_strides(shape: &[usize]) -> [u32; 4] {
    let mut padded = [1usize; 4];
    padded[4 - shape.len()..].copy_from_slice(shape);
    let mut strides = [0u32; 4];
    let mut s = 1usize;
    for i in (0..4).rev() {
        strides[i] = if padded[i] == 1 { 0 } else { s as u32 };
        s *= padded[i];
    }
    strides
}

/// Elements per invocation of the software elementwise kernels (`RUN` in
/// `elementwise.wgsl`).
const ELEMENTWISE_RUN: usize = 16;
/// Blocks per invocation of the software block kernels (`RUN_BLOCKS` in
/// `elementwise_blocks.wgsl` and `layout_blocks.wgsl`).
const RUN_BLOCKS: usize = 2;

/// Elements in a 16-byte block of `dtype` (`BLOCK_ELEMS` in the shader header).
fn block_elems(dtype: fovea_shaders::Dtype) -> usize {
    match dtype {
        fovea_shaders::Dtype::F16 => 8,
        fovea_shaders::Dtype::F32 => 4,
    }
}

/// Whether `t`'s buffer holds whole blocks up to its last element, so that a kernel
/// reading it as blocks reaches every element.
fn whole_blocks(t: &Tensor, elems: usize) -> bool {
    t.buffer().size() >= (t.len().div_ceil(elems) * 16) as u64
}

/// Whether a norm's gamma and beta (when it has them) can be read as blocks.
fn affine_blocks(affine: Option<(&Tensor, &Tensor)>, elems: usize) -> bool {
    affine.is_none_or(|(g, b)| whole_blocks(g, elems) && whole_blocks(b, elems))
}
/// Largest row `layer_norm_cpu` takes: one invocation walks it three times, within
/// llvmpipe's 65,535 loop iterations per invocation.
const LAYER_NORM_PER_LANE_MAX: usize = 16384;
/// Largest group `group_norm_cpu` takes: its 8 invocations walk a group in count / 32,
/// count / 32 and count / 8 + channels loop iterations, within the same budget.
const GROUP_NORM_NARROW_MAX: usize = 8 * 16384;

impl Batch {
    fn flat_groups(&self, op: &'static str, len: usize, per_group: usize) -> Result<[u32; 3]> {
        let groups = u32_dim(op, "workgroups", len.div_ceil(per_group))?;
        let max = self.gpu().limits().max_compute_workgroups_per_dimension;
        let wg = spread_workgroups(groups, max);
        if wg[1] > max {
            return Err(GpuError::Limit {
                op,
                what: format!("{len} elements"),
                limit: "max_compute_workgroups_per_dimension",
                requested: wg[1] as u64,
                available: max as u64,
            });
        }
        Ok(wg)
    }

    fn check_groups(&self, op: &'static str, what: &str, groups: [u32; 3]) -> Result<()> {
        let max = self.gpu().limits().max_compute_workgroups_per_dimension;
        for g in groups {
            if g > max {
                return Err(GpuError::Limit {
                    op,
                    what: what.to_string(),
                    limit: "max_compute_workgroups_per_dimension",
                    requested: g as u64,
                    available: max as u64,
                });
            }
        }
        Ok(())
    }

    /// One elementwise dispatch over `len` outputs: `entries` = [GPU entry point (one
    /// element per invocation, 256-wide), software one (ELEMENTWISE_RUN per invocation,
    /// 8-wide), software block one (`elementwise_blocks.wgsl`, RUN_BLOCKS
    /// blocks per invocation, when `blocks`: the operands are block-aligned)], chosen by
    /// the kernel plan.
    #[allow(clippy::too_many_arguments)]
    fn elementwise_dispatch(
        &mut self,
        op: &'static str,
        dtype: fovea_shaders::Dtype,
        entries: [&'static str; 3],
        blocks: bool,
        len: usize,
        params: &ElementwiseParams,
        bindings: &[(u32, Bind<'_>)],
    ) -> Result<()> {
        let (kernel, entry, per_group) = match (self.gpu().kernel_plan().narrow, blocks) {
            (true, true) => (
                "elementwise_blocks",
                entries[2],
                8 * RUN_BLOCKS * block_elems(dtype),
            ),
            (true, false) => ("elementwise", entries[1], 8 * ELEMENTWISE_RUN),
            (false, _) => ("elementwise", entries[0], 256),
        };
        let wg = self.flat_groups(op, len, per_group)?;
        let d = self.gpu().dispatch(
            &key(kernel, dtype, &[], entry)?,
            bytemuck::bytes_of(params),
            bindings,
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(())
    }

    /// y = alpha * act(x) + beta, elementwise. x: any shape; y: same.
    pub fn unary(&mut self, x: &Tensor, act: Activation, alpha: f32, beta: f32) -> Result<Tensor> {
        const OP: &str = "unary";
        let dtype = float_dtype(OP, &[x])?;
        let y = self.gpu().empty(OP, x.shape(), x.dtype())?;
        let params = ElementwiseParams {
            len: u32_dim(OP, "len", x.len())?,
            op: act as u32,
            alpha,
            beta,
            ..Zeroable::zeroed()
        };
        let blocks = x.len().is_multiple_of(block_elems(dtype));
        self.elementwise_dispatch(
            OP,
            dtype,
            ["unary", "unary_cpu", "unary_blocks"],
            blocks,
            x.len(),
            &params,
            &[(1, Bind::Tensor(x)), (3, Bind::Tensor(&y))],
        )?;
        Ok(y)
    }

    /// SiLU.
    pub fn silu(&mut self, x: &Tensor) -> Result<Tensor> {
        self.unary(x, Activation::Silu, 1.0, 0.0)
    }

    /// Exact GELU.
    pub fn gelu(&mut self, x: &Tensor) -> Result<Tensor> {
        self.unary(x, Activation::Gelu, 1.0, 0.0)
    }

    /// alpha * x + beta.
    pub fn scale(&mut self, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        self.unary(x, Activation::Identity, alpha, beta)
    }

    /// a op b with numpy broadcasting (rank <= 4). Output: the broadcast shape.
    pub fn binary(&mut self, a: &Tensor, b: &Tensor, op: BinaryOp, alpha: f32) -> Result<Tensor> {
        const OP: &str = "binary";
        let dtype = float_dtype(OP, &[a, b])?;
        let out_shape = broadcast_shapes(OP, a.shape(), b.shape())?;
        let mut out4 = [1usize; 4];
        out4[4 - out_shape.len()..].copy_from_slice(&out_shape);
        let y = self.gpu().empty(OP, &out_shape, a.dtype())?;
        let len = y.len();
        let params = ElementwiseParams {
            len: u32_dim(OP, "len", len)?,
            op: op as u32,
            alpha,
            beta: 0.0,
            shape: out4.map(|d| d as u32),
            a_strides: broadcast_strides(a.shape()),
            b_strides: broadcast_strides(b.shape()),
            row_len: 0,
            _pad: [0; 3],
        };
        // Blocks of the output's last dimension; each operand is contiguous or
        // broadcast along it (then its other strides are multiples of that dimension).
        let be = block_elems(dtype);
        let blocks = out4[3].is_multiple_of(be) && whole_blocks(a, be) && whole_blocks(b, be);
        self.elementwise_dispatch(
            OP,
            dtype,
            ["binary", "binary_cpu", "binary_blocks"],
            blocks,
            len,
            &params,
            &[
                (1, Bind::Tensor(a)),
                (2, Bind::Tensor(b)),
                (3, Bind::Tensor(&y)),
            ],
        )?;
        Ok(y)
    }

    /// a + b (broadcasting).
    pub fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary(a, b, BinaryOp::Add, 1.0)
    }

    /// a * b (broadcasting).
    pub fn mul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary(a, b, BinaryOp::Mul, 1.0)
    }

    /// GEGLU: x (..., 2 * D) -> (..., D) = x[..., :D] * gelu(x[..., D:]).
    pub fn geglu(&mut self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "geglu";
        let dtype = float_dtype(OP, &[x])?;
        let last = *x.shape().last().unwrap_or(&0);
        if x.shape().is_empty() || !last.is_multiple_of(2) {
            return Err(op_err(
                OP,
                format!("input {} needs an even last dimension", x.describe()),
            ));
        }
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("non-empty") = last / 2;
        let y = self.gpu().empty(OP, &out_shape, x.dtype())?;
        let params = ElementwiseParams {
            len: u32_dim(OP, "len", y.len())?,
            row_len: (last / 2) as u32,
            ..Zeroable::zeroed()
        };
        let blocks = (last / 2).is_multiple_of(block_elems(dtype));
        self.elementwise_dispatch(
            OP,
            dtype,
            ["geglu", "geglu_cpu", "geglu_blocks"],
            blocks,
            y.len(),
            &params,
            &[(1, Bind::Tensor(x)), (3, Bind::Tensor(&y))],
        )?;
        Ok(y)
    }

    /// Batched matmul: a (..., M, K) @ b (..., K, N) [+ bias (N)] -> (..., M, N).
    /// `b` may be 2D (shared by every batch item); with `trans_a`/`trans_b` the stored
    /// layouts are (..., K, M) and (..., N, K).
    pub fn matmul(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        opts: MatmulOptions,
    ) -> Result<Tensor> {
        self.matmul_to(a, b, bias, opts, None, Epilogue::Store)
    }

    /// [`Batch::matmul`] plus `residual` (of the product's shape and dtype): a skip
    /// connection. The software class's kernels with 8-lane subgroups add it as they
    /// store the Linear layout's quads (`trans_b`, K and N multiples of 4), sparing a pass
    /// over the output; elsewhere it is a separate add.
    pub fn matmul_add(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        opts: MatmulOptions,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.matmul_to(a, b, bias, opts, None, Epilogue::Residual(residual))
    }

    /// [`Batch::matmul`] into `out` (of the stored shape and dtype) when given, else
    /// into a new tensor, through `epilogue`.
    pub(crate) fn matmul_to(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        opts: MatmulOptions,
        out: Option<Tensor>,
        epilogue: Epilogue<'_>,
    ) -> Result<Tensor> {
        const OP: &str = "matmul";
        let residual = match epilogue {
            Epilogue::Residual(r) => Some(r),
            _ => None,
        };
        let geglu = matches!(epilogue, Epilogue::Geglu);
        let mut all = vec![a, b];
        all.extend(bias);
        all.extend(residual);
        let dtype = float_dtype(OP, &all)?;
        if a.shape().len() < 2 || b.shape().len() < 2 {
            return Err(op_err(
                OP,
                format!(
                    "needs rank >= 2, got a {} and b {}",
                    a.describe(),
                    b.describe()
                ),
            ));
        }
        let (ar, br) = (a.shape().len(), b.shape().len());
        let (m, k) = if opts.trans_a {
            (a.shape()[ar - 1], a.shape()[ar - 2])
        } else {
            (a.shape()[ar - 2], a.shape()[ar - 1])
        };
        let (kb, n) = if opts.trans_b {
            (b.shape()[br - 1], b.shape()[br - 2])
        } else {
            (b.shape()[br - 2], b.shape()[br - 1])
        };
        if k != kb {
            return Err(op_err(
                OP,
                format!(
                    "inner dimensions differ: a {} gives K = {k}, b {} gives K = {kb} (trans_a={}, trans_b={})",
                    fmt_shape(a.shape()),
                    fmt_shape(b.shape()),
                    opts.trans_a,
                    opts.trans_b
                ),
            ));
        }
        let a_batch: usize = a.shape()[..ar - 2].iter().product();
        let b_batch: usize = b.shape()[..br - 2].iter().product();
        let (batch, lead) = match (a_batch, b_batch) {
            (x, y) if x == y => (x, &a.shape()[..ar - 2]),
            (x, 1) => (x, &a.shape()[..ar - 2]),
            (1, y) => (y, &b.shape()[..br - 2]),
            _ => {
                return Err(op_err(
                    OP,
                    format!(
                        "batch dimensions of a {} and b {} differ",
                        fmt_shape(a.shape()),
                        fmt_shape(b.shape())
                    ),
                ));
            }
        };
        let bias_len = if opts.bias_per_row { m } else { n };
        if let Some(bias) = bias
            && bias.len() != bias_len
        {
            let which = if opts.bias_per_row { "M" } else { "N" };
            return Err(op_err(
                OP,
                format!(
                    "bias {} must have {which} = {bias_len} elements",
                    bias.describe()
                ),
            ));
        }
        let plan = self.gpu().kernel_plan().matmul;
        let cpu = matches!(plan, MatmulKernel::CpuUniform | MatmulKernel::CpuSubgroup);
        let subgroup = plan == MatmulKernel::CpuSubgroup;
        let quads = matmul_cpu_quads(opts, subgroup, m, k, n);
        // The epilogues in the software kernel's store: the Linear layout's quads on
        // 8-lane subgroups.
        let fused = subgroup && quads && opts.trans_b && !opts.trans_a;
        if geglu && !fused {
            if !n.is_multiple_of(2) {
                return Err(op_err(OP, format!("GEGLU needs an even N, got {n}")));
            }
            let y = self.matmul_to(a, b, bias, opts, None, Epilogue::Store)?;
            return self.geglu(&y);
        }
        let out_n = if geglu { n / 2 } else { n };
        let mut out_shape = lead.to_vec();
        out_shape.extend([m, out_n]);
        let y = match out {
            Some(y) if y.shape() == out_shape.as_slice() && y.dtype() == a.dtype() => y,
            Some(y) => {
                return Err(op_err(
                    OP,
                    format!(
                        "output {} must be {} {}",
                        y.describe(),
                        fmt_shape(&out_shape),
                        a.dtype()
                    ),
                ));
            }
            None => self.gpu().empty(OP, &out_shape, a.dtype())?,
        };
        // The residual in the product's shape (batch dimensions may differ only as a
        // leading 1, as when a 2D weight comes first).
        let residual = match residual {
            Some(r) if r.len() == y.len() && r.shape().ends_with(&[m, n]) => {
                Some(r.reshape(&out_shape)?)
            }
            Some(r) => {
                return Err(op_err(
                    OP,
                    format!(
                        "residual {} must be the product's shape {}",
                        r.describe(),
                        fmt_shape(&out_shape)
                    ),
                ));
            }
            None => None,
        };
        let residual = residual.as_ref();
        let fused_residual = residual.is_some() && fused;
        let params = MatmulParams {
            m: u32_dim(OP, "M", m)?,
            n: u32_dim(OP, "N", n)?,
            k: u32_dim(OP, "K", k)?,
            batch: u32_dim(OP, "batch", batch)?,
            a_batch_stride: if a_batch == 1 {
                0
            } else {
                u32_dim(OP, "a batch stride", m * k)?
            },
            b_batch_stride: if b_batch == 1 {
                0
            } else {
                u32_dim(OP, "b batch stride", k * n)?
            },
            c_batch_stride: u32_dim(OP, "c batch stride", m * out_n)?,
            lda: (if opts.trans_a { m } else { k }) as u32,
            ldb: (if opts.trans_b { k } else { n }) as u32,
            ldc: out_n as u32,
            trans_a: opts.trans_a as u32,
            trans_b: opts.trans_b as u32,
            bias_mode: match (bias.is_some(), opts.bias_per_row) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            },
            alpha: opts.alpha,
            residual: fused_residual as u32,
            ..Zeroable::zeroed()
        };
        // The device's plan picks the kernel family; each has its own tile shape.
        let (pipeline, groups) = match plan {
            MatmulKernel::Tiled => (
                key("matmul", dtype, &[], "matmul")?,
                [n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32],
            ),
            MatmulKernel::CpuUniform | MatmulKernel::CpuSubgroup => {
                // The quad loads shared by subgroup broadcasts take up to 4 groups.
                let row_groups = row_groups(m, if subgroup && quads { 4 } else { 1 });
                (
                    key(
                        "matmul_cpu",
                        dtype,
                        &[
                            ("TRANS_A", opts.trans_a as u32),
                            ("TRANS_B", opts.trans_b as u32),
                            ("SUBGROUP", subgroup as u32),
                            ("QUADS", quads as u32),
                            ("ROW_GROUPS", row_groups as u32),
                            ("GEGLU", geglu as u32),
                        ],
                        "matmul_cpu",
                    )?,
                    [
                        n.div_ceil(32) as u32,
                        m.div_ceil(8 * row_groups) as u32,
                        batch as u32,
                    ],
                )
            }
            MatmulKernel::CpuBlocked => (
                key("matmul_blocked", dtype, &[], "matmul_blocked")?,
                [n.div_ceil(32) as u32, m.div_ceil(32) as u32, batch as u32],
            ),
        };
        self.check_groups(OP, &format!("output {}", fmt_shape(&out_shape)), groups)?;
        let bias_bind = bias.map_or(Bind::Dummy, Bind::Tensor);
        let mut binds = vec![
            (1, Bind::Tensor(a)),
            (2, Bind::Tensor(b)),
            (3, bias_bind),
            (4, Bind::Tensor(&y)),
        ];
        // matmul_cpu's quad stores read the residual binding when params.residual is 1.
        if cpu && quads && !geglu {
            let r = residual.filter(|_| fused_residual);
            binds.push((5, r.map_or(Bind::Dummy, Bind::Tensor)));
        }
        let d = self.gpu().dispatch(
            &pipeline,
            bytemuck::bytes_of(&params),
            &binds,
            Workgroups::Direct(groups),
        )?;
        self.record(d);
        match residual {
            Some(r) if !fused_residual => self.add(r, &y),
            _ => Ok(y),
        }
    }

    /// PyTorch Linear: x (..., in) @ weight (out, in)^T + bias (out) -> (..., out).
    pub fn linear(&mut self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_to(x, weight, bias, None, false)
    }

    /// [`Batch::linear`] plus `residual` (of the output's shape): a skip connection,
    /// added as the output is stored where the kernels can ([`Batch::matmul_add`]).
    pub fn linear_add(
        &mut self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.linear_to(x, weight, bias, Some(residual), false)
    }

    /// diffusers' GEGLU of a Linear layer: x W^T + b (..., out), split in halves along
    /// the last axis, value * gelu(gate) -> (..., out / 2). The software class's kernels
    /// on 8-lane subgroups compute it as they store the product (in and out multiples of
    /// 4), sparing a pass over the product; elsewhere it is `linear`, then `geglu`.
    pub fn linear_geglu(
        &mut self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.linear_to(x, weight, bias, None, true)
    }

    fn linear_to(
        &mut self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        geglu: bool,
    ) -> Result<Tensor> {
        if x.shape().is_empty() || weight.shape().len() != 2 {
            return Err(op_err(
                "linear",
                format!(
                    "needs x (..., in) and weight (out, in), got x {} and weight {}",
                    x.describe(),
                    weight.describe()
                ),
            ));
        }
        let in_features = *x.shape().last().expect("non-empty");
        let rows = x.len() / in_features.max(1);
        let x2 = x.reshape(&[rows, in_features])?;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("non-empty") = weight.shape()[0];
        let residual = match residual {
            Some(r) if r.shape() != out_shape.as_slice() => {
                return Err(op_err(
                    "linear",
                    format!(
                        "residual {} must be the output's shape {}",
                        r.describe(),
                        fmt_shape(&out_shape)
                    ),
                ));
            }
            Some(r) => Some(r.reshape(&[rows, weight.shape()[0]])?),
            None => None,
        };
        let opts = MatmulOptions {
            trans_b: true,
            ..Default::default()
        };
        let epilogue = match (&residual, geglu) {
            (Some(r), _) => Epilogue::Residual(r),
            (None, true) => Epilogue::Geglu,
            (None, false) => Epilogue::Store,
        };
        let y = self.matmul_to(&x2, weight, bias, opts, None, epilogue)?;
        if geglu {
            *out_shape.last_mut().expect("non-empty") /= 2;
        }
        y.reshape(&out_shape)
    }

    /// 2D convolution: x (N, C_in, H, W), weight (C_out, C_in, kh, kw), bias (C_out)
    /// -> (N, C_out, (H + 2 pad - kh) / stride + 1, (W + 2 pad - kw) / stride + 1).
    pub fn conv2d(
        &mut self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        self.conv2d_padded(x, weight, bias, stride, [pad; 4])
    }

    /// 2D convolution with separate zero padding `[top, bottom, left, right]`.
    pub fn conv2d_padded(
        &mut self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: [usize; 4],
    ) -> Result<Tensor> {
        const OP: &str = "conv2d";
        let [pad_top, pad_bottom, pad_left, pad_right] = padding;
        let mut all = vec![x, weight];
        all.extend(bias);
        let dtype = float_dtype(OP, &all)?;
        let (xs, ws) = (x.shape(), weight.shape());
        if xs.len() != 4 || ws.len() != 4 {
            return Err(op_err(
                OP,
                format!(
                    "needs x (N, C, H, W) and weight (C_out, C_in, kh, kw), got {} and {}",
                    x.describe(),
                    weight.describe()
                ),
            ));
        }
        if ws[1] != xs[1] {
            return Err(op_err(
                OP,
                format!(
                    "weight {} expects {} input channels, x {} has {}",
                    fmt_shape(ws),
                    ws[1],
                    fmt_shape(xs),
                    xs[1]
                ),
            ));
        }
        if stride == 0 {
            return Err(param_err(OP, "stride", stride, "a positive integer"));
        }
        let (padded_h, padded_w) = (xs[2] + pad_top + pad_bottom, xs[3] + pad_left + pad_right);
        if padded_h < ws[2] || padded_w < ws[3] {
            return Err(op_err(
                OP,
                format!(
                    "kernel {}x{} is larger than the padded input {}",
                    ws[2],
                    ws[3],
                    fmt_shape(xs)
                ),
            ));
        }
        if let Some(bias) = bias
            && bias.len() != ws[0]
        {
            return Err(op_err(
                OP,
                format!(
                    "bias {} must have C_out = {} elements",
                    bias.describe(),
                    ws[0]
                ),
            ));
        }
        let h_out = (padded_h - ws[2]) / stride + 1;
        let w_out = (padded_w - ws[3]) / stride + 1;
        if let Some(tile) = self.winograd_tile(x, weight, stride, padding) {
            // Callers that convolve with the same weights again keep the transformed
            // weights and call conv2d_winograd (the models do).
            let u = self.winograd_weights(weight, tile)?;
            return self.conv2d_winograd(x, &u, bias);
        }
        let plan = self.gpu().kernel_plan().conv2d;
        let pointwise = ws[2] == 1 && ws[3] == 1 && stride == 1 && padding == [0; 4];
        // Where the quad matmul applies (C_in and H * W multiples of 4), the 1x1
        // convolution of the 8-lane plans runs on it: as fast per step, and one pipeline
        // fewer to compile per process (conv2d_cpu's 1x1 variant took ~0.3 s of CPU).
        let quad_matmul = matches!(plan, MatmulKernel::CpuUniform | MatmulKernel::CpuSubgroup)
            && matmul_cpu_quads(MatmulOptions::default(), false, ws[0], ws[1], xs[2] * xs[3]);
        if pointwise && (plan == MatmulKernel::CpuBlocked || quad_matmul) {
            // A 1x1 convolution is a matmul per batch item: weight (C_out, C_in) @
            // x (C_in, H * W), bias per output row.
            let w2 = weight.reshape(&[ws[0], ws[1]])?;
            let x3 = x.reshape(&[xs[0], xs[1], xs[2] * xs[3]])?;
            let opts = MatmulOptions {
                bias_per_row: true,
                ..Default::default()
            };
            return self
                .matmul(&w2, &x3, bias, opts)?
                .reshape(&[xs[0], ws[0], h_out, w_out]);
        }
        let out_shape = [xs[0], ws[0], h_out, w_out];
        let y = self.gpu().empty(OP, &out_shape, x.dtype())?;
        let params = ConvParams {
            batch: xs[0] as u32,
            c_in: xs[1] as u32,
            h_in: xs[2] as u32,
            w_in: xs[3] as u32,
            c_out: ws[0] as u32,
            h_out: h_out as u32,
            w_out: w_out as u32,
            kernel_h: ws[2] as u32,
            kernel_w: ws[3] as u32,
            stride: stride as u32,
            pad_top: pad_top as u32,
            pad_left: pad_left as u32,
            has_bias: bias.is_some() as u32,
            _pad: [0; 3],
        };
        // The device's plan picks the kernel family; the CPU kernels cover the square
        // 1x1 and 3x3 kernels (all of Stable Diffusion's), the tiled one everything.
        let square = ws[2] == ws[3] && (ws[2] == 1 || ws[2] == 3);
        let (pipeline, groups) = match plan {
            MatmulKernel::CpuBlocked if ws[2] == 3 && ws[3] == 3 && stride <= 2 => (
                key(
                    "conv2d_blocked",
                    dtype,
                    &[("STRIDE2", (stride == 2) as u32)],
                    "conv2d_blocked",
                )?,
                [
                    (h_out * w_out.div_ceil(8)).div_ceil(4) as u32,
                    ws[0].div_ceil(32) as u32,
                    xs[0] as u32,
                ],
            ),
            cpu @ (MatmulKernel::CpuUniform | MatmulKernel::CpuSubgroup) if square => {
                let subgroup = cpu == MatmulKernel::CpuSubgroup;
                let pairs = conv2d_cpu_pairs(&params, subgroup);
                // Output channels are the rows: 3x3 kernels with pairs and subgroups
                // share each loaded input value among 16 of them, even when fewer
                // exist (the VAE's 3-channel conv_out: a few ms once per image, against
                // ~0.2 s of CPU to create a one-group variant in every process).
                let wide = subgroup && pairs > 0 && ws[2] == 3;
                let row_groups = if wide { 2 } else { 1 };
                (
                    key(
                        "conv2d_cpu",
                        dtype,
                        &[
                            ("KSIZE", ws[2] as u32),
                            ("SUBGROUP", subgroup as u32),
                            ("PAIRS", pairs),
                            ("ROW_GROUPS", row_groups as u32),
                        ],
                        "conv2d_cpu",
                    )?,
                    [
                        (h_out * w_out).div_ceil(32) as u32,
                        ws[0].div_ceil(8 * row_groups) as u32,
                        xs[0] as u32,
                    ],
                )
            }
            _ => (
                key("conv2d", dtype, &[], "conv2d")?,
                [
                    (h_out * w_out).div_ceil(64) as u32,
                    ws[0].div_ceil(64) as u32,
                    xs[0] as u32,
                ],
            ),
        };
        self.check_groups(OP, &format!("output {}", fmt_shape(&out_shape)), groups)?;
        let bias_bind = bias.map_or(Bind::Dummy, Bind::Tensor);
        let d = self.gpu().dispatch(
            &pipeline,
            bytemuck::bytes_of(&params),
            &[
                (1, Bind::Tensor(x)),
                (2, Bind::Tensor(weight)),
                (3, bias_bind),
                (4, Bind::Tensor(&y)),
            ],
            Workgroups::Direct(groups),
        )?;
        self.record(d);
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_dispatch(
        &mut self,
        op: &'static str,
        entry: &'static str,
        x: &Tensor,
        affine: Option<(&Tensor, &Tensor)>,
        params: NormParams,
        workgroups: usize,
    ) -> Result<Tensor> {
        let mut all = vec![x];
        if let Some((g, b)) = affine {
            all.extend([g, b]);
        }
        let dtype = float_dtype(op, &all)?;
        let y = self.gpu().empty(op, x.shape(), x.dtype())?;
        let wg = self.flat_groups(op, workgroups, 1)?;
        let mut bindings = vec![(1, Bind::Tensor(x)), (4, Bind::Tensor(&y))];
        // softmax has no affine parameters, so its pipeline layout lacks bindings 2 and 3.
        if entry != "softmax" {
            let (g, b) = match affine {
                Some((g, b)) => (Bind::Tensor(g), Bind::Tensor(b)),
                None => (Bind::Dummy, Bind::Dummy),
            };
            bindings.extend([(2, g), (3, b)]);
        }
        // The block entry points (norm_blocks.wgsl) read x, y, gamma and beta as blocks.
        let kernel = if entry.ends_with("_blocks") {
            "norm_blocks"
        } else {
            "norm"
        };
        let d = self.gpu().dispatch(
            &key(kernel, dtype, &[], entry)?,
            bytemuck::bytes_of(&params),
            &bindings,
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(y)
    }

    /// Group norm over x (N, C, ...) with `groups` groups and optional gamma/beta (C),
    /// optionally followed by SiLU. Output: same shape.
    pub fn group_norm(
        &mut self,
        x: &Tensor,
        groups: usize,
        affine: Option<(&Tensor, &Tensor)>,
        eps: f32,
        fuse_silu: bool,
    ) -> Result<Tensor> {
        const OP: &str = "group_norm";
        let s = x.shape();
        if s.len() < 2 {
            return Err(op_err(
                OP,
                format!("needs (N, C, ...), got {}", x.describe()),
            ));
        }
        if groups == 0 || !s[1].is_multiple_of(groups) {
            return Err(param_err(
                OP,
                "groups",
                groups,
                &format!("a divisor of the {} channels of {}", s[1], fmt_shape(s)),
            ));
        }
        if eps.is_nan() || eps <= 0.0 {
            return Err(param_err(OP, "eps", eps, "a positive number"));
        }
        if let Some((g, b)) = affine
            && (g.len() != s[1] || b.len() != s[1])
        {
            return Err(op_err(
                OP,
                format!(
                    "gamma {} and beta {} must have C = {} elements",
                    g.describe(),
                    b.describe(),
                    s[1]
                ),
            ));
        }
        let spatial: usize = s[2..].iter().product();
        let params = NormParams {
            rows: s[0] as u32,
            channels: s[1] as u32,
            spatial: spatial as u32,
            groups: groups as u32,
            eps,
            fuse_silu: fuse_silu as u32,
            affine: affine.is_some() as u32,
            _pad: 0,
        };
        // Software adapters: 8 invocations per group while the group fits llvmpipe's loop
        // budget, reading blocks when each channel's extent is whole blocks.
        let count = s[1] / groups * spatial;
        let be = block_elems(float_dtype(OP, &[x])?);
        let blocks = spatial.is_multiple_of(be) && affine_blocks(affine, be);
        let entry = match (
            self.gpu().kernel_plan().narrow && count <= GROUP_NORM_NARROW_MAX,
            blocks,
        ) {
            (true, true) => "group_norm_blocks",
            (true, false) => "group_norm_cpu",
            (false, _) => "group_norm",
        };
        self.norm_dispatch(OP, entry, x, affine, params, s[0] * groups)
    }

    /// Layer norm over the last dimension of x (..., D) with optional gamma/beta (D).
    pub fn layer_norm(
        &mut self,
        x: &Tensor,
        affine: Option<(&Tensor, &Tensor)>,
        eps: f32,
    ) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let d = *x
            .shape()
            .last()
            .ok_or_else(|| op_err(OP, "needs rank >= 1".into()))?;
        if eps.is_nan() || eps <= 0.0 {
            return Err(param_err(OP, "eps", eps, "a positive number"));
        }
        if let Some((g, b)) = affine
            && (g.len() != d || b.len() != d)
        {
            return Err(op_err(
                OP,
                format!(
                    "gamma {} and beta {} must have D = {d} elements",
                    g.describe(),
                    b.describe()
                ),
            ));
        }
        let rows = x.len() / d.max(1);
        let params = NormParams {
            rows: rows as u32,
            channels: d as u32,
            spatial: 1,
            groups: 1,
            eps,
            fuse_silu: 0,
            affine: affine.is_some() as u32,
            _pad: 0,
        };
        // Software adapters: one row per lane, 8 rows per workgroup, while the row fits
        // the kernel's loop budget, reading blocks when rows are whole blocks.
        if self.gpu().kernel_plan().narrow && d <= LAYER_NORM_PER_LANE_MAX {
            let be = block_elems(float_dtype(OP, &[x])?);
            let entry = if d.is_multiple_of(be) && affine_blocks(affine, be) {
                "layer_norm_blocks"
            } else {
                "layer_norm_cpu"
            };
            self.norm_dispatch(OP, entry, x, affine, params, rows.div_ceil(8))
        } else {
            self.norm_dispatch(OP, "layer_norm", x, affine, params, rows)
        }
    }

    /// softmax(scale * x) over the last dimension. Output: same shape.
    pub fn softmax(&mut self, x: &Tensor, scale: f32) -> Result<Tensor> {
        const OP: &str = "softmax";
        let d = *x
            .shape()
            .last()
            .ok_or_else(|| op_err(OP, "needs rank >= 1".into()))?;
        if !scale.is_finite() {
            return Err(param_err(OP, "scale", scale, "a finite number"));
        }
        let rows = x.len() / d.max(1);
        let params = NormParams {
            rows: rows as u32,
            channels: d as u32,
            spatial: 1,
            groups: 1,
            eps: scale,
            fuse_silu: 0,
            affine: 0,
            _pad: 0,
        };
        self.norm_dispatch(OP, "softmax", x, None, params, rows)
    }

    /// Nearest-neighbour 2x upsampling: x (N, C, H, W) -> (N, C, 2H, 2W).
    pub fn upsample_nearest2x(&mut self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "upsample_nearest2x";
        let dtype = float_dtype(OP, &[x])?;
        let s = x.shape();
        if s.len() != 4 {
            return Err(op_err(
                OP,
                format!("needs (N, C, H, W), got {}", x.describe()),
            ));
        }
        let out_shape = [s[0], s[1], 2 * s[2], 2 * s[3]];
        let y = self.gpu().empty(OP, &out_shape, x.dtype())?;
        let params = LayoutParams {
            len: u32_dim(OP, "len", y.len())?,
            h: s[2] as u32,
            w: s[3] as u32,
            ..Zeroable::zeroed()
        };
        // Software adapters: output rows of whole blocks, a block per access.
        let be = block_elems(dtype);
        let (pipeline, per_group) = if self.gpu().kernel_plan().narrow
            && (2 * s[3]).is_multiple_of(be)
            && whole_blocks(x, be)
        {
            (
                key("layout_blocks", dtype, &[], "upsample_nearest2x_blocks")?,
                8 * RUN_BLOCKS * be,
            )
        } else {
            (key("layout", dtype, &[], "upsample_nearest2x")?, 256)
        };
        let wg = self.flat_groups(OP, y.len(), per_group)?;
        let d = self.gpu().dispatch(
            &pipeline,
            bytemuck::bytes_of(&params),
            &[(1, Bind::Tensor(x)), (2, Bind::Tensor(&y))],
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(y)
    }

    /// Concatenates tensors (N, C_i, ...) along channels -> (N, sum C_i, ...).
    pub fn concat_channels(&mut self, parts: &[&Tensor]) -> Result<Tensor> {
        const OP: &str = "concat_channels";
        if parts.is_empty() {
            return Err(op_err(OP, "needs at least one tensor".into()));
        }
        let dtype = float_dtype(OP, parts)?;
        let first = parts[0].shape();
        if first.len() < 2 {
            return Err(op_err(
                OP,
                format!("needs (N, C, ...), got {}", parts[0].describe()),
            ));
        }
        for p in parts {
            let s = p.shape();
            if s.len() != first.len() || s[0] != first[0] || s[2..] != first[2..] {
                return Err(op_err(
                    OP,
                    format!(
                        "{} does not match {} outside the channel dimension",
                        fmt_shape(s),
                        fmt_shape(first)
                    ),
                ));
            }
        }
        let total: usize = parts.iter().map(|p| p.shape()[1]).sum();
        let mut out_shape = first.to_vec();
        out_shape[1] = total;
        let y = self.gpu().empty(OP, &out_shape, parts[0].dtype())?;
        let spatial: usize = first[2..].iter().product();
        // Software adapters: channel planes of whole blocks, a block per access.
        let be = block_elems(dtype);
        let blocks = self.gpu().kernel_plan().narrow && spatial.is_multiple_of(be);
        let (pipeline, per_group) = if blocks {
            (
                key("layout_blocks", dtype, &[], "copy_channels_blocks")?,
                8 * RUN_BLOCKS * be,
            )
        } else {
            (key("layout", dtype, &[], "copy_channels")?, 256)
        };
        let mut offset = 0;
        for p in parts {
            let params = LayoutParams {
                len: u32_dim(OP, "len", p.len())?,
                h: spatial as u32,
                w: 0,
                src_channels: p.shape()[1] as u32,
                dst_channels: total as u32,
                dst_channel_offset: offset as u32,
                ..Zeroable::zeroed()
            };
            let wg = self.flat_groups(OP, p.len(), per_group)?;
            let d = self.gpu().dispatch(
                &pipeline,
                bytemuck::bytes_of(&params),
                &[(1, Bind::Tensor(p)), (2, Bind::Tensor(&y))],
                Workgroups::Direct(wg),
            )?;
            self.record(d);
            offset += p.shape()[1];
        }
        Ok(y)
    }

    /// Channels `[start, start + count)` of x (N, C, ...) -> (N, count, ...).
    pub fn slice_channels(&mut self, x: &Tensor, start: usize, count: usize) -> Result<Tensor> {
        const OP: &str = "slice_channels";
        let dtype = float_dtype(OP, &[x])?;
        let s = x.shape();
        if s.len() < 2 || count == 0 || start + count > s[1] {
            return Err(op_err(
                OP,
                format!("channels {start}..{} of {}", start + count, x.describe()),
            ));
        }
        let mut out_shape = s.to_vec();
        out_shape[1] = count;
        let y = self.gpu().empty(OP, &out_shape, x.dtype())?;
        let params = LayoutParams {
            len: u32_dim(OP, "len", y.len())?,
            h: s[2..].iter().product::<usize>() as u32,
            w: 0,
            src_channels: s[1] as u32,
            dst_channels: count as u32,
            dst_channel_offset: start as u32,
            ..Zeroable::zeroed()
        };
        let wg = self.flat_groups(OP, y.len(), 256)?;
        let d = self.gpu().dispatch(
            &key("layout", dtype, &[], "slice_channels")?,
            bytemuck::bytes_of(&params),
            &[(1, Bind::Tensor(x)), (2, Bind::Tensor(&y))],
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(y)
    }

    /// The (h, w) window at (y0, x0) of x (B, C, H, W), as a new (B, C, h, w) tensor.
    pub fn crop_window(
        &mut self,
        x: &Tensor,
        y0: usize,
        x0: usize,
        h: usize,
        w: usize,
    ) -> Result<Tensor> {
        const OP: &str = "crop_window";
        let dtype = float_dtype(OP, &[x])?;
        let s = x.shape();
        if s.len() != 4 || h == 0 || w == 0 || y0 + h > s[2] || x0 + w > s[3] {
            return Err(op_err(
                OP,
                format!("window {h}x{w} at ({y0}, {x0}) of {}", x.describe()),
            ));
        }
        let y = self.gpu().empty(OP, &[s[0], s[1], h, w], x.dtype())?;
        let params = window_params(OP, y.len(), h, w, s, y0, x0)?;
        let wg = self.flat_groups(OP, y.len(), 256)?;
        let d = self.gpu().dispatch(
            &key("layout", dtype, &[], "crop_window")?,
            bytemuck::bytes_of(&params),
            &[(1, Bind::Tensor(x)), (2, Bind::Tensor(&y))],
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(y)
    }

    /// In place: the window of `acc` (B, C, H, W) at (y0, x0) += `weight` (h, w) *
    /// `tile` (B, C, h, w). Tiles recorded one after another accumulate in order.
    pub fn add_window(
        &mut self,
        acc: &Tensor,
        tile: &Tensor,
        weight: &Tensor,
        y0: usize,
        x0: usize,
    ) -> Result<()> {
        const OP: &str = "add_window";
        let dtype = float_dtype(OP, &[acc, tile, weight])?;
        let (s, t) = (acc.shape(), tile.shape());
        if s.len() != 4
            || t.len() != 4
            || s[..2] != t[..2]
            || y0 + t[2] > s[2]
            || x0 + t[3] > s[3]
            || weight.len() != t[2] * t[3]
        {
            return Err(op_err(
                OP,
                format!(
                    "tile {} with weight {} at ({y0}, {x0}) of {}",
                    tile.describe(),
                    weight.describe(),
                    acc.describe()
                ),
            ));
        }
        let params = window_params(OP, tile.len(), t[2], t[3], s, y0, x0)?;
        let wg = self.flat_groups(OP, tile.len(), 256)?;
        let d = self.gpu().dispatch(
            &key("layout", dtype, &[], "add_window")?,
            bytemuck::bytes_of(&params),
            &[
                (1, Bind::Tensor(tile)),
                (2, Bind::Tensor(acc)),
                (3, Bind::Tensor(weight)),
            ],
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(())
    }

    /// Sinusoidal timestep embedding as diffusers' `get_timestep_embedding`:
    /// timesteps (B) f32 -> (B, dim) in `dtype`.
    pub fn timestep_embedding(
        &mut self,
        timesteps: &Tensor,
        dim: usize,
        opts: TimestepOptions,
        dtype: DType,
    ) -> Result<Tensor> {
        const OP: &str = "timestep_embedding";
        if timesteps.dtype() != DType::F32 || timesteps.shape().len() != 1 {
            return Err(op_err(
                OP,
                format!("timesteps must be (B,) f32, got {}", timesteps.describe()),
            ));
        }
        let storage = dtype.storage().ok_or_else(|| GpuError::Dtype {
            op: OP,
            dtype,
            reason: "output must be a float dtype".into(),
        })?;
        if dim < 2 {
            return Err(param_err(OP, "dim", dim, "at least 2"));
        }
        if opts.max_period.is_nan() || opts.max_period <= 1.0 {
            return Err(param_err(
                OP,
                "max_period",
                opts.max_period,
                "greater than 1",
            ));
        }
        let half = dim / 2;
        if (half as f64 - opts.downscale_freq_shift).abs() < 1e-12 {
            return Err(param_err(
                OP,
                "downscale_freq_shift",
                opts.downscale_freq_shift,
                "different from dim / 2",
            ));
        }
        // Frequencies rounded to f32 once, as PyTorch computes them.
        let freqs: Vec<f32> = (0..half)
            .map(|j| {
                (-(opts.max_period.ln()) * j as f64 / (half as f64 - opts.downscale_freq_shift))
                    .exp() as f32
            })
            .collect();
        let freqs = self
            .gpu()
            .upload_f32("timestep freqs", &[half], DType::F32, &freqs)?;
        let b = timesteps.len();
        let y = self.gpu().empty(OP, &[b, dim], dtype_of(storage))?;
        let params = TimestepParams {
            batch: b as u32,
            dim: dim as u32,
            flip_sin_to_cos: opts.flip_sin_to_cos as u32,
            _pad: 0,
            scale: opts.scale as f32,
            _pad1: [0.0; 3],
        };
        let wg = self.flat_groups(OP, y.len(), 256)?;
        let d = self.gpu().dispatch(
            &key("timestep", storage, &[], "timestep_embedding")?,
            bytemuck::bytes_of(&params),
            &[
                (1, Bind::Tensor(timesteps)),
                (2, Bind::Tensor(&freqs)),
                (3, Bind::Tensor(&y)),
            ],
            Workgroups::Direct(wg),
        )?;
        self.record(d);
        Ok(y)
    }
}

/// Options of [`Batch::timestep_embedding`], named as diffusers' arguments.
#[derive(Clone, Copy, Debug)]
pub struct TimestepOptions {
    /// Output [cos, sin] instead of [sin, cos] (SD: true).
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` (SD: 0; diffusers' default 1).
    pub downscale_freq_shift: f64,
    /// Multiplier on the arguments.
    pub scale: f64,
    /// `max_period` (10000).
    pub max_period: f64,
}

impl Default for TimestepOptions {
    fn default() -> Self {
        TimestepOptions {
            flip_sin_to_cos: true,
            downscale_freq_shift: 0.0,
            scale: 1.0,
            max_period: 10000.0,
        }
    }
}

fn window_params(
    op: &'static str,
    len: usize,
    h: usize,
    w: usize,
    full: &[usize],
    y0: usize,
    x0: usize,
) -> Result<LayoutParams> {
    Ok(LayoutParams {
        len: u32_dim(op, "len", len)?,
        h: h as u32,
        w: w as u32,
        full_h: full[2] as u32,
        full_w: full[3] as u32,
        y0: y0 as u32,
        x0: x0 as u32,
        ..Zeroable::zeroed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes("t", &[2, 3, 4], &[4]).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(
            broadcast_shapes("t", &[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert!(broadcast_shapes("t", &[2, 3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[4]), [0, 0, 0, 1]);
        assert_eq!(broadcast_strides(&[2, 1, 4]), [0, 4, 0, 1]);
    }

    #[test]
    fn row_groups_follow_the_cost_of_a_workgroup() {
        // One group allowed: one group.
        assert_eq!(row_groups(2048, 1), 1);
        // (M, groups) with up to 4: tiny M keeps 8 rows; the models' token counts take
        // 32; an M just past a tile takes the count that wastes fewest rows (77: 80 rows
        // in groups of 16, against 96 in groups of 32).
        for (m, groups) in [
            (1, 1),
            (8, 1),
            (9, 2),
            (16, 2),
            (20, 3),
            (24, 3),
            (32, 4),
            (40, 3),
            (64, 4),
            (77, 2),
            (90, 4),
            (154, 4),
            (2048, 4),
        ] {
            assert_eq!(row_groups(m, 4), groups, "M = {m}");
        }
    }
}
