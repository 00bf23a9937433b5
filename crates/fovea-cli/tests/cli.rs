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
