//! Samplers with diffusers' step math: Euler, Euler ancestral, DDIM (eta 0), DPM++ 2M
//! (optionally with Karras sigmas) and LCM, configured by `scheduler_config.json`
//! fields (`timestep_spacing`, `prediction_type`, beta schedules, `steps_offset`, ...).
//!
//! Every one of these steps is linear in the current sample, the model output, the
//! previous step's denoised estimate and the noise, so a step is described by a
//! [`StepPlan`] of scalar coefficients. The GPU loop applies a plan with one fused
//! elementwise kernel; [`Scheduler::step_cpu`] applies it on the host (tests, fixtures).
//!
//! The noise schedule is computed in f32 exactly as PyTorch does (float32 `linspace`
//! and sequential `cumprod`), so timesteps and sigmas match diffusers' to the last bits
//! that matter; the step coefficients are then evaluated in f64.

use fovea_models::SchedulerConfig;

/// Scheduler errors; each names the parameter and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A parameter is outside its range.
    #[error("scheduler: `{param}` = {value} is invalid: {expected}")]
    Param {
        /// Parameter name.
        param: &'static str,
        /// Given value.
        value: String,
        /// What is allowed.
        expected: String,
    },
}

fn param(
    param: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> SchedulerError {
    SchedulerError::Param {
        param,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// The sampling algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    /// diffusers `EulerDiscreteScheduler`.
    Euler,
    /// diffusers `EulerAncestralDiscreteScheduler` (SD-Turbo's sampler).
    EulerAncestral,
    /// diffusers `DDIMScheduler` with eta = 0.
    Ddim,
    /// diffusers `DPMSolverMultistepScheduler` (`dpmsolver++`, order 2, midpoint).
    DpmPlusPlus2M,
    /// diffusers `LCMScheduler`.
    Lcm,
}

impl SchedulerKind {
    /// Every kind with its CLI name.
    pub const ALL: [(SchedulerKind, &'static str); 5] = [
        (SchedulerKind::Euler, "euler"),
        (SchedulerKind::EulerAncestral, "euler_a"),
        (SchedulerKind::Ddim, "ddim"),
        (SchedulerKind::DpmPlusPlus2M, "dpmpp_2m"),
        (SchedulerKind::Lcm, "lcm"),
    ];

    /// The CLI name (`euler`, `euler_a`, `ddim`, `dpmpp_2m`, `lcm`).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .expect("every kind is listed")
    }

    /// Parses a CLI name (`euler`, `euler_a`, `ddim`, `dpmpp_2m`, `lcm`) or a diffusers
    /// class name.
    pub fn parse(name: &str) -> Result<SchedulerKind, SchedulerError> {
        let by_class = match name {
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::DpmPlusPlus2M),
            "LCMScheduler" => Some(SchedulerKind::Lcm),
            _ => None,
        };
        by_class
            .or_else(|| Self::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                param("scheduler", name, format!("one of {}", names.join(", ")))
            })
    }
}

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// v = sqrt(a) noise - sqrt(1 - a) x0.
    VPrediction,
}

/// `denoised = sample * sample + model * model_output`, optionally clipped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenoisedPlan {
    /// Coefficient of the (unscaled) sample.
    pub sample: f64,
    /// Coefficient of the model output.
    pub model: f64,
    /// Clamp the estimate to [-c, c] (DDIM `clip_sample`).
    pub clip: Option<f64>,
}

/// One step: `denoised` as above, then
/// `prev = sample * sample + denoised * denoised + prev_denoised * previous denoised
/// + noise * noise`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPlan {
    /// How to form this step's denoised estimate.
    pub denoised: DenoisedPlan,
    /// Coefficient of the sample in the next sample.
    pub sample: f64,
    /// Coefficient of this step's denoised estimate.
    pub denoised_coef: f64,
    /// Coefficient of the previous step's denoised estimate (DPM++ 2M).
    pub prev_denoised: f64,
    /// Coefficient of fresh standard normal noise (ancestral and LCM steps).
    pub noise: f64,
}

/// A configured sampler for a fixed number of steps.
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    prediction: Prediction,
    clip_sample: bool,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    /// Sigma per step plus a final 0 (sigma-based samplers); empty otherwise.
    sigmas: Vec<f64>,
    spacing: String,
    num_train: usize,
    timestep_scaling: f64,
    /// First step run (img2img starts part-way); multistep history starts there.
    begin: usize,
    last_denoised: Option<Vec<f32>>,
}

/// torch.linspace in float32 (start + i*step in the first half, end - (n-1-i)*step in
/// the second), as diffusers builds its beta schedules.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

fn betas(cfg: &SchedulerConfig) -> Vec<f32> {
    let n = cfg.num_train_timesteps;
    match cfg.beta_schedule.as_str() {
        "linear" => linspace_f32(cfg.beta_start as f32, cfg.beta_end as f32, n),
        "scaled_linear" => linspace_f32(
            (cfg.beta_start as f32).sqrt(),
            (cfg.beta_end as f32).sqrt(),
            n,
        )
        .into_iter()
        .map(|b| b * b)
        .collect(),
        // "squaredcos_cap_v2": Glide's cosine schedule, betas capped at 0.999 (computed
        // in f64 by diffusers, then stored as float32).
        _ => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

/// numpy.interp on an increasing integer grid 0..values.len().
fn interp_grid(x: f64, values: &[f64]) -> f64 {
    if x <= 0.0 {
        return values[0];
    }
    let last = values.len() - 1;
    if x >= last as f64 {
        return values[last];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    values[i] * (1.0 - w) + values[i + 1] * w
}

/// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma interpolates to
/// `sigma`.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let count = log_sigmas
        .iter()
        .filter(|&&ls| log_sigma - ls >= 0.0)
        .count();
    // argmax of the cumulative count = index of the last log_sigma <= log_sigma.
    let low = if count == 0 {
        0
    } else {
        (count - 1).min(log_sigmas.len() - 2)
    };
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al. (2022) sigmas from `max` down to `min`, rho = 7.
fn karras(max: f64, min: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
    (0..n)
        .map(|i| {
            let ramp = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            (max_inv + ramp * (min_inv - max_inv)).powf(rho)
        })
        .collect()
}

impl Scheduler {
    /// A `kind` sampler for `steps` steps under `cfg` (`use_karras_sigmas` applies to
    /// Euler and DPM++ 2M).
    pub fn new(
        kind: SchedulerKind,
        cfg: &SchedulerConfig,
        steps: usize,
    ) -> Result<Scheduler, SchedulerError> {
        let t_train = cfg.num_train_timesteps;
        if steps == 0 || steps > t_train {
            return Err(param(
                "steps",
                steps,
                format!("between 1 and num_train_timesteps ({t_train})"),
            ));
        }
        let prediction = match cfg.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            other => return Err(param("prediction_type", other, "epsilon or v_prediction")),
        };
        if !["linear", "scaled_linear", "squaredcos_cap_v2"].contains(&cfg.beta_schedule.as_str()) {
            return Err(param(
                "beta_schedule",
                &cfg.beta_schedule,
                "linear, scaled_linear or squaredcos_cap_v2",
            ));
        }
        let spacing = cfg.timestep_spacing.clone();
        if !["leading", "trailing", "linspace"].contains(&spacing.as_str()) {
            return Err(param(
                "timestep_spacing",
                spacing,
                "leading, trailing or linspace",
            ));
        }
        let mut acc = 1.0f32;
        let alphas_cumprod: Vec<f32> = betas(cfg)
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        let sigmas_full: Vec<f64> = alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt() as f64)
            .collect();
        let log_sigmas: Vec<f64> = sigmas_full.iter().map(|s| s.ln()).collect();
        let offset = cfg.steps_offset as f64;
        let n = steps;
        let (timesteps, sigmas): (Vec<f64>, Vec<f64>) = match kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let ts: Vec<f64> = match spacing.as_str() {
                    // numpy.linspace(..., dtype=float32): computed in f64, stored as f32.
                    "linspace" => np_linspace(0.0, (t_train - 1) as f64, n)
                        .into_iter()
                        .rev()
                        .map(|t| t as f32 as f64)
                        .collect(),
                    "leading" => {
                        let ratio = t_train / n;
                        (0..n).rev().map(|i| (i * ratio) as f64 + offset).collect()
                    }
                    _ => trailing(t_train, n),
                };
                let mut sig: Vec<f64> = ts
                    .iter()
                    .map(|&t| interp_grid(t, &sigmas_full) as f32 as f64)
                    .collect();
                let ts = if cfg.use_karras_sigmas && kind == SchedulerKind::Euler {
                    let k = karras(sig[0], sig[n - 1], n);
                    sig = k.iter().map(|&s| s as f32 as f64).collect();
                    k.iter()
                        .map(|&s| sigma_to_t(s, &log_sigmas) as f32 as f64)
                        .collect()
                } else {
                    ts
                };
                sig.push(0.0);
                (ts, sig)
            }
            SchedulerKind::Ddim => {
                let ts = match spacing.as_str() {
                    "linspace" => np_linspace(0.0, (t_train - 1) as f64, n)
                        .into_iter()
                        .rev()
                        .map(f64::round)
                        .collect(),
                    "leading" => {
                        let ratio = t_train / n;
                        (0..n).rev().map(|i| (i * ratio) as f64 + offset).collect()
                    }
                    _ => trailing(t_train, n),
                };
                (ts, Vec::new())
            }
            SchedulerKind::DpmPlusPlus2M => {
                let mut ts: Vec<f64> = match spacing.as_str() {
                    "linspace" => {
                        let mut v: Vec<f64> = np_linspace(0.0, (t_train - 1) as f64, n + 1)
                            .into_iter()
                            .map(f64::round)
                            .collect();
                        v.reverse();
                        v.truncate(n);
                        v
                    }
                    "leading" => {
                        let ratio = t_train / (n + 1);
                        (1..=n).rev().map(|i| (i * ratio) as f64 + offset).collect()
                    }
                    _ => trailing(t_train, n),
                };
                let mut sig: Vec<f64> = if cfg.use_karras_sigmas {
                    let s = karras(sigmas_full[t_train - 1], sigmas_full[0], n);
                    ts = s
                        .iter()
                        .map(|&x| sigma_to_t(x, &log_sigmas).round())
                        .collect();
                    s
                } else {
                    ts.iter().map(|&t| interp_grid(t, &sigmas_full)).collect()
                };
                sig = sig.into_iter().map(|s| s as f32 as f64).collect();
                sig.push(0.0);
                (ts, sig)
            }
            SchedulerKind::Lcm => {
                let original = cfg.original_inference_steps;
                if original == 0 || original > t_train {
                    return Err(param(
                        "original_inference_steps",
                        original,
                        format!("between 1 and {t_train}"),
                    ));
                }
                let k = t_train / original;
                let origin: Vec<f64> = (1..=original).rev().map(|i| (i * k) as f64 - 1.0).collect();
                if origin.len() / n < 1 {
                    return Err(param(
                        "steps",
                        n,
                        format!(
                            "at most {} for LCM (original_inference_steps)",
                            origin.len()
                        ),
                    ));
                }
                let ts = (0..n)
                    .map(|i| origin[((i as f64) * origin.len() as f64 / n as f64).floor() as usize])
                    .collect();
                (ts, Vec::new())
            }
        };
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0] as f64
        };
        Ok(Scheduler {
            kind,
            prediction,
            clip_sample: cfg.clip_sample,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
            sigmas,
            spacing,
            num_train: t_train,
            timestep_scaling: cfg.timestep_scaling,
            begin: 0,
            last_denoised: None,
        })
    }

    /// The algorithm.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The timestep the model sees at each step (fractional for some Euler settings).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Sigmas per step plus a final 0, for sigma-based samplers (else empty).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let max = self.sigmas.iter().cloned().fold(0.0, f64::max);
                if self.spacing == "linspace" || self.spacing == "trailing" {
                    max
                } else {
                    (max * max + 1.0).sqrt()
                }
            }
            _ => 1.0,
        }
    }

    /// The first step to run for img2img at `strength` (diffusers' `get_timesteps`:
    /// the last `int(steps * strength)` steps are run), and makes it this scheduler's
    /// begin index. Errors when no step would run.
    pub fn begin_for_strength(&mut self, strength: f64) -> Result<usize, SchedulerError> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(param("strength", strength, "a number in [0, 1]"));
        }
        let n = self.timesteps.len();
        let run = ((n as f64 * strength) as usize).min(n);
        if run == 0 {
            return Err(param(
                "strength",
                strength,
                format!("large enough that strength x steps ({n}) >= 1 (no step would run)"),
            ));
        }
        self.begin = n - run;
        Ok(self.begin)
    }

    /// The first step run (0 unless set by [`begin_for_strength`](Self::begin_for_strength)).
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Coefficients (a, b) of diffusers' `add_noise` at step `i`: noisy = a * x0 + b * noise.
    pub fn add_noise_coefs(&self, i: usize) -> (f64, f64) {
        match self.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => (1.0, self.sigmas[i]),
            SchedulerKind::DpmPlusPlus2M => {
                let sigma = self.sigmas[i];
                let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
                (alpha, sigma * alpha)
            }
            SchedulerKind::Ddim | SchedulerKind::Lcm => {
                let a = self.alpha(self.timesteps[i]);
                (a.sqrt(), (1.0 - a).sqrt())
            }
        }
    }

    /// Factor applied to the sample before it enters the model at step `i`.
    pub fn input_scale(&self, i: usize) -> f64 {
        match self.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                1.0 / (self.sigmas[i] * self.sigmas[i] + 1.0).sqrt()
            }
            _ => 1.0,
        }
    }

    fn alpha(&self, t: f64) -> f64 {
        self.alphas_cumprod[t as usize] as f64
    }

    /// x0 from (sample, model output) at alphas_cumprod `a`.
    fn x0_from_alpha(&self, a: f64) -> (f64, f64) {
        let b = 1.0 - a;
        match self.prediction {
            Prediction::Epsilon => (1.0 / a.sqrt(), -b.sqrt() / a.sqrt()),
            Prediction::VPrediction => (a.sqrt(), -b.sqrt()),
        }
    }

    /// x0 from (sample, model output) at noise level sigma (sample unscaled).
    fn x0_from_sigma(&self, sigma: f64) -> (f64, f64) {
        match self.prediction {
            Prediction::Epsilon => (1.0, -sigma),
            Prediction::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                (1.0 / s2, -sigma / s2.sqrt())
            }
        }
    }

    /// The coefficients of step `i`.
    pub fn plan(&self, i: usize) -> StepPlan {
        let n = self.timesteps.len();
        let t = self.timesteps[i];
        let none = |denoised: DenoisedPlan| StepPlan {
            denoised,
            sample: 0.0,
            denoised_coef: 0.0,
            prev_denoised: 0.0,
            noise: 0.0,
        };
        match self.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let (sigma, sigma_next) = (self.sigmas[i], self.sigmas[i + 1]);
                let (cs, cm) = self.x0_from_sigma(sigma);
                let denoised = DenoisedPlan {
                    sample: cs,
                    model: cm,
                    clip: None,
                };
                let (dt, noise) = if self.kind == SchedulerKind::Euler {
                    (sigma_next - sigma, 0.0)
                } else {
                    let up = (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next)
                        / (sigma * sigma))
                        .sqrt();
                    let down = (sigma_next * sigma_next - up * up).sqrt();
                    (down - sigma, up)
                };
                // prev = sample + (sample - x0) / sigma * dt
                StepPlan {
                    sample: 1.0 + dt / sigma,
                    denoised_coef: -dt / sigma,
                    noise,
                    ..none(denoised)
                }
            }
            SchedulerKind::Ddim => {
                let prev_t = t - (self.num_train / n) as f64;
                let a = self.alpha(t);
                let a_prev = if prev_t >= 0.0 {
                    self.alpha(prev_t)
                } else {
                    self.final_alpha_cumprod
                };
                let (cs, cm) = self.x0_from_alpha(a);
                let denoised = DenoisedPlan {
                    sample: cs,
                    model: cm,
                    clip: self.clip_sample.then_some(1.0),
                };
                // eps = (sample - sqrt(a) x0) / sqrt(1 - a); prev = sqrt(a') x0 + sqrt(1 - a') eps
                let k = (1.0 - a_prev).sqrt() / (1.0 - a).sqrt();
                StepPlan {
                    sample: k,
                    denoised_coef: a_prev.sqrt() - k * a.sqrt(),
                    ..none(denoised)
                }
            }
            SchedulerKind::DpmPlusPlus2M => {
                let alpha_sigma = |s: f64| {
                    let alpha = 1.0 / (s * s + 1.0).sqrt();
                    (alpha, s * alpha)
                };
                let (a_s0, s_s0) = alpha_sigma(self.sigmas[i]);
                let (a_t, s_t) = alpha_sigma(self.sigmas[i + 1]);
                // denoised = (sample - sigma_s0 * eps) / alpha_s0, or alpha*sample - sigma*v
                let (cs, cm) = match self.prediction {
                    Prediction::Epsilon => (1.0 / a_s0, -s_s0 / a_s0),
                    Prediction::VPrediction => (a_s0, -s_s0),
                };
                let denoised = DenoisedPlan {
                    sample: cs,
                    model: cm,
                    clip: None,
                };
                let lambda = |a: f64, s: f64| a.ln() - s.ln();
                let h = lambda(a_t, s_t) - lambda(a_s0, s_s0);
                let phi = (-h).exp() - 1.0; // -1 when the next sigma is 0
                let ratio = if s_t == 0.0 { 0.0 } else { s_t / s_s0 };
                let first_order = i == self.begin || i == n - 1;
                if first_order {
                    StepPlan {
                        sample: ratio,
                        denoised_coef: -a_t * phi,
                        ..none(denoised)
                    }
                } else {
                    let (a_s1, s_s1) = alpha_sigma(self.sigmas[i - 1]);
                    let h0 = lambda(a_s0, s_s0) - lambda(a_s1, s_s1);
                    let r0 = h0 / h;
                    // D0 = m0, D1 = (m0 - m1) / r0; x = ratio*sample - a_t*phi*D0 - 0.5*a_t*phi*D1
                    let c = -0.5 * a_t * phi / r0;
                    StepPlan {
                        sample: ratio,
                        denoised_coef: -a_t * phi + c,
                        prev_denoised: -c,
                        ..none(denoised)
                    }
                }
            }
            SchedulerKind::Lcm => {
                let a = self.alpha(t);
                let last = i == n - 1;
                let prev_t = if last { t } else { self.timesteps[i + 1] };
                let a_prev = if prev_t >= 0.0 {
                    self.alpha(prev_t)
                } else {
                    self.final_alpha_cumprod
                };
                let (sigma_data, scaled) = (0.5f64, t * self.timestep_scaling);
                let c_skip = sigma_data * sigma_data / (scaled * scaled + sigma_data * sigma_data);
                let c_out = scaled / (scaled * scaled + sigma_data * sigma_data).sqrt();
                let (cs, cm) = self.x0_from_alpha(a);
                let denoised = DenoisedPlan {
                    sample: c_out * cs + c_skip,
                    model: c_out * cm,
                    clip: None,
                };
                if last {
                    StepPlan {
                        denoised_coef: 1.0,
                        ..none(denoised)
                    }
                } else {
                    StepPlan {
                        denoised_coef: a_prev.sqrt(),
                        noise: (1.0 - a_prev).sqrt(),
                        ..none(denoised)
                    }
                }
            }
        }
    }

    /// Whether step `i` consumes fresh noise.
    pub fn needs_noise(&self, i: usize) -> bool {
        self.plan(i).noise != 0.0
    }

    /// Applies step `i` on the host: returns the next sample. `noise` is required when
    /// [`needs_noise`](Self::needs_noise) says so. Keeps the denoised estimate for the
    /// next DPM++ step.
    pub fn step_cpu(
        &mut self,
        i: usize,
        model_output: &[f32],
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<Vec<f32>, SchedulerError> {
        if i >= self.timesteps.len() {
            return Err(param(
                "step",
                i,
                format!("below the number of steps ({})", self.timesteps.len()),
            ));
        }
        if model_output.len() != sample.len() {
            return Err(param(
                "model_output",
                format!("{} values", model_output.len()),
                format!("{} values, as the sample", sample.len()),
            ));
        }
        let p = self.plan(i);
        if p.noise != 0.0 && noise.is_none_or(|n| n.len() != sample.len()) {
            return Err(param(
                "noise",
                "missing or mis-sized",
                format!("{} values", sample.len()),
            ));
        }
        let denoised: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&s, &m)| {
                let d = p.denoised.sample * s as f64 + p.denoised.model * m as f64;
                (match p.denoised.clip {
                    Some(c) => d.clamp(-c, c),
                    None => d,
                }) as f32
            })
            .collect();
        let prev = self.last_denoised.as_deref();
        let out = (0..sample.len())
            .map(|j| {
                let mut v = p.sample * sample[j] as f64 + p.denoised_coef * denoised[j] as f64;
                if p.prev_denoised != 0.0 {
                    v += p.prev_denoised * prev.map_or(0.0, |d| d[j] as f64);
                }
                if p.noise != 0.0 {
                    v += p.noise * noise.expect("checked above")[j] as f64;
                }
                v as f32
            })
            .collect();
        self.last_denoised = Some(denoised);
        Ok(out)
    }
}

/// diffusers' trailing spacing: round(arange(T, 0, -T/n)) - 1.
fn trailing(t_train: usize, n: usize) -> Vec<f64> {
    let ratio = t_train as f64 / n as f64;
    (0..n)
        .map(|i| (t_train as f64 - i as f64 * ratio).round() - 1.0)
        .collect()
}

/// numpy.linspace in f64 (endpoint included).
fn np_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                end
            } else {
                start + step * i as f64
            }
        })
        .collect()
}
