//! Image-difference metrics for pruned-vs-unpruned comparisons: PSNR and SSIM on RGBA8
//! images (RGB channels). SSIM follows Wang et al. (2004) as scikit-image computes it by
//! default: a 7x7 uniform window, K1 = 0.01, K2 = 0.03, data range 255, sample
//! (N - 1) covariances, averaged over the window positions that fit inside the image
//! and over the three channels. Written here (a few dozen lines) rather than pulled in
//! as a crate, to match that reference definition exactly.

/// Peak signal-to-noise ratio in dB over the RGB channels (infinite when equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    let (mut se, mut n) = (0.0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if i % 4 != 3 {
            se += (x as f64 - y as f64).powi(2);
            n += 1;
        }
    }
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se / n as f64)).log10()
}

/// Mean structural similarity of two `width` x `height` RGBA8 images, in [-1, 1]
/// (1 when equal). Images smaller than the 7x7 window use the whole image as one window.
pub fn ssim(a: &[u8], b: &[u8], width: usize, height: usize) -> f64 {
    assert_eq!(
        a.len(),
        width * height * 4,
        "image a is not {width}x{height} RGBA"
    );
    assert_eq!(b.len(), a.len(), "images of different sizes");
    let win = 7.min(width).min(height);
    let n = (win * win) as f64;
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..3 {
        let px = |img: &[u8], x: usize, y: usize| img[(y * width + x) * 4 + ch] as f64;
        for y0 in 0..=height - win {
            for x0 in 0..=width - win {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for y in y0..y0 + win {
                    for x in x0..x0 + win {
                        let (va, vb) = (px(a, x, y), px(b, x, y));
                        sa += va;
                        sb += vb;
                        saa += va * va;
                        sbb += vb * vb;
                        sab += va * vb;
                    }
                }
                let (ma, mb) = (sa / n, sb / n);
                let cov = n / (n - 1.0).max(1.0);
                let va = (saa / n - ma * ma) * cov;
                let vb = (sbb / n - mb * mb) * cov;
                let vab = (sab / n - ma * mb) * cov;
                total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
        let mut v = vec![255u8; w * h * 4];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    v[(y * w + x) * 4 + c] = f(x, y, c);
                }
            }
        }
        v
    }

    #[test]
    fn equal_images_score_perfectly_and_noise_lowers_both() {
        let a = image(20, 12, |x, y, c| ((x * 13 + y * 7 + c * 50) % 256) as u8);
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert!((ssim(&a, &a, 20, 12) - 1.0).abs() < 1e-12);
        let mild = image(20, 12, |x, y, c| {
            (((x * 13 + y * 7 + c * 50) % 256) as i32 + ((x + y) % 3) as i32 - 1).clamp(0, 255)
                as u8
        });
        let harsh = image(20, 12, |x, y, c| ((x * 31 + y * 17 + c * 90) % 256) as u8);
        let (p1, p2) = (psnr(&a, &mild), psnr(&a, &harsh));
        let (s1, s2) = (ssim(&a, &mild, 20, 12), ssim(&a, &harsh, 20, 12));
        assert!(p1 > 45.0 && p2 < 15.0, "{p1} {p2}");
        assert!(s1 > 0.95 && s2 < 0.5 && s1 <= 1.0, "{s1} {s2}");
        assert!((ssim(&mild, &a, 20, 12) - s1).abs() < 1e-12, "symmetric");
    }

    /// Against scikit-image 0.25 (`structural_similarity(a, b, channel_axis=2,
    /// data_range=255)` and `peak_signal_noise_ratio`) on the same formula-made images.
    #[test]
    fn matches_scikit_image() {
        let value =
            |x: usize, y: usize, c: usize| (x * 37 + y * 91 + c * 53 + ((x * y) % 7) * 11) % 256;
        let a = image(20, 12, |x, y, c| value(x, y, c) as u8);
        let b = image(20, 12, |x, y, c| {
            (value(x, y, c) as i64 + ((x * 13 + y * 29 + c * 7) % 41) as i64 - 20).clamp(0, 255)
                as u8
        });
        assert!(
            (ssim(&a, &b, 20, 12) - 0.9884271237261677).abs() < 1e-12,
            "{}",
            ssim(&a, &b, 20, 12)
        );
        assert!(
            (psnr(&a, &b) - 26.87531326659431).abs() < 1e-9,
            "{}",
            psnr(&a, &b)
        );
    }

    #[test]
    fn psnr_of_a_known_error() {
        // Every RGB value off by 5: MSE 25, PSNR = 10 log10(255^2 / 25).
        let a = image(4, 4, |_, _, _| 100);
        let b = image(4, 4, |_, _, _| 105);
        let want = 10.0 * (255.0f64 * 255.0 / 25.0).log10();
        assert!((psnr(&a, &b) - want).abs() < 1e-12);
    }
}
