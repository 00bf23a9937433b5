// Sinusoidal timestep embedding, as diffusers' get_timestep_embedding:
//   emb_j = scale * t * freq_j  (freq_j = exp(-ln(max_period) * j / (half - shift)), j < half)
//   out = [sin(emb), cos(emb)], or [cos, sin] when flip_sin_to_cos; an odd dim gets a
//   trailing zero.
// The frequencies come from the host, rounded to f32 once as PyTorch does, so that
// t * freq is the same f32 product; sin/cos use an explicit range reduction because
// shading languages only promise 2^-11 absolute accuracy for arguments near zero and
// timestep arguments reach 1000.

struct Params {
    batch: u32,
    dim: u32,
    flip_sin_to_cos: u32,
    _pad: u32,
    scale: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
// timesteps: (B), f32
@group(0) @binding(1) var<storage, read> timesteps: array<f32>;
// freqs: (dim / 2), f32
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
// out: (B, dim)
@group(0) @binding(3) var<storage, read_write> out: array<elem>;

// Returns (sin x, cos x) with ~1e-7 absolute error for |x| up to ~1e5.
fn sin_cos(x: f32) -> vec2<f32> {
    // Cody-Waite reduction by pi/2 split into three parts; the first has 8 significant
    // bits so k * part1 is exact.
    let k = round(x * 0.63661977236758134);
    let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    let r2 = r * r;
    let s = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
    let q = u32(i32(k) & 3);
    switch q {
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        case 3u: { return vec2<f32>(-c, s); }
        default: { return vec2<f32>(s, c); }
    }
}

@compute @workgroup_size(256)
fn timestep_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.batch * params.dim {
        return;
    }
    let b = i / params.dim;
    let col = i % params.dim;
    let half_dim = params.dim / 2u;
    if col >= 2u * half_dim {
        out[i] = elem(0.0);
        return;
    }
    let j = col % half_dim;
    let arg = (timesteps[b] * freqs[j]) * params.scale;
    let sc = sin_cos(arg);
    let first_half = col < half_dim;
    let use_sin = first_half != (params.flip_sin_to_cos == 1u);
    out[i] = elem(select(sc.y, sc.x, use_sin));
}
