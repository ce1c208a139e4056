"""The transformer stack, patches and position embeddings: what ViT, Image GPT, DiT and CLIP share.

    Transformer     a stack of pre-LN TransformerBlocks (attention.py) and the final LayerNorm;
                    forward_cached runs the next positions of a causal sequence over a KVCache
    patchify        (B, C, H, W) -> (B, N, C p p) tokens, N = (H/p)(W/p);  unpatchify inverts it
    PatchEmbed      patchify, then a Linear(C p p, dim): the "linear projection of flattened patches"
    LearnedPositionEmbedding           x + E_pos[:T],  E_pos ~ N(0, 0.02^2)   (GPT-2, ViT)
    sinusoidal_position_embedding      the fixed 1-D embedding of Vaswani et al. 2017
    sincos_2d_position_embedding       the fixed 2-D embedding of a patch grid (MAE, DiT)

A ViT forward pass, for orientation:

    tokens = PatchEmbed(4, 1, 64)(x)                      # (B, 49, 64) for 28x28 images
    tokens = concat([cls, tokens], axis=1)                # (B, 50, 64)
    h = Transformer(64, depth=4, num_heads=4)(pos(tokens))  # (B, 50, 64), final norm applied
    logits = head(h[:, 0])                                # the CLS token
"""
import numpy as np

import autograd.functional as F
from autograd import ShapeError, backend

from . import init
from .attention import TransformerBlock, timestep_embedding
from .layers import LayerNorm, Linear
from .module import Module, ModuleList, Parameter

__all__ = ["Transformer", "KVCache", "patchify", "unpatchify", "PatchEmbed", "LearnedPositionEmbedding",
           "sinusoidal_position_embedding", "sincos_2d_position_embedding"]


# ---------------------------------------------------------------------- the stack
class Transformer(Module):
    """depth pre-LN blocks, then a LayerNorm, on (B, T, dim) sequences (GPT-2 / ViT layout):

        h_0 = x
        h_k = Block_k(h_{k-1}, context)        k = 1 .. depth   (TransformerBlock, attention.py)
        y   = LN(h_depth)

    causal=True: position t attends only to positions <= t (Image GPT, the DALL-E prior).
    cross_dim: each block also cross-attends to a context (B, S, cross_dim) (text-conditioned models).
    attn_mask (boolean, True = may attend, or additive; broadcast to (B, H, T, T)) goes to every
    block's self-attention, combined with the causal mask when causal=True.

    forward(x, context=None, attn_mask=None, return_layers=()):
        returns y (B, T, dim); with return_layers = (k, ...) (0-based block indices, negative ones count
        from the end) returns (y, [h_{k+1}, ...]): the outputs of those blocks, before any final norm.
        Image GPT's linear probe reads a middle block: y, (h,) = net(x, return_layers=(depth // 2,))."""

    def __init__(self, dim, depth, num_heads, mlp_ratio=4, causal=False, cross_dim=None, dropout=0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"Transformer: depth must be at least 1, got {depth}")
        self.dim, self.depth, self.causal = dim, depth, causal
        self.blocks = ModuleList([TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                                   causal=causal, cross_dim=cross_dim) for _ in range(depth)])
        self.norm = LayerNorm(dim)

    def forward(self, x, context=None, attn_mask=None, return_layers=()):
        wanted = [self._layer_index(k) for k in return_layers]
        hidden = {}
        h = x                                                       # (B, T, dim)
        for k, block in enumerate(self.blocks):
            # h_k = Block_k(h_{k-1})
            h = block(h, context=context, attn_mask=attn_mask)     # (B, T, dim)
            if k in wanted:
                hidden[k] = h
        y = self.norm(h)                                            # (B, T, dim)
        return (y, [hidden[k] for k in wanted]) if return_layers else y

    # ------------------------------------------------------------------ sampling with a KV cache
    def new_cache(self, batch, length):
        """An empty KV cache for `batch` sequences of up to `length` positions: per block, the keys and
        values (B, H, length, dim / H) of the positions run so far, and `cache.length`, how many."""
        attn = self.blocks[0].attn
        xp = backend.xp_of(attn.q_proj.weight.data)
        shape = (batch, attn.num_heads, length, attn.head_dim)
        return KVCache([(xp.zeros(shape, np.float32), xp.zeros(shape, np.float32)) for _ in self.blocks])

    def forward_cached(self, x, cache, context=None):
        """The outputs y (B, T, dim) of the next T positions of a causal sequence, x (B, T, dim) their
        inputs, given the earlier positions' keys and values in `cache` (new_cache), which grows by T:

            y[:, i] = forward(x_all)[:, cache.length + i]     for the inputs x_all of every position so far

        Image GPT and DALL-E sample with it: the prompt in one call, then one position per call."""
        if not self.causal:
            raise ValueError("Transformer.forward_cached: a KV cache serves causal attention only (a later "
                             "position would change the earlier outputs otherwise)")
        start = cache.length
        h = x                                                       # (B, T, dim)
        for block, kv in zip(self.blocks, cache.blocks):
            h = block.forward_cached(h, kv, start, context=context)
        cache.length = start + x.shape[1]
        return self.norm(h)                                         # (B, T, dim)

    def _layer_index(self, k):
        if not -self.depth <= k < self.depth:
            raise ValueError(f"Transformer: return_layers index {k} is out of range for depth {self.depth} "
                             f"(valid: 0 .. {self.depth - 1}, or negative from the end)")
        return k % self.depth

    def extra_repr(self):
        return f"dim={self.dim}, depth={self.depth}, causal={self.causal}"


class KVCache:
    """The keys and values of the positions a causal Transformer has run so far (Transformer.new_cache):
    blocks[k] = (K, V), each (B, H, N, dim / H); positions 0 .. length - 1 are filled."""

    def __init__(self, blocks):
        self.blocks, self.length = blocks, 0


# ---------------------------------------------------------------------- patches
def _check_patch_grid(op, H, W, p):
    if p < 1 or H % p or W % p:
        raise ShapeError(f"{op}: image size {H}x{W} is not divisible by the patch size {p} "
                         f"(pad or crop the image, or choose a patch size that divides both)")
    return H // p, W // p


def patchify(x, patch_size):
    """Cut images into non-overlapping p x p patches, flattened in row-major (raster) order:

        (B, C, H, W) -> (B, N, C p p),   N = (H/p)(W/p),
        tokens[b, i w + j] = x[b, :, i p:(i+1) p, j p:(j+1) p].reshape(C p p)

    Each patch vector is laid out (C, p, p), as a Conv2d weight (D, C, p, p) is, so that
    Linear(C p p, D) on the patches equals Conv2d(C, D, kernel_size=p, stride=p). Built from reshape and
    transpose, so gradients flow through it."""
    if x.ndim != 4:
        raise ShapeError(f"patchify: expected images (B, C, H, W), got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    p = int(patch_size)
    h, w = _check_patch_grid("patchify", H, W, p)
    x = x.reshape(B, C, h, p, w, p)                                 # (B, C, h, p, w, p)
    x = x.transpose(0, 2, 4, 1, 3, 5)                               # (B, h, w, C, p, p)
    return x.reshape(B, h * w, C * p * p)                           # (B, N, C p p)


def unpatchify(tokens, patch_size, channels, height, width):
    """The inverse of patchify: (B, N, C p p) -> (B, C, H, W), N = (H/p)(W/p), tokens in raster order.
    (DiT's final Linear predicts C p p numbers per token; unpatchify turns them back into an image.)"""
    p, C, H, W = int(patch_size), int(channels), int(height), int(width)
    h, w = _check_patch_grid("unpatchify", H, W, p)
    if tokens.ndim != 3 or tokens.shape[1:] != (h * w, C * p * p):
        raise ShapeError(f"unpatchify: tokens of shape {tuple(tokens.shape)} do not make a {C}x{H}x{W} image "
                         f"in {p}x{p} patches: expected (B, {h * w}, {C * p * p})")
    B = tokens.shape[0]
    x = tokens.reshape(B, h, w, C, p, p)                            # (B, h, w, C, p, p)
    x = x.transpose(0, 3, 1, 4, 2, 5)                               # (B, C, h, p, w, p)
    return x.reshape(B, C, H, W)                                    # (B, C, H, W)


class PatchEmbed(Module):
    """ViT's patch embedding (Dosovitskiy et al. 2021, eq. 1): z_i = x_p^i E + b, E (C p p, dim):

        (B, C, H, W) -> patchify -> (B, N, C p p) -> Linear -> (B, N, dim)

    The same map as Conv2d(C, dim, kernel_size=p, stride=p) followed by flattening the grid (the
    reference code's form; a test shows they agree), written as the paper states it."""

    def __init__(self, patch_size, in_channels, dim, bias=True):
        super().__init__()
        self.patch_size, self.in_channels, self.dim = patch_size, in_channels, dim
        self.proj = Linear(in_channels * patch_size * patch_size, dim, bias=bias)

    def forward(self, x):  # (B, C, H, W) -> (B, N, dim)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"PatchEmbed: expected images (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        return self.proj(patchify(x, self.patch_size))

    def extra_repr(self):
        return f"patch_size={self.patch_size}, in_channels={self.in_channels}, dim={self.dim}"


# ---------------------------------------------------------------------- position embeddings
class LearnedPositionEmbedding(Module):
    """A trained vector per position, added to the tokens (GPT-2, ViT):

        y[:, t] = x[:, t] + E_pos[t],   E_pos (num_positions, dim) ~ N(0, 0.02^2) at initialisation

    forward(x (B, T, dim)) -> (B, T, dim), for any T <= num_positions (positions 0 .. T-1)."""

    def __init__(self, num_positions, dim):
        super().__init__()
        self.num_positions, self.dim = num_positions, dim
        self.weight = Parameter(np.zeros((num_positions, dim), np.float32))
        init.normal_(self.weight, std=0.02)

    def forward(self, x):
        if x.ndim != 3 or x.shape[2] != self.dim or x.shape[1] > self.num_positions:
            raise ShapeError(f"LearnedPositionEmbedding: input {tuple(x.shape)} is not (B, T, {self.dim}) with "
                             f"T <= num_positions = {self.num_positions}")
        T = x.shape[1]
        # y = x + E_pos[:T]   (broadcast over the batch)
        return x + self.weight[:T]

    def extra_repr(self):
        return f"{self.num_positions}, {self.dim}"


def sinusoidal_position_embedding(num_positions, dim, max_period=10000, device=None):
    """The fixed position embedding of Vaswani et al. 2017, a constant Tensor (num_positions, dim):

        PE(t, i)        = cos(t / max_period^(2i/dim)),   i = 0 .. dim/2 - 1
        PE(t, dim/2 + i) = sin(t / max_period^(2i/dim))

    the same frequencies as the paper, with the cosines and sines in two halves instead of interleaved
    (a fixed permutation of the channels, which the first Linear absorbs): exactly timestep_embedding
    of the positions 0 .. num_positions-1, so diffusion timesteps and sequence positions share one
    function."""
    positions = np.arange(num_positions)
    # PE(t) = timestep_embedding(t)
    return timestep_embedding(positions, dim, max_period=max_period, device=device)   # (T, dim)


def sincos_2d_position_embedding(grid_h, grid_w, dim, max_period=10000, device=None):
    """The fixed 2-D embedding of a grid_h x grid_w patch grid (MAE, DiT), a constant Tensor (N, dim),
    rows in patchify's raster order (N = grid_h grid_w):

        PE(i, j) = [PE_1d(i), PE_1d(j)],   each half of dim/2 channels (sinusoidal_position_embedding)

    so half the channels encode the patch's row i, the other half its column j. dim must be divisible by 4."""
    if dim % 4:
        raise ValueError(f"sincos_2d_position_embedding: dim must be divisible by 4 (a cos and a sin half for "
                         f"each of the two axes), got {dim}")
    rows = np.repeat(np.arange(grid_h), grid_w)                      # (N,): i of patch n = i grid_w + j
    cols = np.tile(np.arange(grid_w), grid_h)                        # (N,): j
    # PE(i, j) = [PE_1d(i), PE_1d(j)]
    return F.concat([timestep_embedding(rows, dim // 2, max_period, device=device),
                     timestep_embedding(cols, dim // 2, max_period, device=device)], axis=1)  # (N, dim)
