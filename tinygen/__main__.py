"""Command line:  python -m tinygen list | train | sample | evaluate | report

    python -m tinygen list
    python -m tinygen train cnn --quick
    python -m tinygen train cnn --dataset fashion --epochs 8
    python -m tinygen evaluate cnn --checkpoint runs/cnn-mnist/last.npz
    python -m tinygen sample MODEL --checkpoint PATH --n 64 [--label 7]
    python -m tinygen report
"""
import argparse
import json
import sys
from pathlib import Path

from . import models


def _add_model(p):
    p.add_argument("model", help="model name (python -m tinygen list shows them)")


def _check_model(name):
    if name not in models.MODULES:
        sys.exit(f"error: unknown model {name!r}; valid models: {', '.join(sorted(models.MODULES))}")


def parse_settings(items):
    """['latent_dim=2', 'loss=minimax'] -> {'latent_dim': 2, 'loss': 'minimax'} (JSON values, else strings)."""
    settings = {}
    for item in items:
        if "=" not in item:
            sys.exit(f"error: --set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def parser():
    ap = argparse.ArgumentParser(prog="python -m tinygen", description="Readable generative models on a small "
                                 "autograd engine, trained on MNIST / Fashion-MNIST.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,train,sample,evaluate,report}")
    sub.add_parser("list", help="the models, one line each")

    t = sub.add_parser("train", help="train a model (progress bar, pictures, checkpoints in --out)")
    _add_model(t)
    t.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    t.add_argument("--epochs", type=int, help="default: the model's recipe")
    t.add_argument("--batch-size", type=int, help="default: the model's recipe")
    t.add_argument("--lr", type=float, help="default: the model's recipe")
    t.add_argument("--device", default="cpu", help="cpu or cuda (needs CuPy and a GPU)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true", help="a few hundred steps: the whole path in about a minute")
    t.add_argument("--max-steps", type=int, help="stop after this many steps")
    t.add_argument("--out", help="run folder (default runs/<model>-<dataset>)")
    t.add_argument("--resume", action="store_true", help="continue from <out>/last.npz exactly")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a field of the model's Config, e.g. --set loss=minimax --set latent_dim=2")

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    _add_model(s)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--label", type=int, help="class to generate (conditional models)")
    s.add_argument("--prompt", help="text prompt (text-conditioned models)")
    s.add_argument("--guidance", type=float, help="guidance scale (diffusion models)")
    s.add_argument("--steps", type=int, help="sampling steps (diffusion models)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG path (default: samples.png next to the checkpoint)")

    e = sub.add_parser("evaluate", help="test-split metrics of a trained model (JSON)")
    _add_model(e)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--n", type=int, default=10000, help="samples for FID-judge / accuracy")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--steps", type=int, help="sampling steps (diffusion models; default all T, ancestral)")
    e.add_argument("--guidance", type=float, help="guidance scale (diffusion models; default 1)")

    r = sub.add_parser("report", help="a table of the runs under a folder (their summary.json)")
    r.add_argument("--runs", default="runs")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "list":
        for name, summary in models.available():
            print(f"{name:18s} {summary}")
        return 0
    if args.command == "report":
        rows = sorted(Path(args.runs).glob("*/summary.json"))
        if not rows:
            print(f"no runs with a summary.json under {args.runs}/")
        for path in rows:
            print(json.dumps(json.loads(path.read_text())))
        return 0

    _check_model(args.model)
    if args.command == "train":
        from .train import TrainOptions, train
        options = TrainOptions(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, device=args.device, quick=args.quick, max_steps=args.max_steps,
                               out=args.out, resume=args.resume, progress=not args.no_progress)
        summary = train(args.model, options, **parse_settings(args.set))
        print(json.dumps(summary))
        return 0

    from .evaluate import evaluate_model
    model, meta = models.load_model(args.checkpoint, args.model)
    if args.command == "evaluate":
        sampling = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
        print(json.dumps(evaluate_model(model, meta["dataset"], n=args.n, seed=args.seed, **sampling), indent=2))
        return 0
    if args.command == "sample":
        import numpy as np
        from .io import save_image_grid
        if not hasattr(model, "sample"):
            sys.exit(f"error: {args.model} is not a generative model: it has no sample()")
        model.rng = np.random.default_rng(args.seed)
        condition = {k: v for k, v in {"label": args.label, "prompt": args.prompt, "guidance": args.guidance,
                                       "steps": args.steps}.items() if v is not None}
        images = model.sample(args.n, **condition)
        out = args.out or str(Path(args.checkpoint).with_name("samples.png"))
        save_image_grid(images, out, scale=2)
        print(f"saved {len(images)} samples to {out}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
