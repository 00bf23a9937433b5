//! Samplers against diffusers: tests/fixtures/schedulers.json holds, per configuration,
//! the timesteps, sigmas and init_noise_sigma diffusers chose and a whole trajectory
//! driven by recorded model outputs and noise (written by tests/fixtures/make_fixtures.py).
//! Bounds: timesteps within 1e-3 (they are f32 in diffusers), sigmas and scales within
//! 1e-6 relative, every step's sample within 1e-5 of the trajectory's scale.

use std::path::Path;

use fovea_models::SchedulerConfig;
use fovea_pipeline::{Scheduler, SchedulerKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    generator: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    class_name: String,
    config: serde_json::Value,
    steps: usize,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    initial_sample: Vec<f32>,
    #[serde(default)]
    sigmas: Vec<f64>,
    trajectory: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    timestep: f64,
    input_scale: f64,
    model_output: Vec<f32>,
    noise: Vec<f32>,
    prev_sample: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/schedulers.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn every_sampler_matches_diffusers_step_for_step() {
    let fx = fixture();
    eprintln!("fixtures from {}", fx.generator);
    assert!(fx.cases.len() >= 14);
    for case in &fx.cases {
        let cfg: SchedulerConfig = serde_json::from_value(case.config.clone()).unwrap();
        let kind = SchedulerKind::parse(&case.class_name).unwrap();
        let mut s =
            Scheduler::new(kind, &cfg, case.steps).unwrap_or_else(|e| panic!("{}: {e}", case.name));

        assert_eq!(
            s.timesteps().len(),
            case.timesteps.len(),
            "{}: step count",
            case.name
        );
        for (i, (got, want)) in s.timesteps().iter().zip(&case.timesteps).enumerate() {
            assert!(
                (got - want).abs() < 1e-3,
                "{}: timestep {i}: got {got}, diffusers {want}",
                case.name
            );
        }
        for (i, (got, want)) in s.sigmas().iter().zip(&case.sigmas).enumerate() {
            assert!(
                rel(*got, *want) < 1e-6 || (got - want).abs() < 1e-9,
                "{}: sigma {i}: got {got}, diffusers {want}",
                case.name
            );
        }
        assert!(
            rel(s.init_noise_sigma(), case.init_noise_sigma) < 1e-6,
            "{}: init_noise_sigma {} vs {}",
            case.name,
            s.init_noise_sigma(),
            case.init_noise_sigma
        );

        let mut sample = case.initial_sample.clone();
        let mut worst = 0.0f64;
        for (i, step) in case.trajectory.iter().enumerate() {
            assert!((step.timestep - s.timesteps()[i]).abs() < 1e-3);
            assert!(
                rel(s.input_scale(i), step.input_scale) < 1e-6,
                "{}: input scale at step {i}: {} vs {}",
                case.name,
                s.input_scale(i),
                step.input_scale
            );
            let noise = s.needs_noise(i).then_some(step.noise.as_slice());
            sample = s.step_cpu(i, &step.model_output, &sample, noise).unwrap();
            let scale = step
                .prev_sample
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs() as f64))
                .max(1e-6);
            let err = sample
                .iter()
                .zip(&step.prev_sample)
                .map(|(a, b)| (*a as f64 - *b as f64).abs() / scale)
                .fold(0.0, f64::max);
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{}: step {i} (t={}): normalised error {err:.2e}",
                case.name,
                step.timestep
            );
        }
        eprintln!(
            "ok {} ({} steps): worst step error {worst:.1e}",
            case.name, case.steps
        );
    }
}

#[test]
fn bad_scheduler_parameters_are_named() {
    let cfg: SchedulerConfig = serde_json::from_str("{}").unwrap();
    let e = Scheduler::new(SchedulerKind::Euler, &cfg, 0).unwrap_err();
    assert!(e.to_string().contains("`steps` = 0"), "{e}");
    let e = Scheduler::new(SchedulerKind::Euler, &cfg, 5000).unwrap_err();
    assert!(e.to_string().contains("5000"), "{e}");
    let e = SchedulerKind::parse("heun").unwrap_err();
    assert!(
        e.to_string().contains("heun") && e.to_string().contains("dpmpp_2m"),
        "{e}"
    );
    let bad: SchedulerConfig = serde_json::from_str(r#"{"prediction_type": "sample"}"#).unwrap();
    let e = Scheduler::new(SchedulerKind::Ddim, &bad, 4).unwrap_err();
    assert!(e.to_string().contains("prediction_type"), "{e}");
    let lcm: SchedulerConfig = serde_json::from_str("{}").unwrap();
    let e = Scheduler::new(SchedulerKind::Lcm, &lcm, 51).unwrap_err();
    assert!(e.to_string().contains("LCM"), "{e}");
    let mut s = Scheduler::new(SchedulerKind::EulerAncestral, &cfg, 2).unwrap();
    let e = s.step_cpu(0, &[0.0; 4], &[0.0; 4], None).unwrap_err();
    assert!(e.to_string().contains("noise"), "{e}");
    let e = s
        .step_cpu(0, &[0.0; 3], &[0.0; 4], Some(&[0.0; 4]))
        .unwrap_err();
    assert!(e.to_string().contains("model_output"), "{e}");
}
