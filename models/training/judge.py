"""The judge: how faithful are generated images to their prompts?

Two measurements on a 128x128 image whose prompt names one object, its size, its grid
position and the background type (the held-out prompts of heldout.json):

- **object**: a nearest-neighbour template matcher over the 195 rendered emoji
  (`sprites.npz`). Around the prompted grid cell (±14 px) and at every sprite size of
  the prompted size class, each emoji is scored by the alpha-weighted mean squared
  colour difference between its render and the image under it (the background around
  the emoji does not count). Objects are ranked by their best score; top-1 and top-5
  are reported. Nothing is learned, so nothing can overfit; chance is 1/195 and 5/195.
- **background type** (plain, sky, stripes, checkerboard, grid, busy): a small CNN
  trained here on the rendered scenes (`judge.py train-bg`; weights in
  `judge/background.safetensors`, 246 kB). Chance is 1/6 on the held-out set, whose
  types are balanced.

The judge is checked on rendered images it did not train on and on the same images
passed through the shipped autoencoder (the best a generated image can look), so its own
error is known before it is used on generated images:

    python judge.py train-bg                       # 400 steps, ~2.5 min CPU
    python judge.py check --vae ../fovea-tiny/vae  # judge accuracy on real / VAE images
    python judge.py score --images DIR             # DIR/NNN.png for heldout item NNN
"""

import argparse
import json
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

import common

JUDGE_DIR = os.path.join(common.HERE, "judge")
BG_WEIGHTS = os.path.join(JUDGE_DIR, "background.safetensors")
DEFAULT_CACHE = os.path.expanduser("~/.cache/fovea-data")
BACKGROUNDS = ["plain", "sky", "stripes", "checkerboard", "grid", "busy"]
SIZES = {"small": (24, 26, 28, 30), "medium": (34, 36, 38, 40), "large": (50, 52, 54, 56, 58, 60)}
GRID = (0.2, 0.5, 0.8)
POSITIONS = ["top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right"]
IMAGE = 128
SEARCH = 14


# ---------------------------------------------------------------------------------------
# object: template matching
# ---------------------------------------------------------------------------------------
class Matcher:
    def __init__(self, cache):
        with np.load(os.path.join(cache, "sprites.npz")) as z:
            sprites = {k: z[k] for k in z.files}
        self.count = 1 + max(int(k.split("_")[0]) for k in sprites)
        # Per side: alpha (n,1,s,s), alpha*colour (n,3,s,s), sum(alpha*colour^2), sum(alpha).
        self.kernels = {}
        for side in sorted({s for v in SIZES.values() for s in v}):
            rgba = np.stack([sprites[f"{i}_{side}"] for i in range(self.count)]).astype(np.float32) / 255
            t = torch.from_numpy(rgba).permute(0, 3, 1, 2)
            a, c = t[:, 3:], t[:, :3]
            self.kernels[side] = (a, a * c, (a * c * c).sum((1, 2, 3)), a.sum((1, 2, 3)) * 3)

    def rank(self, image_u8, position, size):
        """Object ids ordered best first for an (H, W, 3) uint8 image."""
        img = torch.from_numpy(image_u8.astype(np.float32) / 255).permute(2, 0, 1)[None]
        row, col = divmod(POSITIONS.index(position), 3)
        cy, cx = GRID[row] * IMAGE, GRID[col] * IMAGE
        best = torch.full((self.count,), float("inf"))
        for side in SIZES[size]:
            a, ac, act2, asum = self.kernels[side]
            # Sprites are kept inside the image, so the search box is clamped like the
            # renderer clamps them.
            lo_y = int(min(max(cy - side / 2 - SEARCH, 1), IMAGE - 1 - side))
            hi_y = int(min(max(cy - side / 2 + SEARCH, 1), IMAGE - 1 - side))
            lo_x = int(min(max(cx - side / 2 - SEARCH, 1), IMAGE - 1 - side))
            hi_x = int(min(max(cx - side / 2 + SEARCH, 1), IMAGE - 1 - side))
            win = img[:, :, lo_y:hi_y + side, lo_x:hi_x + side]
            sq = (win * win).sum(1, keepdim=True)
            t1 = F.conv2d(sq, a)                      # sum a * |I|^2
            t2 = F.conv2d(win, ac)                    # sum a * <I, c>
            err = (t1 - 2 * t2 + act2[None, :, None, None]) / asum[None, :, None, None]
            best = torch.minimum(best, err.flatten(2).min(2).values[0])
        return torch.argsort(best).tolist()


# ---------------------------------------------------------------------------------------
# background: a small CNN
# ---------------------------------------------------------------------------------------
class BackgroundNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 16, 32, 64, 64]
        # The first convolution has stride 2 (sees every pixel, a quarter of the work).
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(chans[k], chans[k + 1], 3, stride=2 if k == 0 else 1, padding=1)
            for k in range(4))
        self.head = torch.nn.Linear(chans[-1] * 2, len(BACKGROUNDS))

    def forward(self, x):
        """x: float NCHW in [0, 1], 128x128."""
        x = x * 2 - 1
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        # Mean and max over space: periodic patterns and gradients both survive.
        x = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return self.head(x)


def to_nchw(images_u8):
    return torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255


def load_bg():
    from safetensors.torch import load_file
    net = BackgroundNet()
    net.load_state_dict(load_file(BG_WEIGHTS))
    return net.eval()


def classify_bg(net, images_u8, batch=128):
    out = []
    with torch.no_grad():
        for k in range(0, len(images_u8), batch):
            out.append(net(to_nchw(images_u8[k:k + batch])).argmax(1))
    return torch.cat(out).tolist()


def train_bg(a):
    from safetensors.torch import save_file
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    data = common.Shards(a.data, a.seed, labels=True)
    net = BackgroundNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(a.seed)
    for step in range(a.steps):
        idx = data.next_indices(a.batch)
        x = to_nchw(data.images(idx))
        # Soften half the batch: generated images are blurrier than renders.
        if rng.random() < 0.5:
            x = F.avg_pool2d(x, 3, 1, 1)
        y = torch.tensor([BACKGROUNDS.index(data.labels[i]["bg"]["type"]) for i in idx])
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    os.makedirs(JUDGE_DIR, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, BG_WEIGHTS)
    print(f"wrote {BG_WEIGHTS}")


# ---------------------------------------------------------------------------------------
# checking the judge, scoring generated images
# ---------------------------------------------------------------------------------------
def single_object_holdout(data, n):
    """The held-out images of the shards (never trained on by any model) with exactly one
    object."""
    out = []
    for i in range(data.total - 1, data.train_count - 1, -1):
        if len(data.labels[i]["objects"]) == 1:
            out.append(i)
        if len(out) == n:
            break
    return out


def vae_roundtrip(vae_dir, images_u8):
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(images_u8), 32):
            x = to_nchw(images_u8[k:k + 32]) * 2 - 1
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
            out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def score(matcher, bg_net, images, items):
    """images: list of uint8 (128,128,3); items: dicts with object, position, size, background."""
    bgs = classify_bg(bg_net, np.stack(images))
    rows = []
    for img, item, bg in zip(images, items, bgs):
        ranking = matcher.rank(img, item["position"], item["size"])
        place = ranking.index(item["object"])
        rows.append({"object": item["object"], "object_rank": place + 1,
                     "top1": place == 0, "top5": place < 5,
                     "background": item["background"], "background_pred": BACKGROUNDS[bg],
                     "background_ok": BACKGROUNDS[bg] == item["background"]})
    n = len(rows)
    summary = {
        "images": n,
        "object_top1": sum(r["top1"] for r in rows) / n,
        "object_top5": sum(r["top5"] for r in rows) / n,
        "background": sum(r["background_ok"] for r in rows) / n,
        "chance": {"object_top1": 1 / matcher.count, "object_top5": 5 / matcher.count,
                   "background": 1 / len(BACKGROUNDS)},
    }
    return summary, rows


def check(a):
    data = common.Shards(a.data, a.seed, labels=True)
    idx = single_object_holdout(data, a.count)
    images = data.images(idx)
    items = []
    for i in idx:
        lab = data.labels[i]
        o = lab["objects"][0]
        items.append({"object": o["id"], "position": POSITIONS[o["pos"]], "size": o["size"],
                      "background": lab["bg"]["type"]})
    matcher, bg_net = Matcher(a.cache), load_bg()
    report = {"about": "judge accuracy on held-out rendered single-object scenes", "images": len(idx)}
    report["rendered"], _ = score(matcher, bg_net, list(images), items)
    print("rendered:", json.dumps(report["rendered"]))
    if a.vae:
        recon = vae_roundtrip(a.vae, images)
        report["vae_roundtrip"], _ = score(matcher, bg_net, list(recon), items)
        report["vae"] = a.vae
        print("through the VAE:", json.dumps(report["vae_roundtrip"]))
    os.makedirs(JUDGE_DIR, exist_ok=True)
    with open(os.path.join(JUDGE_DIR, "check.json"), "w") as f:
        json.dump(report, f, indent=1)


def heldout_items():
    with open(os.path.join(common.HERE, "heldout.json"), encoding="utf-8") as f:
        return json.load(f)["items"]


def read_png(path):
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


def score_dir(a):
    """Scores DIR/<k>.png, <k>_en.png and <k>_zh.png against held-out item k; other files
    are skipped."""
    items = heldout_items()
    images, its, names = [], [], []
    for name in sorted(os.listdir(a.images)):
        m = re.fullmatch(r"(\d+)(?:_(en|zh))?\.png", name)
        if not m:
            continue
        k = int(m.group(1))
        images.append(read_png(os.path.join(a.images, name)))
        its.append(items[k])
        names.append(name)
    if not images:
        sys.exit(f"no <index>[_en|_zh].png images in {a.images}")
    summary, rows = score(Matcher(a.cache), load_bg(), images, its)
    for r, n in zip(rows, names):
        r["file"] = n
    summary["by_language"] = {}
    for lang in ("en", "zh"):
        sel = [r for r in rows if f"_{lang}" in r["file"]]
        if sel:
            summary["by_language"][lang] = {
                "images": len(sel), "object_top5": sum(r["top5"] for r in sel) / len(sel),
                "background": sum(r["background_ok"] for r in sel) / len(sel)}
    print(json.dumps(summary, indent=1))
    out = a.out or os.path.join(a.images, "judge.json")
    with open(out, "w") as f:
        json.dump({"summary": summary, "images": rows}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train-bg", "check", "score"])
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="folder with sprites.npz")
    ap.add_argument("--vae", default="", help="AutoencoderKL folder for the round-trip check")
    ap.add_argument("--images", default="", help="folder of generated images (score)")
    ap.add_argument("--out", default="")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    {"train-bg": train_bg, "check": check, "score": score_dir}[a.command](a)


if __name__ == "__main__":
    main()
