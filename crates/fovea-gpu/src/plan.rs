//! Which kernels a device runs: the adapter class ([`AdapterClass`]), decided once at
//! device creation from what wgpu reports (or forced), and the kernel variant families
//! it picks ([`KernelPlan`]), which ops read to build their pipeline keys.

use crate::context::Capabilities;
#[cfg(doc)]
use crate::context::GpuOptions;

/// What kind of processor runs the kernels, decided once at device creation; it picks
/// the kernel variant family ([`KernelPlan`]). Ops never test the adapter themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdapterClass {
    /// A CPU implementation of the API (lavapipe/llvmpipe, SwiftShader, WARP): an
    /// invocation is a SIMD lane and a workgroup runs on one thread, so barriers and
    /// workgroup memory are expensive and uniform loads are cheap.
    Software,
    /// A GPU without the cooperative-matrix extension.
    Gpu,
    /// A GPU with wgpu's experimental cooperative-matrix extension (no kernels use it
    /// yet; they run the [`AdapterClass::Gpu`] variants).
    GpuCoopMatrix,
}

/// Environment variable that forces an adapter class: `software` or `gpu`.
pub const ADAPTER_CLASS_ENV: &str = "FOVEA_ADAPTER_CLASS";

impl AdapterClass {
    /// Classifies an adapter from what wgpu reports: a CPU device type or a known
    /// software rasteriser's name is [`Software`](AdapterClass::Software) (llvmpipe also
    /// reports itself as a CPU; names cover drivers that report `Other`).
    pub fn detect(info: &wgpu::AdapterInfo, caps: Capabilities) -> AdapterClass {
        let name = info.name.to_ascii_lowercase();
        let driver = info.driver.to_ascii_lowercase();
        let software_name = [
            "llvmpipe",
            "lavapipe",
            "softpipe",
            "swiftshader",
            "microsoft basic render driver",
            "warp",
        ]
        .iter()
        .any(|s| name.contains(s) || driver.contains(s));
        if info.device_type == wgpu::DeviceType::Cpu || software_name {
            AdapterClass::Software
        } else if caps.cooperative_matrix {
            AdapterClass::GpuCoopMatrix
        } else {
            AdapterClass::Gpu
        }
    }

    /// Parses a forced class (`software`, `gpu`), as [`ADAPTER_CLASS_ENV`] takes it.
    pub fn parse(value: &str) -> Option<AdapterClass> {
        match value.trim().to_ascii_lowercase().as_str() {
            "software" | "cpu" => Some(AdapterClass::Software),
            "gpu" => Some(AdapterClass::Gpu),
            _ => None,
        }
    }

    /// The class forced by [`ADAPTER_CLASS_ENV`], if set to a valid value (an invalid
    /// value is logged and ignored).
    pub fn from_env() -> Option<AdapterClass> {
        let value = std::env::var(ADAPTER_CLASS_ENV).ok()?;
        let class = AdapterClass::parse(&value);
        if class.is_none() {
            log::warn!("{ADAPTER_CLASS_ENV}={value:?} is not `software` or `gpu`; ignored");
        }
        class
    }

    /// Short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            AdapterClass::Software => "software",
            AdapterClass::Gpu => "gpu",
            AdapterClass::GpuCoopMatrix => "gpu-coop-matrix",
        }
    }
}

/// Which GEMM-shaped kernel family a device runs for matmul and for conv2d (the families
/// of one op share its interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// `matmul.wgsl` / `conv2d.wgsl`: 64x64 tiles staged in workgroup memory (GPU
    /// class; conv2d kernels other than 1x1 and 3x3 on every class).
    Tiled,
    /// `matmul_cpu.wgsl` / `conv2d_cpu.wgsl` with `SUBGROUP=0`: no workgroup memory,
    /// workgroup-uniform loads. No adapter gets it by default any more (the blocked
    /// family measured 2.7x faster on llvmpipe GL, 15x on SwiftShader); it stays for
    /// comparisons, forced by [`MATMUL_KERNEL_ENV`], and is tested.
    CpuUniform,
    /// `matmul_cpu.wgsl` / `conv2d_cpu.wgsl` with `SUBGROUP=1`: operands shared by
    /// `subgroupBroadcast` (software class with subgroups of exactly 8 lanes: lavapipe
    /// on AVX2).
    CpuSubgroup,
    /// `matmul_blocked.wgsl` / `conv2d_blocked.wgsl` (1x1 convolutions as matmuls,
    /// other kernel sizes tiled): an 8x8 output block per invocation in registers, no
    /// sharing between lanes (software adapters without 8-lane subgroups: SwiftShader
    /// natively and as a browser's WebGPU fallback, llvmpipe on GL, WARP).
    CpuBlocked,
}

/// Environment variable that forces the matmul/conv2d kernel family by its
/// [`MatmulKernel::name`] (for comparisons; [`GpuOptions::matmul_kernel`] wins).
pub const MATMUL_KERNEL_ENV: &str = "FOVEA_MATMUL_KERNEL";

impl MatmulKernel {
    /// Every family.
    pub const ALL: [MatmulKernel; 4] = [
        MatmulKernel::Tiled,
        MatmulKernel::CpuUniform,
        MatmulKernel::CpuSubgroup,
        MatmulKernel::CpuBlocked,
    ];

    /// The family named `value` (as [`MatmulKernel::name`] prints it).
    pub fn parse(value: &str) -> Option<MatmulKernel> {
        let value = value.trim().to_ascii_lowercase();
        MatmulKernel::ALL.into_iter().find(|k| k.name() == value)
    }

    /// Short name, as `fovea info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            MatmulKernel::Tiled => "tiled",
            MatmulKernel::CpuUniform => "cpu-uniform",
            MatmulKernel::CpuSubgroup => "cpu-subgroup",
            MatmulKernel::CpuBlocked => "cpu-blocked",
        }
    }
}

/// The kernel variants chosen for a device, from its class and features, once at
/// device creation; ops read it to build their pipeline keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPlan {
    /// The class the plan was made for.
    pub class: AdapterClass,
    /// Matmul and linear.
    pub matmul: MatmulKernel,
    /// 2D convolution with 1x1 and 3x3 kernels.
    pub conv2d: MatmulKernel,
    /// Norms and elementwise ops shaped for software adapters, where each workgroup and
    /// each 8-lane subgroup in it costs a coroutine resume: layer norm with one row per
    /// invocation (`norm.wgsl` `layer_norm_cpu`), group norm with one 8-invocation
    /// workgroup per group (`group_norm_cpu`), elementwise ops with 16 elements per
    /// invocation in 8-wide workgroups (`elementwise.wgsl` `*_cpu`), instead of 256-wide
    /// workgroups with one element, row or group each.
    pub narrow: bool,
    /// Attention with one query per invocation and key/value rows shared by
    /// `subgroupBroadcast` (`attention_cpu.wgsl`, software class with 8-lane subgroups)
    /// for the head dimensions it is compiled for, instead of 64-query workgroups
    /// staging keys in workgroup memory (`attention.wgsl`). (A variant with
    /// workgroup-uniform loads instead ran no faster on lavapipe and took 30-100 s to
    /// compile on the GL backend; without subgroups see `attention_blocked`.)
    pub attention_per_lane: bool,
    /// Attention with four queries per invocation and their rows in named registers
    /// (`attention_blocked.wgsl`, with the blocked matmul family: SwiftShader, llvmpipe
    /// on GL, WARP) for head dimensions up to 32, instead of the tiled kernel.
    pub attention_blocked: bool,
    /// 3x3 convolutions with stride 1 and padding 1 (most of Stable Diffusion's) as
    /// Winograd F(2x2, 3x3): transforms around 16 matrix products on the matmul kernel,
    /// 2.25x fewer multiplies (`winograd_cpu.wgsl`; with the cpu-subgroup family, where
    /// the matmul runs as fast per FLOP as the direct convolution). Forced on or off by
    /// [`WINOGRAD_ENV`].
    pub winograd: bool,
}

/// Environment variable that forces Winograd convolutions on (`1`) or off (`0`) where
/// the matmul family is cpu-subgroup (for comparisons).
pub const WINOGRAD_ENV: &str = "FOVEA_WINOGRAD";

/// Fewest input and output channels for which a convolution may run as Winograd; the
/// tile, or the direct convolution after all, then follows from its size
/// (`WinogradTile::for_conv`). With few channels the transforms and the short products
/// (K = C_in, M = C_out) cost what the multiplies save. Against the direct convolution
/// (lavapipe, one thread, time ratios), F(4x4, 3x3) took 0.62x at 32 channels
/// (128x128), 0.67x (64x64), 0.92x (32x32) and 0.90x at 16 channels (64x64); F(2x2,
/// 3x3) needs 64 (`WINOGRAD2_MIN_CHANNELS`).
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

impl KernelPlan {
    /// The plan for `class` on a device with `caps` whose adapter reports `info`
    /// (subgroup sizes).
    pub fn new(class: AdapterClass, caps: Capabilities, info: &wgpu::AdapterInfo) -> KernelPlan {
        let eight_lanes = info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
        let matmul = match class {
            AdapterClass::Gpu | AdapterClass::GpuCoopMatrix => MatmulKernel::Tiled,
            AdapterClass::Software if caps.subgroups && eight_lanes => MatmulKernel::CpuSubgroup,
            // Every other software adapter: SwiftShader (natively and as a browser's
            // WebGPU fallback), llvmpipe without subgroups (wgpu's GL backend, or Vulkan
            // with them switched off), WARP. On SwiftShader the tiled kernels ran matmul
            // and conv2d at 0.8-1.1 GFLOP/s, the cpu-uniform ones at 0.2 (loops over
            // private arrays), the blocked ones at 3.6 and 3.1; on llvmpipe GL a guided
            // default-UNet step took 1,589 ms with cpu-uniform, 596 with blocked.
            AdapterClass::Software => MatmulKernel::CpuBlocked,
        };
        KernelPlan {
            class,
            matmul,
            conv2d: matmul,
            narrow: class == AdapterClass::Software,
            attention_per_lane: matmul == MatmulKernel::CpuSubgroup,
            attention_blocked: matmul == MatmulKernel::CpuBlocked,
            winograd: matmul == MatmulKernel::CpuSubgroup,
        }
    }

    /// This plan with the matmul/conv2d family `kernel` instead (and attention's where
    /// that family has one: query-per-lane with cpu-subgroup, blocked with cpu-blocked).
    pub fn with_matmul_kernel(self, kernel: MatmulKernel) -> KernelPlan {
        KernelPlan {
            matmul: kernel,
            conv2d: kernel,
            attention_per_lane: kernel == MatmulKernel::CpuSubgroup,
            attention_blocked: kernel == MatmulKernel::CpuBlocked,
            winograd: kernel == MatmulKernel::CpuSubgroup,
            ..self
        }
    }

    /// This plan with Winograd convolutions on or off; on only takes effect with the
    /// cpu-subgroup family.
    pub fn with_winograd(self, on: bool) -> KernelPlan {
        KernelPlan {
            winograd: on && self.matmul == MatmulKernel::CpuSubgroup,
            ..self
        }
    }

    /// Whether a convolution with these channels, kernel size, stride and padding
    /// `[top, bottom, left, right]` runs as Winograd ([`Batch::conv2d_winograd`]).
    ///
    /// [`Batch::conv2d_winograd`]: crate::Batch::conv2d_winograd
    pub fn winograd_conv(
        &self,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 4],
    ) -> bool {
        self.winograd
            && kernel == [3, 3]
            && stride == 1
            && padding == [1; 4]
            && c_in >= WINOGRAD_MIN_CHANNELS
            && c_out >= WINOGRAD_MIN_CHANNELS
    }

    /// One line for `fovea info`: class and chosen variants.
    pub fn describe(&self) -> String {
        format!(
            "class {}; kernels: matmul {}, conv2d {}{}, norms/elementwise {}, attention {}",
            self.class.name(),
            self.matmul.name(),
            self.conv2d.name(),
            if self.winograd {
                format!(" (3x3 winograd from {WINOGRAD_MIN_CHANNELS} channels)")
            } else {
                String::new()
            },
            if self.narrow {
                "narrow"
            } else {
                "workgroup-256"
            },
            if self.attention_per_lane {
                "query-per-lane"
            } else if self.attention_blocked {
                "blocked"
            } else {
                "workgroup-tiled"
            }
        )
    }
}

/// The family forced by [`MATMUL_KERNEL_ENV`], if set to a valid name (an invalid one
/// is logged and ignored).
pub(crate) fn matmul_kernel_from_env() -> Option<MatmulKernel> {
    let value = std::env::var(MATMUL_KERNEL_ENV).ok()?;
    let kernel = MatmulKernel::parse(&value);
    if kernel.is_none() {
        log::warn!(
            "{MATMUL_KERNEL_ENV}={value:?} is not one of {}; ignored",
            MatmulKernel::ALL.map(MatmulKernel::name).join(", ")
        );
    }
    kernel
}

/// Winograd convolutions forced by [`WINOGRAD_ENV`] (`1` on, `0` off), if set to one
/// of those (anything else is logged and ignored).
pub(crate) fn winograd_from_env() -> Option<bool> {
    let value = std::env::var(WINOGRAD_ENV).ok()?;
    match value.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => {
            log::warn!("{WINOGRAD_ENV}={value:?} is not 0 or 1; ignored");
            None
        }
    }
}

/// The class to use: `forced` (from [`GpuOptions::adapter_class`]) first, then
/// [`ADAPTER_CLASS_ENV`], then [`AdapterClass::detect`]. Returns whether it was forced.
pub fn choose_class(
    forced: Option<AdapterClass>,
    info: &wgpu::AdapterInfo,
    caps: Capabilities,
) -> (AdapterClass, bool) {
    match forced.or_else(AdapterClass::from_env) {
        Some(class) => (class, true),
        None => (AdapterClass::detect(info, caps), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str, device_type: wgpu::DeviceType) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: name.into(),
            vendor: 0,
            device: 0,
            device_type,
            device_pci_bus_id: String::new(),
            driver: String::new(),
            driver_info: String::new(),
            backend: wgpu::Backend::Vulkan,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            transient_saves_memory: None,
            limit_bucket: None,
        }
    }

    #[test]
    fn software_adapters_are_classified_by_type_or_name() {
        let caps = Capabilities::default();
        for (name, ty) in [
            ("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::DeviceType::Cpu),
            ("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::DeviceType::Other),
            ("SwiftShader Device (Subzero)", wgpu::DeviceType::Other),
            (
                "Microsoft Basic Render Driver",
                wgpu::DeviceType::IntegratedGpu,
            ),
            ("anything", wgpu::DeviceType::Cpu),
        ] {
            assert_eq!(
                AdapterClass::detect(&adapter(name, ty), caps),
                AdapterClass::Software,
                "{name}"
            );
        }
        let gpu = adapter("NVIDIA H100 80GB HBM3", wgpu::DeviceType::DiscreteGpu);
        assert_eq!(AdapterClass::detect(&gpu, caps), AdapterClass::Gpu);
        let coop = Capabilities {
            cooperative_matrix: true,
            ..caps
        };
        assert_eq!(
            AdapterClass::detect(&gpu, coop),
            AdapterClass::GpuCoopMatrix
        );
        let (forced, was_forced) = choose_class(Some(AdapterClass::Software), &gpu, caps);
        assert_eq!((forced, was_forced), (AdapterClass::Software, true));
        assert_eq!(
            AdapterClass::parse(" Software "),
            Some(AdapterClass::Software)
        );
        assert_eq!(AdapterClass::parse("gpu"), Some(AdapterClass::Gpu));
        assert_eq!(AdapterClass::parse("tpu"), None);
        for kernel in MatmulKernel::ALL {
            assert_eq!(MatmulKernel::parse(kernel.name()), Some(kernel));
        }
        assert_eq!(
            MatmulKernel::parse(" CPU-Blocked "),
            Some(MatmulKernel::CpuBlocked)
        );
        assert_eq!(MatmulKernel::parse("blocked"), None);
    }

    /// Software adapters get the matmul/conv kernels measured fastest on them.
    #[test]
    fn software_plans_follow_the_adapter() {
        let with_subgroups = Capabilities {
            subgroups: true,
            ..Capabilities::default()
        };
        let lavapipe = adapter("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::DeviceType::Cpu);
        let mut gl = lavapipe.clone();
        (gl.backend, gl.subgroup_min_size, gl.subgroup_max_size) = (wgpu::Backend::Gl, 4, 128);
        let mut swiftshader = adapter("SwiftShader Device (Subzero)", wgpu::DeviceType::Cpu);
        (swiftshader.subgroup_min_size, swiftshader.subgroup_max_size) = (4, 4);
        let mut browser = adapter("", wgpu::DeviceType::Other);
        (
            browser.backend,
            browser.subgroup_min_size,
            browser.subgroup_max_size,
        ) = (wgpu::Backend::BrowserWebGpu, 0, 0);
        for (what, info, caps, want) in [
            (
                "lavapipe",
                &lavapipe,
                with_subgroups,
                MatmulKernel::CpuSubgroup,
            ),
            (
                "lavapipe, no subgroups",
                &lavapipe,
                Capabilities::default(),
                MatmulKernel::CpuBlocked,
            ),
            (
                "llvmpipe GL",
                &gl,
                Capabilities::default(),
                MatmulKernel::CpuBlocked,
            ),
            (
                "SwiftShader",
                &swiftshader,
                with_subgroups,
                MatmulKernel::CpuBlocked,
            ),
            (
                "a browser's software adapter",
                &browser,
                Capabilities::default(),
                MatmulKernel::CpuBlocked,
            ),
        ] {
            let plan = KernelPlan::new(AdapterClass::Software, caps, info);
            assert_eq!((plan.matmul, plan.conv2d), (want, want), "{what}");
            assert!(plan.narrow, "{what}");
            assert_eq!(
                plan.attention_per_lane,
                want == MatmulKernel::CpuSubgroup,
                "{what}"
            );
            assert_eq!(
                plan.attention_blocked,
                want == MatmulKernel::CpuBlocked,
                "{what}"
            );
        }
    }
}
