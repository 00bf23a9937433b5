//! Seed inputs: small valid files of each kind (the test fixtures diffusers wrote, and
//! files made here), from which the fuzzer mutates.

use safetensors::Dtype;
use safetensors::tensor::TensorView;

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/", $path)).to_vec()
    };
}

/// safetensors files: one made here with every dtype fovea reads, and two fixtures.
pub fn safetensors() -> Vec<Vec<u8>> {
    let f32s: Vec<u8> = [1.0f32, -2.0, 0.5, 3.25, 0.0, -0.125]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x0000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [0x3f80u16, 0xc000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "a.weight",
            TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap(),
        ),
        (
            "b.bias",
            TensorView::new(Dtype::F16, vec![4], &f16s).unwrap(),
        ),
        (
            "c",
            TensorView::new(Dtype::BF16, vec![1, 2], &bf16s).unwrap(),
        ),
    ];
    let made = safetensors::serialize(tensors, None).unwrap();
    vec![
        made,
        fixture!("expected/vae.safetensors"),
        fixture!("expected/text_encoder_gelu.safetensors"),
    ]
}

/// config.json files of every component.
pub fn configs() -> Vec<Vec<u8>> {
    vec![
        fixture!("configs/sd15_unet.json"),
        fixture!("configs/sd21_unet.json"),
        fixture!("configs/sd_vae.json"),
        fixture!("configs/sd21_text_encoder.json"),
        fixture!("configs/sd15_scheduler.json"),
        fixture!("tiny_taesd/config.json"),
        fixture!("tiny_vae/config.json"),
        fixture!("tiny_unet_sd1/config.json"),
    ]
}

/// A tokenizer.json, and vocab.json + NUL + merges.txt.
pub fn tokenizers() -> Vec<Vec<u8>> {
    let mut pair = fixture!("tiny_pipeline/tokenizer/vocab.json");
    pair.push(0);
    pair.extend(fixture!("tiny_pipeline/tokenizer/merges.txt"));
    vec![
        fixture!("tiny_pipeline_fp16/tokenizer/tokenizer.json"),
        pair,
    ]
}

/// Small PNG and JPEG images.
pub fn images() -> Vec<Vec<u8>> {
    let img = image::RgbaImage::from_fn(12, 8, |x, y| {
        image::Rgba([(x * 20) as u8, (y * 30) as u8, 128, 255])
    });
    let mut out = Vec::new();
    for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let mut bytes = Vec::new();
        let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
        rgb.write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .unwrap();
        out.push(bytes);
    }
    out
}

/// Parameter objects the page sends.
pub fn web_params() -> Vec<Vec<u8>> {
    [
        r#"{"prompt":"a red apple","steps":20,"cfg":7.5,"seed":42,"width":128,"height":128}"#,
        r#"{"prompt":"x","negativePrompt":"blurry","scheduler":"dpmpp_2m","clipSkip":1,"strength":0.5,"vaeTile":64,"taesd":false,"tileSize":64}"#,
        r#"{"prompt":"纹理清晰","prune":{"enabled":true,"threshold":0.3,"skip":"cached","refresh":5,"crossAttention":false,"guard":0.2,"probeSteps":4,"probeStride":4,"detailWords":["高清"]}}"#,
        r#"{}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
