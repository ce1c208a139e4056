"""Pixel-space against latent diffusion, with their recipe configs: training ms/step (batch 64; a
two-stage model in its diffusion stage, the frozen encoder included) and sampling images/s (DDIM, 50
steps, batches of 100; plain and with classifier-free guidance, which doubles the batch), with the peak
memory of each. Weights are random: speed does not depend on them. By default the label-conditioned
pair, pixel DDPM against latent diffusion; --models glide stable_diffusion gives the text-to-image pair
(GLIDE's pixels against latents cross-attending to CLIP), prompted with the batch's captions (plain
sampling: the conditional model, guidance 1); stable_diffusion reads the CLIP checkpoint --clip names.

    python benchmarks/diffusion.py
    python benchmarks/diffusion.py --steps 5 --samples 50
    python benchmarks/diffusion.py --models glide stable_diffusion --clip runs/clip-mnist/last.npz --clock cpu

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


def worker(name, task, steps, samples, clip=None, clock="wall"):
    import numpy as np
    from tinygen import text
    from tinygen.models import build_model, get_model_class
    stages = getattr(get_model_class(name), "stages", {})
    model = build_model(name, {"clip": clip} if "clip" in stages else {})
    images = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28)).astype(np.uint8)
    labels = np.arange(64) % 10
    if hasattr(model, "steps_done"):  # a two-stage model (latent diffusion): the diffusion stage
        model.steps_done[0] = model.config.ae_steps
    opts = model.configure_optimizers()
    before = rss_mb()
    reset_peak()
    if task == "train":
        run = lambda: model.training_step(model.prepare_batch(images, labels), opts)  # noqa: E731
        count = steps
    elif "prompt" in model.sample_options:  # text-to-image: the batch's captions; plain = guidance 1
        captions = text.captions(images, labels, model.dataset)
        prompt = [captions[i % 64] for i in range(samples)]
        guidance = 3.0 if task == "sample_cfg" else 1.0
        run = lambda: model.sample(samples, prompt=prompt, guidance=guidance, steps=50)  # noqa: E731
        count = 1
    else:
        guidance = 3.0 if task == "sample_cfg" else None
        label = labels[np.arange(samples) % 64] if guidance else None
        run = lambda: model.sample(samples, label=label, guidance=guidance, steps=50, batch_size=100)  # noqa: E731
        count = 1
    run()  # warm-up
    timer = time.process_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(count):
        t0 = timer()
        run()
        times.append(timer() - t0)
    times.sort()
    median = times[len(times) // 2]
    result = {"ms_per_step": 1000 * median} if task == "train" else {"images_per_s": samples / median}
    print(json.dumps({**result, "peak_mb": max(peak_rss_mb() - before, 0.0)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="training steps timed (median) after 1 warm-up")
    ap.add_argument("--samples", type=int, default=100, help="images per sampling run")
    ap.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                    help=f"diffusion models to time (default: {' '.join(MODELS)}; also glide, stable_diffusion)")
    ap.add_argument("--clip", help="the CLIP checkpoint stable_diffusion reads (python -m tinygen train clip)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time (a quiet machine); cpu: the process's CPU time (a machine shared "
                         "with other jobs, where elapsed time measures the others too)")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.steps, args.samples, args.clip, args.clock)
    if "stable_diffusion" in args.models and not (args.clip and Path(args.clip).is_file()):
        ap.error(f"stable_diffusion reads a trained CLIP: give --clip PATH (got {args.clip}); "
                 f"`python -m tinygen train clip` makes one")
    import os
    print(f"{os.cpu_count()} cores; training: median of {args.steps} steps at batch 64; sampling: {args.samples} "
          f"images, DDIM 50 steps; {args.clock} time")
    print(f"{'model':17s} {'train ms/step':>13s} {'MB':>6s} {'sample img/s':>12s} {'MB':>6s} {'CFG img/s':>10s} {'MB':>6s}")
    for name in args.models:
        cells = []
        for task in ("train", "sample", "sample_cfg"):
            proc = subprocess.run([sys.executable, __file__, "--worker", name, task, "--steps", str(args.steps),
                                   "--samples", str(args.samples), "--clock", args.clock]
                                  + (["--clip", args.clip] if args.clip else []),
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} {task} failed:\n{proc.stderr}")
            cells.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        train, plain, cfg = cells
        print(f"{name:17s} {train['ms_per_step']:13.1f} {train['peak_mb']:6.0f} {plain['images_per_s']:12.2f} "
              f"{plain['peak_mb']:6.0f} {cfg['images_per_s']:10.2f} {cfg['peak_mb']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
