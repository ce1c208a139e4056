"""Attention, named as in torch.nn.functional: scaled_dot_product_attention,

    out = softmax(q k^T / sqrt(d) + mask) v,

one fused Function (batched matmuls, the softmax and its backward in place), with boolean or additive
masks, the causal mask, and dropout on the attention weights (drawn from `rng`, a NumPy or CuPy
Generator, in the input's dtype on the input's device).
"""
import math

from .. import backend
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
            drop = (uniform(xp, rng, p.shape, p.dtype) >= dropout_p).astype(p.dtype)
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
