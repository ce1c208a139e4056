"""Losses, named as in torch.nn.functional:

    cross_entropy, nll_loss                    classification (class axis 1, ignore_index, label smoothing);
                                               cross_entropy fuses log-softmax and the negative log-likelihood
    binary_cross_entropy(_with_logits)         two-class losses (on probabilities, or stably on logits)
    mse_loss, l1_loss                          regression losses

Each takes reduction = 'mean' (the default), 'sum' or 'none' (the per-element losses). The options
after the two operands are keyword-only: PyTorch has arguments before them that these functions
do not take (weight, and the deprecated size_average and reduce), so a positional call written for
PyTorch would mean something else here; as keywords they mean the same in both.
"""
from .. import backend
from ..function import Function, ShapeError
from ..tensor import Tensor
from ._util import as_tensor, index_array
from .reduce import mean, sum as sum_

__all__ = ["cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy", "mse_loss",
           "l1_loss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------- reductions
def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss, reduction):
    """Apply a loss reduction to a Tensor of per-element losses."""
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum_(loss)
    return loss


# ---------------------------------------------------------------------- classification losses
def _classes_last(name, x, target):
    """x of shape (C,), (B, C) or (B, C, d1, ...) -> (N, C) with the class axis last, and the target
    flattened to (N,). Checks that the target has shape (), (B,) or (B, d1, ...)."""
    xp = backend.xp_of(x)
    if x.ndim == 0:
        raise ShapeError(f"{name}: input must have a class axis, got a scalar")
    expected = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
    if tuple(target.shape) != expected:
        layout = "(C,)" if x.ndim == 1 else "(B, C)" if x.ndim == 2 else "(B, C, d1, ...)"
        raise ShapeError(f"{name}: input {layout} = {tuple(x.shape)} needs a target of shape {expected}, "
                         f"got {tuple(target.shape)}")
    C = x.shape[-1] if x.ndim == 1 else x.shape[1]
    x2 = x.reshape(1, C) if x.ndim == 1 else xp.moveaxis(x, 1, -1).reshape(-1, C)
    return x2, target.reshape(-1)


def _classes_back(grad2, shape):
    """Inverse of _classes_last for a gradient of shape (N, C)."""
    xp = backend.xp_of(grad2)
    if len(shape) <= 2:
        return grad2.reshape(shape)
    return xp.moveaxis(grad2.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],)), -1, 1)


def _check_targets(name, t, valid, C):
    bad = valid & ((t < 0) | (t >= C))
    if bool(bad.any()):
        raise IndexError(f"{name}: target values must lie in [0, {C}) (or equal ignore_index), "
                         f"got {int(t[bad].reshape(-1)[0])}")


def _row_weights(g, valid, count, reduction, dtype):
    """How much each row's loss counts in the reduced output, times the incoming gradient g."""
    w = valid.astype(dtype)
    if reduction == "none":
        return w * g.reshape(-1)
    if reduction == "mean":
        return w * (g / count)
    return w * g


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over the class axis.

    loss_i = -(1 - eps) log p_{i, t_i} - (eps / C) sum_c log p_{ic},  p_i = softmax(z_i),
    and 0 for rows whose target is ignore_index; 'mean' divides by the number of rows not ignored.
    Backward: dL/dz_ic = w_i (p_ic - (1 - eps) [c == t_i] - eps / C), w_i the row's weight."""
    op_name = "cross_entropy"

    def forward(self, logits, target, ignore_index, label_smoothing, reduction):
        xp = backend.xp_of(logits)
        z, t = _classes_last(self.name(), logits, target)
        N, C = z.shape
        valid = t != ignore_index
        _check_targets(self.name(), t, valid, C)
        t = xp.where(valid, t, 0)
        rows = xp.arange(N)
        eps = label_smoothing
        # log p = (z - m) - log sum exp(z - m),  m = max_c z_c
        logp = z - z.max(axis=1, keepdims=True)
        logp -= xp.log(xp.exp(logp).sum(axis=1, keepdims=True))
        # loss_i = -(1 - eps) log p_{i,t_i} - (eps / C) sum_c log p_ic
        loss = -(1 - eps) * logp[rows, t]
        if eps > 0:
            loss -= (eps / C) * logp.sum(axis=1)
        loss = xp.where(valid, loss, loss.dtype.type(0))
        count = valid.sum().astype(logits.dtype)
        self.save_for_backward(logp, t, valid, count)
        self.shape, self.eps, self.reduction = logits.shape, eps, reduction
        if reduction == "none":
            return loss.reshape(target.shape)
        # mean over the rows not ignored (NaN when every row is ignored, as in PyTorch)
        return xp.asarray(loss.sum() / count if reduction == "mean" else loss.sum())

    def backward(self, g):
        logp, t, valid, count = self.saved
        xp = backend.xp_of(logp)
        N, C = logp.shape
        # dL/dz_ic = w_i (p_ic - (1 - eps) [c == t_i] - eps / C)
        grad = xp.exp(logp)
        grad[xp.arange(N), t] -= 1 - self.eps
        if self.eps > 0:
            grad -= self.eps / C
        grad *= _row_weights(g, valid, count, self.reduction, grad.dtype)[:, None]
        return _classes_back(grad, self.shape)


class NLLLoss(Function):
    """loss_i = -x_{i, t_i} (x holds log-probabilities), 0 where t_i == ignore_index.
    Backward: dL/dx_ic = -w_i [c == t_i]."""
    op_name = "nll_loss"

    def forward(self, logp, target, ignore_index, reduction):
        xp = backend.xp_of(logp)
        x, t = _classes_last(self.name(), logp, target)
        N, C = x.shape
        valid = t != ignore_index
        _check_targets(self.name(), t, valid, C)
        t = xp.where(valid, t, 0)
        # loss_i = -log p_{i, t_i}
        loss = xp.where(valid, -x[xp.arange(N), t], x.dtype.type(0))
        count = valid.sum().astype(logp.dtype)
        self.save_for_backward(t, valid, count)
        self.shape, self.dtype, self.reduction = logp.shape, logp.dtype, reduction
        if reduction == "none":
            return loss.reshape(target.shape)
        return xp.asarray(loss.sum() / count if reduction == "mean" else loss.sum())

    def backward(self, g):
        t, valid, count = self.saved
        xp = backend.xp_of(t)
        N = t.shape[0]
        C = self.shape[0] if len(self.shape) == 1 else self.shape[1]
        grad = xp.zeros((N, C), dtype=self.dtype)
        # dL/dx_{i, t_i} = -w_i
        grad[xp.arange(N), t] = -_row_weights(g, valid, count, self.reduction, self.dtype)
        return _classes_back(grad, self.shape)


def cross_entropy(logits, target, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of integer class targets under softmax(logits), as F.cross_entropy:

        loss_i = -(1 - eps) log softmax(z_i)_{t_i} - (eps / C) sum_c log softmax(z_i)_c,

    logits (C,), (B, C) or (B, C, d1, ...) with the classes on axis 1, target (), (B,) or (B, d1, ...)
    (a Tensor or an integer array). Rows with target == ignore_index count for nothing; 'mean' averages
    over the rest (so it is NaN when every target is ignored, as in PyTorch). eps = label_smoothing."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    t = index_array(target, logits, "cross_entropy", "target")
    return CrossEntropy.apply(logits, target=t, ignore_index=ignore_index, label_smoothing=float(label_smoothing),
                              reduction=reduction)


def nll_loss(log_probs, target, *, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood loss_i = -log_probs_{i, t_i}, as F.nll_loss (classes on axis 1;
    rows with target == ignore_index are left out, also from the 'mean')."""
    _check_reduction("nll_loss", reduction)
    t = index_array(target, log_probs, "nll_loss", "target")
    return NLLLoss.apply(log_probs, target=t, ignore_index=ignore_index, reduction=reduction)


class BCEWithLogits(Function):
    """Per element: l = max(x, 0) - x t + log(1 + exp(-|x|))  (= -t log s(x) - (1 - t) log(1 - s(x))).
    Backward: dl/dx = sigmoid(x) - t,  dl/dt = -x."""
    op_name = "binary_cross_entropy_with_logits"

    def forward(self, x, t):
        xp = backend.xp_of(x)
        self.save_for_backward(x, t)
        # l = max(x, 0) - x t + log(1 + exp(-|x|))
        return xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        x, t = self.saved
        xp = backend.xp_of(x)
        # dl/dx = sigmoid(x) - t, sigmoid written with tanh so that it cannot overflow
        gx = g * (0.5 * (1 + xp.tanh(0.5 * x)) - t) if self.needs_input_grad[0] else None
        # dl/dt = -x
        gt = -g * x if self.needs_input_grad[1] else None
        return gx, gt


class BCE(Function):
    """Per element: l = -(t log p + (1 - t) log(1 - p)), each log clamped at -100 (as PyTorch).
    Backward: dl/dp = (p - t) / max(p (1 - p), 1e-12),  dl/dt = log(1 - p) - log p."""
    op_name = "binary_cross_entropy"

    def forward(self, p, t):
        xp = backend.xp_of(p)
        # outside [0, 1] (or NaN) a log below would be NaN and the loss a plausible-looking NaN mean: refuse,
        # as PyTorch does; probabilities usually come from a sigmoid that overflowed, or logits passed by mistake
        for what, a in (("input", p), ("target", t)):
            outside = ~((a >= 0) & (a <= 1))
            if bool(outside.any()):
                raise ValueError(f"{self.name()}: all elements of {what} should be between 0 and 1, got "
                                 f"{a[outside].reshape(-1)[0].item()} (use binary_cross_entropy_with_logits on "
                                 f"logits)")
        floor, one = p.dtype.type(-100), p.dtype.type(1)
        # log p and log(1 - p), clamped at -100 (taken of 1 where p is 0 or 1, so that nothing warns)
        log_p = xp.where(p > 0, xp.maximum(xp.log(xp.where(p > 0, p, one)), floor), floor)
        log_q = xp.where(p < 1, xp.maximum(xp.log1p(-xp.where(p < 1, p, 0)), floor), floor)
        self.save_for_backward(p, t, log_p, log_q)
        # l = -(t log p + (1 - t) log(1 - p))
        return -(t * log_p + (1 - t) * log_q)

    def backward(self, g):
        p, t, log_p, log_q = self.saved
        xp = backend.xp_of(p)
        # dl/dp = -t/p + (1 - t)/(1 - p) = (p - t) / (p (1 - p))
        gp = g * (p - t) / xp.maximum(p * (1 - p), p.dtype.type(1e-12)) if self.needs_input_grad[0] else None
        # dl/dt = log(1 - p) - log p
        gt = g * (log_q - log_p) if self.needs_input_grad[1] else None
        return gp, gt


class SquaredError(Function):
    """l = (a - b)^2 per element.  Backward: dl/da = 2 (a - b) = -dl/db."""
    op_name = "mse_loss"

    def forward(self, a, b):
        d = a - b
        self.save_for_backward(d)
        # l = (a - b)^2
        return d * d

    def backward(self, g):
        (d,) = self.saved
        # dl/da = 2 (a - b)
        ga = 2 * g * d
        return ga, (-ga if self.needs_input_grad[1] else None)


class AbsoluteError(Function):
    """l = |a - b| per element.  Backward: dl/da = sign(a - b) = -dl/db (0 at a == b)."""
    op_name = "l1_loss"

    def forward(self, a, b):
        d = a - b
        self.save_for_backward(backend.xp_of(d).sign(d))
        # l = |a - b|
        return backend.xp_of(d).abs(d)

    def backward(self, g):
        (s,) = self.saved
        ga = g * s
        return ga, (-ga if self.needs_input_grad[1] else None)


def _pairwise_loss(cls, a, b, reduction):
    name = cls.name()
    _check_reduction(name, reduction)
    b = b if isinstance(b, Tensor) else as_tensor(b, a)
    if tuple(a.shape) != tuple(b.shape):
        # a silent broadcast of (B, 1) against (B,) is a classic bug: the shapes must agree
        raise ShapeError(f"{name}: input {tuple(a.shape)} and target {tuple(b.shape)} must have the same shape")
    return _reduce(cls.apply(a, b), reduction)


def binary_cross_entropy_with_logits(logits, target, *, reduction="mean"):
    """l = -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), computed stably as
    max(x, 0) - x t + log(1 + exp(-|x|)). target (same shape, in [0, 1]) may be a Tensor or array."""
    return _pairwise_loss(BCEWithLogits, logits, target, reduction)


def binary_cross_entropy(probs, target, *, reduction="mean"):
    """l = -(t log p + (1 - t) log(1 - p)), the logs clamped at -100 so that p in {0, 1} stays finite.
    probs and target must lie in [0, 1] (a ValueError otherwise, as in PyTorch)."""
    return _pairwise_loss(BCE, probs, target, reduction)


def mse_loss(input, target, *, reduction="mean"):
    """l = (input - target)^2, reduced by 'mean', 'sum' or 'none'. Shapes must match."""
    return _pairwise_loss(SquaredError, input, target, reduction)


def l1_loss(input, target, *, reduction="mean"):
    """l = |input - target|, reduced by 'mean', 'sum' or 'none'. Shapes must match."""
    return _pairwise_loss(AbsoluteError, input, target, reduction)
