"""`python -m tinygen report`: the overview's closing table (likelihood, learning stability, fidelity and
generation speed of VAEs, diffusion, flows and GANs), measured on tinygen's own trained models.

    python -m tinygen report                         evaluate the runs under runs/, write docs/report.md
    python -m tinygen report --families --dry-run    what --train would train for the four families, and
                                                     the CPU time it expects
    python -m tinygen report --families --train      train those runs first (resumable), then the report
    python -m tinygen report --runs DIR --out FILE --n 500 --models vae cvae

Run folders. A run is a folder under --runs holding config.json, summary.json and last.npz, as
`python -m tinygen train` writes them. Runs of one model, dataset and recipe (config.json alike but for the
seed and the folder) make one row; their seeds measure learning stability. --train names them

    runs/<model>-<dataset>             seed 0 (train's default folder)
    runs/<model>-<dataset>-seed<k>     seed k, k = 1, 2

and trains SEEDS = 3 seeds of the four families' models (FAMILIES: vae, ddpm, realnvp, gan, dcgan) and
one of every other recipe (RECIPES, the course's recipes in the order of docs/results.md).

What a row measures, with tinygen.evaluate, on the test split, samples at --n (default 2000) and --seed
(default 0), on the lowest seed's run:
    likelihood        the model's evaluate_nll, in the unit it reports (LIKELIHOODS: nats per image on
                      binarised MNIST, bits per dim on dequantised MNIST or, for the DDPM, on 8-bit MNIST), exact or a bound
    FID-judge, coverage    evaluate_model (conditional models draw the ten classes in turn); text-to-image
                      models: prompt_benchmark's class prompts, n images
    accuracy          the judge's agreement with the requested label (conditional models), with the prompt's
                      class (text-to-image), with the input's class (image-to-image); test accuracy (classifiers)
    images/s          evaluate.sampling_speed of SPEED_N images (wall time on this machine, on the engine's threads,
                      as loaded as it is)
    diffusion models sample with DDIM, DIFFUSION_STEPS steps (at most T), at their sample()'s guidance
    training CPU      the run's summary.json cpu_seconds (">=" where its count began after step 0)
    stability         over the row's runs: the spread (max - min) of the headline figure (the likelihood, else
                      FID-judge, else accuracy), measured the same way on every seed; how many of the runs that
                      ended diverged (a NaN stop: summary.json "diverged") and how many of those evaluated
                      collapsed (samples whose class coverage is below COLLAPSE_COVERAGE = 2.0 nats, fewer than
                      e^2 = 7.4 equally common classes: mode collapse for a GAN, classes lost for any other
                      sampler); a run being trained or stopped part-way has no outcome yet and is in neither

A row of more than one run lists its runs below the table, a line each (seed_cells): the headline figure,
FID-judge, coverage, training CPU and status of every seed, the figures whose spread the row gives.

The course's claims (CLAIMS) are read against the numbers by RULES, stated in the report itself.

--train trains, in RECIPES order (a stage before the model built on it), every planned run that is missing;
it prints the plan and the CPU time it expects (docs/results.md's recorded times, kept in RECIPES) before
it starts. A folder holding an unfinished run (stopped by a signal, or killed) is continued with resume; a
diverged run is not trained again (delete its folder, or train it with --overwrite, to try again); a run
that fails is reported in the table and in the exit status (1), never retried silently.

The ledger. A checkpoint lives on the machine that trained it; the figures it gave should not. Every run
this command evaluates (and every diverged run it counts) is recorded in the ledger beside the report, the
--out file with .json for .md (docs/report.json): its figures, summary.json, the n and seed they were
measured at, when, on how many threads, and the SHA-256 of its last.npz. A later report

    - reads a run's figures from the ledger where its last.npz is the one recorded (same SHA-256, same n and
      seed): it is not evaluated again (delete the ledger to measure everything anew);
    - keeps a recorded run whose folder is no longer under --runs (trained on another machine, or deleted) as a
      row's seed, marked "recorded" with its date; --train counts it as done. A folder that is there, finished
      or not, is the run: its record gives way to it.

So the four families' 15 runs can be trained over several machines and sessions and still make one table.

The report file's first line is MARK, the ledger's "kind" is LEDGER_KIND; a file without them is never
overwritten.
"""
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autograd import _threads

from . import data, evaluate, io, models
from .cli import UsageError, library_errors, whole_number

try:
    import fcntl
except ImportError:  # no flock: a run being trained is not told from an unfinished one
    fcntl = None

MARK = "<!-- written by python -m tinygen report -->"
LEDGER_KIND = "tinygen-report-ledger"
SEEDS = 3                   # seeds of each family model's recipe that --train makes
SPEED_N = 100               # images timed for images/s
DIFFUSION_STEPS = 50        # DDIM steps for diffusion models (at most their T)
COLLAPSE_COVERAGE = 2.0     # class coverage (nats) below which a run's samples count as collapsed

# the overview's four families, the models that stand for them (the first with a run is the family's row)
FAMILIES = {"VAE": ("vae",), "diffusion": ("ddpm",), "flow": ("realnvp",), "GAN": ("dcgan", "gan")}
FAMILY_MODELS = tuple(m for ms in FAMILIES.values() for m in ms)
ASPECTS = ("likelihood", "stability", "fidelity", "speed")
# the overview talk's closing table: likelihood, learning stability, fidelity, generation speed
CLAIMS = {
    "VAE": ("fair", "good", "fair", "good", ""),
    "diffusion": ("good", "good", "good", "poor", "about a thousand denoising steps"),
    "flow": ("good", "fair", "fair", "good", "restricted networks"),
    "GAN": ("none", "poor", "good", "good", "a balance of two networks"),
}
# how a measurement becomes a rating (the same words as the course's table)
RULES = {
    "likelihood": "exact (evaluate_nll's figure is log p itself) -> good; a bound (ELBO, IWAE) -> fair; "
                  "none computed -> none where the course says the family has none, else not measured",
    "stability": "over at least 2 runs of the recipe: a run diverged or collapsed -> poor; else, over at least 2 "
                 "seeds measured, the spread of the headline figure over its mean: <= 5% -> good, <= 15% -> fair, "
                 "more -> poor; fewer -> not measured",
    "fidelity": "FID-judge (same n) against the best of the families' rows: <= 1.5x -> good, <= 4x -> fair, "
                "more -> poor",
    "speed": "images/s on this CPU: >= 100 -> good, >= 10 -> fair, less -> poor",
}

# (evaluate_nll key, unit, exact or a bound), the first present wins; bits/dim is skipped for models of
# binarised images (PixelCNN reports both; its figure is nats per image)
LIKELIHOODS = (("iwae_nll_nats", "nats/image", "bound"), ("neg_elbo_hard_nats", "nats/image", "bound"),
               ("bits_per_dim", "bits/dim", "exact"), ("vlb_bits_per_dim", "bits/dim", "bound"),
               ("nll_nats", "nats/image", "exact"),
               ("bits_per_pixel", "bits/pixel (16-level palette)", "exact"),
               ("test_prior_bits_per_grid", "bits per 7x7 code grid", "exact"))
ACCURACIES = (("conditional_accuracy", "label"), ("class_accuracy", "prompt"), ("judge_acc", "input's class"),
              ("test_acc", "test"), ("probe_acc", "linear probe"), ("test_acc_t0", "test, t = 0"))


# ---------------------------------------------------------------------- the recipes and their CPU time
@dataclass(frozen=True)
class Recipe:
    """A recipe of the course: `python -m tinygen train MODEL` with these options and --set settings
    ("{runs}" in a setting stands for the runs folder), and its training CPU seconds as docs/results.md
    records them (`source`: the text there that holds the figure; tests/test_report.py checks it)."""
    model: str
    cpu_s: float
    source: str
    dataset: str = "mnist"
    options: tuple = ()
    settings: tuple = ()

    def folder(self, runs, seed):
        return Path(runs) / f"{self.model}-{self.dataset}{f'-seed{seed}' if seed else ''}"

    def command(self, runs, seed):
        opts = [f"--dataset {self.dataset}"] * (self.dataset != "mnist") + [
            f"--{k.replace('_', '-')} {v}" for k, v in self.options] + [f"--seed {seed}"] * (seed > 0) + [
            f"--set {k}={str(v).format(runs=runs)}" for k, v in self.settings]
        folder = self.folder(runs, seed)
        return " ".join([f"python -m tinygen train {self.model}", *opts] + [f"--out {folder}"] * (
            folder != Path(f"runs/{self.model}-{self.dataset}")))


RECIPES = (
    Recipe("gan", 423, "seed 0 (`runs/gan-mnist`) trained in 423 s of CPU"),
    Recipe("dcgan", 3474, "| 3,474 s + 35 s |"),
    Recipe("ae", 123, "| 123 s + 43 s |"),
    Recipe("vae", 691, "seed 0 (`runs/vae-mnist`) trained in 691 s of CPU"),
    Recipe("ddpm", 2241, "seed 0 (`runs/ddpm-mnist`) trained in 2,241 s of CPU"),
    Recipe("cgan", 1092, "| 1,092 s + 61 s |"),
    Recipe("pix2pix", 1740, "| about 1,740 s + 40 s |", dataset="fashion"),
    Recipe("cvae", 133, "| 133 s + 152 s |"),
    Recipe("noisy_classifier", 413, "(2 epochs, 413 CPU s;"),
    Recipe("dvae_rolfe", 1098, "| 1,098 s (three jobs on the 2 cores); evaluation 15 s |"),
    Recipe("mixture_vae", 587, "| 587 s (one BLAS thread; the test suite beside it"),
    Recipe("pixelcnn", 12887, "| 12,887 s (one BLAS thread, two and three jobs"),
    Recipe("vqvae", 769, "| 769 s (both stages, 4,212 steps; 1,880 s wall) |"),
    Recipe("vit", 1078, "| 1,078 s (one BLAS thread, the machine otherwise quiet;"),
    Recipe("igpt", 3228, "| 3,228 s training (one BLAS thread"),
    # DiT's stage is the autoencoder of a latent_diffusion run, frozen after its ae_steps (2,000 steps)
    Recipe("latent_diffusion", 1000, "The latent diffusion recipe (6 epochs) takes about 1,000 CPU s in all."),
    Recipe("dit", 1128, "DiT 1,128 s (one BLAS thread",
           settings=(("autoencoder", "{runs}/latent_diffusion-mnist/last.npz"),)),
    Recipe("clip", 648, "| 648 s (epochs 1-6 on the loaded machine"),
    Recipe("dvae", 3414, "| 3,414 s (one BLAS thread, two to four jobs on the 2 cores) |"),
    Recipe("dalle", 2597, "| 2,597 s (+ the dVAE's 2,969 s)", settings=(("dvae", "{runs}/dvae-mnist/last.npz"),)),
    Recipe("glide", 5096, "took **5,096 s** of CPU"),
    Recipe("unclip", 4189, "took **4,189 s** of CPU (one BLAS thread, the other core busy), beyond the CLIP",
           settings=(("clip", "{runs}/clip-mnist/last.npz"),)),
    Recipe("stable_diffusion", 2051, "**2,051 s** of CPU (one BLAS thread, the other core busy): 0.40 of GLIDE", settings=(("clip", "{runs}/clip-mnist/last.npz"),)),
    Recipe("realnvp", 2611, "seed 0 (`runs/realnvp-mnist`) trained in 2,611 s of CPU"),
    Recipe("cnn", 1362, "| `python -m tinygen.evaluate train-judge --dataset mnist --epochs 6` | 1362 s |",
           options=(("epochs", 6),)),
    Recipe("mlp", 40, "| `python -m tinygen train mlp` | 40 s |"),
)
RECIPE_OF = {r.model: r for r in RECIPES}
GOAL_CPU_HOURS = 12


def seeds_of(model):
    return range(SEEDS) if model in FAMILY_MODELS else range(1)


def budget(recipes=RECIPES):
    """The CPU seconds to retrain every recipe once from scratch, the recipes largest first, those with no
    recorded time, and the CPU seconds the stability seeds add."""
    timed = sorted((r for r in recipes if r.cpu_s is not None), key=lambda r: -r.cpu_s)
    extra = sum(r.cpu_s * (len(seeds_of(r.model)) - 1) for r in timed)
    return sum(r.cpu_s for r in timed), timed, [r for r in recipes if r.cpu_s is None], extra


# ---------------------------------------------------------------------- run folders
def training_now(folder):
    """Who holds the run folder's lock (io.FolderLock), as io describes it, or None. It only asks: a shared
    flock that fails means a live process trains there; nothing is written."""
    path = Path(folder) / io.FolderLock.NAME
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        return io.FolderLock.describe(io.FolderLock._read(fd))
    finally:
        os.close(fd)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error})") from None


@dataclass
class Run:
    folder: Path
    model: str
    dataset: str
    seed: int
    recipe: str            # config.json without the seed and the folder: runs alike but for the seed share it
    summary: dict = None
    metrics: dict = None
    error: str = None
    recorded: dict = None  # the ledger's entry, for a run whose folder is not under --runs

    @property
    def status(self):
        if self.recorded is not None:
            return self.recorded["status"]
        if training_now(self.folder):
            return "being trained now"
        if self.summary is None:
            return "unfinished" if (self.folder / "last.npz").exists() else "no checkpoint"
        if "diverged" in self.summary:
            return "diverged"
        if "interrupted" in self.summary:
            return "interrupted"
        return "finished" if (self.folder / "last.npz").exists() else "no checkpoint"


def find_runs(runs):
    """Every run folder directly under `runs` (config.json, and summary.json / last.npz once written), by
    folder name; a folder with neither config.json nor summary.json is not a run."""
    found = []
    for folder in sorted(p for p in Path(runs).iterdir() if p.is_dir()):
        summary = read_json(folder / "summary.json") if (folder / "summary.json").is_file() else None
        if not (folder / "config.json").is_file():
            continue
        config = read_json(folder / "config.json")
        options = config.get("options", {})
        recipe = json.dumps({"model": config.get("model"), "config": config.get("config"),
                             **{k: options.get(k) for k in ("dataset", "quick", "max_steps", "device")}},
                            sort_keys=True)
        found.append(Run(folder, config.get("model"), options.get("dataset", "mnist"), options.get("seed", 0),
                         recipe, summary))
    return found


# ---------------------------------------------------------------------- the plan (--train, --dry-run)
@dataclass
class Planned:
    recipe: Recipe
    seed: int
    folder: Path
    action: str            # "train", "resume", "done" or "skip"
    why: str = ""
    cpu_s: float = None    # expected CPU seconds (None: no recorded time)


def plan(runs, names, recorded=None):
    """What --train does for the recipes of `names`: each planned run folder's action. `recorded`: {folder
    name: why} of the runs the ledger holds (a missing folder among them is done, not trained again)."""
    recorded = recorded or {}
    todo = []
    for recipe in (r for r in RECIPES if r.model in names):
        for seed in seeds_of(recipe.model):
            folder = recipe.folder(runs, seed)
            p = Planned(recipe, seed, folder, "train", "missing", recipe.cpu_s)
            if (folder / "config.json").is_file() or (folder / "summary.json").is_file():
                config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
                summary = read_json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
                options = config.get("options", {})
                if config and (config.get("model"), options.get("dataset"), options.get("seed")) != (
                        recipe.model, recipe.dataset, seed):
                    p.action, p.why = "skip", (f"holds another run ({config.get('model')}, {options.get('dataset')}, "
                                               f"seed {options.get('seed')})")
                elif training_now(folder):
                    p.action, p.why = "skip", f"being trained now by {training_now(folder)}"
                elif "diverged" in summary:
                    p.action, p.why = "skip", "diverged: not trained again (delete the folder to try again)"
                elif not (folder / "last.npz").is_file():
                    p.action, p.why = "skip", "stopped before its first checkpoint: nothing to resume (delete it)"
                elif summary and "interrupted" not in summary:
                    p.action, p.why = "done", "finished"
                else:
                    stopped = summary.get("interrupted")
                    p.action, p.why = "resume", f"stopped by {stopped}" if stopped else "unfinished (no summary.json)"
                    if recipe.cpu_s is not None:  # the CPU it has had, where known
                        p.cpu_s = max(0.0, recipe.cpu_s - summary.get("cpu_seconds", 0.0))
            elif folder.name in recorded:
                p.action, p.why = "done", recorded[folder.name]
            if p.action not in ("train", "resume"):
                p.cpu_s = None
            todo.append(p)
    return todo


def describe_plan(todo):
    """The plan as text: one line per run, then what --train will train and the CPU time it expects."""
    lines = []
    for p in todo:
        cpu = "" if p.cpu_s is None else f"{p.cpu_s:8,.0f} CPU s"
        if p.action in ("train", "resume") and p.cpu_s is None:
            cpu = "   no recorded time"
        lines.append(f"  {p.action:7s} {p.recipe.model:17s} seed {p.seed}  {str(p.folder):40s} {cpu}  {p.why}")
    work = [p for p in todo if p.action in ("train", "resume")]
    expected = sum(p.cpu_s for p in work if p.cpu_s is not None)
    unknown = [p.recipe.model for p in work if p.cpu_s is None]
    head = (f"plan: {len(work)} run(s) to train, expected {expected:,.0f} CPU s = {expected / 3600:.1f} CPU-hours "
            f"(docs/results.md's recorded times)" + (f", plus {', '.join(unknown)} (no recorded time)" if unknown else ""))
    return "\n".join([head, *lines])


def execute(todo, runs):
    """Train the planned runs in order; {folder: error message} of those that failed (reported, not retried).
    A signal stops the whole --train (the run in progress is saved; run it again to continue)."""
    from .train import TrainOptions, train
    failures = {}
    for p in todo:
        if p.action not in ("train", "resume"):
            continue
        print(f"{p.action} {p.recipe.command(runs, p.seed)}" + (" --resume" if p.action == "resume" else ""),
              flush=True)
        options = TrainOptions(dataset=p.recipe.dataset, seed=p.seed, out=str(p.folder),
                               resume=p.action == "resume", **dict(p.recipe.options))
        settings = {k: v.format(runs=runs) if isinstance(v, str) else v for k, v in p.recipe.settings}
        try:
            train(p.recipe.model, options, **settings)
        except library_errors() as error:
            failures[str(p.folder)] = " ".join(str(error).split())
            print(f"failed: {p.folder}: {failures[str(p.folder)]}", flush=True)
    return failures


# ---------------------------------------------------------------------- measuring a run
def measure(model, dataset, n, seed):
    """The row's figures for one trained model (see the module docstring), from tinygen.evaluate."""
    options = tuple(getattr(model, "sample_options", ()))
    sampling = {"steps": min(DIFFUSION_STEPS, model.config.T)} if "steps" in options else {}
    out = {}
    if "prompt" in options:   # text-to-image: the prompt benchmark; its class prompts give n images
        per_prompt = max(2, math.ceil(n / (evaluate.CLASS_PROMPT_FACTOR * data.N_CLASSES)))
        r = evaluate.prompt_benchmark(model, dataset, per_prompt, seed=seed, **sampling)
        r = {"fid_judge": r["class_fid_judge"], "class_coverage": r["class_coverage"], "n": r["images"],
             "n_fid": per_prompt * evaluate.CLASS_PROMPT_FACTOR * data.N_CLASSES,
             "class_accuracy": r["class_accuracy"], "images_per_s": r["images_per_s"]}
    else:
        r = evaluate.evaluate_model(model, dataset, n=n, seed=seed, **sampling)
        if "fid_judge" in r:
            r["n_fid"] = r.get("n", len(data.load_dataset(dataset, "test")[0]))
    for key, unit, kind in LIKELIHOODS:
        if key in r and not (key == "bits_per_dim" and model.image_range == "binary"):
            out["likelihood"] = {"value": float(r[key]), "unit": unit, "kind": kind, "key": key}
            break
    for key, kind in ACCURACIES:
        if key in r:
            out["accuracy"] = {"value": float(r[key]), "kind": kind}
            break
    out.update({k: float(r[k]) for k in ("fid_judge", "class_coverage", "images_per_s") if k in r})
    if "n_fid" in r:
        out["n_fid"] = int(r["n_fid"])
    if hasattr(model, "sample") and "images_per_s" not in out:
        out["images_per_s"] = images_per_second(model, dataset, sampling, seed)
    out["sampling"] = sampling
    return out


def images_per_second(model, dataset, sampling, seed):
    """evaluate.sampling_speed of SPEED_N images as the evaluation draws them."""
    model.rng = np.random.default_rng(seed)
    if hasattr(model, "translate"):
        x_test = data.load_dataset(dataset, "test")[0]
        return evaluate.sampling_speed(lambda k: model.sample(k, condition=model.condition_of(x_test[:k])), SPEED_N)
    if model.conditional:
        return evaluate.sampling_speed(lambda k: model.sample(k, label=np.arange(k) % data.N_CLASSES, **sampling),
                                       SPEED_N)
    return evaluate.sampling_speed(lambda k: model.sample(k, **sampling), SPEED_N)


def headline(metrics):
    """(name, value) of the figure whose spread over seeds measures stability."""
    if "likelihood" in metrics:
        return metrics["likelihood"]["unit"], metrics["likelihood"]["value"]
    if "fid_judge" in metrics:
        return "FID-judge", metrics["fid_judge"]
    if "accuracy" in metrics:
        return "accuracy", metrics["accuracy"]["value"]
    return None, None


def load_run(folder, runs):
    """The trained model of a run folder and its meta. A stage it names by a relative path (DALL-E's
    --set dvae=runs/dvae-mnist/last.npz) is read from the current folder, else from the folder the runs
    were trained from, the parent of `runs`."""
    checkpoint = Path(folder).resolve() / "last.npz"
    try:
        return models.load_model(checkpoint)
    except ValueError as error:
        base = Path(runs).resolve().parent
        if "no such checkpoint" not in str(error) or base == Path.cwd().resolve():
            raise
    here = os.getcwd()
    os.chdir(base)
    try:
        return models.load_model(checkpoint)
    finally:
        os.chdir(here)


# ---------------------------------------------------------------------- the ledger
def ledger_path(out):
    """The ledger beside the report: docs/report.md -> docs/report.json."""
    return Path(out).with_suffix(".json")


def empty_ledger():
    return {"kind": LEDGER_KIND, "runs": {}}


def read_ledger(path):
    """The ledger at `path` ({"kind": LEDGER_KIND, "runs": {key: entry}}), empty where there is none; a file
    there that this command did not write is refused."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: the report's ledger is a folder; move it away")
    if not path.exists():
        return empty_ledger()
    try:
        ledger = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        ledger = None
    if not isinstance(ledger, dict) or ledger.get("kind") != LEDGER_KIND or not isinstance(ledger.get("runs"), dict):
        raise UsageError(f"{path}: the file exists and is not the ledger of `python -m tinygen report` (no \"kind\": "
                         f"\"{LEDGER_KIND}\"); move it, or choose another --out (nothing was changed)")
    for key, entry in ledger["runs"].items():
        missing = [k for k in LEDGER_FIELDS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise UsageError(f"{path}: the entry {key!r} lacks {', '.join(missing)}; delete the entry (that run is "
                             f"then evaluated again, or trained by --train) or the file")
    return ledger


LEDGER_FIELDS = ("folder", "model", "dataset", "seed", "recipe", "status", "summary", "metrics", "checkpoint_sha256",
                 "measured", "threads")   # an entry's, as record() writes them


def ledger_key(folder_name, n, seed):
    return f"{folder_name} n={n} seed={seed}"


def checkpoint_sha256(folder):
    return hashlib.sha256((Path(folder) / "last.npz").read_bytes()).hexdigest()


def recorded_runs(ledger, runs, names, n, seed):
    """The ledger's runs of the models `names` measured at this n and seed, as Run objects under `runs`."""
    found = []
    for key, e in sorted(ledger["runs"].items()):
        if e["model"] in names and key == ledger_key(e["folder"], n, seed):
            found.append(Run(Path(runs) / e["folder"], e["model"], e["dataset"], e["seed"], e["recipe"],
                             e["summary"], e["metrics"], recorded=e))
    return found


def record(ledger, run, n, seed, digest):
    """Enter an ended run (evaluated, or diverged) in the ledger."""
    ledger["runs"][ledger_key(run.folder.name, n, seed)] = {
        "folder": run.folder.name, "model": run.model, "dataset": run.dataset, "seed": run.seed,
        "recipe": run.recipe, "status": run.status, "summary": run.summary, "metrics": run.metrics,
        "checkpoint_sha256": digest, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": _threads.count()}


# ---------------------------------------------------------------------- rows
@dataclass
class Row:
    model: str
    dataset: str
    runs: list
    failures: dict = field(default_factory=dict)   # folder -> why --train failed

    @property
    def measured(self):
        """The lowest seed's finished, evaluated run."""
        done = [r for r in self.runs if r.metrics is not None]
        return min(done, key=lambda r: r.seed) if done else None

    def stability(self):
        """{'seeds', 'name', 'low', 'high', 'spread', 'relative', 'diverged', 'runs', 'collapsed', 'evaluated'}:
        diverged of the runs that ended (finished, diverged, or failed in --train; a run being trained or
        stopped part-way has no outcome yet), collapsed of the runs evaluated."""
        done = [r for r in self.runs if r.metrics is not None]
        ended = [r for r in self.runs if r.status in ("finished", "diverged")]
        values = [headline(r.metrics)[1] for r in done if headline(r.metrics)[1] is not None]
        s = {"runs": len(ended) + len(self.failures), "evaluated": len(done), "seeds": len(values),
             "diverged": sum(r.status == "diverged" for r in self.runs),
             "collapsed": sum(r.metrics.get("class_coverage", math.inf) < COLLAPSE_COVERAGE for r in done),
             "name": headline(done[0].metrics)[0] if done else None}
        if values:
            s.update(low=min(values), high=max(values), spread=max(values) - min(values))
            s["relative"] = s["spread"] / abs(np.mean(values)) if np.mean(values) else math.inf
        return s


def collect(runs, names, n, seed, failures=None, progress=print, ledger=None):
    """The rows for the models `names`: the runs found under `runs` and the ledger's runs whose folder is not
    there, grouped by recipe, each finished run evaluated (or read from the ledger where its checkpoint is
    the one recorded) and entered in the ledger; --train's failures become rows of their own where they
    left no run folder."""
    failures = dict(failures or {})
    ledger = empty_ledger() if ledger is None else ledger
    groups = {}
    here = find_runs(runs) if Path(runs).is_dir() else []
    folders = {run.folder.name for run in here}
    for run in here + [r for r in recorded_runs(ledger, runs, names, n, seed) if r.folder.name not in folders]:
        if run.model in names:
            groups.setdefault(run.recipe, []).append(run)
    rows = []
    for group in groups.values():
        group.sort(key=lambda r: (r.seed, r.folder.name))
        row = Row(group[0].model, group[0].dataset, group,
                  {f: failures.pop(f) for f in [str(r.folder) for r in group] if f in failures})
        rows.append(row)
    for folder, why in failures.items():  # a run that failed before writing its folder
        model = next((p for p in names if Path(folder).name.startswith(f"{p}-")), Path(folder).name)
        rows.append(Row(model, "", [], {folder: why}))
    order = {r.model: i for i, r in enumerate(RECIPES)}
    rows.sort(key=lambda row: (order.get(row.model, len(order)), row.runs[0].folder.name if row.runs else ""))
    present = [r for row in rows for r in row.runs if r.recorded is None]
    for dataset in sorted({r.dataset for r in present if r.status == "finished"}):
        evaluate.load_judge(dataset)       # a missing or altered judge is one error, before any evaluation
    for run in present:
        status = run.status
        if status == "diverged":
            record(ledger, run, n, seed, None)
        if status != "finished":
            continue
        digest = checkpoint_sha256(run.folder)
        entry = ledger["runs"].get(ledger_key(run.folder.name, n, seed))
        if entry and entry["checkpoint_sha256"] == digest and entry["metrics"] is not None:
            run.metrics = entry["metrics"]
            progress(f"{run.folder}: the checkpoint measured on {entry['measured']} (the ledger's figures)",
                     flush=True)
            continue
        cpu0 = time.process_time()
        progress(f"evaluating {run.folder} ({run.model}, seed {run.seed}) ...", flush=True)
        try:
            model, meta = load_run(run.folder, runs)
            run.metrics = measure(model, meta["dataset"], n, seed)
        except library_errors() as error:
            run.error = " ".join(str(error).split())
            progress(f"  failed: {run.error}", flush=True)
            continue
        record(ledger, run, n, seed, digest)
        progress(f"  {time.process_time() - cpu0:.0f} CPU s", flush=True)
    return rows


# ---------------------------------------------------------------------- the ratings
def ratings(family_rows):
    """{family: {aspect: (rating or None, evidence)}} by RULES, from the family's row."""
    best = min((row.measured.metrics["fid_judge"] for row in family_rows.values()
                if row.measured and "fid_judge" in row.measured.metrics), default=None)
    out = {}
    for family, row in family_rows.items():
        m = row.measured.metrics if row.measured else {}
        r = {}
        lik = m.get("likelihood")
        has_none = CLAIMS.get(family, ("",))[0] == "none"     # the course says the family gives no likelihood
        r["likelihood"] = ((("good" if lik["kind"] == "exact" else "fair"),
                            f"{lik['kind']}: {lik['value']:.3g} {lik['unit']}") if lik else
                           (("none" if has_none else None), "none computed") if m else (None, "no run"))
        s = row.stability()
        if s["seeds"] < 2 and not (s["diverged"] and s["runs"] >= 2):
            r["stability"] = (None, f"{s['seeds']} seed(s) measured")
        elif s["diverged"] or s["collapsed"]:
            r["stability"] = ("poor", f"{s['diverged']} of {s['runs']} runs diverged, "
                                      f"{s['collapsed']} of {s['evaluated']} collapsed")
        else:
            rel = s["relative"]
            r["stability"] = ("good" if rel <= 0.05 else "fair" if rel <= 0.15 else "poor",
                              f"{s['name']} spread {s['spread']:.3g} = {rel:.1%} over {s['seeds']} seeds")
        fid = m.get("fid_judge")
        r["fidelity"] = ((("good" if fid <= 1.5 * best else "fair" if fid <= 4 * best else "poor"),
                          f"FID-judge {fid:.1f}, {fid / best:.2f}x the best") if fid is not None else (None, "no FID-judge"))
        speed = m.get("images_per_s")
        steps = m.get("sampling", {}).get("steps")
        r["speed"] = ((("good" if speed >= 100 else "fair" if speed >= 10 else "poor"),
                       f"{fmt(speed)} images/s" + (f", DDIM {steps} steps" if steps else ""))
                      if speed is not None else (None, "not sampled"))
        out[family] = r
    return out


def family_rows(rows):
    """{family: the row that stands for it}: its first model with a row (the recipe's default folder first)."""
    chosen = {}
    for family, names in FAMILIES.items():
        for name in names:
            candidates = [row for row in rows if row.model == name and row.runs]
            if candidates:
                default = [row for row in candidates if any(r.folder.name == f"{name}-mnist" for r in row.runs)]
                chosen[family] = (default or candidates)[0]
                break
    return chosen


# ---------------------------------------------------------------------- the file
def fmt(x, digits=3, zeros=""):
    """x to `digits` significant digits (thousands grouped, whole above 1,000); zeros="#" keeps the
    trailing zeros, so the two ends of a range read alike (107.7–110.0, not 107.7–110)."""
    return "—" if x is None else f"{x:{zeros},.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def row_cells(row):
    m = row.measured.metrics if row.measured else {}
    base = row.measured or (row.runs[0] if row.runs else None)
    lik, acc = m.get("likelihood"), m.get("accuracy")
    s = row.stability()
    if s["seeds"] >= 2:
        stab = (f"{s['name']} {fmt(s['low'], 4, '#')}–{fmt(s['high'], 4, '#')} over {s['seeds']} seeds "
                f"(spread {fmt(s['spread'])}, {s['relative']:.1%})")
    else:
        stab = f"{s['seeds']} seed measured" if s["seeds"] == 1 else "no seed measured"
    stab += f"; diverged {s['diverged']}/{s['runs']}, collapsed {s['collapsed']}/{s['evaluated']}"
    statuses = [f"`{r.folder.name}`" + (f" ({'' if r.status == 'finished' else r.status + ', '}recorded {r.recorded['measured'][:10]})"
                                        if r.recorded else
                                        "" if r.status == "finished" and r.error is None else
                                        f" ({r.error and 'evaluation failed: ' + r.error or r.status})")
                for r in row.runs]
    statuses += [f"`{Path(f).name}` (training failed: {why})" for f, why in row.failures.items()]
    cpu = None
    if base is not None and base.summary and "cpu_seconds" in base.summary:
        cpu = ("≥ " if base.summary.get("cpu_counted_from_step") else "") + f"{base.summary['cpu_seconds']:,.0f} s"
    fid = m.get("fid_judge")
    return [f"{row.model}", row.dataset, ", ".join(statuses),
            f"{lik['value']:.4g} {lik['unit']} ({lik['kind']})" if lik else "—",
            f"{fid:.1f} (n = {m['n_fid']:,})" if fid is not None else "—",
            f"{m['class_coverage']:.3f}" if "class_coverage" in m else "—",
            f"{100 * acc['value']:.2f}% ({acc['kind']})" if acc else "—",
            fmt(m.get("images_per_s")), cpu or "—", stab]


def seed_cells(row):
    """One line per run of a row: the figures whose spread the stability cell gives, seed by seed."""
    lines = []
    for r in sorted(row.runs, key=lambda r: r.seed):
        m = r.metrics or {}
        name, value = headline(m)
        cpu = r.summary.get("cpu_seconds") if r.summary else None
        figure = "—" if name is None else (f"{value:#.4g}" if abs(value) < 1000 else fmt(value)) + f" {name}"
        lines.append([row.model, f"`{r.folder.name}`", r.seed, figure,                 # 110.0, not 110
                      f"{m['fid_judge']:.1f}" if "fid_judge" in m else "—",
                      f"{m['class_coverage']:.3f}" if "class_coverage" in m else "—",
                      f"{cpu:,.0f} s" if cpu is not None else "—",
                      f"evaluation failed: {r.error}" if r.error else
                      f"{r.status}, recorded {r.recorded['measured']}" if r.recorded else r.status])
    return lines


def table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                     + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows])


def render(rows, runs, n, seed, command, plan_text=None, ledger="docs/report.json"):
    """The report as markdown, its first line MARK."""
    k = _threads.count()  # the engine's threads (OPENBLAS_NUM_THREADS), which images/s depends on
    lines = [MARK, "# The overview's table, measured", "",
             f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, from the runs "
             f"under `{runs}`. Every figure is from `tinygen.evaluate` on the test split: samples at n = {n:,}, "
             f"seed {seed}; conditional models draw the ten classes in turn, as `python -m tinygen evaluate` does (so "
             f"the class-conditional DDPM's FID-judge is of conditional samples); diffusion models sample with DDIM "
             f"{DIFFUSION_STEPS} steps; images/s is the wall time of {SPEED_N} images on this machine, on {k} "
             f"thread{'s' if k > 1 else ''} (as loaded as it was); training CPU is the run's `summary.json`. "
             f"A row is one recipe; its runs are its seeds (`runs/<model>-<dataset>` is seed 0, "
             f"`runs/<model>-<dataset>-seed<k>` seed k). Stability: the spread of the row's headline figure "
             f"(likelihood, else FID-judge, else accuracy) over its seeds, the runs that diverged (a NaN stop) "
             f"and those that collapsed (class coverage of the samples under {COLLAPSE_COVERAGE} nats). "
             f"FID-judge is not the Inception FID; rows compare only at equal n. Every run evaluated is entered "
             f"in the ledger `{ledger}` with the SHA-256 of its checkpoint; a run marked recorded was measured so "
             f"on the date given and its folder is not under `{runs}` (trained on another machine): its figures are "
             f"the ledger's.", "",
             "## Measured", ""]
    header = ["model", "dataset", "runs", "likelihood", "FID-judge", "coverage", "accuracy", "images/s",
              "training CPU", "stability"]
    lines += [table(header, [row_cells(row) for row in rows]) if rows else "No runs found.", ""]
    seeded = [line for row in rows if len(row.runs) > 1 for line in seed_cells(row)]
    if seeded:
        lines += ["The seeds of the rows with more than one run, each evaluated as above:", "",
                  table(["model", "run", "seed", "headline figure", "FID-judge", "coverage", "training CPU",
                         "status"], seeded), ""]

    chosen = family_rows(rows)
    rated = ratings(chosen)
    lines += ["## The course's table beside the measurement", "",
              "The overview talk closes with a qualitative table; each cell here is the course's word, then the "
              "measured one (by the rules below) with its evidence.", ""]
    cells = []
    for family, claim in CLAIMS.items():
        row = chosen.get(family)
        measured = rated.get(family, {})
        cells.append([family + (f" ({claim[4]})" if claim[4] else ""), row.model if row else "no run"] + [
            f"{claim[i]} / {measured.get(a, (None, 'no run'))[0] or 'not measured'}"
            + (f" ({measured[a][1]})" if a in measured else "") for i, a in enumerate(ASPECTS)])
    lines += [table(["family", "model", *ASPECTS], cells), ""]
    for family, claim in CLAIMS.items():
        lines.append(f"- {sentence(family, claim, chosen.get(family), rated.get(family))}")
    lines += ["", "Rules:", ""] + [f"- {aspect}: {rule}" for aspect, rule in RULES.items()]

    total, timed, untimed, extra = budget()
    share = lambda r: f"{r.model} {r.cpu_s:,.0f} s ({r.cpu_s / total:.0%})"
    hours = total / 3600
    lines += ["", "## The CPU budget of the course", "",
              f"Retraining every recipe of the course once from scratch takes {total:,.0f} CPU s = {hours:.1f} "
              f"CPU-hours (the sum of the training CPU times docs/results.md records per recipe; "
              f"{len(timed)} recipes), that is {hours / 2:.1f} hours of wall time on 2 cores with two runs at a "
              f"time. The goal is at most {GOAL_CPU_HOURS} CPU-hours: "
              + (f"{hours - GOAL_CPU_HOURS:.1f} CPU-hours over it." if hours > GOAL_CPU_HOURS else
                 f"{GOAL_CPU_HOURS - hours:.1f} CPU-hours under it.")
              + f" The recipes that dominate: {', '.join(share(r) for r in timed[:4])}; the largest alone is "
              f"{timed[0].cpu_s / 3600:.1f} CPU-hours."
              + (f" Not counted: {', '.join(r.model for r in untimed)} (no recorded time)." if untimed else "")
              + f" The stability seeds ({SEEDS - 1} more of {', '.join(FAMILY_MODELS)}) add {extra:,.0f} CPU s "
              f"= {extra / 3600:.1f} CPU-hours.", ""]
    found = [r.summary["cpu_seconds"] for row in rows for r in row.runs if r.summary and "cpu_seconds" in r.summary]
    lines += [f"The runs in this table took {sum(found):,.0f} CPU s ({sum(found) / 3600:.1f} CPU-hours) to train.", ""]
    if plan_text:
        lines += ["## Not yet trained", "", "What `--train` would do for the models of this report:", "",
                  "```", plan_text, "```", ""]
    return "\n".join(lines)


def sentence(family, claim, row, rated):
    """One sentence: where the measurement of `family` agrees with the course's claim and where not."""
    if row is None or not rated:
        return f"{family}: no run of {' or '.join(FAMILIES[family])} was found, so nothing is measured."
    parts = []
    for i, aspect in enumerate(ASPECTS):
        got, evidence = rated[aspect]
        verdict = "not measured" if got is None else "agrees" if got == claim[i] else "disagrees"
        parts.append(f"{aspect} {got or '?'} against the course's {claim[i]} ({evidence}): {verdict}")
    return f"{family} ({row.model}): " + "; ".join(parts) + "."


# ---------------------------------------------------------------------- the command
def add_arguments(p):
    p.add_argument("--runs", default="runs", help="the folder of run folders (default runs)")
    p.add_argument("--out", default="docs/report.md",
                   help="the report (default docs/report.md); a file not written by this command is never replaced")
    p.add_argument("--n", type=whole_number(2), default=2000, help="samples for FID-judge / accuracy (default 2000)")
    p.add_argument("--seed", type=whole_number(0), default=0, help="sampling seed (default 0)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--families", action="store_true",
                       help=f"only the overview's four families ({', '.join(FAMILY_MODELS)})")
    which.add_argument("--models", nargs="+", metavar="MODEL", help="only these models")
    p.add_argument("--train", action="store_true", help="train the missing runs first (says what and the CPU "
                                                        "time it expects; resumes unfinished runs)")
    p.add_argument("--dry-run", action="store_true", help="print the plan of --train only; nothing is written")


def check_out(out):
    """Refuse an --out that this command did not write, or that cannot be written."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as docs/report.md")
    reason = io.unwritable_reason(path)
    if reason:
        raise UsageError(f"--out {out}: {reason}")
    if path.exists():
        with open(path, errors="replace") as f:
            first = f.readline().rstrip("\n")
        if first != MARK:
            raise UsageError(f"--out {out}: the file exists and was not written by `python -m tinygen report` "
                             f"(its first line is not {MARK}); choose another file (nothing was changed)")
    return path


def report_command(args):
    names = FAMILY_MODELS if args.families else tuple(args.models) if args.models else tuple(models.MODULES)
    unknown = [m for m in names if m not in models.MODULES]
    if unknown:
        raise UsageError(f"--models {' '.join(unknown)}: unknown; valid models: {', '.join(sorted(models.MODULES))}")
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        raise UsageError(f"--runs {args.runs}: is not a folder")
    if not runs.exists() and not (args.train or args.dry_run):  # a plan is shown, or trains into it
        raise UsageError(f"--runs {args.runs}: no such folder; train models into it first "
                         f"(python -m tinygen train MODEL, or this command with --train)")
    out = None if args.dry_run else check_out(args.out)
    ledger_file = ledger_path(args.out)
    ledger = read_ledger(ledger_file)
    recorded = {r.folder.name: f"recorded in {ledger_file} on {r.recorded['measured']} (its folder is not here)"
                for r in recorded_runs(ledger, runs, names, args.n, args.seed)}
    todo = plan(runs, names, recorded)
    plan_text = describe_plan(todo)
    if args.train or args.dry_run:
        print(plan_text, flush=True)
    if args.dry_run:
        return 0
    failures = {}
    if args.train:
        runs.mkdir(parents=True, exist_ok=True)
        failures = execute(todo, runs)
        todo = plan(runs, names, recorded)
    rows = collect(runs, names, args.n, args.seed, failures, ledger=ledger)
    command = " ".join(["python -m tinygen report", f"--runs {args.runs}", f"--n {args.n}", f"--seed {args.seed}"]
                       + (["--families"] if args.families else ["--models " + " ".join(args.models)] if args.models else []))
    pending = [p for p in todo if p.action in ("train", "resume")]
    text = render(rows, args.runs, args.n, args.seed, command, describe_plan(pending) if pending else None,
                  ledger_file)
    check_out(out)  # again: a file put there while the runs were evaluated is not replaced either
    now = read_ledger(ledger_file)     # what another report entered meanwhile is kept
    now["runs"].update(ledger["runs"])
    io.atomic_write_text(ledger_file, json.dumps(now, indent=1, sort_keys=True) + "\n")
    io.atomic_write_text(out, text + "\n")
    print(text)
    print(f"wrote {out}")
    return 1 if failures else 0
