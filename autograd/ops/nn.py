"""Neural-network ops, named as in torch.nn.functional:

    softmax, log_softmax                       normalised exponentials (stable, closed-form backward)
    cross_entropy, nll_loss                    classification losses (class axis 1, ignore_index, smoothing)
    binary_cross_entropy(_with_logits)         two-class losses
    mse_loss, l1_loss                          regression losses
    layer_norm, group_norm, batch_norm         normalisations, each one Function with the closed-form backward
    dropout, embedding, one_hot                the small pieces of a network
    scaled_dot_product_attention               softmax(q k^T / sqrt(d) + mask) v, fused
    gumbel_softmax                             differentiable samples from a categorical

The normalisations share one backward. With xhat = (x - mu) / sigma over a group of n elements and
g = dL/dxhat, the derivative through mu and sigma gives

    dL/dx = (1 / sigma) (g - mean(g) - xhat * mean(g * xhat)).

Random ops take `rng`, a NumPy (or CuPy) Generator; without one they draw a fresh generator of the
array module. Their samples are drawn in the input's dtype and moved to the input's device.
"""
import math

from .. import backend
from ..function import Function, ShapeError, broadcast_shapes
from ..tensor import Tensor
from ._util import as_tensor, normalize_axis
from .elementwise import add, div
from .reduce import mean, sum as sum_

__all__ = ["softmax", "log_softmax", "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
           "binary_cross_entropy", "mse_loss", "l1_loss", "layer_norm", "group_norm", "batch_norm", "dropout",
           "embedding", "one_hot", "scaled_dot_product_attention", "gumbel_softmax"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------- helpers
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


def _index_array(indices, like, name, what="indices"):
    """An integer index (Tensor, array or list) as a raw array on `like`'s device."""
    xp = backend.xp_of(like.data)
    data = indices.data if isinstance(indices, Tensor) else indices
    data = xp.asarray(data)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{name}: {what} must be integers, got dtype {data.dtype}")
    return data


def _float_dtype(xp, dtype):
    """The dtype to draw random numbers in: the input's, if the generators support it."""
    return dtype if dtype.kind == "f" and dtype.itemsize in (4, 8) else xp.float32


def _uniform(xp, rng, shape, dtype):
    """U[0, 1) samples of `shape` from `rng` (a fresh xp Generator when None), on xp's device."""
    rng = rng if rng is not None else xp.random.default_rng()
    return xp.asarray(rng.random(shape, dtype=_float_dtype(xp, dtype)))


def _normalized_grad(gxhat, xhat, rstd, axes):
    """dL/dx = (1/sigma) (g - mean(g) - xhat mean(g xhat)), means over the normalised `axes`."""
    # dL/dx = (1/sigma) (g - mean(g) - xhat * mean(g * xhat))
    return rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                   - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))


def _optional_params(name, weight, bias, shape):
    """The affine parameters that are given, checked against `shape`, and which ones they are."""
    params = []
    for what, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(p).__name__}")
        if tuple(p.shape) != tuple(shape):
            raise ShapeError(f"{name}: {what} of shape {tuple(p.shape)}, expected {tuple(shape)}")
        params.append(p)
    return params, weight is not None, bias is not None


# ---------------------------------------------------------------------- softmax
class Softmax(Function):
    """y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j  (the shift changes nothing but overflow).
    Backward: dL/dx_i = y_i (g_i - sum_j g_j y_j)."""
    op_name = "softmax"

    def forward(self, x, axis):
        xp = backend.xp_of(x)
        self.axis = axis
        # y = exp(x - max x) / sum exp(x - max x)
        y = xp.exp(x - x.max(axis=axis, keepdims=True))
        y /= y.sum(axis=axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        # dL/dx = y (g - sum(g y))
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_i = x_i - m - log sum_j exp(x_j - m).  Backward: dL/dx_i = g_i - softmax(x)_i sum_j g_j."""
    op_name = "log_softmax"

    def forward(self, x, axis):
        xp = backend.xp_of(x)
        self.axis = axis
        y = x - x.max(axis=axis, keepdims=True)
        # log softmax(x) = (x - m) - log sum exp(x - m)
        y -= xp.log(xp.exp(y).sum(axis=axis, keepdims=True))
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        # dL/dx = g - exp(y) sum(g)
        return g - backend.xp_of(y).exp(y) * g.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `axis` (computed with the max subtracted).
    A slice that is entirely -inf gives NaN, as in PyTorch."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log_softmax(x)_i = x_i - log sum_j exp(x_j) along `axis` (stable)."""
    return LogSoftmax.apply(x, axis=axis)


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


def cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of integer class targets under softmax(logits), as F.cross_entropy:

        loss_i = -(1 - eps) log softmax(z_i)_{t_i} - (eps / C) sum_c log softmax(z_i)_c,

    logits (C,), (B, C) or (B, C, d1, ...) with the classes on axis 1, target (), (B,) or (B, d1, ...)
    (a Tensor or an integer array). Rows with target == ignore_index count for nothing; 'mean' averages
    over the rest (so it is NaN when every target is ignored, as in PyTorch). eps = label_smoothing."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    t = _index_array(target, logits, "cross_entropy", "target")
    return CrossEntropy.apply(logits, target=t, ignore_index=ignore_index, label_smoothing=float(label_smoothing),
                              reduction=reduction)


def nll_loss(log_probs, target, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood loss_i = -log_probs_{i, t_i}, as F.nll_loss (classes on axis 1;
    rows with target == ignore_index are left out, also from the 'mean')."""
    _check_reduction("nll_loss", reduction)
    t = _index_array(target, log_probs, "nll_loss", "target")
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


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """l = -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), computed stably as
    max(x, 0) - x t + log(1 + exp(-|x|)). target (same shape, in [0, 1]) may be a Tensor or array."""
    return _pairwise_loss(BCEWithLogits, logits, target, reduction)


def binary_cross_entropy(probs, target, reduction="mean"):
    """l = -(t log p + (1 - t) log(1 - p)), the logs clamped at -100 so that p in {0, 1} stays finite."""
    return _pairwise_loss(BCE, probs, target, reduction)


def mse_loss(input, target, reduction="mean"):
    """l = (input - target)^2, reduced by 'mean', 'sum' or 'none'. Shapes must match."""
    return _pairwise_loss(SquaredError, input, target, reduction)


def l1_loss(input, target, reduction="mean"):
    """l = |input - target|, reduced by 'mean', 'sum' or 'none'. Shapes must match."""
    return _pairwise_loss(AbsoluteError, input, target, reduction)


# ---------------------------------------------------------------------- normalisation
def _affine_grads(fn, g, xhat, axes):
    """Gradients of the affine part y = xhat * w + b of a normalisation (layer or group norm):
    dL/dw = sum(g xhat),  dL/db = sum(g)  over every axis the parameters are broadcast along.
    Returns the (weight, bias) gradients that `fn` has, None where not needed."""
    grads, i = [], 1
    if fn.has_weight:
        grads.append((g * xhat).sum(axis=axes) if fn.needs_input_grad[i] else None)
        i += 1
    if fn.has_bias:
        grads.append(g.sum(axis=axes) if fn.needs_input_grad[i] else None)
    return tuple(grads)


class LayerNorm(Function):
    """y = xhat w + b,  xhat = (x - mu) / sqrt(var + eps), mu and var over the last k axes.
    Backward: dx by the closed form in the module docstring with g = dL/dy w;
    dw = sum over the leading axes of dL/dy xhat, db = sum over them of dL/dy."""
    op_name = "layer_norm"

    def forward(self, x, *params, k, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        w = params[0] if has_weight else None
        b = params[-1] if has_bias else None
        self.axes = tuple(range(x.ndim - k, x.ndim))
        self.lead = tuple(range(x.ndim - k))
        self.has_weight, self.has_bias = has_weight, has_bias
        mu = x.mean(axis=self.axes, keepdims=True)
        xc = x - mu
        # 1 / sigma = 1 / sqrt(mean((x - mu)^2) + eps)
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=self.axes, keepdims=True) + eps)
        # xhat = (x - mu) / sigma
        xhat = xc * rstd
        self.save_for_backward(xhat, rstd, w)
        # y = xhat w + b
        y = xhat * w if w is not None else xhat.copy()
        if b is not None:
            y += b
        return y

    def backward(self, g):
        xhat, rstd, w = self.saved
        grads = []
        if self.needs_input_grad[0]:
            grads.append(_normalized_grad(g * w if w is not None else g, xhat, rstd, self.axes))
        else:
            grads.append(None)
        return tuple(grads) + _affine_grads(self, g, xhat, self.lead)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, the statistics over the last
    len(normalized_shape) axes (biased variance); weight and bias have shape normalized_shape."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != shape:
        raise ShapeError(f"layer_norm: normalized_shape {shape} does not match the last axes of input "
                         f"{tuple(x.shape)}")
    params, has_w, has_b = _optional_params("layer_norm", weight, bias, shape)
    return LayerNorm.apply(x, *params, k=k, has_weight=has_w, has_bias=has_b, eps=eps)


class GroupNorm(Function):
    """x of shape (B, C, *spatial) viewed as (B, G, C/G * prod(spatial)); each group is normalised,
    then y = xhat w_c + b_c per channel. Backward: the closed form over each group; dw_c and db_c sum
    dL/dy xhat and dL/dy over every axis but the channel axis."""
    op_name = "group_norm"

    def forward(self, x, *params, groups, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        B, C = x.shape[:2]
        pshape = (C,) + (1,) * (x.ndim - 2)
        w = params[0].reshape(pshape) if has_weight else None
        b = params[-1].reshape(pshape) if has_bias else None
        self.shape, self.groups = x.shape, groups
        self.sum_axes = (0,) + tuple(range(2, x.ndim))
        self.has_weight, self.has_bias = has_weight, has_bias
        xg = x.reshape(B, groups, -1)
        xc = xg - xg.mean(axis=2, keepdims=True)
        # 1 / sigma = 1 / sqrt(mean over the group of (x - mu)^2 + eps)
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=2, keepdims=True) + eps)
        # xhat = (x - mu) / sigma, back in the input's shape
        xhat = (xc * rstd).reshape(x.shape)
        self.save_for_backward(xhat, rstd, w)
        # y = xhat w_c + b_c
        y = xhat * w if w is not None else xhat.copy()
        if b is not None:
            y += b
        return y

    def backward(self, g):
        xhat, rstd, w = self.saved
        B = self.shape[0]
        grads = [None]
        if self.needs_input_grad[0]:
            gxhat = (g * w if w is not None else g).reshape(B, self.groups, -1)
            grads[0] = _normalized_grad(gxhat, xhat.reshape(B, self.groups, -1), rstd, (2,)).reshape(self.shape)
        return tuple(grads) + _affine_grads(self, g, xhat, self.sum_axes)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """F.group_norm: for x of shape (B, C, *spatial) split the channels into num_groups groups,
    normalise each (sample, group) by its mean and biased variance, then y = xhat * weight_c + bias_c."""
    if x.ndim < 2:
        raise ShapeError(f"group_norm: input must be (B, C, *spatial), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if num_groups <= 0 or C % num_groups != 0:
        raise ShapeError(f"group_norm: num_groups={num_groups} does not divide the {C} channels of input "
                         f"{tuple(x.shape)}")
    params, has_w, has_b = _optional_params("group_norm", weight, bias, (C,))
    return GroupNorm.apply(x, *params, groups=num_groups, has_weight=has_w, has_bias=has_b, eps=eps)


class BatchNorm(Function):
    """Per channel c over the batch (and spatial) axes: y = xhat w_c + b_c, xhat = (x - mu_c) / sigma_c.
    Training: mu, sigma from the batch, backward by the closed form over those axes.
    Evaluation: mu, sigma from the running statistics (constants): dL/dx = dL/dy w / sigma."""
    op_name = "batch_norm"

    def forward(self, x, *params, running_mean, running_var, training, momentum, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        C = x.shape[1]
        pshape = (C,) + (1,) * (x.ndim - 2)
        w = params[0].reshape(pshape) if has_weight else None
        b = params[-1].reshape(pshape) if has_bias else None
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.training, self.has_weight, self.has_bias = training, has_weight, has_bias
        if training:
            n = x.size // C
            mu = x.mean(axis=self.axes, keepdims=True)
            xc = x - mu
            var = (xc * xc).mean(axis=self.axes, keepdims=True)
            if running_mean is not None:
                # running_mean <- (1 - momentum) running_mean + momentum mu
                running_mean[...] = (1 - momentum) * running_mean + momentum * mu.reshape(C)
            if running_var is not None:
                # running_var <- (1 - momentum) running_var + momentum var n / (n - 1)   (unbiased)
                running_var[...] = (1 - momentum) * running_var + momentum * var.reshape(C) * (n / (n - 1))
        else:
            xc = x - running_mean.reshape(pshape).astype(x.dtype)
            var = running_var.reshape(pshape).astype(x.dtype)
        # 1 / sigma = 1 / sqrt(var + eps)
        rstd = 1 / xp.sqrt(var + eps)
        # xhat = (x - mu) / sigma
        xhat = xc * rstd
        self.save_for_backward(xhat, rstd, w)
        # y = xhat w_c + b_c
        y = xhat * w if w is not None else xhat.copy()
        if b is not None:
            y += b
        return y

    def backward(self, g):
        xhat, rstd, w = self.saved
        grads = [None]
        if self.needs_input_grad[0]:
            gxhat = g * w if w is not None else g
            # training: the closed form through the batch statistics; eval: dL/dx = g / sigma
            grads[0] = _normalized_grad(gxhat, xhat, rstd, self.axes) if self.training else gxhat * rstd
        i = 1
        # dL/dw = sum(g xhat),  dL/db = sum(g)  over every axis the parameters are broadcast along
        if self.has_weight:
            grads.append((g * xhat).sum(axis=self.axes) if self.needs_input_grad[i] else None)
            i += 1
        if self.has_bias:
            grads.append(g.sum(axis=self.axes) if self.needs_input_grad[i] else None)
        return tuple(grads)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True, momentum=0.1, eps=1e-5):
    """F.batch_norm for x of shape (B, C) or (B, C, *spatial): y = (x - mu_c) / sqrt(var_c + eps) * w_c + b_c.

    training=True: mu, var are the batch statistics (biased var), and running_mean / running_var
    (arrays or Tensors of shape (C,), or None) are updated IN PLACE:
        running_mean <- (1 - momentum) running_mean + momentum mu
        running_var  <- (1 - momentum) running_var + momentum var n / (n - 1)   (unbiased, n = B * H * W)
    training=False: mu, var are running_mean and running_var (which must then be given).
    The running statistics are never differentiated."""
    name = "batch_norm"
    if x.ndim < 2:
        raise ShapeError(f"{name}: input must be (B, C) or (B, C, *spatial), got shape {tuple(x.shape)}")
    C = x.shape[1]
    stats = []
    for what, s in (("running_mean", running_mean), ("running_var", running_var)):
        s = s.data if isinstance(s, Tensor) else s
        if s is not None and tuple(s.shape) != (C,):
            raise ShapeError(f"{name}: {what} of shape {tuple(s.shape)}, expected ({C},) for input {tuple(x.shape)}")
        stats.append(s)
    if training and x.size // C <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got input of shape "
                         f"{tuple(x.shape)}")
    if not training and (stats[0] is None or stats[1] is None):
        raise ValueError(f"{name}: evaluation (training=False) needs running_mean and running_var")
    params, has_w, has_b = _optional_params(name, weight, bias, (C,))
    return BatchNorm.apply(x, *params, running_mean=stats[0], running_var=stats[1], training=training,
                           momentum=momentum, has_weight=has_w, has_bias=has_b, eps=eps)


# ---------------------------------------------------------------------- dropout, embedding, one_hot
class Dropout(Function):
    """y = x m / (1 - p), m_i ~ Bernoulli(1 - p) (inverted dropout: E[y] = x).  Backward: g m / (1 - p)."""
    op_name = "dropout"

    def forward(self, x, p, rng):
        xp = backend.xp_of(x)
        # m / (1 - p), m_i = [u_i >= p], u_i ~ U[0, 1)
        scale = (_uniform(xp, rng, x.shape, x.dtype) >= p).astype(x.dtype) * x.dtype.type(1 / (1 - p))
        self.save_for_backward(scale)
        return x * scale

    def backward(self, g):
        return g * self.saved[0]


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout: each element is zeroed with probability p and the rest scaled by 1/(1 - p),
    so the expectation is unchanged. The identity when not training or p == 0; zeros when p == 1."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    return Dropout.apply(x, p=p, rng=rng)


class Embedding(Function):
    """y[...] = W[idx[...]] (rows of W).  Backward: dW[r] = sum of dL/dy over the positions with idx == r,
    by a scatter-add so that repeated indices accumulate."""
    op_name = "embedding"

    def forward(self, weight, indices, padding_idx):
        self.shape, self.padding_idx = weight.shape, padding_idx
        self.save_for_backward(indices)
        # y = W[idx]
        return weight[indices]

    def backward(self, g):
        (idx,) = self.saved
        xp = backend.xp_of(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        # dW[r] = sum_{i: idx_i = r} dL/dy_i
        backend.scatter_add(xp, grad, idx.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return grad


def embedding(indices, weight, padding_idx=None):
    """F.embedding: the rows weight[indices] (indices an integer Tensor or array of any shape;
    weight (num_embeddings, dim)). The row padding_idx, if given, receives no gradient."""
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be (num_embeddings, dim), got shape {tuple(weight.shape)}")
    idx = _index_array(indices, weight, "embedding")
    V = weight.shape[0]
    if idx.size and (bool((idx < 0).any()) or bool((idx >= V).any())):
        raise IndexError(f"embedding: indices must lie in [0, {V}) for a weight of shape {tuple(weight.shape)}")
    if padding_idx is not None:
        padding_idx = padding_idx % V
    return Embedding.apply(weight, indices=idx, padding_idx=padding_idx)


def one_hot(indices, num_classes=-1):
    """One-hot float32 encoding: out[..., c] = [indices[...] == c], of shape indices.shape + (num_classes,)
    (num_classes=-1 takes max(indices) + 1). No gradient."""
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = backend.xp_of(idx)
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {idx.dtype}")
    if num_classes < 0:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (bool((idx < 0).any()) or bool((idx >= num_classes).any())):
        raise IndexError(f"one_hot: indices must lie in [0, {num_classes})")
    # out[..., c] = [idx == c]
    out = (idx[..., None] == xp.arange(num_classes)).astype(xp.float32)
    return Tensor._make(out, False, None)


# ---------------------------------------------------------------------- attention
class ScaledDotProductAttention(Function):
    """out = softmax(s) v with s = scale q k^T (+ additive mask), masked scores set to -inf.

    Backward, with P = softmax(s) (times the dropout mask D / (1 - p) when dropout is on):
        dv = P^T g,   dP = g v^T,   ds = P (dP - sum_j dP P),   dq = scale ds k,   dk = scale ds^T q,
    and d(additive mask) = ds. A row with no key to attend to (all masked) gives P = 0: output 0 and
    zero gradients, not NaN."""
    op_name = "scaled_dot_product_attention"

    def forward(self, q, k, v, *mask, is_causal, scale, dropout_p, rng):
        xp = backend.xp_of(q)
        mask = mask[0] if mask else None
        self.scale, self.has_mask = scale, mask is not None
        # s = scale q k^T
        s = q @ k.swapaxes(-1, -2)
        s *= s.dtype.type(scale)
        # masks become one additive bias, 0 where a key may be attended and -inf where not; it is
        # built at the mask's (usually smaller) shape, then added to the scores in a single pass
        neg_inf, zero = s.dtype.type(-math.inf), s.dtype.type(0)
        bias = None
        if mask is not None:
            bias = xp.where(mask, zero, neg_inf) if mask.dtype == bool else mask
        if is_causal:
            Tq, Tk = s.shape[-2:]
            # query i may attend to key j only when j <= i
            causal = xp.where(xp.tril(xp.ones((Tq, Tk), dtype=bool)), zero, neg_inf)
            bias = causal if bias is None else bias + causal
        if bias is not None:
            # s = scale q k^T + mask
            if broadcast_shapes(self.name(), s.shape, bias.shape) == s.shape:
                s += bias
            else:
                s = s + bias
        # P = exp(s - m) / sum_j exp(s_j - m), m = row max; a fully masked row (m = -inf) gets P = 0
        m = s.max(axis=-1, keepdims=True)
        m = xp.where(m == -math.inf, m.dtype.type(0), m)
        s -= m
        p = xp.exp(s, out=s)
        z = p.sum(axis=-1, keepdims=True)
        p /= xp.where(z == 0, z.dtype.type(1), z)
        drop = None
        if dropout_p > 0:
            # D / (1 - p_drop), D_ij = [u_ij >= p_drop]
            drop = (_uniform(xp, rng, p.shape, p.dtype) >= dropout_p).astype(p.dtype)
            drop *= drop.dtype.type(1 / (1 - dropout_p))
        self.save_for_backward(q, k, v, p, drop)
        # out = P v
        return (p * drop if drop is not None else p) @ v

    def backward(self, g):
        q, k, v, p, drop = self.saved
        xp = backend.xp_of(g)
        need = self.needs_input_grad
        pd = p * drop if drop is not None else p
        # dv = P^T g
        gv = pd.swapaxes(-1, -2) @ g if need[2] else None
        if not (need[0] or need[1] or (self.has_mask and need[3])):
            return (None, None, gv) + ((None,) if self.has_mask else ())
        # dP = g v^T  (through the dropout mask)
        ds = g @ v.swapaxes(-1, -2)
        if drop is not None:
            ds *= drop
        # ds = P (dP - sum_j dP_j P_j)   (in place: these (..., Tq, Tk) arrays dominate the cost)
        ds -= xp.einsum("...ij,...ij->...i", ds, p)[..., None]
        ds *= p
        gmask = ds if self.has_mask and need[3] else None
        scale = ds.dtype.type(self.scale)
        # dq = scale ds k,  dk = scale ds^T q
        gq = xp.multiply(ds @ k, scale) if need[0] else None
        gk = xp.multiply(ds.swapaxes(-1, -2) @ q, scale) if need[1] else None
        return (gq, gk, gv, gmask) if self.has_mask else (gq, gk, gv)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, rng=None, scale=None):
    """F.scaled_dot_product_attention:

        out = softmax(q k^T / sqrt(d) + M) v,

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv), batch axes broadcast. attn_mask, broadcastable to
    (..., Tq, Tk), is boolean (True = may attend; False sets the score to -inf) or a float added to the
    scores (a float Tensor with requires_grad receives a gradient). is_causal masks key j > query i
    (combined with attn_mask if both are given). dropout_p drops attention weights (with rng).
    scale replaces 1/sqrt(d). Rows with no key to attend to give 0 (and zero gradients), not NaN.
    One fused Function: measured faster than composing matmul + softmax + matmul."""
    name = ScaledDotProductAttention.name()
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ShapeError(f"{name}: q, k, v need at least 2 axes (..., T, d), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{name}: q (..., Tq, d) = {tuple(q.shape)}, k (..., Tk, d) = {tuple(k.shape)} and "
                         f"v (..., Tk, dv) = {tuple(v.shape)} do not fit together")
    batch = broadcast_shapes(name, q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{name}: dropout_p must lie in [0, 1), got {dropout_p}")
    inputs = [q, k, v]
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            xp = backend.xp_of(q.data)
            data = xp.asarray(attn_mask)
            attn_mask = Tensor._make(data if data.dtype == bool else data.astype(q.dtype), False, None)
        if attn_mask.dtype != bool and attn_mask.dtype.kind != "f":
            raise TypeError(f"{name}: attn_mask must be boolean or floating point, got {attn_mask.dtype}")
        scores = batch + (q.shape[-2], k.shape[-2])
        full = broadcast_shapes(name + " attn_mask", attn_mask.shape, scores)
        if full[-2:] != scores[-2:]:
            raise ShapeError(f"{name}: attn_mask {tuple(attn_mask.shape)} does not broadcast to the scores "
                             f"{scores}")
        inputs.append(attn_mask)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return ScaledDotProductAttention.apply(*inputs, is_causal=bool(is_causal), scale=scale,
                                           dropout_p=float(dropout_p), rng=rng)


# ---------------------------------------------------------------------- gumbel-softmax
class StraightThrough(Function):
    """Forward: the hard value. Backward: the gradient goes unchanged to the soft value
    (y = y_hard - stop_grad(y_soft) + y_soft, without the rounding of that sum)."""
    op_name = "gumbel_softmax"

    def forward(self, soft, hard):
        return hard

    def backward(self, g):
        return g, None


def gumbel_softmax(logits, tau=1.0, hard=False, axis=-1, rng=None):
    """y = softmax((logits + g) / tau) along `axis`, g_i = -log(-log u_i), u_i ~ U(0, 1) (Gumbel(0, 1)).
    hard=True returns the one-hot of argmax y in the forward pass and the gradient of the soft y
    (straight-through estimator)."""
    if tau <= 0:
        raise ValueError(f"gumbel_softmax: tau must be positive, got {tau}")
    xp = backend.xp_of(logits.data)
    u = _uniform(xp, rng, logits.shape, logits.dtype).astype(logits.dtype, copy=False)
    u = xp.maximum(u, xp.finfo(u.dtype).tiny)
    # g = -log(-log u) ~ Gumbel(0, 1)
    g = -xp.log(-xp.log(u))
    # y = softmax((logits + g) / tau)
    y = softmax(div(add(logits, Tensor._make(g, False, None)), tau), axis=axis)
    if not hard:
        return y
    ax = normalize_axis(axis, logits.ndim)[0]
    index = xp.expand_dims(y.data.argmax(axis=ax), ax)
    classes = xp.arange(logits.shape[ax]).reshape((-1,) + (1,) * (logits.ndim - ax - 1))
    # y_hard = one_hot(argmax y)
    y_hard = (classes == index).astype(y.dtype)
    return StraightThrough.apply(y, Tensor._make(y_hard, False, None))
