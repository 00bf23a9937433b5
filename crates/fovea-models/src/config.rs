//! diffusers / transformers `config.json` files as serde structs. Every default matches
//! the Python constructor's default (diffusers 0.42 `UNet2DConditionModel`,
//! `AutoencoderKL`, transformers `CLIPTextConfig`, the schedulers), so a config that
//! omits a field means what it means in diffusers. Fields for features fovea does not
//! implement are read too, and `validate` refuses them by name instead of silently
//! ignoring them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// Reads and parses a JSON config file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    parse_json(&text, path)
}

/// Parses JSON text; errors name `path` and serde's field, line and column.
pub fn parse_json<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ModelError::Config {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn unsupported(
    path: &Path,
    field: &str,
    value: impl std::fmt::Debug,
    supported: &str,
) -> ModelError {
    ModelError::Unsupported {
        path: path.display().to_string(),
        field: field.to_string(),
        value: format!("{value:?}"),
        supported: supported.to_string(),
    }
}

/// An int for every block, or one per block (diffusers accepts both).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    /// Same value for every block.
    One(usize),
    /// One value per down block.
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i` of `n`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i],
        }
    }

    fn len_ok(&self, n: usize) -> bool {
        match self {
            PerBlock::One(_) => true,
            PerBlock::Each(v) => v.len() == n,
        }
    }
}

fn d_in4() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_down_blocks() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_up_blocks() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_unet_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_two() -> usize {
    2
}
fn d_one() -> usize {
    1
}
fn d_silu() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_eps5() -> f64 {
    1e-5
}
fn d_cross_dim() -> usize {
    1280
}
fn d_head_dim() -> PerBlock {
    PerBlock::One(8)
}
fn d_transformer_layers() -> PerBlock {
    PerBlock::One(1)
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_three() -> usize {
    3
}
fn d_one_f() -> f64 {
    1.0
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`).
#[derive(Clone, Debug, Deserialize)]
pub struct UNetConfig {
    /// Native latent size.
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Latent channels in.
    #[serde(default = "d_in4")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "d_in4")]
    pub out_channels: usize,
    /// Scale input by 2x - 1.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Timestep embedding order.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Timestep embedding `downscale_freq_shift`.
    #[serde(default)]
    pub freq_shift: f64,
    /// Down block kinds.
    #[serde(default = "d_down_blocks")]
    pub down_block_types: Vec<String>,
    /// Mid block kind (`None` for no mid block).
    #[serde(default = "d_mid_block")]
    pub mid_block_type: Option<String>,
    /// Up block kinds.
    #[serde(default = "d_up_blocks")]
    pub up_block_types: Vec<String>,
    /// Channels per resolution.
    #[serde(default = "d_unet_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    #[serde(default = "d_two")]
    pub layers_per_block: usize,
    /// Padding of the stride-2 downsample convs.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Activation (`silu`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Group norm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Group norm epsilon.
    #[serde(default = "d_eps5")]
    pub norm_eps: f64,
    /// Text embedding width (768 SD 1.x, 1024 SD 2.x).
    #[serde(default = "d_cross_dim")]
    pub cross_attention_dim: usize,
    /// Transformer layers per block.
    #[serde(default = "d_transformer_layers")]
    pub transformer_layers_per_block: PerBlock,
    /// diffusers' legacy name: the number of heads when `num_attention_heads` is absent.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock,
    /// Number of heads (newer configs).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// `proj_in`/`proj_out` are Linear (SD 2.x) instead of 1x1 Conv (SD 1.x).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 (SD 2.1). fovea always accumulates in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    /// Only cross-attention in transformer blocks (unsupported).
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    /// Dual cross attention (unsupported).
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Class embeddings (unsupported).
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Class count (unsupported).
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// SDXL-style added conditioning (unsupported).
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Extra encoder projection (unsupported).
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    /// Timestep/scale shift in resnets (only `default`).
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Timestep embedding kind (only `positional`).
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// LCM-style guidance embedding width (unsupported).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// conv_in kernel size.
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    /// conv_out kernel size.
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
    /// Mid block output scale.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Attention processor kind (only `default`).
    #[serde(default = "d_default")]
    pub attention_type: String,
}

impl UNetConfig {
    /// Heads of the attention layers in down block `i` (diffusers:
    /// `num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(i)
    }

    /// Refuses features fovea does not implement, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(unsupported(
                path,
                "block_out_channels",
                &self.block_out_channels,
                "at least one block",
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(unsupported(
                path,
                "down_block_types/up_block_types",
                (&self.down_block_types, &self.up_block_types),
                &format!("one of each per block_out_channels entry ({n})"),
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(unsupported(
                    path,
                    "down_block_types",
                    t,
                    "CrossAttnDownBlock2D, DownBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(unsupported(
                    path,
                    "up_block_types",
                    t,
                    "CrossAttnUpBlock2D, UpBlock2D",
                ));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(t) => {
                return Err(unsupported(
                    path,
                    "mid_block_type",
                    t,
                    "UNetMidBlock2DCrossAttn or null",
                ));
            }
        }
        for (field, v) in [
            ("attention_head_dim", &self.attention_head_dim),
            (
                "transformer_layers_per_block",
                &self.transformer_layers_per_block,
            ),
        ] {
            if !v.len_ok(n) {
                return Err(unsupported(
                    path,
                    field,
                    v,
                    &format!("an int or a list of {n}"),
                ));
            }
        }
        if let Some(h) = &self.num_attention_heads
            && !h.len_ok(n)
        {
            return Err(unsupported(
                path,
                "num_attention_heads",
                h,
                &format!("an int or a list of {n}"),
            ));
        }
        for i in 0..n {
            let heads = self.heads(i);
            if heads == 0 || !self.block_out_channels[i].is_multiple_of(heads) {
                return Err(unsupported(
                    path,
                    "attention_head_dim/num_attention_heads",
                    heads,
                    &format!(
                        "a divisor of block_out_channels[{i}] = {}",
                        self.block_out_channels[i]
                    ),
                ));
            }
        }
        if self.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "silu"));
        }
        if !matches!(
            self.only_cross_attention,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            return Err(unsupported(
                path,
                "only_cross_attention",
                &self.only_cross_attention,
                "false",
            ));
        }
        if self.dual_cross_attention {
            return Err(unsupported(path, "dual_cross_attention", true, "false"));
        }
        if let Some(t) = &self.class_embed_type {
            return Err(unsupported(path, "class_embed_type", t, "null"));
        }
        if let Some(t) = self.num_class_embeds {
            return Err(unsupported(path, "num_class_embeds", t, "null"));
        }
        if let Some(t) = &self.addition_embed_type {
            return Err(unsupported(
                path,
                "addition_embed_type",
                t,
                "null (SD 1.x/2.x)",
            ));
        }
        if let Some(t) = self.encoder_hid_dim {
            return Err(unsupported(path, "encoder_hid_dim", t, "null"));
        }
        if let Some(t) = self.time_cond_proj_dim {
            return Err(unsupported(path, "time_cond_proj_dim", t, "null"));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported(
                path,
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "default",
            ));
        }
        if self.time_embedding_type != "positional" {
            return Err(unsupported(
                path,
                "time_embedding_type",
                &self.time_embedding_type,
                "positional",
            ));
        }
        if self.attention_type != "default" {
            return Err(unsupported(
                path,
                "attention_type",
                &self.attention_type,
                "default",
            ));
        }
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return Err(unsupported(path, field, k, "an odd kernel size"));
            }
        }
        if self.norm_num_groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| c % self.norm_num_groups != 0)
        {
            return Err(unsupported(
                path,
                "norm_num_groups",
                self.norm_num_groups,
                &format!(
                    "a divisor of every block_out_channels entry {:?}",
                    self.block_out_channels
                ),
            ));
        }
        Ok(())
    }
}

fn d_in3() -> usize {
    3
}
fn d_enc_blocks() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_dec_blocks() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_vae_channels() -> Vec<usize> {
    vec![64]
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_sample32() -> usize {
    32
}

/// `vae/config.json` (diffusers `AutoencoderKL`).
#[derive(Clone, Debug, Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "d_in3")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_in3")]
    pub out_channels: usize,
    /// Encoder block kinds.
    #[serde(default = "d_enc_blocks")]
    pub down_block_types: Vec<String>,
    /// Decoder block kinds.
    #[serde(default = "d_dec_blocks")]
    pub up_block_types: Vec<String>,
    /// Channels per resolution.
    #[serde(default = "d_vae_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// Activation.
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Latent channels.
    #[serde(default = "d_in4")]
    pub latent_channels: usize,
    /// Group norm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Native image size.
    #[serde(default = "d_sample32")]
    pub sample_size: usize,
    /// Latents are multiplied by this after encoding (and divided before decoding).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Subtracted before scaling (SD3/Flux; unsupported when set).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// quant_conv present.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// post_quant_conv present.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Attention in the mid block.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// Refuses features fovea does not implement, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(unsupported(
                path,
                "block_out_channels/down_block_types/up_block_types",
                (
                    &self.block_out_channels,
                    &self.down_block_types,
                    &self.up_block_types,
                ),
                "non-empty lists of equal length",
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(unsupported(
                path,
                "down_block_types",
                t,
                "DownEncoderBlock2D",
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(unsupported(path, "up_block_types", t, "UpDecoderBlock2D"));
        }
        if self.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "silu"));
        }
        if let Some(s) = self.shift_factor {
            return Err(unsupported(path, "shift_factor", s, "null"));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(unsupported(
                path,
                "scaling_factor",
                self.scaling_factor,
                "a positive number",
            ));
        }
        if self.norm_num_groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| c % self.norm_num_groups != 0)
        {
            return Err(unsupported(
                path,
                "norm_num_groups",
                self.norm_num_groups,
                "a divisor of every block_out_channels entry",
            ));
        }
        Ok(())
    }

    /// Image pixels per latent pixel along each side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_positions() -> usize {
    77
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_eos() -> u32 {
    49407
}
fn d_bos() -> u32 {
    49406
}
fn d_pad() -> u32 {
    1
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
#[derive(Clone, Debug, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Maximum tokens (77).
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    /// Layer norm epsilon.
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default = "d_pad")]
    pub pad_token_id: u32,
    /// Start token id.
    #[serde(default = "d_bos")]
    pub bos_token_id: u32,
    /// End token id.
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

impl ClipTextConfig {
    /// Refuses what fovea does not implement, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.hidden_act != "quick_gelu" && self.hidden_act != "gelu" {
            return Err(unsupported(
                path,
                "hidden_act",
                &self.hidden_act,
                "quick_gelu, gelu",
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(unsupported(
                path,
                "num_attention_heads",
                self.num_attention_heads,
                &format!("a divisor of hidden_size {}", self.hidden_size),
            ));
        }
        Ok(())
    }
}

fn d_train_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}
fn d_leading() -> String {
    "leading".into()
}

/// `scheduler/scheduler_config.json`: the fields fovea's schedulers read. Defaults are
/// diffusers' `DDPMScheduler`-family defaults; SD folders set most of them explicitly.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    /// Python class the folder was saved with (e.g. `PNDMScheduler`).
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Training timesteps.
    #[serde(default = "d_train_steps")]
    pub num_train_timesteps: usize,
    /// First beta.
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    /// Last beta.
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    /// `epsilon` or `v_prediction`.
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`.
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    /// Added to leading timesteps.
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM: final alpha is 1.
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    /// Clip predicted x0 (DDIM).
    #[serde(default)]
    pub clip_sample: bool,
    /// Use Karras sigmas.
    #[serde(default)]
    pub use_karras_sigmas: bool,
    /// LCM: the step count of the schedule it was distilled from.
    #[serde(default = "d_fifty")]
    pub original_inference_steps: usize,
    /// LCM: timestep multiplier in the boundary-condition scalings.
    #[serde(default = "d_ten")]
    pub timestep_scaling: f64,
}

fn d_fifty() -> usize {
    50
}
fn d_ten() -> f64 {
    10.0
}

impl SchedulerConfig {
    /// Refuses values fovea's schedulers do not implement, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if !["linear", "scaled_linear", "squaredcos_cap_v2"].contains(&self.beta_schedule.as_str())
        {
            return Err(unsupported(
                path,
                "beta_schedule",
                &self.beta_schedule,
                "linear, scaled_linear, squaredcos_cap_v2",
            ));
        }
        if !["epsilon", "v_prediction"].contains(&self.prediction_type.as_str()) {
            return Err(unsupported(
                path,
                "prediction_type",
                &self.prediction_type,
                "epsilon, v_prediction",
            ));
        }
        if !["leading", "trailing", "linspace"].contains(&self.timestep_spacing.as_str()) {
            return Err(unsupported(
                path,
                "timestep_spacing",
                &self.timestep_spacing,
                "leading, trailing, linspace",
            ));
        }
        if self.num_train_timesteps == 0 {
            return Err(unsupported(
                path,
                "num_train_timesteps",
                0,
                "a positive integer",
            ));
        }
        Ok(())
    }
}

/// `config.json` of diffusers' `AutoencoderTiny` (TAESD); fovea uses its decoder.
#[derive(Clone, Debug, Deserialize)]
pub struct TinyVaeConfig {
    /// Image channels out.
    #[serde(default = "d_in3")]
    pub out_channels: usize,
    /// Latent channels.
    #[serde(default = "d_in4")]
    pub latent_channels: usize,
    /// Decoder channels per stage.
    #[serde(default = "d_taesd_channels")]
    pub decoder_block_out_channels: Vec<usize>,
    /// `AutoencoderTinyBlock`s per decoder stage.
    #[serde(default = "d_taesd_decoder_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    /// Activation (TAESD uses ReLU).
    #[serde(default = "d_relu")]
    pub act_fn: String,
    /// Upsampling mode between stages.
    #[serde(default = "d_nearest")]
    pub upsample_fn: String,
    /// Upsampling factor between stages.
    #[serde(default = "d_two")]
    pub upsampling_scaling_factor: usize,
    /// Latents are divided by this before decoding (1 for TAESD).
    #[serde(default = "d_one_f")]
    pub scaling_factor: f64,
}

fn ch_differ(ch: &[usize]) -> bool {
    ch.windows(2).any(|w| w[0] != w[1])
}

fn d_taesd_channels() -> Vec<usize> {
    vec![64; 4]
}
fn d_taesd_decoder_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}
fn d_relu() -> String {
    "relu".into()
}
fn d_nearest() -> String {
    "nearest".into()
}

impl TinyVaeConfig {
    /// Refuses features fovea does not implement, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let n = self.decoder_block_out_channels.len();
        if n == 0 || self.num_decoder_blocks.len() != n {
            return Err(unsupported(
                path,
                "decoder_block_out_channels/num_decoder_blocks",
                (&self.decoder_block_out_channels, &self.num_decoder_blocks),
                "non-empty lists of equal length",
            ));
        }
        // Each stage's last conv keeps its width, so the next stage's blocks see it.
        if ch_differ(&self.decoder_block_out_channels) {
            return Err(unsupported(
                path,
                "decoder_block_out_channels",
                &self.decoder_block_out_channels,
                "the same width for every stage",
            ));
        }
        if self.act_fn != "relu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "relu"));
        }
        if self.upsample_fn != "nearest" {
            return Err(unsupported(
                path,
                "upsample_fn",
                &self.upsample_fn,
                "nearest",
            ));
        }
        if self.upsampling_scaling_factor != 2 {
            return Err(unsupported(
                path,
                "upsampling_scaling_factor",
                self.upsampling_scaling_factor,
                "2",
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(unsupported(
                path,
                "scaling_factor",
                self.scaling_factor,
                "a positive number",
            ));
        }
        Ok(())
    }

    /// Image pixels per latent pixel.
    pub fn upscale(&self) -> usize {
        1 << (self.decoder_block_out_channels.len() - 1)
    }
}
