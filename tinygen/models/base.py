"""What every model shares with the training loop: its Config, the optimiser it trains with, how a raw
data batch becomes model input, the training step, the units likelihoods are reported in, and the linear
probe (softmax_regression) that reads the label from frozen features (Image GPT's blocks, a VAE's codes).

The contract (tests/models/test_contract.py checks it for every model registered in MODULES):

    loss(batch) -> (loss Tensor, logs dict)      models with one optimiser (the default training_step)
    training_step(batch, optimizers) -> logs     override for several optimisers (GANs); every update
                                                 goes through optimizer_step below
    sample(n, **condition) -> NumPy float array (n, 1, 28, 28) in [0, 1]     generative models;
        conditional = True: sample(n, label=...) draws the requested classes and refuses a bad label;
        image-to-image models (translate) take sample(n, condition=images) and nothing else
    predict(images) -> labels, evaluate(images, labels) -> {"test_acc...": accuracy}   classifiers
    tiny_config = {...}                          Config overrides that make the model small enough to train,
                                                 save, load and sample in about a second (the contract test's)

A model's `name` is the one MODULES in tinygen/models/registry.py registers its class under.
"""
import functools
import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

import autograd.functional as F
from autograd import Tensor, enable_grad, no_grad
from .. import data, nn, optim
from .registry import registered_name


def inference(method=None, *, grad=False):
    """Run a model method in eval mode (dropout off, BatchNorm on its running statistics) and put the model
    back in the mode it was in; under no_grad() (no graph), or with grad=True under enable_grad(), for a
    method that differentiates the eval-mode network itself (a guidance gradient).

        @inference                      def sample(self, n): ...
        @inference(grad=True)           def log_prob_grad(self, x, t, y): ...
    """
    def decorate(method):
        @functools.wraps(method)
        def wrapped(self, *args, **kwargs):
            was_training = self.training
            self.eval()
            try:
                with (enable_grad() if grad else no_grad()):
                    return method(self, *args, **kwargs)
            finally:
                self.train(was_training)
        return wrapped
    return decorate(method) if method is not None else decorate


def optimizer_step(loss, optimizer, grad_clip=0.0, params=None):
    """One update: zero the gradients of `optimizer`'s parameters, backpropagate `loss`, clip the global
    gradient norm of `params` (default: the optimizer's) to grad_clip when grad_clip > 0, step.
    Returns the norm before clipping (a float), or None when nothing was clipped."""
    optimizer.zero_grad()
    loss.backward()
    norm = None
    if grad_clip:
        params = [p for g in optimizer.param_groups for p in g["params"]] if params is None else params
        norm = float(optim.clip_grad_norm_(params, grad_clip))
    optimizer.step()
    return norm


@dataclass
class Config:
    """Training recipe fields every model has; each model's Config adds its own."""
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float = 0.0  # global-norm clipping; 0 turns it off
    lr_schedule: str = "constant"  # "constant", or "cosine": lr (1 + cos(pi step / total steps)) / 2
    quick_steps: int = 300  # --quick trains this many steps


def config_from_dict(cls, values):
    """Build a Config dataclass from a dict, refusing unknown keys by name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
    return cls(**values)


def check_field(name, value, default):
    """`value` for the Config field `name` if it has the type of the recipe's `default`, else a
    ValueError saying what the field takes (--set batch_size=abc must not reach int())."""
    def refuse(kind):
        shown = value if isinstance(value, str) else json.dumps(value)
        return ValueError(f"--set {name}={shown}: {name} takes {kind} (the recipe: {json.dumps(default)})")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise refuse("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("a whole number")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number")
        if not math.isfinite(value):
            raise refuse("a finite number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise refuse("a string")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise refuse("a list such as [1, 2]")
        if default:
            value = type(default)(check_field(f"{name}[{i}]", v, default[0]) for i, v in enumerate(value))
    return value


# whole-number fields for which 0 is a setting ("none" / "off"), not a size that would divide by zero
ZERO_ALLOWED = frozenset({"augment", "num_classes", "ae_steps", "res_blocks", "couplings_7", "blocks",
                          "anneal_steps", "kl_warmup_steps", "top_k"})
FLOAT32_MAX = float(np.finfo(np.float32).max)
TRAINER_FIELDS = frozenset(f.name for f in fields(Config))


def is_probability(name):
    """Fields holding a probability by their name: *_prob, p_*."""
    return name.endswith("_prob") or name.startswith("p_")


def check_values(config):
    """Refuse, naming the field as --set would, values that no recipe can train or sample with, whatever
    reads them (the loop, sampling, the evaluation, the picture), so that a bad value fails before the
    first step and not hours later. The rules read the recipe's value of each field:
    - a field takes a value (None is refused where the recipe has one);
    - a whole number whose recipe is >= 1 is a size or a count: >= 1 (>= 0 for ZERO_ALLOWED); one whose
      recipe is 0 stays >= 0; lists of them likewise, and not empty;
    - a float is finite in float32, the precision the models compute in (1e39 is finite in Python and inf in
      float32); >= 0 where the recipe is (a negative weight or rate flips its meaning);
    - probabilities (is_probability) lie in [0, 1]; dropout in [0, 1) (it divides by 1 - p).
    A model's own rules (one field against another) live in its check_config. The fields of the base Config
    (epochs, batch_size, lr, ...) are the trainer's options: its check_options names them as such."""
    defaults = type(config)()
    for f in fields(config):
        if f.name in TRAINER_FIELDS:
            continue
        name, value, default = f.name, getattr(config, f.name), getattr(defaults, f.name)
        shown = f"--set {name}={json.dumps(value) if not isinstance(value, str) else value}"
        if value is None and default is not None:
            raise ValueError(f"{shown}: {name} takes a value; leave --set {name} out for the recipe's "
                             f"{json.dumps(default)}")
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and default and not value:
            raise ValueError(f"{shown}: {name} takes at least one value (the recipe: {json.dumps(default)})")
        example = default[0] if isinstance(default, (list, tuple)) and default else default
        for v in items:
            if isinstance(v, bool) or isinstance(example, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, int) and isinstance(example, int):
                low = 1 if example >= 1 and name not in ZERO_ALLOWED else 0
                if example >= 0 and v < low:
                    raise ValueError(f"{shown}: {name} must be a whole number >= {low} (the recipe: "
                                     f"{json.dumps(default)})")
            elif isinstance(v, float):
                if not math.isfinite(v) or abs(v) > FLOAT32_MAX:
                    raise ValueError(f"{shown}: {name} must be finite in float32 (at most {FLOAT32_MAX:.4g} in "
                                     f"size), the precision the models compute in")
                if is_probability(name) and not 0 <= v <= 1:
                    raise ValueError(f"{shown}: {name} is a probability: it must lie in [0, 1]")
                if name == "dropout" and not 0 <= v < 1:
                    raise ValueError(f"{shown}: dropout is a probability below 1 (it divides by 1 - p): [0, 1)")
                if isinstance(example, (int, float)) and example >= 0 and v < 0:
                    raise ValueError(f"{shown}: {name} must be >= 0 (the recipe: {json.dumps(default)})")


class Model(nn.Module):
    Config = Config
    name = "model"
    conditional = False  # True when sample() takes labels
    sample_options = ()  # the CLI's sampling options sample() takes: "label", "prompt", "guidance", "steps"
    sample_settings = ()  # Config fields that sampling alone reads: --set FIELD=VALUE of sample and the benchmark
    dataset = "mnist"  # the dataset it is trained on (set by the trainer and by load_model)
    image_range = "unit"  # "unit" [0, 1], "signed" [-1, 1] or "binary" {0, 1}: what prepare_batch feeds
    tiny_config = None  # a registered model sets it: see the module docstring

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name = registered_name(cls) or cls.__name__.lower()

    def __init__(self, config=None):
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.rng = np.random.default_rng(0)  # the model's own randomness (noise, binarisation); seeded by the trainer

    def config_dict(self):
        return asdict(self.config)

    @classmethod
    def check_config(cls, config):
        """Refuse (ValueError naming the --set field) what only this model cannot train with: one field
        against another, read by the pictures or the evaluation after an epoch (ddpm: sample_steps <= T).
        The trainer calls it before it writes anything; build_model has run check_values already."""

    # ---------------------------------------------------------------- training
    def configure_optimizers(self):
        """{name: optimizer}; one Adam over all parameters unless a model says otherwise."""
        return {"main": optim.Adam(self.parameters(), lr=self.config.lr)}

    def prepare_batch(self, images, labels):
        """Raw uint8 images (B, 1, 28, 28) and int labels -> the model's input (as NumPy)."""
        if self.image_range == "signed":
            x = data.to_signed(images)
        elif self.image_range == "binary":
            x = data.binarize(images, self.rng)
        else:
            x = data.to_float(images)
        return Tensor(x), labels

    def training_step(self, batch, optimizers):
        loss, logs = self.loss(batch)
        norm = optimizer_step(loss, optimizers["main"], self.config.grad_clip)
        return {"loss": loss.item(), **logs, **({} if norm is None else {"grad_norm": norm})}

    # ---------------------------------------------------------------- conditions
    def labels_for(self, n, label=None):
        """The class labels (n,) of a conditional sample: None -> 0, 1, ..., 9, 0, 1, ...; an int -> n
        copies; n ints -> themselves; anything outside 0..N_CLASSES-1 is refused (data.check_labels)."""
        if label is None:
            return np.arange(n) % data.N_CLASSES
        return data.check_labels(label, n)

    # ---------------------------------------------------------------- showing progress
    def visualize(self, images, labels, path):
        """Save a picture of what the model does now (samples for generative models)."""
        from ..io import save_image_grid
        save_image_grid(self.sample(64), path, scale=2)

    def evaluate(self, images, labels):
        """Test-split metrics computed after each epoch (a dict; empty by default)."""
        return {}


# ---------------------------------------------------------------------- likelihood units
def bits_per_dim(nats_per_image, num_dims=784):
    """nats per image -> bits per dimension: nats / (D ln 2) (NumPy arrays, floats or Tensors)."""
    return nats_per_image / (num_dims * math.log(2))


def dequantized_nll_nats(nll_continuous_nats, num_dims=784, levels=256):
    """NLL of 8-bit data from a density on [0, 1]^D of uniformly dequantised x = (k + u) / levels:
    -log P(k) <= -log p(x) + D log(levels) (the change of variables from [0, levels) to [0, 1))."""
    return nll_continuous_nats + num_dims * math.log(levels)


def importance_weighted_nll(log_weights):
    """-log (1/K sum_k w_k) per example, from log w of shape (N, K): the IWAE bound, tighter as K grows."""
    m = log_weights.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(log_weights - m).mean(axis=1)))


# ---------------------------------------------------------------------- clusters and the linear probe
def cluster_purity(features, labels, k=data.N_CLASSES, iters=30, seed=0):
    """How well features separate the classes WITHOUT labels: k-means (nn.kmeans, Lloyd's from k-means++
    starts, on the raw features) groups the rows into k clusters; only then are the labels read, each
    cluster named by its most common label, and the purity is the share of rows whose cluster is named by
    their own label:

        purity = (1 / N) sum_clusters max_y |{j in cluster : y_j = y}|

    1 when every cluster holds one class; the share of the most common class when the features say nothing
    (one cluster). A float; `seed` fixes the k-means++ draws."""
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    rng = np.random.default_rng(seed)
    centroids, _ = nn.kmeans(f, k, iters=iters, rng=rng, start=nn.kmeans_plus_plus(f, k, rng))
    return assignment_purity(nn.squared_distances(f, centroids).argmin(axis=1), labels)


def assignment_purity(cluster, labels):
    """The purity of a grouping made without labels: cluster (N,) ints (a k-means cluster, a mixture
    component), each cluster named by its most common label, the share of rows whose cluster is named by
    their own label: (1 / N) sum_clusters max_y |{j in cluster : y_j = y}|. A float."""
    cluster, labels = np.asarray(cluster), np.asarray(labels)
    counts = np.zeros((int(cluster.max()) + 1, int(labels.max()) + 1), np.int64)
    np.add.at(counts, (cluster, labels), 1)                                      # (clusters, classes)
    return float(counts.max(axis=1).sum() / len(cluster))


def softmax_regression(train_f, train_y, test_f, test_y, steps=300, lr=0.05, l2=1e-4):
    """The linear probe: standardise the features with the train statistics, fit a softmax regression
    (zero-initialised, full-batch Adam, a convex problem) on the train features, return the test
    accuracy (a float)."""
    mu, sd = train_f.mean(axis=0), train_f.std(axis=0) + 1e-6
    a = Tensor(((train_f - mu) / sd).astype(np.float32))             # (N, D)
    b = Tensor(((test_f - mu) / sd).astype(np.float32))              # (M, D)
    probe = nn.Linear(a.shape[1], data.N_CLASSES)
    probe.weight.data[...] = 0
    probe.bias.data[...] = 0
    opt = optim.Adam(probe.parameters(), lr=lr)
    with enable_grad():
        for _ in range(steps):
            # loss = CE(softmax(W a + b), y) + l2 ||W||^2
            loss = F.cross_entropy(probe(a), train_y) + l2 * (probe.weight * probe.weight).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float((probe(b).numpy().argmax(axis=1) == np.asarray(test_y)).mean())
