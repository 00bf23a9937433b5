"""fovea-tiny's architecture (v2, designed to train on a 2-core CPU): one place for the
four component configs.

    python model_configs.py [--tokenizer tokenizer/]   # parameter counts, fp16 MB, GFLOPs

Design (see README.md for the reasoning and the measured trials):
- images 128x128 RGB; AutoencoderKL with 4 resolutions (24, 48, 96, 128 channels), so
  the latent is 16x16x8 (8x downscale, 8 latent channels: SD's downscale, twice its
  channels, so 24 px emoji keep their detail in 3x3 cells of 8 values). No mid-block
  attention, so the autoencoder is fully convolutional and trains on crops.
- UNet2DConditionModel on the 16x16x8 latent, SD 1.x layout at small width: channels
  (64, 128, 128), one resnet per block, cross-attention at 16x16 and 8x8 (down and up)
  and in the 4x4 mid block, a plain DownBlock2D/UpBlock2D at 4x4. 4 heads in every
  attention layer (head dim 16 at 64 channels, 32 at 128 channels); self- and
  cross-attention at the highest resolution (256 tokens) is where fovea prunes.
  The latent side is the lever on a CPU: the same UNet trains ~4.7x faster on 16x16x8
  than on v1's 32x32x4 (issue 13's measurements).
- CLIPTextModel: width 256, 4 layers, 4 heads (dim 64), MLP 1024, GELU, 77 positions,
  vocabulary from train_tokenizer.py.
- EulerDiscreteScheduler with SD's scaled_linear betas (0.00085..0.012), epsilon
  prediction.
"""

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_SIZE = 128
LATENT_SIZE = 16
LATENT_CHANNELS = 8
# v2 VAE widths (one entry per resolution: 128, 64, 32, 16 px for a 128 px image).
VAE_CHANNELS = tuple(int(c) for c in os.environ.get("FOVEA_VAE_CHANNELS", "24,48,96,128").split(","))
TEXT_WIDTH = 256
MAX_TOKENS = 77


def text_encoder_config(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    return dict(
        vocab_size=len(vocab),
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        # Pad with <|endoftext|> (SD 1.x); the pooled output is taken at the first eos.
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        projection_dim=TEXT_WIDTH,
    )


def unet_config():
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        # diffusers' legacy name: this is the number of heads per attention layer.
        attention_head_dim=4,
        cross_attention_dim=TEXT_WIDTH,
        norm_num_groups=32,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        use_linear_projection=False,
    )


def vae_config(scaling_factor=1.0):
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,
        scaling_factor=scaling_factor,
        act_fn="silu",
    )


def scheduler_config():
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def build_text_encoder(tokenizer_dir):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(**text_encoder_config(tokenizer_dir)))


def build_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**unet_config())


def build_vae(scaling_factor=1.0):
    from diffusers import AutoencoderKL
    return AutoencoderKL(**vae_config(scaling_factor))


def build_scheduler():
    from diffusers import EulerDiscreteScheduler
    return EulerDiscreteScheduler(**scheduler_config())


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def gflops(fn):
    """GFLOPs of one call of fn (matmuls, convolutions and attention, multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return fc.get_total_flops() / 1e9


def report(tokenizer_dir):
    import torch
    torch.manual_seed(0)
    te, unet, vae = build_text_encoder(tokenizer_dir), build_unet(), build_vae()
    ids = torch.zeros(1, MAX_TOKENS, dtype=torch.long)
    emb = torch.zeros(1, MAX_TOKENS, TEXT_WIDTH)
    lat = torch.zeros(1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    img = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    rows = [
        ("text_encoder", te, gflops(lambda: te(ids))),
        ("unet", unet, gflops(lambda: unet(lat, torch.tensor([500]), emb))),
        ("vae (decode)", vae, gflops(lambda: vae.decode(lat))),
    ]
    enc = gflops(lambda: vae.encode(img))
    total = 0
    print(f"{'component':14} {'params':>10} {'fp16 MB':>8} {'GFLOP/call':>11}")
    for name, m, g in rows:
        n = count_params(m)
        total += n
        print(f"{name:14} {n:>10,} {n * 2 / 1e6:>8.2f} {g:>11.3f}")
    print(f"{'total':14} {total:>10,} {total * 2 / 1e6:>8.2f}")
    u = rows[1][2]
    print(f"UNet: {u:.2f} GFLOP per step at {LATENT_SIZE}x{LATENT_SIZE} latent ({IMAGE_SIZE}x{IMAGE_SIZE} image), "
          f"{2 * u:.2f} with classifier-free guidance (batch 2); VAE encode {enc:.2f} GFLOP")
    heads = unet_config()["attention_head_dim"]
    for c in unet_config()["block_out_channels"]:
        print(f"  attention at {c} channels: {heads} heads of dim {c // heads}")
    return total


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "tokenizer"))
    report(ap.parse_args().tokenizer)
