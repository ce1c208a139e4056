"""The shared evaluation suite: every model's figures come from here, on the test split, with a
fixed seed.

The judge is the CNN classifier of tinygen/models/classifier.py, trained once per dataset by

    python -m tinygen.evaluate train-judge --dataset mnist      (and --dataset fashion)

which writes runs/judge-<dataset>/judge.npz (never the shipped file: a maintainer copies it to
tinygen/judges/<dataset>.npz and updates JUDGE_SHA256 below, by hand). The shipped judges are frozen
and checked against their SHA-256 on every load; an evaluation never trains them further. From it:

    conditional accuracy = mean_i [ judge(x_i) == y_i ]        for samples x_i asked to be class y_i
    FID-judge = |mu_s - mu_t|^2 + tr(S_s + S_t - 2 (S_s^1/2 S_t S_s^1/2)^1/2)
        over the judge's 128-d penultimate features of samples (s) and of the test set (t).
        It is not the Inception FID: never compare it with published FIDs.
    class coverage = entropy of the histogram of judged labels (ln 10 = 2.30 when all classes appear
        equally often)

Likelihoods: nats per image (binarised MNIST) and bits per dim (dequantised data).
"""
import hashlib
import json
import math
import sys
import time
from pathlib import Path

try:  # Ctrl-C while the modules load (NumPy, the models) is one line, status 130, as for python -m tinygen
    import numpy as np

    from . import data, io, text
    from .cli import OneLineParser, UsageError, finite_number, parse_settings, run_command, whole_number
    from .diffusion import SAMPLERS
    from .models import build_model, load_model, set_sample_settings
    from .models.classifier import discriminants, least_squares_discriminant
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    sys.stderr.write("python -m tinygen.evaluate: interrupted\n")
    raise SystemExit(130) from None
# the likelihood units live with the models that report them; here for the suite's users
from .models.base import bits_per_dim, dequantized_nll_nats, importance_weighted_nll  # noqa: F401

JUDGE_DIR = Path(__file__).parent / "judges"
# SHA-256 of the shipped judge weights; a file that does not match is refused.
JUDGE_SHA256 = {
    "mnist": "ddc183982ef0308b1b1667d80f2b7f2b554a9d76fb0b50c94fd683e7b48f3f00",  # 99.24% test accuracy
    "fashion": "ed76d312953d0902c962836fab4018ee2c6fc201866d6e47b58c1bec57561749",  # 90.59% test accuracy
}

_judges, _test_features = {}, {}


class JudgeError(RuntimeError):
    pass


# ---------------------------------------------------------------------- the judge
def judge_path(dataset):
    return JUDGE_DIR / f"{dataset}.npz"


def load_judge(dataset):
    """The frozen judge classifier for `dataset`, verified against its shipped SHA-256."""
    if dataset in _judges:
        return _judges[dataset]
    from .models.classifier import CNN
    path = judge_path(dataset)
    if not path.exists():
        raise JudgeError(f"no judge for {dataset} at {path}; train it with "
                         f"`python -m tinygen.evaluate train-judge --dataset {dataset}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if dataset in JUDGE_SHA256 and digest != JUDGE_SHA256[dataset]:
        raise JudgeError(f"{path}: SHA-256 {digest} does not match the shipped judge {JUDGE_SHA256[dataset]}; "
                         f"restore the file from the repository")
    arrays, meta = io.load_checkpoint(path)
    judge = CNN(CNN.Config(**meta["config"]))
    judge.load_state_dict(arrays)
    judge.eval()
    _judges[dataset] = judge
    return judge


def train_judge(dataset, epochs=None, seed=0, out=None, overwrite=False, progress=True):
    """Train the CNN on `dataset` with its recipe in the run folder `out` (default runs/judge-<dataset>)
    and write the judge file `out`/judge.npz; returns its path and SHA-256. The shipped judges in
    tinygen/judges/ are never written here: shipping a new one is a copy and a checksum edit, by hand."""
    from .train import TrainOptions, Trainer
    out = Path(out or f"runs/judge-{dataset}")
    target = out / "judge.npz"
    if JUDGE_DIR.resolve() in (target.resolve().parent, *target.resolve().parents):
        raise JudgeError(f"--out {out}: the shipped judges in {JUDGE_DIR} are never written by a command; "
                         f"give a run folder outside the package")
    model = build_model("cnn", {"epochs": epochs})
    summary = Trainer(model, TrainOptions(dataset=dataset, seed=seed, out=str(out), overwrite=overwrite,
                                          progress=progress)).fit()
    io.save_checkpoint(target, model.state_dict(),
                       {"kind": "tinygen-judge", "dataset": dataset, "config": model.config_dict(),
                        "test_acc": summary.get("test_acc"), "cpu_seconds": summary["cpu_seconds"]})
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(json.dumps({**summary, "judge": str(target), "sha256": digest,
                      "to_ship": f"copy it to {judge_path(dataset)} and set JUDGE_SHA256[{dataset!r}] in "
                                 f"tinygen/evaluate.py to its sha256"}))
    return target, digest


# ---------------------------------------------------------------------- sample metrics
def judge_features(images, dataset):
    return load_judge(dataset).embed(np.asarray(images))


def test_features(dataset):
    """Judge features of the whole test split (cached)."""
    if dataset not in _test_features:
        x, _ = data.load_dataset(dataset, "test")
        _test_features[dataset] = judge_features(x, dataset)
    return _test_features[dataset]


def frechet_distance(features_a, features_b):
    """Frechet distance between Gaussians fitted to two feature sets (N, D).

    d = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)
    (the last trace equals tr((S_a S_b)^1/2); the symmetric form lets eigh do the square roots)."""
    for name, f in (("first", features_a), ("second", features_b)):
        if len(f) < 2:
            raise ValueError(f"FID-judge needs at least 2 images per set (a covariance), got {len(f)} in the {name}")
        if not np.isfinite(f).all():
            raise ValueError(f"FID-judge: the {name} set's features are not finite (NaN or inf images?)")
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    s_a = np.cov(features_a.astype(np.float64), rowvar=False)
    s_b = np.cov(features_b.astype(np.float64), rowvar=False)
    w, v = np.linalg.eigh(s_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T                     # S_a^1/2
    middle = np.linalg.eigvalsh(sqrt_a @ s_b @ sqrt_a)                    # eigenvalues of S_a^1/2 S_b S_a^1/2
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                 - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def fid_judge(images, dataset):
    """FID-judge of images (N, 1, 28, 28) in [0, 1] against the test split."""
    if not np.isfinite(np.asarray(images)).all():
        raise ValueError("FID-judge: the samples hold NaN or inf (a model trained into non-finite weights?)")
    return frechet_distance(judge_features(images, dataset), test_features(dataset))


def conditional_accuracy(images, labels, dataset):
    """How often the judge sees the class that was asked for."""
    return float((load_judge(dataset).predict(np.asarray(images)) == np.asarray(labels)).mean())


def class_coverage(images, dataset):
    """Entropy (nats) of the judged-label histogram: ln 10 = 2.303 when every class is equally common."""
    counts = np.bincount(load_judge(dataset).predict(np.asarray(images)), minlength=data.N_CLASSES)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: one class gives 0, not -0


# ---------------------------------------------------------------------- speed
def sampling_speed(sample_fn, n, repeats=1):
    """Images per second of sample_fn(n) (the best of `repeats` runs, wall time)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        sample_fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def evaluate_model(model, dataset, n=10000, seed=0, **sampling):
    """The metrics that apply to `model`, on the test split, with a fixed seed. `sampling` goes to
    model.sample (diffusion models: steps=, guidance=)."""
    model.rng = np.random.default_rng(seed)
    x_test, y_test = data.load_dataset(dataset, "test")
    t0 = time.process_time()
    results = {"model": model.name, "dataset": dataset}
    if hasattr(model, "predict") or hasattr(model, "translate"):  # classifiers; image-to-image translation
        results.update(model.evaluate(x_test, y_test))
    if hasattr(model, "translate"):  # the judge reads the outputs for the test conditions: the true class?
        outputs = model.translate(model.condition_of(x_test))
        results["judge_acc"] = conditional_accuracy(outputs, y_test, dataset)
        results["fid_judge"] = fid_judge(outputs, dataset)
    if hasattr(model, "evaluate_nll"):
        results.update(model.evaluate_nll(x_test))
    if hasattr(model, "evaluate_representation"):  # what the trained model learned: probes, attention distance
        results.update(model.evaluate_representation(x_test, y_test))
    if hasattr(model, "sample") and not hasattr(model, "translate"):
        if model.conditional:
            labels = np.arange(n) % data.N_CLASSES
            samples = model.sample(n, label=labels, **sampling)
            results["conditional_accuracy"] = conditional_accuracy(samples, labels, dataset)
        else:
            samples = model.sample(n, **sampling)
        results.update({"n": n, **sampling})
        results["fid_judge"] = fid_judge(samples, dataset)
        results["class_coverage"] = class_coverage(samples, dataset)
    results["cpu_seconds"] = round(time.process_time() - t0, 1)
    return results


# ---------------------------------------------------------------------- diffusion sweeps
def sampler_sweep(model, dataset, steps_list, n=1000, seed=0):
    """FID-judge, class coverage and images/s of unconditional samples (the null label of a
    class-conditional model) for each number of sampling steps: all T = ancestral, fewer = DDIM (eta 0)."""
    rows = []
    for steps in steps_list:
        model.rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        samples = model.sample(n, steps=None if steps == model.config.T else steps)
        wall = time.perf_counter() - t0
        rows.append({"steps": steps, "sampler": "ancestral" if steps == model.config.T else "DDIM eta=0", "n": n,
                     "fid_judge": round(fid_judge(samples, dataset), 2),
                     "class_coverage": round(class_coverage(samples, dataset), 3),
                     "images_per_s": round(n / wall, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


#: the score-based sweep's defaults: network evaluations per image, and the corrector's signal-to-noise ratio
NFE_SWEEP = (10, 20, 50, 100, 250)
SNR_DEFAULT = 0.16          # Song et al. 2021's choice for the Langevin corrector
SWEEP_PLOT_MARK = "sampler-sweep"
LANGEVIN_SAMPLERS = ("pc", "langevin")


def nfe_sweep(model, dataset, samplers, nfes, n=1000, seed=0, snrs=(SNR_DEFAULT,), corrector_steps=1):
    """The score-based view at equal cost: for each sampler of diffusion.SAMPLERS, each snr (the Langevin
    samplers, pc and langevin) and each budget of network evaluations per image (NFE), the most noise levels
    that fit (GaussianDiffusion.levels_for), samples from the same seed, and FID-judge, class coverage, judge
    accuracy (a class-conditional model: labels 0..9 in turn, guidance 1, the plain conditional) and images/s.
    `nfe` in a row is counted (GaussianDiffusion.evaluations), not computed."""
    d, rows = model.diffusion, []
    labels = np.arange(n) % data.N_CLASSES if model.conditional else None
    for sampler in samplers:
        for snr in (snrs if sampler in LANGEVIN_SAMPLERS else [None]):
            for nfe in nfes:
                levels = d.levels_for(sampler, nfe, corrector_steps)
                model.rng = np.random.default_rng(seed)
                before, t0 = d.evaluations, time.perf_counter()
                samples = model.sample(n, label=labels, steps=levels, sampler=sampler,
                                       snr=SNR_DEFAULT if snr is None else snr, corrector_steps=corrector_steps)
                wall = time.perf_counter() - t0
                row = {"sampler": sampler, "snr": snr,
                       "corrector_steps": corrector_steps if sampler in LANGEVIN_SAMPLERS else None,
                       "levels": levels, "nfe": round((d.evaluations - before) / n, 2), "n": n}
                if labels is not None:
                    row["conditional_accuracy"] = round(conditional_accuracy(samples, labels, dataset), 4)
                row.update({"fid_judge": round(fid_judge(samples, dataset), 2),
                            "class_coverage": round(class_coverage(samples, dataset), 3),
                            "images_per_s": round(n / wall, 2)})
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def curve_name(row):
    """A sweep row's curve in the plot: the sampler, with its snr for the Langevin samplers."""
    return row["sampler"] if row["snr"] is None else f"{row['sampler']} snr={row['snr']:g}"


def save_nfe_plot(rows, path, command=""):
    """FID-judge (and judge accuracy, where the rows have it) against NFE, one curve per sampler and snr."""
    panels = []
    for key, title in (("fid_judge", "FID-judge (lower is better)"), ("conditional_accuracy", "judge accuracy")):
        if key in rows[0]:
            curves = {}
            for r in rows:
                xs, ys = curves.setdefault(curve_name(r), ([], []))
                xs.append(r["nfe"])
                ys.append(r[key])
            panels.append((title, curves))
    fids = [r["fid_judge"] for r in rows if r.get("fid_judge") and np.isfinite(r["fid_judge"]) and r["fid_judge"] > 0]
    wide = bool(fids) and max(fids) > 10 * min(fids)   # a sampler that fails beside ones that work: log scale
    io.save_line_plots(panels, path, xlabel="network evaluations per image (NFE)", log_x=True, size=(420, 300),
                       text={"tinygen": SWEEP_PLOT_MARK, "command": command}, log_y=(0,) if wide else ())


def guidance_sweep(model, dataset, scales, n=1000, steps=50, seed=0, classifier=None):
    """Judge accuracy for the requested label, FID-judge and class coverage at each guidance scale:
    classifier-free (guided eps = eps(x, none) + s (eps(x, y) - eps(x, none))), or with `classifier`
    classifier guidance of the unconditional eps with scale s."""
    labels = np.arange(n) % data.N_CLASSES
    rows = []
    for s in scales:
        model.rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        if classifier is None:
            samples = model.sample(n, label=labels, guidance=s, steps=steps)
        else:
            samples = model.sample(n, label=labels, guidance=0.0, steps=steps, classifier=classifier,
                                   classifier_scale=s)
        wall = time.perf_counter() - t0
        rows.append({"guidance": "classifier" if classifier is not None else "classifier-free", "scale": s,
                     "steps": steps, "n": n,
                     "conditional_accuracy": round(conditional_accuracy(samples, labels, dataset), 4),
                     "fid_judge": round(fid_judge(samples, dataset), 2),
                     "class_coverage": round(class_coverage(samples, dataset), 3),
                     "images_per_s": round(n / wall, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------------- the prompt benchmark
#: The prompt benchmark's version: a change of the suite, its n or its seed is a new version, so that two
#: rows of one version are comparable.
PROMPT_SUITE_VERSION = 1
PROMPT_N = 20            # images per attribute prompt
CLASS_PROMPT_FACTOR = 5  # the class prompts draw 5 x PROMPT_N images each (FID-judge needs more images)
PROMPT_SEED = 0


def prompt_suite(dataset):
    """The fixed prompts of the benchmark, in order, each a dict:
        class prompts      "a digit seven" (Fashion: "a sneaker"), one per class        attribute ""
        attribute prompts  "a thick digit seven": every word of text.CAPTION_BINS with every class;
                           heldout = whether (class, word) is one of text.HOLDOUT's pairs"""
    key = data._canonical_name(dataset)
    phrases = text.label_phrases(key)
    holdout = set(text.HOLDOUT[key])
    suite = [{"prompt": text.fill_template("a {label}", phrase), "label": c, "attribute": "", "word": "",
              "heldout": False} for c, phrase in enumerate(phrases)]
    for attribute, (_, words) in text.CAPTION_BINS[key].items():
        for word in words:
            suite += [{"prompt": text.fill_template(f"a {word} {{label}}", phrase), "label": c,
                       "attribute": attribute, "word": word, "heldout": (c, word) in holdout}
                      for c, phrase in enumerate(phrases)]
    return suite


def attribute_agreement(images, attributes, words, dataset):
    """Per image, whether its measured attribute (text.attribute_words: the caption bins) is the word asked
    for: (N,) booleans for images (N, 1, 28, 28), attribute names (N,) and words (N,)."""
    measured = text.attribute_words(images, dataset)                   # {attribute: (N,) words}
    return np.array([measured[a][i] == w for i, (a, w) in enumerate(zip(attributes, words))], dtype=bool)


def base_rate(attributes, words, labels, dataset):
    """The agreement of a model that ignores the attribute word: for each prompt, the share of the test
    images of its class whose attribute is that word (about 1/3 by the bins' design)."""
    x, y = data.load_dataset(dataset, "test")
    measured = text.attribute_words(x, dataset)
    return float(np.mean([(measured[a][y == c] == w).mean() for a, w, c in zip(attributes, words, labels)]))


def prompt_benchmark(model, dataset, n_per_prompt=PROMPT_N, seed=PROMPT_SEED, batch=500, settings=None,
                     by_prompt=False, **sampling):
    """The prompt benchmark of a text-to-image model (model.sample(n, prompt=[...], **sampling)), judged by
    the frozen judge of `dataset` and the caption bins:

        class_accuracy        judge(x) == the class asked for, class prompts ("a digit seven")
        class_fid_judge       FID-judge of the class prompts' images against the test split
        class_coverage        entropy of their judged labels (ln 10 = 2.30 when every class appears)
        attribute_agreement   measured attribute word == the word asked for ("a thick digit seven"), with
                              agreement_<attribute> per attribute and base_rate (a model ignoring the word)
        attribute_class_accuracy  the judge's accuracy on the attribute prompts
        seen_agreement / heldout_agreement   agreement on the pairs the captions showed / held out
        images_per_s          wall-clock sampling speed on this machine
    n_per_prompt images per attribute prompt, CLASS_PROMPT_FACTOR times as many per class prompt; `settings`
    (the model's sampling settings changed for this row, e.g. top_k) are written into the row. by_prompt:
    also "by_prompt", a row per attribute prompt (prompts_by_attribute: which prompts the figures lose on)."""
    suite = prompt_suite(dataset)
    repeats = [n_per_prompt * (CLASS_PROMPT_FACTOR if not row["attribute"] else 1) for row in suite]
    column = lambda key: np.repeat(np.array([row[key] for row in suite], dtype=object), repeats)
    prompts, labels, attributes, words, heldout = (column(k) for k in ("prompt", "label", "attribute", "word",
                                                                         "heldout"))
    labels, heldout = labels.astype(np.int64), heldout.astype(bool)
    model.rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    images = np.concatenate([model.sample(len(prompts[i:i + batch]), prompt=list(prompts[i:i + batch]), **sampling)
                             for i in range(0, len(prompts), batch)])
    wall = time.perf_counter() - t0
    judged = load_judge(dataset).predict(images)
    is_class = attributes == ""
    agree = attribute_agreement(images[~is_class], attributes[~is_class], words[~is_class], dataset)
    a_attr, a_words, a_labels, a_held = attributes[~is_class], words[~is_class], labels[~is_class], heldout[~is_class]
    results = {"suite": f"prompts-v{PROMPT_SUITE_VERSION}", "model": model.name, "dataset": dataset,
               "n_per_prompt": n_per_prompt, **(settings or {}),
               **{k: v for k, v in sampling.items() if isinstance(v, (int, float, str))},
               "images": len(images),
               "class_accuracy": round(float((judged[is_class] == labels[is_class]).mean()), 4),
               "class_fid_judge": round(fid_judge(images[is_class], dataset), 2),
               "class_coverage": round(class_coverage(images[is_class], dataset), 3),
               "attribute_agreement": round(float(agree.mean()), 4)}
    for name in text.CAPTION_BINS[data._canonical_name(dataset)]:
        results[f"agreement_{name}"] = round(float(agree[a_attr == name].mean()), 4)
    results.update({
        "base_rate": round(base_rate(a_attr, a_words, a_labels, dataset), 4),
        "attribute_class_accuracy": round(float((judged[~is_class] == labels[~is_class]).mean()), 4),
        "seen_agreement": round(float(agree[~a_held].mean()), 4),
        "heldout_agreement": round(float(agree[a_held].mean()), 4),
        "heldout_base_rate": round(base_rate(a_attr[a_held], a_words[a_held], a_labels[a_held], dataset), 4),
        "images_per_s": round(len(images) / wall, 2)})
    if by_prompt:
        results["by_prompt"] = prompts_by_attribute(a_attr, a_words, a_labels, a_held, agree,
                                                    judged[~is_class] == labels[~is_class], dataset)
    return results


def prompts_by_attribute(attributes, words, labels, heldout, agree, correct, dataset):
    """One row per attribute prompt of the benchmark, in the suite's order: its attribute agreement and
    judge accuracy, whether the captions held its pair out, and how common its word is among the test
    images of its class (the model's prior: a "large digit one" asks for 3% of the ones)."""
    x, y = data.load_dataset(dataset, "test")
    measured = text.attribute_words(x, dataset)
    rows, seen = [], set()
    for a, w, c, h in zip(attributes, words, labels, heldout):
        if (a, w, c) in seen:
            continue
        seen.add((a, w, c))
        here = (attributes == a) & (words == w) & (labels == c)
        rows.append({"label": int(c), "attribute": a, "word": w, "heldout": bool(h),
                     "agreement": round(float(agree[here].mean()), 4),
                     "class_accuracy": round(float(correct[here].mean()), 4),
                     "in_test_split": round(float((measured[a][y == c] == w).mean()), 4)})
    return rows


def bayes_classifier(model, dataset, ks=(1, 10, 100), n=None, judge=True):
    """Classify the test split with a class-conditional generative model, by Bayes' rule:

        y(x) = argmax_y  log p(x|y) + log p(y)

    log p(x|y) from the model's `class_log_likelihoods(x, k)` (a k-sample bound; more samples, a
    tighter bound), p(y) the label frequencies of the training split. One row per k: accuracy and
    CPU seconds; with judge=True two last rows hold the lecture's other kinds of classifier on the same
    test images: linear discriminant functions (classifier.least_squares_discriminant, no probabilities)
    and the discriminative CNN p(y|x) (the judge), the figure to beat. For a model of binarised data (the CVAE) the images are binarised
    once with seed 0, as for the likelihoods (evaluate_nll); a model with binary_likelihood = False (DDPM)
    gets the grey levels; the judge reads them as they are."""
    x_test, y_test = data.load_dataset(dataset, "test")
    x_test, y_test = x_test[:n], y_test[:n]
    _, y_train = data.load_dataset(dataset, "train")
    log_prior = np.log(np.bincount(y_train, minlength=data.N_CLASSES) / len(y_train))   # log p(y), (10,)
    # binary images for models of binarised data (the CVAE), grey levels for those of 8-bit images (DDPM)
    x = data.binarize(x_test, np.random.default_rng(0)) if getattr(model, "binary_likelihood", True) \
        else data.to_float(x_test)                                                           # (N, 1, 28, 28)
    rows = []
    for k in ks:
        cpu0 = time.process_time()
        log_joint = model.class_log_likelihoods(x, k) + log_prior                          # (N, 10)
        rows.append({"classifier": f"{model.name}, Bayes' rule", "k": k, "n": len(x),
                     "accuracy": round(float((log_joint.argmax(axis=1) == y_test).mean()), 4),
                     "cpu_s": round(time.process_time() - cpu0, 1)})
    if judge:  # the lecture's other two kinds of classifier, on the same test images
        cpu0 = time.process_time()
        x_train, y_train = data.load_dataset(dataset, "train")
        g = discriminants(least_squares_discriminant(x_train, y_train), x_test)               # (N, 10)
        rows.append({"classifier": "linear discriminant functions (least squares on the pixels)", "k": "-",
                     "n": len(x), "accuracy": round(float((g.argmax(axis=1) == y_test).mean()), 4),
                     "cpu_s": round(time.process_time() - cpu0, 1)})
        cpu0 = time.process_time()
        accuracy = float((load_judge(dataset).predict(x_test) == y_test).mean())
        rows.append({"classifier": "judge (discriminative CNN)", "k": "-", "n": len(x),
                     "accuracy": round(accuracy, 4), "cpu_s": round(time.process_time() - cpu0, 1)})
    return rows


def fine_tune_benchmark(model, dataset, steps, n_train=None, scratch=False, joint=True, seed=0):
    """Image GPT's fine-tuning (ImageGPT.fine_tune) of a trained checkpoint on the first n_train images of a
    fixed shuffle of the train split (data.train_subset; default all), `steps` steps, accuracy on the whole
    test split. With scratch=True a second row: the same network from its initial weights (the checkpoint's
    palette kept), trained the same way: what the generative pre-training is worth. One row each: accuracy
    and CPU seconds. The model's weights change in place (the checkpoint on disk does not)."""
    x_train, y_train = data.load_dataset(dataset, "train")
    if n_train is not None:
        x_train, y_train = data.train_subset(x_train, y_train, n_train)
    x_test, y_test = data.load_dataset(dataset, "test")
    objective = "L_CLF + L_GEN" if joint else "L_CLF"
    arms = [("pre-trained", model)]
    if scratch:
        fresh = build_model(model.name, model.config_dict(), seed=seed)
        fresh.palette, fresh.palette_fitted = model.palette.copy(), model.palette_fitted.copy()
        arms.append(("from scratch", fresh))
    rows = []
    for start, m in arms:
        cpu0 = time.process_time()
        head = m.fine_tune(x_train, y_train, steps, joint=joint, seed=seed)
        accuracy = float((m.fine_tuned_predict(x_test, head) == y_test).mean())
        rows.append({"classifier": f"{model.name} {start}, fine-tuned on {objective}", "steps": steps,
                     "train_images": len(x_train), "accuracy": round(accuracy, 4),
                     "cpu_s": round(time.process_time() - cpu0, 1)})
    return rows


def prior_benchmark(model, dataset, n_per_prompt=PROMPT_N, seed=PROMPT_SEED, settings=None):
    """The prior of unCLIP on its own: for every prompt of prompt_suite, n_per_prompt image embeddings z drawn
    by the prior (model.prior_sample), compared by cosine with the CLIP image embeddings e_j of the test
    split (model.image_embedding):

        prior_class_cosine     mean_j cos(z, e_j) over the test images of the prompt's class
        prior_random_cosine    mean_j cos(z, e_j) over all test images (a random test image)
        prior_class_top1       the class whose test images are nearest on average is the prompt's
    the same for the text embedding itself (text_*: what the decoder gets with decode_from=text), and for a
    test image's own embedding against the other test images (image_*: what a real image embedding gets)."""
    suite = prompt_suite(dataset)
    prompts = list(np.repeat([r["prompt"] for r in suite], n_per_prompt))
    labels = np.repeat([r["label"] for r in suite], n_per_prompt)
    x, y = data.load_dataset(dataset, "test")
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    e = unit(model.image_embedding(x).astype(np.float64))                   # (N, D)
    counts = np.bincount(y, minlength=data.N_CLASSES)
    sums = np.stack([e[y == c].sum(axis=0) for c in range(data.N_CLASSES)])  # (10, D)
    class_mean, all_mean = sums / counts[:, None], e.mean(axis=0)           # mean_j e_j per class, overall
    model.rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    drawn = model.prior_sample(prompts)
    wall = time.perf_counter() - t0
    results = {"suite": f"prompts-v{PROMPT_SUITE_VERSION}", "model": model.name, "dataset": dataset,
               "n_per_prompt": n_per_prompt, **(settings or {}), "embeddings": len(prompts)}
    for name, z in (("prior", drawn), ("text", model.text_embedding(prompts))):
        z = unit(np.asarray(z, np.float64))
        per_class = z @ class_mean.T                                         # (n, 10): mean cosine per class
        results[f"{name}_class_cosine"] = round(float(per_class[np.arange(len(z)), labels].mean()), 4)
        results[f"{name}_random_cosine"] = round(float((z @ all_mean).mean()), 4)
        results[f"{name}_class_top1"] = round(float((per_class.argmax(axis=1) == labels).mean()), 4)
    # a test image against the others of its class (itself left out) and against all of them
    own = ((e * (sums[y] - e)).sum(axis=1) / (counts[y] - 1)).mean()
    results.update({"image_class_cosine": round(float(own), 4),
                    "image_random_cosine": round(float((e @ all_mean).mean()), 4),
                    "embeddings_per_s": round(len(prompts) / wall, 2)})
    return results


def variation_benchmark(model, dataset, n=500, per_image=8, seed=PROMPT_SEED, **sampling):
    """Variations (unCLIP): the first n test images, per_image variations each (model.vary), judged:

        class_accuracy          the judge sees the source image's class in the variation
        agreement_<attribute>   the variation's caption bin (text.attribute_words) is the source's
        base_<attribute>        the same for a random test image of the source's class (a model that kept
                                the class alone), as base_rate computes it
        images_per_s            wall-clock speed"""
    x, y = data.load_dataset(dataset, "test")
    x, y = x[:n], y[:n]
    model.rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    varied = model.vary(x, per_image, **sampling)                            # (n per_image, 1, 28, 28)
    wall = time.perf_counter() - t0
    labels = np.repeat(y, per_image)
    results = {"model": model.name, "dataset": dataset, "n": len(x), "per_image": per_image, **sampling,
               "class_accuracy": round(float((load_judge(dataset).predict(varied) == labels).mean()), 4)}
    source, made = text.attribute_words(x, dataset), text.attribute_words(varied, dataset)
    for name in text.CAPTION_BINS[data._canonical_name(dataset)]:
        words = np.repeat(source[name], per_image)
        results[f"agreement_{name}"] = round(float((made[name] == words).mean()), 4)
        results[f"base_{name}"] = round(base_rate([name] * len(x), source[name], y, dataset), 4)
    results["images_per_s"] = round(len(varied) / wall, 2)
    return results


def edit_benchmark(model, dataset, n=500, mask="lower", seed=PROMPT_SEED, **sampling):
    """Editing (GLIDE): the first n test images, the `mask` region redrawn for the prompt of another class
    ("a digit three" for a seven: label + 1 + i mod 9), the rest kept:
        edit_accuracy      the judge sees the prompt's class in the edited image
        outside_l1_max     the largest change outside the mask (0 up to rounding: the kept region is kept)
        inside_l1_mean     the mean change inside it"""
    x, y = data.load_dataset(dataset, "test")
    x, y = data.to_float(x[:n]), y[:n]
    target = (y + 1 + np.arange(len(y)) % 9) % data.N_CLASSES                 # another class for each image
    phrases = text.label_phrases(dataset)
    prompts = [text.fill_template("a {label}", phrases[c]) for c in target]
    redraw = model.region(mask)
    model.rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    edited = model.edit(x, redraw, prompts, **sampling)
    wall = time.perf_counter() - t0
    change = np.abs(edited - x)
    return {"model": model.name, "dataset": dataset, "mask": mask, "n": len(x), **sampling,
            "edit_accuracy": round(float((load_judge(dataset).predict(edited) == target).mean()), 4),
            "outside_l1_max": float(change[:, ~redraw].max()), "inside_l1_mean": round(float(change[:, redraw].mean()), 4),
            "images_per_s": round(len(x) / wall, 2)}


def markdown_table(rows):
    keys = list(rows[0])
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
                     + ["| " + " | ".join("—" if r[k] is None else str(r[k]) for k in keys) + " |" for r in rows])


def _load_any(checkpoint):
    """The trained model in a run checkpoint, whatever its kind."""
    return load_model(checkpoint)[0]


def _check_sweep(args, model):
    """Refuse a sweep that the checkpoint's model cannot run, and steps outside 1..T, by name."""
    if "steps" not in getattr(model, "sample_options", ()):
        raise UsageError(f"{args.command}: --checkpoint {args.checkpoint} holds a {model.name}, not a diffusion "
                         f"model (ddpm, latent_diffusion): it has no sampling steps to sweep")
    T = model.config.T
    if args.command == "sampler-sweep" and args.nfe is not None:
        _check_nfe_sweep(args, model)
        return
    steps = args.steps if isinstance(args.steps, list) else [args.steps]
    if max(steps) > T:
        raise UsageError(f"--steps {max(steps)}: {model.name} has T = {T} diffusion steps; valid: 1..{T}")
    if args.command == "guidance-sweep":
        if args.classifier is None and not model.conditional:
            raise UsageError(f"guidance-sweep: the {model.name} in {args.checkpoint} was trained without labels; "
                             f"classifier-free guidance needs a class-conditional model (or give --classifier)")


def _check_nfe_sweep(args, model):
    """The score-based sweep's values against the model (every NFE fits every sampler) and its plot's file."""
    import inspect
    from .diffusion import GaussianDiffusion
    if "sampler" not in inspect.signature(model.sample).parameters:
        raise UsageError(f"sampler-sweep --nfe: {model.name} samples with DDIM or ancestral steps only (--steps); "
                         f"the score-based samplers draw from the class-conditional diffusion models")
    d = model.diffusion
    for sampler in args.samplers:
        per_level = GaussianDiffusion.nfe_per_level(sampler, args.corrector_steps)
        for nfe in args.nfe:
            if nfe < per_level:
                raise UsageError(f"--nfe {nfe}: {sampler} with --corrector-steps {args.corrector_steps} takes "
                                 f"{per_level} network evaluations per noise level; give at least {per_level}")
            if nfe // per_level > d.T:
                raise UsageError(f"--nfe {nfe}: {sampler} visits at most the T = {d.T} noise levels of {model.name}, "
                                 f"{d.T * per_level} network evaluations per image; give at most {d.T * per_level}")
    plot = Path(args.plot)
    if plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {args.plot}: the plot is a PNG; give a file name ending in .png")
    if plot.is_dir():
        raise UsageError(f"--plot {args.plot}: is a folder; give a file name ending in .png")
    reason = io.unwritable_reason(plot)
    if reason:
        raise UsageError(f"--plot {args.plot}: {reason}")
    if plot.exists() and io.png_text(plot).get("tinygen") != SWEEP_PLOT_MARK:
        raise UsageError(f"--plot {args.plot}: the file exists and was not written by sampler-sweep; choose another "
                         f"file (nothing was changed)")


def prompts_command(args):
    """`prompts`: every value and file checked before the first image, then a JSON line per row and the
    markdown table."""
    model = _load_any(args.checkpoint)
    options = tuple(getattr(model, "sample_options", ()))
    if "prompt" not in options:
        raise UsageError(f"prompts: --checkpoint {args.checkpoint} holds a {model.name}, which takes no prompt; "
                         f"the prompt benchmark is for text-to-image models")
    sampling = {}
    for option in ("guidance", "steps"):
        value = getattr(args, option)
        if value is not None:
            if option not in options:
                raise UsageError(f"--{option}: {model.name} takes no --{option}")
            sampling[option] = value
    T = getattr(model.config, "T", None)
    if args.steps is not None and T is not None and args.steps > T:
        raise UsageError(f"--steps {args.steps}: {model.name} has T = {T} diffusion steps; valid: 1..{T}")
    given = parse_settings(args.set)
    for option, field in (("--top-k", "top_k"), ("--temperature", "temperature")):   # short for --set top_k=K
        value = getattr(args, field)
        if value is not None:
            if field not in getattr(model, "sample_settings", ()):
                raise UsageError(f"{option}: {model.name} does not sample tokens; it takes no {option}")
            given[field] = value
    settings = set_sample_settings(model, given)    # the model's sampling settings, recorded in the row
    candidates, clip = args.candidates or [1], None
    if args.candidates and not hasattr(model, "rerank"):
        raise UsageError(f"--candidates: {model.name} does not re-rank its samples")
    if max(candidates) > 1 or args.clip:
        if not args.clip:
            raise UsageError("--candidates above 1 re-rank with CLIP: give --clip PATH (python -m tinygen train clip)")
        clip = load_model(args.clip, "clip")[0]
        if clip.dataset != model.dataset:
            raise UsageError(f"--clip {args.clip}: a CLIP of {clip.dataset}, but the model draws {model.dataset}")
    load_judge(model.dataset)
    rows, cpu0 = [], time.process_time()
    for n in candidates:
        extra = {"candidates": n, "clip": clip} if args.candidates else {}
        row = prompt_benchmark(model, model.dataset, args.n_per_prompt, settings=settings, by_prompt=args.by_prompt,
                               **sampling, **extra)
        if args.candidates:
            row["clip"] = args.clip
        per_prompt = row.pop("by_prompt", None)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if per_prompt:
            print(json.dumps({"by_prompt": per_prompt}), flush=True)
            print(markdown_table(per_prompt))
    print(markdown_table(rows))
    print(f"CPU seconds: {time.process_time() - cpu0:.0f}")


def _nfe_sweep_arguments(args):
    """sampler-sweep: --steps alone (or nothing) is the DDIM steps sweep; --samplers, --nfe, --snr,
    --corrector-steps or --plot make it the score-based sweep, with the defaults filled in (args.nfe None: not)."""
    score_based = [f"--{name.replace('_', '-')}" for name in ("samplers", "nfe", "snr", "corrector_steps", "plot")
                   if getattr(args, name) is not None]
    if score_based and args.steps is not None:
        raise UsageError(f"--steps with {score_based[0]}: --steps sweeps DDIM steps; the score-based sweep counts "
                         f"network evaluations per image (--nfe); give one of them")
    if not score_based:
        args.steps = args.steps or [1000, 250, 100, 50, 20, 10]
        return
    args.samplers = list(dict.fromkeys(args.samplers or SAMPLERS))
    args.nfe = args.nfe or list(NFE_SWEEP)
    args.snr = args.snr or [SNR_DEFAULT]
    args.corrector_steps = args.corrector_steps or 1
    args.plot = args.plot or str(Path(args.checkpoint).with_name("sampler_sweep.png"))


def main(argv=None):
    return run_command(_main, argv, "python -m tinygen.evaluate")


def _main(argv):
    ap = OneLineParser(prog="python -m tinygen.evaluate")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-judge", help="train a judge classifier into a run folder (never the shipped judge)")
    t.add_argument("--dataset", choices=["mnist", "fashion"], required=True)
    t.add_argument("--epochs", type=whole_number(1))
    t.add_argument("--seed", type=whole_number(0), default=0)
    t.add_argument("--out", help="run folder (default runs/judge-<dataset>); the judge goes to <out>/judge.npz")
    t.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    f = sub.add_parser("fid-sanity", help="FID-judge of test vs test, train, shuffled pixels and noise")
    f.add_argument("--dataset", choices=["mnist", "fashion"], required=True)
    for name, helptext in (("sampler-sweep", "FID-judge and images/s against the number of sampling steps; with --nfe "
                                            "(or --samplers, --snr): DDIM, ancestral, predictor-corrector and "
                                            "annealed Langevin at equal network evaluations per image"),
                           ("guidance-sweep", "accuracy and FID-judge against the guidance scale")):
        w = sub.add_parser(name, help=helptext)
        w.add_argument("--checkpoint", required=True)
        w.add_argument("--n", type=whole_number(2), default=1000, help="samples per row (>= 2)")
        w.add_argument("--seed", type=whole_number(0), default=0)
    w = sub.choices["sampler-sweep"]
    w.add_argument("--steps", type=whole_number(1), nargs="+",
                   help="DDIM steps, unconditional samples; all T: the ancestral sampler "
                        "(default 1000 250 100 50 20 10)")
    w.add_argument("--samplers", nargs="+", choices=SAMPLERS,
                   help="the score-based sweep at equal network evaluations per image (--nfe), class-conditional "
                        f"where the model is (default with --nfe, --snr or --corrector-steps: {' '.join(SAMPLERS)})")
    w.add_argument("--nfe", type=whole_number(1), nargs="+",
                   help=f"network evaluations per image (default {' '.join(map(str, NFE_SWEEP))})")
    w.add_argument("--snr", type=finite_number(0, strict=True), nargs="+",
                   help=f"the Langevin steps' signal-to-noise ratio, one row each (pc, langevin; default {SNR_DEFAULT})")
    w.add_argument("--corrector-steps", type=whole_number(1),
                   help="Langevin steps per noise level (pc's corrector, annealed Langevin; default 1)")
    w.add_argument("--plot", help="the plot of the score-based sweep (default sampler_sweep.png beside the checkpoint)")
    g = sub.choices["guidance-sweep"]
    g.add_argument("--scales", type=finite_number(0, strict=False), nargs="+", default=[0, 1, 2, 3, 5])
    g.add_argument("--steps", type=whole_number(1), default=50)
    g.add_argument("--classifier", help="a noisy_classifier checkpoint: classifier guidance instead of classifier-free")
    p = sub.add_parser("prompts", help="the prompt benchmark of a text-to-image model (class, attributes, "
                                       "held-out pairs)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n-per-prompt", type=whole_number(2), default=PROMPT_N,
                   help=f"images per attribute prompt (default {PROMPT_N}; the class prompts draw "
                        f"{CLASS_PROMPT_FACTOR} times as many)")
    p.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (diffusion models)")
    p.add_argument("--steps", type=whole_number(1), help="sampling steps (diffusion models)")
    p.add_argument("--candidates", type=whole_number(1), nargs="+",
                   help="re-rank: draw N per image, keep CLIP's best; one row per N given (needs --clip)")
    p.add_argument("--clip", help="the CLIP checkpoint that re-ranks the candidates")
    p.add_argument("--top-k", type=whole_number(0), help="draw tokens from the top k codes only (token models; "
                                                          "0: all; default the checkpoint's)")
    p.add_argument("--temperature", type=finite_number(0, strict=True), help="token sampling temperature "
                                                                             "(token models; default the checkpoint's)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a sampling setting of the model, written into the row (unclip: decode_from=text, "
                        "prior_candidates=1, ...)")
    p.add_argument("--by-prompt", action="store_true",
                   help="also a table of every attribute prompt: its agreement, judge accuracy, whether its pair "
                        "was held out, and how common its word is in the test images of its class")
    q = sub.add_parser("prior", help="unCLIP's prior: cosine of its embeddings to test images of the prompt's "
                                     "class and to random ones, beside the text embedding's")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--n-per-prompt", type=whole_number(1), default=PROMPT_N, help=f"embeddings per prompt of "
                                                                                 f"the suite (default {PROMPT_N})")
    q.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a sampling setting of the model (prior_candidates=1, prior_guidance=2, ...)")
    v = sub.add_parser("variations", help="unCLIP's variations of test images: the source's class and caption "
                                          "bins kept?")
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--n", type=whole_number(1), default=500, help="test images (default 500)")
    v.add_argument("--per-image", type=whole_number(1), default=8, help="variations per image (default 8)")
    v.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (default the model's)")
    v.add_argument("--steps", type=whole_number(1), default=50, help="DDIM steps (default 50)")
    e = sub.add_parser("edits", help="editing: the lower half of test images redrawn for another class's prompt")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--n", type=whole_number(1), default=500, help="test images (default 500)")
    e.add_argument("--mask", default="lower", help="the region redrawn: lower, upper, left, right or box")
    e.add_argument("--guidance", type=finite_number(0, strict=False), help="guidance scale (default the model's)")
    e.add_argument("--steps", type=whole_number(1), default=50, help="DDIM steps (default 50)")
    b = sub.add_parser("bayes-classifier", help="classify the test split by argmax_y log p(x|y) + log p(y) "
                                                "with a class-conditional model (cvae: its ELBO / IWAE bound; "
                                                "ddpm: its variational bound, k steps t sampled)")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--k", type=whole_number(1), nargs="+", default=[1, 10, 100],
                   help="samples of the bound on log p(x|y): importance samples (cvae), steps t (ddpm: 10 k network "
                        "evaluations per image); a row per k (default 1 10 100)")
    b.add_argument("--n", type=whole_number(1), help="the first n test images (default all)")
    u = sub.add_parser("fine-tune", help="Image GPT fine-tuned on the labels (every weight and a linear head), "
                                         "test accuracy; --scratch: the same training from initial weights")
    u.add_argument("--checkpoint", required=True)
    u.add_argument("--steps", type=whole_number(1), default=1000, help="Adam steps of batch 32 (default 1000)")
    u.add_argument("--train-size", type=whole_number(1), metavar="N",
                   help="fine-tune on N train images (the first N of one fixed shuffle; default all)")
    u.add_argument("--scratch", action="store_true", help="a second row: the same network trained from scratch")
    u.add_argument("--classes-only", action="store_true", help="L_CLF alone (default L_CLF + L_GEN, the paper's best)")
    args = ap.parse_args(argv)
    if args.command == "train-judge":
        train_judge(args.dataset, args.epochs, args.seed, args.out, args.overwrite)
    elif args.command == "prompts":
        prompts_command(args)
    elif args.command == "fine-tune":
        model = _load_any(args.checkpoint)
        if not hasattr(model, "fine_tune"):
            raise UsageError(f"fine-tune: --checkpoint {args.checkpoint} holds a {model.name}, not an Image GPT "
                             f"(python -m tinygen train igpt)")
        if args.train_size is not None:   # refused before the minutes of training, not after
            data.train_subset(*data.load_dataset(model.dataset, "train"), args.train_size)
        rows = fine_tune_benchmark(model, model.dataset, args.steps, args.train_size, args.scratch,
                                   joint=not args.classes_only)
        for row in rows:
            print(json.dumps(row))
        print(markdown_table(rows))
    elif args.command == "bayes-classifier":
        model = _load_any(args.checkpoint)
        if not hasattr(model, "class_log_likelihoods"):
            raise UsageError(f"bayes-classifier: --checkpoint {args.checkpoint} holds a {model.name}, which gives "
                             f"no class-conditional likelihood log p(x|y); train one with python -m tinygen train cvae")
        load_judge(model.dataset)
        rows = []
        for i, k in enumerate(args.k):  # a row at a time: the large k take minutes
            rows += bayes_classifier(model, model.dataset, [k], args.n, judge=i == len(args.k) - 1)
            for row in rows[-2 if i == len(args.k) - 1 else -1:]:
                print(json.dumps(row), flush=True)
        print(markdown_table(rows))
    elif args.command in ("prior", "variations"):
        model = _load_any(args.checkpoint)
        need = "prior_sample" if args.command == "prior" else "vary"
        if not hasattr(model, need):
            raise UsageError(f"{args.command}: --checkpoint {args.checkpoint} holds a {model.name}, which has no "
                             f"{'prior' if args.command == 'prior' else 'variations'} (unclip has)")
        cpu0 = time.process_time()
        if args.command == "prior":
            settings = set_sample_settings(model, parse_settings(args.set))
            load_judge(model.dataset)
            row = prior_benchmark(model, model.dataset, args.n_per_prompt, settings=settings)
        else:
            if args.steps > model.config.T:
                raise UsageError(f"--steps {args.steps}: {model.name} has T = {model.config.T} diffusion steps")
            load_judge(model.dataset)
            row = variation_benchmark(model, model.dataset, args.n, args.per_image, steps=args.steps,
                                      **({"guidance": args.guidance} if args.guidance is not None else {}))
        print(json.dumps(row))
        print(f"CPU seconds: {time.process_time() - cpu0:.0f}")
    elif args.command == "edits":
        model = _load_any(args.checkpoint)
        if not hasattr(model, "edit"):
            raise UsageError(f"edits: --checkpoint {args.checkpoint} holds a {model.name}, which does not edit images")
        model.region(args.mask)
        if args.steps > model.config.T:
            raise UsageError(f"--steps {args.steps}: {model.name} has T = {model.config.T} diffusion steps")
        cpu0 = time.process_time()
        row = edit_benchmark(model, model.dataset, args.n, args.mask, steps=args.steps,
                             **({"guidance": args.guidance} if args.guidance is not None else {}))
        print(json.dumps(row))
        print(f"CPU seconds: {time.process_time() - cpu0:.0f}")
    elif args.command in ("sampler-sweep", "guidance-sweep"):
        if args.command == "sampler-sweep":
            _nfe_sweep_arguments(args)
        model = _load_any(args.checkpoint)
        _check_sweep(args, model)
        classifier = None
        if args.command == "guidance-sweep" and args.classifier:
            classifier = _load_any(args.classifier)
            if not hasattr(classifier, "log_prob_grad"):
                raise UsageError(f"--classifier {args.classifier} holds a {classifier.name}, not a noisy_classifier")
            if classifier.dataset != model.dataset:  # it would steer towards another dataset's classes
                raise UsageError(f"--classifier {args.classifier} was trained on {classifier.dataset}, the "
                                 f"--checkpoint {args.checkpoint} on {model.dataset}; give a classifier of "
                                 f"{model.dataset}")
        cpu0 = time.process_time()
        if args.command == "sampler-sweep" and args.nfe is not None:
            load_judge(model.dataset)  # before the first image: a missing judge is found now
            rows = nfe_sweep(model, model.dataset, args.samplers, args.nfe, args.n, args.seed, args.snr,
                             args.corrector_steps)
            save_nfe_plot(rows, args.plot, "python -m tinygen.evaluate " + " ".join(argv or sys.argv[1:]))
        elif args.command == "sampler-sweep":
            rows = sampler_sweep(model, model.dataset, args.steps, args.n, args.seed)
        else:
            rows = guidance_sweep(model, model.dataset, args.scales, args.n, args.steps, args.seed, classifier)
        print(markdown_table(rows))
        print(f"CPU seconds: {time.process_time() - cpu0:.0f}")
        if args.command == "sampler-sweep" and args.nfe is not None:
            print(f"plot: {args.plot}")
    else:
        x_test, _ = data.load_dataset(args.dataset, "test")
        x_train, _ = data.load_dataset(args.dataset, "train")
        rng = np.random.default_rng(0)
        test = data.to_float(x_test)
        shuffled = test.reshape(len(test), -1)[:, rng.permutation(784)].reshape(test.shape)
        rows = {"test_vs_test": fid_judge(test, args.dataset),
                "train10k_vs_test": fid_judge(data.to_float(x_train[:10000]), args.dataset),
                "shuffled_pixels_vs_test": fid_judge(shuffled, args.dataset),
                "uniform_noise_vs_test": fid_judge(rng.random(test.shape, dtype=np.float32), args.dataset)}
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
