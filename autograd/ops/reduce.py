"""Reductions: sum, mean, var, max, min, logsumexp (over an axis, several axes, or all)."""
from .. import backend
from ..function import Function, ShapeError
from ._util import expand_reduced, normalize_axis

__all__ = ["sum", "mean", "var", "max", "min", "logsumexp"]


class Sum(Function):
    op_name = "sum"

    def forward(self, a, axis, keepdims):
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):  # every summed element gets the gradient of the sum
        return expand_reduced(g, self.axes, self.keepdims, self.shape)


class Mean(Function):
    op_name = "mean"

    def forward(self, a, axis, keepdims):
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        self.count = 1
        for ax in self.axes:
            self.count *= a.shape[ax]
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return expand_reduced(g / g.dtype.type(self.count), self.axes, self.keepdims, self.shape)


class Var(Function):
    """var(a) = mean((a - mean(a))^2) * n / (n - ddof)."""
    op_name = "var"

    def forward(self, a, axis, keepdims, ddof):
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        n = 1
        for ax in self.axes:
            n *= a.shape[ax]
        # n <= ddof (var(ddof=1) of one element, or of none) has no estimate: NaN, as in NumPy and PyTorch
        self.denom = a.dtype.type(n - ddof) if n > ddof else a.dtype.type("nan")
        centered = a - a.mean(axis=self.axes, keepdims=True)
        self.save_for_backward(centered)
        return (centered * centered).sum(axis=self.axes, keepdims=keepdims) / self.denom

    def backward(self, g):  # d var / d a_i = 2 (a_i - mean) / (n - ddof)
        (centered,) = self.saved
        g = expand_reduced(g, self.axes, self.keepdims, self.shape)
        return g * centered * (2 / self.denom)


class _Extreme(Function):
    """max / min: the gradient goes to the extreme element(s), split evenly between ties."""

    def forward(self, a, axis, keepdims):
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        empty = [ax for ax in self.axes if a.shape[ax] == 0]
        if empty:  # the largest of nothing is undefined (PyTorch refuses too; NumPy's message names no op)
            raise ShapeError(f"{self.name()}: cannot reduce over axis {empty[0]} of size 0 (input {a.shape}): "
                             f"the {self.name()} of no elements is undefined")
        out = self.reduce(a, axis=self.axes, keepdims=True)
        # NaN propagates (the extreme of [1, nan] is nan) and its gradient goes to the NaN element(s), as
        # PyTorch's; a == out alone would pick nothing and give 0 / 0 = NaN everywhere
        xp = backend.xp_of(a)
        mask = (a == out) | (xp.isnan(a) & xp.isnan(out))
        self.save_for_backward(mask / mask.sum(axis=self.axes, keepdims=True).astype(a.dtype))
        return out if keepdims else out.squeeze(self.axes)

    def backward(self, g):
        return expand_reduced(g, self.axes, self.keepdims, self.shape) * self.saved[0]


class Max(_Extreme):
    op_name = "max"

    @staticmethod
    def reduce(a, **kw):
        return a.max(**kw)


class Min(_Extreme):
    op_name = "min"

    @staticmethod
    def reduce(a, **kw):
        return a.min(**kw)


class LogSumExp(Function):
    """logsumexp(a) = m + log sum exp(a - m), m = max(a): no overflow."""
    op_name = "logsumexp"

    def forward(self, a, axis, keepdims):
        xp = backend.xp_of(a)
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        if any(a.shape[ax] == 0 for ax in self.axes):  # log of an empty sum: -inf, as in PyTorch
            m = xp.zeros(tuple(1 if i in self.axes else n for i, n in enumerate(a.shape)), dtype=a.dtype)
        else:
            m = a.max(axis=self.axes, keepdims=True)
        # a slice of all -inf (or with +inf) has an infinite max: shifting by it would give -inf - -inf = NaN.
        # Shift by 0 there instead (as PyTorch and SciPy do): log(sum of zeros) = -inf, log(inf) = inf
        m = xp.where(xp.isinf(m), m.dtype.type(0), m)
        # exp(-inf) = 0 summed to 0: log(0) = -inf is the right answer, not a fault worth a warning
        total = xp.exp(a - m).sum(axis=self.axes, keepdims=True)
        nothing = total == 0
        out = xp.where(nothing, m.dtype.type("-inf"), m + xp.log(xp.where(nothing, total.dtype.type(1), total)))
        self.save_for_backward(a, out)
        return out if keepdims else out.squeeze(self.axes)

    def backward(self, g):  # d lse / d a_i = softmax(a)_i
        a, out = self.saved
        xp = backend.xp_of(a)
        # a slice of all -inf (lse = -inf): exp(-inf - -inf) would be NaN. Its elements add nothing to the
        # sum, so a change of one leaves it -inf: gradient 0, which adds up harmlessly with the gradients
        # of other paths (masked rows of attention, log-space dynamic programs). PyTorch gives NaN here.
        empty = out == out.dtype.type("-inf")
        softmax = xp.where(empty, a.dtype.type(0), xp.exp(a - xp.where(empty, out.dtype.type(0), out)))
        return expand_reduced(g, self.axes, self.keepdims, self.shape) * softmax


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def var(a, axis=None, keepdims=False, ddof=0):
    return Var.apply(a, axis=axis, keepdims=keepdims, ddof=ddof)


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axis=axis, keepdims=keepdims)


def min(a, axis=None, keepdims=False):
    return Min.apply(a, axis=axis, keepdims=keepdims)


def logsumexp(a, axis=None, keepdims=False):
    return LogSumExp.apply(a, axis=axis, keepdims=keepdims)
