//! CLIPTextModel on the GPU against transformers: two random tiny encoders (quick_gelu
//! with `text_model.`-prefixed keys as SD 1.x checkpoints have, gelu with transformers 5
//! keys), their last_hidden_state and clip-skip-1 embedding for fixed ids. Bound: 1e-4
//! relative RMS error (||a - b|| / ||b||) in f32, 3e-3 in f16.

mod common;

use common::{expected, fixtures, gpu, rel_rms};
use fovea_gpu::DType;
use fovea_models::ClipTextModel;

#[test]
fn text_encoders_match_transformers() {
    let gpu = gpu();
    let mut dtypes = vec![(DType::F32, 1e-4)];
    if gpu.capabilities().shader_f16 {
        dtypes.push((DType::F16, 3e-3));
    }
    for act in ["quick_gelu", "gelu"] {
        let expected = expected(&format!("text_encoder_{act}.safetensors"));
        let ids: Vec<Vec<u32>> = expected
            .get("input_ids")
            .unwrap()
            .to_f32()
            .unwrap()
            .chunks(77)
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect();
        for (dtype, bound) in &dtypes {
            let model = ClipTextModel::load(
                &gpu,
                &fixtures().join(format!("tiny_text_encoder_{act}")),
                *dtype,
            )
            .unwrap();
            for (clip_skip, key) in [(0, "last_hidden_state"), (1, "clip_skip_1")] {
                let mut b = gpu.batch();
                let out = model.forward(&mut b, &ids, clip_skip).unwrap();
                b.submit().unwrap();
                let got = pollster::block_on(gpu.read_f32(&out.embedding)).unwrap();
                let want = expected.get(key).unwrap().to_f32().unwrap();
                let err = rel_rms(&got, &want);
                eprintln!("{act} {dtype} {key}: relative RMS error {err:.2e}");
                assert!(err < *bound, "{act} {dtype} {key}: {err:.2e} >= {bound}");
            }
        }
    }
}

#[test]
fn bad_text_encoder_inputs_are_named() {
    let gpu = gpu();
    let model =
        ClipTextModel::load(&gpu, &fixtures().join("tiny_text_encoder_gelu"), DType::F32).unwrap();
    let mut b = gpu.batch();
    let e = model.forward(&mut b, &[vec![0; 10]], 0).err().unwrap();
    assert!(e.to_string().contains("10 token ids"), "{e}");
    let e = model.forward(&mut b, &[vec![5000; 77]], 0).err().unwrap();
    assert!(e.to_string().contains("5000"), "{e}");
    let e = model.forward(&mut b, &[vec![0; 77]], 3).err().unwrap();
    assert!(e.to_string().contains("clip_skip"), "{e}");
    let e = ClipTextModel::load(&gpu, &fixtures().join("clip_tokenizer"), DType::F32)
        .err()
        .unwrap();
    assert!(e.to_string().contains("config.json"), "{e}");
}
