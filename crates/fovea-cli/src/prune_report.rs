//! `--prune-stats` (a per-layer table) and `--prune-map` (a layers x steps heat map PNG)
//! for a generation's [`PruneReport`].

use std::fmt::Write;
use std::path::Path;

use fovea_pipeline::{AttentionKind, PruneReport, PruneStats};

/// Per layer: (applying steps, heads pruned summed over them, heads summed).
fn per_layer(stats: &PruneStats) -> Vec<(usize, u64, u64)> {
    let mut out = vec![(0usize, 0u64, 0u64); stats.layers.len()];
    for &(_, layer, active, all) in &stats.entries {
        let e = &mut out[layer];
        e.0 += 1;
        e.1 += (all - active) as u64;
        e.2 += all as u64;
    }
    out
}

/// The table `--prune-stats` prints.
pub fn table(report: &PruneReport) -> String {
    let stats = &report.stats;
    let mut s = String::new();
    let words = if report.detail_words.is_empty() {
        "none".to_string()
    } else {
        report.detail_words.join(", ")
    };
    let _ = writeln!(
        s,
        "pruning: threshold {:.3} (detail words: {words}); attention FLOPs skipped {:.1}% over {} forwards",
        report.threshold,
        100.0 * stats.skipped_share(),
        stats.forwards
    );
    if stats.probe_flops > 0.0 {
        let _ = writeln!(
            s,
            "  in-step probe cost: {:.1}% of the unpruned attention FLOPs (net saving {:.1}%)",
            100.0 * stats.probe_share(),
            100.0 * (stats.skipped_share() - stats.probe_share())
        );
    }
    for (k, (t, ts)) in report.tiles.iter().enumerate() {
        let _ = writeln!(
            s,
            "  tile {k}: latent {}x{} at ({}, {}): {:.1}% skipped",
            t.h,
            t.w,
            t.y0,
            t.x0,
            100.0 * ts.skipped_share()
        );
    }
    let _ = writeln!(
        s,
        "{:>5}  {:<5}  {:>11}  {:>7}  {:>10}  {:>12}",
        "layer", "kind", "q x k", "heads", "pruned", "GFLOP saved"
    );
    for (l, (_, pruned, all)) in stats.layers.iter().zip(per_layer(stats)) {
        let share = if all > 0 {
            pruned as f64 / all as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "{:>5}  {:<5}  {:>11}  {:>7}  {:>9.1}%  {:>12.4}",
            l.index,
            match l.kind {
                AttentionKind::SelfAttention => "self",
                AttentionKind::CrossAttention => "cross",
            },
            format!("{}x{}", l.n_q, l.n_k),
            format!("{}x{}", l.batch, l.heads),
            100.0 * share,
            l.flops_per_head() * pruned as f64 / 1e9,
        );
    }
    s
}

/// Colour of a pruned share in [0, 1]: dark blue (nothing pruned) through teal to
/// yellow (everything pruned).
fn colour(share: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 3] = [
        [30.0, 30.0, 90.0],
        [30.0, 150.0, 140.0],
        [250.0, 230.0, 40.0],
    ];
    let x = share.clamp(0.0, 1.0) * 2.0;
    let (i, t) = if x >= 2.0 {
        (1, 1.0)
    } else {
        (x as usize, x.fract())
    };
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * t).round() as u8;
    }
    c
}

/// Writes the heat map: one row per attention layer (forward order, top to bottom),
/// one column per step; the colour is the share of that layer's heads pruned at that
/// step; grey columns are the measuring steps (every head computed). A tiled run draws
/// one such panel per tile, left to right in tile order.
pub fn heat_map(report: &PruneReport, path: &Path) -> Result<(), String> {
    const CELL: usize = 12;
    const GAP: usize = 6;
    let panels: Vec<&PruneStats> = if report.tiles.is_empty() {
        vec![&report.stats]
    } else {
        report.tiles.iter().map(|(_, s)| s).collect()
    };
    let rows = report.stats.layers.len().max(1);
    let cols = panels.iter().map(|s| s.forwards).max().unwrap_or(1).max(1);
    let panel_w = cols * CELL;
    let (w, h) = (panels.len() * (panel_w + GAP) - GAP, rows * CELL);
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    for (k, stats) in panels.iter().enumerate() {
        let left = k * (panel_w + GAP);
        let mut cells = vec![None; rows * cols];
        for &(step, layer, active, all) in &stats.entries {
            if step < cols && layer < rows && all > 0 {
                cells[layer * cols + step] = Some((all - active) as f64 / all as f64);
            }
        }
        for (i, cell) in cells.iter().enumerate() {
            let c = cell.map_or([128, 128, 128], colour);
            let (layer, step) = (i / cols, i % cols);
            for y in layer * CELL..(layer + 1) * CELL - 1 {
                for x in step * CELL..(step + 1) * CELL - 1 {
                    img.put_pixel((left + x) as u32, y as u32, image::Rgb(c));
                }
            }
        }
    }
    img.save(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_blue_to_yellow() {
        assert_eq!(colour(0.0), [30, 30, 90]);
        assert_eq!(colour(1.0), [250, 230, 40]);
        assert_eq!(colour(0.5), [30, 150, 140]);
    }
}
