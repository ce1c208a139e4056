"""Reductions: sum, mean, var, max, min, logsumexp (over an axis, several axes, or all)."""
from .. import backend
from ..function import Function
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
        self.denom = n - ddof
        centered = a - a.mean(axis=self.axes, keepdims=True)
        self.save_for_backward(centered)
        return (centered * centered).sum(axis=self.axes, keepdims=keepdims) / a.dtype.type(self.denom)

    def backward(self, g):  # d var / d a_i = 2 (a_i - mean) / (n - ddof)
        (centered,) = self.saved
        g = expand_reduced(g, self.axes, self.keepdims, self.shape)
        return g * centered * centered.dtype.type(2 / self.denom)


class _Extreme(Function):
    """max / min: the gradient goes to the extreme element(s), split evenly between ties."""

    def forward(self, a, axis, keepdims):
        self.axes, self.keepdims, self.shape = normalize_axis(axis, a.ndim, self.name()), keepdims, a.shape
        out = self.reduce(a, axis=self.axes, keepdims=True)
        mask = a == out
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
        m = a.max(axis=self.axes, keepdims=True)
        out = m + xp.log(xp.exp(a - m).sum(axis=self.axes, keepdims=True))
        self.save_for_backward(a, out)
        return out if keepdims else out.squeeze(self.axes)

    def backward(self, g):  # d lse / d a_i = softmax(a)_i
        a, out = self.saved
        softmax = backend.xp_of(a).exp(a - out)
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
