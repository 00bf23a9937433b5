//! Float64 CPU references for every kernel, written for clarity, not speed. Shapes and
//! semantics mirror the ops in [`crate::ops`] and [`crate::attention`] (and PyTorch /
//! diffusers, whose definitions the ops follow).

/// a (batch_a, M, K) @ b (batch_b, K, N) (+ bias (N), or (M) per row when its length is
/// M != N), with batch_a or batch_b 1 to
/// broadcast, optional transposed storage, scaled by alpha -> (batch, M, N).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    a_batched: bool,
    b_batched: bool,
    alpha: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let ab = if a_batched { bi * m * k } else { 0 };
        let bb = if b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for kk in 0..k {
                    let av = if trans_a {
                        a[ab + kk * m + i]
                    } else {
                        a[ab + i * k + kk]
                    };
                    let bv = if trans_b {
                        b[bb + j * k + kk]
                    } else {
                        b[bb + kk * n + j]
                    };
                    s += av * bv;
                }
                let b = bias.map_or(0.0, |bias| if bias.len() == n { bias[j] } else { bias[i] });
                out[bi * m * n + i * n + j] = alpha * s + b;
            }
        }
    }
    out
}

/// NCHW convolution: x (N, C_in, H, W), w (C_out, C_in, kh, kw), zero padding
/// `[top, bottom, left, right]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    n: usize,
    c_in: usize,
    h: usize,
    wd: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: [usize; 4],
) -> (Vec<f64>, usize, usize) {
    let [pad_top, pad_bottom, pad_left, pad_right] = padding;
    let ho = (h + pad_top + pad_bottom - kh) / stride + 1;
    let wo = (wd + pad_left + pad_right - kw) / stride + 1;
    let mut out = vec![0.0; n * c_out * ho * wo];
    for b in 0..n {
        for co in 0..c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = bias.map_or(0.0, |bias| bias[co]);
                    for ci in 0..c_in {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad_top as isize;
                                let ix = (ox * stride + kx) as isize - pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * c_in + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((co * c_in + ci) * kh + ky) * kw + kx;
                                s += x[xi] * w[wi];
                            }
                        }
                    }
                    out[((b * c_out + co) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    (out, ho, wo)
}

/// x * sigmoid(x).
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
pub fn gelu(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// x * sigmoid(1.702 x).
pub fn quick_gelu(x: f64) -> f64 {
    x / (1.0 + (-1.702 * x).exp())
}

/// exp(x / 2) with x clamped to [-30, 20] (a Gaussian's std from its log-variance).
pub fn gaussian_std(x: f64) -> f64 {
    (0.5 * x.clamp(-30.0, 20.0)).exp()
}

/// Group norm over (N, C, S) with optional affine and SiLU.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f64],
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
    affine: Option<(&[f64], &[f64])>,
    eps: f64,
    silu_after: bool,
) -> Vec<f64> {
    let per = c / groups;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let base = (b * c + g * per) * s;
            let vals = &x[base..base + per * s];
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, v) in vals.iter().enumerate() {
                let ch = g * per + i / s;
                let mut r = (v - mean) * inv;
                if let Some((gamma, beta)) = affine {
                    r = r * gamma[ch] + beta[ch];
                }
                out[base + i] = if silu_after { silu(r) } else { r };
            }
        }
    }
    out
}

/// Layer norm over rows of length d.
pub fn layer_norm(x: &[f64], d: usize, affine: Option<(&[f64], &[f64])>, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            let mut r = (row[i] - mean) * inv;
            if let Some((g, b)) = affine {
                r = r * g[i] + b[i];
            }
            o[i] = r;
        }
    }
    out
}

/// softmax(scale * x) over rows of length d.
pub fn softmax(x: &[f64], d: usize, scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
        let m = row
            .iter()
            .map(|v| v * scale)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v * scale - m).exp()).sum();
        for i in 0..d {
            o[i] = (row[i] * scale - m).exp() / sum;
        }
    }
    out
}

/// GEGLU over rows of length 2 d.
pub fn geglu(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(2 * d)
        .flat_map(|row| (0..d).map(move |i| row[i] * gelu(row[d + i])))
        .collect()
}

/// Nearest 2x upsample of (planes, H, W).
pub fn upsample_nearest2x(x: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0.0; planes * 4 * h * w];
    for p in 0..planes {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
            }
        }
    }
    out
}

/// diffusers' get_timestep_embedding with frequencies rounded to f32 as PyTorch does;
/// the product t * freq is taken in f32 too, the sine in f64.
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip: bool,
    shift: f64,
    scale: f64,
    max_period: f64,
) -> Vec<f64> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|j| (-(max_period.ln()) * j as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let mut out = vec![0.0; t.len() * dim];
    for (b, &tb) in t.iter().enumerate() {
        for j in 0..half {
            let arg = ((tb * freqs[j]) * scale as f32) as f64;
            let (s, c) = arg.sin_cos();
            let (first, second) = if flip { (c, s) } else { (s, c) };
            out[b * dim + j] = first;
            out[b * dim + half + j] = second;
        }
    }
    out
}

/// Attention on contiguous q (B, Nq, H, D), k/v (B, Nk, H, D); returns the output
/// (B, Nq, H, D) and the heads' entropy statistics (2, B, H): the mean normalised
/// entropy of each head's query rows, then its standard deviation over the queries.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    d: usize,
    scale: f64,
    causal: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; batch * nq * heads * d];
    let slots = batch * heads;
    let mut entropy = vec![0.0; 2 * slots];
    for b in 0..batch {
        for h in 0..heads {
            let (mut h_sum, mut h_sq) = (0.0, 0.0);
            for i in 0..nq {
                let keys = if causal { (i + 1).min(nk) } else { nk };
                let qi = ((b * nq + i) * heads + h) * d;
                let scores: Vec<f64> = (0..keys)
                    .map(|j| {
                        let kj = ((b * nk + j) * heads + h) * d;
                        scale * (0..d).map(|c| q[qi + c] * k[kj + c]).sum::<f64>()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                let p: Vec<f64> = scores.iter().map(|s| (s - m).exp() / z).collect();
                for c in 0..d {
                    out[qi + c] = (0..keys)
                        .map(|j| p[j] * v[((b * nk + j) * heads + h) * d + c])
                        .sum();
                }
                if keys > 1 {
                    let ent: f64 = -p
                        .iter()
                        .filter(|&&x| x > 0.0)
                        .map(|x| x * x.ln())
                        .sum::<f64>();
                    let normalised = ent / (keys as f64).ln();
                    h_sum += normalised;
                    h_sq += normalised * normalised;
                }
            }
            let mean = h_sum / nq as f64;
            entropy[b * heads + h] = mean;
            entropy[slots + b * heads + h] = (h_sq / nq as f64 - mean * mean).max(0.0).sqrt();
        }
    }
    (out, entropy)
}

/// Normalised max error, max |got - want| / `scale`. `scale` is max |want|, or for
/// outputs that are sums of larger terms their terms' magnitude (a result near 0 after
/// cancellation carries the rounding error of its terms). NaN or infinite `got` gives infinity. Returns (error, worst index).
pub fn max_error_over(got: &[f32], want: &[f64], scale: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    let scale = scale.max(1e-30);
    let mut worst = (0.0, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() {
            return (f64::INFINITY, i);
        }
        let e = (*g as f64 - w).abs() / scale;
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}
