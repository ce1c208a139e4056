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

    Speed, two tricks, each with its plain way beside it and a test holding the two together:
    - Threads: every step after the products (the mask, the row max, exp, the sums, the softmax's
      backward) is NumPy's own single-threaded loop over the (..., Tq, Tk) scores, the largest arrays
      of a transformer; so the batch (the first axis) is cut between the engine's threads
      (autograd/_threads.py), each doing the whole computation below on its rows and writing its part
      of the outputs. With one thread it is the plain computation over the whole batch (forward_rows
      and backward_rows with b0, b1 = 0, B).
    - Causal blocks: with is_causal and Tq = Tk, query i attends keys j <= i only, so the scores right
      of the diagonal are -inf and their P is 0. The queries are cut into CAUSAL_BLOCKS runs [i0, i1),
      each computed against the keys [0, i1) alone and kept as its own array P_n = P[..., i0:i1, :i1]
      (contiguous: NumPy's loops over a strided block cost nearly what they do over the whole); then
          out[i0:i1] = P_n v[:i1],   dv[:i1] += P_n^T g[i0:i1],   dk[:i1] += scale ds_n^T q[i0:i1].
      4 runs compute and keep 5/8 of the scores. One run, every query against every key, is the plain
      computation."""
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
        self.scores, self.blocks = scores, _query_blocks(Tq, Tk, is_causal)
        # P by blocks of queries, P_n = P[..., i0:i1, :j1]: (..., i1 - i0, j1)
        ps = [xp.empty(scores[:-2] + (i1 - i0, j1), dtype) for i0, i1, j1 in self.blocks]
        out = xp.empty(scores[:-1] + (v.shape[-1],), xp.result_type(dtype, v))
        drop = None
        if dropout_p > 0:
            # D / (1 - p_drop), D_ij = [u_ij >= p_drop]
            drop = (uniform(xp, rng, scores, dtype) >= dropout_p).astype(dtype)
            drop *= drop.dtype.type(1 / (1 - dropout_p))
        # every large array is made here, on the caller's thread: memory a worker thread allocates
        # stays in that thread's malloc arena (autograd/_malloc.py keeps heaps untrimmed)
        pds = [xp.empty_like(pn) for pn in ps] if drop is not None else None        # P D / (1 - p_drop)
        rows = _rows_of(scores)

        def forward_rows(b0, b1):  # the batch rows b0 <= i < b1 (a thread of _threads.over_batch)
            qi, ki, vi, bi, di, oi = (rows(a, b0, b1) for a in (q, k, v, bias, drop, out))
            for n, (i0, i1, j1) in enumerate(self.blocks):   # queries i0 <= i < i1, keys j < j1
                qn, kn, vn = qi[..., i0:i1, :], ki[..., :j1, :], vi[..., :j1, :]
                pn, bn = rows(ps[n], b0, b1), _block(bi, i0, i1, j1)
                if j1 == 0:      # no key at all: every query's output is 0
                    oi[..., i0:i1, :] = 0
                    continue
                # s = scale q k^T (+ mask), in P's memory
                if broadcast_shapes("attention", qn.shape[:-2], kn.shape[:-2]) == pn.shape[:-2]:
                    xp.matmul(qn, kn.swapaxes(-1, -2), out=pn)
                else:            # the mask has batch axes that q and k do not
                    pn[...] = qn @ kn.swapaxes(-1, -2)
                pn *= dtype.type(scale)
                if bn is not None:
                    pn += bn
                # P = exp(s - m) / sum_j exp(s_j - m), m = row max; a fully masked row (m = -inf) gets P = 0
                m = pn.max(axis=-1, keepdims=True)
                m[m == -math.inf] = 0
                pn -= m
                xp.exp(pn, out=pn)
                z = pn.sum(axis=-1, keepdims=True)
                z[z == 0] = 1
                pn /= z
                # out = P v
                if di is not None:
                    pn = xp.multiply(pn, _block(di, i0, i1, j1), out=rows(pds[n], b0, b1))
                xp.matmul(pn, vn, out=oi[..., i0:i1, :])

        _run(xp, forward_rows, scores, sum(pn.nbytes for pn in ps))
        self.save_for_backward(q, k, v, drop, *ps)
        return out

    def backward(self, g):
        q, k, v, drop, *ps = self.saved
        xp = backend.xp_of(g)
        need = self.needs_input_grad
        scores, blocks = self.scores, self.blocks
        rows, batch = _rows_of(scores), scores[:-2]
        need_ds = need[0] or need[1] or (self.has_mask and need[3])
        # the gradients at the scores' batch shape (the engine sums them over broadcast axes)
        gq = xp.empty(batch + q.shape[-2:], g.dtype) if need[0] else None
        gk = xp.empty(batch + k.shape[-2:], g.dtype) if need[1] else None
        gv = xp.empty(batch + v.shape[-2:], g.dtype) if need[2] else None
        # ds by blocks as P (made here, as in forward); the mask's gradient is ds, 0 where no block is
        gmask = xp.zeros(scores, g.dtype) if self.has_mask and need[3] else None
        dss = [xp.empty_like(pn) for pn in ps] if need_ds or drop is not None else None
        scale = g.dtype.type(self.scale)

        def backward_rows(b0, b1):  # the batch rows b0 <= i < b1 (a thread of _threads.over_batch)
            qi, ki, vi, di, gi = (rows(a, b0, b1) for a in (q, k, v, drop, g))
            gqi, gki, gvi, gmi = (rows(a, b0, b1) for a in (gq, gk, gv, gmask))
            # queries i0 <= i < i1 against keys j < j1; dk and dv are sums over the blocks: the last
            # block (every key) writes them, the ones before add to their first j1 rows
            for n, (i0, i1, j1) in reversed(list(enumerate(blocks))):
                gn, qn, kn, vn = gi[..., i0:i1, :], qi[..., i0:i1, :], ki[..., :j1, :], vi[..., :j1, :]
                pn, dn = rows(ps[n], b0, b1), _block(di, i0, i1, j1)
                ds = rows(dss[n], b0, b1) if dss is not None else None
                # dv = P^T g  (P D / (1 - p_drop) with dropout, made in ds's memory)
                if gvi is not None:
                    pdn = xp.multiply(pn, dn, out=ds) if dn is not None else pn
                    _add_product(xp, pdn.swapaxes(-1, -2), gn, gvi[..., :j1, :], first=n == len(blocks) - 1)
                if not need_ds:
                    continue
                # dP = g v^T  (through the dropout mask)
                if broadcast_shapes("attention", gn.shape[:-2], vn.shape[:-2]) == ds.shape[:-2]:
                    xp.matmul(gn, vn.swapaxes(-1, -2), out=ds)
                else:            # the mask has batch axes that g and v do not
                    ds[...] = gn @ vn.swapaxes(-1, -2)
                if dn is not None:
                    ds *= dn
                # ds = P (dP - sum_j dP_j P_j)   (in place: these (..., Tq, Tk) arrays dominate the cost)
                ds -= xp.einsum("...ij,...ij->...i", ds, pn)[..., None]
                ds *= pn
                if gmi is not None:
                    gmi[..., i0:i1, :j1] = ds
                # dq = scale ds k,  dk = scale ds^T q
                if gqi is not None:
                    xp.matmul(ds, kn, out=gqi[..., i0:i1, :])
                    gqi[..., i0:i1, :] *= scale
                if gki is not None:
                    _add_product(xp, ds.swapaxes(-1, -2), qn, gki[..., :j1, :], first=n == len(blocks) - 1)
            if gki is not None:
                gki *= scale

        _run(xp, backward_rows, scores, sum(pn.nbytes for pn in ps))
        return (gq, gk, gv, gmask) if self.has_mask else (gq, gk, gv)


CAUSAL_BLOCKS = 4   # runs of queries of a causal attention (1: the plain computation over every key)


def _query_blocks(Tq, Tk, causal):
    """[(i0, i1, j1), ...]: queries i0 <= i < i1 attend keys j < j1 at most. Causal with Tq = Tk: the
    queries cut into CAUSAL_BLOCKS runs, j1 = i1; otherwise one run, every query against every key."""
    n = min(CAUSAL_BLOCKS, Tq) if causal and Tq == Tk and Tq > 1 else 1
    edges = [Tq * i // n for i in range(n + 1)]
    return [(i0, i1, i1 if n > 1 else Tk) for i0, i1 in zip(edges[:-1], edges[1:])]


def _add_product(xp, a, b, out, first):
    """out = a @ b (first), else out += a @ b."""
    if first:
        xp.matmul(a, b, out=out)
    else:
        out += a @ b


def _block(a, i0, i1, j1):
    """a[..., i0:i1, :j1]: one block of the scores (an axis of size 1 is broadcast and kept whole)."""
    if a is None:
        return None
    index = [slice(None)] * a.ndim
    if a.ndim >= 2 and a.shape[-2] != 1:
        index[-2] = slice(i0, i1)
    if a.shape[-1] != 1:
        index[-1] = slice(0, j1)
    return a[tuple(index)]


def _batch(scores):
    """The rows the batch is cut into: the first axis of the scores (..., Tq, Tk); 1 without one."""
    return scores[0] if len(scores) > 2 else 1


def _rows_of(scores):
    """rows(a, b0, b1): an array's share of the batch rows b0 <= i < b1 of the scores."""
    return functools.partial(_threads.rows, batch=_batch(scores), ndim=len(scores))


def _run(xp, work, scores, nbytes):
    """work(b0, b1) over the batch: by the engine's threads where the scores have a batch axis
    (nbytes: the scores' size in bytes, how much work a row of the batch is)."""
    if len(scores) > 2:
        _threads.over_batch(xp, _batch(scores), work, nbytes // max(_batch(scores), 1))
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
