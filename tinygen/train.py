"""The one training loop every model uses.

    for each epoch, for each batch:   logs = model.training_step(batch, optimizers)
    every epoch:                      test metrics, a picture (samples or predictions), a checkpoint

A run folder (default runs/<model>-<dataset>) holds config.json, metrics.jsonl (one JSON object per
line), the pictures, last.npz (the checkpoint) and summary.json. A checkpoint holds everything needed
to continue exactly where the run stopped: weights, optimiser moments, EMA weights, the step and the
position in the epoch, and the state of every random number generator, so that `--resume` gives the
same losses as a run that was never interrupted. Ctrl-C finishes the current step and saves; a
non-finite loss stops the run with a message, leaving the last good checkpoint untouched.
"""
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data, io, nn, optim
from .models import build_model

try:
    from tqdm.auto import tqdm
except ImportError:  # the loop works without a progress bar
    tqdm = None

DATASETS = ("mnist", "fashion")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, or a checkpoint that belongs to another run)."""


@dataclass
class TrainOptions:
    dataset: str = "mnist"
    epochs: int = None          # None: the model's recipe (its Config)
    batch_size: int = None
    lr: float = None
    seed: int = 0
    device: str = "cpu"
    quick: bool = False         # train config.quick_steps steps only, to see the whole path quickly
    max_steps: int = None       # stop after this many steps in total
    out: str = None             # run folder (default runs/<model>-<dataset>)
    resume: bool = False
    log_every: int = 20         # steps between metrics.jsonl lines
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end of each epoch)
    progress: bool = True
    evaluate: bool = True       # test metrics after each epoch


def _config_differences(saved, now, defaults):
    """{field: (saved, now)} for the recipe fields that would change the run. Compared as JSON (a tuple
    saved in a checkpoint comes back as a list); `quick_steps` only matters under --quick, whose step
    count the options record; a field newer than the checkpoint matches if it keeps its default. With a
    constant learning rate, `epochs` only says where to stop, so a finished run can be trained further
    (--resume --epochs N)."""
    now = json.loads(json.dumps(now))
    diff = {}
    constant = saved.get("lr_schedule", getattr(defaults, "lr_schedule", "constant")) == "constant"
    for k, v in now.items():
        if k == "quick_steps" or (k == "epochs" and constant and now.get("lr_schedule") == "constant"):
            continue
        old = saved[k] if k in saved else json.loads(json.dumps(getattr(defaults, k)))
        if old != v:
            diff[k] = (saved.get(k), v)
    return diff


class Trainer:
    def __init__(self, model, options):
        if options.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {options.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        self.model, self.opt = model, options
        model.dataset = options.dataset
        self.out = Path(options.out or f"runs/{model.name}-{options.dataset}")
        self.checkpoint_path = self.out / "last.npz"
        self.optimizers = model.configure_optimizers()
        self.base_lrs = {name: [g["lr"] for g in o.param_groups] for name, o in self.optimizers.items()}
        if model.config.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {model.config.lr_schedule!r}; valid: 'constant', 'cosine'")
        self.step, self.epoch, self.batch_index = 0, 0, 0
        self._stop_requested = False

    # ---------------------------------------------------------------- checkpoints
    def save(self):
        arrays, scalars = {}, {}
        io.flatten_state("model", self.model.state_dict(), arrays, scalars)
        for name, opt in self.optimizers.items():
            io.flatten_state(f"optim/{name}", opt.state_dict(), arrays, scalars)
        ema = getattr(self.model, "ema", None)
        if ema is not None:
            io.flatten_state("ema", ema.state_dict(), arrays, scalars)
        meta = {"kind": "tinygen-run", "model": self.model.name, "dataset": self.opt.dataset,
                "config": self.model.config_dict(), "step": self.step, "epoch": self.epoch,
                "batch_index": self.batch_index, "scalars": scalars,
                "cpu_seconds": round(self.cpu_before + time.process_time() - self.cpu0, 1),
                "cpu_counted_from_step": self.cpu_from_step,
                "rng": {"model": self.model.rng.bit_generator.state, "nn": nn.get_rng_state()}}
        io.save_checkpoint(self.checkpoint_path, arrays, meta)

    def restore(self, path):
        arrays, meta = io.load_checkpoint(path)
        if meta.get("kind") != "tinygen-run":
            raise TrainingError(f"{path}: not a tinygen training checkpoint")
        if meta["model"] != self.model.name or meta["dataset"] != self.opt.dataset:
            raise TrainingError(f"{path} belongs to {meta['model']} on {meta['dataset']}, "
                                f"not {self.model.name} on {self.opt.dataset}")
        diff = _config_differences(meta["config"], self.model.config_dict(), type(self.model.config)())
        if diff:
            raise TrainingError(f"{path}: the run's config differs from this one (checkpoint, now): {diff}")
        scalars = meta["scalars"]
        self.model.load_state_dict(io.unflatten_state("model", arrays, scalars))
        for name, opt in self.optimizers.items():
            opt.load_state_dict(io.unflatten_state(f"optim/{name}", arrays, scalars))
        if getattr(self.model, "ema", None) is not None:
            self.model.ema.load_state_dict(io.unflatten_state("ema", arrays, scalars))
        self.model.rng.bit_generator.state = meta["rng"]["model"]
        nn.set_rng_state(meta["rng"]["nn"])
        self.step, self.epoch, self.batch_index = meta["step"], meta["epoch"], meta["batch_index"]
        # CPU time adds up across resumes; a checkpoint written before it was counted starts the count here
        self.cpu_before = meta.get("cpu_seconds", 0.0)
        self.cpu_from_step = meta.get("cpu_counted_from_step", 0 if "cpu_seconds" in meta else self.step)

    # ---------------------------------------------------------------- the loop
    def fit(self):
        opt, model = self.opt, self.model
        self.out.mkdir(parents=True, exist_ok=True)
        nn.manual_seed(opt.seed)
        model.rng = np.random.default_rng([opt.seed, 1])
        self.cpu0, self.cpu_before, self.cpu_from_step = time.process_time(), 0.0, 0
        if opt.resume:
            if not self.checkpoint_path.exists():
                raise TrainingError(f"--resume: no checkpoint at {self.checkpoint_path}; train without --resume first")
            self.restore(self.checkpoint_path)
            print(f"resumed {self.checkpoint_path} at step {self.step} (epoch {self.epoch + 1})")
        elif (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
        io.atomic_write_text(self.out / "config.json", json.dumps(
            {"model": model.name, "options": asdict(opt), "config": model.config_dict()}, indent=2))

        train_x, train_y = data.load_dataset(opt.dataset, "train")
        test_x, test_y = data.load_dataset(opt.dataset, "test")
        loader = data.DataLoader((train_x, train_y), model.config.batch_size, shuffle=True, seed=opt.seed)
        epochs = model.config.epochs
        max_steps = opt.max_steps or (model.config.quick_steps if opt.quick else epochs * len(loader))
        max_steps = min(max_steps, epochs * len(loader)) if not opt.quick else max_steps
        epochs = max(epochs, math.ceil(max_steps / len(loader)))
        # the learning rate is a function of the step alone, so a resumed run needs no schedule state; the
        # decay spans the recipe (epochs, or quick_steps), whatever --max-steps stops it at
        schedules = []
        if model.config.lr_schedule == "cosine":
            total = model.config.quick_steps if opt.quick else model.config.epochs * len(loader)
            for name, o in self.optimizers.items():
                schedules.append(optim.CosineSchedule(o, total))
                schedules[-1].base_lrs = self.base_lrs[name]  # the recipe's lr, not one restored mid-decay

        previous_handler = self._install_interrupt_handler()
        wall0 = time.time()
        last_good = self.step if self.checkpoint_path.exists() and opt.resume else None
        sums, count = {}, 0
        try:
            while self.epoch < epochs and self.step < max_steps:
                total = min(len(loader), max_steps - self.step + self.batch_index)
                bar = tqdm(total=total, initial=self.batch_index, desc=f"{model.name} epoch {self.epoch + 1}/{epochs}",
                           disable=not opt.progress, leave=True, dynamic_ncols=True) if tqdm else None
                for images, labels in loader.batches(self.epoch, start=self.batch_index):
                    batch = model.prepare_batch(images, labels)
                    for schedule in schedules:
                        schedule.set_step(self.step)
                    logs = model.training_step(batch, self.optimizers)
                    bad = {k: v for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)}
                    if bad:
                        where = (f"the last good checkpoint is {self.checkpoint_path} (step {last_good})"
                                 if last_good is not None else "no checkpoint had been saved yet")
                        raise TrainingError(f"non-finite {bad} at step {self.step + 1} (epoch {self.epoch + 1}); "
                                            f"stopped: {where}. Try a lower --lr or gradient clipping.")
                    self.step += 1
                    self.batch_index += 1
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                    if self.step % opt.log_every == 0:
                        self._log({"step": self.step, "epoch": self.epoch + 1,
                                   **{k: v / count for k, v in sums.items()}})
                        if bar is not None:
                            bar.set_postfix({k: f"{v / count:.4g}" for k, v in sums.items()}, refresh=False)
                        sums, count = {}, 0
                    if bar is not None:
                        bar.update(1)
                    if self.step % opt.checkpoint_every == 0:
                        self.save()
                        last_good = self.step
                    if self._stop_requested or self.step >= max_steps:
                        break
                if bar is not None:
                    bar.close()
                if self.batch_index >= len(loader):
                    self.epoch, self.batch_index = self.epoch + 1, 0
                self.save()
                last_good = self.step
                self._end_of_epoch(test_x, test_y)
                if self._stop_requested:
                    print(f"\ninterrupted: saved {self.checkpoint_path} at step {self.step}; "
                          f"continue with --resume")
                    break
        finally:
            signal.signal(signal.SIGINT, previous_handler) if previous_handler is not None else None
        summary = {"model": model.name, "dataset": opt.dataset, "steps": self.step,
                   "cpu_seconds": round(self.cpu_before + time.process_time() - self.cpu0, 1),
                   **({"cpu_counted_from_step": self.cpu_from_step} if self.cpu_from_step else {}),
                   "wall_seconds": round(time.time() - wall0, 1), **self.last_metrics}
        io.atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        return summary

    last_metrics = {}

    def _end_of_epoch(self, test_x, test_y):
        """Test metrics and a picture. They draw from their own generator and leave the training
        generators as they were, so a resumed run sees the same random numbers as an uninterrupted one."""
        model = self.model
        training_rng, nn_state = model.rng, nn.get_rng_state()
        model.rng = np.random.default_rng([self.opt.seed, 2, self.step])
        try:
            self._evaluate_and_picture(test_x, test_y)
        finally:
            model.rng = training_rng
            nn.set_rng_state(nn_state)

    def _evaluate_and_picture(self, test_x, test_y):
        model = self.model
        if self.opt.evaluate:
            metrics = model.evaluate(test_x, test_y)
            if metrics:
                self.last_metrics = metrics
                self._log({"step": self.step, "epoch": self.epoch, **metrics})
                print("  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        picture = self.out / f"samples_step{self.step:06d}.png"
        model.visualize(test_x[:64], test_y[:64], picture)
        io.atomic_write_bytes(self.out / "samples_latest.png", picture.read_bytes())

    def _log(self, record):
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _install_interrupt_handler(self):
        """First Ctrl-C: finish this step, save, stop. A second one stops at once."""
        if os.name == "nt" or not hasattr(signal, "SIGINT"):
            return None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nCtrl-C: saving a checkpoint after this step (press again to abort without saving)")
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not in the main thread
            return None


def train(name, options=None, **config_overrides):
    """Train model `name` with `options` (TrainOptions); returns the summary dict."""
    options = options or TrainOptions()
    overrides = {"epochs": options.epochs, "batch_size": options.batch_size, "lr": options.lr, **config_overrides}
    model = build_model(name, overrides, seed=options.seed)
    if options.device != "cpu":
        model.to(options.device)
    return Trainer(model, options).fit()
