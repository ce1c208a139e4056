"""Attention, named as in torch.nn.functional: scaled_dot_product_attention,

    out = softmax(q k^T / sqrt(d) + mask) v,

one fused Function (batched matmuls, the softmax and its backward in place), with boolean or additive
masks, the causal mask, and dropout on the attention weights (drawn from `rng`, a NumPy or CuPy
Generator, in the input's dtype on the input's device).
"""
import functools
import math

from .. import _threads, backend
from ..function import Function, ShapeError, broadcast_shapes
from ..tensor import Tensor
from ._util import uniform

__all__ = ["scaled_dot_product_attention"]


# ---------------------------------------------------------------------- attention
class ScaledDotProductAttention(Function):
    """out = softmax(s) v with s = scale q k^T (+ additive mask), masked scores set to -inf.

    Backward, with P = softmax(s) (times the dropout mask D / (1 - p) when dropout is on):
        dv = P^T g,   dP = g v^T,   ds = P (dP - sum_j dP P),   dq = scale ds k,   dk = scale ds^T q,
    and d(additive mask) = ds. A row with no key to attend to (all masked) gives P = 0: output 0 and
    zero gradients, not NaN.

    Speed: every step after the products (the mask, the row max, exp, the sums, the softmax's
    backward) is NumPy's own single-threaded loop over the (..., Tq, Tk) scores, the largest arrays of
    a transformer; so the batch (the first axis) is cut between the engine's threads
    (autograd/_threads.py), each doing the whole computation below on its rows and writing its part of
    the outputs. With one thread it is the plain computation over the whole batch (forward_rows and
    backward_rows with b0, b1 = 0, B), and a test holds the two together."""
    op_name = "scaled_dot_product_attention"

    def forward(self, q, k, v, *mask, is_causal, scale, dropout_p, rng):
        xp = backend.xp_of(q)
        mask = mask[0] if mask else None
        self.scale, self.has_mask = scale, mask is not None
        dtype = xp.result_type(q, k)
        Tq, Tk = q.shape[-2], k.shape[-2]
        # masks become one additive bias, 0 where a key may be attended and -inf where not; it is
        # built at the mask's (usually smaller) shape, then added to the scores in a single pass
        neg_inf, zero = dtype.type(-math.inf), dtype.type(0)
        bias = None
        if mask is not None:
            bias = xp.where(mask, zero, neg_inf) if mask.dtype == bool else mask
        if is_causal:
            # query i may attend to key j only when j <= i
            causal = xp.where(xp.tril(xp.ones((Tq, Tk), dtype=bool)), zero, neg_inf)
            bias = causal if bias is None else bias + causal
        batch = broadcast_shapes(self.name(), q.shape[:-2], k.shape[:-2], v.shape[:-2])
        scores = batch + (Tq, Tk)
        if bias is not None:
            scores = broadcast_shapes(self.name(), scores, bias.shape)
        p = xp.empty(scores, dtype)                                      # P, (..., Tq, Tk)
        out = xp.empty(scores[:-1] + (v.shape[-1],), xp.result_type(dtype, v))
        drop = None
        if dropout_p > 0:
            # D / (1 - p_drop), D_ij = [u_ij >= p_drop]
            drop = (uniform(xp, rng, p.shape, p.dtype) >= dropout_p).astype(p.dtype)
            drop *= drop.dtype.type(1 / (1 - dropout_p))
        # every large array is made here, on the caller's thread: memory a worker thread allocates
        # stays in that thread's malloc arena (autograd/_malloc.py keeps heaps untrimmed)
        pd = xp.empty_like(p) if drop is not None else None                # P D / (1 - p_drop)
        rows = _rows_of(p)

        def forward_rows(b0, b1):  # the batch rows b0 <= i < b1 (a thread of _threads.over_batch)
            qi, ki, vi, pi, bi, di, pdi = (rows(a, b0, b1) for a in (q, k, v, p, bias, drop, pd))
            # s = scale q k^T (+ mask), in P's memory
            if broadcast_shapes("attention", qi.shape[:-2], ki.shape[:-2]) == pi.shape[:-2]:
                xp.matmul(qi, ki.swapaxes(-1, -2), out=pi)
            else:            # the mask has batch axes that q and k do not
                pi[...] = qi @ ki.swapaxes(-1, -2)
            pi *= dtype.type(scale)
            if bi is not None:
                pi += bi
            # P = exp(s - m) / sum_j exp(s_j - m), m = row max; a fully masked row (m = -inf) gets P = 0
            m = pi.max(axis=-1, keepdims=True)
            m[m == -math.inf] = 0
            pi -= m
            xp.exp(pi, out=pi)
            z = pi.sum(axis=-1, keepdims=True)
            z[z == 0] = 1
            pi /= z
            # out = P v
            if di is not None:
                pi = xp.multiply(pi, di, out=pdi)
            xp.matmul(pi, vi, out=rows(out, b0, b1))

        _run(xp, forward_rows, p)
        self.save_for_backward(q, k, v, p, drop)
        return out

    def backward(self, g):
        q, k, v, p, drop = self.saved
        xp = backend.xp_of(g)
        need = self.needs_input_grad
        rows, batch = _rows_of(p), p.shape[:-2]
        need_ds = need[0] or need[1] or (self.has_mask and need[3])
        # the gradients at the scores' batch shape (the engine sums them over broadcast axes)
        gq = xp.empty(batch + q.shape[-2:], g.dtype) if need[0] else None
        gk = xp.empty(batch + k.shape[-2:], g.dtype) if need[1] else None
        gv = xp.empty(batch + v.shape[-2:], g.dtype) if need[2] else None
        # ds, (..., Tq, Tk): the mask's gradient when it has one (made here, as in forward)
        ds_all = xp.empty(p.shape, g.dtype) if need_ds or drop is not None else None
        gmask = ds_all if self.has_mask and need[3] else None
        scale = g.dtype.type(self.scale)

        def backward_rows(b0, b1):  # the batch rows b0 <= i < b1 (a thread of _threads.over_batch)
            qi, ki, vi, pi, di, gi, ds = (rows(a, b0, b1) for a in (q, k, v, p, drop, g, ds_all))
            # dv = P^T g  (P D / (1 - p_drop) with dropout, made in ds's memory)
            if gv is not None:
                pd = xp.multiply(pi, di, out=ds) if di is not None else pi
                xp.matmul(pd.swapaxes(-1, -2), gi, out=rows(gv, b0, b1))
            if not need_ds:
                return
            # dP = g v^T  (through the dropout mask)
            if broadcast_shapes("attention", gi.shape[:-2], vi.shape[:-2]) == ds.shape[:-2]:
                xp.matmul(gi, vi.swapaxes(-1, -2), out=ds)
            else:            # the mask has batch axes that g and v do not
                ds[...] = gi @ vi.swapaxes(-1, -2)
            if di is not None:
                ds *= di
            # ds = P (dP - sum_j dP_j P_j)   (in place: these (..., Tq, Tk) arrays dominate the cost)
            ds -= xp.einsum("...ij,...ij->...i", ds, pi)[..., None]
            ds *= pi
            # dq = scale ds k,  dk = scale ds^T q
            if gq is not None:
                gqi = rows(gq, b0, b1)
                xp.matmul(ds, ki, out=gqi)
                gqi *= scale
            if gk is not None:
                gki = rows(gk, b0, b1)
                xp.matmul(ds.swapaxes(-1, -2), qi, out=gki)
                gki *= scale

        _run(xp, backward_rows, p)
        return (gq, gk, gv, gmask) if self.has_mask else (gq, gk, gv)


def _batch(p):
    """The rows the batch is cut into: the first axis of the scores P (..., Tq, Tk); 1 without one."""
    return p.shape[0] if p.ndim > 2 else 1


def _rows_of(p):
    """rows(a, b0, b1): an array's share of the batch rows b0 <= i < b1 of the scores P."""
    return functools.partial(_threads.rows, batch=_batch(p), ndim=p.ndim)


def _run(xp, work, p):
    """work(b0, b1) over the batch: by the engine's threads where the scores have a batch axis."""
    if p.ndim > 2:
        _threads.over_batch(xp, _batch(p), work, p.nbytes // max(_batch(p), 1))
    else:
        work(0, 1)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *,
                                 rng=None):
    """F.scaled_dot_product_attention, with PyTorch's arguments in PyTorch's order:

        out = softmax(q k^T / sqrt(d) + M) v,

    q = query (..., Tq, d), k = key (..., Tk, d), v = value (..., Tk, dv), batch axes broadcast. attn_mask, broadcastable to
    (..., Tq, Tk), is boolean (True = may attend; False sets the score to -inf) or a float added to the
    scores (a float Tensor with requires_grad receives a gradient). is_causal masks key j > query i
    (combined with attn_mask if both are given). dropout_p drops attention weights (with rng).
    scale replaces 1/sqrt(d). Rows with no key to attend to give 0 (and zero gradients), not NaN.
    One fused Function: measured faster than composing matmul + softmax + matmul."""
    name = ScaledDotProductAttention.name()
    q, k, v = query, key, value
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
