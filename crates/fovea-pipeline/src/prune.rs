//! The attention-pruning policy: one config struct for the CLI, the web page and the
//! pipeline, turned into per-generation thresholds on the host (no readback).
//!
//! The rule: a head is pruned for this input when the normalised entropy of its
//! attention (mean over query rows of H(row) / ln(keys), in [0, 1]) is **below** the
//! effective threshold. Low entropy means attention collapsed onto a few keys (on plain
//! regions, mostly the query's own neighbourhood), which the published method found to
//! carry little for the image. Threshold 0 prunes nothing; higher prunes more.
//!
//! **Where the entropies come from**: with more than [`PrunePolicy::probe_steps`]
//! steps, the first step (and every `refresh` steps) runs every head and measures them
//! for the following steps. Turbo models (1-4 steps) have no earlier step to learn
//! from, so each attention layer first runs a probe over every `probe_stride`-th query
//! row (1/stride of the layer's attention work, reported as the probe cost), decides
//! from it, and runs the pruned attention in the same step.
//!
//! **Pattern guard**: a head is kept, whatever its mean entropy, when the spread of its
//! rows' entropies over the image exceeds [`PrunePolicy::guard`]: periodic content
//! (stripes, grids, checkerboards) has low-entropy rows on the pattern and
//! high-entropy rows between, the published method's failure case.
//!
//! The effective threshold is `threshold x detail x cfg`:
//! - **prompt gating**: when the prompt contains a detail word (case-insensitive, whole
//!   words for Latin-script entries and substrings for Chinese ones;
//!   [`DEFAULT_DETAIL_WORDS`] in English and Chinese, configurable), `detail`
//!   is [`PrunePolicy::detail_factor`] (0.5 by default), else 1;
//! - **CFG-adaptive**: `cfg = 1 / (1 + cfg_slope * max(0, guidance - cfg_reference))`,
//!   so guidance above the reference (7.5) relaxes pruning smoothly and monotonically
//!   (at 12: x0.69 with the default slope 0.1).

use std::fmt;

use fovea_gpu::SkippedOutput;

use crate::sd::PipelineError;

/// Detail words that make pruning gentler (matched case-insensitively; Latin-script words
/// as whole words, so "hd" does not match "shd").
pub const DEFAULT_DETAIL_WORDS: &[&str] = &[
    "highly detailed",
    "detailed",
    "intricate",
    "sharp",
    "texture",
    "4k",
    "8k",
    "hd",
    "uhd",
    "fine details",
    "高清",
    "细节丰富",
    "细节",
    "纹理清晰",
    "纹理",
    "精细",
];

/// What a pruned head outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipMode {
    /// Zeros, as published.
    Zero,
    /// That head's output from the last step it was computed (cached).
    Cached,
    /// The mean of the head's values (what uniform attention outputs): cheap and close
    /// for near-uniform heads (pair with `PrunePolicy::above`).
    Mean,
}

impl SkipMode {
    /// `zero`, `cached` or `mean`.
    pub fn parse(s: &str) -> Result<SkipMode, PipelineError> {
        match s.to_ascii_lowercase().as_str() {
            "zero" | "zeros" => Ok(SkipMode::Zero),
            "cached" | "cache" | "reuse" => Ok(SkipMode::Cached),
            "mean" | "mean-of-values" | "mean_of_values" => Ok(SkipMode::Mean),
            _ => Err(PipelineError::Param {
                param: "prune_skip",
                value: s.into(),
                expected: "`zero`, `cached` or `mean`".into(),
            }),
        }
    }

    pub(crate) fn gpu(self) -> SkippedOutput {
        match self {
            SkipMode::Zero => SkippedOutput::Zero,
            SkipMode::Cached => SkippedOutput::Keep,
            SkipMode::Mean => SkippedOutput::Mean,
        }
    }
}

impl fmt::Display for SkipMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipMode::Zero => "zero",
            SkipMode::Cached => "cached",
            SkipMode::Mean => "mean",
        })
    }
}

/// How attention heads are pruned during a generation.
#[derive(Clone, Debug, PartialEq)]
pub struct PrunePolicy {
    /// Off: every head is computed.
    pub enabled: bool,
    /// Normalised-entropy threshold in [0, 1]; heads below the effective threshold are
    /// pruned.
    pub threshold: f32,
    /// Prune cross-attention heads too (self-attention always takes part).
    pub cross_attention: bool,
    /// Pattern guard: a head whose entropy spread over the query rows (standard
    /// deviation, in [0, 0.5]) exceeds this is kept whatever its mean: it attends
    /// sharply in some regions and broadly in others, as heads serving stripes, grids
    /// and object edges do. 0.5 turns the guard off.
    pub guard: f32,
    /// What pruned heads output.
    pub skip: SkipMode,
    /// Heads whose normalised entropy is above this are pruned too (near-uniform
    /// attention; best with `SkipMode::Mean`); 1 (the default) prunes none from above.
    /// Detail words and strong guidance narrow this band as they lower `threshold`.
    pub above: f32,
    /// Re-measure every head's entropy (a full forward) every this many steps; 0 measures
    /// only on the first step.
    pub refresh: usize,
    /// Runs of at most this many steps (turbo models) probe in-step instead: each layer
    /// measures its heads on every `probe_stride`-th query row, then prunes in the same
    /// step.
    pub probe_steps: usize,
    /// Query-row stride of the in-step probe (>= 2).
    pub probe_stride: usize,
    /// Words that make pruning gentler.
    pub detail_words: Vec<String>,
    /// Threshold factor when a detail word is present, in [0, 1].
    pub detail_factor: f32,
    /// Guidance scale above which pruning relaxes.
    pub cfg_reference: f32,
    /// How fast it relaxes above the reference (>= 0).
    pub cfg_slope: f32,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            enabled: false,
            threshold: 0.3,
            cross_attention: true,
            guard: 0.2,
            skip: SkipMode::Cached,
            above: 1.0,
            refresh: 5,
            probe_steps: 4,
            probe_stride: 4,
            detail_words: DEFAULT_DETAIL_WORDS.iter().map(|w| w.to_string()).collect(),
            detail_factor: 0.5,
            cfg_reference: 7.5,
            cfg_slope: 0.1,
        }
    }
}

/// Whether `word` occurs in `text`; words starting/ending with an ASCII letter or digit
/// must not touch another one there (whole words); others match as substrings.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric();
    let (first, last) = (word.chars().next(), word.chars().next_back());
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let joined_before = first.is_some_and(is_word) && before.is_some_and(is_word);
        let joined_after = last.is_some_and(is_word) && after.is_some_and(is_word);
        !joined_before && !joined_after
    })
}

fn bad(param: &'static str, value: impl fmt::Display, expected: &str) -> PipelineError {
    PipelineError::Param {
        param,
        value: value.to_string(),
        expected: expected.into(),
    }
}

impl PrunePolicy {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), PipelineError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(bad("prune_threshold", self.threshold, "a number in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.above) {
            return Err(bad(
                "prune_above",
                self.above,
                "a number in [0, 1] (1: off)",
            ));
        }
        if self.probe_stride < 2 {
            return Err(bad("prune_probe_stride", self.probe_stride, "at least 2"));
        }
        if !(0.0..=0.5).contains(&self.guard) {
            return Err(bad(
                "prune_guard",
                self.guard,
                "a number in [0, 0.5] (0.5: off)",
            ));
        }
        if !(0.0..=1.0).contains(&self.detail_factor) {
            return Err(bad(
                "prune_detail_factor",
                self.detail_factor,
                "a number in [0, 1]",
            ));
        }
        if !self.cfg_reference.is_finite() || self.cfg_reference < 0.0 {
            return Err(bad(
                "prune_cfg_reference",
                self.cfg_reference,
                "a finite number >= 0",
            ));
        }
        if !self.cfg_slope.is_finite() || self.cfg_slope < 0.0 {
            return Err(bad(
                "prune_cfg_slope",
                self.cfg_slope,
                "a finite number >= 0",
            ));
        }
        Ok(())
    }

    /// The detail words found in `prompt`.
    pub fn detail_hits(&self, prompt: &str) -> Vec<&str> {
        let lower = prompt.to_lowercase();
        self.detail_words
            .iter()
            .filter(|w| !w.is_empty() && contains_word(&lower, &w.to_lowercase()))
            .map(String::as_str)
            .collect()
    }

    /// The CFG factor of the threshold at guidance scale `cfg`, in (0, 1].
    pub fn cfg_factor(&self, cfg: f32) -> f32 {
        1.0 / (1.0 + self.cfg_slope * (cfg - self.cfg_reference).max(0.0))
    }

    /// How much this prompt and guidance scale soften pruning, in (0, 1]: the detail
    /// factor when the prompt has a detail word, times the CFG factor.
    fn softening(&self, prompt: &str, cfg: f32) -> f32 {
        let detail = if self.detail_hits(prompt).is_empty() {
            1.0
        } else {
            self.detail_factor
        };
        detail * self.cfg_factor(cfg)
    }

    /// The threshold used for this prompt and guidance scale (0 when disabled).
    pub fn effective_threshold(&self, prompt: &str, cfg: f32) -> f32 {
        if !self.enabled {
            return 0.0;
        }
        self.threshold * self.softening(prompt, cfg)
    }

    /// The "prune above" threshold for this prompt and guidance scale (1 = none when
    /// disabled): the band (above, 1] shrinks by the same factors as `threshold`.
    pub fn effective_above(&self, prompt: &str, cfg: f32) -> f32 {
        if !self.enabled {
            return 1.0;
        }
        1.0 - (1.0 - self.above) * self.softening(prompt, cfg)
    }

    /// The in-step probe's stride for a run of `steps` steps (0: no probe; measure on
    /// earlier steps instead).
    pub fn probe_for(&self, steps: usize) -> usize {
        if steps <= self.probe_steps {
            self.probe_stride
        } else {
            0
        }
    }

    /// Whether run step `k` (0-based within the run) measures entropies with every head.
    pub fn measures(&self, k: usize) -> bool {
        k == 0 || (self.refresh > 0 && k.is_multiple_of(self.refresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_from_above_narrows_with_detail_words_and_guidance() {
        let p = PrunePolicy {
            enabled: true,
            above: 0.9,
            ..Default::default()
        };
        assert!((p.effective_above("a red apple", 7.5) - 0.9).abs() < 1e-6);
        // Detail words halve the band (0.9..1 -> 0.95..1), like the threshold.
        assert!((p.effective_above("a highly detailed red apple", 7.5) - 0.95).abs() < 1e-6);
        // Strong guidance narrows it too, monotonically.
        let (a, b) = (p.effective_above("x", 10.0), p.effective_above("x", 15.0));
        assert!(0.9 < a && a < b && b < 1.0, "{a} {b}");
        let off = PrunePolicy {
            enabled: false,
            ..p.clone()
        };
        assert_eq!(off.effective_above("x", 7.5), 1.0);
        let bad = PrunePolicy { above: 1.5, ..p };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("prune_above")
        );
    }

    #[test]
    fn detail_words_and_guidance_relax_the_threshold() {
        let p = PrunePolicy {
            enabled: true,
            ..Default::default()
        };
        let plain = p.effective_threshold("a red apple on a blue sky", 7.5);
        assert_eq!(plain, 0.3);
        assert_eq!(
            p.effective_threshold("a Highly Detailed red apple", 7.5),
            0.15
        );
        assert_eq!(p.effective_threshold("一个苹果，高清", 7.5), 0.15);
        assert_eq!(p.effective_threshold("纹理清晰的条纹", 7.5), 0.15);
        assert_eq!(p.effective_threshold("a 4k photo, sharp", 7.5), 0.15);
        // Whole words only for Latin script: "shd" and "sharpei" are not detail words.
        assert_eq!(p.effective_threshold("shd sharpei", 7.5), 0.3);
        let mut last = f32::INFINITY;
        for cfg in [1.0, 5.0, 7.5, 9.0, 12.0, 20.0] {
            let t = p.effective_threshold("a red apple", cfg);
            assert!(t <= last, "not monotonic at cfg {cfg}");
            last = t;
        }
        assert!(p.effective_threshold("a red apple", 12.0) < plain);
        let off = PrunePolicy::default();
        assert_eq!(off.effective_threshold("a red apple", 7.5), 0.0);
    }

    #[test]
    fn invalid_policies_are_named() {
        for (p, needle) in [
            (
                PrunePolicy {
                    threshold: 1.5,
                    ..Default::default()
                },
                "`prune_threshold` = 1.5",
            ),
            (
                PrunePolicy {
                    threshold: f32::NAN,
                    ..Default::default()
                },
                "`prune_threshold` = NaN",
            ),
            (
                PrunePolicy {
                    detail_factor: -0.1,
                    ..Default::default()
                },
                "prune_detail_factor",
            ),
            (
                PrunePolicy {
                    cfg_slope: f32::INFINITY,
                    ..Default::default()
                },
                "prune_cfg_slope",
            ),
        ] {
            assert!(
                p.validate().unwrap_err().to_string().contains(needle),
                "{needle}"
            );
        }
        let e = SkipMode::parse("sometimes").unwrap_err();
        assert!(e.to_string().contains("`prune_skip` = sometimes"), "{e}");
        assert_eq!(SkipMode::parse("Zero").unwrap(), SkipMode::Zero);
    }

    #[test]
    fn measuring_steps_follow_the_refresh_interval() {
        let p = PrunePolicy {
            refresh: 3,
            ..Default::default()
        };
        let m: Vec<usize> = (0..8).filter(|&k| p.measures(k)).collect();
        assert_eq!(m, [0, 3, 6]);
        let once = PrunePolicy {
            refresh: 0,
            ..Default::default()
        };
        assert_eq!((0..8).filter(|&k| once.measures(k)).count(), 1);
    }
}
