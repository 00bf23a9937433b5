//! CLIP's text transformer (transformers `CLIPTextModel`) on fovea's kernels, as SD 1.x
//! (quick_gelu) and SD 2.x (gelu) use it: token + position embeddings, pre-norm causal
//! self-attention layers, final layer norm. Weight keys are transformers' names, with
//! or without the `text_model.` prefix (older checkpoints have it, transformers 5
//! writes none).
//!
//! The token embedding stays in the (memory-mapped) weight file: the 77 rows a prompt
//! needs are gathered on the host and uploaded, instead of putting the whole
//! vocabulary table (150 MB at SD size) on the GPU.

use std::sync::Arc;

use fovea_gpu::{Activation, AttentionOptions, Batch, DType, Gpu, Tensor};

use crate::config::ClipTextConfig;
use crate::error::{ModelError, Result};
use crate::weights::Weights;

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP text encoder.
pub struct ClipTextModel {
    config: ClipTextConfig,
    dtype: DType,
    weights: Arc<Weights>,
    token_key: String,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
}

/// Outputs of [`ClipTextModel::forward`].
pub struct ClipOutput {
    /// The prompt embedding the UNet is conditioned on: (B, 77, hidden), i.e.
    /// `last_hidden_state`, or with clip-skip n the final layer norm of the hidden
    /// state n layers earlier (as diffusers computes it).
    pub embedding: Tensor,
}

impl ClipTextModel {
    /// Loads `dir/config.json` and its safetensors weights, uploading in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, dir: &std::path::Path, dtype: DType) -> Result<ClipTextModel> {
        let (config, weights) = crate::weights::open_component(dir, ClipTextConfig::validate)?;
        Self::from_weights(gpu, config, Arc::new(weights), dtype)
    }

    /// Builds the model from a parsed config and opened weights.
    pub fn from_weights(
        gpu: &Gpu,
        config: ClipTextConfig,
        weights: Arc<Weights>,
        dtype: DType,
    ) -> Result<ClipTextModel> {
        let prefix = if weights.contains("text_model.embeddings.token_embedding.weight") {
            "text_model."
        } else {
            ""
        };
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let up = |key: String, shape: &[usize]| {
            weights.upload(gpu, &format!("{prefix}{key}"), shape, dtype)
        };
        let linear = |key: String, out_f: usize, in_f: usize| -> Result<Linear> {
            Ok(Linear {
                weight: up(format!("{key}.weight"), &[out_f, in_f])?,
                bias: up(format!("{key}.bias"), &[out_f])?,
            })
        };
        let norm = |key: String| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: up(format!("{key}.weight"), &[h])?,
                beta: up(format!("{key}.bias"), &[h])?,
            })
        };
        let token_key = format!("{prefix}embeddings.token_embedding.weight");
        weights.expect(&token_key, &[config.vocab_size, h])?;
        let positions = up(
            "embeddings.position_embedding.weight".into(),
            &[config.max_position_embeddings, h],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = format!("encoder.layers.{i}");
                Ok(Layer {
                    norm1: norm(format!("{l}.layer_norm1"))?,
                    q: linear(format!("{l}.self_attn.q_proj"), h, h)?,
                    k: linear(format!("{l}.self_attn.k_proj"), h, h)?,
                    v: linear(format!("{l}.self_attn.v_proj"), h, h)?,
                    out: linear(format!("{l}.self_attn.out_proj"), h, h)?,
                    norm2: norm(format!("{l}.layer_norm2"))?,
                    fc1: linear(format!("{l}.mlp.fc1"), inter, h)?,
                    fc2: linear(format!("{l}.mlp.fc2"), h, inter)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm("final_layer_norm".into())?;
        Ok(ClipTextModel {
            config,
            dtype,
            weights,
            token_key,
            positions,
            layers,
            final_norm,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Token embeddings for `ids` (B rows of `max_position_embeddings` ids), gathered
    /// from the weight file.
    fn embed_tokens(&self, gpu: &Gpu, ids: &[Vec<u32>]) -> Result<Tensor> {
        let (h, n) = (self.config.hidden_size, self.config.max_position_embeddings);
        let table = self.weights.get(&self.token_key)?;
        let mut out = Vec::with_capacity(ids.len() * n * h);
        for (b, row) in ids.iter().enumerate() {
            if row.len() != n {
                return Err(ModelError::Config {
                    path: "text encoder input".into(),
                    message: format!(
                        "prompt {b} has {} token ids, the model takes exactly {n}",
                        row.len()
                    ),
                });
            }
            for &id in row {
                let vector = table.row(id as usize).ok_or_else(|| ModelError::Config {
                    path: "text encoder input".into(),
                    message: format!(
                        "token id {id} is outside the vocabulary of {}",
                        self.config.vocab_size
                    ),
                })?;
                out.extend(vector.to_f32()?);
            }
        }
        Ok(gpu.upload_f32("token embeddings", &[ids.len(), n, h], self.dtype, &out)?)
    }

    /// Encodes B prompts of token ids. `clip_skip` 0 gives `last_hidden_state`; n > 0
    /// uses the hidden state n layers before the last, through the final layer norm.
    pub fn forward(
        &self,
        batch: &mut Batch,
        ids: &[Vec<u32>],
        clip_skip: usize,
    ) -> Result<ClipOutput> {
        let c = &self.config;
        if clip_skip >= c.num_hidden_layers {
            return Err(ModelError::Config {
                path: "clip_skip".into(),
                message: format!(
                    "clip_skip {clip_skip} must be below the {} layers",
                    c.num_hidden_layers
                ),
            });
        }
        let (heads, h) = (c.num_attention_heads, c.hidden_size);
        let eps = c.layer_norm_eps as f32;
        let act = if c.hidden_act == "gelu" {
            Activation::Gelu
        } else {
            Activation::QuickGelu
        };
        let gpu = batch.gpu().clone();
        let tokens = self.embed_tokens(&gpu, ids)?;
        // 1. embeddings: tokens + positions (broadcast over the batch)
        let mut x = batch.add(&tokens, &self.positions)?;
        let mut attn = AttentionOptions::new(ids.len(), heads, h / heads);
        attn.causal = true;
        let layers_to_run = c.num_hidden_layers - clip_skip;
        for layer in &self.layers[..layers_to_run] {
            // 2. causal self-attention, pre-norm
            let y = batch.layer_norm(&x, Some((&layer.norm1.gamma, &layer.norm1.beta)), eps)?;
            let q = batch.linear(&y, &layer.q.weight, Some(&layer.q.bias))?;
            let k = batch.linear(&y, &layer.k.weight, Some(&layer.k.bias))?;
            let v = batch.linear(&y, &layer.v.weight, Some(&layer.v.bias))?;
            let a = batch.attention(&q, &k, &v, &attn)?.out;
            x = batch.linear_add(&a, &layer.out.weight, Some(&layer.out.bias), &x)?;
            // 3. MLP, pre-norm
            let y = batch.layer_norm(&x, Some((&layer.norm2.gamma, &layer.norm2.beta)), eps)?;
            let y = batch.linear(&y, &layer.fc1.weight, Some(&layer.fc1.bias))?;
            let y = batch.unary(&y, act, 1.0, 0.0)?;
            x = batch.linear_add(&y, &layer.fc2.weight, Some(&layer.fc2.bias), &x)?;
        }
        // 4. final layer norm
        let embedding = batch.layer_norm(
            &x,
            Some((&self.final_norm.gamma, &self.final_norm.beta)),
            eps,
        )?;
        Ok(ClipOutput { embedding })
    }
}
