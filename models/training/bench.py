"""Training throughput of fovea-tiny's autoencoder and UNet + text encoder (random data,
same step as train_vae.py / train_unet.py: forward, backward, AdamW).

    python bench.py --batch 16 32 --steps 5            # prints samples/s per setting
    nice -n 19 python bench.py --threads 2 --batch 16 --what unet

Timings exclude the first (warm-up) step. On CPU, results depend on what else the
machine is running; say so next to any number.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

import common
import model_configs


def bench_vae(device, batch, crop, steps):
    vae = model_configs.build_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=device) * 2 - 1
    times = []
    for _ in range(steps + 1):
        t = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        loss = F.l1_loss(rec.float(), x) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t)
    return batch / (sum(times[1:]) / steps)


def bench_unet(device, batch, steps, tokenizer_dir):
    te = model_configs.build_text_encoder(tokenizer_dir).to(device).train()
    unet = model_configs.build_unet().to(device).train()
    vae = model_configs.build_vae().to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(list(unet.parameters()) + list(te.parameters()), lr=1e-4)
    x = torch.rand(batch, 3, 128, 128, device=device) * 2 - 1
    ids = torch.randint(0, te.config.vocab_size, (batch, 77), device=device)
    times = []
    for _ in range(steps + 1):
        t = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            with torch.no_grad():
                z = vae.encode(x).latent_dist.sample()
            noise = torch.randn_like(z)
            ts = torch.randint(0, 1000, (batch,), device=device)
            emb = te(ids).last_hidden_state
            pred = unet(z + noise, ts, emb).sample
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t)
    return batch / (sum(times[1:]) / steps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--what", choices=["all", "vae", "unet"], default="all")
    ap.add_argument("--crop", type=int, nargs="+", default=[128], help="VAE training crop sides")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tokenizer", default=os.path.join(model_configs.HERE, "tokenizer"))
    ap.add_argument("--out", default="", help="append results as JSON lines to this file")
    a = ap.parse_args()
    device = common.setup(a.threads, 0)
    rows = []
    for b in a.batch:
        if a.what in ("all", "vae"):
            for c in a.crop:
                r = bench_vae(device, b, c, a.steps)
                rows.append({"what": "vae", "batch": b, "crop": c, "samples_per_s": round(r, 2)})
                print(f"VAE  batch {b:4d} crop {c:3d}: {r:8.2f} img/s", flush=True)
        if a.what in ("all", "unet"):
            r = bench_unet(device, b, a.steps, a.tokenizer)
            rows.append({"what": "unet+text_encoder", "batch": b, "samples_per_s": round(r, 2)})
            print(f"UNet+TE batch {b:4d}: {r:8.2f} samples/s", flush=True)
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps({"device": common.device_name(device), "torch": torch.__version__,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **r}) + "\n")


if __name__ == "__main__":
    main()
