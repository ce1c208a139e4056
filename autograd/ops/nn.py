"""The small pieces of a network, named as in torch.nn.functional:

    softmax, log_softmax                       normalised exponentials (stable, closed-form backward)
    dropout                                    inverted dropout
    embedding, one_hot                         from integer indices to vectors
    gumbel_softmax                             differentiable samples from a categorical

The other torch.nn.functional ops live beside this module: the losses in losses.py, the
normalisations in normalization.py, attention in attention.py, convolution in conv.py, pooling and
upsampling in pooling.py, the activations in elementwise.py.

Random ops take `rng`, a NumPy (or CuPy) Generator; without one they draw a fresh generator of the
array module. Their samples are drawn in the input's dtype and moved to the input's device.
"""
from .. import backend
from ..function import Function, ShapeError
from ..tensor import Tensor
from ._util import check_axis, index_array, normalize_axis, uniform
from .elementwise import add, div

__all__ = ["softmax", "log_softmax", "dropout", "embedding", "one_hot", "gumbel_softmax"]


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


def softmax(x, dim=-1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j) along axis `dim` (computed with the max subtracted).
    A slice that is entirely -inf gives NaN, as in PyTorch."""
    return Softmax.apply(x, axis=check_axis(dim, x.ndim, "softmax"))


def log_softmax(x, dim=-1):
    """log_softmax(x)_i = x_i - log sum_j exp(x_j) along axis `dim` (stable)."""
    return LogSoftmax.apply(x, axis=check_axis(dim, x.ndim, "log_softmax"))


# ---------------------------------------------------------------------- dropout, embedding, one_hot
class Dropout(Function):
    """y = x m / (1 - p), m_i ~ Bernoulli(1 - p) (inverted dropout: E[y] = x).  Backward: g m / (1 - p)."""
    op_name = "dropout"

    def forward(self, x, p, rng):
        xp = backend.xp_of(x)
        # m / (1 - p), m_i = [u_i >= p], u_i ~ U[0, 1)
        scale = (uniform(xp, rng, x.shape, x.dtype) >= p).astype(x.dtype) * x.dtype.type(1 / (1 - p))
        self.save_for_backward(scale)
        return x * scale

    def backward(self, g):
        return g * self.saved[0]


def dropout(x, p=0.5, training=True, *, rng=None):
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
    """y[...] = W[idx[...]] (rows of W).  Backward: dW[r] = sum of dL/dy over the positions with idx == r
    (`_rows_by_index`: repeated indices accumulate)."""
    op_name = "embedding"

    def forward(self, weight, indices, padding_idx):
        self.shape, self.padding_idx = weight.shape, padding_idx
        self.save_for_backward(indices)
        # y = W[idx]
        return weight[indices]

    def backward(self, g):
        (idx,) = self.saved
        xp = backend.xp_of(g)
        # dW[r] = sum_{i: idx_i = r} dL/dy_i
        grad = _rows_by_index(xp, idx.reshape(-1), g.reshape(-1, self.shape[1]), self.shape[0])
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return grad


def _rows_by_index(xp, idx, rows, n):
    """out (n, D) with out[r] = the sum of rows[i] (N, D) over every i with idx[i] == r.

    A speed trick: NumPy's scatter-add (np.add.at, `_rows_by_index_plain`) adds one element at a time;
    here the rows are sorted by index and each run of equal indices summed at once (np.add.reduceat):
    6,272 tokens of 128 numbers into 17 rows 7.1 -> 1.3 ms, into 1,000 rows 7.4 -> 3.0 ms (a token
    model's embedding gradient, every step). CuPy arrays take the plain way (cupyx's scatter_add).
    A test holds the two together."""
    if not backend.is_numpy(xp) or len(idx) == 0:
        return _rows_by_index_plain(xp, idx, rows, n)
    order = xp.argsort(idx, kind="stable")
    ranked = idx[order]                                                  # the indices in order
    first = xp.ones(len(ranked), dtype=bool)
    first[1:] = ranked[1:] != ranked[:-1]
    starts = xp.flatnonzero(first)                                       # where each run of one index begins
    out = xp.zeros((n, rows.shape[1]), dtype=rows.dtype)
    out[ranked[starts]] = xp.add.reduceat(rows[order], starts, axis=0)  # one sum per run
    return out


def _rows_by_index_plain(xp, idx, rows, n):
    """out[r] = sum of rows[i] over idx[i] == r, by a scatter-add, as it reads."""
    out = xp.zeros((n, rows.shape[1]), dtype=rows.dtype)
    return backend.scatter_add(xp, out, idx, rows)


def embedding(indices, weight, padding_idx=None):
    """F.embedding: the rows weight[indices] (indices an integer Tensor or array of any shape;
    weight (num_embeddings, dim)). The row padding_idx, if given, receives no gradient."""
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be (num_embeddings, dim), got shape {tuple(weight.shape)}")
    idx = index_array(indices, weight, "embedding")
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


# ---------------------------------------------------------------------- gumbel-softmax
class StraightThrough(Function):
    """Forward: the hard value. Backward: the gradient goes unchanged to the soft value
    (y = y_hard - stop_grad(y_soft) + y_soft, without the rounding of that sum)."""
    op_name = "gumbel_softmax"

    def forward(self, soft, hard):
        return hard

    def backward(self, g):
        return g, None


def gumbel_softmax(logits, tau=1.0, hard=False, *, dim=-1, rng=None):
    """y = softmax((logits + g) / tau) along axis `dim`, g_i = -log(-log u_i), u_i ~ U(0, 1) (Gumbel(0, 1)).
    hard=True returns the one-hot of argmax y in the forward pass and the gradient of the soft y
    (straight-through estimator)."""
    if tau <= 0:
        raise ValueError(f"gumbel_softmax: tau must be positive, got {tau}")
    xp = backend.xp_of(logits.data)
    u = uniform(xp, rng, logits.shape, logits.dtype).astype(logits.dtype, copy=False)
    u = xp.maximum(u, xp.finfo(u.dtype).tiny)
    # g = -log(-log u) ~ Gumbel(0, 1)
    g = -xp.log(-xp.log(u))
    # y = softmax((logits + g) / tau)
    y = softmax(div(add(logits, Tensor._make(g, False, None)), tau), dim=dim)
    if not hard:
        return y
    ax = normalize_axis(dim, logits.ndim)[0]
    index = xp.expand_dims(y.data.argmax(axis=ax), ax)
    classes = xp.arange(logits.shape[ax]).reshape((-1,) + (1,) * (logits.ndim - ax - 1))
    # y_hard = one_hot(argmax y)
    y_hard = (classes == index).astype(y.dtype)
    return StraightThrough.apply(y, Tensor._make(y_hard, False, None))
