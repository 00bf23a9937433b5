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
fn generate_keeps_its_pipeline_list_and_the_next_run_compiles_it_ahead() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-cache-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let lists = dir.join("fovea").join("pipelines");
    let run_text = |out: &std::path::Path| {
        let (ok, text) = fovea_with(
            &std::env::temp_dir(),
            &[("XDG_CACHE_HOME", dir.to_str())],
            &[
                "generate",
                "--model",
                &tiny_model(),
                "--prompt",
                "a red apple",
                "--steps",
                "2",
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert!(ok, "{text}");
        (std::fs::read(out).unwrap(), text)
    };
    let run = |out: &std::path::Path| {
        let (png, text) = run_text(out);
        assert!(!text.contains("first run of this model"), "{text}");
        png
    };
    let list = || {
        let files: Vec<_> = std::fs::read_dir(&lists).unwrap().collect();
        assert_eq!(files.len(), 1, "one list per adapter");
        let path = files.into_iter().next().unwrap().unwrap().path();
        (path.clone(), std::fs::read_to_string(path).unwrap())
    };
    // The first run says why its first steps are slow; the later ones do not.
    let (first, text) = run_text(&dir.join("a.png"));
    assert!(
        text.contains("first run of this model on this adapter"),
        "{text}"
    );
    let (path, text) = list();
    let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(entries.len() >= 5, "{text}");
    for line in &entries {
        let (ms, label) = line.split_once(' ').expect("`ms label`");
        assert!(ms.parse::<f64>().unwrap() >= 0.0, "{line}");
        assert!(label.contains(':') && label.contains('/'), "{line}");
    }
    // The second run compiles the list ahead on other threads: same picture, same list.
    assert_eq!(run(&dir.join("b.png")), first);
    let labels = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    };
    assert_eq!(labels(&list().1), labels(&text));
    // A damaged list is a hint that is ignored, then replaced by a good one.
    std::fs::write(
        &path,
        "garbage\n12 nokernel:f16/x\nx matmul:f32/matmul\n\u{0}\n",
    )
    .unwrap();
    assert_eq!(run(&dir.join("c.png")), first);
    assert_eq!(labels(&list().1), labels(&text));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generate_from_a_prompt_file_numbers_outputs_by_line() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("prompts.txt");
    std::fs::write(&list, "# two prompts\na red apple\n\n一只小猫\n").unwrap();
    let out = dir.join("img.png");
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--from-file",
        list.to_str().unwrap(),
        "--steps",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let a = image::open(dir.join("img_2.png")).unwrap().to_rgba8();
    let b = image::open(dir.join("img_4.png")).unwrap().to_rgba8();
    assert_ne!(a, b, "two prompts, one image");
    assert!(!dir.join("img_1.png").exists() && !dir.join("img_3.png").exists());
    // An empty list and a missing file are named.
    std::fs::write(&list, "# nothing\n\n").unwrap();
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--from-file",
        list.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("no prompts"), "{text}");
    let (ok, text) = fovea(&["generate", "--from-file", "/nonexistent/list.txt"]);
    assert!(!ok && text.contains("/nonexistent/list.txt"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_times_kernels_and_writes_json() {
    let out = std::env::temp_dir().join(format!("fovea-bench-{}.json", std::process::id()));
    let (ok, text) = fovea(&[
        "bench",
        "--unets",
        "none",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("GFLOP/s") && text.contains("matmul"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let kernels = report["kernels"].as_array().unwrap();
    // matmul and Linear at three shapes, 3x3 conv at two, attention, group norm, SiLU.
    assert_eq!(kernels.len(), 11);
    assert!(
        kernels
            .iter()
            .all(|k| k["rate_wall"].as_f64().unwrap() > 0.0)
    );
    std::fs::remove_file(&out).ok();
    for (args, needle) in [
        (vec!["--unets", "sd3", "--kernels", "none"], "unknown `sd3`"),
        (vec!["--kernels", "huge"], "`--kernels` = huge"),
        (vec!["--prune", "1.5"], "`--prune` = 1.5"),
        (vec!["--latents", "x"], "`--latents`: `x`"),
        (vec!["--latents", "12"], "`--latents`: 12"),
        (vec!["--batches", "0"], "`--batches`"),
        (vec!["--vae", "100"], "`--vae`: 100 px"),
        (vec!["--prune-share", "2"], "`--prune-share` = 2"),
    ] {
        let mut all = vec!["bench", "-o", "/tmp/unused.json"];
        all.extend(args);
        let (ok, text) = fovea(&all);
        assert!(!ok && text.contains(needle), "{all:?}:\n{text}");
    }
}

#[test]
fn generate_refuses_bad_parameters_by_name() {
    for (args, needle) in [
        (vec!["--width", "18"], "`width` = 18"),
        (vec!["--steps", "0"], "`steps` = 0"),
        (vec!["--cfg", "NaN"], "`cfg` = NaN"),
        (vec!["--scheduler", "heun"], "heun"),
        (vec!["--batch-count", "0"], "`--batch-count` = 0"),
        (
            vec!["--init-image", "/nonexistent/in.png"],
            "/nonexistent/in.png",
        ),
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

#[test]
fn img2img_with_batch_count_and_tiles() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-i2i-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An 18x18 two-colour image: resized to 16x16 (the model's granularity is 4).
    let src = dir.join("in.png");
    image::RgbaImage::from_fn(18, 18, |x, _| {
        if x < 9 {
            image::Rgba([200, 30, 30, 255])
        } else {
            image::Rgba([30, 30, 200, 255])
        }
    })
    .save(&src)
    .unwrap();
    let out = dir.join("out.png");
    let taesd = format!(
        "{}/../../tests/fixtures/tiny_taesd",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--prompt",
        "a frog",
        "--init-image",
        src.to_str().unwrap(),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "-b",
        "2",
        "--vae-tile",
        "8",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("2 steps") && text.contains("tiles"), "{text}");
    let (a, b) = (dir.join("out_1.png"), dir.join("out_2.png"));
    let (a, b) = (
        image::open(&a).unwrap().to_rgba8(),
        image::open(&b).unwrap().to_rgba8(),
    );
    assert_eq!(a.dimensions(), (16, 16));
    assert_ne!(a, b, "seeds seed and seed+1 gave the same image");
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--prompt",
        "a frog",
        "--steps",
        "2",
        "--taesd",
        &taesd,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok && out.exists(), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn pruning_prints_a_table_and_draws_a_heat_map() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, map) = (dir.join("out.png"), dir.join("map.png"));
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &tiny_model(),
        "--prompt",
        "a red apple, 高清",
        "--steps",
        "4",
        "--prune",
        "--prune-threshold",
        "0.9",
        "--prune-stats",
        "--prune-map",
        map.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    for needle in [
        "pruning: threshold 0.450",
        "detail words: 高清",
        "FLOPs skipped",
        "self",
        "cross",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    let heat = image::open(&map).unwrap().to_rgb8();
    // 4 steps x 8 attention layers, 12-pixel cells.
    assert_eq!(heat.dimensions(), (48, 96));
    for (args, needle) in [
        (
            vec!["--prune", "--prune-threshold", "2"],
            "`prune_threshold` = 2",
        ),
        (
            vec!["--prune", "--prune-skip", "maybe"],
            "`prune_skip` = maybe",
        ),
        (vec!["--prune-stats"], "need --prune"),
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
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prune_eval_writes_a_report() {
    let out = std::env::temp_dir().join(format!("fovea-cli-eval-{}", std::process::id()));
    let suite = format!(
        "{}/../../tests/prompts/prune_suite.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, text) = fovea(&[
        "prune-eval",
        "--model",
        &tiny_model(),
        "--suite",
        &suite,
        "--limit",
        "2",
        "--steps",
        "2",
        "--prune-threshold",
        "0.99",
        "--cfg-sweep",
        "1,12",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("[2/2]") && text.contains("SSIM"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);
    assert_eq!(json["cfg_sweep"].as_array().unwrap().len(), 2);
    assert!(json["rows"][0]["psnr_db"].is_number() || json["rows"][0]["psnr_db"].is_null());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| plain |") && md.contains("CFG sweep"), "{md}");
    let pairs = image::open(out.join("pairs.png")).unwrap();
    assert_eq!(pairs.height(), 2 * (16 + 4));
    let (ok, text) = fovea(&[
        "prune-eval",
        "--model",
        &tiny_model(),
        "--suite",
        "/nonexistent/suite.json",
    ]);
    assert!(!ok && text.contains("/nonexistent/suite.json"), "{text}");
    std::fs::remove_dir_all(&out).ok();
}

/// Runs fovea in `cwd` with `env` added (and `XDG_RUNTIME_DIR=/tmp` unless `env` removes
/// it by giving `None`).
fn fovea_with(
    cwd: &std::path::Path,
    env: &[(&str, Option<&str>)],
    args: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fovea"));
    cmd.args(args)
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", "/tmp");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run fovea");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Without XDG_RUNTIME_DIR, libwayland-client (probed by Mesa's drivers when wgpu
/// starts) printed "error: XDG_RUNTIME_DIR is invalid or not set in the environment."
/// on every run; fovea now points the variable at a private folder first. `-v` says so.
#[test]
fn a_run_without_xdg_runtime_dir_prints_no_driver_error() {
    let tmp = std::env::temp_dir();
    let (ok, text) = fovea_with(&tmp, &[("XDG_RUNTIME_DIR", None)], &["info"]);
    assert!(ok, "{text}");
    assert!(!text.contains("XDG_RUNTIME_DIR"), "{text}");
    assert!(!text.contains("error"), "{text}");
    let (ok, text) = fovea_with(
        &tmp,
        &[("XDG_RUNTIME_DIR", None), ("RUST_LOG", None)],
        &["-v", "info"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("XDG_RUNTIME_DIR was not set: using"),
        "{text}"
    );
    // A relative value is as invalid to libwayland as none.
    let (ok, text) = fovea_with(&tmp, &[("XDG_RUNTIME_DIR", Some("relative"))], &["info"]);
    assert!(ok && !text.contains("XDG_RUNTIME_DIR"), "{text}");
}

/// An installed binary run from any folder: FOVEA_MODEL names the model; a wrong one
/// is an error naming it, not a fall-back to another model.
#[test]
fn generate_from_another_folder_finds_the_model_through_fovea_model() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-elsewhere-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = tiny_model();
    let (ok, text) = fovea_with(
        &dir,
        &[("FOVEA_MODEL", Some(&model))],
        &[
            "generate",
            "--prompt",
            "a red apple",
            "--steps",
            "1",
            "-o",
            "here.png",
        ],
    );
    assert!(ok, "{text}");
    assert!(dir.join("here.png").is_file(), "{text}");
    let (ok, text) = fovea_with(
        &dir,
        &[("FOVEA_MODEL", Some("/nonexistent/fovea-model"))],
        &["generate", "--prompt", "x", "-o", "here.png"],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("FOVEA_MODEL=/nonexistent/fovea-model") && text.contains("model_index.json"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Parameters that need no model are refused before the model is even looked for
/// (`--model` points nowhere here, so reaching it would be a different error).
#[test]
fn generate_checks_outputs_scheduler_and_counts_before_loading() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-early-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a-folder.png")).unwrap();
    let folder = dir.join("a-folder.png");
    let missing = dir.join("missing/x.png");
    let missing_dir = format!("{} does not exist", dir.join("missing").display());
    let missing_map = dir.join("missing/map.png");
    for (args, needle) in [
        (vec!["-o", missing.to_str().unwrap()], missing_dir.as_str()),
        (vec!["-o", folder.to_str().unwrap()], "is a folder"),
        (vec!["-o", "/sys/fovea.png"], "cannot write there"),
        (vec!["-o", "x.jpg"], ".png extension"),
        (
            vec!["--scheduler", "heun"],
            "one of euler, euler_a, ddim, dpmpp_2m, lcm",
        ),
        (vec!["--batch-count", "20000"], "above the limit of 10000"),
        (
            vec!["--prune", "--prune-map", missing_map.to_str().unwrap()],
            "--prune-map",
        ),
    ] {
        let mut all = vec!["generate", "--model", "/nonexistent/model", "--prompt", "x"];
        if !args.contains(&"-o") {
            all.extend(["-o", "/tmp/unused.png"]);
        }
        all.extend(args);
        let (ok, text) = fovea(&all);
        assert!(!ok && text.contains(needle), "{all:?}:\n{text}");
        assert!(
            !text.contains("/nonexistent/model"),
            "{all:?} reached the model:\n{text}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Checks that need the model run after loading it and before the first step: a size
/// whose latents exceed the adapter (16384 px here: the op-level error used to be
/// `concat_channels: tensor (1, 2, ...) f16 needs ...`), steps past the scheduler's
/// training timesteps; an over-long prompt warns with its token count.
#[test]
fn generate_names_model_limits_in_user_terms() {
    let model = tiny_model();
    let base = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "x",
        "-o",
        "/tmp/unused.png",
    ];
    let mut all = base.to_vec();
    all.extend(["--width", "16384", "--height", "16384"]);
    let (ok, text) = fovea(&all);
    assert!(!ok, "{text}");
    for needle in [
        "16384x16384 is too large",
        "per buffer",
        "adapter's limit of 128 MiB",
        "largest square",
    ] {
        assert!(text.contains(needle), "missing `{needle}`:\n{text}");
    }
    assert!(
        !text.contains("concat_channels") && !text.contains("step 1"),
        "{text}"
    );
    let mut all = base.to_vec();
    all.extend(["--steps", "5000"]);
    let (ok, text) = fovea(&all);
    assert!(!ok && text.contains("num_train_timesteps"), "{text}");
    let long = "apple ".repeat(100);
    let out = std::env::temp_dir().join(format!("fovea-cli-long-{}.png", std::process::id()));
    let (ok, text) = fovea(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        &long,
        "--steps",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("tokens long; the text encoder reads the first 75"),
        "{text}"
    );
    std::fs::remove_file(&out).ok();
}
