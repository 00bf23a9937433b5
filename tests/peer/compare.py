"""fovea against its peer, PyTorch on the same CPU, in one run: the same kernel shapes,
the default model's parts and a whole generation, with the ratio fovea / PyTorch.

    cargo xtask peer                      # builds fovea (release), then runs this
    python tests/peer/compare.py --fovea target/release/fovea --threads 2 --out target/peer.json

What is timed, and how:
- fovea: `fovea bench` (kernels at the `small` shapes, the default model's text encoder,
  UNet at batch 1 and 2 and VAE decode; medians of --repeats runs after warm-up, wall
  time of a submitted-and-finished batch) and two `fovea generate` processes (20 Euler
  steps, CFG 7.5, the model's native size): the first is "cold" (pipeline compilation
  and driver caches empty where they are per process), the second "warm"; whole-process
  wall time, the figure a user sees.
- PyTorch (CPU, float32, --threads threads): the same shapes with torch.mm, conv2d,
  scaled_dot_product_attention, group_norm+silu, silu; diffusers' modules of the same
  folder at the same sizes; StableDiffusionPipeline for the whole generation (timed
  in-process after one warm-up generation, so its import and load costs are excluded:
  this favours the peer).

On a shared machine an absolute time is noise, and it drifts: the two sides are measured
in the same run, in --rounds alternating rounds (fovea, then PyTorch, then fovea
again, ...), and each figure is each side's best round (its median over --repeats runs)
with the ratio of the two; the table also gives the range of the per-round ratios. The
machine's load average at the start and end is recorded in the JSON.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PROMPT = "a large red apple in the center on a blue sky background"


def median_ms(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(runs), runs


def run_fovea_bench(fovea, model, repeats, warmup, extra):
    out = os.path.join(tempfile.mkdtemp(prefix="fovea-peer-"), "bench.json")
    cmd = [fovea, "bench", "--kernels", "small", "--unets", "default", "--batches", "1,2",
           "--repeats", str(repeats), "--warmup", str(warmup), "--out", out] + extra
    if model:
        cmd += ["--model", model]
    print("==>", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(out) as f:
        return json.load(f)


def run_fovea_generate(fovea, model, steps, cfg, extra):
    """Whole-process wall times (s) of a cold and a warm `fovea generate`."""
    times = []
    for label in ("cold", "warm"):
        out = os.path.join(tempfile.mkdtemp(prefix="fovea-peer-"), "out.png")
        cmd = [fovea, "generate", "--prompt", PROMPT, "--steps", str(steps), "--cfg", str(cfg),
               "--seed", "42", "--out", out] + extra
        if model:
            cmd += ["--model", model]
        print(f"==> ({label})", " ".join(cmd), flush=True)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return {"cold_s": times[0], "warm_s": times[1]}


def kernel_peer(torch, F, kernel, shape):
    """A zero-argument callable doing `kernel` at fovea's shape string, or None."""
    nums = [int(v) for v in re.findall(r"\d+", shape)]
    if kernel == "matmul":
        m, k, _, n = nums
        a, b = torch.rand(m, k) * 2 - 1, torch.rand(k, n) * 2 - 1
        return lambda: torch.mm(a, b)
    if kernel == "linear":
        m, k, n, _ = nums
        a, w = torch.rand(m, k) * 2 - 1, torch.rand(n, k) * 2 - 1
        return lambda: F.linear(a, w)
    if kernel == "conv2d 3x3":
        bn, c, h, w, co = nums
        x, wt = torch.rand(bn, c, h, w), torch.rand(co, c, 3, 3)
        return lambda: F.conv2d(x, wt, padding=1)
    if kernel == "attention":
        b, n, h, d = nums
        q = torch.rand(b, h, n, d)
        return lambda: F.scaled_dot_product_attention(q, q, q)
    if kernel == "group_norm+silu":
        bn, c, h, w = nums
        x = torch.rand(bn, c, h, w)
        return lambda: F.silu(F.group_norm(x, min(32, c)))
    if kernel == "silu":
        x = torch.rand(*nums)
        return lambda: F.silu(x)
    return None


def torch_setup(fb, model, threads):
    """The PyTorch side's callables for fovea's kernel and model rows, and its pipeline."""
    import torch
    import torch.nn.functional as F
    from diffusers import StableDiffusionPipeline
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kernels, models = [], []
    for k in fb["kernels"]:
        fn = kernel_peer(torch, F, k["kernel"], k["shape"])
        if fn is None:
            print(f"  (no PyTorch peer for kernel {k['kernel']!r})")
            continue
        kernels.append(({"kernel": k["kernel"], "shape": k["shape"]}, fn))
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    lat_c, side = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    ctx_len = pipe.tokenizer.model_max_length
    for r in fb["models"]:
        if r["model"] != "default" or r.get("pruned"):
            continue
        part, b = r["part"], r["batch"]
        if part == "text_encoder":
            ids = torch.randint(0, pipe.text_encoder.config.vocab_size, (b, ctx_len))
            fn = lambda ids=ids: pipe.text_encoder(ids)  # noqa: E731
        elif part == "unet":
            x = torch.randn(b, lat_c, side, side)
            emb = torch.randn(b, ctx_len, pipe.text_encoder.config.hidden_size)
            t = torch.tensor([500] * b)
            fn = lambda x=x, t=t, emb=emb: pipe.unet(x, t, emb)  # noqa: E731
        elif part == "vae_decode":
            z = torch.randn(b, pipe.vae.config.latent_channels, side, side)
            fn = lambda z=z: pipe.vae.decode(z)  # noqa: E731
        else:
            continue
        models.append(({"part": part, "size": r["size"], "batch": b}, fn))
    return {"torch": torch, "pipe": pipe, "kernels": kernels, "models": models}


def torch_round(setup, repeats, warmup, steps, cfg, generate):
    """One round of the PyTorch side: every kernel and model row, then (when asked) the
    whole generation."""
    torch, pipe = setup["torch"], setup["pipe"]
    rows = {"kernels": [], "models": []}
    with torch.no_grad():
        for kind in ("kernels", "models"):
            for row, fn in setup[kind]:
                ms, runs = median_ms(fn, repeats, warmup)
                rows[kind].append(dict(row, ms=ms, runs_ms=runs))

        def generate_once():
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, output_type="np",
                 generator=torch.Generator().manual_seed(42))
        if generate:
            ms, runs = median_ms(generate_once, max(1, repeats // 2), 1)
            rows["generate_s"] = ms / 1e3
    return rows


def best(rounds, pick):
    """The smallest of `pick(round)` over the rounds that have it, with every round's."""
    values = [v for v in map(pick, rounds) if v is not None]
    return min(values), values


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fovea", default=os.path.join(ROOT, "target", "release", "fovea"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "fovea-tiny"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of both sides; each side's best round is kept")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--no-generate", action="store_true", help="skip the whole-generation rows")
    ap.add_argument("--fovea-args", default="", help="extra flags for fovea bench and generate (e.g. --f32)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "peer.json"))
    a = ap.parse_args()
    if not os.path.exists(a.fovea):
        sys.exit(f"{a.fovea} does not exist: build it with `cargo build --release -p fovea-cli`")
    try:
        import torch
        import diffusers
    except ImportError as e:
        sys.exit(f"the peer needs PyTorch and diffusers ({e}): pip install torch diffusers==0.42.1 transformers safetensors")

    extra = a.fovea_args.split()
    load_start = os.getloadavg()
    setup = None
    rounds = []
    for r in range(a.rounds):
        print(f"==> round {r + 1} of {a.rounds}", flush=True)
        fb = run_fovea_bench(a.fovea, a.model, a.repeats, a.warmup, extra)
        fg = None if a.no_generate else run_fovea_generate(a.fovea, a.model, a.steps, a.cfg, extra)
        if setup is None:
            print(f"==> PyTorch {torch.__version__} (diffusers {diffusers.__version__}), {a.threads} threads",
                  flush=True)
            setup = torch_setup(fb, a.model, a.threads)
        else:
            print("==> PyTorch", flush=True)
        tp = torch_round(setup, a.repeats, a.warmup, a.steps, a.cfg, not a.no_generate)
        rounds.append({"fovea_bench": fb, "fovea_generate": fg, "torch": tp})

    def find(items, **match):
        return next((x for x in items if all(x.get(k) == v for k, v in match.items())), None)

    def ms_of(item):
        return None if item is None else item["ms"]

    table = []

    def add(what, fovea_pick, torch_pick, extra_cols=None):
        f_ms, f_all = best(rounds, fovea_pick)
        t_ms, t_all = best(rounds, torch_pick)
        per_round = [f / t for f, t in zip(f_all, t_all)]
        row = {"what": what, "fovea_ms": f_ms, "torch_ms": t_ms, "ratio": f_ms / t_ms,
               "round_ratios": per_round, "fovea_rounds_ms": f_all, "torch_rounds_ms": t_all}
        row.update(extra_cols(f_ms, t_ms) if extra_cols else {})
        table.append(row)

    first = rounds[0]["fovea_bench"]
    for k in first["kernels"]:
        if find(rounds[0]["torch"]["kernels"], kernel=k["kernel"], shape=k["shape"]) is None:
            continue

        def rates(f_ms, t_ms, k=k):
            rate = lambda t: k["work"] / (t / 1e3) / 1e9  # noqa: E731
            return {"fovea_rate": rate(f_ms), "torch_rate": rate(t_ms), "unit": k["unit"]}
        add(f"{k['kernel']} {k['shape']}",
            lambda rd, k=k: find(rd["fovea_bench"]["kernels"], kernel=k["kernel"],
                                 shape=k["shape"])["timing"]["wall_ms"],
            lambda rd, k=k: ms_of(find(rd["torch"]["kernels"], kernel=k["kernel"], shape=k["shape"])),
            rates)
    for r in first["models"]:
        if r["model"] != "default" or r.get("pruned"):
            continue
        if find(rounds[0]["torch"]["models"], part=r["part"], batch=r["batch"]) is None:
            continue
        add(f"{r['part']} (batch {r['batch']})",
            lambda rd, r=r: find([m for m in rd["fovea_bench"]["models"]
                                  if m["model"] == "default" and not m.get("pruned")],
                                 part=r["part"], batch=r["batch"])["timing"]["wall_ms"],
            lambda rd, r=r: ms_of(find(rd["torch"]["models"], part=r["part"], batch=r["batch"])))
    if not a.no_generate:
        for label in ("cold", "warm"):
            add(f"whole generation, {a.steps} steps CFG {a.cfg} ({label} fovea process)",
                lambda rd, label=label: rd["fovea_generate"][f"{label}_s"] * 1e3,
                lambda rd: rd["torch"]["generate_s"] * 1e3)

    print(f"\nbest of {a.rounds} alternating rounds per side; ratio of the bests, and the per-round range")
    print(f"{'':60} {'fovea ms':>10} {'torch ms':>10} {'ratio':>7} {'rounds':>11}")
    for row in table:
        rates = ""
        if "fovea_rate" in row:
            rates = f"   {row['fovea_rate']:.2f} vs {row['torch_rate']:.2f} {row['unit']}"
        spread = f"{min(row['round_ratios']):.1f}-{max(row['round_ratios']):.1f}x"
        print(f"{row['what']:60} {row['fovea_ms']:>10.1f} {row['torch_ms']:>10.1f} {row['ratio']:>6.1f}x"
              f" {spread:>11}{rates}")
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_start": load_start, "load_end": os.getloadavg()},
        "fovea": {"adapter": fb.get("adapter"), "backend": fb.get("backend"), "driver": fb.get("driver"),
                  "dtype": fb.get("dtype")},
        "torch": {"version": torch.__version__, "diffusers": diffusers.__version__, "threads": a.threads},
        "rounds": a.rounds, "rows": table, "raw_rounds": rounds,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
