"""Trains fovea-tiny's autoencoder (diffusers AutoencoderKL; v2: 128x128x3 <-> 16x16x8).

Loss: L1 + weighted L1 of the image gradients (keeps edges of the flat emoji art sharp)
+ a small KL term (per latent element) on posterior samples, + an optional MSE term.
Runs for --minutes and resumes from <work>/vae/ckpt; every --save-minutes and at the end it saves the
checkpoint, a reconstruction grid (runs/vae_recon.png: originals above, reconstructions
below, images the training never sees), the validation PSNR, and a diffusers folder
<work>/vae/diffusers whose scaling_factor is 1/std of the latents (what train_unet.py
and export.py read).

    python train_vae.py --minutes 9               # GPU: one tool call
    nice -n 19 python train_vae.py --minutes 30 --batch 16 --crop 64 --threads 2   # CPU
"""

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

import common
import model_configs


def image_grad_l1(a, b):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def random_crops(x, size, gen):
    if size >= x.shape[-1]:
        return x
    n, _, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return torch.stack([x[i, :, y:y + size, q:q + size] for i, (y, q) in enumerate(zip(ys, xs))])


@torch.no_grad()
def evaluate(vae, data, device, n=64):
    """PSNR (dB) of mean-latent reconstructions on held-out images, the latent std, and
    an 8-image grid (originals / reconstructions)."""
    vae.eval()
    idx = data.holdout_indices(n)
    x = common.to_float(data.images(idx), device)
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.mean).sample.clamp(-1, 1)
    mse = F.mse_loss(rec, x).item()
    psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # signal range is 2
    z = post.mean + post.std * torch.randn_like(post.std)
    std = z.float().std().item()
    g = common.grid(torch.cat([torch.from_numpy(common.to_uint8(x[:8])), torch.from_numpy(common.to_uint8(rec[:8]))]).numpy(), 8)
    vae.train()
    return psnr, std, g


def init_from_folder(folder, vae):
    """Loads an exported autoencoder (fp16 or fp32) into `vae`; returns the step it was
    exported at (0 when unknown)."""
    import json
    from safetensors.torch import load_file
    sub = os.path.join(folder, "vae") if os.path.isdir(os.path.join(folder, "vae")) else folder
    with open(os.path.join(sub, "config.json")) as f:
        cfg = json.load(f)
    want = model_configs.vae_config()
    for k in ("block_out_channels", "latent_channels", "layers_per_block", "norm_num_groups"):
        if list(cfg.get(k) if isinstance(cfg.get(k), list) else [cfg.get(k)]) != list(
                want[k] if isinstance(want[k], (list, tuple)) else [want[k]]):
            raise SystemExit(f"{sub}: {k} is {cfg.get(k)}, model_configs has {want[k]}: not this architecture")
    sd = load_file(os.path.join(sub, "diffusion_pytorch_model.safetensors"))
    vae.load_state_dict({k: v.float() for k, v in sd.items()})
    step = 0
    rec = os.path.join(folder, "training.json")
    if os.path.exists(rec):
        with open(rec) as f:
            step = json.load(f).get("vae_step", 0)
    print(f"started from {sub} (step {step}, fresh AdamW moments)")
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of this run")
    ap.add_argument("--save-minutes", type=float, default=10.0)
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this total step count (0: none)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=128, help="train on random crops of this side")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--grad-weight", type=float, default=0.5)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--mse-weight", type=float, default=0.0,
                    help="weight of an MSE term (what PSNR measures) next to L1 (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--run-name", default="vae")
    ap.add_argument("--target-psnr", type=float, default=0.0,
                    help="stop at the first save whose validation PSNR (dB) reaches this (0: never)")
    ap.add_argument("--init-from", default="",
                    help="with no checkpoint in <work>: start from this diffusers folder's vae/ (or an "
                         "AutoencoderKL folder) when its config matches model_configs (fresh AdamW moments)")
    a = ap.parse_args()

    device = common.setup(a.threads, a.seed)
    work = os.path.join(a.work, "vae")
    ckpt_dir = os.path.join(work, "ckpt")
    os.makedirs(work, exist_ok=True)
    data = common.Shards(a.data, a.seed)
    vae = model_configs.build_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(a.seed)
    step, samples, warm_from = 0, 0, 0

    tensors, state = common.load_checkpoint(ckpt_dir)
    if tensors is not None:
        common.load_module("vae", vae, tensors)
        common.load_optimizer("opt", opt, tensors, state["param_groups"])
        gen.set_state(tensors["rng.torch"])
        data.load_state(state["data"])
        step, samples = state["step"], state["samples"]
        warm_from = state.get("warm_from", 0)
        print(f"resumed from {ckpt_dir} at step {step}")
    elif a.init_from:
        step = warm_from = init_from_folder(a.init_from, vae)
    del tensors

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    budget = common.Budget(a.minutes, a.save_minutes)
    log = common.RunLog(a.run_name, {"script": "train_vae.py", "device": common.device_name(device),
                                     "args": vars(a), "resume_step": step})
    print(f"training VAE on {common.device_name(device)}: batch {a.batch}, crop {a.crop}, "
          f"{sum(p.numel() for p in vae.parameters()):,} params")

    def save():
        psnr, std, g = evaluate(vae, data, device)
        common.write_png(os.path.join(common.RUNS, f"{a.run_name}_recon.png"), g)
        t = common.module_tensors("vae", vae)
        ot, groups = common.optimizer_tensors("opt", opt)
        t.update(ot)
        t.update(common.rng_tensors(gen))
        common.save_checkpoint(ckpt_dir, t, {"step": step, "samples": samples, "data": data.state(),
                                             "param_groups": groups, "latent_std": std, "psnr": psnr,
                                             "warm_from": warm_from})
        # The frozen autoencoder the UNet trains on: latents are scaled to unit variance.
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))
        vae.save_pretrained(os.path.join(work, "diffusers"))
        log.write({"event": "save", "step": step, "val_psnr": round(psnr, 3), "latent_std": round(std, 5)})
        print(f"  saved step {step}: val PSNR {psnr:.2f} dB, latent std {std:.4f}", flush=True)
        return psnr

    vae.train()
    t_last, s_last = time.time(), samples
    acc = {"loss": 0.0, "l1": 0.0, "grad": 0.0, "kl": 0.0, "n": 0}
    while not budget.done() and not (a.max_steps and step >= a.max_steps):
        lr = a.lr * min(1.0, (step - warm_from + 1) / a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x = common.to_float(data.images(data.next_indices(a.batch)), device)
        x = random_crops(x, a.crop, gen)
        with autocast:
            post = vae.encode(x).latent_dist
            noise = torch.randn(post.mean.shape, generator=gen).to(device)
            z = post.mean + post.std * noise
            rec = vae.decode(z).sample
        rec = rec.float()
        l1 = F.l1_loss(rec, x)
        gl = image_grad_l1(rec, x)
        kl = post.kl().float().mean() / post.mean[0].numel()
        loss = l1 + a.grad_weight * gl + a.kl_weight * kl
        if a.mse_weight:
            loss = loss + a.mse_weight * F.mse_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        samples += a.batch
        for k, v in (("loss", loss), ("l1", l1), ("grad", gl), ("kl", kl)):
            acc[k] += v.item()
        acc["n"] += 1
        if step % a.log_every == 0:
            now = time.time()
            rate = (samples - s_last) / (now - t_last)
            row = {k: round(acc[k] / acc["n"], 5) for k in ("loss", "l1", "grad", "kl")}
            log.step(step=step, samples=samples, lr=lr, samples_per_s=round(rate, 2),
                     elapsed_s=round(budget.elapsed(), 1), **row)
            print(f"step {step} loss {row['loss']:.4f} l1 {row['l1']:.4f} grad {row['grad']:.4f} "
                  f"kl {row['kl']:.1f} | {rate:.1f} img/s", flush=True)
            t_last, s_last = now, samples
            acc = {k: 0.0 for k in acc} | {"n": 0}
        if budget.save_due() and not budget.done():
            if save() >= a.target_psnr > 0:
                print(f"validation PSNR reached {a.target_psnr} dB: stopping", flush=True)
                break
    else:
        save()
    log.close(steps=step, samples=samples)
    print(f"done: step {step}, {samples} samples, {budget.elapsed() / 60:.1f} min")


if __name__ == "__main__":
    main()
