//! diffusers' `AutoencoderTiny` (TAESD) decoder: a small convolutional decoder from
//! Stable Diffusion latents to images, much cheaper than the AutoencoderKL decoder, for
//! previews and fast decodes. Layout (diffusers `DecoderTiny`): tanh clamp of the
//! latents, conv + ReLU, then per stage `AutoencoderTinyBlock`s, a nearest 2x upsample
//! and a conv (no bias except the last), and finally a [0, 1] -> [-1, 1] rescale.

use fovea_gpu::{Activation, Batch, DType, Gpu, Tensor};

use crate::blocks::{Conv, Loader, conv};
use crate::config::TinyVaeConfig;
use crate::error::Result;
use crate::weights::Weights;

/// `AutoencoderTinyBlock` with equal in/out channels: relu(conv(relu(conv(relu(conv(x))))) + x).
struct TinyBlock {
    convs: [Conv; 3],
}

enum Layer {
    Block(Box<TinyBlock>),
    Upsample,
    Conv(Conv),
}

/// A loaded TAESD decoder.
pub struct TinyVae {
    config: TinyVaeConfig,
    conv_in: Conv,
    layers: Vec<Layer>,
}

impl TinyVae {
    /// Loads `dir/config.json` and its weights, uploading in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, dir: &std::path::Path, dtype: DType) -> Result<TinyVae> {
        let (config, weights) = crate::weights::open_component(dir, TinyVaeConfig::validate)?;
        Self::from_weights(gpu, config, &weights, dtype)
    }

    /// Builds the decoder from a parsed config and opened weights (keys `decoder.layers.*`).
    pub fn from_weights(
        gpu: &Gpu,
        config: TinyVaeConfig,
        weights: &Weights,
        dtype: DType,
    ) -> Result<TinyVae> {
        let l = Loader {
            gpu,
            weights,
            dtype,
        };
        let ch = &config.decoder_block_out_channels;
        let conv_in = l.conv("decoder.layers.0", ch[0], config.latent_channels, 3)?;
        // Sequential index 1 is the activation; stages start at 2.
        let mut index = 2;
        let mut layers = Vec::new();
        let last = ch.len() - 1;
        for (i, (&c, &blocks)) in ch.iter().zip(&config.num_decoder_blocks).enumerate() {
            for _ in 0..blocks {
                let key = format!("decoder.layers.{index}.conv");
                layers.push(Layer::Block(Box::new(TinyBlock {
                    convs: [
                        l.conv(&format!("{key}.0"), c, c, 3)?,
                        l.conv(&format!("{key}.2"), c, c, 3)?,
                        l.conv(&format!("{key}.4"), c, c, 3)?,
                    ],
                })));
                index += 1;
            }
            if i < last {
                layers.push(Layer::Upsample);
                index += 1;
            }
            let out = if i < last { c } else { config.out_channels };
            layers.push(Layer::Conv(l.conv_bias(
                &format!("decoder.layers.{index}"),
                out,
                c,
                3,
                i == last,
            )?));
            index += 1;
        }
        Ok(TinyVae {
            config,
            conv_in,
            layers,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &TinyVaeConfig {
        &self.config
    }

    /// Decodes latents (B, latent_channels, h, w), already divided by the scaling factor
    /// (1 for TAESD), into images (B, out_channels, h * upscale, w * upscale) in [-1, 1].
    pub fn decode(&self, b: &mut Batch, latents: &Tensor) -> Result<Tensor> {
        // tanh(x / 3) * 3 keeps outlying latents in the range TAESD was trained on.
        let x = b.scale(latents, 1.0 / 3.0, 0.0)?;
        let x = b.unary(&x, Activation::Tanh, 3.0, 0.0)?;
        let x = conv(b, &x, &self.conv_in, 1, 1)?;
        let mut x = b.unary(&x, Activation::Relu, 1.0, 0.0)?;
        for layer in &self.layers {
            x = match layer {
                Layer::Block(t) => {
                    let h = conv(b, &x, &t.convs[0], 1, 1)?;
                    let h = b.unary(&h, Activation::Relu, 1.0, 0.0)?;
                    let h = conv(b, &h, &t.convs[1], 1, 1)?;
                    let h = b.unary(&h, Activation::Relu, 1.0, 0.0)?;
                    let h = conv(b, &h, &t.convs[2], 1, 1)?;
                    let sum = b.add(&h, &x)?;
                    b.unary(&sum, Activation::Relu, 1.0, 0.0)?
                }
                Layer::Upsample => b.upsample_nearest2x(&x)?,
                Layer::Conv(c) => conv(b, &x, c, 1, 1)?,
            };
        }
        // [0, 1] -> [-1, 1]
        Ok(b.scale(&x, 2.0, -1.0)?)
    }
}
