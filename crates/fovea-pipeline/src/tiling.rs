//! Overlapping tiles and their seamless blending, for VAE decode/encode of images larger
//! than one pass can hold (and, later, tiled denoising). Tiles are cut on the host from
//! channel-first planes, processed one at a time on the GPU, and blended back with
//! weights that ramp linearly across each overlap, so neighbouring tiles cross-fade
//! instead of meeting at a seam. Every pixel has a positive total weight (ramps start
//! at half a step), so the normalisation never divides by zero.

/// Start offsets of tiles of `tile` along an axis of `len`, neighbours sharing at least
/// `overlap`; the last tile ends exactly at `len`. One tile when `len <= tile`.
pub fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts = Vec::new();
    let mut s = 0;
    while s + tile < len {
        starts.push(s);
        s += stride;
    }
    starts.push(len - tile);
    starts.dedup();
    starts
}

/// One tile's rectangle: rows y0..y0+h, columns x0..x0+w.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// First row.
    pub y0: usize,
    /// First column.
    pub x0: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl Tile {
    /// The same rectangle `factor` times larger (latent -> pixel coordinates).
    pub fn scaled(self, factor: usize) -> Tile {
        Tile {
            y0: self.y0 * factor,
            x0: self.x0 * factor,
            h: self.h * factor,
            w: self.w * factor,
        }
    }
}

/// The tiles covering a (height, width) plane with tiles of at most `tile` a side.
pub fn tiles(height: usize, width: usize, tile: usize, overlap: usize) -> Vec<Tile> {
    let (th, tw) = (tile.min(height), tile.min(width));
    let mut out = Vec::new();
    for &y0 in &tile_starts(height, tile, overlap) {
        for &x0 in &tile_starts(width, tile, overlap) {
            out.push(Tile {
                y0,
                x0,
                h: th,
                w: tw,
            });
        }
    }
    out
}

/// The (channels, tile.h, tile.w) block of a (channels, height, width) plane.
pub fn crop(src: &[f32], channels: usize, height: usize, width: usize, t: Tile) -> Vec<f32> {
    debug_assert_eq!(src.len(), channels * height * width);
    let mut out = Vec::with_capacity(channels * t.h * t.w);
    for c in 0..channels {
        for y in t.y0..t.y0 + t.h {
            let row = (c * height + y) * width;
            out.extend_from_slice(&src[row + t.x0..row + t.x0 + t.w]);
        }
    }
    out
}

/// Weighted accumulation of overlapping tiles into one (channels, height, width) plane.
pub struct Blender {
    channels: usize,
    height: usize,
    width: usize,
    ramp: usize,
    acc: Vec<f32>,
    weight: Vec<f32>,
}

/// Weight of index `i` of a tile of `size` starting at `start` on an axis of `len`:
/// a linear ramp of `ramp` steps on each side that meets another tile, 1 elsewhere.
fn axis_weight(i: usize, start: usize, size: usize, len: usize, ramp: usize) -> f32 {
    let mut w = 1.0f32;
    if ramp > 0 {
        if start > 0 && i < ramp {
            w = w.min((i as f32 + 0.5) / ramp as f32);
        }
        let from_end = size - 1 - i;
        if start + size < len && from_end < ramp {
            w = w.min((from_end as f32 + 0.5) / ramp as f32);
        }
    }
    w
}

impl Blender {
    /// An empty plane; tiles cross-fade over `ramp` pixels at their inner edges.
    pub fn new(channels: usize, height: usize, width: usize, ramp: usize) -> Blender {
        Blender {
            channels,
            height,
            width,
            ramp,
            acc: vec![0.0; channels * height * width],
            weight: vec![0.0; height * width],
        }
    }

    /// Adds a (channels, t.h, t.w) tile at its place.
    pub fn add(&mut self, tile: &[f32], t: Tile) {
        debug_assert_eq!(tile.len(), self.channels * t.h * t.w);
        let plane = self.height * self.width;
        for y in 0..t.h {
            let wy = axis_weight(y, t.y0, t.h, self.height, self.ramp);
            for x in 0..t.w {
                let w = wy * axis_weight(x, t.x0, t.w, self.width, self.ramp);
                let p = (t.y0 + y) * self.width + t.x0 + x;
                self.weight[p] += w;
                for c in 0..self.channels {
                    self.acc[c * plane + p] += w * tile[(c * t.h + y) * t.w + x];
                }
            }
        }
    }

    /// The blended plane.
    pub fn finish(mut self) -> Vec<f32> {
        let plane = self.height * self.width;
        for c in 0..self.channels {
            for p in 0..plane {
                self.acc[c * plane + p] /= self.weight[p];
            }
        }
        self.acc
    }
}

/// Per-tile weight maps (t.h x t.w each, row-major) that cross-fade over `ramp` at
/// inner edges and sum to exactly 1 at every pixel of the (height, width) plane: tile
/// results multiplied by these and added up blend seamlessly with no division after.
pub fn normalized_weights(
    tiles: &[Tile],
    height: usize,
    width: usize,
    ramp: usize,
) -> Vec<Vec<f32>> {
    let raw: Vec<Vec<f32>> = tiles
        .iter()
        .map(|t| {
            let mut w = Vec::with_capacity(t.h * t.w);
            for y in 0..t.h {
                let wy = axis_weight(y, t.y0, t.h, height, ramp);
                for x in 0..t.w {
                    w.push(wy * axis_weight(x, t.x0, t.w, width, ramp));
                }
            }
            w
        })
        .collect();
    let mut total = vec![0.0f32; height * width];
    for (t, w) in tiles.iter().zip(&raw) {
        for y in 0..t.h {
            for x in 0..t.w {
                total[(t.y0 + y) * width + t.x0 + x] += w[y * t.w + x];
            }
        }
    }
    tiles
        .iter()
        .zip(raw)
        .map(|(t, mut w)| {
            for y in 0..t.h {
                for x in 0..t.w {
                    w[y * t.w + x] /= total[(t.y0 + y) * width + t.x0 + x];
                }
            }
            w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_with_the_overlap() {
        assert_eq!(tile_starts(64, 64, 16), [0]);
        assert_eq!(tile_starts(40, 64, 16), [0]);
        assert_eq!(tile_starts(100, 32, 8), [0, 24, 48, 68]);
        for (len, tile, ov) in [(100, 32, 8), (65, 16, 4), (17, 16, 4), (300, 64, 16)] {
            let s = tile_starts(len, tile, ov);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().unwrap() + tile, len);
            for w in s.windows(2) {
                assert!(w[0] + tile >= w[1] + ov, "{len} {tile} {ov}: {s:?}");
            }
        }
    }

    #[test]
    fn normalized_weights_sum_to_one_everywhere() {
        let (h, w) = (40, 56);
        let ts = tiles(h, w, 16, 4);
        let ws = normalized_weights(&ts, h, w, 4);
        let mut total = vec![0.0f32; h * w];
        for (t, wt) in ts.iter().zip(&ws) {
            for y in 0..t.h {
                for x in 0..t.w {
                    total[(t.y0 + y) * w + t.x0 + x] += wt[y * t.w + x];
                }
            }
        }
        assert!(total.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn blending_a_smooth_plane_from_tiles_gives_it_back() {
        // Tiles cut from one plane blend back to exactly that plane.
        let (c, h, w) = (2, 37, 50);
        let src: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut b = Blender::new(c, h, w, 6);
        let ts = tiles(h, w, 16, 6);
        assert!(ts.len() > 6);
        for t in ts {
            b.add(&crop(&src, c, h, w, t), t);
        }
        let out = b.finish();
        for (a, b) in src.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
