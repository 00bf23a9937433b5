// Helpers shared by every kernel. The preprocessor puts this after the define header,
// so `elem` (the storage dtype, f32 or f16) is already declared.

// Workgroups are laid out in 2D when one dimension would exceed the 65535 limit:
// flat workgroup index = x + y * num_workgroups.x.
fn flat_workgroup(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn silu(x: f32) -> f32 {
    return x * sigmoid(x);
}

// Complementary error function with fractional error below 1.2e-7 everywhere
// (Chebyshev fit from Numerical Recipes, `erfcc`). WGSL has no erf builtin.
fn erfc_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(poly);
    return select(2.0 - r, r, x >= 0.0);
}

// Exact (erf-based) GELU, as torch.nn.functional.gelu with approximate="none".
// Written through erfc so that the negative tail keeps its relative accuracy.
fn gelu(x: f32) -> f32 {
    return 0.5 * x * erfc_approx(-x * 0.70710678118654752);
}

// CLIP's quick_gelu: x * sigmoid(1.702 x).
fn quick_gelu(x: f32) -> f32 {
    return x * sigmoid(1.702 * x);
}

// Activation `act` (elementwise.wgsl's ACT_* codes) of x.
fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return silu(x); }
        case 2u: { return gelu(x); }
        case 3u: { return quick_gelu(x); }
        case 4u: { return max(x, 0.0); }
        // Clamped: some backends build tanh from exp and give NaN (inf / inf) for large x.
        case 5u: { return tanh(clamp(x, -15.0, 15.0)); }
        case 6u: { return exp(0.5 * clamp(x, -30.0, 20.0)); }
        default: { return x; }
    }
}
