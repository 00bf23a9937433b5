//! Head skipping: the GPU-built active-head list, indirect dispatch that gives masked
//! heads no work at all, and what skipped heads output (zeros, or the previous value).

mod common;

use common::{gpu, seed};
use fovea_gpu::{AttentionOptions, DType, HeadLayout, HeadView, SkippedOutput, Tensor};
use pollster::block_on;
use rand::{Rng, SeedableRng};

struct Case {
    batch: usize,
    heads: usize,
    n_q: usize,
    n_k: usize,
    d: usize,
}

fn random_tensor(rng: &mut rand::rngs::StdRng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    gpu().upload_f32("x", shape, DType::F32, &data).unwrap()
}

fn random_mask(rng: &mut rand::rngs::StdRng, slots: usize) -> Vec<u32> {
    let mut mask: Vec<u32> = (0..slots).map(|_| rng.random_range(0..2)).collect();
    // At least one active and one inactive head, so both paths run.
    mask[0] = 1;
    mask[slots - 1] = 0;
    mask
}

/// Attention over q, k, v with the heads of `mask` skipped (outputting `skipped`) and
/// without a mask, in one batch on a NaN-poisoned pool (a missed write shows). Returns the
/// masked output, the unmasked one and the masked run's entropy statistics.
#[allow(clippy::too_many_arguments)]
fn masked_and_full(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &[u32],
    (batch, heads, n_q, d): (usize, usize, usize, usize),
    skipped: SkippedOutput,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = gpu();
    let m = g.upload_u32("mask", &[batch * heads], mask).unwrap();
    let opts = AttentionOptions::new(batch, heads, d);
    fovea_gpu::selfcheck::Checker::new(g, seed)
        .poison(&[batch, n_q, heads * d], DType::F32)
        .unwrap();
    let mut b = g.batch();
    let list = b.compact_heads(&m, n_q, d).unwrap();
    let masked = b
        .attention(
            q,
            k,
            v,
            &AttentionOptions {
                active_heads: Some(&list),
                skipped,
                ..opts
            },
        )
        .unwrap();
    let full = b.attention(q, k, v, &opts).unwrap();
    b.submit().unwrap();
    (
        block_on(g.read_f32(&masked.out)).unwrap(),
        block_on(g.read_f32(&full.out)).unwrap(),
        block_on(g.read_f32(&masked.entropy)).unwrap(),
    )
}

#[test]
fn compaction_lists_active_then_inactive_heads_in_order() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    // More than one 256-wide chunk, to exercise the chunked scan.
    for slots in [1usize, 2, 255, 256, 257, 700] {
        let mut mask: Vec<u32> = (0..slots).map(|_| rng.random_range(0..2)).collect();
        if slots == 1 {
            mask[0] = 0;
        }
        let m = gpu().upload_u32("mask", &[slots], &mask).unwrap();
        let mut b = gpu().batch();
        let list = b.compact_heads(&m, 130, 40).unwrap();
        b.submit().unwrap();
        let got = block_on(gpu().read_u32(&list.list)).unwrap();
        let args = block_on(gpu().read_u32(&list.dispatch_args)).unwrap();
        let active: Vec<u32> = (0..slots as u32)
            .filter(|&i| mask[i as usize] != 0)
            .collect();
        let inactive: Vec<u32> = (0..slots as u32)
            .filter(|&i| mask[i as usize] == 0)
            .collect();
        let mut want = vec![active.len() as u32, inactive.len() as u32];
        want.extend(&active);
        want.extend(&inactive);
        assert_eq!(got, want, "slots {slots}, seed {s}");
        // The attention kernel's query tiles: 64 queries per workgroup, 32 on the software
        // class's per-lane kernel at head dim 40 (four queries per lane).
        let tiles =
            130u32.div_ceil(fovea_gpu::attention::query_tile(&gpu().kernel_plan(), 40) as u32);
        assert_eq!(
            tiles,
            if gpu().kernel_plan().attention_per_lane {
                5
            } else {
                3
            }
        );
        let zero_groups = (130u32 * 40).div_ceil(256);
        assert_eq!(
            args,
            vec![
                tiles,
                active.len() as u32,
                1,
                zero_groups,
                inactive.len() as u32,
                1
            ],
            "indirect arguments, slots {slots}, seed {s}"
        );
    }
}

/// Runs masked attention (skipped heads keep `out`'s previous contents) with the work
/// counter, next to the unmasked run, and checks: skipped heads do no work and keep
/// their bytes; active heads equal the unmasked run exactly.
fn check_masked_run(case: Case, mask: Vec<u32>, rng: &mut rand::rngs::StdRng, s: u64) {
    let g = gpu();
    let Case {
        batch,
        heads,
        n_q,
        n_k,
        d,
    } = case;
    let slots = batch * heads;
    let hd = heads * d;
    let q = random_tensor(rng, &[batch, n_q, hd]);
    let k = random_tensor(rng, &[batch, n_k, hd]);
    let v = random_tensor(rng, &[batch, n_k, hd]);
    let opts = AttentionOptions::new(batch, heads, d);

    let full_count = g.upload_u32("count", &[1], &[0]).unwrap();
    let mut b = g.batch();
    let full = b
        .attention(
            &q,
            &k,
            &v,
            &AttentionOptions {
                count_work: Some(&full_count),
                ..opts
            },
        )
        .unwrap();
    b.submit().unwrap();

    let sentinel = 7.25f32;
    let out = g
        .upload_f32(
            "out",
            &[batch, n_q, hd],
            DType::F32,
            &vec![sentinel; batch * n_q * hd],
        )
        .unwrap();
    let old_entropy = g
        .upload_f32(
            "entropy",
            &[2, batch, heads],
            DType::F32,
            &vec![-1.0; 2 * slots],
        )
        .unwrap();
    let count = g.upload_u32("count", &[1], &[0]).unwrap();
    let m = g.upload_u32("mask", &[slots], &mask).unwrap();
    let mut b = g.batch();
    let list = b.compact_heads(&m, n_q, d).unwrap();
    let masked = b
        .attention(
            &q,
            &k,
            &v,
            &AttentionOptions {
                active_heads: Some(&list),
                skipped: SkippedOutput::Keep,
                out: Some(HeadView {
                    tensor: &out,
                    layout: HeadLayout::contiguous(n_q, heads, d),
                    tokens: n_q,
                }),
                entropy_out: Some(&old_entropy),
                count_work: Some(&count),
                ..opts
            },
        )
        .unwrap();
    b.submit().unwrap();

    let active = mask.iter().filter(|&&x| x != 0).count();
    let full_work = block_on(g.read_u32(&full_count)).unwrap()[0] as usize;
    let masked_work = block_on(g.read_u32(&count)).unwrap()[0] as usize;
    assert_eq!(
        full_work,
        slots * n_q * n_k,
        "unmasked run computes every score (seed {s})"
    );
    assert_eq!(
        masked_work,
        active * n_q * n_k,
        "only active heads compute scores, mask {mask:?} (seed {s})"
    );

    let want = block_on(g.read_f32(&full.out)).unwrap();
    let got = block_on(g.read_f32(&masked.out)).unwrap();
    let want_e = block_on(g.read_f32(&full.entropy)).unwrap();
    let got_e = block_on(g.read_f32(&masked.entropy)).unwrap();
    for bi in 0..batch {
        for h in 0..heads {
            let slot = bi * heads + h;
            for i in 0..n_q {
                for c in 0..d {
                    let idx = ((bi * n_q + i) * heads + h) * d + c;
                    if mask[slot] != 0 {
                        assert_eq!(
                            got[idx].to_bits(),
                            want[idx].to_bits(),
                            "active head {slot} differs at {idx} (seed {s})"
                        );
                    } else {
                        assert_eq!(
                            got[idx], sentinel,
                            "skipped head {slot} was written at {idx} (seed {s})"
                        );
                    }
                }
            }
            // Mean and spread of the head's entropy.
            for e in [slot, slots + slot] {
                if mask[slot] != 0 {
                    assert_eq!(
                        got_e[e], want_e[e],
                        "entropy statistic {e} of active head {slot} (seed {s})"
                    );
                } else {
                    assert_eq!(
                        got_e[e], -1.0,
                        "skipped head {slot} entropy must be left as it was (seed {s})"
                    );
                }
            }
        }
    }
}

#[test]
fn masked_heads_do_no_work_and_active_heads_are_unaffected() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    for case in [
        Case {
            batch: 2,
            heads: 4,
            n_q: 130,
            n_k: 77,
            d: 40,
        },
        Case {
            batch: 1,
            heads: 5,
            n_q: 64,
            n_k: 64,
            d: 80,
        },
    ] {
        let mask = random_mask(&mut rng, case.batch * case.heads);
        check_masked_run(case, mask, &mut rng, s);
    }
}

#[test]
fn all_heads_masked_computes_nothing_and_none_masked_equals_unmasked() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    check_masked_run(
        Case {
            batch: 1,
            heads: 3,
            n_q: 70,
            n_k: 20,
            d: 33,
        },
        vec![0, 0, 0],
        &mut rng,
        s,
    );
    check_masked_run(
        Case {
            batch: 1,
            heads: 3,
            n_q: 70,
            n_k: 20,
            d: 33,
        },
        vec![1, 1, 1],
        &mut rng,
        s,
    );
}

#[test]
fn skipped_heads_output_zeros_when_asked() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let (batch, heads, n_q, n_k, d) = (2, 3, 100, 77, 64);
    let q = random_tensor(&mut rng, &[batch, n_q, heads * d]);
    let k = random_tensor(&mut rng, &[batch, n_k, heads * d]);
    let v = random_tensor(&mut rng, &[batch, n_k, heads * d]);
    let mask = random_mask(&mut rng, batch * heads);
    let (got, want, got_e) = masked_and_full(
        &q,
        &k,
        &v,
        &mask,
        (batch, heads, n_q, d),
        SkippedOutput::Zero,
        s,
    );
    for (idx, (g_val, w_val)) in got.iter().zip(&want).enumerate() {
        let slot = (idx / (heads * d) / n_q) * heads + (idx / d) % heads;
        if mask[slot] != 0 {
            assert_eq!(
                g_val.to_bits(),
                w_val.to_bits(),
                "active head {slot} at {idx} (seed {s})"
            );
        } else {
            assert_eq!(
                *g_val, 0.0,
                "skipped head {slot} at {idx} must be zero (seed {s})"
            );
        }
    }
    for (i, e) in got_e.iter().enumerate() {
        let slot = i % mask.len();
        if mask[slot] == 0 {
            assert_eq!(
                *e, 0.0,
                "a fresh entropy tensor reads 0 for skipped head {slot}"
            );
        }
    }
}

/// The pruning rule on the GPU equals its CPU statement (prune when the mean entropy is
/// below the threshold and the spread at most the guard; NaN kept) on random
/// statistics, with the threshold at 0 (keep all), 1 and random values and the guard
/// off (0.5) or on; bad values are named.
#[test]
fn decide_heads_matches_the_cpu_rule() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let g = gpu();
    for slots in [1usize, 63, 64, 65, 300] {
        let mut stats: Vec<f32> = (0..slots).map(|_| rng.random_range(0.0..1.0)).collect();
        stats.extend((0..slots).map(|_| rng.random_range(0.0..0.5f32)));
        stats[0] = f32::NAN;
        if slots > 2 {
            stats[1] = 1.0;
            stats[2] = 0.0;
        }
        let e = g
            .upload_f32("entropy", &[2, slots], DType::F32, &stats)
            .unwrap();
        let (mean, spread) = stats.split_at(slots);
        for (threshold, guard) in [
            (0.0f32, 0.5f32),
            (1.0, 0.5),
            (rng.random_range(0.0..1.0), 0.5),
            (0.5, 0.2),
            (rng.random_range(0.0..1.0), rng.random_range(0.0..0.5)),
        ] {
            let mut b = g.batch();
            let mask = b.decide_heads(&e, threshold, guard).unwrap();
            b.submit().unwrap();
            let got = block_on(g.read_u32(&mask)).unwrap();
            let want: Vec<u32> = mean
                .iter()
                .zip(spread)
                .map(|(&h, &sp)| u32::from(!(h < threshold && sp <= guard)))
                .collect();
            assert_eq!(
                got, want,
                "seed {s}, slots {slots}, threshold {threshold}, guard {guard}"
            );
        }
    }
    let e = g
        .upload_f32("entropy", &[2, 4], DType::F32, &[0.5; 8])
        .unwrap();
    let mut b = g.batch();
    let err = b.decide_heads(&e, f32::NAN, 0.5).unwrap_err();
    assert!(err.to_string().contains("threshold"), "{err}");
    let err = b.decide_heads(&e, 0.5, f32::INFINITY).unwrap_err();
    assert!(err.to_string().contains("guard"), "{err}");
}

/// The pattern guard on real attention: two heads with the same low mean entropy, one
/// uniform over the image (every query attends sharply to one key: plain), one
/// striped (queries on alternate rows of a 4-wide grid attend sharply, the others
/// attend evenly, as on stripes). Without the guard both are pruned; with it the
/// striped head is kept and the plain one still goes.
#[test]
fn the_guard_keeps_a_head_with_a_periodic_attention_pattern() {
    let g = gpu();
    let (n, d, heads) = (32usize, 4usize, 2usize);
    // Keys: one-hot-ish directions, so a large query along key j attends to j alone.
    let mut k = vec![0.0f32; n * heads * d];
    for j in 0..n {
        for h in 0..heads {
            k[(j * heads + h) * d + j % d] = 1.0;
            k[(j * heads + h) * d + (j / d) % d] += 0.5;
        }
    }
    let mut q = vec![0.0f32; n * heads * d];
    for i in 0..n {
        // Head 0 (plain): every query sharp. Head 1 (striped): rows alternate sharp/broad.
        let sharp_rows = [true, (i / 4) % 2 == 0];
        for (h, &sharp) in sharp_rows.iter().enumerate() {
            if sharp {
                q[(i * heads + h) * d + i % d] = 40.0;
            }
        }
    }
    let v = vec![1.0f32; n * heads * d];
    let up = |name, data: &[f32]| {
        g.upload_f32(name, &[1, n, heads * d], DType::F32, data)
            .unwrap()
    };
    let (q, k, v) = (up("q", &q), up("k", &k), up("v", &v));
    let mut b = g.batch();
    let att = b
        .attention(&q, &k, &v, &AttentionOptions::new(1, heads, d))
        .unwrap();
    let without = b.decide_heads(&att.entropy, 0.7, 0.5).unwrap();
    let with = b.decide_heads(&att.entropy, 0.7, 0.15).unwrap();
    b.submit().unwrap();
    let stats = block_on(g.read_f32(&att.entropy)).unwrap();
    eprintln!(
        "plain head: mean {:.3} spread {:.3}; striped head: mean {:.3} spread {:.3}",
        stats[0], stats[2], stats[1], stats[3]
    );
    assert!(
        stats[0] < 0.7 && stats[1] < 0.7,
        "both heads have low mean entropy: {stats:?}"
    );
    assert!(stats[2] < 0.15 && stats[3] > 0.15, "{stats:?}");
    assert_eq!(block_on(g.read_u32(&without)).unwrap(), [0, 0]);
    assert_eq!(block_on(g.read_u32(&with)).unwrap(), [0, 1]);
}

/// `SkippedOutput::Mean`: every query row of a skipped head holds the mean of that
/// head's values over the keys (float64 reference), active heads are computed exactly
/// as without a mask; odd sizes and a strided (fused-projection) value layout included.
#[test]
fn skipped_heads_output_the_mean_of_their_values_when_asked() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let g = gpu();
    for (batch, heads, n_q, n_k, d) in [
        (2usize, 3usize, 37usize, 29usize, 16usize),
        (1, 4, 64, 77, 40),
    ] {
        let q = random_tensor(&mut rng, &[batch, n_q, heads * d]);
        let k = random_tensor(&mut rng, &[batch, n_k, heads * d]);
        let v_data: Vec<f32> = (0..batch * n_k * heads * d)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let v = g
            .upload_f32("v", &[batch, n_k, heads * d], DType::F32, &v_data)
            .unwrap();
        let mask = random_mask(&mut rng, batch * heads);
        let (got, want, _) = masked_and_full(
            &q,
            &k,
            &v,
            &mask,
            (batch, heads, n_q, d),
            SkippedOutput::Mean,
            s,
        );
        for (idx, (g_val, w_val)) in got.iter().zip(&want).enumerate() {
            let (bi, rest) = (idx / (n_q * heads * d), idx % (n_q * heads * d));
            let (h, c) = ((rest / d) % heads, rest % d);
            let slot = bi * heads + h;
            if mask[slot] != 0 {
                assert_eq!(
                    g_val.to_bits(),
                    w_val.to_bits(),
                    "active head {slot} at {idx} (seed {s})"
                );
            } else {
                let mean: f64 = (0..n_k)
                    .map(|key| v_data[(bi * n_k + key) * heads * d + h * d + c] as f64)
                    .sum::<f64>()
                    / n_k as f64;
                assert!(
                    (*g_val as f64 - mean).abs() <= 1e-5 * 2.0,
                    "skipped head {slot} at {idx}: {g_val} vs mean {mean} (seed {s})"
                );
            }
        }
    }
}

/// The banded rule: also pruned where the mean entropy is above `above`; `above` = 1
/// equals the plain rule; NaN kept.
#[test]
fn decide_heads_banded_prunes_near_uniform_heads_too() {
    let s = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let g = gpu();
    let slots = 130;
    let mut stats: Vec<f32> = (0..slots).map(|_| rng.random_range(0.0..1.0)).collect();
    stats.extend((0..slots).map(|_| rng.random_range(0.0..0.5f32)));
    stats[0] = f32::NAN;
    stats[1] = 1.0;
    let e = g
        .upload_f32("entropy", &[2, slots], DType::F32, &stats)
        .unwrap();
    let (mean, spread) = stats.split_at(slots);
    for (threshold, guard, above) in [
        (0.0f32, 0.5f32, 1.0f32),
        (0.3, 0.2, 0.9),
        (0.0, 0.5, rng.random_range(0.0..1.0)),
        (
            rng.random_range(0.0..0.5),
            rng.random_range(0.0..0.5),
            rng.random_range(0.5..1.0),
        ),
    ] {
        let mut b = g.batch();
        let mask = b.decide_heads_banded(&e, threshold, guard, above).unwrap();
        b.submit().unwrap();
        let got = block_on(g.read_u32(&mask)).unwrap();
        let want: Vec<u32> = mean
            .iter()
            .zip(spread)
            .map(|(&h, &sp)| u32::from(!((h < threshold && sp <= guard) || h > above)))
            .collect();
        assert_eq!(
            got, want,
            "seed {s}, threshold {threshold}, guard {guard}, above {above}"
        );
    }
}
