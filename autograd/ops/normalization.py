"""Normalisations, named as in torch.nn.functional: layer_norm, group_norm, batch_norm.

Each is one Function. They share one backward: with xhat = (x - mu) / sigma over a group of n
elements and g = dL/dxhat, the derivative through mu and sigma gives

    dL/dx = (1 / sigma) (g - mean(g) - xhat * mean(g * xhat)),

and the affine part y = xhat w + b gives dL/dw = sum(dL/dy xhat), dL/db = sum(dL/dy) over every axis
the parameters are broadcast along.
"""
import math

from .. import _threads, backend
from ..function import Function, ShapeError
from ..tensor import Tensor

__all__ = ["layer_norm", "group_norm", "batch_norm", "group_norm_plain"]


# ---------------------------------------------------------------------- shared by the three
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


def _channel_params(params, channels, ndim, has_weight, has_bias):
    """(w, b) of a per-channel affine, each (C, 1, ..., 1) to broadcast against (B, C, *spatial), or None."""
    pshape = (channels,) + (1,) * (ndim - 2)
    return (params[0].reshape(pshape) if has_weight else None), (params[-1].reshape(pshape) if has_bias else None)


def _affine_into(xhat, w, b, out):
    """out[...] = xhat w + b for the parameters that are given."""
    if w is not None:
        backend.xp_of(xhat).multiply(xhat, w, out=out)
    else:
        out[...] = xhat
    if b is not None:
        out += b


def _affine(xhat, w, b):
    """y = xhat w + b for the parameters that are given (a new array either way)."""
    y = xhat * w if w is not None else xhat.copy(order="K")  # order K: an NHWC view stays NHWC
    if b is not None:
        y += b
    return y


def _affine_grads(fn, g, xhat, axes):
    """Gradients of the affine part y = xhat * w + b of a normalisation:
    dL/dw = sum(g xhat),  dL/db = sum(g)  over every axis the parameters are broadcast along.
    Returns the (weight, bias) gradients that `fn` has, None where not needed."""
    grads, i = [], 1
    if fn.has_weight:
        grads.append((g * xhat).sum(axis=axes) if fn.needs_input_grad[i] else None)
        i += 1
    if fn.has_bias:
        grads.append(g.sum(axis=axes) if fn.needs_input_grad[i] else None)
    return tuple(grads)


# ---------------------------------------------------------------------- layer_norm, group_norm, batch_norm
class LayerNorm(Function):
    """y = xhat w + b,  xhat = (x - mu) / sqrt(var + eps), mu and var over the last k axes.
    Backward: dx by the closed form in the module docstring with g = dL/dy w;
    dw = sum over the leading axes of dL/dy xhat, db = sum over them of dL/dy.

    Speed: a transformer normalises its whole activation twice a block, so the steps work in place on
    two new arrays a pass (xhat and y forward; dL/dx and one buffer backward), and the sums of squares
    and of products are einsums, which multiply and add in one pass with no temporary array."""
    op_name = "layer_norm"

    def forward(self, x, *params, k, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        w = params[0] if has_weight else None
        b = params[-1] if has_bias else None
        self.axes = tuple(range(x.ndim - k, x.ndim))
        self.lead = tuple(range(x.ndim - k))
        self.has_weight, self.has_bias = has_weight, has_bias
        n = math.prod(x.shape[x.ndim - k:])                                   # values per row
        # x - mu
        xhat = x - x.mean(axis=self.axes, keepdims=True)
        # 1 / sigma = 1 / sqrt(mean((x - mu)^2) + eps)
        rstd = 1 / xp.sqrt(_last_dot(xhat, xhat, k) / n + eps)
        # xhat = (x - mu) / sigma
        xhat *= rstd
        self.save_for_backward(xhat, rstd, w)
        # y = xhat w + b
        return _affine(xhat, w, b)

    def backward(self, g):
        xhat, rstd, w = self.saved
        xp = backend.xp_of(g)
        k = len(self.axes)
        gx = None
        if self.needs_input_grad[0]:
            # dL/dx = (1/sigma) (gh - mean(gh) - xhat mean(gh xhat)),  gh = dL/dy w
            gx = g * w if w is not None else g.copy()
            m2 = _last_dot(gx, xhat, k) / math.prod(g.shape[g.ndim - k:])  # mean(gh xhat), keepdims
            gx -= gx.mean(axis=self.axes, keepdims=True)
            gx -= xp.multiply(xhat, m2)
            gx *= rstd
        grads = [gx]
        lead = "abcdefghij"[:g.ndim - k]
        last = "klmnopqrst"[:k]
        if self.has_weight:   # dL/dw = sum over the leading axes of dL/dy xhat
            grads.append(xp.einsum(f"{lead}{last},{lead}{last}->{last}", g, xhat) if self.needs_input_grad[1]
                         else None)
        if self.has_bias:     # dL/db = sum over the leading axes of dL/dy
            grads.append(g.sum(axis=self.lead) if self.needs_input_grad[-1] else None)
        return tuple(grads)


def _last_dot(a, b, k):
    """The sums of a * b over the last k axes, kept as axes of size 1: one einsum, no temporary array."""
    last = "klmnopqrst"[:k]
    out = backend.xp_of(a).einsum(f"...{last},...{last}->...", a, b)
    return out.reshape(out.shape + (1,) * k)


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


class GroupNormPlain(Function):
    """x of shape (B, C, *spatial) viewed as (B, G, C/G * prod(spatial)); each group is normalised,
    then y = xhat w_c + b_c per channel. Backward: the closed form over each group; dw_c and db_c sum
    dL/dy xhat and dL/dy over every axis but the channel axis. The textbook version of GroupNorm
    (below), which F.group_norm_plain runs and a test holds the fast one to."""
    op_name = "group_norm_plain"

    def forward(self, x, *params, groups, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        B, C = x.shape[:2]
        w, b = _channel_params(params, C, x.ndim, has_weight, has_bias)
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
        return _affine(xhat, w, b)

    def backward(self, g):
        xhat, rstd, w = self.saved
        B = self.shape[0]
        grads = [None]
        if self.needs_input_grad[0]:
            gxhat = (g * w if w is not None else g).reshape(B, self.groups, -1)
            grads[0] = _normalized_grad(gxhat, xhat.reshape(B, self.groups, -1), rstd, (2,)).reshape(self.shape)
        return tuple(grads) + _affine_grads(self, g, xhat, self.sum_axes)


def _group_sum(v, groups):
    """(B, C) per-channel values -> (B, G) sums over each group's C/G channels."""
    return v.reshape(v.shape[0], groups, -1).sum(axis=2)


def _channel_dot(a, b):
    """(B, C) sums over the spatial axes of a * b, for a and b of shape (B, C, *spatial): one einsum,
    which multiplies and adds in one pass with no temporary array, in the arrays' memory order."""
    axes = "bcdefghijk"[:a.ndim]
    return backend.xp_of(a).einsum(f"{axes},{axes}->bc", a, b)


def _per_channel(v, channels, ndim):
    """(B, G) per-group values -> (B, C, 1, ..., 1): each group's value on its C/G channels, shaped to
    broadcast against an input of ndim axes."""
    xp = backend.xp_of(v)
    return xp.repeat(v, channels // v.shape[1], axis=1).reshape(v.shape[:1] + (channels,) + (1,) * (ndim - 2))


class GroupNorm(Function):
    """x of shape (B, C, *spatial); each of the G groups of C/G channels of a sample (n = C/G prod(spatial)
    values) is normalised, then y = xhat w_c + b_c per channel. The same mathematics as GroupNormPlain
    above, computed from per-channel sums:

    forward   mu_g = (1/n) sum_{c in g} S_c(x),  sigma_g^2 = (1/n) sum_{c in g} S_c((x - mu_g)^2),
              xhat = (x - mu_g) / sigma_g,  y = xhat w_c + b_c
    backward  with the per-channel sums S_c = sum dL/dy and A_c = sum dL/dy xhat (over the spatial axes):
              dL/dw_c = sum_b A_c,  dL/db_c = sum_b S_c,
              dL/dx = (1/sigma) (dL/dy w_c - m1_g - xhat m2_g),  m1_g = (1/n) sum_{c in g} w_c S_c,
              m2_g = (1/n) sum_{c in g} w_c A_c   (the closed form of the module docstring, g = dL/dy w)

    Speed ("per-channel sums"): the plain version views x as (B, G, n), which copies a conv's output
    (an NCHW view of NHWC memory, see conv_fast.py) back to NCHW, and spends a temporary array on every
    arithmetic step. Here the only passes over the full array are two reductions over the spatial axes
    (NumPy reduces a view in its memory order, whichever it is; the sum of squares and of products
    by einsum, with no temporary) and the element-wise steps, done in place where they can be; every
    new array keeps x's memory layout, so an NHWC activation stays NHWC for the SiLU and the conv after
    it. The statistics of the groups come from the (B, C) sums, a tiny array. Measured on one core for
    the U-Net's largest GroupNorm (64 x 96 x 28 x 28, NHWC): forward 23 -> 10 ms, backward 31 -> 10 ms.
    Each sample's statistics are its own, so the batch is cut between the engine's threads
    (autograd/_threads.py), each normalising its samples into its rows of the same output arrays."""
    op_name = "group_norm"

    def forward(self, x, *params, groups, has_weight, has_bias, eps):
        xp = backend.xp_of(x)
        B, C = x.shape[:2]
        w, b = _channel_params(params, C, x.ndim, has_weight, has_bias)
        self.groups, self.has_weight, self.has_bias = groups, has_weight, has_bias
        self.spatial = spatial = tuple(range(2, x.ndim))
        n = x.size // (B * groups)                                          # values per group
        xhat, y = xp.empty_like(x), xp.empty_like(x)                        # in x's memory layout
        rstd = xp.empty((B, groups), dtype=x.dtype)                         # 1 / sigma per sample and group

        def samples(b0, b1):  # the samples b0 <= i < b1 (a thread of _threads.over_batch)
            xs, xc = x[b0:b1], xhat[b0:b1]
            # mu_g = (1/n) sum over the group's channels of the per-channel sums
            mu = _group_sum(xs.sum(axis=spatial), groups) / n               # (b, G)
            xp.subtract(xs, _per_channel(mu, C, x.ndim), out=xc)            # x - mu
            # sigma_g^2 = (1/n) sum (x - mu)^2,  1 / sigma = 1 / sqrt(sigma_g^2 + eps)
            r = rstd[b0:b1]
            r[...] = 1 / xp.sqrt(_group_sum(_channel_dot(xc, xc), groups) / n + eps)
            xc *= _per_channel(r, C, x.ndim)                                # xhat = (x - mu) / sigma, in place
            _affine_into(xc, w, b, y[b0:b1])                                # y = xhat w_c + b_c

        _threads.over_batch(xp, B, samples, x.nbytes // max(B, 1))
        self.save_for_backward(xhat, rstd, w)
        return y

    def backward(self, g):
        xhat, rstd, w = self.saved
        xp = backend.xp_of(g)
        B, C = xhat.shape[:2]
        G, n = self.groups, xhat.size // (B * self.groups)
        wc = w.reshape(1, C) if w is not None else 1
        S, A = xp.empty((B, C), dtype=g.dtype), xp.empty((B, C), dtype=g.dtype)
        gx = xp.empty_like(g) if self.needs_input_grad[0] else None

        def samples(b0, b1):  # the samples b0 <= i < b1 (a thread of _threads.over_batch)
            gs, xs = g[b0:b1], xhat[b0:b1]
            S[b0:b1] = gs.sum(axis=self.spatial)                            # (b, C): sum of dL/dy
            A[b0:b1] = _channel_dot(gs, xs)                                 # (b, C): sum of dL/dy xhat
            if gx is None:
                return
            r = rstd[b0:b1]
            m1 = _group_sum(S[b0:b1] * wc, G) / n                           # (b, G): mean of dL/dy w
            m2 = _group_sum(A[b0:b1] * wc, G) / n                           # (b, G): mean of dL/dy w xhat
            # dL/dx = (1/sigma) (dL/dy w_c - m1 - xhat m2), per-(b, c) coefficients times two arrays
            out = gx[b0:b1]
            xp.multiply(gs, (_per_channel(r, C, 2) * wc).reshape(b1 - b0, C, *(1,) * (g.ndim - 2)), out=out)
            out += _per_channel(-r * m1, C, g.ndim)
            out += xs * _per_channel(-r * m2, C, g.ndim)

        _threads.over_batch(xp, B, samples, g.nbytes // max(B, 1))
        grads = [gx]
        if self.has_weight:
            grads.append(A.sum(axis=0) if self.needs_input_grad[1] else None)
        if self.has_bias:
            grads.append(S.sum(axis=0) if self.needs_input_grad[-1] else None)
        return tuple(grads)


def _group_norm_inputs(x, num_groups, weight, bias, name):
    """The checked inputs of group_norm: (params, has_weight, has_bias)."""
    if x.ndim < 2:
        raise ShapeError(f"{name}: input must be (B, C, *spatial), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if num_groups <= 0 or C % num_groups != 0:
        raise ShapeError(f"{name}: num_groups={num_groups} does not divide the {C} channels of input "
                         f"{tuple(x.shape)}")
    return _optional_params(name, weight, bias, (C,))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """F.group_norm: for x of shape (B, C, *spatial) split the channels into num_groups groups,
    normalise each (sample, group) by its mean and biased variance, then y = xhat * weight_c + bias_c."""
    params, has_w, has_b = _group_norm_inputs(x, num_groups, weight, bias, "group_norm")
    return GroupNorm.apply(x, *params, groups=num_groups, has_weight=has_w, has_bias=has_b, eps=eps)


def group_norm_plain(x, num_groups, weight=None, bias=None, eps=1e-5):
    """group_norm by the textbook computation (GroupNormPlain): the reference the fast one is tested against."""
    params, has_w, has_b = _group_norm_inputs(x, num_groups, weight, bias, "group_norm_plain")
    return GroupNormPlain.apply(x, *params, groups=num_groups, has_weight=has_w, has_bias=has_b, eps=eps)


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
        return _affine(xhat, w, b)

    def backward(self, g):
        xhat, rstd, w = self.saved
        grads = [None]
        if self.needs_input_grad[0]:
            gxhat = g * w if w is not None else g
            # training: the closed form through the batch statistics; eval: dL/dx = g / sigma
            grads[0] = _normalized_grad(gxhat, xhat, rstd, self.axes) if self.training else gxhat * rstd
        return tuple(grads) + _affine_grads(self, g, xhat, self.axes)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """F.batch_norm for x of shape (B, C) or (B, C, *spatial): y = (x - mu_c) / sqrt(var_c + eps) * w_c + b_c.

    training=True: mu, var are the batch statistics (biased var), and running_mean / running_var
    (arrays or Tensors of shape (C,), or None) are updated IN PLACE:
        running_mean <- (1 - momentum) running_mean + momentum mu
        running_var  <- (1 - momentum) running_var + momentum var n / (n - 1)   (unbiased, n = B * H * W)
    training=False (the default, as in PyTorch): mu, var are running_mean and running_var (which must
    then be given). The running statistics are never differentiated."""
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
