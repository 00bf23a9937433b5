//! fovea's one random generator for initial latents and ancestral noise, identical on
//! every platform (native and wasm): SplitMix64 (Steele, Lea and Flood 2014) for
//! uniform 64-bit words, Box-Muller for normals, with `libm`'s pure-Rust `log`, `sqrt`,
//! `sin` and `cos` so no platform maths library is involved.
//!
//! Stream: state starts at `seed`; each draw adds 0x9E3779B97F4A7C15 and mixes. Two
//! draws make two normals: u1 = (w1 >> 11 + 1) / 2^53 in (0, 1], u2 = (w2 >> 11) / 2^53,
//! r = sqrt(-2 ln u1), z = (r cos 2 pi u2, r sin 2 pi u2), each rounded to f32.
//! Values are filled in row-major order of the tensor. (PyTorch's CPU generator is a
//! different stream, so fovea's images differ from diffusers' for the same seed number;
//! given the same latents, they match.)

/// A SplitMix64 stream of standard normals.
#[derive(Clone, Debug)]
pub struct NoiseRng {
    state: u64,
    spare: Option<f32>,
}

impl NoiseRng {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> NoiseRng {
        NoiseRng {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One standard normal.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let scale = 1.0 / (1u64 << 53) as f64;
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * scale;
        let u2 = (self.next_u64() >> 11) as f64 * scale;
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some((r * libm::sin(theta)) as f32);
        (r * libm::cos(theta)) as f32
    }

    /// `n` standard normals.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::NoiseRng;

    #[test]
    fn the_stream_is_fixed_and_standard_normal() {
        // Pinned values: a change here changes every image made from a seed.
        let first = NoiseRng::new(42).normals(4);
        let again = NoiseRng::new(42).normals(4);
        assert_eq!(first, again);
        assert_eq!(
            first.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            PINNED
        );
        let z = NoiseRng::new(7).normals(200_000);
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "mean {mean} var {var}"
        );
        assert_ne!(NoiseRng::new(1).normals(4), NoiseRng::new(2).normals(4));
    }

    const PINNED: [u32; 4] = [1054103078, 1059526174, 3211023016, 1068094895];
}
