//! diffusers' `AutoencoderKL` on fovea's kernels: the decoder (latents -> image) and the
//! encoder's posterior mean (image -> latents), in diffusers' order. Latent scaling by
//! `scaling_factor` is the pipeline's job, as in diffusers.

use fovea_gpu::{Activation, AttentionOptions, Batch, DType, Gpu, Tensor};

use crate::blocks::{Conv, Loader, Norm, Resnet, conv, project_channels_add, project_tokens};

use crate::config::VaeConfig;
use crate::error::Result;
use crate::weights::Weights;

/// diffusers builds every VAE norm with eps 1e-6.
const VAE_EPS: f32 = 1e-6;

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

/// VAE-specific loading on top of the shared [`Loader`].
trait VaeLoader {
    fn mid(&self, key: &str, c: usize, attention: bool) -> Result<MidBlock>;
}

impl VaeLoader for Loader<'_> {
    fn mid(&self, key: &str, c: usize, attention: bool) -> Result<MidBlock> {
        let a = format!("{key}.attentions.0");
        Ok(MidBlock {
            resnet1: self.resnet(&format!("{key}.resnets.0"), c, c, None)?,
            attention: if attention {
                Some(Attention {
                    norm: self.norm(&format!("{a}.group_norm"), c)?,
                    // diffusers renamed query/key/value/proj_attn; both are accepted.
                    q: self.projection(&[format!("{a}.to_q"), format!("{a}.query")], c, c)?,
                    k: self.projection(&[format!("{a}.to_k"), format!("{a}.key")], c, c)?,
                    v: self.projection(&[format!("{a}.to_v"), format!("{a}.value")], c, c)?,
                    out: self.projection(
                        &[format!("{a}.to_out.0"), format!("{a}.proj_attn")],
                        c,
                        c,
                    )?,
                    channels: c,
                })
            } else {
                None
            },
            resnet2: self.resnet(&format!("{key}.resnets.1"), c, c, None)?,
        })
    }
}

impl Vae {
    /// Loads `dir/config.json` and its weights, uploading in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, dir: &std::path::Path, dtype: DType) -> Result<Vae> {
        let (config, weights) = crate::weights::open_component(dir, VaeConfig::validate)?;
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
                        None,
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
                        None,
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

    fn resnet(&self, b: &mut Batch, x: &Tensor, r: &Resnet) -> Result<Tensor> {
        r.forward(b, x, None, self.config.norm_num_groups, VAE_EPS)
    }

    fn attention(&self, b: &mut Batch, x: &Tensor, a: &Attention) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (batch, c, hw) = (s[0], a.channels, s[2] * s[3]);
        let h = b.group_norm(
            x,
            self.config.norm_num_groups,
            a.norm.affine(),
            VAE_EPS,
            false,
        )?;
        let h = h.reshape(&[batch, c, hw])?;
        let (q, k, v) = (
            project_tokens(b, &h, &a.q)?,
            project_tokens(b, &h, &a.k)?,
            project_tokens(b, &h, &a.v)?,
        );
        let o = if fovea_gpu::attention::head_dim_variant(c).is_some() {
            b.attention(&q, &k, &v, &AttentionOptions::new(batch, 1, c))?
                .out
        } else {
            b.attention_materialized(&q, &k, &v, 1.0 / (c as f32).sqrt())?
        };
        let o = project_channels_add(b, &o, &a.out, &x.reshape(&[batch, c, hw])?)?;
        Ok(o.reshape(&s)?)
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
            coder.norm_out.affine(),
            VAE_EPS,
            true,
        )?;
        conv(b, &x, &coder.conv_out, 1, 1)
    }

    /// Decodes latents (B, latent_channels, h, w) — already divided by the scaling
    /// factor — into images (B, out_channels, 8h, 8w) in about [-1, 1].
    pub fn decode(&self, b: &mut Batch, latents: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut x = match &self.post_quant_conv {
            Some(c) => conv(b, latents, c, 1, 0)?,
            None => latents.clone(),
        };
        // 1. conv_in, 2. mid block, 3. up blocks (resnets, then nearest 2x + conv)
        x = conv(b, &x, &d.conv_in, 1, 1)?;
        x = self.mid(b, &x, &d.mid)?;
        for stage in &d.stages {
            for r in &stage.resnets {
                x = self.resnet(b, &x, r)?;
            }
            if let Some(up) = &stage.resample {
                x = b.upsample_nearest2x(&x)?;
                x = conv(b, &x, up, 1, 1)?;
            }
        }
        // 4. norm, SiLU, conv_out
        self.finish(b, &x, d)
    }

    /// Encodes images (B, in_channels, H, W) in [-1, 1] to the posterior's moments
    /// (B, 2 * latent_channels, H/8, W/8): the mean, then the log-variance (unclamped),
    /// before scaling.
    pub fn encode_moments(&self, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let e = &self.encoder;
        // 1. conv_in, 2. down blocks (resnets, then pad (0,1,0,1) + stride-2 conv)
        let mut x = conv(b, image, &e.conv_in, 1, 1)?;
        for stage in &e.stages {
            for r in &stage.resnets {
                x = self.resnet(b, &x, r)?;
            }
            if let Some(down) = &stage.resample {
                x = b.conv2d_padded(&x, &down.weight, down.bias.as_ref(), 2, [0, 1, 0, 1])?;
            }
        }
        // 3. mid block, 4. norm, SiLU, conv_out to (mean, logvar), quant_conv
        x = self.mid(b, &x, &e.mid)?;
        let moments = self.finish(b, &x, e)?;
        match &self.quant_conv {
            Some(q) => conv(b, &moments, q, 1, 0),
            None => Ok(moments),
        }
    }

    /// Encodes images to the posterior mean (B, latent_channels, H/8, W/8), before
    /// scaling.
    pub fn encode_mean(&self, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let moments = self.encode_moments(b, image)?;
        Ok(b.slice_channels(&moments, 0, self.config.latent_channels)?)
    }

    /// A draw from the posterior given its moments (B, 2C, h, w) and standard normals
    /// `eps` (B, C, h, w): mean + exp(logvar / 2) * eps, with the log-variance clamped
    /// to [-30, 20] as diffusers' `DiagonalGaussianDistribution.sample` does.
    pub fn sample_posterior(
        &self,
        b: &mut Batch,
        moments: &Tensor,
        eps: &Tensor,
    ) -> Result<Tensor> {
        let c = self.config.latent_channels;
        let mean = b.slice_channels(moments, 0, c)?;
        let logvar = b.slice_channels(moments, c, c)?;
        let std = b.unary(&logvar, Activation::GaussianStd, 1.0, 0.0)?;
        let spread = b.mul(&std, eps)?;
        Ok(b.add(&mean, &spread)?)
    }
}
