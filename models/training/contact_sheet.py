"""The contact sheet: fovea generates held-out prompts natively from the shipped weights,
the judge scores them.

Held-out items 0..N-1 of heldout.json (object/background/position combinations never
drawn in training), each in English and Chinese, go to `fovea generate --from-file` in
one process (one seed for all); the images are laid out in a grid (runs/contact_sheet.png:
each row is 8 items, English above Chinese), scored by judge.py, and summarised with
every prompt in runs/contact_sheet.md.

    cargo build --release -p fovea-cli
    python contact_sheet.py --count 32 --steps 20 --cfg 5
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

import common
import judge

ROOT = os.path.normpath(os.path.join(common.HERE, "..", ".."))
COLUMNS = 8


def diffusers_images(a, prompts):
    """Writes <work>/img_<n>.png as fovea --from-file would, with diffusers."""
    import torch
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(a.model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for n, p in enumerate(prompts, start=1):
        g = torch.Generator().manual_seed(a.seed)
        img = pipe(p, num_inference_steps=a.steps or 20, guidance_scale=a.cfg or 7.5, generator=g,
                   output_type="np").images[0]
        common.write_png(os.path.join(a.work, f"img_{n}.png"), (img.clip(0, 1) * 255).round().astype(np.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fovea", default=os.path.join(ROOT, "target", "release", "fovea"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "fovea-tiny"))
    ap.add_argument("--count", type=int, default=32, help="held-out items (each in en and zh)")
    ap.add_argument("--steps", type=int, default=0, help="0: fovea's default")
    ap.add_argument("--cfg", type=float, default=0.0, help="0: fovea's default")
    ap.add_argument("--scheduler", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/fovea-contact-sheet")
    ap.add_argument("--out", default=os.path.join(common.RUNS, "contact_sheet"))
    ap.add_argument("--cache", default=judge.DEFAULT_CACHE, help="folder with sprites.npz (judge)")
    ap.add_argument("--extra", default="", help="more fovea flags, e.g. '--f32'")
    ap.add_argument("--engine", choices=["fovea", "diffusers"], default="fovea",
                    help="diffusers: StableDiffusionPipeline on CPU instead (a quick progress "
                         "measure while training; it matches fovea given the same latents, "
                         "see parity.py, but draws its noise with torch)")
    a = ap.parse_args()

    if a.engine == "diffusers" and (a.scheduler or a.extra):
        sys.exit("--scheduler and --extra are fovea flags; --engine diffusers uses the folder's scheduler")
    if "--width" in a.extra or "--height" in a.extra or "-W" in a.extra.split() or "-H" in a.extra.split():
        sys.exit("the judge scores 128x128 images: leave the size to the model")
    items = judge.heldout_items()[:a.count]
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    lines = []
    for k, it in enumerate(items):
        lines += [(k, "en", it["prompt_en"]), (k, "zh", it["prompt_zh"])]
    with open(os.path.join(a.work, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(p for _, _, p in lines) + "\n")
    cmd = [a.fovea, "generate", "--model", a.model, "--from-file", os.path.join(a.work, "prompts.txt"),
           "--seed", str(a.seed), "-o", os.path.join(a.work, "img.png")]
    if a.steps:
        cmd += ["--steps", str(a.steps)]
    if a.cfg:
        cmd += ["--cfg", str(a.cfg)]
    if a.scheduler:
        cmd += ["--scheduler", a.scheduler]
    cmd += a.extra.split()
    t0 = time.time()
    if a.engine == "diffusers":
        cmd = ["diffusers", "--seed", str(a.seed), "--steps", str(a.steps or 20), "--cfg", str(a.cfg or 7.5)]
        adapter = "adapter: diffusers StableDiffusionPipeline, CPU float32"
        diffusers_images(a, [p for _, _, p in lines])
    else:
        print(" ".join(cmd), flush=True)
        log = subprocess.run(cmd, capture_output=True, text=True)
        if log.returncode != 0:
            sys.exit(f"fovea failed:\n{log.stderr[-3000:]}")
        adapter = next((l for l in log.stderr.splitlines() if l.startswith("adapter:")), "adapter: ?")
    wall = time.time() - t0
    scored = os.path.join(a.work, "scored")
    os.makedirs(scored)
    tiles = []
    for n, (k, lang, _) in enumerate(lines, start=1):
        dst = os.path.join(scored, f"{k:03d}_{lang}.png")
        os.replace(os.path.join(a.work, f"img_{n}.png"), dst)
        tiles.append(judge.read_png(dst))
    # Grid: rows of COLUMNS items, English row above Chinese row, 2 px gaps.
    rows = []
    for r in range(0, len(items), COLUMNS):
        for lang in (0, 1):
            row = [tiles[2 * k + lang] for k in range(r, min(r + COLUMNS, len(items)))]
            row += [np.full_like(tiles[0], 255)] * (COLUMNS - len(row))
            rows.append(np.concatenate(sum(([t, np.full((t.shape[0], 2, 3), 255, np.uint8)] for t in row), [])[:-1], 1))
    sheet = np.concatenate(sum(([row, np.full((2, rows[0].shape[1], 3), 255, np.uint8)] for row in rows), [])[:-1], 0)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    common.write_png(a.out + ".png", sheet)

    sys.argv = ["judge.py", "score", "--images", scored, "--cache", a.cache]
    judge.main()
    with open(os.path.join(scored, "judge.json")) as f:
        scores = json.load(f)
    s = scores["summary"]
    settings = " ".join(cmd[cmd.index("--seed"):]).replace(os.path.join(a.work, "img.png"), "DIR/img.png")
    made = f"`fovea generate {settings}`" if a.engine == "fovea" else "diffusers (not fovea)"
    md = [f"# Contact sheet: {len(items)} held-out prompts x 2 languages\n",
          f"Made by `models/training/contact_sheet.py` on {time.strftime('%Y-%m-%d')}: "
          f"{made} on {adapter[len('adapter: '):]}, "
          f"{wall:.0f} s for {len(lines)} images. Image: `{os.path.basename(a.out)}.png` (rows of {COLUMNS} "
          "items; English prompt above, Chinese below).\n",
          "| measure | fovea-tiny | chance |", "| --- | --- | --- |",
          f"| object top-1 (judge) | {s['object_top1']:.1%} | {s['chance']['object_top1']:.1%} |",
          f"| object top-5 (judge) | {s['object_top5']:.1%} | {s['chance']['object_top5']:.1%} |",
          f"| background type | {s['background']:.1%} | {s['chance']['background']:.1%} |"]
    for lang, v in s.get("by_language", {}).items():
        md.append(f"| {lang}: object top-5 / background | {v['object_top5']:.1%} / {v['background']:.1%} | |")
    md += ["", "The judge (judge.py) on rendered held-out scenes and on the same scenes through the "
           "shipped autoencoder is in `models/training/judge/check.json`.", "",
           "| item | lang | prompt | object rank | background (judged) |", "| --- | --- | --- | --- | --- |"]
    by_file = {r["file"]: r for r in scores["images"]}
    for k, lang, p in lines:
        r = by_file[f"{k:03d}_{lang}.png"]
        md.append(f"| {k} | {lang} | {p} | {r['object_rank']} | {r['background_pred']}"
                  f"{'' if r['background_ok'] else ' (wrong)'} |")
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(a.out + ".json", "w") as f:
        json.dump({"command": cmd, "adapter": adapter, "wall_s": wall, **scores}, f, indent=1)
    print(f"wrote {a.out}.png/.md/.json")


if __name__ == "__main__":
    main()
