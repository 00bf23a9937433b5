//! fovea's developer tasks, run as `cargo xtask <task>`:
//!
//! - `shaders [FILE.wgsl ...]`: validate every registered kernel variant with naga and
//!   translate it to SPIR-V, MSL, HLSL and GLSL (or just the named files).
//! - `ci`: everything CI checks, in order (fmt, clippy, shaders, tests on Vulkan,
//!   kernel tests on GL, the wasm bundle and the browser test, docs).
//! - `web`: build the browser bundle (crates/fovea-web for wasm32, wasm-bindgen) into
//!   web/pkg and print its size.
//! - `serve [--port N]`: serve web/ and the model folders on 127.0.0.1 (default 8080).
//! - `fixtures`: regenerate tests/fixtures from diffusers with
//!   tests/fixtures/make_fixtures.py (needs Python with torch and diffusers; set
//!   `PYTHON` to choose the interpreter). `cargo test` never needs Python.
//! - `fuzz [--seconds N] [--target NAME] [--seed S]`: fuzz fovea's loaders (safetensors,
//!   configs, tokenizers, init images, the page's parameters) with crates/fovea-fuzz, N
//!   seconds per target (default 30); crash inputs go to target/fuzz/.
//! - `peer [ARGS ...]`: build fovea (release) and time it against PyTorch on the same CPU
//!   with tests/peer/compare.py (same kernel shapes, the default model's parts, a whole
//!   generation; prints the ratios, writes target/peer.json). ARGS go to the script.

mod shaders;
mod web;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("shaders") => run_shaders(&args[1..]),
        Some("ci") => run_ci(),
        Some("fixtures") => run_fixtures(),
        Some("peer") => run_peer(&args[1..]),
        Some("fuzz") => run_fuzz(&args[1..]),
        Some("web") => web::build(None),
        Some("serve") => match args.get(1).map(String::as_str) {
            None => web::serve(8080),
            Some("--port") => match args.get(2).and_then(|p| p.parse().ok()) {
                Some(port) => web::serve(port),
                None => Err("--port needs a number".into()),
            },
            Some(other) => Err(format!("unknown serve option `{other}`")),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <shaders [FILE.wgsl ...] | ci | web | serve [--port N] | fixtures | fuzz [--seconds N] [--target NAME] | peer [ARGS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_shaders(files: &[String]) -> Result<(), String> {
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut report = |r: Result<shaders::Translated, String>| match r {
        Ok(t) => {
            checked += 1;
            let parts: Vec<String> = t
                .outputs
                .iter()
                .map(|(target, out)| match out {
                    Ok(bytes) => format!("{} {}B", target.name(), bytes),
                    Err(_) => format!("{} n/a", target.name()),
                })
                .collect();
            println!("ok   {:<58} {}", t.label, parts.join("  "));
            for (target, out) in &t.outputs {
                if let Err(why) = out {
                    println!("     {:<58} {} not targeted: {why}", "", target.name());
                }
            }
        }
        Err(e) => {
            println!("FAIL {e}");
            failures.push(e);
        }
    };
    if files.is_empty() {
        for v in fovea_shaders::all_variants() {
            report(shaders::check_variant(&v));
        }
    } else {
        for f in files {
            report(shaders::check_file(&PathBuf::from(f)));
        }
    }
    if failures.is_empty() {
        println!("{checked} shader modules validated and translated");
        Ok(())
    } else {
        Err(format!("{} shader module(s) failed", failures.len()))
    }
}

fn run_fuzz(args: &[String]) -> Result<(), String> {
    let mut cmd: Vec<&str> = vec!["run", "--release", "-p", "fovea-fuzz", "--"];
    if !args.iter().any(|a| a == "--seconds") {
        cmd.extend(["--seconds", "30"]);
    }
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd, &[])
}

fn run_peer(args: &[String]) -> Result<(), String> {
    cargo(&["build", "--release", "-p", "fovea-cli"], &[])?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "tests/peer/compare.py";
    println!("\n==> {python} {script} {}", args.join(" "));
    let status = Command::new(&python)
        .arg(script)
        .args(args)
        .status()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{script} failed ({status})"))
    }
}

fn run_fixtures() -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "tests/fixtures/make_fixtures.py";
    println!("==> {python} {script}");
    let status = Command::new(&python)
        .arg(script)
        .status()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script} failed ({status}); it needs torch and diffusers 0.42 (pip install torch diffusers transformers safetensors)"
        ))
    }
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("\n==> {}cargo {}", env_prefix(envs), args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn env_prefix(envs: &[(&str, &str)]) -> String {
    envs.iter().map(|(k, v)| format!("{k}={v} ")).collect()
}

fn run_ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    println!("\n==> cargo xtask shaders");
    run_shaders(&[])?;
    // Every test on Vulkan (lavapipe on CI machines).
    cargo(&["test", "--workspace"], &[("WGPU_BACKEND", "vulkan")])?;
    // Head skipping again with the GPU class's attention kernel (lavapipe is detected as
    // software, whose query-per-lane kernel the run above used).
    cargo(
        &["test", "--workspace", "--test", "head_skipping"],
        &[("WGPU_BACKEND", "vulkan"), ("FOVEA_ADAPTER_CLASS", "gpu")],
    )?;
    // And with the blocked kernels SwiftShader runs (the page's adapter): their attention
    // has its own query tile, which the head lists' indirect dispatches follow.
    cargo(
        &["test", "--workspace", "--test", "head_skipping"],
        &[
            ("WGPU_BACKEND", "vulkan"),
            ("FOVEA_MATMUL_KERNEL", "cpu-blocked"),
        ],
    )?;
    // The kernel tests again on wgpu's GL backend: no f16, no subgroups, other limits.
    // One test thread: wgpu's GL context lock gives up (panics) after waiting a second
    // for another thread, and llvmpipe GL kernels can hold it longer than that.
    // `--workspace` keeps the feature set of the run above, so nothing is rebuilt.
    cargo(
        &[
            "test",
            "--workspace",
            "--test",
            "kernels",
            "--test",
            "head_skipping",
            "--",
            "--test-threads=1",
        ],
        &[("WGPU_BACKEND", "gl")],
    )?;
    // The browser bundle (builds every shared crate for wasm32, warnings denied), then
    // the page end to end in headless Chromium on SwiftShader.
    web::build(Some("-D warnings"))?;
    web::browser_test()?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    println!("\nci: all checks passed");
    Ok(())
}
