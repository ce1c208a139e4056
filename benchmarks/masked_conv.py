"""A PixelCNN training step with its masked convolutions computed two ways, side by side in one run:

    dense   conv2d(x, W * mask): every tap multiplied, the masked ones by zero (the plain way to read it)
    taps    F.masked_conv2d(x, W, mask): im2col and the GEMMs over the kept taps alone (conv_fast.py, trick 6)

    python benchmarks/masked_conv.py                      # plain and gated recipe networks, 3 runs
    python benchmarks/masked_conv.py --arch plain --set blocks=15 --runs 3 --steps 5

A step is forward + backward + Adam on a batch of 64 binary 28 x 28 images (the recipe's). Each
(arch, way) runs in its own process, so that "peak MB" (the resident set's growth during the steps,
as in engine.py) is its own; the ways alternate within a run, and the figure is the median over
--runs of each run's median step, with the range.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine import peak_rss_mb, reset_peak, rss_mb  # noqa: E402


def worker(arch, way, steps, overrides):
    import numpy as np
    import autograd.functional as F
    from autograd import Tensor
    from tinygen import optim
    from tinygen.models import pixelcnn

    if way == "dense":
        def dense(self, x):  # y = conv2d(x, W * mask), the zero taps multiplied too
            return F.conv2d(x, self.weight * Tensor(self.mask, dtype=self.weight.dtype), self.bias,
                            padding=self.padding)
        pixelcnn.MaskedConv2d.forward = dense
    model = pixelcnn.PixelCNN(pixelcnn.PixelCNNConfig(arch=arch, **overrides))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = Tensor((np.random.default_rng(0).random((64, 1, 28, 28)) < 0.3).astype(np.float32))

    def step():
        loss, _ = model.loss((x, None))
        opt.zero_grad()
        loss.backward()
        opt.step()

    before = rss_mb()
    reset_peak()
    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"ms": 1000 * statistics.median(times), "peak_mb": max(peak_rss_mb() - before, 0.0)}))


def parse_set(items):
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=("plain", "gated", "both"), default="both")
    ap.add_argument("--steps", type=int, default=4, help="steps timed per process (median), after 1 warm-up")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a PixelCNNConfig field")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.steps, parse_set(args.set))
    archs = ("plain", "gated") if args.arch == "both" else (args.arch,)
    print(f"{'arch':6s} {'way':6s} {'ms/step median (range)':>26s} {'peak MB':>8s}")
    for arch in archs:
        results = {"dense": [], "taps": []}
        for _ in range(args.runs):
            for way in results:
                cmd = [sys.executable, __file__, "--worker", arch, way, "--steps", str(args.steps)]
                cmd += [a for s in args.set for a in ("--set", s)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                results[way].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        for way, rs in results.items():
            ms = [r["ms"] for r in rs]
            print(f"{arch:6s} {way:6s} {statistics.median(ms):10.0f} ({min(ms):.0f}-{max(ms):.0f}) "
                  f"{statistics.median(r['peak_mb'] for r in rs):16.1f}")
        ratios = [t["ms"] / d["ms"] for t, d in zip(results["taps"], results["dense"])]
        print(f"{arch:6s} taps / dense time: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
