//! diffusers' `AutoencoderKL` on fovea's kernels: the decoder (latents -> image) and the
//! encoder's posterior mean (image -> latents), in diffusers' order. Latent scaling by
//! `scaling_factor` is the pipeline's job, as in diffusers.

use std::path::Path;

use fovea_gpu::{AttentionOptions, Batch, DType, Gpu, MatmulOptions, Tensor};

use crate::config::{VaeConfig, read_json};
use crate::error::Result;
use crate::weights::Weights;

/// diffusers builds every VAE norm with eps 1e-6.
const VAE_EPS: f32 = 1e-6;

struct Conv {
    weight: Tensor,
    bias: Tensor,
}

struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

struct Resnet {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

struct Attention {
    norm: Norm,
    q: Conv,
    k: Conv,
    v: Conv,
    out: Conv,
    channels: usize,
}

struct MidBlock {
    resnet1: Resnet,
    attention: Option<Attention>,
    resnet2: Resnet,
}

struct Stage {
    resnets: Vec<Resnet>,
    /// Stride-2 conv (encoder) or nearest-2x + conv (decoder).
    resample: Option<Conv>,
}

struct Coder {
    conv_in: Conv,
    stages: Vec<Stage>,
    mid: MidBlock,
    norm_out: Norm,
    conv_out: Conv,
}

/// A loaded AutoencoderKL.
pub struct Vae {
    config: VaeConfig,
    decoder: Coder,
    encoder: Coder,
    post_quant_conv: Option<Conv>,
    quant_conv: Option<Conv>,
}

struct Loader<'a> {
    gpu: &'a Gpu,
    weights: &'a Weights,
    dtype: DType,
}

impl Loader<'_> {
    fn tensor(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.upload(self.gpu, key, shape, self.dtype)
    }

    fn conv(&self, key: &str, c_out: usize, c_in: usize, k: usize) -> Result<Conv> {
        Ok(Conv {
            weight: self.tensor(&format!("{key}.weight"), &[c_out, c_in, k, k])?,
            bias: self.tensor(&format!("{key}.bias"), &[c_out])?,
        })
    }

    /// A projection stored as Linear (C, C) or, in older checkpoints, 1x1 conv (C, C, 1, 1).
    fn projection(&self, keys: &[&str], c: usize) -> Result<Conv> {
        let v = self.weights.get_any(
            &keys
                .iter()
                .map(|k| format!("{k}.weight"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )?;
        let key = v.key.trim_end_matches(".weight").to_string();
        let shape: Vec<usize> = if v.shape.len() == 4 {
            vec![c, c, 1, 1]
        } else {
            vec![c, c]
        };
        let weight = self
            .tensor(&format!("{key}.weight"), &shape)?
            .reshape(&[c, c])?;
        Ok(Conv {
            weight,
            bias: self.tensor(&format!("{key}.bias"), &[c])?,
        })
    }

    fn norm(&self, key: &str, c: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.tensor(&format!("{key}.weight"), &[c])?,
            beta: self.tensor(&format!("{key}.bias"), &[c])?,
        })
    }

    fn resnet(&self, key: &str, c_in: usize, c_out: usize) -> Result<Resnet> {
        Ok(Resnet {
            norm1: self.norm(&format!("{key}.norm1"), c_in)?,
            conv1: self.conv(&format!("{key}.conv1"), c_out, c_in, 3)?,
            norm2: self.norm(&format!("{key}.norm2"), c_out)?,
            conv2: self.conv(&format!("{key}.conv2"), c_out, c_out, 3)?,
            shortcut: if c_in != c_out {
                Some(self.conv(&format!("{key}.conv_shortcut"), c_out, c_in, 1)?)
            } else {
                None
            },
        })
    }

    fn mid(&self, key: &str, c: usize, attention: bool) -> Result<MidBlock> {
        let a = format!("{key}.attentions.0");
        Ok(MidBlock {
            resnet1: self.resnet(&format!("{key}.resnets.0"), c, c)?,
            attention: if attention {
                Some(Attention {
                    norm: self.norm(&format!("{a}.group_norm"), c)?,
                    // diffusers renamed query/key/value/proj_attn; both are accepted.
                    q: self.projection(&[&format!("{a}.to_q"), &format!("{a}.query")], c)?,
                    k: self.projection(&[&format!("{a}.to_k"), &format!("{a}.key")], c)?,
                    v: self.projection(&[&format!("{a}.to_v"), &format!("{a}.value")], c)?,
                    out: self
                        .projection(&[&format!("{a}.to_out.0"), &format!("{a}.proj_attn")], c)?,
                    channels: c,
                })
            } else {
                None
            },
            resnet2: self.resnet(&format!("{key}.resnets.1"), c, c)?,
        })
    }
}

impl Vae {
    /// Loads `dir/config.json` and its weights, uploading in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Vae> {
        let config_path = dir.join("config.json");
        let config: VaeConfig = read_json(&config_path)?;
        config.validate(&config_path)?;
        let weights = Weights::open_dir(dir, None)?;
        Self::from_weights(gpu, config, &weights, dtype)
    }

    /// Builds the model from a parsed config and opened weights.
    pub fn from_weights(
        gpu: &Gpu,
        config: VaeConfig,
        weights: &Weights,
        dtype: DType,
    ) -> Result<Vae> {
        let l = Loader {
            gpu,
            weights,
            dtype,
        };
        let ch = &config.block_out_channels;
        let (n, latent) = (ch.len(), config.latent_channels);
        let top = ch[n - 1];
        // Decoder: channels run from the deepest block back up.
        let mut stages = Vec::new();
        let mut prev = top;
        for (i, &c) in ch.iter().rev().enumerate() {
            let key = format!("decoder.up_blocks.{i}");
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    l.resnet(
                        &format!("{key}.resnets.{j}"),
                        if j == 0 { prev } else { c },
                        c,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < n {
                Some(l.conv(&format!("{key}.upsamplers.0.conv"), c, c, 3)?)
            } else {
                None
            };
            stages.push(Stage { resnets, resample });
            prev = c;
        }
        let decoder = Coder {
            conv_in: l.conv("decoder.conv_in", top, latent, 3)?,
            mid: l.mid("decoder.mid_block", top, config.mid_block_add_attention)?,
            stages,
            norm_out: l.norm("decoder.conv_norm_out", ch[0])?,
            conv_out: l.conv("decoder.conv_out", config.out_channels, ch[0], 3)?,
        };
        let mut stages = Vec::new();
        let mut prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let key = format!("encoder.down_blocks.{i}");
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    l.resnet(
                        &format!("{key}.resnets.{j}"),
                        if j == 0 { prev } else { c },
                        c,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < n {
                Some(l.conv(&format!("{key}.downsamplers.0.conv"), c, c, 3)?)
            } else {
                None
            };
            stages.push(Stage { resnets, resample });
            prev = c;
        }
        let encoder = Coder {
            conv_in: l.conv("encoder.conv_in", ch[0], config.in_channels, 3)?,
            stages,
            mid: l.mid("encoder.mid_block", top, config.mid_block_add_attention)?,
            norm_out: l.norm("encoder.conv_norm_out", top)?,
            conv_out: l.conv("encoder.conv_out", 2 * latent, top, 3)?,
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(l.conv("post_quant_conv", latent, latent, 1)?)
        } else {
            None
        };
        let quant_conv = if config.use_quant_conv {
            Some(l.conv("quant_conv", 2 * latent, 2 * latent, 1)?)
        } else {
            None
        };
        Ok(Vae {
            config,
            decoder,
            encoder,
            post_quant_conv,
            quant_conv,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    fn conv(b: &mut Batch, x: &Tensor, c: &Conv, pad: usize) -> Result<Tensor> {
        Ok(b.conv2d(x, &c.weight, Some(&c.bias), 1, pad)?)
    }

    fn resnet(&self, b: &mut Batch, x: &Tensor, r: &Resnet) -> Result<Tensor> {
        let g = self.config.norm_num_groups;
        // 1. norm, SiLU, conv; twice
        let h = b.group_norm(x, g, Some((&r.norm1.gamma, &r.norm1.beta)), VAE_EPS, true)?;
        let h = Self::conv(b, &h, &r.conv1, 1)?;
        let h = b.group_norm(&h, g, Some((&r.norm2.gamma, &r.norm2.beta)), VAE_EPS, true)?;
        let h = Self::conv(b, &h, &r.conv2, 1)?;
        // 2. residual, through a 1x1 conv when the channel count changes
        let skip = match &r.shortcut {
            Some(s) => Self::conv(b, x, s, 0)?,
            None => x.clone(),
        };
        Ok(b.add(&skip, &h)?)
    }

    fn attention(&self, b: &mut Batch, x: &Tensor, a: &Attention) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (batch, c, hw) = (s[0], a.channels, s[2] * s[3]);
        let h = b.group_norm(
            x,
            self.config.norm_num_groups,
            Some((&a.norm.gamma, &a.norm.beta)),
            VAE_EPS,
            false,
        )?;
        let h = h.reshape(&[batch, c, hw])?;
        // Projections straight from channel-first data: (B, C, HW)^T @ W^T -> (B, HW, C).
        let proj = |b: &mut Batch, p: &Conv| {
            b.matmul(
                &h,
                &p.weight,
                Some(&p.bias),
                MatmulOptions {
                    trans_a: true,
                    trans_b: true,
                    ..Default::default()
                },
            )
        };
        let (q, k, v) = (proj(b, &a.q)?, proj(b, &a.k)?, proj(b, &a.v)?);
        let o = if fovea_gpu::attention::head_dim_variant(c).is_some() {
            b.attention(&q, &k, &v, &AttentionOptions::new(batch, 1, c))?
                .out
        } else {
            b.attention_materialized(&q, &k, &v, 1.0 / (c as f32).sqrt())?
        };
        // Output projection back to channel-first: W (C, C) @ o^T -> (B, C, HW).
        let o = b.matmul(
            &a.out.weight,
            &o,
            Some(&a.out.bias),
            MatmulOptions {
                trans_b: true,
                bias_per_row: true,
                ..Default::default()
            },
        )?;
        Ok(b.add(x, &o.reshape(&s)?)?)
    }

    fn mid(&self, b: &mut Batch, x: &Tensor, m: &MidBlock) -> Result<Tensor> {
        let mut x = self.resnet(b, x, &m.resnet1)?;
        if let Some(a) = &m.attention {
            x = self.attention(b, &x, a)?;
        }
        self.resnet(b, &x, &m.resnet2)
    }

    fn finish(&self, b: &mut Batch, x: &Tensor, coder: &Coder) -> Result<Tensor> {
        let x = b.group_norm(
            x,
            self.config.norm_num_groups,
            Some((&coder.norm_out.gamma, &coder.norm_out.beta)),
            VAE_EPS,
            true,
        )?;
        Self::conv(b, &x, &coder.conv_out, 1)
    }

    /// Decodes latents (B, latent_channels, h, w) — already divided by the scaling
    /// factor — into images (B, out_channels, 8h, 8w) in about [-1, 1].
    pub fn decode(&self, b: &mut Batch, latents: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut x = match &self.post_quant_conv {
            Some(c) => Self::conv(b, latents, c, 0)?,
            None => latents.clone(),
        };
        // 1. conv_in, 2. mid block, 3. up blocks (resnets, then nearest 2x + conv)
        x = Self::conv(b, &x, &d.conv_in, 1)?;
        x = self.mid(b, &x, &d.mid)?;
        for stage in &d.stages {
            for r in &stage.resnets {
                x = self.resnet(b, &x, r)?;
            }
            if let Some(up) = &stage.resample {
                x = b.upsample_nearest2x(&x)?;
                x = Self::conv(b, &x, up, 1)?;
            }
        }
        // 4. norm, SiLU, conv_out
        self.finish(b, &x, d)
    }

    /// Encodes images (B, in_channels, H, W) in [-1, 1] to the posterior mean
    /// (B, latent_channels, H/8, W/8), before scaling.
    pub fn encode_mean(&self, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let e = &self.encoder;
        // 1. conv_in, 2. down blocks (resnets, then pad (0,1,0,1) + stride-2 conv)
        let mut x = Self::conv(b, image, &e.conv_in, 1)?;
        for stage in &e.stages {
            for r in &stage.resnets {
                x = self.resnet(b, &x, r)?;
            }
            if let Some(down) = &stage.resample {
                x = b.conv2d_padded(&x, &down.weight, Some(&down.bias), 2, [0, 1, 0, 1])?;
            }
        }
        // 3. mid block, 4. norm, SiLU, conv_out to (mean, logvar), quant_conv
        x = self.mid(b, &x, &e.mid)?;
        let mut moments = self.finish(b, &x, e)?;
        if let Some(q) = &self.quant_conv {
            moments = Self::conv(b, &moments, q, 0)?;
        }
        // The mean is the first latent_channels channels (the rest are the log-variance).
        Ok(b.slice_channels(&moments, 0, self.config.latent_channels)?)
    }
}
