//! Building blocks shared by the UNet and the VAE: weight loading by diffusers key,
//! convolutions, norms, projections of channel-first data, and `ResnetBlock2D`.

use std::sync::OnceLock;

use fovea_gpu::{Batch, ConvAdds, DType, Gpu, MatmulOptions, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// A convolution (or a projection stored as one) with its bias.
pub(crate) struct Conv {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The weights' Winograd transform, made at the first convolution that runs as
    /// Winograd, with the tile that convolution takes (`Batch::winograd_tile`), and kept
    /// for the next ones (either tile serves every size).
    pub winograd: OnceLock<Tensor>,
}

impl Conv {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Conv {
        Conv {
            weight,
            bias,
            winograd: OnceLock::new(),
        }
    }
}

/// Group/layer norm affine parameters.
pub(crate) struct Norm {
    pub gamma: Tensor,
    pub beta: Tensor,
}

impl Norm {
    pub fn affine(&self) -> Option<(&Tensor, &Tensor)> {
        Some((&self.gamma, &self.beta))
    }
}

/// Uploads weights of one model by key, in one dtype.
pub(crate) struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub weights: &'a Weights,
    pub dtype: DType,
}

impl Loader<'_> {
    pub fn tensor(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.upload(self.gpu, key, shape, self.dtype)
    }

    /// A k x k convolution with bias.
    pub fn conv(&self, key: &str, c_out: usize, c_in: usize, k: usize) -> Result<Conv> {
        self.conv_bias(key, c_out, c_in, k, true)
    }

    /// A k x k convolution, with a bias when `bias`.
    pub fn conv_bias(
        &self,
        key: &str,
        c_out: usize,
        c_in: usize,
        k: usize,
        bias: bool,
    ) -> Result<Conv> {
        Ok(Conv::new(
            self.tensor(&format!("{key}.weight"), &[c_out, c_in, k, k])?,
            if bias {
                Some(self.tensor(&format!("{key}.bias"), &[c_out])?)
            } else {
                None
            },
        ))
    }

    /// A Linear (out, in) weight, optionally with bias.
    pub fn linear(&self, key: &str, out_f: usize, in_f: usize, bias: bool) -> Result<Conv> {
        Ok(Conv::new(
            self.tensor(&format!("{key}.weight"), &[out_f, in_f])?,
            if bias {
                Some(self.tensor(&format!("{key}.bias"), &[out_f])?)
            } else {
                None
            },
        ))
    }

    /// A projection stored as Linear (out, in) or as a 1x1 conv (out, in, 1, 1), under
    /// the first of `keys` present; returned as a (out, in) matrix.
    pub fn projection(&self, keys: &[String], out_f: usize, in_f: usize) -> Result<Conv> {
        let names: Vec<String> = keys.iter().map(|k| format!("{k}.weight")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let v = self.weights.get_any(&refs)?;
        let key = v.key.trim_end_matches(".weight").to_string();
        let shape: Vec<usize> = if v.shape.len() == 4 {
            vec![out_f, in_f, 1, 1]
        } else {
            vec![out_f, in_f]
        };
        let weight = self
            .tensor(&format!("{key}.weight"), &shape)?
            .reshape(&[out_f, in_f])?;
        Ok(Conv::new(
            weight,
            Some(self.tensor(&format!("{key}.bias"), &[out_f])?),
        ))
    }

    pub fn norm(&self, key: &str, c: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.tensor(&format!("{key}.weight"), &[c])?,
            beta: self.tensor(&format!("{key}.bias"), &[c])?,
        })
    }

    /// diffusers `ResnetBlock2D`; `temb_dim` adds its `time_emb_proj`.
    pub fn resnet(
        &self,
        key: &str,
        c_in: usize,
        c_out: usize,
        temb_dim: Option<usize>,
    ) -> Result<Resnet> {
        Ok(Resnet {
            norm1: self.norm(&format!("{key}.norm1"), c_in)?,
            conv1: self.conv(&format!("{key}.conv1"), c_out, c_in, 3)?,
            time_proj: match temb_dim {
                Some(t) => Some(self.linear(&format!("{key}.time_emb_proj"), c_out, t, true)?),
                None => None,
            },
            norm2: self.norm(&format!("{key}.norm2"), c_out)?,
            conv2: self.conv(&format!("{key}.conv2"), c_out, c_out, 3)?,
            shortcut: if c_in != c_out {
                Some(self.conv(&format!("{key}.conv_shortcut"), c_out, c_in, 1)?)
            } else {
                None
            },
        })
    }
}

/// `conv2d` with the layer's bias; as Winograd where the device's plan runs this
/// convolution so, with the weights transformed once per layer.
pub(crate) fn conv(
    b: &mut Batch,
    x: &Tensor,
    c: &Conv,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_add(b, x, c, stride, pad, ConvAdds::default())
}

/// [`conv`] plus `adds` (a value per image and output channel, a residual): in the
/// Winograd output's store where the plan runs the convolution so, else separate adds.
pub(crate) fn conv_add(
    b: &mut Batch,
    x: &Tensor,
    c: &Conv,
    stride: usize,
    pad: usize,
    adds: ConvAdds<'_>,
) -> Result<Tensor> {
    // The transform made at the first Winograd convolution (the plan is fixed per
    // device), or one made now with the tile this convolution takes (none: the plan
    // does not run it as Winograd, or the direct convolution is faster at its size).
    let u = match c.winograd.get() {
        Some(u) => Some(u.clone()),
        None => match b.winograd_tile(x, &c.weight, stride, [pad; 4]) {
            None => None,
            Some(tile) => {
                // In a batch of its own, submitted at once: a forward that fails before
                // its batch is submitted cannot leave an unwritten transform behind.
                let mut prep = b.gpu().batch();
                let u = prep.winograd_weights(&c.weight, tile)?;
                prep.submit()?;
                Some(c.winograd.get_or_init(|| u).clone())
            }
        },
    };
    let Some(u) = u else {
        let mut y = b.conv2d(x, &c.weight, c.bias.as_ref(), stride, pad)?;
        if let Some(t) = adds.per_channel {
            let s = y.shape().to_vec();
            y = b.add(&y, &t.reshape(&[s[0], s[1], 1, 1])?)?;
        }
        if let Some(r) = adds.residual {
            y = b.add(r, &y)?;
        }
        return Ok(y);
    };
    Ok(b.conv2d_winograd_add(x, &u, c.bias.as_ref(), adds)?)
}

/// Projects channel-first x (B, C, N) to token-major (B, N, out): x^T W^T + b.
pub(crate) fn project_tokens(b: &mut Batch, x: &Tensor, p: &Conv) -> Result<Tensor> {
    Ok(b.matmul(
        x,
        &p.weight,
        p.bias.as_ref(),
        MatmulOptions {
            trans_a: true,
            trans_b: true,
            ..Default::default()
        },
    )?)
}

/// Projects token-major x (B, N, in) back to channel-first (B, out, N), plus the
/// residual (B, out, N): W x^T + b + residual.
pub(crate) fn project_channels_add(
    b: &mut Batch,
    x: &Tensor,
    p: &Conv,
    residual: &Tensor,
) -> Result<Tensor> {
    Ok(b.matmul_add(
        &p.weight,
        x,
        p.bias.as_ref(),
        MatmulOptions {
            trans_b: true,
            bias_per_row: true,
            ..Default::default()
        },
        residual,
    )?)
}

/// diffusers `ResnetBlock2D` (`resnet_time_scale_shift = "default"`, output scale 1).
pub(crate) struct Resnet {
    pub norm1: Norm,
    pub conv1: Conv,
    pub time_proj: Option<Conv>,
    pub norm2: Norm,
    pub conv2: Conv,
    pub shortcut: Option<Conv>,
}

impl Resnet {
    /// `temb_silu` is SiLU(time embedding), (B, temb_dim), when the block has one.
    pub fn forward(
        &self,
        b: &mut Batch,
        x: &Tensor,
        temb_silu: Option<&Tensor>,
        groups: usize,
        eps: f32,
    ) -> Result<Tensor> {
        // 1. norm, SiLU, conv, + time embedding projection broadcast over H and W (added
        //    as the convolution stores its output where it can)
        let h = b.group_norm(x, groups, self.norm1.affine(), eps, true)?;
        let temb = match (&self.time_proj, temb_silu) {
            (Some(p), Some(t)) => Some(b.linear(t, &p.weight, p.bias.as_ref())?),
            _ => None,
        };
        let per_channel = ConvAdds {
            per_channel: temb.as_ref(),
            residual: None,
        };
        let h = conv_add(b, &h, &self.conv1, 1, 1, per_channel)?;
        // 2. the residual, through a 1x1 conv when the channel count changes
        let skip = match &self.shortcut {
            Some(s) => conv(b, x, s, 1, 0)?,
            None => x.clone(),
        };
        // 3. norm, SiLU, conv, + the residual
        let h = b.group_norm(&h, groups, self.norm2.affine(), eps, true)?;
        let residual = ConvAdds {
            per_channel: None,
            residual: Some(&skip),
        };
        conv_add(b, &h, &self.conv2, 1, 1, residual)
    }
}
