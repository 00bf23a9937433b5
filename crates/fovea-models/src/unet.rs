//! diffusers' `UNet2DConditionModel` (the SD 1.x / 2.x family) on fovea's kernels, in
//! diffusers' order: time embedding, conv_in, down blocks (resnets + spatial
//! transformers, stride-2 downsample), mid block, up blocks (skip concat, resnets,
//! transformers, nearest-2x upsample), norm + SiLU + conv_out.
//!
//! Both projection conventions (1x1-conv `proj_in`/`proj_out` in SD 1.x, Linear in SD
//! 2.x) are the same matrix product on channel-first data, so they share one path; the
//! weight shape tells them apart. `upcast_attention` needs nothing: attention always
//! accumulates in f32.

use fovea_gpu::{
    Activation, AttentionOptions, Batch, DType, Gpu, HeadLayout, HeadView, Tensor, TimestepOptions,
};

use crate::blocks::{Conv, Loader, Norm, Resnet, conv, project_channels_add, project_tokens};
use crate::config::UNetConfig;
use crate::error::{ModelError, Result};
use crate::pruning::{AttentionKind, Call, HeadPruning, LayerInfo};
use crate::weights::Weights;

/// diffusers' transformer blocks: group norm eps 1e-6, layer norm eps 1e-5.
const TRANSFORMER_GROUP_NORM_EPS: f32 = 1e-6;
const LAYER_NORM_EPS: f32 = 1e-5;

struct AttentionLayer {
    q: Conv,
    k: Conv,
    v: Conv,
    out: Conv,
}

struct TransformerBlock {
    norm1: Norm,
    attn1: AttentionLayer,
    norm2: Norm,
    attn2: AttentionLayer,
    norm3: Norm,
    ff_in: Conv,
    ff_out: Conv,
}

struct SpatialTransformer {
    norm: Norm,
    proj_in: Conv,
    blocks: Vec<TransformerBlock>,
    proj_out: Conv,
    heads: usize,
    channels: usize,
}

struct Layer {
    resnet: Resnet,
    attention: Option<SpatialTransformer>,
}

struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Conv>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Conv>,
}

/// A loaded UNet.
pub struct UNet {
    config: UNetConfig,
    time_linear1: Conv,
    time_linear2: Conv,
    conv_in: Conv,
    down: Vec<DownBlock>,
    mid: (Resnet, SpatialTransformer, Resnet),
    up: Vec<UpBlock>,
    norm_out: Norm,
    conv_out: Conv,
}

impl Loader<'_> {
    fn attention_layer(&self, key: &str, inner: usize, context: usize) -> Result<AttentionLayer> {
        Ok(AttentionLayer {
            q: self.linear(&format!("{key}.to_q"), inner, inner, false)?,
            k: self.linear(&format!("{key}.to_k"), inner, context, false)?,
            v: self.linear(&format!("{key}.to_v"), inner, context, false)?,
            out: self.linear(&format!("{key}.to_out.0"), inner, inner, true)?,
        })
    }

    fn spatial_transformer(
        &self,
        key: &str,
        c: usize,
        heads: usize,
        depth: usize,
        cross: usize,
    ) -> Result<SpatialTransformer> {
        let blocks = (0..depth)
            .map(|i| {
                let k = format!("{key}.transformer_blocks.{i}");
                Ok(TransformerBlock {
                    norm1: self.norm(&format!("{k}.norm1"), c)?,
                    attn1: self.attention_layer(&format!("{k}.attn1"), c, c)?,
                    norm2: self.norm(&format!("{k}.norm2"), c)?,
                    attn2: self.attention_layer(&format!("{k}.attn2"), c, cross)?,
                    norm3: self.norm(&format!("{k}.norm3"), c)?,
                    // GEGLU: projection to 2 x (4 x inner), gated by GELU.
                    ff_in: self.linear(&format!("{k}.ff.net.0.proj"), 8 * c, c, true)?,
                    ff_out: self.linear(&format!("{k}.ff.net.2"), c, 4 * c, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SpatialTransformer {
            norm: self.norm(&format!("{key}.norm"), c)?,
            proj_in: self.projection(&[format!("{key}.proj_in")], c, c)?,
            blocks,
            proj_out: self.projection(&[format!("{key}.proj_out")], c, c)?,
            heads,
            channels: c,
        })
    }
}

impl UNet {
    /// Loads `dir/config.json` and its weights, uploading in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, dir: &std::path::Path, dtype: DType) -> Result<UNet> {
        let (config, weights) = crate::weights::open_component(dir, UNetConfig::validate)?;
        Self::from_weights(gpu, config, &weights, dtype)
    }

    /// Builds the model from a validated config and opened weights.
    pub fn from_weights(
        gpu: &Gpu,
        config: UNetConfig,
        weights: &Weights,
        dtype: DType,
    ) -> Result<UNet> {
        let l = Loader {
            gpu,
            weights,
            dtype,
        };
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let cross = config.cross_attention_dim;
        let depth = |i: usize| config.transformer_layers_per_block.get(i);
        let layer = |key: String,
                     c_in: usize,
                     c_out: usize,
                     attn: bool,
                     i: usize,
                     j: usize|
         -> Result<Layer> {
            Ok(Layer {
                resnet: l.resnet(&format!("{key}.resnets.{j}"), c_in, c_out, Some(temb))?,
                attention: if attn {
                    Some(l.spatial_transformer(
                        &format!("{key}.attentions.{j}"),
                        c_out,
                        config.heads(i),
                        depth(i),
                        cross,
                    )?)
                } else {
                    None
                },
            })
        };
        // 1. down blocks
        let mut down = Vec::new();
        let mut c_prev = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let attn = kind == "CrossAttnDownBlock2D";
            let key = format!("down_blocks.{i}");
            let layers = (0..config.layers_per_block)
                .map(|j| {
                    layer(
                        key.clone(),
                        if j == 0 { c_prev } else { ch[i] },
                        ch[i],
                        attn,
                        i,
                        j,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < n {
                Some(l.conv(&format!("{key}.downsamplers.0.conv"), ch[i], ch[i], 3)?)
            } else {
                None
            };
            down.push(DownBlock { layers, downsample });
            c_prev = ch[i];
        }
        // 2. mid block
        let top = ch[n - 1];
        let mid = (
            l.resnet("mid_block.resnets.0", top, top, Some(temb))?,
            l.spatial_transformer(
                "mid_block.attentions.0",
                top,
                config.heads(n - 1),
                depth(n - 1),
                cross,
            )?,
            l.resnet("mid_block.resnets.1", top, top, Some(temb))?,
        );
        // 3. up blocks, channels as diffusers' get_up_block computes them
        let mut up = Vec::new();
        let mut out_c = ch[n - 1];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let rev = n - 1 - i;
            let prev_out = out_c;
            out_c = ch[rev];
            let in_c = ch[rev.saturating_sub(1)];
            let attn = kind == "CrossAttnUpBlock2D";
            let key = format!("up_blocks.{i}");
            let layers = (0..=config.layers_per_block)
                .map(|j| {
                    let skip = if j == config.layers_per_block {
                        in_c
                    } else {
                        out_c
                    };
                    let res_in = if j == 0 { prev_out } else { out_c };
                    layer(key.clone(), res_in + skip, out_c, attn, rev, j)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = if i + 1 < n {
                Some(l.conv(&format!("{key}.upsamplers.0.conv"), out_c, out_c, 3)?)
            } else {
                None
            };
            up.push(UpBlock { layers, upsample });
        }
        Ok(UNet {
            time_linear1: l.linear("time_embedding.linear_1", temb, ch[0], true)?,
            time_linear2: l.linear("time_embedding.linear_2", temb, temb, true)?,
            conv_in: l.conv("conv_in", ch[0], config.in_channels, config.conv_in_kernel)?,
            down,
            mid,
            up,
            norm_out: l.norm("conv_norm_out", ch[0])?,
            conv_out: l.conv(
                "conv_out",
                config.out_channels,
                ch[0],
                config.conv_out_kernel,
            )?,
            config,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        b: &mut Batch,
        x: &Tensor,
        context: &Tensor,
        a: &AttentionLayer,
        heads: usize,
        kind: AttentionKind,
        prune: Option<&mut HeadPruning>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let q = b.linear(x, &a.q.weight, None)?;
        let k = b.linear(context, &a.k.weight, None)?;
        let v = b.linear(context, &a.v.weight, None)?;
        let s = x.shape();
        let (batch, n_q, head_dim) = (s[0], s[1], s[2] / heads);
        let o = match prune {
            None => {
                b.attention(&q, &k, &v, &AttentionOptions::new(batch, heads, head_dim))?
                    .out
            }
            Some(p) => {
                let info = LayerInfo {
                    index: 0,
                    kind,
                    batch,
                    heads,
                    n_q,
                    n_k: context.shape()[1],
                    head_dim,
                };
                p.layer(b, info, |b, call| {
                    let mut opts = AttentionOptions::new(batch, heads, head_dim);
                    let r = match call {
                        Call::Full => b.attention(&q, &k, &v, &opts)?,
                        Call::Probe { stride } => {
                            let n_k = context.shape()[1];
                            let rows = HeadView {
                                tensor: &q,
                                layout: HeadLayout {
                                    token_stride: stride * heads * head_dim,
                                    ..HeadLayout::contiguous(n_q, heads, head_dim)
                                },
                                tokens: n_q.div_ceil(stride),
                            };
                            let view = |t| HeadView {
                                tensor: t,
                                layout: HeadLayout::contiguous(n_k, heads, head_dim),
                                tokens: n_k,
                            };
                            b.attention_views(rows, view(&k), view(&v), &opts)?
                        }
                        Call::Pruned(pr) => {
                            opts.active_heads = Some(pr.list);
                            opts.skipped = pr.skipped;
                            opts.entropy_out = Some(pr.entropy);
                            opts.out = pr.out.map(|t| HeadView {
                                tensor: t,
                                layout: HeadLayout::contiguous(n_q, heads, head_dim),
                                tokens: n_q,
                            });
                            b.attention(&q, &k, &v, &opts)?
                        }
                    };
                    Ok((r.out, r.entropy))
                })?
            }
        };
        Ok(b.linear_add(&o, &a.out.weight, a.out.bias.as_ref(), residual)?)
    }

    fn transformer(
        &self,
        b: &mut Batch,
        x: &Tensor,
        context: &Tensor,
        t: &SpatialTransformer,
        mut prune: Option<&mut HeadPruning>,
    ) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (batch, c, hw) = (s[0], t.channels, s[2] * s[3]);
        // 1. group norm, proj_in to token-major (B, HW, C)
        let h = b.group_norm(
            x,
            self.config.norm_num_groups,
            t.norm.affine(),
            TRANSFORMER_GROUP_NORM_EPS,
            false,
        )?;
        let mut h = project_tokens(b, &h.reshape(&[batch, c, hw])?, &t.proj_in)?;
        // 2. transformer blocks: self-attention, cross-attention, GEGLU feed-forward
        for blk in &t.blocks {
            let y = b.layer_norm(&h, blk.norm1.affine(), LAYER_NORM_EPS)?;
            // (each residual connection added by the output projection)
            h = Self::attention(
                b,
                &y,
                &y,
                &blk.attn1,
                t.heads,
                AttentionKind::SelfAttention,
                prune.as_deref_mut(),
                &h,
            )?;
            let y = b.layer_norm(&h, blk.norm2.affine(), LAYER_NORM_EPS)?;
            h = Self::attention(
                b,
                &y,
                context,
                &blk.attn2,
                t.heads,
                AttentionKind::CrossAttention,
                prune.as_deref_mut(),
                &h,
            )?;
            let y = b.layer_norm(&h, blk.norm3.affine(), LAYER_NORM_EPS)?;
            let y = b.linear_geglu(&y, &blk.ff_in.weight, blk.ff_in.bias.as_ref())?;
            h = b.linear_add(&y, &blk.ff_out.weight, blk.ff_out.bias.as_ref(), &h)?;
        }
        // 3. proj_out back to channel-first, plus the residual
        let out = project_channels_add(b, &h, &t.proj_out, &x.reshape(&[batch, c, hw])?)?;
        Ok(out.reshape(&s)?)
    }

    fn layer(
        &self,
        b: &mut Batch,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        l: &Layer,
        prune: Option<&mut HeadPruning>,
    ) -> Result<Tensor> {
        let (g, eps) = (self.config.norm_num_groups, self.config.norm_eps as f32);
        let x = l.resnet.forward(b, x, Some(temb), g, eps)?;
        match &l.attention {
            Some(t) => self.transformer(b, &x, context, t, prune),
            None => Ok(x),
        }
    }

    /// Predicts noise (or v) for `sample` (B, in_channels, h, w) at `timesteps` (B,)
    /// given text embeddings `context` (B, 77, cross_attention_dim).
    pub fn forward(
        &self,
        b: &mut Batch,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with(b, sample, timesteps, context, None)
    }

    /// [`forward`](Self::forward) with entropy-driven head pruning in every attention
    /// layer (see [`HeadPruning`]): this forward measures or applies as `prune.apply`
    /// says.
    pub fn forward_pruned(
        &self,
        b: &mut Batch,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        prune: &mut HeadPruning,
    ) -> Result<Tensor> {
        prune.begin_forward();
        self.forward_with(b, sample, timesteps, context, Some(prune))
    }

    fn forward_with(
        &self,
        b: &mut Batch,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        mut prune: Option<&mut HeadPruning>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let s = sample.shape();
        let levels = c.block_out_channels.len() - 1;
        if s.len() != 4
            || s[1] != c.in_channels
            || !s[2].is_multiple_of(1 << levels)
            || !s[3].is_multiple_of(1 << levels)
        {
            return Err(ModelError::Config {
                path: "unet input".into(),
                message: format!(
                    "sample {} must be (B, {}, h, w) with h and w multiples of {}",
                    sample.describe(),
                    c.in_channels,
                    1 << levels
                ),
            });
        }
        let (g, eps) = (c.norm_num_groups, c.norm_eps as f32);
        // 1. time embedding; every resnet takes SiLU of it
        let opts = TimestepOptions {
            flip_sin_to_cos: c.flip_sin_to_cos,
            downscale_freq_shift: c.freq_shift,
            ..Default::default()
        };
        let t = b.timestep_embedding(timesteps, c.block_out_channels[0], opts, sample.dtype())?;
        let t = b.linear(
            &t,
            &self.time_linear1.weight,
            self.time_linear1.bias.as_ref(),
        )?;
        let t = b.silu(&t)?;
        let temb = b.linear(
            &t,
            &self.time_linear2.weight,
            self.time_linear2.bias.as_ref(),
        )?;
        let temb = b.unary(&temb, Activation::Silu, 1.0, 0.0)?;
        // 2. conv_in
        let mut x = conv(b, sample, &self.conv_in, 1, c.conv_in_kernel / 2)?;
        // 3. down blocks, keeping every output for the skip connections
        let mut skips = vec![x.clone()];
        for blk in &self.down {
            for l in &blk.layers {
                x = self.layer(b, &x, &temb, context, l, prune.as_deref_mut())?;
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsample {
                x = conv(b, &x, d, 2, c.downsample_padding)?;
                skips.push(x.clone());
            }
        }
        // 4. mid block
        x = self.mid.0.forward(b, &x, Some(&temb), g, eps)?;
        x = self.transformer(b, &x, context, &self.mid.1, prune.as_deref_mut())?;
        x = self.mid.2.forward(b, &x, Some(&temb), g, eps)?;
        // 5. up blocks: concat the skip, resnet, transformer; then upsample
        for blk in &self.up {
            for l in &blk.layers {
                let skip = skips.pop().expect("one skip per up-block layer");
                x = b.concat_channels(&[&x, &skip])?;
                x = self.layer(b, &x, &temb, context, l, prune.as_deref_mut())?;
            }
            if let Some(u) = &blk.upsample {
                x = b.upsample_nearest2x(&x)?;
                x = conv(b, &x, u, 1, 1)?;
            }
        }
        // 6. norm, SiLU, conv_out
        let x = b.group_norm(&x, g, self.norm_out.affine(), eps, true)?;
        conv(b, &x, &self.conv_out, 1, c.conv_out_kernel / 2)
    }
}
