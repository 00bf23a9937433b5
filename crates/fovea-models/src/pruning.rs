//! Entropy-driven attention-head pruning state for the UNet ([`crate::UNet::forward_pruned`]).
//!
//! Every attention layer measures, per (batch item, head), the normalised Shannon entropy
//! of its attention rows (in the attention kernel itself). A *measuring* forward computes
//! all heads and keeps those entropies; an *applying* forward turns each layer's last
//! entropies into a head mask on the GPU ([`fovea_gpu::Batch::decide_heads`]: pruned
//! when the mean is below the layer's threshold and the spread over queries within the
//! guard), compacts it into an active-head list and launches
//! attention indirectly over the active heads only. Pruned heads output zeros or keep
//! their previous output ([`SkippedOutput`]); their entropy keeps its last measured
//! value until the next measuring forward. No CPU readback happens in either; the head
//! counts are gathered once at the end by [`HeadPruning::read_stats`].

use fovea_gpu::{Batch, DType, Gpu, HeadList, SkippedOutput, Tensor};

use crate::error::Result;

/// Which kind of attention a layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Image tokens attending to image tokens (attn1).
    SelfAttention,
    /// Image tokens attending to the text embedding (attn2).
    CrossAttention,
}

/// One attention layer as the pruning sees it.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// Position in forward order.
    pub index: usize,
    /// Self- or cross-attention.
    pub kind: AttentionKind,
    /// Batch items (2 under classifier-free guidance).
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Query tokens.
    pub n_q: usize,
    /// Key tokens.
    pub n_k: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl LayerInfo {
    /// Multiply-adds of one head's attention (q.k scores and the weighted sum of v), x2
    /// for FLOPs.
    pub fn flops_per_head(&self) -> f64 {
        4.0 * self.n_q as f64 * self.n_k as f64 * self.head_dim as f64
    }
}

struct LayerState {
    info: LayerInfo,
    entropy: Tensor,
    cache: Option<Tensor>,
}

/// One applying forward of one layer: its active-head list, for the statistics.
struct Record {
    step: usize,
    layer: usize,
    list: HeadList,
}

/// Heads computed per layer and step, read back after a generation.
#[derive(Clone, Debug, Default)]
pub struct PruneStats {
    /// The attention layers, in forward order.
    pub layers: Vec<LayerInfo>,
    /// `(step, layer, active heads, of heads)` for every applying forward of a layer
    /// (heads counted over the batch items).
    pub entries: Vec<(usize, usize, u32, u32)>,
    /// Forwards run, measuring or applying.
    pub forwards: usize,
    /// Attention FLOPs the in-step probes cost (0 without probing).
    pub probe_flops: f64,
}

impl PruneStats {
    /// Attention FLOPs that would have run without pruning over all forwards, and the
    /// FLOPs skipped.
    pub fn flops(&self) -> (f64, f64) {
        let per_forward: f64 = self
            .layers
            .iter()
            .map(|l| l.flops_per_head() * (l.batch * l.heads) as f64)
            .sum();
        let skipped = self
            .entries
            .iter()
            .map(|&(_, layer, active, all)| {
                self.layers[layer].flops_per_head() * (all - active) as f64
            })
            .sum();
        (per_forward * self.forwards as f64, skipped)
    }

    /// Share of attention FLOPs skipped, in [0, 1].
    pub fn skipped_share(&self) -> f64 {
        let (all, skipped) = self.flops();
        if all > 0.0 { skipped / all } else { 0.0 }
    }

    /// The in-step probes' cost as a share of the unpruned attention FLOPs.
    pub fn probe_share(&self) -> f64 {
        let (all, _) = self.flops();
        if all > 0.0 {
            self.probe_flops / all
        } else {
            0.0
        }
    }
}

/// Pruning state across the UNet forwards of one generation.
pub struct HeadPruning {
    /// Threshold of self-attention layers (normalised entropy; heads below it are
    /// pruned; 0 prunes nothing).
    pub self_threshold: f32,
    /// Threshold of cross-attention layers.
    pub cross_threshold: f32,
    /// Pattern guard: heads whose entropy spread over the queries exceeds this are
    /// kept whatever their mean (>= 0.5: off).
    pub guard: f32,
    /// Self-attention heads whose mean entropy is above this are pruned too
    /// (near-uniform attention; pair with [`SkippedOutput::Mean`]); >= 1: none.
    pub self_above: f32,
    /// The same for cross-attention layers.
    pub cross_above: f32,
    /// What pruned heads output.
    pub skipped: SkippedOutput,
    /// In-step probe: when > 1, every forward measures each layer's heads on every
    /// `probe_stride`-th query row and prunes in the same forward (for 1-4 step models).
    pub probe_stride: usize,
    /// Whether the next forward applies the decisions (else it measures).
    pub apply: bool,
    /// Step number recorded with the statistics.
    pub step: usize,
    layers: Vec<LayerState>,
    cursor: usize,
    records: Vec<Record>,
    forwards: usize,
    probe_flops: f64,
}

impl HeadPruning {
    /// Pruning with these thresholds; the first forward always measures.
    pub fn new(self_threshold: f32, cross_threshold: f32, skipped: SkippedOutput) -> HeadPruning {
        HeadPruning {
            self_threshold,
            cross_threshold,
            guard: 0.5,
            self_above: 1.0,
            cross_above: 1.0,
            skipped,
            probe_stride: 0,
            apply: false,
            step: 0,
            layers: Vec::new(),
            cursor: 0,
            records: Vec::new(),
            forwards: 0,
            probe_flops: 0.0,
        }
    }

    /// (below, above) thresholds of a layer of this kind.
    fn thresholds(&self, kind: AttentionKind) -> (f32, f32) {
        match kind {
            AttentionKind::SelfAttention => (self.self_threshold, self.self_above),
            AttentionKind::CrossAttention => (self.cross_threshold, self.cross_above),
        }
    }

    pub(crate) fn begin_forward(&mut self) {
        self.cursor = 0;
        self.forwards += 1;
    }

    /// Runs one attention layer under the pruning: `run` performs the attention call it
    /// is given ([`Call`]) and returns (output, entropy statistics).
    pub(crate) fn layer(
        &mut self,
        b: &mut Batch,
        info: LayerInfo,
        mut run: impl FnMut(&mut Batch, Call<'_>) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let index = self.cursor;
        self.cursor += 1;
        if self.probe_stride > 1 {
            return self.probe_layer(b, index, info, run);
        }
        let applying = self.apply
            && self
                .layers
                .get(index)
                .is_some_and(|s| s.info.batch == info.batch && s.info.n_q == info.n_q);
        if !applying {
            let (out, entropy) = run(b, Call::Full)?;
            self.store(index, info, entropy, &out);
            return Ok(out);
        }
        let state = &self.layers[index];
        let (threshold, above) = self.thresholds(state.info.kind);
        let mask = b.decide_heads_banded(&state.entropy, threshold, self.guard, above)?;
        let list = b.compact_heads(&mask, info.n_q, info.head_dim)?;
        let (out, _) = run(
            b,
            Call::Pruned(Pruned {
                list: &list,
                skipped: self.skipped,
                out: state.cache.as_ref(),
                entropy: &state.entropy,
            }),
        )?;
        self.records.push(Record {
            step: self.step,
            layer: index,
            list,
        });
        Ok(out)
    }

    /// Keeps a layer's measured statistics (and its output, for the cached mode).
    fn store(&mut self, index: usize, info: LayerInfo, entropy: Tensor, out: &Tensor) {
        let state = LayerState {
            info: LayerInfo { index, ..info },
            entropy,
            cache: (self.skipped == SkippedOutput::Keep).then(|| out.clone()),
        };
        if index < self.layers.len() {
            self.layers[index] = state;
        } else {
            self.layers.push(state);
        }
    }

    /// The in-step probe (for 1-4 step models, where no earlier step can measure):
    /// attention over every `probe_stride`-th query row measures the heads, the mask
    /// is decided from that, and the full attention runs over the active heads, all in
    /// this forward. Skipped heads output their previous step's output in the cached
    /// mode when there is one, else zeros.
    fn probe_layer(
        &mut self,
        b: &mut Batch,
        index: usize,
        info: LayerInfo,
        mut run: impl FnMut(&mut Batch, Call<'_>) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let stride = self.probe_stride;
        let (_, entropy) = run(b, Call::Probe { stride })?;
        let rows = info.n_q.div_ceil(stride);
        self.probe_flops += info.flops_per_head() * (info.batch * info.heads) as f64 * rows as f64
            / info.n_q as f64;
        let (threshold, above) = self.thresholds(info.kind);
        let mask = b.decide_heads_banded(&entropy, threshold, self.guard, above)?;
        let list = b.compact_heads(&mask, info.n_q, info.head_dim)?;
        let cache = self
            .layers
            .get(index)
            .filter(|s| s.info.batch == info.batch && s.info.n_q == info.n_q)
            .and_then(|s| s.cache.clone())
            .filter(|_| self.skipped == SkippedOutput::Keep);
        let skipped = if self.skipped == SkippedOutput::Mean {
            SkippedOutput::Mean
        } else if cache.is_some() {
            SkippedOutput::Keep
        } else {
            SkippedOutput::Zero
        };
        let (out, _) = run(
            b,
            Call::Pruned(Pruned {
                list: &list,
                skipped,
                out: cache.as_ref(),
                entropy: &entropy,
            }),
        )?;
        self.store(index, info, entropy, &out);
        self.records.push(Record {
            step: self.step,
            layer: index,
            list,
        });
        Ok(out)
    }

    /// The entropy statistics the next applying forward will decide from, per layer in
    /// forward order, each (2, batch, heads): means, then spreads (a readback; for
    /// tests and reports).
    pub async fn read_entropies(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.layers.len());
        for s in &self.layers {
            out.push(gpu.read_f32(&s.entropy).await?);
        }
        Ok(out)
    }

    /// The attention layers seen so far, in forward order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.layers.iter().map(|s| s.info.clone()).collect()
    }

    /// Reads the head counts of every applying forward so far (one GPU readback).
    pub async fn read_stats(&self, gpu: &Gpu) -> Result<PruneStats> {
        let layers = self.layers();
        let mut entries = Vec::with_capacity(self.records.len());
        if !self.records.is_empty() {
            let counts = gpu.empty("prune stats", &[self.records.len() * 2], DType::U32)?;
            let mut b = gpu.batch();
            for (k, r) in self.records.iter().enumerate() {
                b.copy_region(&r.list.list, 0, &counts, 8 * k as u64, 8)?;
            }
            b.submit()?;
            let counts = gpu.read_u32(&counts).await?;
            for (k, r) in self.records.iter().enumerate() {
                let (active, inactive) = (counts[2 * k], counts[2 * k + 1]);
                entries.push((r.step, r.layer, active, active + inactive));
            }
        }
        Ok(PruneStats {
            layers,
            entries,
            forwards: self.forwards,
            probe_flops: self.probe_flops,
        })
    }
}

/// The attention call a layer makes.
pub(crate) enum Call<'a> {
    /// Every head, every query row.
    Full,
    /// Every head over every `stride`-th query row, for its entropy statistics only.
    Probe { stride: usize },
    /// The active heads of a decided mask.
    Pruned(Pruned<'a>),
}

/// The pruning part of one layer's attention call.
pub(crate) struct Pruned<'a> {
    pub list: &'a HeadList,
    pub skipped: SkippedOutput,
    /// The layer's previous output, written in place (skipped heads keep their values).
    pub out: Option<&'a Tensor>,
    /// Entropy tensor updated in place for the computed heads.
    pub entropy: &'a Tensor,
}
