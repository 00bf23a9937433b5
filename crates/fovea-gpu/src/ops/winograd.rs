//! Host side of the Winograd F(2x2, 3x3) convolution (shaders/winograd_cpu.wgsl) that the
//! software class runs for 3x3, stride-1, padding-1 convolutions: a weight transform
//! (once per layer: [`Batch::winograd_weights`]), an input transform, 16 matrix products
//! on the matmul kernel and an output transform ([`Batch::conv2d_winograd`]).

use bytemuck::{Pod, Zeroable};

use super::{Epilogue, MatmulOptions, float_dtype, key, op_err, u32_dim};
use crate::batch::{Batch, Bind, Workgroups};
use crate::error::Result;
use crate::tensor::{Tensor, fmt_shape};

/// Elements of the 4x4 transformed tile: the matrix products per convolution.
pub const WINOGRAD_TILE_ELEMS: usize = 16;
/// The most elements the transformed input, and the transformed output, of one run of
/// tiles holds (large images are transformed and multiplied a run at a time).
pub const WINOGRAD_RUN_ELEMS: usize = 1 << 20;
/// The batch scratch slots of the transformed input and output.
const SCRATCH_INPUT: usize = 0;
const SCRATCH_OUTPUT: usize = 1;
/// Invocations per workgroup of the transform kernels.
const TRANSFORM_WORKGROUP: usize = 64;

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
    /// One dispatch of `entry` (`PAIRS=pairs`) of `winograd_cpu.wgsl`.
    fn winograd_dispatch(
        &mut self,
        op: &'static str,
        (dtype, entry, pairs): (fovea_shaders::Dtype, &'static str, bool),
        params: &WinogradParams,
        bindings: &[(u32, Bind<'_>)],
        groups: [u32; 3],
    ) -> Result<()> {
        self.check_groups(op, &format!("{entry} workgroups"), groups)?;
        let d = self.gpu().dispatch(
            &key("winograd_cpu", dtype, &[("PAIRS", pairs as u32)], entry)?,
            bytemuck::bytes_of(params),
            bindings,
            Workgroups::Direct(groups),
        )?;
        self.record(d);
        Ok(())
    }

    /// The Winograd transform U = G g G^T of 3x3 convolution weights g
    /// (C_out, C_in, 3, 3), as (16, C_out, C_in): what [`Batch::conv2d_winograd`] takes.
    /// Models compute it once per layer and keep it.
    pub fn winograd_weights(&mut self, weight: &Tensor) -> Result<Tensor> {
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
        let u = self
            .gpu()
            .empty(OP, &[WINOGRAD_TILE_ELEMS, c_out, c_in], weight.dtype())?;
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
            (dtype, "winograd_weights", false),
            &params,
            &[(4, Bind::Tensor(weight)), (5, Bind::Tensor(&u))],
            groups,
        )?;
        Ok(u)
    }

    /// 3x3 convolution with stride 1 and padding 1 of x (N, C_in, H, W), whose weights
    /// `u` (16, C_out, C_in) come from [`Batch::winograd_weights`], plus bias (C_out):
    /// (N, C_out, H, W), as [`Batch::conv2d`] gives, by Winograd F(2x2, 3x3).
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
        let mut all = vec![x, u];
        all.extend(bias);
        all.extend(adds.per_channel);
        all.extend(adds.residual);
        let dtype = float_dtype(OP, &all)?;
        let (xs, us) = (x.shape(), u.shape());
        if xs.len() != 4 || us.len() != 3 || us[0] != WINOGRAD_TILE_ELEMS || us[2] != xs[1] {
            return Err(op_err(
                OP,
                format!(
                    "needs x (N, C_in, H, W) and Winograd weights (16, C_out, C_in), got {} and {}",
                    x.describe(),
                    u.describe()
                ),
            ));
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
        let (tiles_h, tiles_w) = (h.div_ceil(2), w.div_ceil(2));
        let tiles = n * tiles_h * tiles_w;
        // Runs of at most `run` tiles per transform and product, so that the transformed
        // input and output (16 values per tile and channel) stay within max_run_elems
        // elements each and within the adapter's binding size (or take four tiles); a
        // multiple of 4 (the matmul's quads).
        let binding_elems =
            self.gpu().limits().max_storage_buffer_binding_size as usize / x.dtype().size_bytes();
        let per_tile = WINOGRAD_TILE_ELEMS * c_in.max(c_out);
        let run = (max_run_elems.min(binding_elems) / per_tile / 4 * 4)
            .max(4)
            .min(tiles.next_multiple_of(4));
        // Two neighbouring tiles per invocation where every row holds an even count.
        let pairs = w.is_multiple_of(4);
        let per_invocation = if pairs { 2 } else { 1 };
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
                &[WINOGRAD_TILE_ELEMS, c_in, padded],
                x.dtype(),
            )?;
            let groups = [
                (padded / per_invocation).div_ceil(TRANSFORM_WORKGROUP) as u32,
                params.channels,
                1,
            ];
            self.winograd_dispatch(
                OP,
                (dtype, "winograd_input", pairs),
                &params,
                &[(1, Bind::Tensor(x)), (3, Bind::Tensor(&v))],
                groups,
            )?;
            let m = self.scratch(
                SCRATCH_OUTPUT,
                OP,
                &[WINOGRAD_TILE_ELEMS, c_out, padded],
                x.dtype(),
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
                (dtype, "winograd_output", pairs),
                &params,
                &[
                    (1, Bind::Tensor(&m)),
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
