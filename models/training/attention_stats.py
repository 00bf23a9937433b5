"""Per-layer, per-head attention entropy of a shipped model on held-out prompts (issue 13,
item 3; the evidence issue 14's pruning rules are chosen from).

For every attention layer of the UNet (self and cross) and every head, over the denoising
steps of held-out prompts (English and Chinese, classifier-free guidance on, both halves of
the batch), it records the normalised Shannon entropy of each query row's attention
(H / ln N_keys, in [0, 1]: 0 = one key, 1 = uniform) and reports per head:

- mean: the mean over query rows, steps and prompts (what fovea's pruning rule reads);
- spread: the mean over (step, prompt) of the standard deviation over query rows (fovea's
  pattern guard: a head that is sharp in some regions and broad in others);
- between: the standard deviation of the per-(step, prompt) means (does the head change
  with the prompt and the step? a head that never changes could be decided offline);
- by step: the mean at the first, middle and last step.

Written to runs/attention_stats.{json,md}. Runs diffusers on the CPU with an attention
processor that computes the probabilities explicitly (same outputs as the default one).

    python attention_stats.py --model ../fovea-tiny --count 8 --steps 20
"""

import argparse
import json
import math
import os

import numpy as np
import torch

import common

HERE = os.path.dirname(os.path.abspath(__file__))


class EntropyProcessor:
    """diffusers' attention with explicit softmax, recording per-head row entropies."""

    def __init__(self, name, sink):
        self.name, self.sink = name, sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if cross else hidden_states
        if cross and attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)
        batch, n_q, _ = q.shape
        heads = attn.heads
        d = q.shape[-1] // heads
        q = q.view(batch, -1, heads, d).transpose(1, 2)
        k = k.view(batch, -1, heads, d).transpose(1, 2)
        v = v.view(batch, -1, heads, d).transpose(1, 2)
        p = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)
        n_k = p.shape[-1]
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1) / math.log(n_k)  # (B, H, N_q)
        self.sink.append((self.name, "cross" if cross else "self", n_q, n_k,
                          ent.mean(-1).double().cpu().numpy(), ent.std(-1, unbiased=False).double().cpu().numpy()))
        out = (p @ v).transpose(1, 2).reshape(batch, -1, heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(HERE, "..", "fovea-tiny"))
    ap.add_argument("--count", type=int, default=8, help="held-out items (each in English and Chinese)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(common.RUNS, "attention_stats"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(a.model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    records = []
    pipe.unet.set_attn_processor({name: EntropyProcessor(name.removesuffix(".processor"), records)
                                  for name in pipe.unet.attn_processors})
    with open(os.path.join(HERE, "heldout.json"), encoding="utf-8") as f:
        held = json.load(f)["items"][: a.count]
    prompts = [(h["prompt_en"], "en") for h in held] + [(h["prompt_zh"], "zh") for h in held]
    # per layer: list over (prompt, step) of (mean per head, spread per head), batch-averaged
    per_layer = {}
    meta = {}
    for k, (prompt, lang) in enumerate(prompts):
        records.clear()
        with torch.no_grad():
            pipe(prompt, num_inference_steps=a.steps, guidance_scale=a.cfg, output_type="np",
                 generator=torch.Generator().manual_seed(k))
        n_layers = len(pipe.unet.attn_processors)
        for i, (name, kind, n_q, n_k, mean, spread) in enumerate(records):
            step = i // n_layers
            per_layer.setdefault(name, []).append((step, mean.mean(0), spread.mean(0)))
            meta[name] = (kind, n_q, n_k)
        print(f"  {k + 1}/{len(prompts)} {lang}: {prompt}", flush=True)

    layers = []
    for name, rows in per_layer.items():
        kind, n_q, n_k = meta[name]
        means = np.stack([r[1] for r in rows])      # (runs, H)
        spreads = np.stack([r[2] for r in rows])
        steps = np.array([r[0] for r in rows])
        last = steps.max()
        by_step = {label: means[steps == s].mean(0).round(4).tolist()
                   for label, s in (("first", 0), ("middle", last // 2), ("last", last))}
        layers.append({"layer": name, "kind": kind, "queries": n_q, "keys": n_k,
                       "mean": means.mean(0).round(4).tolist(), "spread": spreads.mean(0).round(4).tolist(),
                       "between": means.std(0).round(4).tolist(), "by_step": by_step})
    report = {"model": os.path.relpath(a.model, HERE), "prompts": len(prompts), "steps": a.steps, "cfg": a.cfg,
              "layers": layers}
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    lines = [f"# Attention entropy per head: {report['model']}", "",
             f"{len(prompts)} held-out prompts (English and Chinese), {a.steps} Euler steps, CFG {a.cfg}, diffusers on CPU. "
             "Normalised entropy H / ln(keys): 0 = one key, 1 = uniform. mean = over queries, steps and prompts; "
             "spread = std over the query rows (fovea's pattern guard); between = std of the per-(prompt, step) means; "
             "first/last = mean at the first and last step.", "",
             "| layer | kind | q x k | head | mean | spread | between | first | last |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for L in layers:
        for h in range(len(L["mean"])):
            lines.append(f"| {L['layer']} | {L['kind']} | {L['queries']}x{L['keys']} | {h} | {L['mean'][h]:.3f} | "
                         f"{L['spread'][h]:.3f} | {L['between'][h]:.3f} | {L['by_step']['first'][h]:.3f} | "
                         f"{L['by_step']['last'][h]:.3f} |")
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}.json and .md ({len(layers)} layers)")


if __name__ == "__main__":
    main()
