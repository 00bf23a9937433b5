"""Keeps an unfinished v2 training run across machines: writes the autoencoder of
<work>/vae (fp16 weights + config) and, when the UNet stage has started, nothing else
yet, into models/training/wip/ with a training.json, so that a machine without the
local checkpoint continues with `INIT=wip bash run_cpu.sh` (train_vae.py --init-from
loads it; AdamW moments restart with a short warm-up).

The committed model (models/fovea-tiny) is only replaced by export.py, when the judge
says a checkpoint beats it; this folder is the work in progress, not a model.

    python snapshot.py --work ~/.cache/fovea-train-v2
"""

import argparse
import datetime
import json
import os
import shutil

import common

DEFAULT_OUT = os.path.join(common.HERE, "wip")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/fovea-train-v2"))
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args()
    import torch
    from diffusers import AutoencoderKL
    src = os.path.join(a.work, "vae", "diffusers")
    _, state = common.load_checkpoint(os.path.join(a.work, "vae", "ckpt"))
    if state is None or not os.path.exists(os.path.join(src, "config.json")):
        raise SystemExit(f"no autoencoder checkpoint in {a.work}/vae")
    vae = AutoencoderKL.from_pretrained(src).to(torch.float16)
    tmp = a.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
    cfg_path = os.path.join(tmp, "vae", "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("_name_or_path", None)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(tmp, "training.json"), "w") as f:
        json.dump({"stage": "vae", "vae_step": state["step"], "vae_samples": state["samples"],
                   "vae_psnr": round(state.get("psnr", float("nan")), 3), "latent_std": state.get("latent_std"),
                   "saved": datetime.date.today().isoformat()}, f, indent=1)
        f.write("\n")
    shutil.rmtree(a.out, ignore_errors=True)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: autoencoder step {state['step']}, val PSNR {state.get('psnr', float('nan')):.2f} dB")


if __name__ == "__main__":
    main()
