//! Kernel checks against the float64 references: fresh seeded random inputs, outputs
//! poisoned with NaN before the run (so unwritten elements fail), a normalised max
//! error compared with a per-op, per-dtype bound. The test suite calls these at many
//! shapes; `fovea info --self-check` runs [`self_check`] on the user's adapter.

use rand::{Rng, SeedableRng};

use crate::attention::{AttentionOptions, HeadLayout, HeadView};
use crate::context::Gpu;
use crate::error::Result;
use crate::ops::{Activation, BinaryOp, ConvAdds, MatmulOptions, TimestepOptions, WinogradTile};
use crate::reference as r;
use crate::tensor::{DType, Tensor};

/// Error bound for f32 kernels (normalised max error).
pub const F32_BOUND: f64 = 1e-5;
/// Error bound for f16 storage.
pub const F16_BOUND: f64 = 2e-3;
/// Absolute bound on per-head normalised entropy.
pub const ENTROPY_BOUND: f64 = 1e-4;

/// The outcome of one kernel check.
#[derive(Clone, Debug)]
pub struct Check {
    /// What ran, with its shape, e.g. `matmul (3, 65, 70) x (70, 33) f16`.
    pub name: String,
    /// Normalised max error.
    pub error: f64,
    /// The bound it must stay under.
    pub bound: f64,
    /// Index of the worst element, with the computed and expected values there.
    pub worst: (usize, f32, f64),
    /// A second compared quantity (attention entropy): (name, error, bound).
    pub extra: Option<(String, f64, f64)>,
}

impl Check {
    /// Whether every compared quantity is within its bound (NaN never passes).
    pub fn passed(&self) -> bool {
        self.error <= self.bound && self.extra.as_ref().is_none_or(|(_, e, b)| e <= b)
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: error {:.2e} (bound {:.0e}); worst at [{}]: got {} want {:.7}",
            if self.passed() { "ok  " } else { "FAIL" },
            self.name,
            self.error,
            self.bound,
            self.worst.0,
            self.worst.1,
            self.worst.2
        )?;
        if let Some((name, e, b)) = &self.extra {
            write!(f, "; {name} error {e:.2e} (bound {b:.0e})")?;
        }
        Ok(())
    }
}

/// Runs kernel checks on one device with one random stream.
pub struct Checker {
    gpu: Gpu,
    rng: rand::rngs::StdRng,
    /// Seed of the random stream, printed so a failure can be replayed.
    pub seed: u64,
}

fn bound(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => F16_BOUND,
        _ => F32_BOUND,
    }
}

/// A Linear layer's random operands and its float64 reference product.
struct LinearCase {
    label: String,
    x: Tensor,
    w: Tensor,
    bias: Option<Tensor>,
    want: Vec<f64>,
}

/// A convolution's inputs on the device and its float64 reference output.
struct ConvCase {
    x: Tensor,
    w: Tensor,
    bias: Option<Tensor>,
    want: Vec<f64>,
    h_out: usize,
    w_out: usize,
}

impl Checker {
    /// A checker with inputs drawn from `seed`.
    pub fn new(gpu: &Gpu, seed: u64) -> Checker {
        Checker {
            gpu: gpu.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            seed,
        }
    }

    /// The device under test.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Uniform values in [-scale, scale], already rounded to what `dtype` stores.
    fn random(&mut self, len: usize, scale: f32, dtype: DType) -> Vec<f32> {
        (0..len)
            .map(|_| {
                let x = self.rng.random_range(-scale..=scale);
                match dtype {
                    DType::F16 => half::f16::from_f32(x).to_f32(),
                    _ => x,
                }
            })
            .collect()
    }

    fn upload(
        &mut self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        data: &[f32],
    ) -> Result<Tensor> {
        self.gpu.upload_f32(label, shape, dtype, data)
    }

    fn input(
        &mut self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        scale: f32,
    ) -> Result<(Tensor, Vec<f64>)> {
        let n = shape.iter().product();
        let data = self.random(n, scale, dtype);
        let t = self.upload(label, shape, dtype, &data)?;
        Ok((t, data.iter().map(|&x| x as f64).collect()))
    }

    /// Fills idle pool buffers of the output's size with NaN, so that an op's output
    /// (served from the pool) starts poisoned and unwritten elements show.
    pub fn poison(&mut self, shape: &[usize], dtype: DType) -> Result<()> {
        let n: usize = shape.iter().product();
        for _ in 0..3 {
            let t = match dtype {
                DType::F16 => self
                    .gpu
                    .upload_f16("poison", shape, &vec![half::f16::NAN; n])?,
                DType::U32 => self.gpu.upload_u32("poison", shape, &vec![u32::MAX; n])?,
                DType::F32 => {
                    self.gpu
                        .upload_f32("poison", shape, DType::F32, &vec![f32::NAN; n])?
                }
            };
            drop(t);
        }
        Ok(())
    }

    fn finish(&self, name: String, dtype: DType, got: &[f32], want: &[f64]) -> Check {
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        self.finish_over(name, dtype, got, want, scale)
    }

    /// [`Self::finish`] with the error normalised by `scale` instead of max |want|.
    fn finish_over(
        &self,
        name: String,
        dtype: DType,
        got: &[f32],
        want: &[f64],
        scale: f64,
    ) -> Check {
        let (error, i) = r::max_error_over(got, want, scale);
        Check {
            name,
            error,
            bound: bound(dtype),
            worst: (i, got[i], want[i]),
            extra: None,
        }
    }

    /// Elementwise activation (+ scale/shift).
    pub async fn unary(&mut self, act: Activation, shape: &[usize], dtype: DType) -> Result<Check> {
        let (x, xr) = self.input("x", shape, dtype, 4.0)?;
        let (alpha, beta) = (1.25f32, -0.5f32);
        self.poison(shape, dtype)?;
        let mut b = self.gpu.batch();
        let y = b.unary(&x, act, alpha, beta)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let f: fn(f64) -> f64 = match act {
            Activation::Identity => |x| x,
            Activation::Silu => r::silu,
            Activation::Gelu => r::gelu,
            Activation::QuickGelu => r::quick_gelu,
            Activation::Relu => |x| x.max(0.0),
            Activation::Tanh => f64::tanh,
            Activation::GaussianStd => r::gaussian_std,
        };
        let want: Vec<f64> = xr
            .iter()
            .map(|&v| alpha as f64 * f(v) + beta as f64)
            .collect();
        // alpha f(x) + beta can cancel to ~0 (tanh, say, with a one-element input): the
        // rounding error then belongs to the terms, so they set the scale.
        let scale = xr.iter().fold(0.0f64, |m, &v| {
            m.max((alpha as f64 * f(v)).abs() + (beta as f64).abs())
        });
        Ok(self.finish_over(
            format!("unary {act:?} {} {dtype}", crate::fmt_shape(shape)),
            dtype,
            &got,
            &want,
            scale,
        ))
    }

    /// Broadcast binary op.
    pub async fn binary(
        &mut self,
        op: BinaryOp,
        a_shape: &[usize],
        b_shape: &[usize],
        dtype: DType,
    ) -> Result<Check> {
        let (a, ar) = self.input("a", a_shape, dtype, 2.0)?;
        let (bt, br) = self.input("b", b_shape, dtype, 2.0)?;
        let alpha = 0.75f32;
        let mut b = self.gpu.batch();
        let y = b.binary(&a, &bt, op, alpha)?;
        let out_shape = y.shape().to_vec();
        drop(y);
        // Re-run on a poisoned pool now that the output size is known.
        self.poison(&out_shape, dtype)?;
        let y = b.binary(&a, &bt, op, alpha)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let rank = out_shape.len();
        let pad = |s: &[usize]| {
            let mut p = vec![1; rank - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (pa, pb) = (pad(a_shape), pad(b_shape));
        let index = |p: &[usize], idx: &[usize]| {
            p.iter()
                .zip(idx)
                .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
        };
        let mut want = Vec::with_capacity(got.len());
        let mut idx = vec![0; rank];
        for _ in 0..got.len() {
            let va = ar[index(&pa, &idx)];
            let vb = br[index(&pb, &idx)];
            want.push(match op {
                BinaryOp::Add => va + alpha as f64 * vb,
                BinaryOp::Mul => alpha as f64 * va * vb,
            });
            for dim in (0..rank).rev() {
                idx[dim] += 1;
                if idx[dim] < out_shape[dim] {
                    break;
                }
                idx[dim] = 0;
            }
        }
        Ok(self.finish(
            format!(
                "binary {op:?} {} . {} {dtype}",
                crate::fmt_shape(a_shape),
                crate::fmt_shape(b_shape)
            ),
            dtype,
            &got,
            &want,
        ))
    }

    /// GEGLU on (rows, 2 d).
    pub async fn geglu(&mut self, rows: usize, d: usize, dtype: DType) -> Result<Check> {
        let (x, xr) = self.input("x", &[rows, 2 * d], dtype, 3.0)?;
        self.poison(&[rows, d], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.geglu(&x)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!("geglu ({rows}, {}) {dtype}", 2 * d),
            dtype,
            &got,
            &r::geglu(&xr, d),
        ))
    }

    /// Batched matmul; `b_batched` false shares one b across the batch.
    #[allow(clippy::too_many_arguments)]
    pub async fn matmul(
        &mut self,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        with_bias: bool,
        b_batched: bool,
        dtype: DType,
    ) -> Result<Check> {
        self.matmul_inner(
            batch, m, n, k, trans_a, trans_b, with_bias, b_batched, dtype, false,
        )
        .await
    }

    /// Linear with a residual (`Batch::linear_add`): x (batch, rows, in) @ W (out, in)^T
    /// [+ bias] + residual (batch, rows, out).
    pub async fn linear_add(
        &mut self,
        batch: usize,
        rows: usize,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
        dtype: DType,
    ) -> Result<Check> {
        let case = self.linear_case(batch, rows, in_features, out_features, with_bias, dtype)?;
        let (res, rr) = self.input("residual", &[batch, rows, out_features], dtype, 1.0)?;
        self.poison(&[batch, rows, out_features], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.linear_add(&case.x, &case.w, case.bias.as_ref(), &res)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let want: Vec<f64> = case.want.iter().zip(&rr).map(|(p, r)| p + r).collect();
        Ok(self.finish(
            format!("{} + residual {dtype}", case.label),
            dtype,
            &got,
            &want,
        ))
    }

    /// GEGLU of a Linear layer (`Batch::linear_geglu`): x (batch, rows, in) @
    /// W (out, in)^T [+ bias], value * gelu(gate) over its halves -> (batch, rows, out / 2).
    pub async fn linear_geglu(
        &mut self,
        batch: usize,
        rows: usize,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
        dtype: DType,
    ) -> Result<Check> {
        let case = self.linear_case(batch, rows, in_features, out_features, with_bias, dtype)?;
        self.poison(&[batch, rows, out_features / 2], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.linear_geglu(&case.x, &case.w, case.bias.as_ref())?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!("{} -> geglu {dtype}", case.label),
            dtype,
            &got,
            &r::geglu(&case.want, out_features / 2),
        ))
    }

    /// Random x (batch, rows, in), W (out, in) and (when `with_bias`) bias of a Linear
    /// layer, and the float64 reference product (batch * rows, out).
    fn linear_case(
        &mut self,
        batch: usize,
        rows: usize,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
        dtype: DType,
    ) -> Result<LinearCase> {
        let (x, xr) = self.input("x", &[batch, rows, in_features], dtype, 1.0)?;
        let (w, wr) = self.input("w", &[out_features, in_features], dtype, 1.0)?;
        let bias = if with_bias {
            Some(self.input("bias", &[out_features], dtype, 1.0)?)
        } else {
            None
        };
        let want = r::matmul(
            &xr,
            &wr,
            bias.as_ref().map(|(_, v)| v.as_slice()),
            1,
            batch * rows,
            out_features,
            in_features,
            false,
            true,
            true,
            false,
            1.0,
        );
        Ok(LinearCase {
            label: format!(
                "linear {batch}x{rows}x{in_features} -> {out_features}{}",
                if with_bias { " + bias" } else { "" }
            ),
            x,
            w,
            bias: bias.map(|(t, _)| t),
            want,
        })
    }

    /// Matmul with a per-row (M) bias, as projections of channel-first data use, with
    /// rhs (N, K) when `trans_b`, else (K, N).
    pub async fn matmul_bias_per_row(
        &mut self,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        trans_b: bool,
        dtype: DType,
    ) -> Result<Check> {
        assert_ne!(m, n, "the reference tells the bias kinds apart by length");
        self.matmul_inner(batch, m, n, k, false, trans_b, true, false, dtype, true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn matmul_inner(
        &mut self,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        with_bias: bool,
        b_batched: bool,
        dtype: DType,
        bias_per_row: bool,
    ) -> Result<Check> {
        let a_shape = if trans_a {
            [batch, k, m]
        } else {
            [batch, m, k]
        };
        let (a, ar) = self.input("a", &a_shape, dtype, 1.0)?;
        let b_inner = if trans_b { [n, k] } else { [k, n] };
        let b_shape: Vec<usize> = if b_batched {
            vec![batch, b_inner[0], b_inner[1]]
        } else {
            b_inner.to_vec()
        };
        let (bt, br) = self.input("b", &b_shape, dtype, 1.0)?;
        let bias = if with_bias {
            Some(self.input("bias", &[if bias_per_row { m } else { n }], dtype, 1.0)?)
        } else {
            None
        };
        let alpha = 0.5f32;
        self.poison(&[batch, m, n], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.matmul(
            &a,
            &bt,
            bias.as_ref().map(|(t, _)| t),
            MatmulOptions {
                trans_a,
                trans_b,
                alpha,
                bias_per_row,
            },
        )?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let want = r::matmul(
            &ar,
            &br,
            bias.as_ref().map(|(_, v)| v.as_slice()),
            batch,
            m,
            n,
            k,
            trans_a,
            trans_b,
            true,
            b_batched,
            alpha as f64,
        );
        Ok(self.finish(
            format!(
                "matmul {batch}x({m}x{k}){} @ {}({k}x{n}){}{} {dtype}",
                if trans_a { "^T" } else { "" },
                if b_batched { "batched " } else { "" },
                if trans_b { "^T" } else { "" },
                match (with_bias, bias_per_row) {
                    (false, _) => "",
                    (true, false) => " + bias",
                    (true, true) => " + row bias",
                }
            ),
            dtype,
            &got,
            &want,
        ))
    }

    /// Random input, weights and (when `with_bias`) bias for a convolution of shape
    /// `[n, c_in, h, w, c_out, kernel]`, and the float64 reference output.
    fn conv_case(
        &mut self,
        [n, c_in, h, w, c_out, kernel]: [usize; 6],
        stride: usize,
        padding: [usize; 4],
        with_bias: bool,
        dtype: DType,
    ) -> Result<ConvCase> {
        let (x, xr) = self.input("x", &[n, c_in, h, w], dtype, 1.0)?;
        let (wt, wr) = self.input("w", &[c_out, c_in, kernel, kernel], dtype, 1.0)?;
        let bias = if with_bias {
            Some(self.input("bias", &[c_out], dtype, 1.0)?)
        } else {
            None
        };
        let (want, h_out, w_out) = r::conv2d(
            &xr,
            &wr,
            bias.as_ref().map(|(_, v)| v.as_slice()),
            n,
            c_in,
            h,
            w,
            c_out,
            kernel,
            kernel,
            stride,
            padding,
        );
        Ok(ConvCase {
            x,
            w: wt,
            bias: bias.map(|(t, _)| t),
            want,
            h_out,
            w_out,
        })
    }

    /// Convolution with symmetric padding.
    #[allow(clippy::too_many_arguments)]
    pub async fn conv2d(
        &mut self,
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        with_bias: bool,
        dtype: DType,
    ) -> Result<Check> {
        self.conv2d_padded(
            n, c_in, h, w, c_out, kernel, stride, [pad; 4], with_bias, dtype,
        )
        .await
    }

    /// Convolution with padding `[top, bottom, left, right]`.
    #[allow(clippy::too_many_arguments)]
    pub async fn conv2d_padded(
        &mut self,
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: [usize; 4],
        with_bias: bool,
        dtype: DType,
    ) -> Result<Check> {
        let case = self.conv_case(
            [n, c_in, h, w, c_out, kernel],
            stride,
            padding,
            with_bias,
            dtype,
        )?;
        let (ho, wo) = (case.h_out, case.w_out);
        self.poison(&[n, c_out, ho, wo], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.conv2d_padded(&case.x, &case.w, case.bias.as_ref(), stride, padding)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!(
                "conv2d ({n}, {c_in}, {h}, {w}) k{kernel} s{stride} p{padding:?} -> {c_out}{} {dtype}",
                if with_bias { " + bias" } else { "" }
            ),
            dtype,
            &got,
            &case.want,
        ))
    }

    /// A 3x3 convolution with stride 1 and padding 1 through the explicit Winograd path
    /// with this tile ([`Batch::winograd_weights`] in one batch,
    /// [`Batch::conv2d_winograd_in_runs`] with runs of at most `max_run_elems` in the
    /// next, as the models run it), on any adapter class.
    ///
    /// [`Batch::winograd_weights`]: crate::Batch::winograd_weights
    /// [`Batch::conv2d_winograd_in_runs`]: crate::Batch::conv2d_winograd_in_runs
    #[allow(clippy::too_many_arguments)]
    pub async fn conv2d_winograd(
        &mut self,
        tile: WinogradTile,
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        with_bias: bool,
        with_adds: bool,
        max_run_elems: usize,
        dtype: DType,
    ) -> Result<Check> {
        let case = self.conv_case([n, c_in, h, w, c_out, 3], 1, [1; 4], with_bias, dtype)?;
        let mut prep = self.gpu.batch();
        let u = prep.winograd_weights(&case.w, tile)?;
        prep.submit()?;
        // With adds: a value per image and output channel and a residual, stored added.
        let mut want = case.want.clone();
        let adds = if with_adds {
            let (pc, pcr) = self.input("per channel", &[n, c_out], dtype, 1.0)?;
            let (res, rr) = self.input("residual", &[n, c_out, h, w], dtype, 1.0)?;
            for (i, v) in want.iter_mut().enumerate() {
                *v += pcr[i / (h * w)] + rr[i];
            }
            Some((pc, res))
        } else {
            None
        };
        self.poison(&[n, c_out, h, w], dtype)?;
        let mut b = self.gpu.batch();
        let conv_adds = ConvAdds {
            per_channel: adds.as_ref().map(|(p, _)| p),
            residual: adds.as_ref().map(|(_, r)| r),
        };
        let y =
            b.conv2d_winograd_in_runs(&case.x, &u, case.bias.as_ref(), conv_adds, max_run_elems)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!(
                "conv2d_winograd {tile:?} ({n}, {c_in}, {h}, {w}) -> {c_out}{}{} runs <= {max_run_elems} {dtype}",
                if with_bias { " + bias" } else { "" },
                if with_adds { " + per-channel + residual" } else { "" }
            ),
            dtype,
            &got,
            &want,
        ))
    }

    /// Group norm (+SiLU) on (n, c, s).
    pub async fn group_norm(
        &mut self,
        n: usize,
        c: usize,
        s: usize,
        groups: usize,
        silu: bool,
        dtype: DType,
    ) -> Result<Check> {
        let (x, xr) = self.input("x", &[n, c, s], dtype, 3.0)?;
        let (g, gr) = self.input("gamma", &[c], dtype, 1.5)?;
        let (bt, br) = self.input("beta", &[c], dtype, 1.0)?;
        self.poison(&[n, c, s], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.group_norm(&x, groups, Some((&g, &bt)), 1e-5, silu)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let want = r::group_norm(&xr, n, c, s, groups, Some((&gr, &br)), 1e-5, silu);
        Ok(self.finish(
            format!(
                "group_norm ({n}, {c}, {s}) groups {groups}{} {dtype}",
                if silu { " + silu" } else { "" }
            ),
            dtype,
            &got,
            &want,
        ))
    }

    /// Layer norm on (rows, d).
    pub async fn layer_norm(&mut self, rows: usize, d: usize, dtype: DType) -> Result<Check> {
        let (x, xr) = self.input("x", &[rows, d], dtype, 3.0)?;
        let (g, gr) = self.input("gamma", &[d], dtype, 1.5)?;
        let (bt, br) = self.input("beta", &[d], dtype, 1.0)?;
        self.poison(&[rows, d], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.layer_norm(&x, Some((&g, &bt)), 1e-5)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!("layer_norm ({rows}, {d}) {dtype}"),
            dtype,
            &got,
            &r::layer_norm(&xr, d, Some((&gr, &br)), 1e-5),
        ))
    }

    /// Softmax on (rows, d).
    pub async fn softmax(&mut self, rows: usize, d: usize, dtype: DType) -> Result<Check> {
        let (x, xr) = self.input("x", &[rows, d], dtype, 4.0)?;
        self.poison(&[rows, d], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.softmax(&x, 0.7)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        Ok(self.finish(
            format!("softmax ({rows}, {d}) {dtype}"),
            dtype,
            &got,
            &r::softmax(&xr, d, 0.7),
        ))
    }

    /// Nearest 2x upsample.
    pub async fn upsample(
        &mut self,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        dtype: DType,
    ) -> Result<Check> {
        let (x, xr) = self.input("x", &[n, c, h, w], dtype, 1.0)?;
        self.poison(&[n, c, 2 * h, 2 * w], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.upsample_nearest2x(&x)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let mut c = self.finish(
            format!("upsample_nearest2x ({n}, {c}, {h}, {w}) {dtype}"),
            dtype,
            &got,
            &r::upsample_nearest2x(&xr, n * c, h, w),
        );
        c.bound = 0.0; // a copy is exact
        Ok(c)
    }

    /// Channel concat of (n, c1, s) and (n, c2, s).
    pub async fn concat(
        &mut self,
        n: usize,
        c1: usize,
        c2: usize,
        s: usize,
        dtype: DType,
    ) -> Result<Check> {
        let (a, ar) = self.input("a", &[n, c1, s], dtype, 1.0)?;
        let (bt, br) = self.input("b", &[n, c2, s], dtype, 1.0)?;
        self.poison(&[n, c1 + c2, s], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.concat_channels(&[&a, &bt])?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let mut want = Vec::new();
        for i in 0..n {
            want.extend_from_slice(&ar[i * c1 * s..(i + 1) * c1 * s]);
            want.extend_from_slice(&br[i * c2 * s..(i + 1) * c2 * s]);
        }
        let mut c = self.finish(
            format!("concat_channels ({n}, {c1}|{c2}, {s}) {dtype}"),
            dtype,
            &got,
            &want,
        );
        c.bound = 0.0;
        Ok(c)
    }

    /// Channel slice [start, start + count) of (n, c, s).
    pub async fn slice(
        &mut self,
        n: usize,
        c: usize,
        start: usize,
        count: usize,
        s: usize,
        dtype: DType,
    ) -> Result<Check> {
        let (x, xr) = self.input("x", &[n, c, s], dtype, 1.0)?;
        self.poison(&[n, count, s], dtype)?;
        let mut b = self.gpu.batch();
        let y = b.slice_channels(&x, start, count)?;
        b.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let want: Vec<f64> = (0..n)
            .flat_map(|i| xr[(i * c + start) * s..(i * c + start + count) * s].to_vec())
            .collect();
        let mut check = self.finish(
            format!(
                "slice_channels ({n}, {c}, {s}) [{start}..{}] {dtype}",
                start + count
            ),
            dtype,
            &got,
            &want,
        );
        check.bound = 0.0;
        Ok(check)
    }

    /// Timestep embedding of `b` random timesteps in [0, 1000).
    pub async fn timestep(
        &mut self,
        b: usize,
        dim: usize,
        flip: bool,
        shift: f64,
        dtype: DType,
    ) -> Result<Check> {
        let t: Vec<f32> = (0..b)
            .map(|_| self.rng.random_range(0..1000) as f32)
            .collect();
        let tt = self.gpu.upload_f32("t", &[b], DType::F32, &t)?;
        self.poison(&[b, dim], dtype)?;
        let opts = TimestepOptions {
            flip_sin_to_cos: flip,
            downscale_freq_shift: shift,
            ..Default::default()
        };
        let mut bt = self.gpu.batch();
        let y = bt.timestep_embedding(&tt, dim, opts, dtype)?;
        bt.submit()?;
        let got = self.gpu.read_f32(&y).await?;
        let want = r::timestep_embedding(&t, dim, flip, shift, 1.0, 10000.0);
        Ok(self.finish(
            format!("timestep_embedding ({b},) dim {dim} flip {flip} shift {shift} {dtype}"),
            dtype,
            &got,
            &want,
        ))
    }

    /// Attention (B, N, H*D) against the reference, output and entropy.
    #[allow(clippy::too_many_arguments)]
    pub async fn attention(
        &mut self,
        batch: usize,
        heads: usize,
        nq: usize,
        nk: usize,
        d: usize,
        causal: bool,
        dtype: DType,
    ) -> Result<Check> {
        // Larger q/k scales give peaked distributions, so entropies span [0, 1].
        let (q, qr) = self.input("q", &[batch, nq, heads * d], dtype, 2.0)?;
        let (k, kr) = self.input("k", &[batch, nk, heads * d], dtype, 2.0)?;
        let (v, vr) = self.input("v", &[batch, nk, heads * d], dtype, 1.0)?;
        self.poison(&[batch, nq, heads * d], dtype)?;
        let mut opts = AttentionOptions::new(batch, heads, d);
        opts.causal = causal;
        let mut b = self.gpu.batch();
        let out = b.attention(&q, &k, &v, &opts)?;
        b.submit()?;
        let got = self.gpu.read_f32(&out.out).await?;
        let ent = self.gpu.read_f32(&out.entropy).await?;
        let scale = 1.0 / (d as f64).sqrt();
        let (want, want_ent) = r::attention(&qr, &kr, &vr, batch, heads, nq, nk, d, scale, causal);
        let mut c = self.finish(
            format!(
                "attention B{batch} H{heads} Nq{nq} Nk{nk} D{d}{} {dtype}",
                if causal { " causal" } else { "" }
            ),
            dtype,
            &got,
            &want,
        );
        let ent_err = ent
            .iter()
            .zip(&want_ent)
            .map(|(g, w)| {
                if g.is_finite() {
                    (*g as f64 - w).abs()
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max);
        c.extra = Some(("entropy".into(), ent_err, ENTROPY_BOUND));
        Ok(c)
    }

    /// Materialised single-head attention (large head dims).
    pub async fn attention_materialized(
        &mut self,
        batch: usize,
        nq: usize,
        nk: usize,
        d: usize,
        dtype: DType,
    ) -> Result<Check> {
        let (q, qr) = self.input("q", &[batch, nq, d], dtype, 1.0)?;
        let (k, kr) = self.input("k", &[batch, nk, d], dtype, 1.0)?;
        let (v, vr) = self.input("v", &[batch, nk, d], dtype, 1.0)?;
        self.poison(&[batch, nq, d], dtype)?;
        let scale = 1.0 / (d as f32).sqrt();
        let mut b = self.gpu.batch();
        let out = b.attention_materialized(&q, &k, &v, scale)?;
        b.submit()?;
        let got = self.gpu.read_f32(&out).await?;
        let (want, _) = r::attention(&qr, &kr, &vr, batch, 1, nq, nk, d, scale as f64, false);
        Ok(self.finish(
            format!("attention_materialized B{batch} Nq{nq} Nk{nk} D{d} {dtype}"),
            dtype,
            &got,
            &want,
        ))
    }

    /// Attention reading q, k, v out of one fused (B, N, 3*H*D + pad) projection through
    /// strided views (`pad` unused elements end each token's row: an odd pad gives odd
    /// strides), compared with the reference on the separated tensors.
    pub async fn attention_fused_qkv(
        &mut self,
        batch: usize,
        heads: usize,
        n: usize,
        d: usize,
        pad: usize,
        dtype: DType,
    ) -> Result<Check> {
        let hd = heads * d;
        let row_len = 3 * hd + pad;
        let (qkv, r_qkv) = self.input("qkv", &[batch, n, row_len], dtype, 2.0)?;
        let split = |part: usize| -> Vec<f64> {
            (0..batch * n)
                .flat_map(|row| {
                    r_qkv[row * row_len + part * hd..row * row_len + (part + 1) * hd].to_vec()
                })
                .collect()
        };
        let (qr, kr, vr) = (split(0), split(1), split(2));
        let view = |part: usize| HeadView {
            tensor: &qkv,
            layout: HeadLayout {
                offset: part * hd,
                batch_stride: n * row_len,
                token_stride: row_len,
                head_stride: d,
            },
            tokens: n,
        };
        self.poison(&[batch, n, hd], dtype)?;
        let mut b = self.gpu.batch();
        let out = b.attention_views(
            view(0),
            view(1),
            view(2),
            &AttentionOptions::new(batch, heads, d),
        )?;
        b.submit()?;
        let got = self.gpu.read_f32(&out.out).await?;
        let (want, _) = r::attention(
            &qr,
            &kr,
            &vr,
            batch,
            heads,
            n,
            n,
            d,
            1.0 / (d as f64).sqrt(),
            false,
        );
        Ok(self.finish(
            format!("attention fused-qkv B{batch} H{heads} N{n} D{d} pad {pad} {dtype}"),
            dtype,
            &got,
            &want,
        ))
    }
}

/// A quick check of every kernel on small shapes, in f32 and (when the adapter has
/// `shader-f16`) f16.
pub async fn self_check(gpu: &Gpu, seed: u64) -> Result<Vec<Check>> {
    let mut c = Checker::new(gpu, seed);
    let mut dtypes = vec![DType::F32];
    if gpu.capabilities().shader_f16 {
        dtypes.push(DType::F16);
    }
    let mut out = Vec::new();
    for dt in dtypes {
        out.push(c.unary(Activation::Gelu, &[3, 333], dt).await?);
        out.push(c.unary(Activation::Silu, &[1000], dt).await?);
        out.push(c.binary(BinaryOp::Add, &[2, 3, 50], &[50], dt).await?);
        out.push(c.geglu(7, 40, dt).await?);
        out.push(
            c.matmul(2, 70, 45, 33, false, true, true, false, dt)
                .await?,
        );
        out.push(c.conv2d(1, 8, 13, 11, 12, 3, 2, 1, true, dt).await?);
        out.push(c.group_norm(2, 32, 49, 8, true, dt).await?);
        out.push(c.layer_norm(5, 320, dt).await?);
        out.push(c.softmax(4, 77, dt).await?);
        out.push(c.upsample(1, 3, 5, 7, dt).await?);
        out.push(c.concat(2, 3, 5, 6, dt).await?);
        out.push(c.timestep(3, 320, true, 0.0, dt).await?);
        out.push(c.attention(1, 2, 100, 77, 40, false, dt).await?);
    }
    Ok(out)
}
