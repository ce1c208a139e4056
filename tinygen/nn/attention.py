"""Attention, the pre-LN transformer block, and the sinusoidal timestep embedding of diffusion models.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V        (Vaswani et al. 2017)

MultiheadAttention projects x to queries and (x, or a context, to) keys and values, splits the
model dimension D into H heads of D/H, attends in each head, and projects the heads back to D.
"""
import math

import numpy as np

import autograd.functional as F
from autograd import Tensor, backend

from . import init
from .layers import GELU, Dropout, LayerNorm, Linear, SiLU
from .module import Module, Sequential

__all__ = ["MultiheadAttention", "TransformerBlock", "timestep_embedding", "TimestepEmbedding"]


class MultiheadAttention(Module):
    """Multi-head (self- or cross-) attention on (B, T, D) sequences.

    forward(x, context=None, attn_mask=None, is_causal=False):
        context None: self-attention, keys and values from x;
        context (B, S, context_dim): cross-attention, keys and values from the context.
        attn_mask as in F.scaled_dot_product_attention, broadcast to (B, H, T, S): boolean
        (True = may attend) or additive float; a key-padding mask (B, S) becomes mask[:, None, None, :].
    Dropout (p = dropout) acts on the attention weights while training.

    Queries, keys and values have a Linear each: measured on the CPU, three (D, D) products are as
    fast as one fused (3D, D) product followed by a split (whose backward writes three full-size
    gradients), and separate projections serve self- and cross-attention alike."""

    def __init__(self, dim, num_heads, dropout=0.0, bias=True, context_dim=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiheadAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim, self.dropout = dim, num_heads, dim // num_heads, dropout
        self.context_dim = context_dim if context_dim is not None else dim
        self.q_proj = Linear(dim, dim, bias=bias)
        self.k_proj = Linear(self.context_dim, dim, bias=bias)
        self.v_proj = Linear(self.context_dim, dim, bias=bias)
        self.out_proj = Linear(dim, dim, bias=bias)

    def _heads(self, t):  # (B, T, D) -> (B, H, T, D/H)
        B, T, _ = t.shape
        return t.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def forward(self, x, context=None, attn_mask=None, is_causal=False):
        B, T, D = x.shape
        if D != self.dim:
            raise ValueError(f"MultiheadAttention: input (B, T, D) = {tuple(x.shape)}, expected D = {self.dim}")
        kv = x if context is None else context                      # (B, S, context_dim)
        q = self._heads(self.q_proj(x))                             # (B, H, T, D/H)
        k = self._heads(self.k_proj(kv))                            # (B, H, S, D/H)
        v = self._heads(self.v_proj(kv))                            # (B, H, S, D/H)
        p = self.dropout if self.training else 0.0
        # softmax(q k^T / sqrt(D/H) + M) v, per head
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             dropout_p=p, rng=init.get_rng() if p else None)  # (B, H, T, D/H)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, D)            # (B, T, D): heads side by side
        return self.out_proj(out)                                   # (B, T, D)

    def forward_cached(self, x, cache, start):
        """Causal self-attention of the new positions start .. start + T - 1, x (B, T, D), over every
        position so far: their keys and values are written into cache = (K, V), each (B, H, N, D/H)
        arrays, and the queries attend to cache[:, :, :start + T] (a position never sees a later one).
        Sampling one token at a time costs one position's work per step instead of the whole prefix."""
        B, T, D = x.shape
        keys, values = cache
        end = start + T
        if end > keys.shape[2]:
            raise ValueError(f"MultiheadAttention: positions {start}..{end - 1} do not fit a cache of {keys.shape[2]}")
        q = self._heads(self.q_proj(x))                             # (B, H, T, D/H)
        keys[:, :, start:end] = self._heads(self.k_proj(x)).data    # K_t, V_t of the new positions
        values[:, :, start:end] = self._heads(self.v_proj(x)).data
        # new position start + i may attend to every key j <= start + i
        xp = backend.xp_of(keys)
        mask = xp.arange(end)[None, :] <= (start + xp.arange(T))[:, None]      # (T, end)
        out = F.scaled_dot_product_attention(q, Tensor(keys[:, :, :end]), Tensor(values[:, :, :end]),
                                             attn_mask=mask)                   # (B, H, T, D/H)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, T, D))      # (B, T, D)

    def attention_weights(self, x, context=None, attn_mask=None, is_causal=False):
        """The attention weights P = softmax(q k^T / sqrt(D/H) + M) of every head, (B, H, T, S): how
        much each query position takes from each key position (for pictures: attention maps and
        rollout). Computed as attention applied to identity values, P I = P, so that masks work
        exactly as in forward; no dropout."""
        kv = x if context is None else context
        q = self._heads(self.q_proj(x))                             # (B, H, T, D/H)
        k = self._heads(self.k_proj(kv))                            # (B, H, S, D/H)
        S = k.shape[2]
        eye = Tensor(backend.xp_of(q.data).eye(S, dtype=q.dtype))  # (S, S) values: v_j = e_j
        return F.scaled_dot_product_attention(q, k, eye, attn_mask=attn_mask, is_causal=is_causal)

    def extra_repr(self):
        ctx = f", context_dim={self.context_dim}" if self.context_dim != self.dim else ""
        return f"dim={self.dim}, num_heads={self.num_heads}, dropout={self.dropout}{ctx}"


class TransformerBlock(Module):
    """Pre-LN transformer block on (B, T, dim):

        x = x + Attn(LN(x))                       (causal if causal=True)
        x = x + CrossAttn(LN(x), context)         (only when cross_dim is given; context (B, S, cross_dim))
        x = x + MLP(LN(x)),  MLP = Linear(dim, mlp_ratio dim) - GELU - Linear(mlp_ratio dim, dim)

    Dropout (p = dropout) on the attention weights and on each branch before it joins the residual."""

    def __init__(self, dim, num_heads, mlp_ratio=4, dropout=0.0, causal=False, cross_dim=None):
        super().__init__()
        self.causal = causal
        self.ln1 = LayerNorm(dim)
        self.attn = MultiheadAttention(dim, num_heads, dropout=dropout)
        if cross_dim is not None:
            self.ln_cross = LayerNorm(dim)
            self.cross_attn = MultiheadAttention(dim, num_heads, dropout=dropout, context_dim=cross_dim)
        else:
            self.cross_attn = None
        self.ln2 = LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = Sequential(Linear(dim, hidden), GELU(), Linear(hidden, dim))
        self.drop = Dropout(dropout)

    def forward(self, x, context=None, attn_mask=None):  # (B, T, dim) -> (B, T, dim)
        x = x + self.drop(self.attn(self.ln1(x), attn_mask=attn_mask, is_causal=self.causal))
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("TransformerBlock: built with cross_dim, so forward() needs a context "
                                 "(B, S, cross_dim)")
            x = x + self.drop(self.cross_attn(self.ln_cross(x), context))
        return x + self.drop(self.mlp(self.ln2(x)))

    def forward_cached(self, x, cache, start, context=None):
        """forward() for the new positions start .. start + T - 1 of a causal sequence, x (B, T, dim), the
        keys and values of earlier positions read from (and the new ones written into) cache = (K, V)."""
        x = x + self.attn.forward_cached(self.ln1(x), cache, start)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.ln_cross(x), context)
        return x + self.mlp(self.ln2(x))

    def extra_repr(self):
        return f"causal={self.causal}"


def timestep_embedding(t, dim, max_period=10000, device=None):
    """Sinusoidal embedding of (integer or real) timesteps t of shape (B,), as in DDPM / ADM:

        f_i = exp(-ln(max_period) i / half),  i = 0 .. half - 1,  half = dim // 2
        emb = [cos(t f_0), ..., cos(t f_{half-1}), sin(t f_0), ..., sin(t f_{half-1})]   (B, dim)

    (a zero column is appended when dim is odd). A constant float32 Tensor (no gradient), on t's device
    unless `device` ('cpu' or 'cuda') is given."""
    t = t.data if isinstance(t, Tensor) else t
    xp = backend.xp_of(t)
    t = xp.asarray(t, dtype=np.float64).reshape(-1)                             # (B,)
    half = dim // 2
    freqs = xp.exp(-math.log(max_period) * xp.arange(half, dtype=np.float64) / half)  # (half,)
    args = t[:, None] * freqs[None, :]                                          # (B, half)
    emb = xp.concatenate([xp.cos(args), xp.sin(args)], axis=1)                  # (B, 2 half)
    if dim % 2:
        emb = xp.concatenate([emb, xp.zeros_like(emb[:, :1])], axis=1)
    emb = emb.astype(np.float32)
    return Tensor._make(backend.to_device(emb, device) if device is not None else emb, False, None)


class TimestepEmbedding(Module):
    """t (B,) -> sinusoidal (B, dim) -> Linear(dim, hidden) - SiLU - Linear(hidden, out_dim) -> (B, out_dim),
    out_dim = hidden unless given (ADM uses hidden = out_dim = 4 * base channels)."""

    def __init__(self, dim, hidden, out_dim=None, max_period=10000):
        super().__init__()
        self.dim, self.max_period = dim, max_period
        self.mlp = Sequential(Linear(dim, hidden), SiLU(), Linear(hidden, out_dim or hidden))

    def forward(self, t):
        device = self.mlp[0].weight.device  # t may come as a NumPy array for a model on the GPU
        return self.mlp(timestep_embedding(t, self.dim, self.max_period, device=device))  # (B, out_dim)

    def extra_repr(self):
        return f"dim={self.dim}"
