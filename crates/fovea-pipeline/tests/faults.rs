//! Faults: a lost device (simulated with `Device::destroy`, as a driver reset or the
//! browser taking the GPU back would do) fails the next generation with an error that
//! says the device was lost and what to do, never a panic or a hang; a new engine on a
//! new device then generates the same image as before the loss.

mod common;

use common::{fixtures, gpu};
use fovea_gpu::DType;
use fovea_pipeline::{GenerateParams, StableDiffusion};

fn params() -> GenerateParams {
    GenerateParams {
        prompt: "a red apple".into(),
        steps: 2,
        cfg: 7.5,
        seed: 7,
        width: 16,
        height: 16,
        ..Default::default()
    }
}

#[test]
fn a_lost_device_is_reported_and_a_new_engine_recovers() {
    let folder = fixtures().join("tiny_pipeline");
    let gpu1 = gpu();
    let sd = StableDiffusion::load(&gpu1, &folder, DType::F32).unwrap();
    let before = pollster::block_on(sd.txt2img(&params(), None, &mut |_| true)).unwrap();

    gpu1.device().destroy();
    let started = std::time::Instant::now();
    let err = pollster::block_on(sd.txt2img(&params(), None, &mut |_| true))
        .expect_err("a generation on a destroyed device must fail");
    let text = err.to_string();
    eprintln!("after Device::destroy: {text} ({:?})", started.elapsed());
    assert!(
        text.contains("lost"),
        "the error should say the device was lost: {text}"
    );
    assert!(
        text.contains("new engine"),
        "the error should say how to go on: {text}"
    );
    // Loading on the lost device fails the same way, it does not panic.
    let reload = StableDiffusion::load(&gpu1, &folder, DType::F32);
    assert!(reload.is_err(), "loading on a lost device must fail");
    drop(sd);
    drop(gpu1);

    let gpu2 = gpu();
    let sd2 = StableDiffusion::load(&gpu2, &folder, DType::F32).unwrap();
    let after = pollster::block_on(sd2.txt2img(&params(), None, &mut |_| true)).unwrap();
    assert_eq!(before.rgba, after.rgba, "a new engine gives the same image");
}
