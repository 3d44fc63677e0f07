"""Benchmarks of training against PyTorch from Python, side by side in one run:

  train step  pipe-torch (tch, LibTorch) vs PyTorch: the same network (`tiny`), batch,
              image size, Adam, BCE with logits and thread count; median and p90 ms/step
  loader      pipe's train loader (PNG decode + augmentation + batching on worker
              threads) in images/s, against the step rate: is the loader the bottleneck?
              And the step again with its batches from the loader (sharing the CPU).

usage: python benches/train.py --pipe PATH/TO/release/pipe [--pipe-torch PATH] [--batch 32] [--size 64] [--steps 30] [--threads 2] [--images 2000] [--workers 2]
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--pipe-torch", default=None, help="the worker binary (default: next to --pipe)")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each step benchmark")
ap.add_argument("--images", type=int, default=2000, help="PNGs for the loader")
ap.add_argument("--image-size", type=int, default=256, help="side of those PNGs")
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--work", default=None, help="keep the PNGs here (default: a temp dir)")
ap.add_argument("--py-step", action="store_true", help=argparse.SUPPRESS)
a = ap.parse_args()

WARMUP = 5  # as in pipe-torch bench-step


def py_step():
    """The PyTorch side, in its own process like pipe-torch: one JSON line."""
    import torch
    from torch import nn

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layers, ch = [], 1
    for out in (16, 32, 64):
        layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        ch = out
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 5))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(a.batch, 1, a.size, a.size)
    y = (torch.rand(a.batch, 5) >= 0.5).float()
    ms = []
    for i in range(WARMUP + a.steps):
        t = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if i >= WARMUP:
            ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    median = statistics.median(ms)
    p90 = ms[max(1, -(-9 * len(ms) // 10)) - 1]
    print(json.dumps({"bench": "step", "impl": f"pytorch {torch.__version__}", "median_ms": median,
                      "p90_ms": p90, "images_per_s": a.batch / (median / 1e3)}))


if a.py_step:
    py_step()
    sys.exit(0)

pipe_torch = os.path.abspath(a.pipe_torch or os.path.join(os.path.dirname(os.path.abspath(a.pipe)), "pipe-torch"))
work = a.work or tempfile.mkdtemp(prefix="pipe-bench-train-")
print(f"work dir: {work}")
# pipe-torch links the LibTorch of the venv's torch.
import torch  # noqa: E402

env = dict(os.environ)
env["LD_LIBRARY_PATH"] = os.path.join(os.path.dirname(torch.__file__), "lib") + ":" + env.get("LD_LIBRARY_PATH", "")


def json_line(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ images for the loader
def png_bytes(img):
    """8-bit grey PNG, Sub filter on every row (as encoders pick for smooth images)."""
    h, w = img.shape
    sub = np.empty_like(img)
    sub[:, 0] = img[:, 0]
    sub[:, 1:] = img[:, 1:] - img[:, :-1]  # uint8 wraps, as the filter wants
    raw = np.concatenate([np.ones((h, 1), np.uint8), sub], axis=1).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


img_dir = os.path.join(work, f"png{a.image_size}")
os.makedirs(img_dir, exist_ok=True)
rng = np.random.default_rng(7)
s = a.image_size
yy, xx = np.mgrid[0:s, 0:s] / s
for i in range(a.images):
    path = os.path.join(img_dir, f"{i:05d}.png")
    if os.path.exists(path):
        continue
    # Smooth "anatomy" plus noise, so deflate and the filter do real work.
    base = 0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy + rng.uniform(0, 6))
    img = np.clip(base + rng.normal(0, 0.03, (s, s)), 0, 1)
    with open(path, "wb") as f:
        f.write(png_bytes(np.round(img * 255).astype(np.uint8)))


# ------------------------------------------------------------------ train step
# Alternate the runs so a busy moment of the machine hits both; keep each side's best
# median (the least disturbed run). `+ loader` is the same step fed by the loader: its
# threads share the CPU with LibTorch's, as in a training run on this machine.
shape = ["--batch", str(a.batch), "--size", str(a.size), "--steps", str(a.steps), "--threads", str(a.threads)]
runs = {"pipe": [], "py": [], "fed": []}
for _ in range(a.rounds):
    runs["pipe"].append(json_line([pipe_torch, "bench-step", "--arch", "tiny", *shape]))
    runs["py"].append(json_line([sys.executable, os.path.abspath(__file__), "--pipe", a.pipe, "--py-step", *shape]))
    runs["fed"].append(json_line([pipe_torch, "bench-step", "--arch", "tiny", *shape, "--dir", img_dir,
                                  "--workers", str(a.workers)]))
best = {k: min(v, key=lambda r: r["median_ms"]) for k, v in runs.items()}
p, q, fed = best["pipe"], best["py"], best["fed"]
print(f"train step  tiny, batch {a.batch}, {a.size}×{a.size}, Adam, BCE, {a.threads} threads, "
      f"{a.steps} steps after {WARMUP} warm-up (best median of {a.rounds} runs)")
print(f"  pipe-torch (tch)   median {p['median_ms']:7.2f} ms  p90 {p['p90_ms']:7.2f} ms  ({p['images_per_s']:7.0f} images/s)")
print(f"  {q['impl']:<18} median {q['median_ms']:7.2f} ms  p90 {q['p90_ms']:7.2f} ms  ({q['images_per_s']:7.0f} images/s)"
      f"   pipe/pytorch {p['median_ms'] / q['median_ms']:.3f}")
print(f"  pipe-torch + loader median {fed['median_ms']:7.2f} ms  p90 {fed['p90_ms']:7.2f} ms  ({fed['images_per_s']:7.0f} images/s)"
      f"   batches from {a.images} PNGs {a.image_size}×{a.image_size}, augmented, {a.workers} loader workers")
print("  all medians: pipe " + " ".join(f"{r['median_ms']:.2f}" for r in runs["pipe"])
      + " | pytorch " + " ".join(f"{r['median_ms']:.2f}" for r in runs["py"])
      + " | pipe + loader " + " ".join(f"{r['median_ms']:.2f}" for r in runs["fed"]))

# ------------------------------------------------------------------ loader alone
step_rate = p["images_per_s"]
print(f"loader alone  {a.images} PNGs {s}×{s} → {a.size}×{a.size}, batch {a.batch} (train step: {step_rate:.0f} images/s)")
for workers in sorted({1, a.workers}):
    for augment in ("false", "true"):
        r = json_line([pipe_torch, "bench-loader", "--dir", img_dir, "--size", str(a.size), "--batch", str(a.batch),
                       "--workers", str(workers), "--augment", augment])
        ratio = r["images_per_s"] / step_rate
        verdict = "loader keeps up" if ratio >= 1 else "LOADER IS THE BOTTLENECK"
        label = f"{workers} worker{'s' if workers > 1 else ''}, {'augmented' if augment == 'true' else 'decode only'}"
        print(f"  {label:<26} {r['images_per_s']:8.0f} images/s  first batch {r['first_batch_ms']:6.1f} ms"
              f"   x{ratio:.1f} the step rate: {verdict}")
