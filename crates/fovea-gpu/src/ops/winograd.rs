//! Host side of the Winograd convolutions that the software class runs for 3x3,
//! stride-1, padding-1 convolutions: a weight transform (once per layer:
//! [`Batch::winograd_weights`]), an input transform, one matrix product per transformed
//! element on the matmul kernel and an output transform ([`Batch::conv2d_winograd`]).
//! Two tile sizes ([`WinogradTile`], shaders/winograd_cpu.wgsl's `TILE4`): F(4x4, 3x3)
//! (f32 transforms, 36 products) and F(2x2, 3x3) (transforms in the tensors' dtype, 16
//! products).

use bytemuck::{Pod, Zeroable};

use super::{Epilogue, MatmulOptions, float_dtype, key, op_err, u32_dim};
use crate::batch::{Batch, Bind, Workgroups};
use crate::error::{GpuError, Result};
use crate::tensor::{DType, Tensor, fmt_shape};

/// Elements of F(2x2, 3x3)'s 4x4 transformed tile: its matrix products per convolution.
pub const WINOGRAD_TILE_ELEMS: usize = 16;
/// Elements of F(4x4, 3x3)'s 6x6 transformed tile.
pub const WINOGRAD4_TILE_ELEMS: usize = 36;
/// The largest transformed weights (bytes) a layer takes F(4x4, 3x3) with: they are f32
/// and 4.5x F(2x2)'s f16 ones (16 MiB: up to 341 x 341 channels).
pub const WINOGRAD4_MAX_WEIGHT_BYTES: usize = 16 << 20;
/// The fewest F(4x4) tiles (over the batch) a convolution takes F(4x4) with. The tiles
/// are the columns of its products, 32 to a matmul workgroup: with fewer the lanes idle
/// (lavapipe, one thread, against F(2x2), batch 2 at 128 channels: 8x8 images, 8 tiles,
/// 2.5x the time; 16x16, 32 tiles, 1.05x; 32x32, 128 tiles, 0.70x; one 32x32 image of 64
/// channels, 64 tiles, 0.68x).
pub const WINOGRAD4_MIN_TILES: usize = 64;
/// The fewest input and output channels a convolution takes F(2x2) with (lavapipe, one
/// thread, against the direct convolution: 1.10x the time at 32 channels (256x256),
/// 0.67-0.85x at 64-128 channels).
pub const WINOGRAD2_MIN_CHANNELS: usize = 64;
/// The most elements the transformed input, and the transformed output, of one run of
/// tiles holds (large images are transformed and multiplied a run at a time).
pub const WINOGRAD_RUN_ELEMS: usize = 1 << 20;
/// The batch scratch slots of the transformed input and output.
const SCRATCH_INPUT: usize = 0;
const SCRATCH_OUTPUT: usize = 1;
/// Invocations per workgroup of the transform kernels.
const TRANSFORM_WORKGROUP: usize = 64;

/// A Winograd convolution's output tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 16 products; transforms stored in the tensors' dtype.
    F2,
    /// F(4x4, 3x3): 36 products, 2.25 multiplies per output and channel pair against
    /// F2's 4; its transforms amplify rounding, so they are f32 whatever the tensors'
    /// dtype (see winograd_cpu.wgsl).
    F4,
}

impl WinogradTile {
    /// The tile for a convolution of `c_in` -> `c_out` channels over `n` images of
    /// `h` x `w`, where a binding holds at most `max_binding_bytes`: F4 where its tiles
    /// fill the products' columns ([`WINOGRAD4_MIN_TILES`]) and its f32 weights pass
    /// neither that nor [`WINOGRAD4_MAX_WEIGHT_BYTES`]; else F2 from
    /// [`WINOGRAD2_MIN_CHANNELS`] channels; else none (the direct convolution is faster).
    pub fn for_conv(
        c_in: usize,
        c_out: usize,
        [n, h, w]: [usize; 3],
        max_binding_bytes: usize,
    ) -> Option<WinogradTile> {
        let bytes = WINOGRAD4_TILE_ELEMS * c_in * c_out * DType::F32.size_bytes();
        let tiles = n * h.div_ceil(4) * w.div_ceil(4);
        if tiles >= WINOGRAD4_MIN_TILES
            && bytes <= WINOGRAD4_MAX_WEIGHT_BYTES.min(max_binding_bytes)
        {
            Some(WinogradTile::F4)
        } else if c_in.min(c_out) >= WINOGRAD2_MIN_CHANNELS {
            Some(WinogradTile::F2)
        } else {
            None
        }
    }

    /// Output side of a tile.
    fn side(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }

    /// Elements of a transformed tile: the matrix products per convolution.
    pub fn elems(self) -> usize {
        match self {
            WinogradTile::F2 => WINOGRAD_TILE_ELEMS,
            WinogradTile::F4 => WINOGRAD4_TILE_ELEMS,
        }
    }

    /// The dtype of the transformed weights, input and products for tensors of `dtype`.
    fn transformed(self, dtype: DType) -> DType {
        match self {
            WinogradTile::F2 => dtype,
            WinogradTile::F4 => DType::F32,
        }
    }

    /// The value of winograd_cpu.wgsl's `TILE4` define.
    fn define(self) -> u32 {
        (self == WinogradTile::F4) as u32
    }

    /// Whether an input or output invocation takes two neighbouring tiles of a row, at
    /// width `w`: every row of tiles holds an even count and starts on a pair.
    fn pairs(self, w: usize) -> bool {
        w.is_multiple_of(2 * self.side())
    }

    /// The bindings of the transformed input (written by the input transform) and of
    /// the products (read by the output transform).
    fn transformed_bindings(self) -> (u32, u32) {
        match self {
            WinogradTile::F2 => (3, 1),
            WinogradTile::F4 => (8, 9),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct WinogradParams {
    batch: u32,
    channels: u32,
    h: u32,
    w: u32,
    tiles_h: u32,
    tiles_w: u32,
    tiles: u32,
    tiles_padded: u32,
    c_in: u32,
    has_bias: u32,
    tile_base: u32,
    // winograd_output: 1 adds the residual, 2 the per-channel values (bits).
    adds: u32,
}

/// What a Winograd convolution adds to its output as it stores it
/// ([`Batch::conv2d_winograd_add`]).
#[derive(Clone, Copy, Default)]
pub struct ConvAdds<'a> {
    /// (N, C_out): one value per image and output channel (a resnet's time embedding).
    pub per_channel: Option<&'a Tensor>,
    /// (N, C_out, H, W): a skip connection.
    pub residual: Option<&'a Tensor>,
}

impl Batch {
    /// One dispatch of `entry` of `winograd_cpu.wgsl` for this tile (`PAIRS=pairs`).
    fn winograd_dispatch(
        &mut self,
        op: &'static str,
        (tile, dtype, entry, pairs): (WinogradTile, fovea_shaders::Dtype, &'static str, bool),
        params: &WinogradParams,
        bindings: &[(u32, Bind<'_>)],
        groups: [u32; 3],
    ) -> Result<()> {
        self.check_groups(op, &format!("{entry} workgroups"), groups)?;
        let d = self.gpu().dispatch(
            &key(
                "winograd_cpu",
                dtype,
                &[("TILE4", tile.define()), ("PAIRS", pairs as u32)],
                entry,
            )?,
            bytemuck::bytes_of(params),
            bindings,
            Workgroups::Direct(groups),
        )?;
        self.record(d);
        Ok(())
    }

    /// The Winograd tile for convolving x (N, C_in, H, W) with `weight`
    /// (C_out, C_in, kh, kw) at this stride and padding `[top, bottom, left, right]`:
    /// `None` unless the plan runs such a convolution as Winograd
    /// (`KernelPlan::winograd_conv`) and a tile pays at its size on this adapter
    /// ([`WinogradTile::for_conv`]), or for shapes that are not those.
    pub fn winograd_tile(
        &self,
        x: &Tensor,
        weight: &Tensor,
        stride: usize,
        padding: [usize; 4],
    ) -> Option<WinogradTile> {
        let ([n, _, h, w], [c_out, c_in, kh, kw]) = (x.shape(), weight.shape()) else {
            return None;
        };
        if !self
            .gpu()
            .kernel_plan()
            .winograd_conv(*c_in, *c_out, [*kh, *kw], stride, padding)
        {
            return None;
        }
        let max_binding = self.gpu().limits().max_storage_buffer_binding_size as usize;
        WinogradTile::for_conv(*c_in, *c_out, [*n, *h, *w], max_binding)
    }

    /// The Winograd transform U = G g G^T of 3x3 convolution weights g
    /// (C_out, C_in, 3, 3) for this tile (see [`Batch::winograd_tile`]): (16, C_out, C_in)
    /// in the weights' dtype for F2, (36, C_out, C_in) f32 for F4; what
    /// [`Batch::conv2d_winograd`] takes. Models compute it once per layer and keep it.
    pub fn winograd_weights(&mut self, weight: &Tensor, tile: WinogradTile) -> Result<Tensor> {
        const OP: &str = "winograd_weights";
        let dtype = float_dtype(OP, &[weight])?;
        let ws = weight.shape();
        if ws.len() != 4 || ws[2] != 3 || ws[3] != 3 {
            return Err(op_err(
                OP,
                format!(
                    "needs 3x3 convolution weights (C_out, C_in, 3, 3), got {}",
                    weight.describe()
                ),
            ));
        }
        let (c_out, c_in) = (ws[0], ws[1]);
        let u = self.gpu().empty(
            OP,
            &[tile.elems(), c_out, c_in],
            tile.transformed(weight.dtype()),
        )?;
        let params = WinogradParams {
            channels: u32_dim(OP, "C_out", c_out)?,
            c_in: u32_dim(OP, "C_in", c_in)?,
            ..Zeroable::zeroed()
        };
        let groups = [
            c_in.div_ceil(TRANSFORM_WORKGROUP) as u32,
            params.channels,
            1,
        ];
        self.winograd_dispatch(
            OP,
            (tile, dtype, "winograd_weights", false),
            &params,
            &[(4, Bind::Tensor(weight)), (5, Bind::Tensor(&u))],
            groups,
        )?;
        Ok(u)
    }

    /// 3x3 convolution with stride 1 and padding 1 of x (N, C_in, H, W), whose weights
    /// `u` come from [`Batch::winograd_weights`] (their first dimension, 16 or 36, is the
    /// tile: any tile serves any size), plus bias (C_out): (N, C_out, H, W), as [`Batch::conv2d`] gives.
    pub fn conv2d_winograd(
        &mut self,
        x: &Tensor,
        u: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.conv2d_winograd_in_runs(x, u, bias, ConvAdds::default(), WINOGRAD_RUN_ELEMS)
    }

    /// [`Batch::conv2d_winograd`] plus `adds`, added as the output is stored: a pass
    /// over it fewer than separate adds.
    pub fn conv2d_winograd_add(
        &mut self,
        x: &Tensor,
        u: &Tensor,
        bias: Option<&Tensor>,
        adds: ConvAdds<'_>,
    ) -> Result<Tensor> {
        self.conv2d_winograd_in_runs(x, u, bias, adds, WINOGRAD_RUN_ELEMS)
    }

    /// [`Batch::conv2d_winograd_add`] with at most `max_run_elems` elements in each run's
    /// transformed input and output (instead of [`WINOGRAD_RUN_ELEMS`]): tests split
    /// small images into several runs with it.
    pub fn conv2d_winograd_in_runs(
        &mut self,
        x: &Tensor,
        u: &Tensor,
        bias: Option<&Tensor>,
        adds: ConvAdds<'_>,
        max_run_elems: usize,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_winograd";
        let mut all = vec![x];
        all.extend(bias);
        all.extend(adds.per_channel);
        all.extend(adds.residual);
        let dtype = float_dtype(OP, &all)?;
        let (xs, us) = (x.shape(), u.shape());
        let tile = match us.first() {
            Some(&WINOGRAD_TILE_ELEMS) => Some(WinogradTile::F2),
            Some(&WINOGRAD4_TILE_ELEMS) => Some(WinogradTile::F4),
            _ => None,
        };
        let Some(tile) = tile.filter(|_| xs.len() == 4 && us.len() == 3 && us[2] == xs[1]) else {
            return Err(op_err(
                OP,
                format!(
                    "needs x (N, C_in, H, W) and Winograd weights (16 or 36, C_out, C_in), got {} and {}",
                    x.describe(),
                    u.describe()
                ),
            ));
        };
        let transformed = tile.transformed(x.dtype());
        if u.dtype() != transformed {
            return Err(GpuError::Dtype {
                op: OP,
                dtype: u.dtype(),
                reason: format!(
                    "Winograd weights {} for {} input must be {transformed} (from winograd_weights)",
                    u.describe(),
                    x.dtype()
                ),
            });
        }
        let (n, c_in, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let c_out = us[1];
        if let Some(bias) = bias
            && bias.len() != c_out
        {
            return Err(op_err(
                OP,
                format!(
                    "bias {} must have C_out = {c_out} elements",
                    bias.describe()
                ),
            ));
        }
        if let Some(t) = adds.per_channel
            && t.len() != n * c_out
        {
            return Err(op_err(
                OP,
                format!(
                    "per-channel add {} must have N x C_out = {n} x {c_out} elements",
                    t.describe()
                ),
            ));
        }
        if let Some(r) = adds.residual
            && r.shape() != [n, c_out, h, w]
        {
            return Err(op_err(
                OP,
                format!(
                    "residual {} must be the output's shape {}",
                    r.describe(),
                    fmt_shape(&[n, c_out, h, w])
                ),
            ));
        }
        let side = tile.side();
        let (tiles_h, tiles_w) = (h.div_ceil(side), w.div_ceil(side));
        let tiles = n * tiles_h * tiles_w;
        // Runs of at most `run` tiles per transform and product, so that the transformed
        // input and output (one value per transformed element, tile and channel) stay
        // within max_run_elems elements each and within the adapter's binding size (or
        // take four tiles); a multiple of 4 (the matmul's quads).
        let binding_elems =
            self.gpu().limits().max_storage_buffer_binding_size as usize / transformed.size_bytes();
        let per_tile = tile.elems() * c_in.max(c_out);
        let run = (max_run_elems.min(binding_elems) / per_tile / 4 * 4)
            .max(4)
            .min(tiles.next_multiple_of(4));
        // Two neighbouring tiles per invocation where every row holds an even count.
        let pairs = tile.pairs(w);
        let per_invocation = if pairs { 2 } else { 1 };
        let (v_binding, m_binding) = tile.transformed_bindings();
        let out_shape = [n, c_out, h, w];
        let y = self.gpu().empty(OP, &out_shape, x.dtype())?;
        let mut params = WinogradParams {
            batch: u32_dim(OP, "N", n)?,
            h: u32_dim(OP, "H", h)?,
            w: u32_dim(OP, "W", w)?,
            tiles_h: u32_dim(OP, "tiles", tiles_h)?,
            tiles_w: u32_dim(OP, "tiles", tiles_w)?,
            has_bias: bias.is_some() as u32,
            adds: adds.residual.is_some() as u32 | (adds.per_channel.is_some() as u32) << 1,
            ..Zeroable::zeroed()
        };
        u32_dim(OP, "tiles", tiles)?;
        u32_dim(OP, "output elements", y.len())?;
        for base in (0..tiles).step_by(run) {
            let count = run.min(tiles - base);
            // The matmul loads the tiles four at a time; the extra columns are zero.
            let padded = count.next_multiple_of(4);
            params.tile_base = base as u32;
            params.tiles = count as u32;
            params.tiles_padded = padded as u32;
            params.channels = u32_dim(OP, "C_in", c_in)?;
            // The transformed input and output are scratch: one pair of buffers serves
            // every run and every Winograd convolution of the batch.
            let v = self.scratch(
                SCRATCH_INPUT,
                OP,
                &[tile.elems(), c_in, padded],
                transformed,
            )?;
            let groups = [
                (padded / per_invocation).div_ceil(TRANSFORM_WORKGROUP) as u32,
                params.channels,
                1,
            ];
            self.winograd_dispatch(
                OP,
                (tile, dtype, "winograd_input", pairs),
                &params,
                &[(1, Bind::Tensor(x)), (v_binding, Bind::Tensor(&v))],
                groups,
            )?;
            let m = self.scratch(
                SCRATCH_OUTPUT,
                OP,
                &[tile.elems(), c_out, padded],
                transformed,
            )?;
            let m = self.matmul_to(
                u,
                &v,
                None,
                MatmulOptions::default(),
                Some(m),
                Epilogue::Store,
            )?;
            params.channels = u32_dim(OP, "C_out", c_out)?;
            let groups = [
                (count / per_invocation).div_ceil(TRANSFORM_WORKGROUP) as u32,
                params.channels,
                1,
            ];
            self.winograd_dispatch(
                OP,
                (tile, dtype, "winograd_output", pairs),
                &params,
                &[
                    (m_binding, Bind::Tensor(&m)),
                    (2, bias.map_or(Bind::Dummy, Bind::Tensor)),
                    (3, Bind::Tensor(&y)),
                    (6, adds.residual.map_or(Bind::Dummy, Bind::Tensor)),
                    (7, adds.per_channel.map_or(Bind::Dummy, Bind::Tensor)),
                ],
                groups,
            )?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_follows_tiles_weights_and_channels() {
        let big = 1 << 30;
        // 64 tiles of 4x4 (one 32x32 image) take F4; 32 (a 16x16 pair) F2 at 64+
        // channels, nothing below.
        assert_eq!(
            WinogradTile::for_conv(32, 32, [1, 32, 32], big),
            Some(WinogradTile::F4)
        );
        assert_eq!(
            WinogradTile::for_conv(128, 128, [2, 16, 16], big),
            Some(WinogradTile::F2)
        );
        assert_eq!(WinogradTile::for_conv(32, 128, [2, 16, 16], big), None);
        // Sides that are not a multiple of 4 count their part tiles.
        assert_eq!(
            WinogradTile::for_conv(16, 16, [1, 29, 29], big),
            Some(WinogradTile::F4)
        );
        // F4 weights over 16 MiB, or over the binding limit, fall back to F2.
        assert_eq!(
            WinogradTile::for_conv(384, 384, [1, 64, 64], big),
            Some(WinogradTile::F2)
        );
        assert_eq!(
            WinogradTile::for_conv(64, 64, [1, 64, 64], 512 << 10),
            Some(WinogradTile::F2)
        );
        assert_eq!(
            WinogradTile::for_conv(64, 64, [1, 64, 64], 576 << 10),
            Some(WinogradTile::F4)
        );
    }
}
