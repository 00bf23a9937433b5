//! The fuzz targets: each takes arbitrary bytes, runs one loader of fovea's on them the
//! way fovea does on user input, and returns a short label of the outcome (`ok`, or the
//! first words of the error). A target must never panic, hang or abort; an `Err` from
//! the loader is the expected answer to bad input.

use std::path::Path;

use fovea_models::config::parse_json;
use fovea_models::tokenizer::Files;
use fovea_models::{
    ClipTextConfig, ClipTokenizer, SchedulerConfig, TinyVaeConfig, UNetConfig, VaeConfig, Weights,
};

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Name on the command line.
    pub name: &'static str,
    /// What it feeds the bytes to.
    pub about: &'static str,
    /// Runs the loader; returns an outcome label.
    pub run: fn(&[u8]) -> String,
    /// Seed inputs (valid files of this kind).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "safetensors",
        about: "safetensors header and tensor table (Weights::from_bytes), then every tensor read as f32",
        run: safetensors_target,
        seeds: crate::seeds::safetensors,
    },
    Target {
        name: "config",
        about: "config.json of every component (UNet, VAE, text encoder, scheduler, TAESD): parse + validate",
        run: config_target,
        seeds: crate::seeds::configs,
    },
    Target {
        name: "tokenizer",
        about: "tokenizer.json, or vocab.json + merges.txt (split at the first NUL), then encoding prompts",
        run: tokenizer_target,
        seeds: crate::seeds::tokenizers,
    },
    Target {
        name: "init_image",
        about: "init images (PNG/JPEG) through the bounded decoder the CLI uses",
        run: init_image_target,
        seeds: crate::seeds::images,
    },
    Target {
        name: "web_params",
        about: "the page's generate() parameter object (JSON) -> the pipeline's parameters",
        run: web_params_target,
        seeds: crate::seeds::web_params,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// An outcome label: "ok" or the error's first words (the fuzzer keeps inputs that
/// reach a label it has not seen: a cheap stand-in for coverage).
fn label<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => {
            let text = e.to_string();
            // Words only: numbers and quoted names vary with the input, the kind of error
            // does not.
            text.split_whitespace()
                .filter(|w| w.chars().all(|c| c.is_alphabetic() || c == '_'))
                .take(6)
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

fn safetensors_target(data: &[u8]) -> String {
    let w = match Weights::from_bytes(vec![("fuzz.safetensors".into(), data.to_vec())]) {
        Ok(w) => w,
        Err(e) => return label::<(), _>(&Err(e)),
    };
    let mut out = String::from("ok");
    for key in w.keys() {
        let r = w.get(key).and_then(|v| v.to_f32());
        if r.is_err() {
            out = label(&r);
        }
    }
    out
}

fn config_target(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let p = Path::new("fuzz/config.json");
    let labels = [
        label(&parse_json::<UNetConfig>(&text, p).and_then(|c| c.validate(p))),
        label(&parse_json::<VaeConfig>(&text, p).and_then(|c| c.validate(p))),
        label(&parse_json::<ClipTextConfig>(&text, p).and_then(|c| c.validate(p))),
        label(&parse_json::<SchedulerConfig>(&text, p).and_then(|c| c.validate(p))),
        label(&parse_json::<TinyVaeConfig>(&text, p).and_then(|c| c.validate(p))),
    ];
    // Also the derived quantities fovea computes from a valid config.
    if let Ok(c) = parse_json::<VaeConfig>(&text, p)
        && c.validate(p).is_ok()
    {
        let _ = c.downscale();
    }
    if let Ok(c) = parse_json::<TinyVaeConfig>(&text, p)
        && c.validate(p).is_ok()
    {
        let _ = c.upscale();
    }
    labels.join(" | ")
}

fn tokenizer_target(data: &[u8]) -> String {
    let files = match data.iter().position(|&b| b == 0) {
        Some(i) => Files {
            tokenizer_json: None,
            vocab_json: Some(String::from_utf8_lossy(&data[..i]).into_owned()),
            merges_txt: Some(String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        },
        None => Files {
            tokenizer_json: Some(String::from_utf8_lossy(data).into_owned()),
            vocab_json: None,
            merges_txt: None,
        },
    };
    let tok = match ClipTokenizer::from_files(files, None, 77, "fuzz") {
        Ok(t) => t,
        Err(e) => return label::<(), _>(&Err(e)),
    };
    for prompt in [
        "a red apple",
        "蓝色背景上的一只小狗",
        "",
        &"very ".repeat(100),
    ] {
        let r = tok.encode(prompt);
        if let Ok(ids) = &r {
            assert!(
                ids.len() <= tok.max_len(),
                "encode returned more than max_len ids"
            );
        }
        if r.is_err() {
            return label(&r);
        }
    }
    "ok".into()
}

fn init_image_target(data: &[u8]) -> String {
    label(&fovea_pipeline::image_io::decode_image(data, "fuzz.png"))
}

fn web_params_target(data: &[u8]) -> String {
    let p: fovea_web::params::WebParams = match serde_json::from_slice(data) {
        Ok(p) => p,
        Err(e) => return label::<(), _>(&Err(e)),
    };
    label(&p.to_generate(128))
}
