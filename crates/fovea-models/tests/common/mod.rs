//! Helpers shared by the model parity tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fovea_gpu::{Gpu, GpuOptions};
use fovea_models::Weights;

/// tests/fixtures at the repository root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The device under test.
pub fn gpu() -> Gpu {
    pollster::block_on(Gpu::new(GpuOptions::default())).expect("a GPU adapter")
}

/// A reference-output file from tests/fixtures/expected.
pub fn expected(name: &str) -> Weights {
    let path = fixtures().join("expected").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Weights::from_bytes(vec![(name.to_string(), bytes)]).unwrap()
}

/// ||got - want|| / ||want||; infinite when anything is not finite.
pub fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared tensors differ in length");
    if got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}
