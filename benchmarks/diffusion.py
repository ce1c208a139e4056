"""Pixel-space DDPM against latent diffusion, with their recipe configs: training ms/step (batch 64;
latent diffusion in its diffusion stage, the frozen encoder included) and sampling images/s (DDIM,
50 steps, batches of 100; plain and with classifier-free guidance, which doubles the batch), with the
peak memory of each. Weights are random: speed does not depend on them.

    python benchmarks/diffusion.py
    python benchmarks/diffusion.py --steps 5 --samples 50

Each (model, task) runs in its own process; peak MB is the growth of the resident set from just
before the first step to its peak (see benchmarks/engine.py).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.engine import peak_rss_mb, reset_peak, rss_mb  # noqa: E402

MODELS = ("ddpm", "latent_diffusion")


def worker(name, task, steps, samples):
    import numpy as np
    from tinygen.models import build_model
    model = build_model(name)
    images = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28)).astype(np.uint8)
    labels = np.arange(64) % 10
    if name == "latent_diffusion":
        model.steps_done[0] = model.config.ae_steps  # the diffusion stage
    opts = model.configure_optimizers()
    before = rss_mb()
    reset_peak()
    if task == "train":
        run = lambda: model.training_step(model.prepare_batch(images, labels), opts)  # noqa: E731
        count = steps
    else:
        guidance = 3.0 if task == "sample_cfg" else None
        label = labels[np.arange(samples) % 64] if guidance else None
        run = lambda: model.sample(samples, label=label, guidance=guidance, steps=50, batch_size=100)  # noqa: E731
        count = 1
    run()  # warm-up
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    result = {"ms_per_step": 1000 * median} if task == "train" else {"images_per_s": samples / median}
    print(json.dumps({**result, "peak_mb": max(peak_rss_mb() - before, 0.0)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="training steps timed (median) after 1 warm-up")
    ap.add_argument("--samples", type=int, default=100, help="images per sampling run")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.steps, args.samples)
    import os
    print(f"{os.cpu_count()} cores; training: median of {args.steps} steps at batch 64; sampling: {args.samples} "
          f"images, DDIM 50 steps")
    print(f"{'model':17s} {'train ms/step':>13s} {'MB':>6s} {'sample img/s':>12s} {'MB':>6s} {'CFG img/s':>10s} {'MB':>6s}")
    for name in MODELS:
        cells = []
        for task in ("train", "sample", "sample_cfg"):
            proc = subprocess.run([sys.executable, __file__, "--worker", name, task, "--steps", str(args.steps),
                                   "--samples", str(args.samples)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} {task} failed:\n{proc.stderr}")
            cells.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        train, plain, cfg = cells
        print(f"{name:17s} {train['ms_per_step']:13.1f} {train['peak_mb']:6.0f} {plain['images_per_s']:12.2f} "
              f"{plain['peak_mb']:6.0f} {cfg['images_per_s']:10.2f} {cfg['peak_mb']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
