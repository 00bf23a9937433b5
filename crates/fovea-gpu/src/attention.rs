//! Host side of fused attention (shaders/attention.wgsl) and its head bookkeeping
//! (shaders/attention_heads.wgsl): per-head entropy, active-head lists and skipping.
//!
//! Skipping is by **indirect dispatch**: [`Batch::compact_heads`] turns a per-(batch,
//! head) mask into a list and dispatch arguments on the GPU, and the attention kernel is
//! then launched with `dispatch_workgroups_indirect`, so inactive heads get no
//! workgroups at all. No CPU readback is involved.

use bytemuck::{Pod, Zeroable};
use fovea_shaders::Variant;

use crate::batch::{Batch, Bind, Workgroups};
use crate::error::{GpuError, Result};
use crate::pipeline::PipelineKey;
use crate::tensor::{DType, Tensor, fmt_shape};

/// Queries per attention workgroup (one per thread); see attention.wgsl.
pub const QUERY_TILE: usize = 64;
/// Queries per workgroup of the blocked kernel (attention_blocked.wgsl).
pub const BLOCKED_QUERY_TILE: usize = 64;
/// Head-dimension ceilings of the compiled attention variants, smallest first.
pub const HEAD_DIM_VARIANTS: [usize; 2] = [64, 160];
const KEY_TILE: usize = 16;

/// Where one head-split operand lives inside a tensor: element (b, token, head, c) is at
/// `offset + b * batch_stride + token * token_stride + head * head_stride + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// First element.
    pub offset: usize,
    /// Elements between batch items.
    pub batch_stride: usize,
    /// Elements between tokens.
    pub token_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
}

impl HeadLayout {
    /// The layout of a contiguous (B, N, H * D) tensor.
    pub fn contiguous(tokens: usize, heads: usize, head_dim: usize) -> HeadLayout {
        HeadLayout {
            offset: 0,
            batch_stride: tokens * heads * head_dim,
            token_stride: heads * head_dim,
            head_stride: head_dim,
        }
    }

    fn last_element(&self, batch: usize, tokens: usize, heads: usize, head_dim: usize) -> usize {
        self.offset
            + (batch - 1) * self.batch_stride
            + (tokens - 1) * self.token_stride
            + (heads - 1) * self.head_stride
            + head_dim
    }

    /// Every offset and stride is a multiple of 4, so rows can be read four elements at
    /// a time.
    fn quads(&self) -> bool {
        self.as_u32().iter().all(|x| x.is_multiple_of(4))
    }

    fn as_u32(&self) -> [u32; 4] {
        [
            self.offset as u32,
            self.batch_stride as u32,
            self.token_stride as u32,
            self.head_stride as u32,
        ]
    }
}

/// An attention operand: a tensor and where the heads are in it.
#[derive(Clone, Copy, Debug)]
pub struct HeadView<'a> {
    /// Storage.
    pub tensor: &'a Tensor,
    /// Element addressing.
    pub layout: HeadLayout,
    /// Number of tokens (N_q for q/out, N_k for k/v).
    pub tokens: usize,
}

/// What a skipped head's output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkippedOutput {
    /// Zeros (as published for entropy pruning).
    Zero,
    /// Whatever `AttentionOptions::out` held before: a cached value survives.
    Keep,
    /// The mean of the head's values over the keys: exactly what uniform attention
    /// outputs, and close to what a near-uniform head outputs (the error is bounded by
    /// its entropy: ||p - u||_1 <= sqrt(2 ln(N_k) (1 - H_norm)) by Pinsker). Costs
    /// O(N_k D) per skipped head instead of attention's O(N_q N_k D).
    Mean,
}

/// The GPU-resident result of [`Batch::compact_heads`].
#[derive(Clone, Debug)]
pub struct HeadList {
    /// `[n_active, n_inactive, active slots..., inactive slots...]`, u32 (B*H + 2).
    pub list: Tensor,
    /// Indirect arguments `[tiles, n_active, 1, zero_groups, n_inactive, 1]`, u32 (6).
    pub dispatch_args: Tensor,
    /// B * H.
    pub slots: usize,
    /// Query count the arguments were made for.
    pub n_q: usize,
    /// Head dimension the arguments were made for.
    pub head_dim: usize,
}

/// Options of [`Batch::attention`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions<'a> {
    /// Batch size B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Head dimension D.
    pub head_dim: usize,
    /// Logit scale; `None` means 1/sqrt(D).
    pub scale: Option<f32>,
    /// Query i attends to keys 0..=i only.
    pub causal: bool,
    /// Only these heads are computed (from [`Batch::compact_heads`]).
    pub active_heads: Option<&'a HeadList>,
    /// What skipped heads output (only with `active_heads`).
    pub skipped: SkippedOutput,
    /// Write into this tensor instead of a new one (required for `SkippedOutput::Keep`).
    pub out: Option<HeadView<'a>>,
    /// Keep skipped heads' previous entropy statistics (2, B, H) here instead of a fresh,
    /// zeroed tensor.
    pub entropy_out: Option<&'a Tensor>,
    /// Test probe: a u32 (1) tensor that accumulates the number of q.k scores computed.
    pub count_work: Option<&'a Tensor>,
}

impl<'a> AttentionOptions<'a> {
    /// Plain attention over all heads.
    pub fn new(batch: usize, heads: usize, head_dim: usize) -> Self {
        AttentionOptions {
            batch,
            heads,
            head_dim,
            scale: None,
            causal: false,
            active_heads: None,
            skipped: SkippedOutput::Zero,
            out: None,
            entropy_out: None,
            count_work: None,
        }
    }
}

/// Output of [`Batch::attention`].
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// The attention output (same tensor as `AttentionOptions::out` when given, else a
    /// new contiguous (B, N_q, H * D) tensor).
    pub out: Tensor,
    /// Per-head entropy statistics, f32 (2, B, H): `[0]` the mean normalised entropy of
    /// the head's query rows, in [0, 1]; `[1]` its standard deviation over the queries
    /// (the spread), in [0, 0.5].
    pub entropy: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionParams {
    n_q: u32,
    n_k: u32,
    head_dim: u32,
    n_heads: u32,
    q_layout: [u32; 4],
    k_layout: [u32; 4],
    v_layout: [u32; 4],
    o_layout: [u32; 4],
    scale: f32,
    causal: u32,
    use_head_list: u32,
    n_query_tiles: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HeadsParams {
    n_slots: u32,
    n_q: u32,
    n_query_tiles: u32,
    head_dim: u32,
    o_layout: [u32; 4],
    n_heads: u32,
    use_head_list: u32,
    zero_groups_x: u32,
    threshold: f32,
    guard: f32,
    threshold_above: f32,
    n_k: u32,
    _pad: u32,
    v_layout: [u32; 4],
}

fn shape_err(message: String) -> GpuError {
    GpuError::Shape {
        op: "attention",
        message,
    }
}

/// An `above` threshold that no normalised entropy exceeds.
const NEVER_ABOVE: f32 = 2.0;

/// The D_MAX of the attention variant used for `head_dim`.
pub fn head_dim_variant(head_dim: usize) -> Option<usize> {
    HEAD_DIM_VARIANTS.iter().copied().find(|&d| head_dim <= d)
}

/// The fused attention kernel a device runs for one head dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `attention.wgsl`: 64-query workgroups staging keys in workgroup memory, one
    /// entropy partial per workgroup.
    Tiled,
    /// `attention_cpu.wgsl` (8-lane subgroups, compiled per head dim): two or four
    /// queries per lane (`fovea_shaders::attention_cpu_queries_per_lane`).
    PerLane,
    /// `attention_blocked.wgsl` (head dims up to 32): four queries per invocation.
    Blocked,
}

impl Kernel {
    /// The kernel a device with `plan` runs for `head_dim`.
    fn of(plan: &crate::KernelPlan, head_dim: usize) -> Kernel {
        let per_lane = plan.attention_per_lane
            && fovea_shaders::ATTENTION_CPU_HEAD_DIMS
                .iter()
                .any(|&d| d as usize == head_dim);
        if per_lane {
            Kernel::PerLane
        } else if plan.attention_blocked
            && head_dim <= fovea_shaders::ATTENTION_BLOCKED_MAX_HEAD_DIM as usize
        {
            Kernel::Blocked
        } else {
            Kernel::Tiled
        }
    }

    /// Queries per workgroup for heads of `head_dim`.
    fn query_tile(self, head_dim: usize) -> usize {
        match self {
            Kernel::Tiled => QUERY_TILE,
            Kernel::PerLane => {
                8 * fovea_shaders::attention_cpu_queries_per_lane(head_dim as u32) as usize
            }
            Kernel::Blocked => BLOCKED_QUERY_TILE,
        }
    }
}

/// Queries per workgroup of the kernel a device with `plan` runs for `head_dim`.
pub fn query_tile(plan: &crate::KernelPlan, head_dim: usize) -> usize {
    Kernel::of(plan, head_dim).query_tile(head_dim)
}

/// Workgroup memory the attention kernel needs for `head_dim`, in bytes.
pub fn attention_workgroup_bytes(head_dim: usize) -> Option<u64> {
    head_dim_variant(head_dim).map(|d_max| ((2 * KEY_TILE * d_max + QUERY_TILE) * 4) as u64)
}

fn check_view(name: &str, v: &HeadView<'_>, dtype: DType, o: &AttentionOptions<'_>) -> Result<()> {
    if v.tensor.dtype() != dtype {
        return Err(GpuError::Dtype {
            op: "attention",
            dtype: v.tensor.dtype(),
            reason: format!("{name} is {} but q is {dtype}", v.tensor.dtype()),
        });
    }
    if v.tokens == 0 {
        return Err(shape_err(format!("{name} has no tokens")));
    }
    let last = v
        .layout
        .last_element(o.batch, v.tokens, o.heads, o.head_dim);
    if last > v.tensor.len() {
        return Err(shape_err(format!(
            "{name} {} is too small for B={}, N={}, H={}, D={} at {:?} (needs {last} elements)",
            fmt_shape(v.tensor.shape()),
            o.batch,
            v.tokens,
            o.heads,
            o.head_dim,
            v.layout
        )));
    }
    Ok(())
}

impl Batch {
    /// Multi-head attention with per-head entropy.
    ///
    /// q: (B, N_q, H, D), k and v: (B, N_k, H, D), each through its [`HeadView`];
    /// output (B, N_q, H, D) and entropy (B, H). See [`AttentionOptions`] for causal
    /// masking, head skipping and in-place output.
    pub fn attention_views(
        &mut self,
        q: HeadView<'_>,
        k: HeadView<'_>,
        v: HeadView<'_>,
        o: &AttentionOptions<'_>,
    ) -> Result<AttentionOutput> {
        const OP: &str = "attention";
        let dtype = q.tensor.dtype();
        let storage = dtype.storage().ok_or_else(|| GpuError::Dtype {
            op: OP,
            dtype,
            reason: "attention takes float tensors".into(),
        })?;
        if o.batch == 0 || o.heads == 0 || o.head_dim == 0 {
            return Err(shape_err(format!(
                "B={}, H={}, D={} must all be positive",
                o.batch, o.heads, o.head_dim
            )));
        }
        let d_max = head_dim_variant(o.head_dim).ok_or_else(|| GpuError::Param {
            op: OP,
            param: "head_dim",
            value: o.head_dim.to_string(),
            expected: format!(
                "at most {} (the largest attention variant)",
                HEAD_DIM_VARIANTS[HEAD_DIM_VARIANTS.len() - 1]
            ),
        })?;
        let plan = self.gpu().kernel_plan();
        let wg_bytes = match Kernel::of(&plan, o.head_dim) {
            Kernel::Tiled => attention_workgroup_bytes(o.head_dim).expect("variant exists"),
            Kernel::PerLane | Kernel::Blocked => 0,
        };
        let wg_limit = self.gpu().limits().max_compute_workgroup_storage_size as u64;
        if wg_bytes > wg_limit {
            return Err(GpuError::Limit {
                op: OP,
                what: format!("head_dim {} (variant D_MAX={d_max})", o.head_dim),
                limit: "max_compute_workgroup_storage_size",
                requested: wg_bytes,
                available: wg_limit,
            });
        }
        check_view("q", &q, dtype, o)?;
        check_view("k", &k, dtype, o)?;
        check_view("v", &v, dtype, o)?;
        if k.tokens != v.tokens {
            return Err(shape_err(format!(
                "k has {} tokens but v has {}",
                k.tokens, v.tokens
            )));
        }
        if o.causal && q.tokens != k.tokens {
            return Err(shape_err(format!(
                "causal attention needs N_q == N_k, got {} and {}",
                q.tokens, k.tokens
            )));
        }
        let scale = o.scale.unwrap_or(1.0 / (o.head_dim as f32).sqrt());
        if !scale.is_finite() {
            return Err(GpuError::Param {
                op: OP,
                param: "scale",
                value: scale.to_string(),
                expected: "a finite number".into(),
            });
        }
        let slots = o.batch * o.heads;
        let tiles = q.tokens.div_ceil(query_tile(&plan, o.head_dim));
        let max_groups = self.gpu().limits().max_compute_workgroups_per_dimension as usize;
        if tiles > max_groups || slots > max_groups {
            return Err(GpuError::Limit {
                op: OP,
                what: format!("{tiles} query tiles x {slots} heads"),
                limit: "max_compute_workgroups_per_dimension",
                requested: tiles.max(slots) as u64,
                available: max_groups as u64,
            });
        }
        if let Some(list) = o.active_heads
            && (list.slots != slots || list.n_q != q.tokens || list.head_dim != o.head_dim)
        {
            return Err(shape_err(format!(
                "head list was made for {} heads, N_q={}, D={}; this call has {slots} heads, N_q={}, D={}",
                list.slots, list.n_q, list.head_dim, q.tokens, o.head_dim
            )));
        }
        if o.skipped == SkippedOutput::Keep && o.active_heads.is_some() && o.out.is_none() {
            return Err(GpuError::Param {
                op: OP,
                param: "skipped",
                value: "Keep".into(),
                expected: "an `out` tensor whose previous contents skipped heads keep".into(),
            });
        }
        let out_view = match o.out {
            Some(view) => {
                check_view("out", &view, dtype, o)?;
                if view.tokens != q.tokens {
                    return Err(shape_err(format!(
                        "out has {} tokens but q has {}",
                        view.tokens, q.tokens
                    )));
                }
                view
            }
            None => {
                let t = self
                    .gpu()
                    .empty(OP, &[o.batch, q.tokens, o.heads * o.head_dim], dtype)?;
                // Leak-free: the view borrows from a tensor we return below.
                return self.attention_into(
                    q,
                    k,
                    v,
                    o,
                    scale,
                    d_max,
                    storage,
                    &t,
                    HeadLayout::contiguous(q.tokens, o.heads, o.head_dim),
                );
            }
        };
        self.attention_into(
            q,
            k,
            v,
            o,
            scale,
            d_max,
            storage,
            out_view.tensor,
            out_view.layout,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_into(
        &mut self,
        q: HeadView<'_>,
        k: HeadView<'_>,
        v: HeadView<'_>,
        o: &AttentionOptions<'_>,
        scale: f32,
        d_max: usize,
        storage: fovea_shaders::Dtype,
        out: &Tensor,
        out_layout: HeadLayout,
    ) -> Result<AttentionOutput> {
        const OP: &str = "attention";
        let slots = o.batch * o.heads;
        let kernel = Kernel::of(&self.gpu().kernel_plan(), o.head_dim);
        let tiles = q.tokens.div_ceil(kernel.query_tile(o.head_dim));
        // Entropy partial sums: one per workgroup (tiled), or one per query.
        let partials = match kernel {
            Kernel::Tiled => tiles,
            Kernel::PerLane | Kernel::Blocked => q.tokens,
        };
        let partial = self.gpu().empty(OP, &[slots, partials, 2], DType::F32)?;
        let entropy = match o.entropy_out {
            Some(e) => {
                if e.dtype() != DType::F32 || e.len() != 2 * slots {
                    return Err(shape_err(format!(
                        "entropy_out {} must be f32 (2, B, H) = {} elements",
                        e.describe(),
                        2 * slots
                    )));
                }
                e.clone()
            }
            None => {
                let e = self.gpu().empty(OP, &[2, o.batch, o.heads], DType::F32)?;
                if o.active_heads.is_some() {
                    self.clear(&e);
                }
                e
            }
        };
        if let Some(c) = o.count_work
            && (c.dtype() != DType::U32 || c.is_empty())
        {
            return Err(shape_err(format!(
                "count_work {} must be a u32 tensor",
                c.describe()
            )));
        }
        let params = AttentionParams {
            n_q: q.tokens as u32,
            n_k: k.tokens as u32,
            head_dim: o.head_dim as u32,
            n_heads: o.heads as u32,
            q_layout: q.layout.as_u32(),
            k_layout: k.layout.as_u32(),
            v_layout: v.layout.as_u32(),
            o_layout: out_layout.as_u32(),
            scale,
            causal: o.causal as u32,
            use_head_list: o.active_heads.is_some() as u32,
            n_query_tiles: partials as u32,
        };
        let count_work = ("COUNT_WORK", o.count_work.is_some() as u32);
        let key = match kernel {
            Kernel::PerLane => PipelineKey {
                variant: Variant::new(
                    "attention_cpu",
                    storage,
                    &[
                        ("HEAD_DIM", o.head_dim as u32),
                        ("SUBGROUP", 1),
                        count_work,
                        ("QUADS", (k.layout.quads() && v.layout.quads()) as u32),
                        (
                            "QUERY_GROUPS",
                            fovea_shaders::attention_cpu_queries_per_lane(o.head_dim as u32),
                        ),
                    ],
                )?,
                entry: "attention_cpu",
            },
            Kernel::Blocked => PipelineKey {
                variant: Variant::new(
                    "attention_blocked",
                    storage,
                    &[("ROW32", (o.head_dim > 16) as u32), count_work],
                )?,
                entry: "attention_blocked",
            },
            Kernel::Tiled => PipelineKey {
                variant: Variant::new(
                    "attention",
                    storage,
                    &[
                        ("D_MAX", d_max as u32),
                        ("KEY_TILE", KEY_TILE as u32),
                        count_work,
                    ],
                )?,
                entry: "attention",
            },
        };
        let list_bind = o
            .active_heads
            .map_or(Bind::Dummy, |l| Bind::Tensor(&l.list));
        let mut bindings = vec![
            (1, Bind::Tensor(q.tensor)),
            (2, Bind::Tensor(k.tensor)),
            (3, Bind::Tensor(v.tensor)),
            (4, Bind::Tensor(out)),
            (5, Bind::Tensor(&partial)),
            (6, list_bind),
        ];
        if let Some(c) = o.count_work {
            bindings.push((7, Bind::Tensor(c)));
        }
        let workgroups = match o.active_heads {
            Some(list) => Workgroups::Indirect {
                args: list.dispatch_args.clone(),
                offset: 0,
            },
            None => Workgroups::Direct([tiles as u32, slots as u32, 1]),
        };
        let d = self
            .gpu()
            .dispatch(&key, bytemuck::bytes_of(&params), &bindings, workgroups)?;
        self.record(d);

        // Per-head means of the partial entropy sums.
        let zero_groups = (q.tokens * o.head_dim).div_ceil(256);
        let heads_params = HeadsParams {
            n_slots: slots as u32,
            n_q: q.tokens as u32,
            n_query_tiles: partials as u32,
            head_dim: o.head_dim as u32,
            o_layout: out_layout.as_u32(),
            n_heads: o.heads as u32,
            use_head_list: o.active_heads.is_some() as u32,
            zero_groups_x: zero_groups as u32,
            n_k: k.tokens as u32,
            v_layout: v.layout.as_u32(),
            ..Zeroable::zeroed()
        };
        let reduce_key = PipelineKey {
            variant: Variant::new("attention_heads", storage, &[])?,
            entry: "entropy_reduce",
        };
        let d = self.gpu().dispatch(
            &reduce_key,
            bytemuck::bytes_of(&heads_params),
            &[
                (1, Bind::Tensor(&partial)),
                (2, list_bind_of(o.active_heads)),
                (3, Bind::Tensor(&entropy)),
            ],
            Workgroups::Direct([slots.div_ceil(64) as u32, 1, 1]),
        )?;
        self.record(d);

        if let (Some(list), SkippedOutput::Zero) = (o.active_heads, o.skipped) {
            let zero_key = PipelineKey {
                variant: Variant::new("attention_heads", storage, &[])?,
                entry: "zero_heads",
            };
            let d = self.gpu().dispatch(
                &zero_key,
                bytemuck::bytes_of(&heads_params),
                &[(7, Bind::Tensor(&list.list)), (8, Bind::Tensor(out))],
                Workgroups::Indirect {
                    args: list.dispatch_args.clone(),
                    offset: 12,
                },
            )?;
            self.record(d);
        }
        if let (Some(list), SkippedOutput::Mean) = (o.active_heads, o.skipped) {
            let means = self
                .gpu()
                .empty("head value means", &[slots, o.head_dim], DType::F32)?;
            let args = || Workgroups::Indirect {
                args: list.dispatch_args.clone(),
                offset: 12,
            };
            for (entry, bindings) in [
                (
                    "value_mean",
                    vec![
                        (7, Bind::Tensor(&list.list)),
                        (11, Bind::Tensor(v.tensor)),
                        (12, Bind::Tensor(&means)),
                    ],
                ),
                (
                    "mean_heads",
                    vec![
                        (7, Bind::Tensor(&list.list)),
                        (8, Bind::Tensor(out)),
                        (12, Bind::Tensor(&means)),
                    ],
                ),
            ] {
                let key = PipelineKey {
                    variant: Variant::new("attention_heads", storage, &[])?,
                    entry,
                };
                let d = self.gpu().dispatch(
                    &key,
                    bytemuck::bytes_of(&heads_params),
                    &bindings,
                    args(),
                )?;
                self.record(d);
            }
        }
        Ok(AttentionOutput {
            out: out.clone(),
            entropy,
        })
    }

    /// Attention over contiguous q (B, N_q, H*D), k and v (B, N_k, H*D), as produced by
    /// diffusers' to_q/to_k/to_v projections. Output (B, N_q, H*D).
    pub fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &AttentionOptions<'_>,
    ) -> Result<AttentionOutput> {
        let hd = o.heads * o.head_dim;
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            let s = t.shape();
            if s.len() != 3 || s[0] != o.batch || s[2] != hd {
                return Err(shape_err(format!(
                    "{name} must be (B={}, N, H*D={hd}), got {}",
                    o.batch,
                    t.describe()
                )));
            }
        }
        fn view<'t>(t: &'t Tensor, heads: usize, head_dim: usize) -> HeadView<'t> {
            let n = t.shape()[1];
            HeadView {
                tensor: t,
                layout: HeadLayout::contiguous(n, heads, head_dim),
                tokens: n,
            }
        }
        let (h, d) = (o.heads, o.head_dim);
        self.attention_views(view(q, h, d), view(k, h, d), view(v, h, d), o)
    }

    /// Single-head attention for head dims beyond the fused kernel (e.g. the SD VAE's
    /// mid-block, one head of 512): q (B, N_q, D), k and v (B, N_k, D) -> (B, N_q, D),
    /// through a materialised (B, N_q, N_k) score matrix (matmul, softmax, matmul).
    /// Computes no entropy and takes no head mask.
    pub fn attention_materialized(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
    ) -> Result<Tensor> {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if qs.len() != 3 || ks.len() != 3 || vs != ks || qs[0] != ks[0] || qs[2] != ks[2] {
            return Err(GpuError::Shape {
                op: "attention_materialized",
                message: format!(
                    "needs q (B, N_q, D) and k = v (B, N_k, D), got q {}, k {}, v {}",
                    q.describe(),
                    k.describe(),
                    v.describe()
                ),
            });
        }
        let scores = self.matmul(
            q,
            k,
            None,
            crate::MatmulOptions {
                trans_b: true,
                alpha: scale,
                ..Default::default()
            },
        )?;
        let probs = self.softmax(&scores, 1.0)?;
        self.matmul(&probs, v, None, crate::MatmulOptions::default())
    }

    /// The pruning decision on the GPU: a u32 (B·H) mask from per-head entropy
    /// statistics (f32 (2, B·H): means, then spreads, as [`AttentionOutput::entropy`]):
    /// 0 (pruned) where the mean is below `threshold` and the spread is at most
    /// `guard`, 1 elsewhere (NaN keeps the head); feed it to
    /// [`compact_heads`](Self::compact_heads). `guard` >= 0.5 never protects a head.
    pub fn decide_heads(&mut self, entropy: &Tensor, threshold: f32, guard: f32) -> Result<Tensor> {
        self.decide_heads_banded(entropy, threshold, guard, NEVER_ABOVE)
    }

    /// [`decide_heads`](Self::decide_heads), and also pruned (0) where the mean
    /// normalised entropy is above `above`: near-uniform heads, whose output the mean of
    /// their values replaces well ([`SkippedOutput::Mean`]). `above` >= 1 prunes none
    /// from above.
    pub fn decide_heads_banded(
        &mut self,
        entropy: &Tensor,
        threshold: f32,
        guard: f32,
        above: f32,
    ) -> Result<Tensor> {
        const OP: &str = "decide_heads";
        if entropy.dtype() != DType::F32 || entropy.is_empty() || !entropy.len().is_multiple_of(2) {
            return Err(GpuError::Shape {
                op: OP,
                message: format!(
                    "entropy must be f32 (2, B, H) statistics, got {}",
                    entropy.describe()
                ),
            });
        }
        for (param, v) in [("threshold", threshold), ("guard", guard), ("above", above)] {
            if !v.is_finite() {
                return Err(GpuError::Param {
                    op: OP,
                    param,
                    value: v.to_string(),
                    expected: "a finite number".into(),
                });
            }
        }
        let slots = entropy.len() / 2;
        let mask = self.gpu().empty(OP, &[slots], DType::U32)?;
        let params = HeadsParams {
            n_slots: slots as u32,
            threshold,
            guard,
            // Entropies are at most 1: anything above never prunes from above.
            threshold_above: above.min(NEVER_ABOVE),
            ..Zeroable::zeroed()
        };
        let key = PipelineKey {
            variant: Variant::new("attention_heads", fovea_shaders::Dtype::F32, &[])?,
            entry: "decide_heads",
        };
        let d = self.gpu().dispatch(
            &key,
            bytemuck::bytes_of(&params),
            &[(9, Bind::Tensor(entropy)), (10, Bind::Tensor(&mask))],
            Workgroups::Direct([slots.div_ceil(64) as u32, 1, 1]),
        )?;
        self.record(d);
        Ok(mask)
    }

    /// Compacts a per-(batch, head) mask (u32, nonzero = compute) into a [`HeadList`]
    /// for attention over `n_q` queries of `head_dim`, entirely on the GPU.
    pub fn compact_heads(
        &mut self,
        mask: &Tensor,
        n_q: usize,
        head_dim: usize,
    ) -> Result<HeadList> {
        const OP: &str = "compact_heads";
        if mask.dtype() != DType::U32 || mask.is_empty() {
            return Err(GpuError::Shape {
                op: OP,
                message: format!(
                    "mask must be a non-empty u32 tensor, got {}",
                    mask.describe()
                ),
            });
        }
        if n_q == 0 || head_dim == 0 {
            return Err(GpuError::Shape {
                op: OP,
                message: format!("n_q = {n_q} and head_dim = {head_dim} must be positive"),
            });
        }
        let slots = mask.len();
        let list = self.gpu().empty(OP, &[slots + 2], DType::U32)?;
        let args = self.gpu().empty(OP, &[6], DType::U32)?;
        let params = HeadsParams {
            n_slots: slots as u32,
            n_q: n_q as u32,
            n_query_tiles: n_q.div_ceil(query_tile(&self.gpu().kernel_plan(), head_dim)) as u32,
            head_dim: head_dim as u32,
            o_layout: [0; 4],
            n_heads: 1,
            use_head_list: 0,
            zero_groups_x: (n_q * head_dim).div_ceil(256) as u32,
            ..Zeroable::zeroed()
        };
        // The list kernel has no float data; the f32 variant is always available.
        let key = PipelineKey {
            variant: Variant::new("attention_heads", fovea_shaders::Dtype::F32, &[])?,
            entry: "compact_heads",
        };
        let d = self.gpu().dispatch(
            &key,
            bytemuck::bytes_of(&params),
            &[
                (4, Bind::Tensor(mask)),
                (5, Bind::Tensor(&list)),
                (6, Bind::Tensor(&args)),
            ],
            Workgroups::Direct([1, 1, 1]),
        )?;
        self.record(d);
        Ok(HeadList {
            list,
            dispatch_args: args,
            slots,
            n_q,
            head_dim,
        })
    }
}

fn list_bind_of<'a>(list: Option<&'a HeadList>) -> Bind<'a> {
    list.map_or(Bind::Dummy, |l| Bind::Tensor(&l.list))
}
