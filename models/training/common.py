"""Shared pieces of the fovea-tiny training scripts: device and threads, the shard
dataset, sharded resumable checkpoints, the time budget, run logs and a PNG writer.

Only torch, numpy and safetensors are needed here (no PIL), so the scripts run on the
GPU machine as they do on a laptop CPU.
"""

import datetime
import json
import os
import shutil
import signal
import struct
import time
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "runs")
DEFAULT_DATA = os.path.expanduser("~/.cache/fovea-data/data")
DEFAULT_WORK = os.path.expanduser("~/.cache/fovea-train")
# The GPU tool returns files of at most 16 MiB: checkpoint tensors are split below that.
SHARD_BYTES = 15 * 1024 * 1024


def setup(threads, seed):
    """Picks cuda when present (else CPU with `threads` threads) and seeds torch."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
class Shards:
    """The uint8 image shards and per-image labels written by build_dataset.py.

    Images are visited in epochs; each epoch is a permutation seeded by (seed, epoch), so
    (epoch, cursor) is the whole data position and a resumed run sees the same order. The
    last `holdout` images are kept out of training (validation/reconstruction grids).
    """

    def __init__(self, data_dir, seed, holdout=256, labels=False):
        with open(os.path.join(data_dir, "meta.json")) as f:
            self.meta = json.load(f)
        self.shard_size = self.meta["shard_size"]
        self.arrays = [np.load(os.path.join(data_dir, f"shard_{k:04d}.npy"), mmap_mode="r")
                       for k in range(self.meta["shards"])]
        self.total = sum(len(a) for a in self.arrays)
        self.train_count = self.total - holdout
        self.seed = seed
        self.epoch, self.cursor = 0, 0
        self._perm = None
        self.labels = None
        if labels:
            with open(os.path.join(data_dir, "labels.jsonl"), encoding="utf-8") as f:
                self.labels = [json.loads(line) for line in f]
            assert len(self.labels) == self.total

    def images(self, idx):
        """uint8 (n, 128, 128, 3) for global image indices."""
        out = np.empty((len(idx), *self.arrays[0].shape[1:]), np.uint8)
        for k, i in enumerate(idx):
            out[k] = self.arrays[i // self.shard_size][i % self.shard_size]
        return out

    def _permutation(self):
        if self._perm is None or self._perm[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm = (self.epoch, rng.permutation(self.train_count))
        return self._perm[1]

    def next_indices(self, n):
        out = []
        while len(out) < n:
            perm = self._permutation()
            take = min(n - len(out), self.train_count - self.cursor)
            out.extend(perm[self.cursor:self.cursor + take].tolist())
            self.cursor += take
            if self.cursor == self.train_count:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def holdout_indices(self, n):
        return list(range(self.train_count, min(self.total, self.train_count + n)))

    def state(self):
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, s):
        self.epoch, self.cursor = s["epoch"], s["cursor"]


def to_float(images_u8, device):
    """uint8 NHWC -> float NCHW in [-1, 1] on device."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(x):
    """float NCHW in [-1, 1] -> uint8 NHWC numpy."""
    x = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().byte().permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def _save_tensors_sharded(tensors, directory, prefix):
    from safetensors.torch import save_file
    shard, size, k, index = {}, 0, 0, {}

    def flush():
        nonlocal shard, size, k
        if shard:
            name = f"{prefix}-{k:05d}.safetensors"
            save_file(shard, os.path.join(directory, name))
            for key in shard:
                index[key] = name
            shard, size, k = {}, 0, k + 1

    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > SHARD_BYTES:
            flush()
        shard[key] = t
        size += nbytes
    flush()
    return index


def save_checkpoint(directory, tensors, state):
    """Writes tensors (split into <=15 MiB safetensors files) and a JSON state to
    `directory`, atomically: into a temporary folder, then renamed over the old one."""
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    index = _save_tensors_sharded(tensors, tmp, "ckpt")
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"state": state, "index": index}, f, indent=1)
    old = directory + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory):
    """(tensors, state) or (None, None) when there is no checkpoint."""
    from safetensors.torch import load_file
    path = os.path.join(directory, "state.json")
    if not os.path.exists(path):
        return None, None
    with open(path) as f:
        meta = json.load(f)
    tensors = {}
    for name in sorted(set(meta["index"].values())):
        tensors.update(load_file(os.path.join(directory, name)))
    return tensors, meta["state"]


def module_tensors(prefix, module):
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(prefix, module, tensors):
    sd = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    module.load_state_dict(sd)


def optimizer_tensors(prefix, opt):
    """Optimizer state as flat tensors + JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"{prefix}.{pid}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def load_optimizer(prefix, opt, tensors, param_groups):
    state = {}
    for k, v in tensors.items():
        if not k.startswith(prefix + "."):
            continue
        pid, name = k[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def rng_tensors(gen):
    return {"rng.torch": gen.get_state()}


class EMA:
    """Exponential moving average of a module's float parameters (kept in fp32).
    decay ramps as (1 + n) / (10 + n) up to `decay`, so early averages are not stale."""

    def __init__(self, module, decay):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()
                       if v.dtype.is_floating_point}
        self.updates = 0

    @torch.no_grad()
    def update(self, module):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def copy_to(self, module):
        sd = module.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v.to(sd[k].dtype))

    def tensors(self, prefix):
        return {f"{prefix}.{k}": v for k, v in self.shadow.items()}

    def load(self, prefix, tensors, updates):
        for k in self.shadow:
            self.shadow[k] = tensors[f"{prefix}.{k}"].float().to(self.shadow[k].device)
        self.updates = updates


# ---------------------------------------------------------------------------------------
# time budget and logs
# ---------------------------------------------------------------------------------------
class Budget:
    """Stops a run after `minutes` (leaving `reserve_s` for the final save) and asks for a
    save every `save_minutes`. SIGTERM/SIGINT end the run at the next step, with a save."""

    def __init__(self, minutes, save_minutes, reserve_s=30):
        self.start = time.time()
        self.end = self.start + minutes * 60 - reserve_s if minutes else float("inf")
        self.save_every = save_minutes * 60
        self.last_save = self.start
        self.stop_requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        print(f"signal {signum}: saving and stopping", flush=True)
        self.stop_requested = True

    def done(self):
        return self.stop_requested or time.time() >= self.end

    def save_due(self):
        if time.time() - self.last_save >= self.save_every:
            self.last_save = time.time()
            return True
        return False

    def elapsed(self):
        return time.time() - self.start


class RunLog:
    """Appends JSON lines to models/training/runs/<name>.jsonl: one per logged step and one
    'session' line per process (start, end, wall time, device, steps)."""

    def __init__(self, name, info):
        os.makedirs(RUNS, exist_ok=True)
        self.path = os.path.join(RUNS, f"{name}.jsonl")
        self.info = info
        self.start = time.time()
        self.write({"event": "start", **info})

    def write(self, row):
        row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **row}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def step(self, **row):
        self.write({"event": "step", **row})

    def close(self, **row):
        self.write({"event": "end", "wall_s": round(time.time() - self.start, 1), **row})


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------
def write_png(path, rgb):
    """Writes an (h, w, 3) uint8 array as an 8-bit RGB PNG (zlib only)."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def grid(images, cols):
    """uint8 (n, h, w, 3) -> one (rows*h, cols*w, 3) image, 2-pixel gaps."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    g = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        g[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[k]
    return g
