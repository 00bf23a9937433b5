"""Records diffusers' output for the shipped fovea-tiny folder, for fovea's parity test.

StableDiffusionPipeline.from_pretrained(models/fovea-tiny) in float32 on CPU generates one
held-out prompt from fixed initial latents; the latents, the image and a fingerprint of
the UNet weights go to tests/fixtures/expected/fovea_tiny.safetensors. The Rust test
`default_model_matches_diffusers` (crates/fovea-pipeline/tests/default_model.rs) runs
fovea on the same folder with the same latents and settings and bounds the difference.
export.py runs this after every export, so the fixture always belongs to the shipped
weights (the fingerprint makes a stale fixture fail with a clear message).

    python parity.py [--model ../fovea-tiny]
"""

import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file

import common

ROOT = os.path.normpath(os.path.join(common.HERE, "..", ".."))
DEFAULT_MODEL = os.path.join(ROOT, "models", "fovea-tiny")
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "expected", "fovea_tiny.safetensors")
# Keep in step with crates/fovea-pipeline/tests/default_model.rs.
STEPS = 2
CFG = 5.0
NEGATIVE = ""
LATENT_SEED = 0
FINGERPRINT_KEY = "conv_in.weight"


def prompt():
    with open(os.path.join(common.HERE, "heldout.json"), encoding="utf-8") as f:
        return json.load(f)["items"][0]["prompt_en"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args()
    main_with(a.model, a.out)


def main_with(model, out):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    side = pipe.unet.config.sample_size
    latents = torch.randn((1, pipe.unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(LATENT_SEED))
    with torch.no_grad():
        image = pipe(prompt(), negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                     latents=latents, output_type="np").images[0]
    unet = load_file(os.path.join(model, "unet", "diffusion_pytorch_model.safetensors"))
    save_file({"latents": latents.contiguous(),
               "image": torch.from_numpy(image).float().contiguous(),
               "fingerprint": unet[FINGERPRINT_KEY].flatten()[:64].float().contiguous()}, out)
    print(f"wrote {out}: {prompt()!r}, {STEPS} {type(pipe.scheduler).__name__} steps, CFG {CFG}, "
          f"{image.shape[1]}x{image.shape[0]}")


if __name__ == "__main__":
    main()
