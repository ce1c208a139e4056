"""Command line:  python -m tinygen list | train | sample | edit | vary | evaluate | report

    python -m tinygen list
    python -m tinygen train cnn --quick
    python -m tinygen train cnn --dataset fashion --epochs 8
    python -m tinygen evaluate cnn --checkpoint runs/cnn-mnist/last.npz
    python -m tinygen sample MODEL --checkpoint PATH --n 64 [--label 7] [--out FILE.png | FILE.npz]
    python -m tinygen edit glide --checkpoint PATH --image 0 --mask lower --prompt "a digit one"
    python -m tinygen vary unclip --checkpoint PATH --image 0 --n 8
    python -m tinygen report [--runs DIR] [--out FILE] [--n N] [--families | --models M ...] [--train] [--dry-run]

Every refusal is one line on stderr that names the option or the file and says what is valid, with
exit status 2: bad arguments (argparse's own errors, shortened to one line), values out of range
(checked here, at the door), and the library's own errors (a corrupt checkpoint, missing data, a run
folder that already holds a run, a non-finite loss). TINYGEN_TRACEBACK=1 shows the traceback as well.
"""
import json
import sys
from pathlib import Path

try:  # Ctrl-C while the modules load (NumPy, the models: a second or more) is one line too, status 130
    from . import models
    from .cli import (OneLineParser, UsageError, check_memory, finite_number,  # noqa: F401 (re-exported)
                      parse_settings, run_command, whole_number)
except KeyboardInterrupt:
    sys.stderr.write("python -m tinygen: interrupted\n")
    raise SystemExit(130) from None

SAMPLE_SUFFIXES = {".png": "a PNG grid of the samples",
                   ".npz": "the samples as data: images (n, 1, 28, 28) float32 in [0, 1], labels (n,) int64, "
                           "-1 where none was asked for"}
IMAGE_BYTES = 28 * 28 * 4  # one image as float32: what a request of n images needs at the least, n times
SAMPLE_MARK = "tinygen-samples"  # what marks a file as written by `sample` (a PNG text chunk, an .npz's meta kind)


def _add_model(p):
    p.add_argument("model", help="model name (python -m tinygen list shows them)")


def _check_model(name):
    if name not in models.MODULES:
        raise UsageError(f"unknown model {name!r}; valid models: {', '.join(sorted(models.MODULES))}")


def _check_device(device):
    from autograd import backend
    try:
        backend.module_for(device)
    except RuntimeError as error:
        raise UsageError(f"--device {device}: {error}") from None


def parser():
    ap = OneLineParser(prog="python -m tinygen", description="Readable generative models on a small "
                       "autograd engine, trained on MNIST / Fashion-MNIST.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,train,sample,edit,vary,evaluate,report}")
    sub.add_parser("list", help="the models, one line each")

    t = sub.add_parser("train", help="train a model (progress bar, pictures, checkpoints in --out)")
    _add_model(t)
    t.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    t.add_argument("--epochs", type=whole_number(1), help="default: the model's recipe")
    t.add_argument("--batch-size", type=whole_number(1), help="default: the model's recipe")
    t.add_argument("--lr", type=finite_number(0, strict=True), help="default: the model's recipe")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu or cuda (needs CuPy and a GPU)")
    t.add_argument("--seed", type=whole_number(0), default=0)
    t.add_argument("--quick", action="store_true", help="a few hundred steps: the whole path in about a minute")
    t.add_argument("--max-steps", type=whole_number(1), help="stop after this many steps")
    t.add_argument("--train-size", type=whole_number(1), metavar="N",
                   help="train on N images of the train split only (the first N of one fixed shuffle: the same "
                        "for every seed, and a smaller N a part of a larger one)")
    t.add_argument("--out", help="run folder (default runs/<model>-<dataset>); a fresh run never replaces a "
                                 "run already there unless --overwrite is given")
    t.add_argument("--evaluate-every", type=whole_number(1), default=1, metavar="EPOCHS",
                   help="the test metrics and the picture every EPOCHS epochs and after the last (default 1; "
                        "for many short epochs, as with a small --train-size)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from <out>/last.npz exactly")
    mode.add_argument("--overwrite", action="store_true",
                      help="start over in an --out that holds a run (deletes that run's files)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a field of the model's Config, e.g. --set loss=minimax --set latent_dim=2")

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid or an .npz array")
    _add_model(s)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--n", type=whole_number(1), default=64)
    s.add_argument("--label", type=whole_number(0), help="class to generate (conditional models)")
    s.add_argument("--prompt", help="text prompt (text-conditioned models)")
    s.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (diffusion models)")
    s.add_argument("--steps", type=whole_number(1), help="sampling steps (diffusion models)")
    s.add_argument("--seed", type=whole_number(0), default=0)
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a sampling setting of the model, e.g. --set decode_from=text (unclip)")
    s.add_argument("--out", help="FILE.png (a grid) or FILE.npz (the images as data: `images` (n, 1, 28, 28) "
                                 "float32 in [0, 1] and `labels` (n,) int64, -1 where none was asked for); "
                                 "default samples.png next to the checkpoint. It never replaces a file that "
                                 "`sample` did not write")

    e = sub.add_parser("evaluate", help="test-split metrics of a trained model (JSON)")
    _add_model(e)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--n", type=whole_number(2), default=10000, help="samples for FID-judge / accuracy (>= 2)")
    e.add_argument("--seed", type=whole_number(0), default=0)
    e.add_argument("--steps", type=whole_number(1),
                   help="sampling steps (diffusion models; default all T, ancestral)")
    e.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (diffusion models; default 1)")

    d = sub.add_parser("edit", help="redraw a region of images to fit a prompt, keeping the rest (GLIDE)")
    _add_model(d)
    d.add_argument("--checkpoint", required=True)
    d.add_argument("--image", required=True, help="a test-split index (0..9999), or a FILE.npz written by "
                                                  "`sample` (all its images)")
    d.add_argument("--mask", required=True, help="the region redrawn: lower, upper, left, right or box")
    d.add_argument("--prompt", required=True, help="what the redrawn image should show")
    d.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (default the model's)")
    d.add_argument("--steps", type=whole_number(1), default=50, help="DDIM steps (default 50)")
    d.add_argument("--n", type=whole_number(1), default=1, help="edits per image")
    d.add_argument("--seed", type=whole_number(0), default=0)
    d.add_argument("--out", help="FILE.png (rows: the image, what the model keeps, the edits) or FILE.npz; "
                                 "default edit.png next to the checkpoint")

    v = sub.add_parser("vary", help="variations of images: each CLIP-encoded and decoded several times (unclip)")
    _add_model(v)
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--image", required=True, help="a test-split index (0..9999), or a FILE.npz written by "
                                                  "`sample` (all its images)")
    v.add_argument("--n", type=whole_number(1), default=8, help="variations per image")
    v.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (default the model's)")
    v.add_argument("--steps", type=whole_number(1), default=50, help="DDIM steps (default 50)")
    v.add_argument("--seed", type=whole_number(0), default=0)
    v.add_argument("--out", help="FILE.png (rows: the image, then its variations) or FILE.npz; default vary.png "
                                 "next to the checkpoint")

    r = sub.add_parser("report", help="the overview's table measured on the runs under --runs: likelihood, "
                                      "stability over seeds, FID-judge, images/s, CPU; writes docs/report.md")
    from .report import add_arguments
    add_arguments(r)
    return ap


# ---------------------------------------------------------------------- sampling options
def check_sampling(model, given, checkpoint, labelled):
    """Refuse, by name, the sampling options `model` does not take, and values out of its range.
    `given` maps option names (label, prompt, guidance, steps) to the values typed (None: not given);
    `labelled`: whether the samples will be asked for labels (guidance steers towards them)."""
    takes = tuple(getattr(model, "sample_options", ()))
    for option, value in given.items():
        if value is None:
            continue
        if option not in takes:
            valid = ", ".join(f"--{o}" for o in takes) or "none"
            raise UsageError(f"--{option}: {model.name} takes no --{option} (its sampling options: {valid})")
    label = given.get("label")
    if label is not None:
        classes = getattr(model.config, "num_classes", 10)
        if not model.conditional or not classes:
            raise UsageError(f"--label {label}: the {model.name} in {checkpoint} was trained without labels "
                             f"(num_classes=0); leave --label out")
        if label >= classes:
            raise UsageError(f"--label {label}: valid labels are 0..{classes - 1}")
    if given.get("guidance") is not None and not labelled:
        raise UsageError(f"--guidance {given['guidance']:g}: guidance steers samples towards a label or a prompt; "
                         + ("give --label too" if model.conditional else
                            "give --prompt too" if "prompt" in getattr(model, "sample_options", ()) else
                            f"the {model.name} in {checkpoint} was trained without labels"))
    steps, T = given.get("steps"), getattr(model.config, "T", None)
    if steps is not None and T is not None and steps > T:
        raise UsageError(f"--steps {steps}: {model.name} has T = {T} diffusion steps; valid: 1..{T} "
                         f"(leave --steps out for all {T} ancestral steps)")


def check_sample_out(out, checkpoint):
    """Refuse an --out with another suffix than .png / .npz, one that would replace a file `sample` did
    not write (a checkpoint, a picture of the user's), and one that cannot be written (io.unwritable_reason)."""
    from . import io
    path = Path(out)
    if path.suffix.lower() not in SAMPLE_SUFFIXES:
        valid = "; ".join(f"{k} ({v.split(':')[0]})" for k, v in SAMPLE_SUFFIXES.items())
        raise UsageError(f"--out {out}: unsupported suffix {path.suffix or '(none)'!r}; valid: {valid}")
    if path.exists() and path.resolve() == Path(checkpoint).resolve():
        raise UsageError(f"--out {out}: that is the --checkpoint itself; choose another file")
    if path.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name ending in .png or .npz")
    reason = io.unwritable_reason(path)  # found now, not after the sampling (and before a FIFO is opened)
    if reason:
        raise UsageError(f"--out {out}: {reason}")
    if path.exists() and not is_sample_file(path):
        raise UsageError(f"--out {out}: the file exists and was not written by `python -m tinygen sample`; "
                         f"choose another file (nothing was changed)")
    return path


def is_sample_file(path):
    """Whether `path` was written by `sample` (the only files --out may replace)."""
    from . import io
    if path.suffix.lower() == ".png":
        return io.png_text(path).get("tinygen") == SAMPLE_MARK
    try:
        return io.load_checkpoint(path)[1].get("kind") == SAMPLE_MARK
    except io.CheckpointError:
        return False


def sample_command(args):
    import numpy as np
    from . import io
    out = check_sample_out(args.out or str(Path(args.checkpoint).with_name("samples.png")), args.checkpoint)
    check_memory("--n", args.n, IMAGE_BYTES * 2)  # the samples, and their picture or archive
    model, _ = models.load_model(args.checkpoint, args.model)
    if not hasattr(model, "sample"):
        raise UsageError(f"{args.model} is not a generative model: it has no sample()")
    given = {"label": args.label, "prompt": args.prompt, "guidance": args.guidance, "steps": args.steps}
    check_sampling(model, given, args.checkpoint, labelled=args.label is not None or args.prompt is not None)
    settings = models.set_sample_settings(model, parse_settings(args.set))
    condition = {k: v for k, v in given.items() if v is not None}
    labels = np.full(args.n, -1, np.int64)
    if args.label is not None:
        labels[:] = args.label
    elif model.conditional and "guidance" not in model.sample_options:
        # label-conditioned models without --label: one of each class in turn (diffusion models, which
        # take guidance, give their unconditional null-label samples instead)
        labels = np.arange(args.n, dtype=np.int64) % getattr(model.config, "num_classes", 10)
        condition["label"] = labels
    model.rng = np.random.default_rng(args.seed)
    images = np.asarray(model.sample(args.n, **condition), dtype=np.float32)
    record = {"model": args.model, "checkpoint": str(args.checkpoint), "n": args.n, "seed": args.seed,
              **{k: v for k, v in given.items() if v is not None}, **settings}
    if out.suffix.lower() == ".png":
        io.save_image_grid(images, out, scale=2, text={"tinygen": SAMPLE_MARK, "command": json.dumps(record)})
    else:
        io.save_checkpoint(out, {"images": images, "labels": labels}, {"kind": SAMPLE_MARK, **record})
    print(f"saved {len(images)} samples to {out}")
    return 0


def edit_images(image, dataset):
    """--image: a test-split index, or a sample file's images; uint8-free floats (B, 1, 28, 28) in [0, 1]."""
    import numpy as np
    from . import data, io
    if image.isdigit():
        x, _ = data.load_dataset(dataset, "test")
        if int(image) >= len(x):
            raise UsageError(f"--image {image}: the {dataset} test split has images 0..{len(x) - 1}")
        return data.to_float(x[int(image):int(image) + 1])
    if not Path(image).is_file() or not is_sample_file(Path(image)) or Path(image).suffix != ".npz":
        raise UsageError(f"--image {image}: give a test-split index or an .npz written by `python -m tinygen sample`")
    return np.asarray(io.load_checkpoint(image)[0]["images"], np.float32)


def edit_command(args):
    import numpy as np
    out = check_sample_out(args.out or str(Path(args.checkpoint).with_name("edit.png")), args.checkpoint)
    model, _ = models.load_model(args.checkpoint, args.model)
    if not hasattr(model, "edit"):
        raise UsageError(f"edit: {args.model} does not edit images (glide does)")
    redraw = model.region(args.mask)
    T = model.config.T
    if args.steps > T:
        raise UsageError(f"--steps {args.steps}: {model.name} has T = {T} diffusion steps; valid: 1..{T}")
    images = np.repeat(edit_images(args.image, model.dataset), args.n, axis=0)   # (B n, 1, 28, 28)
    model.rng = np.random.default_rng(args.seed)
    edited = model.edit(images, redraw, args.prompt, args.guidance, args.steps)
    record = {"model": args.model, "checkpoint": str(args.checkpoint), "image": args.image, "mask": args.mask,
              "prompt": args.prompt, "steps": args.steps, "seed": args.seed,
              **({"guidance": args.guidance} if args.guidance is not None else {})}
    rows = model.edit_grid(images[::args.n], redraw, edited)           # the image, the part kept, the edits
    write_images(out, edited, record, rows, 2 + args.n)
    print(f"saved {len(edited)} edits to {out}")
    return 0


def write_images(out, images, record, rows, nrow):
    """What `edit` and `vary` made: to FILE.png the grid `rows` (nrow columns), marked as ours with the
    command that made it; to FILE.npz the images themselves, labels -1, the command in the meta."""
    import numpy as np
    from . import io
    if out.suffix.lower() == ".png":
        io.save_image_grid(rows, out, nrow=nrow, scale=2, text={"tinygen": SAMPLE_MARK, "command": json.dumps(record)})
    else:
        io.save_checkpoint(out, {"images": images, "labels": np.full(len(images), -1, np.int64)},
                           {"kind": SAMPLE_MARK, **record})


def vary_command(args):
    import numpy as np
    out = check_sample_out(args.out or str(Path(args.checkpoint).with_name("vary.png")), args.checkpoint)
    model, _ = models.load_model(args.checkpoint, args.model)
    if not hasattr(model, "vary"):
        raise UsageError(f"vary: {args.model} does not make variations of images (unclip does)")
    T = model.config.T
    if args.steps > T:
        raise UsageError(f"--steps {args.steps}: {model.name} has T = {T} diffusion steps; valid: 1..{T}")
    images = edit_images(args.image, model.dataset)                    # (B, 1, 28, 28) in [0, 1]
    check_memory("--n", len(images) * args.n, IMAGE_BYTES * 2)
    model.rng = np.random.default_rng(args.seed)
    varied = model.vary(images, args.n, args.guidance, args.steps)      # (B n, 1, 28, 28)
    record = {"model": args.model, "checkpoint": str(args.checkpoint), "image": args.image, "n": args.n,
              "steps": args.steps, "seed": args.seed, **({"guidance": args.guidance} if args.guidance is not None else {})}
    rows = np.concatenate([images[:, None], varied.reshape(-1, args.n, 1, 28, 28)], axis=1)  # the image, its variations
    write_images(out, varied, record, rows.reshape(-1, 1, 28, 28), 1 + args.n)
    print(f"saved {len(varied)} variations to {out}")
    return 0


def main(argv=None):
    return run_command(_main, argv, "python -m tinygen")


def _main(argv):
    args = parser().parse_args(argv)
    if args.command == "list":
        for name, summary in models.available():
            print(f"{name:18s} {summary}")
        return 0
    if args.command == "report":
        from .report import report_command
        return report_command(args)

    _check_model(args.model)
    if args.command == "train":
        from .train import TrainOptions, train
        _check_device(args.device)
        settings = parse_settings(args.set)
        options = TrainOptions(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, device=args.device, quick=args.quick, max_steps=args.max_steps,
                               train_size=args.train_size, evaluate_every=args.evaluate_every, out=args.out,
                               resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
        summary = train(args.model, options, **settings)
        print(json.dumps(summary))
        return 0
    if args.command == "sample":
        return sample_command(args)
    if args.command == "edit":
        return edit_command(args)
    if args.command == "vary":
        return vary_command(args)

    from .evaluate import evaluate_model
    check_memory("--n", args.n, IMAGE_BYTES * 2)  # the samples, and the judge's view of them
    model, meta = models.load_model(args.checkpoint, args.model)
    check_sampling(model, {"steps": args.steps, "guidance": args.guidance}, args.checkpoint,
                   labelled=model.conditional)
    sampling = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
    print(json.dumps(evaluate_model(model, meta["dataset"], n=args.n, seed=args.seed, **sampling), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
