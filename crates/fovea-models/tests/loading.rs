//! Reading diffusers configs and safetensors weights, and every way they can be wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fovea_models::config::{parse_json, read_json};
use fovea_models::{
    ClipTextConfig, ModelError, PerBlock, SchedulerConfig, UNetConfig, VaeConfig, Weights,
};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/configs")
        .join(name)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fovea-models-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sd15_and_sd21_unet_configs_follow_diffusers_head_conventions() {
    let path = fixture("sd15_unet.json");
    let sd15: UNetConfig = read_json(&path).unwrap();
    sd15.validate(&path).unwrap();
    // SD 1.x: `attention_head_dim: 8` is really the head count (head_dim 40..160).
    assert_eq!(sd15.attention_head_dim, PerBlock::One(8));
    assert_eq!(
        (0..4).map(|i| sd15.heads(i)).collect::<Vec<_>>(),
        [8, 8, 8, 8]
    );
    assert_eq!(sd15.block_out_channels[0] / sd15.heads(0), 40);
    assert!(!sd15.use_linear_projection && !sd15.upcast_attention);
    assert_eq!(sd15.cross_attention_dim, 768);

    let path = fixture("sd21_unet.json");
    let sd21: UNetConfig = read_json(&path).unwrap();
    sd21.validate(&path).unwrap();
    // SD 2.x: per-block head counts giving head_dim 64 everywhere.
    assert_eq!(
        (0..4)
            .map(|i| sd21.block_out_channels[i] / sd21.heads(i))
            .collect::<Vec<_>>(),
        [64, 64, 64, 64]
    );
    assert!(sd21.use_linear_projection && sd21.upcast_attention);
    assert_eq!(sd21.cross_attention_dim, 1024);
    // Defaults that the file omits come from diffusers' constructor.
    assert_eq!(sd21.transformer_layers_per_block, PerBlock::One(1));
    assert_eq!(sd21.conv_in_kernel, 3);
}

#[test]
fn vae_text_encoder_and_scheduler_configs_parse() {
    let path = fixture("sd_vae.json");
    let vae: VaeConfig = read_json(&path).unwrap();
    vae.validate(&path).unwrap();
    assert_eq!(
        vae.scaling_factor, 0.18215,
        "diffusers' default scaling factor"
    );
    assert_eq!(vae.downscale(), 8);

    let path = fixture("sd21_text_encoder.json");
    let clip: ClipTextConfig = read_json(&path).unwrap();
    clip.validate(&path).unwrap();
    assert_eq!(
        (
            clip.hidden_act.as_str(),
            clip.hidden_size,
            clip.num_hidden_layers
        ),
        ("gelu", 1024, 23)
    );

    let path = fixture("sd15_scheduler.json");
    let s: SchedulerConfig = read_json(&path).unwrap();
    s.validate(&path).unwrap();
    assert_eq!(s.class_name.as_deref(), Some("PNDMScheduler"));
    assert_eq!(
        (s.beta_schedule.as_str(), s.steps_offset, s.set_alpha_to_one),
        ("scaled_linear", 1, false)
    );
    assert_eq!(
        (s.prediction_type.as_str(), s.timestep_spacing.as_str()),
        ("epsilon", "leading")
    );
}

#[test]
fn unsupported_config_values_name_the_field() {
    let p = Path::new("unet/config.json");
    let cases = [
        (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
        (
            r#"{"addition_embed_type": "text_time"}"#,
            "addition_embed_type",
        ),
        (
            r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
            "down_block_types",
        ),
        (r#"{"attention_head_dim": [5, 10]}"#, "attention_head_dim"),
        (r#"{"act_fn": "gelu"}"#, "act_fn"),
        (r#"{"norm_num_groups": 7}"#, "norm_num_groups"),
    ];
    for (json, field) in cases {
        let c: UNetConfig = parse_json(json, p).unwrap();
        let e = c.validate(p).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { field: f, .. } if f.contains(field)),
            "{json}: {e}"
        );
        assert!(e.to_string().starts_with("unet/config.json"), "{e}");
    }
    let s: SchedulerConfig = parse_json(r#"{"prediction_type": "sample"}"#, p).unwrap();
    assert!(
        s.validate(p)
            .unwrap_err()
            .to_string()
            .contains("prediction_type")
    );
    let c: ClipTextConfig = parse_json(r#"{"hidden_act": "relu"}"#, p).unwrap();
    assert!(
        c.validate(p)
            .unwrap_err()
            .to_string()
            .contains("hidden_act")
    );
}

#[test]
fn malformed_config_json_names_the_file_and_field() {
    let p = Path::new("unet/config.json");
    let e = parse_json::<UNetConfig>(r#"{"layers_per_block": "two"}"#, p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unet/config.json") && msg.contains("invalid type") && msg.contains("line 1"),
        "{msg}"
    );
    let e = read_json::<UNetConfig>(Path::new("/nonexistent/unet/config.json")).unwrap_err();
    assert!(
        matches!(e, ModelError::Io { .. })
            && e.to_string().contains("/nonexistent/unet/config.json"),
        "{e}"
    );
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(k, dt, shape, data)| {
            (
                k.to_string(),
                TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn weights_read_f32_f16_bf16_by_key_across_shards() {
    let dir = temp_dir("shards");
    let w: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let h: Vec<half::f16> = w.iter().map(|&x| half::f16::from_f32(x)).collect();
    let b: Vec<half::bf16> = w.iter().map(|&x| half::bf16::from_f32(x)).collect();
    write_safetensors(
        &dir.join("diffusion_pytorch_model-00001-of-00002.safetensors"),
        &[("conv_in.weight", Dtype::F32, vec![2, 3], f32_bytes(&w))],
    );
    write_safetensors(
        &dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
        &[
            (
                "conv_in.bias",
                Dtype::F16,
                vec![6],
                bytemuck::cast_slice(&h).to_vec(),
            ),
            (
                "time_embedding.linear_1.weight",
                Dtype::BF16,
                vec![3, 2],
                bytemuck::cast_slice(&b).to_vec(),
            ),
        ],
    );
    let weights = Weights::open_dir(&dir, None).unwrap();
    assert_eq!(weights.len(), 3);
    assert_eq!(weights.file_names().len(), 2);
    assert_eq!(
        weights
            .expect("conv_in.weight", &[2, 3])
            .unwrap()
            .to_f32()
            .unwrap(),
        w
    );
    assert_eq!(weights.get("conv_in.bias").unwrap().to_f32().unwrap(), w);
    assert_eq!(
        weights
            .get("time_embedding.linear_1.weight")
            .unwrap()
            .to_f16()
            .unwrap(),
        h
    );
    // Legacy-name probing takes the first key that exists.
    let v = weights
        .get_any(&["mid_block.attentions.0.query.weight", "conv_in.weight"])
        .unwrap();
    assert_eq!(v.key, "conv_in.weight");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn weight_variants_are_chosen_explicitly() {
    let dir = temp_dir("variants");
    let one = f32_bytes(&[1.0]);
    let h = bytemuck::cast_slice(&[half::f16::from_f32(2.0)]).to_vec();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[("x", Dtype::F32, vec![1], one)],
    );
    write_safetensors(
        &dir.join("model.fp16.safetensors"),
        &[("x", Dtype::F16, vec![1], h)],
    );
    assert_eq!(
        Weights::open_dir(&dir, None)
            .unwrap()
            .get("x")
            .unwrap()
            .to_f32()
            .unwrap(),
        [1.0]
    );
    assert_eq!(
        Weights::open_dir(&dir, Some("fp16"))
            .unwrap()
            .get("x")
            .unwrap()
            .to_f32()
            .unwrap(),
        [2.0]
    );
    let e = Weights::open_dir(&dir, Some("bf16")).unwrap_err();
    assert!(e.to_string().contains("bf16"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_and_misshaped_tensors_name_key_file_and_shapes() {
    let bytes = {
        let dir = temp_dir("lookup");
        let p = dir.join("m.safetensors");
        write_safetensors(
            &p,
            &[
                ("proj.weight", Dtype::F32, vec![2, 2], f32_bytes(&[0.0; 4])),
                ("ids", Dtype::I64, vec![1], vec![0; 8]),
            ],
        );
        std::fs::read(&p).unwrap()
    };
    let w = Weights::from_bytes(vec![("unet/m.safetensors".into(), bytes)]).unwrap();
    let e = w.get("proj.bias").unwrap_err();
    assert!(
        e.to_string().contains("`proj.bias`") && e.to_string().contains("unet/m.safetensors"),
        "{e}"
    );
    let e = w.expect("proj.weight", &[4, 2]).unwrap_err();
    match &e {
        ModelError::TensorShape {
            expected, found, ..
        } => assert_eq!(
            (expected.as_slice(), found.as_slice()),
            (&[4, 2][..], &[2, 2][..])
        ),
        other => panic!("{other}"),
    }
    let e = w.get("ids").unwrap().to_f32().unwrap_err();
    assert!(
        e.to_string().contains("I64") && e.to_string().contains("ids"),
        "{e}"
    );
    let e = w.get_any(&["a.weight", "b.weight"]).unwrap_err();
    assert!(
        e.to_string().contains("a.weight") && e.to_string().contains("b.weight"),
        "{e}"
    );
}

#[test]
fn corrupt_safetensors_files_are_refused_with_the_file_named() {
    let dir = temp_dir("corrupt");
    let good_path = dir.join("good.safetensors");
    write_safetensors(
        &good_path,
        &[("w", Dtype::F32, vec![4, 4], f32_bytes(&[1.0; 16]))],
    );
    let good = std::fs::read(&good_path).unwrap();

    // Truncated data.
    let truncated = good[..good.len() - 8].to_vec();
    // Header whose offsets point past the data.
    let header = r#"{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,640]}}"#;
    let mut lying = (header.len() as u64).to_le_bytes().to_vec();
    lying.extend_from_slice(header.as_bytes());
    lying.extend_from_slice(&[0u8; 64]);
    // Declared dtype size does not match the byte range.
    let header = r#"{"w":{"dtype":"F16","shape":[4,4],"data_offsets":[0,64]}}"#;
    let mut wrong_dtype = (header.len() as u64).to_le_bytes().to_vec();
    wrong_dtype.extend_from_slice(header.as_bytes());
    wrong_dtype.extend_from_slice(&[0u8; 64]);
    // Not JSON at all, and a header length beyond the file.
    let mut garbage = 20u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"this is not json....");
    let huge_header = u64::MAX.to_le_bytes().to_vec();

    for (name, bytes) in [
        ("truncated", truncated),
        ("lying-offsets", lying),
        ("wrong-dtype", wrong_dtype),
        ("garbage", garbage),
        ("huge-header", huge_header),
        ("empty", Vec::new()),
    ] {
        let file = format!("unet/{name}.safetensors");
        let e = Weights::from_bytes(vec![(file.clone(), bytes.clone())]).unwrap_err();
        assert!(matches!(e, ModelError::Safetensors { .. }), "{name}: {e}");
        assert!(e.to_string().contains(&file), "{name}: {e}");
        // The same through a real file on disk (memory-mapped).
        let p = dir.join(format!("{name}.safetensors"));
        std::fs::write(&p, &bytes).unwrap();
    }
    std::fs::remove_file(&good_path).unwrap();
    let e = Weights::open_dir(&dir, None).unwrap_err();
    assert!(
        e.to_string().contains("several weight variants")
            || matches!(e, ModelError::Safetensors { .. }),
        "{e}"
    );
    let e = Weights::open_dir(&dir.join("missing"), None).unwrap_err();
    assert!(
        matches!(e, ModelError::Io { .. }) && e.to_string().contains("missing"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
