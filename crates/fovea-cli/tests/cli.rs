//! The `fovea` binary as a user runs it.

use std::process::Command;

fn fovea(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fovea"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run fovea");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn info_lists_adapters_with_features_and_limits() {
    let (ok, text) = fovea(&["info"]);
    assert!(ok, "{text}");
    for needle in [
        "adapter 0:",
        "backend",
        "shader-f16",
        "storage binding",
        "usable by fovea",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn self_check_runs_every_kernel_and_passes() {
    let (ok, text) = fovea(&["info", "--self-check", "--seed", "7"]);
    assert!(ok, "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    for op in [
        "matmul",
        "conv2d",
        "group_norm",
        "attention",
        "timestep_embedding",
    ] {
        assert!(text.contains(op), "self-check skipped {op}:\n{text}");
    }
}

#[test]
fn unknown_commands_fail_with_usage() {
    let (ok, text) = fovea(&["frobnicate"]);
    assert!(!ok);
    assert!(text.contains("Usage"), "{text}");
}

fn tiny_model() -> String {
    format!(
        "{}/../../tests/fixtures/tiny_pipeline",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn generate_writes_a_png_and_a_summary() {
    let out = std::env::temp_dir().join(format!("fovea-cli-{}.png", std::process::id()));
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--prompt",
        "a red apple",
        "--steps",
        "3",
        "--seed",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    for needle in ["wrote", "steps/s", "peak GPU memory", "denoise"] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    let img = image::open(&out).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (16, 16));
    assert!(
        img.pixels().any(|p| p.0 != img.get_pixel(0, 0).0),
        "a flat image"
    );
    std::fs::remove_file(&out).ok();
}

#[test]
fn generate_refuses_bad_parameters_by_name() {
    for (args, needle) in [
        (vec!["--width", "18"], "`width` = 18"),
        (vec!["--steps", "0"], "`steps` = 0"),
        (vec!["--cfg", "NaN"], "`cfg` = NaN"),
        (vec!["--scheduler", "heun"], "heun"),
    ] {
        let model = tiny_model();
        let mut all = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "x",
            "-o",
            "/tmp/unused.png",
        ];
        all.extend(args);
        let (ok, text) = fovea(&all);
        assert!(!ok && text.contains(needle), "{all:?}:\n{text}");
    }
    let (ok, text) = fovea(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert!(!ok && text.contains("/nonexistent/model"), "{text}");
}
