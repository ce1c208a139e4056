"""Optimisers, gradient clipping, learning-rate schedules and an exponential moving average of weights.

    opt = optim.AdamW(model.parameters(), lr=1e-3)
    sched = optim.WarmupCosine(opt, warmup_steps=500, total_steps=10_000)
    ema = optim.EMA(model, decay=0.999)
    for batch in data:
        opt.zero_grad(); loss = model.loss(batch); loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); ema.update()
    with ema.average_parameters(model):
        samples = model.sample(64)

Updates happen in place on each parameter's array (NumPy or CuPy), one vectorised expression per
parameter, in the parameter's dtype (float32 stays float32). Parameters without a gradient are skipped.
Every state_dict() holds NumPy arrays and JSON-able scalars, so a checkpoint resumes exactly.
"""
import math
from contextlib import contextmanager

import numpy as np

from autograd import Tensor, backend

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "LambdaLR", "LinearWarmup", "CosineSchedule",
           "WarmupCosine", "EMA"]


def _to_numpy(a):
    return np.array(backend.to_numpy(a), copy=True)


def _like(value, p):
    """A saved (NumPy) array or scalar as an array on p's device, in p's dtype."""
    xp = backend.xp_of(p.data)
    return xp.asarray(np.asarray(backend.to_numpy(value), dtype=p.data.dtype))


# ---------------------------------------------------------------------- optimisers
class Optimizer:
    """Holds parameter groups: dicts {"params": [Parameter, ...], "lr": ..., <hyper-parameters>}.

    `params` is an iterable of Parameters (one group) or of dicts (one group each; keys missing in a
    dict take the optimiser's defaults). Per-parameter state (moments, step count) lives in self.state."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        seen = set()
        for g in groups:
            g = {**self.defaults, **g, "params": list(g["params"])}
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one place")
                seen.add(id(p))
            self.param_groups.append(g)
        self.state = {}  # Parameter -> dict of arrays and the step count

    @property
    def lr(self):
        """The first group's learning rate (set every group's with opt.lr = value)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = value

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self._params():
            p.grad = None

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if p.grad.dtype == p.data.dtype else p.grad.astype(p.data.dtype)
                self._update(p, g, group, self.state.setdefault(p, {"step": 0}))

    def _update(self, p, g, group, state):
        """Apply one update to parameter p with gradient g: each optimiser defines its rule here."""
        raise TypeError(f"{type(self).__name__} must define _update(p, g, group, state)")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """{"state": {"<index>": {"step": int, <name>: array}}, "param_groups": [{hyper-parameters,
        "params": [indices]}]}; parameters are numbered across the groups in order."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {str(index[id(p)]): {k: (_to_numpy(v) if hasattr(v, "shape") else v) for k, v in s.items()}
                 for p, s in self.state.items()}
        groups = [{**{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters, moments and step counts (refused if the parameters do not match)."""
        groups = state_dict["param_groups"]
        params = self._params()
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved groups hold "
                             f"{[len(g['params']) for g in groups]} parameters, this optimiser's {sizes}")
        new_state, problems = {}, []
        for key, s in state_dict.get("state", {}).items():
            p = params[int(key)]
            entry = {}
            for k, v in s.items():
                if k == "step":
                    entry[k] = int(v)
                elif np.shape(v) != tuple(p.shape):
                    problems.append(f"parameter {key} {k} {np.shape(v)} vs parameter {tuple(p.shape)}")
                else:
                    entry[k] = _like(v, p)
            new_state[p] = entry
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: mis-shaped state: " + "; ".join(problems))
        for g, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = tuple(v) if isinstance(v, list) else v
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's semantics:

        g = grad + weight_decay p
        b = momentum b + (1 - dampening) g      (b = g on the first step)
        g = g + momentum b  (nesterov)  or  b
        p = p - lr g"""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _update(self, p, g, group, state):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = g + wd * p.data
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                b = state["momentum_buffer"]
                b *= mu
                b += (1 - group["dampening"]) * g
            b = state["momentum_buffer"]
            g = g + mu * b if group["nesterov"] else b
        state["step"] += 1
        p.sub_(lr * g)  # in place: bumps p's version, so a graph built before this step cannot backward


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), weight decay as an L2 term added to the gradient (as PyTorch's Adam):

        g = grad + weight_decay p
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)"""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        xp = backend.xp_of(p.data)
        if wd and self.decoupled:
            # p = p - lr weight_decay p   (AdamW: decay not scaled by the adaptive denominator)
            p.mul_(1 - lr * wd)
        elif wd:
            g = g + wd * p.data
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(p.data), xp.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        denom = xp.sqrt(v)
        denom /= math.sqrt(1 - b2 ** t)
        denom += eps
        p.sub_((lr / (1 - b1 ** t)) * (m / denom))  # in place, version bumped (see autograd/tensor.py)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p = p - lr weight_decay p, then Adam."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm_(params, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the L2 norm of all of them together.
    Returns ||g|| (before clipping) as a float. Gradients are replaced, not modified in place."""
    params = [params] if isinstance(params, Tensor) else list(params)
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sq = [backend.xp_of(p.grad).sum(p.grad * p.grad, dtype=np.float32) for p in grads]
    total = math.sqrt(float(sum(sq)))  # one transfer from the device, not one per parameter
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in grads:
            p.grad = p.grad * p.grad.dtype.type(coef)
    return total


# ---------------------------------------------------------------------- learning-rate schedules
class LambdaLR:
    """lr of group i after `step` calls of step() = base_lr_i * factor(step); base_lr_i is the group's
    lr when the schedule is made. The factor for step 0 is applied at once. Call step() after
    optimizer.step()."""

    def __init__(self, optimizer, factor=None):
        self.optimizer = optimizer
        if factor is not None:
            self.factor = factor
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step):
        return 1.0

    def _apply(self):
        f = self.factor(self.last_step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def step(self):
        self.last_step += 1
        self._apply()

    def set_step(self, step):
        """Jump to `step` (the training loop sets it from its own step count, so resume needs no state)."""
        self.last_step = step
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict):
        self.last_step = int(state_dict["last_step"])
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self._apply()


def _cosine(progress, min_ratio):
    """min_ratio + (1 - min_ratio) (1 + cos(pi progress)) / 2, progress clipped to [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LinearWarmup(LambdaLR):
    """factor(s) = min(1, (s + 1) / warmup_steps): the first update uses lr / warmup_steps."""

    def __init__(self, optimizer, warmup_steps):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer)

    def factor(self, step):
        return min(1.0, (step + 1) / max(1, self.warmup_steps))


class CosineSchedule(LambdaLR):
    """factor(s) = r + (1 - r) (1 + cos(pi s / total_steps)) / 2, r = min_lr_ratio (then r after total_steps)."""

    def __init__(self, optimizer, total_steps, min_lr_ratio=0.0):
        self.total_steps, self.min_lr_ratio = total_steps, min_lr_ratio
        super().__init__(optimizer)

    def factor(self, step):
        return _cosine(step / max(1, self.total_steps), self.min_lr_ratio)


class WarmupCosine(LambdaLR):
    """Linear warmup for warmup_steps ((s + 1) / warmup_steps), then a cosine decay to min_lr_ratio
    at total_steps: factor(s) = r + (1 - r) (1 + cos(pi (s - W) / (total_steps - W))) / 2."""

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.0):
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer)

    def factor(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return _cosine((step - self.warmup_steps) / span, self.min_lr_ratio)


# ---------------------------------------------------------------------- EMA of weights
class EMA:
    """Exponential moving average of a model's parameters (for sampling from diffusion models, GANs):

        shadow = decay shadow + (1 - decay) param      after every update()

    Buffers (e.g. BatchNorm statistics) are copied, not averaged, and so are frozen parameters
    (requires_grad False: a trained stage a model builds on, which the average would move by rounding,
    d p + (1 - d) p != p in float32). The shadow starts as a copy of the model. `with ema.average_parameters(model):` swaps the averages in and restores the weights after.

    warmup=True: the n-th update (n = 0, 1, ...) uses decay_n = min(decay, (1 + n) / (10 + n)), so that a
    short run averages over the steps it has instead of staying near its initial weights."""

    def __init__(self, model, decay=0.999, warmup=False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1], got {decay}")
        self.model, self.decay, self.warmup, self.num_updates = model, decay, bool(warmup), 0
        self.shadow = {n: p.data.copy() for n, p in model.named_parameters()}
        self.buffers = {n: b.copy() for n, b in model.named_buffers()}

    def _check(self, model):
        names = {n for n, _ in model.named_parameters()}
        if names != set(self.shadow):
            raise ValueError(f"EMA: the model's parameters differ from the averaged ones: missing "
                             f"{sorted(set(self.shadow) - names)}, unexpected {sorted(names - set(self.shadow))}")

    def current_decay(self):
        """The decay the next update() uses: decay, or with warmup min(decay, (1 + n) / (10 + n))."""
        n = self.num_updates
        # decay_n = min(d, (1 + n) / (10 + n))
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def update(self, model=None):
        model = model if model is not None else self.model
        d = self.current_decay()
        for n, p in model.named_parameters():
            s = self.shadow[n]
            if backend.device_of(s) != backend.device_of(p.data):  # the model moved to another device
                s = self.shadow[n] = backend.to_device(s, backend.device_of(p.data))
            if not p.requires_grad:  # frozen: kept as it is
                s[...] = p.data
                continue
            s *= d
            s += (1 - d) * p.data
        self.buffers = {n: b.copy() for n, b in model.named_buffers()}
        self.num_updates += 1

    def copy_to(self, model=None):
        """Write the averaged parameters (and the buffers) into model, in place."""
        model = model if model is not None else self.model
        self._check(model)
        for n, p in model.named_parameters():
            p.data[...] = backend.xp_of(p.data).asarray(self.shadow[n])
        own = dict(model.named_buffers())
        for n, b in self.buffers.items():
            if n in own:
                own[n][...] = backend.xp_of(own[n]).asarray(b)

    @contextmanager
    def average_parameters(self, model=None):
        """Use the averaged weights inside the block; the trained weights come back after it."""
        model = model if model is not None else self.model
        saved_p = {n: p.data.copy() for n, p in model.named_parameters()}
        saved_b = {n: b.copy() for n, b in model.named_buffers()}
        self.copy_to(model)
        try:
            yield model
        finally:
            for n, p in model.named_parameters():
                p.data[...] = saved_p[n]
            for n, b in model.named_buffers():
                b[...] = saved_b[n]

    def to(self, device):
        self.shadow = {n: backend.to_device(s, device) for n, s in self.shadow.items()}
        self.buffers = {n: backend.to_device(b, device) for n, b in self.buffers.items()}
        return self

    def state_dict(self):
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {n: _to_numpy(s) for n, s in self.shadow.items()},
                "buffers": {n: _to_numpy(b) for n, b in self.buffers.items()}}

    def load_state_dict(self, state_dict):
        shadow = state_dict["shadow"]
        wrong = sorted(set(shadow) ^ set(self.shadow))
        wrong += [f"{n} {np.shape(v)} vs {tuple(self.shadow[n].shape)}" for n, v in shadow.items()
                  if n in self.shadow and np.shape(v) != tuple(self.shadow[n].shape)]
        if wrong:
            raise ValueError(f"EMA.load_state_dict: entries that do not match the model: {wrong}")
        self.num_updates = int(state_dict["num_updates"])
        if "warmup" in state_dict:
            self.decay, self.warmup = float(state_dict["decay"]), bool(state_dict["warmup"])
        elif not self.warmup:
            self.decay = float(state_dict["decay"])
        # else: a checkpoint older than the option, of a model that warmed up by hand, holds the warm-up's
        # last decay_n in "decay"; the recipe's decay given to this EMA is the one to keep
        for n, v in shadow.items():
            s = self.shadow[n]
            s[...] = backend.xp_of(s).asarray(np.asarray(backend.to_numpy(v), dtype=s.dtype))
        for n, v in state_dict.get("buffers", {}).items():
            if n in self.buffers:
                b = self.buffers[n]
                b[...] = backend.xp_of(b).asarray(np.asarray(backend.to_numpy(v), dtype=b.dtype))
