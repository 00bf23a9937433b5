//! The JavaScript-facing parameter and result shapes (camelCase objects), converted to
//! and from the pipeline's types. Target-independent, so native tests cover them.

use fovea_pipeline::{
    AttentionKind, GenerateParams, Image, PrunePolicy, PruneReport, SchedulerKind, SkipMode,
};
use serde::{Deserialize, Serialize};

/// `engine.generate(params)`: every field optional; unknown fields are an error, so a
/// typo in the page does not silently fall back to a default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WebParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<usize>,
    pub cfg: Option<f32>,
    pub seed: Option<f64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub scheduler: Option<String>,
    pub clip_skip: usize,
    pub strength: Option<f64>,
    pub vae_tile: Option<usize>,
    pub taesd: bool,
    pub tile_size: Option<usize>,
    pub prune: WebPrune,
}

/// `params.prune`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WebPrune {
    pub enabled: bool,
    pub threshold: f32,
    /// `"cached"`, `"zero"` or `"mean"`.
    pub skip: String,
    /// Prune heads above this normalised entropy too (1: none).
    pub above: f32,
    pub refresh: usize,
    pub cross_attention: bool,
    pub guard: f32,
    pub probe_steps: usize,
    pub probe_stride: usize,
    pub detail_words: Option<Vec<String>>,
}

impl Default for WebPrune {
    fn default() -> Self {
        let p = PrunePolicy::default();
        WebPrune {
            enabled: p.enabled,
            threshold: p.threshold,
            skip: p.skip.to_string(),
            above: p.above,
            refresh: p.refresh,
            cross_attention: p.cross_attention,
            guard: p.guard,
            probe_steps: p.probe_steps,
            probe_stride: p.probe_stride,
            detail_words: None,
        }
    }
}

impl WebParams {
    /// The pipeline's parameters; `native` is the model's native size (the default
    /// width and height). Errors name the parameter.
    pub fn to_generate(&self, native: usize) -> Result<GenerateParams, String> {
        let d = GenerateParams::default();
        let seed = match self.seed {
            None => 0,
            Some(s) if s.is_finite() && s >= 0.0 && s.fract() == 0.0 && s <= 9.007e15 => s as u64,
            Some(s) => return Err(format!("`seed` = {s} is invalid: a whole number >= 0")),
        };
        let mut prune = PrunePolicy {
            enabled: self.prune.enabled,
            threshold: self.prune.threshold,
            skip: SkipMode::parse(&self.prune.skip).map_err(|e| e.to_string())?,
            above: self.prune.above,
            refresh: self.prune.refresh,
            cross_attention: self.prune.cross_attention,
            guard: self.prune.guard,
            probe_steps: self.prune.probe_steps,
            probe_stride: self.prune.probe_stride,
            ..Default::default()
        };
        if let Some(words) = &self.prune.detail_words {
            prune.detail_words = words.clone();
        }
        Ok(GenerateParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps.unwrap_or(d.steps),
            cfg: self.cfg.unwrap_or(d.cfg),
            seed,
            width: self.width.unwrap_or(native),
            height: self.height.unwrap_or(native),
            scheduler: self
                .scheduler
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(SchedulerKind::parse)
                .transpose()
                .map_err(|e| e.to_string())?,
            clip_skip: self.clip_skip,
            strength: self.strength.unwrap_or(d.strength),
            vae_tile: self.vae_tile,
            taesd: self.taesd,
            prune,
            tile_size: self.tile_size,
        })
    }
}

/// Stage times of one image, in milliseconds.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebTimings {
    pub text_ms: f64,
    pub denoise_ms: f64,
    pub decode_ms: f64,
    pub steps: usize,
    pub decode_tiles: usize,
}

/// One attention layer in the pruning statistics.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebLayer {
    pub index: usize,
    /// `"self"` or `"cross"`.
    pub kind: &'static str,
    pub batch: usize,
    pub heads: usize,
    pub n_q: usize,
    pub n_k: usize,
    pub head_dim: usize,
}

/// What pruning did, for the page's figures and heat map.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebPruneReport {
    pub threshold: f32,
    pub detail_words: Vec<String>,
    /// Share of attention FLOPs skipped, in [0, 1].
    pub skipped_share: f64,
    pub flops_total: f64,
    pub flops_skipped: f64,
    /// The in-step probes' FLOPs (turbo runs).
    pub probe_flops: f64,
    pub forwards: usize,
    pub layers: Vec<WebLayer>,
    /// `[step, layer, activeHeads, heads]` per applying forward of a layer (all tiles).
    pub entries: Vec<[usize; 4]>,
    /// Per tile when tiled: `{y0, x0, h, w}` in latent pixels, skipped share, entries.
    pub tiles: Vec<WebTile>,
}

/// One denoising tile's pruning.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebTile {
    pub y0: usize,
    pub x0: usize,
    pub h: usize,
    pub w: usize,
    pub skipped_share: f64,
    pub entries: Vec<[usize; 4]>,
}

/// Everything about a generated image except its pixels.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSummary {
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub timings: WebTimings,
    pub prune: Option<WebPruneReport>,
}

impl WebSummary {
    pub fn new(image: &Image, seed: u64) -> WebSummary {
        let t = image.timings;
        WebSummary {
            width: image.width,
            height: image.height,
            seed,
            timings: WebTimings {
                text_ms: t.text_ms,
                denoise_ms: t.denoise_ms,
                decode_ms: t.decode_ms,
                steps: t.steps,
                decode_tiles: t.decode_tiles,
            },
            prune: image.prune.as_ref().map(prune_report),
        }
    }
}

fn prune_report(r: &PruneReport) -> WebPruneReport {
    let s = &r.stats;
    let (flops_total, flops_skipped) = s.flops();
    WebPruneReport {
        threshold: r.threshold,
        detail_words: r.detail_words.clone(),
        skipped_share: s.skipped_share(),
        flops_total,
        flops_skipped,
        probe_flops: s.probe_flops,
        forwards: s.forwards,
        layers: s
            .layers
            .iter()
            .map(|l| WebLayer {
                index: l.index,
                kind: match l.kind {
                    AttentionKind::SelfAttention => "self",
                    AttentionKind::CrossAttention => "cross",
                },
                batch: l.batch,
                heads: l.heads,
                n_q: l.n_q,
                n_k: l.n_k,
                head_dim: l.head_dim,
            })
            .collect(),
        entries: entries(s),
        tiles: r
            .tiles
            .iter()
            .map(|(t, ts)| WebTile {
                y0: t.y0,
                x0: t.x0,
                h: t.h,
                w: t.w,
                skipped_share: ts.skipped_share(),
                entries: entries(ts),
            })
            .collect(),
    }
}

fn entries(s: &fovea_pipeline::PruneStats) -> Vec<[usize; 4]> {
    s.entries
        .iter()
        .map(|&(step, layer, active, all)| [step, layer, active as usize, all as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<WebParams, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn page_parameters_map_to_the_pipeline() {
        let p = parse(
            r#"{"prompt": "a cat", "steps": 8, "seed": 42, "scheduler": "euler_a",
                "prune": {"enabled": true, "threshold": 0.2, "skip": "zero"}}"#,
        )
        .unwrap()
        .to_generate(128)
        .unwrap();
        assert_eq!((p.steps, p.seed, p.width, p.height), (8, 42, 128, 128));
        assert_eq!(p.scheduler, Some(SchedulerKind::EulerAncestral));
        assert!(p.prune.enabled && p.prune.skip == SkipMode::Zero && p.prune.threshold == 0.2);
        let d = parse("{}").unwrap().to_generate(64).unwrap();
        assert_eq!((d.steps, d.cfg, d.width), (20, 7.5, 64));
    }

    #[test]
    fn bad_page_parameters_are_named() {
        assert!(parse(r#"{"promt": "typo"}"#).unwrap_err().contains("promt"));
        for (json, needle) in [
            (r#"{"seed": -1}"#, "`seed` = -1"),
            (r#"{"seed": 1.5}"#, "`seed` = 1.5"),
            (r#"{"scheduler": "heun"}"#, "heun"),
            (r#"{"prune": {"skip": "maybe"}}"#, "`prune_skip` = maybe"),
        ] {
            let e = parse(json).unwrap().to_generate(64).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
