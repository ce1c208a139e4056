"""The one training loop every model uses.

    for each epoch, for each batch:   logs = model.training_step(batch, optimizers)
    every epoch:                      test metrics, a picture (samples or predictions), a checkpoint
                                      (every evaluate_every epochs, and after the last)

A run folder (default runs/<model>-<dataset>) holds config.json, metrics.jsonl (one JSON object per
line), the pictures, last.npz (the checkpoint) and summary.json. A checkpoint holds everything needed
to continue exactly where the run stopped: weights, optimiser moments, EMA weights, the step and the
position in the epoch, and the state of every random number generator, so that `--resume` gives the
same losses as a run that was never interrupted (metrics.jsonl included). A non-finite loss stops the run
with a message, leaving the last good checkpoint untouched; its summary.json then says "diverged" (the
message), which `python -m tinygen report` counts.

Signals (Ctrl-C = SIGINT, kill = SIGTERM, a closed terminal = SIGHUP) finish the current step, skip the
end-of-epoch evaluation and picture (they can take minutes; a resumed run does them first), save, write a
summary.json marked "interrupted" and raise Interrupted, whose exit status is the shell's 128 + signal
(130, 143, 129). A second signal stops at once, except during a save, which takes seconds and is let
finish: either way the newest checkpoint on disk is whole. One process at a time trains in a run folder:
it holds the folder's lock file (io.FolderLock) from before its first write to its end.

What the loop refuses, before it writes anything (a TrainingError or ValueError naming the option):
- a fresh run into a folder that already holds a run (use resume=True, another out, or overwrite=True);
- options and recipe fields out of range (epochs, batch_size, max_steps, train_size, evaluate_every >= 1;
  train_size at most the train split; lr > 0 and finite; grad_clip >= 0; the model's check_config, such
  as ddpm's sample_steps <= T), and missing data;
- resume=True with another seed, --quick setting, --train-size, dataset, model or recipe than the
  checkpoint's, or on a run that has already finished;
- a run folder that another process is training in (its lock names the holder).
A checkpoint is written only when every array in it is finite: a step that makes the weights or the
optimiser state non-finite stops the run and leaves the last good checkpoint in place.
"""
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autograd import backend

from . import data, io, nn, optim
from .models import build_model

try:
    from tqdm.auto import tqdm
except ImportError:  # the loop works without a progress bar
    tqdm = None

DATASETS = ("mnist", "fashion")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, or a checkpoint that belongs to another run)."""


class Diverged(TrainingError):
    """A non-finite loss, weights or test metrics: the run stopped, its last good checkpoint kept, and its
    summary.json says "diverged" (the message), so that a report counts it and does not train it again."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal; the message says what was saved. `status` is the exit status a shell
    reports for that signal, 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum, self.status = signum, 128 + signum


class _SkipEvaluation(BaseException):
    """Raised by the signal handler out of an end-of-epoch evaluation: the checkpoint is saved instead.
    A BaseException, so that no `except Exception` in a model's evaluation swallows it."""


# the signals a user or a scheduler stops a run with (Ctrl-C, kill, a closed terminal or ssh session)
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


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
    train_size: int = None      # train on this many train-split images only (data.train_subset)
    out: str = None             # run folder (default runs/<model>-<dataset>)
    resume: bool = False
    overwrite: bool = False     # a fresh run may replace the run already in `out` (its files only)
    log_every: int = 20         # steps between metrics.jsonl lines
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end of each evaluated epoch)
    progress: bool = True
    evaluate: bool = True       # test metrics after each epoch
    evaluate_every: int = 1     # epochs between the test metrics and pictures (and after the last epoch)


RUN_FILES = ("config.json", "metrics.jsonl", "last.npz", "summary.json", "samples_latest.png")
RUN_OUTPUTS = ("last.npz", "metrics.jsonl", "summary.json")  # a folder with one of them holds a run's work


def check_options(options, config):
    """Refuse options and recipe fields outside their range, naming the option (nothing is written yet)."""
    if options.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {options.dataset!r}; valid datasets: {', '.join(DATASETS)}")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if options.max_steps is not None and not (whole(options.max_steps) and options.max_steps >= 1):
        raise ValueError(f"--max-steps {options.max_steps}: must be a whole number >= 1 (leave it out for the recipe)")
    if options.train_size is not None and not (whole(options.train_size) and options.train_size >= 1):
        raise ValueError(f"--train-size {options.train_size}: must be a whole number >= 1 (leave it out for the "
                         f"whole train split)")
    if not (whole(options.evaluate_every) and options.evaluate_every >= 1):
        raise ValueError(f"--evaluate-every {options.evaluate_every}: must be a whole number of epochs >= 1")
    if not (whole(options.seed) and options.seed >= 0):
        raise ValueError(f"--seed {options.seed}: must be a whole number >= 0")
    for field, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("quick_steps", "--set quick_steps")):
        v = getattr(config, field)
        if not (whole(v) and v >= 1):
            raise ValueError(f"{flag} {v}: must be a whole number >= 1")
    if not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"--lr {config.lr}: the learning rate must be a finite number > 0")
    if not (math.isfinite(config.grad_clip) and config.grad_clip >= 0):
        raise ValueError(f"--set grad_clip={config.grad_clip}: must be >= 0 (0 turns clipping off); a negative "
                         f"bound would flip the gradient")
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; valid: 'constant', 'cosine'")


def non_finite_arrays(arrays):
    """Names of the arrays that hold a NaN or an infinity (floating-point arrays only)."""
    bad = []
    for name, a in arrays.items():
        if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" and not bool(
                backend.xp_of(a).isfinite(a).all()):
            bad.append(name)
    return bad


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


def _shown_differences(diff):
    """The differences of _config_differences for a message: a field recorded from another (a dict, such
    as the config of a stage a model starts from) is named, not printed whole."""
    return ", ".join(f"{k}: {'(recorded from another option)' if isinstance(v[0], dict) or isinstance(v[1], dict) else v}"
                     for k, v in diff.items())


def _resume_hint(diff):
    """'; resume with the run's own options: --set k=v ...' for the differing fields with a plain value."""
    plain = [(k, old) for k, (old, _) in diff.items() if isinstance(old, (str, int, float)) and not isinstance(old, bool)]
    if not plain:
        return ""
    return "; resume with the run's own options: " + " ".join(f"--set {k}={v}" for k, v in plain)


class Trainer:
    def __init__(self, model, options):
        check_options(options, model.config)
        model.check_config(model.config)  # what the pictures and the evaluation read: fail now, not after an epoch
        self.model, self.opt = model, options
        model.dataset = options.dataset
        self.out = Path(options.out or f"runs/{model.name}-{options.dataset}")
        self.checkpoint_path = self.out / "last.npz"
        self.optimizers = model.configure_optimizers()
        self.base_lrs = {name: [g["lr"] for g in o.param_groups] for name, o in self.optimizers.items()}
        self.step, self.epoch, self.batch_index = 0, 0, 0
        self.log_sums, self.log_count, self.evaluation_pending = {}, 0, False
        self._stop, self._phase, self.lock = None, "starting", None

    # ---------------------------------------------------------------- checkpoints
    def save(self):
        arrays, scalars = {}, {}
        io.flatten_state("model", self.model.state_dict(), arrays, scalars)
        for name, opt in self.optimizers.items():
            io.flatten_state(f"optim/{name}", opt.state_dict(), arrays, scalars)
        ema = getattr(self.model, "ema", None)
        if ema is not None:
            io.flatten_state("ema", ema.state_dict(), arrays, scalars)
        bad = non_finite_arrays(arrays) + [k for k, v in scalars.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise Diverged(f"non-finite values after step {self.step} in {', '.join(bad[:3])}"
                                f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}: not saved; "
                                f"{self._last_good_message()}. Try a lower --lr or gradient clipping "
                                f"(--set grad_clip=1).")
        meta = {"kind": "tinygen-run", "model": self.model.name, "dataset": self.opt.dataset,
                "config": self.model.config_dict(), "step": self.step, "epoch": self.epoch,
                "batch_index": self.batch_index, "scalars": scalars,
                "seed": self.opt.seed, "quick": self.opt.quick, "train_size": self.opt.train_size,
                "metrics": self.last_metrics,
                # the steps since the last metrics line, so that a resumed run's next line averages the same
                # steps as an uninterrupted run's; and an end-of-epoch evaluation a signal skipped
                "log_sums": list(self.log_sums.items()), "log_count": self.log_count,  # pairs: keep the order
                "evaluation_pending": self.evaluation_pending,
                "cpu_seconds": round(self.cpu_before + time.process_time() - self.cpu0, 1),
                "cpu_counted_from_step": self.cpu_from_step,
                "rng": {"model": self.model.rng.bit_generator.state, "nn": nn.get_rng_state()}}
        io.save_checkpoint(self.checkpoint_path, arrays, meta)
        self.last_good = self.step

    last_good = None  # the step of the newest checkpoint this run wrote or resumed from

    def _last_good_message(self):
        if self.last_good is None:
            return "no checkpoint had been saved yet"
        return f"the last good checkpoint is {self.checkpoint_path} (step {self.last_good})"

    def restore(self, path):
        arrays, meta = io.load_checkpoint(path)
        if meta.get("kind") != "tinygen-run":
            raise TrainingError(f"{path}: not a tinygen training checkpoint")
        if meta["model"] != self.model.name or meta["dataset"] != self.opt.dataset:
            raise TrainingError(f"{path} belongs to {meta['model']} on {meta['dataset']}, "
                                f"not {self.model.name} on {self.opt.dataset}")
        diff = _config_differences(meta["config"], self.model.config_dict(), type(self.model.config)())
        if diff:
            raise TrainingError(f"{path}: the run's config differs from this one (checkpoint, now): "
                                f"{_shown_differences(diff)}{_resume_hint(diff)}")
        # they fix the data, its order and the schedule (a checkpoint from before --train-size used all the data)
        saved = {"train_size": None, **{k: meta[k] for k in ("seed", "quick", "train_size") if k in meta}}
        shown = lambda key, v: "(all)" if key == "train_size" and v is None else v
        for key, flag in (("seed", "--seed"), ("quick", "--quick"), ("train_size", "--train-size")):
            if key in saved and saved[key] != getattr(self.opt, key):
                raise TrainingError(f"--resume with {flag} {shown(key, getattr(self.opt, key))}: the run in "
                                    f"{self.out} was trained with {flag} {shown(key, saved[key])}; resume with the "
                                    f"same {flag} to continue exactly")
        scalars = meta["scalars"]
        self.model.load_state_dict(io.unflatten_state("model", arrays, scalars))
        for name, opt in self.optimizers.items():
            opt.load_state_dict(io.unflatten_state(f"optim/{name}", arrays, scalars))
        if getattr(self.model, "ema", None) is not None:
            self.model.ema.load_state_dict(io.unflatten_state("ema", arrays, scalars))
        self.model.rng.bit_generator.state = meta["rng"]["model"]
        nn.set_rng_state(meta["rng"]["nn"])
        self.step, self.epoch, self.batch_index = meta["step"], meta["epoch"], meta["batch_index"]
        self.last_good, self.last_metrics = self.step, meta.get("metrics", {})
        self.log_sums, self.log_count = dict(meta.get("log_sums", [])), meta.get("log_count", 0)
        self.evaluation_pending = meta.get("evaluation_pending", False)
        # CPU time adds up across resumes; a checkpoint written before it was counted starts the count here
        self.cpu_before = meta.get("cpu_seconds", 0.0)
        self.cpu_from_step = meta.get("cpu_counted_from_step", 0 if "cpu_seconds" in meta else self.step)

    # ---------------------------------------------------------------- the loop
    def fit(self):
        """Train to the end of the recipe (or max_steps); returns the summary. Raises Interrupted when a
        signal stops it (after saving), TrainingError or ValueError when it refuses or cannot go on."""
        self._stop, self._phase, self.lock = None, "starting", None
        previous = self._install_signal_handlers()
        try:
            return self._fit()
        except Diverged as error:  # the folder is written by then: its summary records the stop
            self._write_summary(self.wall0, diverged=" ".join(str(error).split()))
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.lock is not None:
                self.lock.release()

    def _take_lock(self):
        """Hold the run folder's lock (before anything in it is read for a resume or written)."""
        if self.lock is None:
            self.lock = io.FolderLock.acquire(self.out)
            if self.lock.previous:  # kill -9 or a power cut left it; flock says its holder is gone
                print(f"{self.out}: took over the lock left by {io.FolderLock.describe(self.lock.previous)}, "
                      f"which is no longer running")

    def _fit(self):
        opt, model = self.opt, self.model
        nn.manual_seed(opt.seed)
        model.rng = np.random.default_rng([opt.seed, 1])
        self.cpu0, self.cpu_before, self.cpu_from_step = time.process_time(), 0.0, 0
        self.log_sums, self.log_count, self.evaluation_pending, self.evaluated_at = {}, 0, False, None
        # ---- everything is checked before anything is written
        if self.out.is_dir():
            self._take_lock()
        existing = self.run_files()
        if opt.resume:
            if not self.checkpoint_path.exists():
                raise TrainingError(f"--resume: no checkpoint at {self.checkpoint_path}; train without --resume first")
            self.restore(self.checkpoint_path)
        elif any(p.name in RUN_OUTPUTS for p in existing) and not opt.overwrite:
            raise TrainingError(f"--out {self.out} already holds a run ({', '.join(p.name for p in existing[:3])}"
                                f"{', ...' if len(existing) > 3 else ''}): continue it with --resume, choose another "
                                f"--out, or start it over with --overwrite (which deletes that run's files)")
        train_x, train_y = data.load_dataset(opt.dataset, "train")
        if opt.train_size is not None:
            train_x, train_y = data.train_subset(train_x, train_y, opt.train_size)
        test_x, test_y = data.load_dataset(opt.dataset, "test")
        loader = data.DataLoader((train_x, train_y), model.config.batch_size, shuffle=True, seed=opt.seed)
        epochs = model.config.epochs
        if opt.max_steps is not None:
            max_steps = opt.max_steps if opt.quick else min(opt.max_steps, epochs * len(loader))
        else:
            max_steps = model.config.quick_steps if opt.quick else epochs * len(loader)
        epochs = max(epochs, math.ceil(max_steps / len(loader)))
        if opt.resume and not self.evaluation_pending and not (self.epoch < epochs and self.step < max_steps):
            raise TrainingError(f"--resume: the run in {self.out} has already finished (step {self.step}, "
                                f"{self.epoch} of {epochs} epochs); nothing was changed. To train it further, "
                                f"give a larger --epochs or --max-steps")
        # ---- now the run folder is written
        self.out.mkdir(parents=True, exist_ok=True)
        if self.lock is None:  # a new folder: lock it, then make sure no run started there meanwhile
            self._take_lock()
            if any(p.name in RUN_OUTPUTS for p in self.run_files()) and not opt.overwrite:
                raise TrainingError(f"--out {self.out}: another run started there while this one was starting; "
                                    f"nothing was changed")
            existing = self.run_files()
        io.remove_stale_temporaries(self.out)  # left by a process killed mid-write (kill -9); the lock makes it safe
        if opt.resume:
            self._truncate_log(self.step)
            print(f"resumed {self.checkpoint_path} at step {self.step} (epoch {self.epoch + 1})")
        else:
            for path in existing:  # --overwrite: this run's files only
                path.unlink()
        io.atomic_write_text(self.out / "config.json", json.dumps(
            {"model": model.name, "options": asdict(opt), "config": model.config_dict()}, indent=2))

        # the learning rate is a function of the step alone, so a resumed run needs no schedule state; the
        # decay spans the recipe (epochs, or quick_steps), whatever --max-steps stops it at
        schedules = []
        if model.config.lr_schedule == "cosine":
            total = model.config.quick_steps if opt.quick else model.config.epochs * len(loader)
            for name, o in self.optimizers.items():
                schedules.append(optim.CosineSchedule(o, total))
                schedules[-1].base_lrs = self.base_lrs[name]  # the recipe's lr, not one restored mid-decay

        wall0 = self.wall0 = time.time()
        self._phase = "training"
        if self.evaluation_pending:  # a signal skipped the evaluation of the step the run stopped at
            self._end_of_epoch_and_save(test_x, test_y)
        # a run stopped by --max-steps or --quick is shown as one bar over its steps, not as "epoch 1/8"
        by_steps = opt.quick or opt.max_steps is not None
        progress = None
        while self.epoch < epochs and self.step < max_steps and self._stop is None:
            if progress is None or not by_steps:
                label = f"{model.name} {max_steps} steps" if by_steps else f"{model.name} epoch {self.epoch + 1}/{epochs}"
                total, done = ((max_steps, self.step) if by_steps else
                               (min(len(loader), max_steps - self.step + self.batch_index), self.batch_index))
                progress = Progress(label, total, done, opt.progress)
            for images, labels in loader.batches(self.epoch, start=self.batch_index):
                batch = model.prepare_batch(images, labels)
                for schedule in schedules:
                    schedule.set_step(self.step)
                logs = model.training_step(batch, self.optimizers)
                bad = {k: v for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)}
                if bad:
                    raise Diverged(f"non-finite {bad} at step {self.step + 1} (epoch {self.epoch + 1}); "
                                        f"stopped: {self._last_good_message()}. Try a lower --lr or gradient "
                                        f"clipping (--set grad_clip=1).")
                self.step += 1
                self.batch_index += 1
                for k, v in logs.items():
                    self.log_sums[k] = self.log_sums.get(k, 0.0) + float(v)
                self.log_count += 1
                if self.step % opt.log_every == 0:
                    means = {k: v / self.log_count for k, v in self.log_sums.items()}
                    self._log({"step": self.step, "epoch": self.epoch + 1, **means})
                    progress.postfix = means
                    self.log_sums, self.log_count = {}, 0
                progress.update(1)
                if self.batch_index >= len(loader):
                    self.epoch, self.batch_index = self.epoch + 1, 0
                if self._stop is not None:
                    break
                if self.step % opt.checkpoint_every == 0:
                    self._save_guarded()
                if self.step >= max_steps or self.batch_index == 0:
                    break
            if not by_steps or self.step >= max_steps or self._stop is not None:
                progress.close()
            if self._stop is not None:
                break
            # an epoch that is not evaluated is not saved either: with many short epochs (a small --train-size)
            # the checkpoints come every checkpoint_every steps, as within an epoch
            if self._evaluation_due(self.step >= max_steps or self.epoch >= epochs):
                self._end_of_epoch_and_save(test_x, test_y)
        finished = self.step >= max_steps or self.epoch >= epochs
        if self._stop is not None:  # the evaluation and picture are left to the resumed run, where an
            # uninterrupted run would have done them: at the end of an epoch (every evaluate_every) or of the run
            due = (self.batch_index == 0 and self._evaluation_due(finished)) or finished
            self.evaluation_pending = self.evaluation_pending or (due and self.evaluated_at != self.step)
        if self._stop is not None and not (finished and not self.evaluation_pending):
            self._save_guarded()
            self._write_summary(wall0, interrupted=signal.Signals(self._stop).name)
            raise Interrupted(self._stop, f"stopped by {signal.Signals(self._stop).name}: saved "
                                          f"{self.checkpoint_path} at step {self.step}; continue with --resume")
        self._phase = "finishing"  # a signal now is let the summary be written: the run is complete
        return self._write_summary(wall0)

    def _evaluation_due(self, finished):
        """Whether the epoch just ended gets its test metrics and picture: every evaluate_every epochs, and
        at the end of the run."""
        return finished or self.epoch % self.opt.evaluate_every == 0

    def _end_of_epoch_and_save(self, test_x, test_y):
        """Test metrics and a picture, then the checkpoint (weights whose metrics are not finite are not
        saved). A signal during the evaluation skips it: the checkpoint marks it pending instead."""
        self._phase = "evaluating"
        try:
            self._end_of_epoch(test_x, test_y)
            self.evaluation_pending, self.evaluated_at = False, self.step
        except _SkipEvaluation:
            self.evaluation_pending = True
        self._phase = "training"
        self._save_guarded()

    def _save_guarded(self):
        """save(), during which a signal only asks for the stop (the save takes seconds; let it finish)."""
        phase, self._phase = self._phase, "saving"
        try:
            self.save()
        finally:
            self._phase = phase

    def _write_summary(self, wall0, interrupted=None, diverged=None):
        """summary.json; an interrupted run's says so, so that `train && evaluate` scripts can tell, and a
        diverged run's holds the message it stopped with."""
        summary = {"model": self.model.name, "dataset": self.opt.dataset, "steps": self.step,
                   **({"interrupted": interrupted} if interrupted else {}),
                   **({"diverged": diverged} if diverged else {}),
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
            bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
            if bad:
                raise Diverged(f"non-finite test metrics {bad} after step {self.step}: the weights have "
                                    f"blown up and were not saved; {self._last_good_message()}. Try a lower --lr "
                                    f"or gradient clipping (--set grad_clip=1).")
            if metrics:
                self.last_metrics = metrics
                self._log({"step": self.step, "epoch": self.epoch, **metrics})
                print("  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        picture = self.out / f"samples_step{self.step:06d}.png"
        model.visualize(test_x[:64], test_y[:64], picture)
        io.atomic_write_bytes(self.out / "samples_latest.png", picture.read_bytes())

    def run_files(self):
        """The files of a run already in the run folder (what a fresh run would replace)."""
        if not self.out.is_dir():
            return []
        return [p for p in [self.out / n for n in RUN_FILES] if p.exists()] + sorted(self.out.glob("samples_step*.png"))

    def _truncate_log(self, step):
        """Drop the metrics.jsonl lines of steps after `step` (and a line cut short by a kill), so that a
        resumed run does not log the steps it repeats twice."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                keep.append(line)
        io.atomic_write_text(path, "".join(line + "\n" for line in keep))

    def _log(self, record):
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _install_signal_handlers(self):
        """Handle STOP_SIGNALS (in the main thread only); returns the handlers they had before."""
        previous = {}
        for signum in STOP_SIGNALS:
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # not the main thread, or a signal this platform cannot catch
                pass
        return previous

    def _on_signal(self, signum, frame):
        """First signal: stop after the current step, skip an evaluation under way, save. It only sets
        flags or raises: printing here could re-enter a print the signal interrupted."""
        first = self._stop is None
        if first:
            self._stop = signum
        if self._phase in ("saving", "finishing"):  # seconds: let the file be written whole, then stop
            return
        if self._phase == "evaluating" and first:   # the test metrics and picture can take minutes
            raise _SkipEvaluation
        if self._phase == "starting" or not first:  # nothing to save yet, or asked twice: stop now
            raise Interrupted(signum, f"stopped by {signal.Signals(signum).name} at once: "
                                      f"{self._last_good_message()}; continue with --resume")


class Progress:
    """How far a run is. On a terminal, a tqdm bar. In a pipe, a log file or CI (stderr not a terminal, or
    CI set), where a bar's carriage returns pile up as hundreds of partial lines, a plain line every
    PLAIN_EVERY_S seconds or tenth of the way instead."""
    PLAIN_EVERY_S = 10.0

    def __init__(self, label, total, done=0, enabled=True, stream=None):
        self.label, self.total, self.done, self.postfix = label, total, done, {}
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
        plain = ci or not getattr(self.stream, "isatty", lambda: False)()
        self.bar = None
        if self.enabled and not plain and tqdm is not None:
            self.bar = tqdm(total=total, initial=done, desc=label, leave=True, dynamic_ncols=True, file=self.stream)
        self._shown_at, self._shown_done, self._t0 = time.time(), done, time.time()

    def update(self, n=1):
        self.done += n
        if self.enabled:
            self._quietly(self._show, n)

    def _quietly(self, show, *args):
        """Show progress, and stop showing it if the terminal is gone (SIGHUP: writes fail with EIO), so
        that the step is still saved."""
        try:
            show(*args)
        except OSError:
            self.enabled, self.bar = False, None

    def _show(self, n):
        if self.bar is not None:
            if self.postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.postfix.items()}, refresh=False)
            self.bar.update(n)
        elif (self.done - self._shown_done >= self.total / 10 or time.time() - self._shown_at >= self.PLAIN_EVERY_S
              or self.done == self.total):
            self._line()

    def _line(self):
        losses = "".join(f", {k} {v:.4g}" for k, v in self.postfix.items())
        print(f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%){losses}, "
              f"{time.time() - self._t0:.0f} s", file=self.stream, flush=True)
        self._shown_at, self._shown_done = time.time(), self.done

    def close(self):
        if self.bar is not None:
            self._quietly(self.bar.close)
        elif self.enabled and self._shown_done != self.done:
            self._quietly(self._line)


def train(name, options=None, **config_overrides):
    """Train model `name` with `options` (TrainOptions); returns the summary dict."""
    options = options or TrainOptions()
    overrides = {"epochs": options.epochs, "batch_size": options.batch_size, "lr": options.lr, **config_overrides}
    model = build_model(name, overrides, seed=options.seed)
    if options.device != "cpu":
        model.to(options.device)
    return Trainer(model, options).fit()
