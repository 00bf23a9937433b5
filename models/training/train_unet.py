"""Trains fovea-tiny's UNet and text encoder jointly, from scratch, on the frozen autoencoder.

Per step: a batch of scenes is taken as cached latents (each image is encoded by the frozen
VAE once, the first time the data order reaches it, into <work>/unet/latents: the posterior
mean and std in fp16; a posterior sample x scaling_factor is drawn per step), noised
at a uniform random timestep of the scaled_linear schedule (plus a little per-channel
"offset" noise so that the model can set the overall colour of plain backgrounds), and
the UNet predicts the noise given the text encoder's last hidden state. Each sample's
caption is one of its two English or two Chinese captions (language 50/50), replaced
by "" with probability --cfg-drop (10%) so that classifier-free guidance works. Loss:
MSE with min-SNR-5 weights. AdamW, linear warm-up then constant LR, EMA of both models
(the EMA weights are what export.py ships).

The autoencoder is copied into <work>/unet/vae on the first start and always read from
there, so that a VAE trained further later cannot silently change this UNet's latent
space. Runs for --minutes; resumes from <work>/unet/ckpt; saves every --save-minutes and
at the end, with a sample grid of held-out prompts (runs/<run>_samples.png, EMA weights,
20 Euler steps, CFG 5) at the end and at most every --sample-minutes (on a busy CPU the
grid takes minutes, so a CPU run can end a few minutes after its budget).

    python train_unet.py --minutes 9                    # GPU: one tool call
    nice -n 19 python train_unet.py --minutes 600 --batch 32 --threads 2   # CPU
"""

import argparse
import json
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

import common
import model_configs

SAMPLE_PROMPTS = 8


class Captions:
    """Picks, tokenizes and drops captions; its generator state is part of the checkpoint."""

    def __init__(self, tokenizer_dir, labels, seed, zh_prob, drop):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        self.bos, self.eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
        self.labels = labels
        self.rng = np.random.default_rng([seed, 1])
        self.zh_prob, self.drop = zh_prob, drop

    def encode(self, texts):
        """As diffusers' CLIPTokenizer(padding='max_length', max_length=77, truncation=True)."""
        n = model_configs.MAX_TOKENS
        out = np.full((len(texts), n), self.eos, np.int64)
        for k, e in enumerate(self.tok.encode_batch(texts, add_special_tokens=False)):
            ids = [self.bos] + e.ids[: n - 2] + [self.eos]
            out[k, : len(ids)] = ids
        return torch.from_numpy(out)

    def pick(self, indices):
        texts = []
        for i in indices:
            rec = self.labels[i]
            if self.rng.random() < self.drop:
                texts.append("")
                continue
            lang = "zh" if self.rng.random() < self.zh_prob else "en"
            options = rec[lang]
            texts.append(options[self.rng.integers(len(options))])
        return texts

    def state(self):
        return self.rng.bit_generator.state

    def load_state(self, s):
        self.rng.bit_generator.state = s


class LatentCache:
    """The frozen VAE's posterior (mean, std) of every training image, fp16, filled lazily:
    an image is encoded the first time a batch needs it, so epoch one pays the encoder
    once per image and every later visit costs a memory read. A memory-mapped array of
    (N, 2, C, S, S) plus a `filled` flag per image, both in <work>/unet/latents; `flush`
    (called at every checkpoint) makes them durable. Tied to the autoencoder it was made
    with (its weights file's size and mtime): a different VAE starts an empty cache."""

    def __init__(self, directory, total, vae, vae_dir):
        os.makedirs(directory, exist_ok=True)
        self.vae = vae
        c, s = model_configs.LATENT_CHANNELS, model_configs.LATENT_SIZE
        weights = os.path.join(vae_dir, "diffusion_pytorch_model.safetensors")
        st = os.stat(weights)
        key = {"total": total, "shape": [2, c, s, s], "vae_bytes": st.st_size, "vae_mtime": int(st.st_mtime)}
        meta_path = os.path.join(directory, "meta.json")
        fresh = True
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                fresh = json.load(f) != key
        if fresh:
            with open(meta_path, "w") as f:
                json.dump(key, f)
            np.lib.format.open_memmap(os.path.join(directory, "latents.npy"), "w+", np.float16,
                                      (total, 2, c, s, s)).flush()
            np.save(os.path.join(directory, "filled.npy"), np.zeros(total, bool))
        self.arr = np.load(os.path.join(directory, "latents.npy"), mmap_mode="r+")
        self.filled = np.load(os.path.join(directory, "filled.npy"))
        self.directory = directory
        self.encoded = 0

    @torch.no_grad()
    def get(self, idx, data, device):
        """(mean, std) float32 tensors on device for global image indices."""
        idx = np.asarray(idx)
        todo = idx[~self.filled[idx]]
        if len(todo):
            todo = np.unique(todo)
            x = common.to_float(data.images(todo.tolist()), device)
            post = self.vae.encode(x).latent_dist
            self.arr[todo] = torch.stack([post.mean, post.std], 1).float().cpu().numpy().astype(np.float16)
            self.filled[todo] = True
            self.encoded += len(todo)
        m = torch.from_numpy(self.arr[idx].astype(np.float32)).to(device)
        return m[:, 0], m[:, 1]

    def flush(self):
        self.arr.flush()
        np.save(os.path.join(self.directory, "filled.npy"), self.filled)

    def share_filled(self):
        return float(self.filled.mean())


def min_snr_weights(alphas_cumprod, t, gamma):
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return torch.clamp(snr, max=gamma) / snr


@torch.no_grad()
def sample_grid(vae, te_ema, unet_ema, tokenizer_dir, prompts, device, seed=1234, steps=20, cfg=5.0):
    """Images for `prompts` through diffusers' StableDiffusionPipeline (what ships)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te_ema, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet_ema, scheduler=model_configs.build_scheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn((len(prompts), model_configs.LATENT_CHANNELS, model_configs.LATENT_SIZE,
                           model_configs.LATENT_SIZE), generator=gen).to(device)
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=cfg, latents=latents, output_type="np")
    return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)


def init_from_folder(folder, unet, te, ema_unet, ema_te, data, caps):
    """Loads a shipped (fp16) pipeline folder's text encoder and UNet as both the raw and
    the EMA weights, and its data position from training.json. Returns (step, samples)."""
    from safetensors.torch import load_file
    for module, ema, sub, name in ((unet, ema_unet, "unet", "diffusion_pytorch_model"),
                                   (te, ema_te, "text_encoder", "model")):
        sd = load_file(os.path.join(folder, sub, f"{name}.safetensors"))
        missing, unexpected = module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        # transformers keeps position_ids as a buffer that older exports may not carry.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise SystemExit(f"{folder}/{sub}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        ema.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()
                      if v.dtype.is_floating_point}
    path = os.path.join(folder, "training.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: --init-from needs a folder written by export.py")
    with open(path) as f:
        record = json.load(f)
    if record.get("data_total") not in (None, data.total) or record.get("seed", data.seed) != data.seed:
        print(f"warning: {folder} was trained on {record.get('data_total')} images (seed "
              f"{record.get('seed')}), these are {data.total} (seed {data.seed}): the data order "
              "position does not carry over")
    data.load_state(record["data"])
    caps.load_state(record["captions"])
    ema_unet.updates = ema_te.updates = record["unet_step"]
    return record["unet_step"], record["samples"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--vae", default="", help="diffusers AutoencoderKL folder (default <work>/vae/diffusers)")
    ap.add_argument("--tokenizer", default=os.path.join(common.HERE, "tokenizer"))
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--save-minutes", type=float, default=15.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--te-lr", type=float, default=0.0, help="text encoder LR (0: same as --lr)")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--zh-prob", type=float, default=0.5)
    ap.add_argument("--offset-noise", type=float, default=0.05)
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--no-optimizer-in-ckpt", action="store_true",
                    help="smaller checkpoints (resume restarts AdamW moments with a short warm-up)")
    ap.add_argument("--sample-minutes", type=float, default=30.0,
                    help="write the sample grid at a save when this long has passed since the last one "
                         "(and always at the end of a run); 0 never")
    ap.add_argument("--init-from", default="",
                    help="with no checkpoint in <work>: start from a shipped diffusers folder "
                         "(e.g. ../fovea-tiny: its text encoder, UNet, autoencoder and training.json)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--run-name", default="unet")
    a = ap.parse_args()

    device = common.setup(a.threads, a.seed)
    work = os.path.join(a.work, "unet")
    ckpt_dir = os.path.join(work, "ckpt")
    vae_dir = os.path.join(work, "vae")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(vae_dir, "config.json")):
        fresh = not os.path.exists(os.path.join(ckpt_dir, "state.json"))
        src = a.vae or (os.path.join(a.init_from, "vae") if a.init_from and fresh
                        else os.path.join(a.work, "vae", "diffusers"))
        shutil.copytree(src, vae_dir)
        print(f"froze autoencoder {src} -> {vae_dir}")
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_dir).to(device).eval().requires_grad_(False)
    scale = vae.config.scaling_factor

    data = common.Shards(a.data, a.seed, labels=True)
    cache = LatentCache(os.path.join(work, "latents"), data.total, vae, vae_dir)
    caps = Captions(a.tokenizer, data.labels, a.seed, a.zh_prob, a.cfg_drop)
    te = model_configs.build_text_encoder(a.tokenizer).to(device).train()
    unet = model_configs.build_unet().to(device).train()
    ema_te, ema_unet = common.EMA(te, a.ema), common.EMA(unet, a.ema)
    te_lr = a.te_lr or a.lr
    decay, no_decay = [], []
    for m in (unet, te):
        for n, p in m.named_parameters():
            (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.999))
    sched = model_configs.build_scheduler()
    alphas_cumprod = sched.alphas_cumprod.to(device)
    gen = torch.Generator().manual_seed(a.seed)
    step, samples, warm_from = 0, 0, 0

    tensors, state = common.load_checkpoint(ckpt_dir)
    if tensors is not None:
        common.load_module("unet", unet, tensors)
        common.load_module("te", te, tensors)
        ema_unet.load("ema_unet", tensors, state["ema_updates"])
        ema_te.load("ema_te", tensors, state["ema_updates"])
        if state.get("has_optimizer"):
            common.load_optimizer("opt", opt, tensors, state["param_groups"])
        gen.set_state(tensors["rng.torch"])
        data.load_state(state["data"])
        caps.load_state(state["captions"])
        step, samples = state["step"], state["samples"]
        # Without saved AdamW moments, warm the LR up again from here.
        warm_from = state.get("warm_from", 0) if state.get("has_optimizer") else step
        if abs(state.get("scaling_factor", scale) - scale) > 1e-9:
            print("warning: the autoencoder's scaling factor changed since this checkpoint")
        print(f"resumed from {ckpt_dir} at step {step}")
    elif a.init_from:
        step, samples = init_from_folder(a.init_from, unet, te, ema_unet, ema_te, data, caps)
        # Fresh AdamW moments: warm the LR up again from here.
        warm_from = step
        print(f"started from {a.init_from} at step {step}")
    del tensors

    with open(os.path.join(common.HERE, "heldout.json"), encoding="utf-8") as f:
        held = json.load(f)["items"]
    half = SAMPLE_PROMPTS // 2
    prompts = [h["prompt_en"] for h in held[:half]] + [h["prompt_zh"] for h in held[half:SAMPLE_PROMPTS]]

    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    budget = common.Budget(a.minutes, a.save_minutes, reserve_s=90 if not cuda else 30)
    log = common.RunLog(a.run_name, {"script": "train_unet.py", "device": common.device_name(device),
                                     "args": vars(a), "resume_step": step, "vae_scaling_factor": scale})
    print(f"training UNet {sum(p.numel() for p in unet.parameters()):,} + text encoder "
          f"{sum(p.numel() for p in te.parameters()):,} params on {common.device_name(device)}, batch {a.batch}")

    spare = {}
    last_sample = [time.time()]

    def save(final=False):
        t = {}
        t.update(common.module_tensors("unet", unet))
        t.update(common.module_tensors("te", te))
        t.update(ema_unet.tensors("ema_unet"))
        t.update(ema_te.tensors("ema_te"))
        groups = None
        if not a.no_optimizer_in_ckpt:
            ot, groups = common.optimizer_tensors("opt", opt)
            t.update(ot)
        t.update(common.rng_tensors(gen))
        cache.flush()
        common.save_checkpoint(ckpt_dir, t, {
            "step": step, "samples": samples, "data": data.state(), "captions": caps.state(),
            "data_total": data.total,
            "ema_updates": ema_unet.updates, "has_optimizer": not a.no_optimizer_in_ckpt,
            "param_groups": groups, "warm_from": warm_from, "scaling_factor": scale,
            "tokenizer": os.path.abspath(a.tokenizer), "seed": a.seed})
        log.write({"event": "save", "step": step, "samples": samples,
                   "latents_cached": round(cache.share_filled(), 4)})
        print(f"  saved step {step} ({samples} samples; {cache.share_filled():.1%} of latents cached)", flush=True)
        if not a.sample_minutes or (not final and time.time() - last_sample[0] < a.sample_minutes * 60):
            return
        last_sample[0] = time.time()
        # Sample with the EMA weights in spare copies of the models.
        if not spare:
            spare["unet"] = model_configs.build_unet().to(device).eval()
            spare["te"] = model_configs.build_text_encoder(a.tokenizer).to(device).eval()
        ema_unet.copy_to(spare["unet"])
        ema_te.copy_to(spare["te"])
        t0 = time.time()
        imgs = sample_grid(vae, spare["te"], spare["unet"], a.tokenizer, prompts, device)
        common.write_png(os.path.join(common.RUNS, f"{a.run_name}_samples.png"), common.grid(imgs, 8))
        print(f"  samples written ({time.time() - t0:.0f}s)", flush=True)

    t_last, s_last = time.time(), samples
    acc, acc_n = 0.0, 0
    while not budget.done() and not (a.max_steps and step >= a.max_steps):
        ramp = min(1.0, (step - warm_from + 1) / a.warmup)
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = a.lr * ramp
        idx = data.next_indices(a.batch)
        ids = caps.encode(caps.pick(idx)).to(device)
        c, side = model_configs.LATENT_CHANNELS, model_configs.LATENT_SIZE
        noise = torch.randn(a.batch, c, side, side, generator=gen)
        noise += a.offset_noise * torch.randn(a.batch, c, 1, 1, generator=gen)
        post_noise = torch.randn(noise.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (a.batch,), generator=gen)
        noise, post_noise, t = noise.to(device), post_noise.to(device), t.to(device)
        mean, std = cache.get(idx, data, device)
        z = (mean + std * post_noise) * scale
        with autocast:
            ac = alphas_cumprod[t].view(-1, 1, 1, 1)
            zt = ac.sqrt() * z + (1 - ac).sqrt() * noise
            emb = te(ids).last_hidden_state
            pred = unet(zt, t, emb).sample
        per = F.mse_loss(pred.float(), noise, reduction="none").mean((1, 2, 3))
        loss = (per * min_snr_weights(alphas_cumprod, t, a.snr_gamma)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        ema_unet.update(unet)
        ema_te.update(te)
        step += 1
        samples += a.batch
        acc += loss.item()
        acc_n += 1
        if step % a.log_every == 0:
            now = time.time()
            rate = (samples - s_last) / (now - t_last)
            log.step(step=step, samples=samples, lr=a.lr * ramp, loss=round(acc / acc_n, 5),
                     samples_per_s=round(rate, 2), elapsed_s=round(budget.elapsed(), 1),
                     latents_cached=round(cache.share_filled(), 4))
            print(f"step {step} loss {acc / acc_n:.4f} | {rate:.1f} samples/s | "
                  f"{budget.elapsed() / 60:.1f} min", flush=True)
            t_last, s_last, acc, acc_n = now, samples, 0.0, 0
        if budget.save_due() and not budget.done():
            save()
    save(final=True)
    log.close(steps=step, samples=samples)
    print(f"done: step {step}, {samples} samples, {budget.elapsed() / 60:.1f} min")


if __name__ == "__main__":
    main()
