"""Exports the trained fovea-tiny as a standard diffusers Stable Diffusion folder and checks
that diffusers loads it and generates.

Reads <work>/unet/ckpt (EMA weights by default), the autoencoder the UNet was trained on
(<work>/unet/vae) and the tokenizer; writes --out (default models/fovea-tiny/):

  model_index.json            StableDiffusionPipeline, no safety checker
  tokenizer/                  tokenizer.json + vocab.json + merges.txt + configs
  text_encoder/               CLIPTextModel, fp16 model.safetensors
  unet/  vae/                 fp16 diffusion_pytorch_model.safetensors
  scheduler/                  EulerDiscreteScheduler config
  README.md                   model card: data, licences, training state

Then StableDiffusionPipeline.from_pretrained(--out) on CPU generates held-out prompts
(runs/export_check.png) as the check.

    python export.py --work ~/.cache/fovea-train
"""

import argparse
import datetime
import json
import os
import shutil

import numpy as np
import torch

import common
import model_configs

DEFAULT_OUT = os.path.normpath(os.path.join(common.HERE, "..", "fovea-tiny"))


def folder_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".safetensors"))
    return total / 1e6


def unet_row():
    u, side, c = model_configs.unet_config(), model_configs.LATENT_SIZE, model_configs.LATENT_CHANNELS
    widths = "/".join(str(w) for w in u["block_out_channels"])
    levels = [side >> k for k, t in enumerate(u["down_block_types"]) if t.startswith("CrossAttn")]
    mid = side >> (len(u["down_block_types"]) - 1)
    at = ", ".join(f"{s}x{s}" for s in levels)
    return (f"UNet2DConditionModel on {side}x{side}x{c} latents, channels {widths}, self- and "
            f"cross-attention at {at} and in the {mid}x{mid} mid block, {u['attention_head_dim']} heads per layer")


def vae_row():
    v, side, c = model_configs.vae_config(), model_configs.LATENT_SIZE, model_configs.LATENT_CHANNELS
    im = model_configs.IMAGE_SIZE
    widths = "/".join(str(w) for w in v["block_out_channels"])
    return f"AutoencoderKL, {im}x{im}x3 <-> {side}x{side}x{c} ({im // side}x downscale), channels {widths}"


def model_card(state, vae_state, weights_mb, note):
    steps, samples = state["step"], state["samples"]
    return f"""# fovea-tiny

fovea's default text-to-image model: a small Stable-Diffusion-layout diffusers pipeline
trained from scratch on synthetic emoji scenes (128x128), prompted in English or Chinese.
Made by `models/training/` (see its README for every step and command).

| part | what |
| --- | --- |
| tokenizer | CLIP-style byte-level BPE, {json.load(open(os.path.join(common.HERE, 'tokenizer', 'vocab.json'), encoding='utf-8')).__len__()} tokens, trained on the captions (Chinese one token per character) |
| text_encoder | CLIPTextModel, width 256, 4 layers, 4 heads, 77 positions |
| unet | {unet_row()} |
| vae | {vae_row()} |
| scheduler | EulerDiscreteScheduler, scaled_linear betas 0.00085..0.012, epsilon prediction |

Weights: fp16 safetensors, {weights_mb:.1f} MB in all.

Training state of these weights: UNet + text encoder {steps} steps, {samples:,} samples
(EMA weights); autoencoder {vae_state.get('step', '?')} steps (validation PSNR
{vae_state.get('psnr', float('nan')):.1f} dB). Exported {datetime.date.today().isoformat()}.
{note}

Prompts look like the training captions: "a large red apple at the top left on a blue and
white horizontal striped background", "纯蓝色背景上左上角的一只小狗". Objects: the 195
emoji in models/training/objects.json; positions on a 3x3 grid; sizes small /
medium-sized / large; backgrounds plain colour, sky (blue, sunset, night), stripes,
checkerboard, grid, busy (random shapes, colour noise).

## Licences

- Weights: MIT OR Apache-2.0, like fovea.
- Training images are rendered from Twemoji graphics (Copyright Twitter, Inc. and other
  contributors; CC-BY 4.0, https://creativecommons.org/licenses/by/4.0/), taken from the
  npm package `@twemoji/svg` 15.0.0. Generated images that reproduce emoji artwork carry
  that attribution requirement.
- Object names and tags (English, Chinese): `emojibase-data` 17.0.0 (MIT), which draws on
  Unicode CLDR annotations (Unicode License v3).
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--tokenizer", default=os.path.join(common.HERE, "tokenizer"))
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    ap.add_argument("--check-steps", type=int, default=20)
    ap.add_argument("--check-cfg", type=float, default=5.0)
    ap.add_argument("--note", default="", help="a line for the model card (e.g. how good it is)")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tensors, state = common.load_checkpoint(os.path.join(a.work, "unet", "ckpt"))
    if tensors is None:
        raise SystemExit(f"no UNet checkpoint in {a.work}/unet/ckpt")
    te = model_configs.build_text_encoder(a.tokenizer)
    unet = model_configs.build_unet()
    common.load_module("te" if a.raw else "ema_te", te, tensors)
    common.load_module("unet" if a.raw else "ema_unet", unet, tensors)
    del tensors
    vae = AutoencoderKL.from_pretrained(os.path.join(a.work, "unet", "vae"))
    _, vae_state = common.load_checkpoint(os.path.join(a.work, "vae", "ckpt"))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(a.tokenizer), unet=unet,
        scheduler=model_configs.build_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.to(torch.float16)

    tmp = a.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # Ship the tokenizer files exactly as trained (vocab.json + merges.txt as well as
    # tokenizer.json, so loaders that only know the SD layout work too).
    shutil.rmtree(os.path.join(tmp, "tokenizer"))
    shutil.copytree(a.tokenizer, os.path.join(tmp, "tokenizer"))
    # No machine-local paths in the shipped configs.
    for root, _, files in os.walk(tmp):
        for name in files:
            if name.endswith("config.json"):
                p = os.path.join(root, name)
                with open(p) as f:
                    cfg = json.load(f)
                if cfg.pop("_name_or_path", None) is not None:
                    with open(p, "w") as f:
                        json.dump(cfg, f, indent=2, sort_keys=True)
                        f.write("\n")
    mb = folder_mb(tmp)
    # Where training stood, so `train_unet.py --init-from` can continue from the shipped
    # folder on a machine that has no checkpoint.
    with open(os.path.join(tmp, "training.json"), "w") as f:
        json.dump({"weights": "raw" if a.raw else "ema", "unet_step": state["step"],
                   "samples": state["samples"], "data": state["data"],
                   "data_total": state.get("data_total"),
                   "captions": state["captions"], "seed": state.get("seed", 0),
                   "vae_step": (vae_state or {}).get("step"), "vae_psnr": (vae_state or {}).get("psnr"),
                   "exported": datetime.date.today().isoformat()}, f, indent=1)
        f.write("\n")
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(state, vae_state or {}, mb, a.note))
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {mb:.2f} MB of fp16 weights (step {state['step']}, {state['samples']:,} samples)")

    # Check: diffusers loads the folder unchanged and generates on CPU.
    check = StableDiffusionPipeline.from_pretrained(a.out, dtype=torch.float32)
    check.set_progress_bar_config(disable=True)
    with open(os.path.join(common.HERE, "heldout.json"), encoding="utf-8") as f:
        held = json.load(f)["items"]
    prompts = [held[0]["prompt_en"], held[1]["prompt_en"], held[2]["prompt_zh"], held[3]["prompt_zh"]]
    gen = torch.Generator().manual_seed(0)
    out = check(prompts, num_inference_steps=a.check_steps, guidance_scale=a.check_cfg,
                generator=gen, output_type="np").images
    assert out.shape == (len(prompts), 128, 128, 3) and np.isfinite(out).all(), out.shape
    imgs = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    path = os.path.join(common.RUNS, "export_check.png")
    common.write_png(path, common.grid(imgs, len(prompts)))
    for p in prompts:
        print("  ", p)
    print(f"check: StableDiffusionPipeline.from_pretrained generated {out.shape} -> {path}")
    if os.path.abspath(a.out) == os.path.abspath(DEFAULT_OUT):
        # The parity fixture of fovea's test belongs to the shipped weights.
        import parity
        parity.main_with(a.out, parity.DEFAULT_OUT)


if __name__ == "__main__":
    main()
