"""Vector quantisation: the discrete bottleneck of VQ-VAE (van den Oord et al. 2017), whose code indices
Image GPT-style priors and DALL-E model as tokens.

An encoder output z_e(x) (one D-vector per position) is replaced by its nearest codebook vector:

    k = argmin_i ||z_e - e_i||^2,     z_q = e_k                          (codebook e_1 .. e_K, each in R^D)

argmin has no gradient, so the decoder's gradient is copied to the encoder (straight-through):

    z_q = z_e + sg(e_k - z_e)         forward: e_k;  backward: dL/dz_e = dL/dz_q

and two terms pull the codes and the encoder outputs towards each other (sg = stop-gradient):

    L_codebook   = ||sg(z_e) - e_k||^2        moves the codes (only)
    L_commitment = ||z_e - sg(e_k)||^2        keeps the encoder close to its codes (only), weighted by beta

With ema=True the codebook is not trained by gradient: each code becomes the running mean of the
encoder outputs assigned to it (exponential moving averages of counts and sums, Razavi et al. 2019),
and only beta L_commitment is a loss. Two common fixes for unused ("dead") codes are built in: k-means
initialisation of the codebook on the first training batch, and restarting codes that went unused for
dead_after training steps at random encoder outputs of the current batch. The codebook perplexity
exp(H(mean one-hot)) counts the codes in effective use (1 .. K).

Layout: channel-first, as a Conv2d encoder gives it: z (B, D, H, W), or any (B, D, *spatial) such as
(B, D) or (B, D, L); indices are (B, *spatial). For transformer tokens (B, T, D), transpose to (B, D, T).
"""
import math
from typing import NamedTuple

import numpy as np

import autograd.functional as F
from autograd import ShapeError, Tensor, backend

from . import init
from .module import Module, Parameter

__all__ = ["VectorQuantizer", "Quantized", "squared_distances", "kmeans", "kmeans_plus_plus", "perplexity"]


class Quantized(NamedTuple):
    """What VectorQuantizer.forward returns.

    z_q              (B, D, *spatial) Tensor: the codes e_k, with the straight-through gradient to z
    loss             scalar Tensor: codebook_loss + beta commitment_loss (ema=True: beta commitment_loss)
    indices          (B, *spatial) int64 array (on z's device): the code k at each position
    codebook_loss    scalar Tensor: mean over elements of (sg(z) - e_k)^2 (0 with ema=True)
    commitment_loss  scalar Tensor: mean over elements of (z - sg(e_k))^2, not yet weighted by beta
    perplexity       float: exp(-sum_i p_i log p_i), p_i the fraction of positions assigned to code i
    codes_used       int: how many distinct codes this batch used"""
    z_q: Tensor
    loss: Tensor
    indices: object
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: float
    codes_used: int


def squared_distances(z, e):
    """||z_j - e_i||^2 for every row z_j of z (N, D) and e_i of e (K, D), as an (N, K) array, by

        ||z - e||^2 = ||z||^2 - 2 z . e + ||e||^2        (one matmul instead of an (N, K, D) difference)"""
    d = z @ e.T                                                     # (N, K): z . e
    d *= d.dtype.type(-2)                                           # in place: (N, K) is the big array
    d += (e * e).sum(axis=1)[None, :]                               # + ||e||^2   (1, K)
    d += (z * z).sum(axis=1, keepdims=True)                         # + ||z||^2   (N, 1)
    return d


def kmeans_plus_plus(x, k, rng=None):
    """k-means++ starting rows (Arthur & Vassilvitskii 2007), (k, D): the first a random row of x (N, D),
    each next drawn with probability proportional to its squared distance to the nearest row chosen so far,

        P(x_j) = D(x_j)^2 / sum_i D(x_i)^2,

    so that far-apart groups each get a start (random rows often start two centroids in one group, and
    Lloyd's steps cannot move one of them out). Rows equal to a chosen one are never chosen again, while
    another row is left. For kmeans(..., start=)."""
    rng = rng if rng is not None else init.get_rng()
    xp = backend.xp_of(x)
    chosen = [int(rng.integers(len(x)))]
    d2 = np.zeros(len(x)) + np.inf                                  # (N,): D(x_j)^2 so far
    for _ in range(1, k):
        new = backend.to_numpy(squared_distances(x, x[chosen[-1]:chosen[-1] + 1])[:, 0]).astype(np.float64)
        d2 = np.minimum(d2, np.maximum(new, 0))                     # (rounding can make it slightly negative)
        total = d2.sum()
        chosen.append(int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x))))
    return x[xp.asarray(chosen)].copy()


def kmeans(x, k, iters=10, rng=None, start=None):
    """Lloyd's k-means on the rows of x (N, D), vectorised: returns (centroids (k, D), counts (k,)).

    Centroids start at k distinct random rows (with repetition when N < k), or at the rows of start (k, D) when given
    (data with many repeated rows, such as the gray levels of digits, mostly 0, would start several
    centroids on one value; evenly spaced levels do not); then, iters times,
        assign each row to its nearest centroid:   a_j = argmin_i ||x_j - c_i||^2
        move each centroid to its rows' mean:       c_i = mean{x_j : a_j = i}   (an empty cluster stays put)
    counts are the cluster sizes of the last assignment. rng: a NumPy Generator (default: tinygen.nn's)."""
    rng = rng if rng is not None else init.get_rng()
    xp = backend.xp_of(x)
    N, D = x.shape
    if start is not None:
        if tuple(start.shape) != (k, D):
            raise ValueError(f"kmeans: start must have shape (k, D) = {(k, D)}, got {tuple(start.shape)}")
        c = xp.asarray(start, dtype=x.dtype).copy()                 # (k, D)
    else:
        c = x[xp.asarray(rng.choice(N, size=k, replace=N < k))].copy()   # (k, D)
    counts = xp.zeros(k, dtype=np.int64)
    for _ in range(iters):
        # a_j = argmin_i ||x_j - c_i||^2
        a = squared_distances(x, c).argmin(axis=1)                  # (N,)
        counts = xp.bincount(a, minlength=k)                        # (k,)
        sums = backend.scatter_add(xp, xp.zeros((k, D), dtype=x.dtype), a, x)  # (k, D)
        # c_i = sum_{a_j = i} x_j / |{j : a_j = i}|
        c = xp.where(counts[:, None] > 0, sums / xp.maximum(counts, 1)[:, None].astype(x.dtype), c)
    return c, counts


class VectorQuantizer(Module):
    """The VQ-VAE codebook: K = num_codes vectors of size D = dim; see the module docstring for the math.

    forward(z (B, D, *spatial)) -> Quantized(z_q, loss, indices, codebook_loss, commitment_loss,
    perplexity, codes_used). In training mode it also (once) k-means-initialises the codebook on the
    batch, updates the codebook by EMA (ema=True), and restarts dead codes; in eval mode it only
    quantises. encode(z) -> indices, decode_indices(indices) -> (B, D, *spatial) code vectors.

    Arguments:
        beta         weight of the commitment term (0.25 in the paper)
        ema, decay   train the codebook by exponential moving averages with this decay instead of by
                     gradient; eps is the Laplace smoothing of the EMA counts
        kmeans_init  replace the random codebook by k-means centroids (kmeans_iters Lloyd steps) of the
                     first training batch's encoder outputs
        restart_dead a code unused for dead_after consecutive training batches is moved to a random
                     encoder output of the current batch

    State (all in state_dict, so checkpoints resume exactly): codebook (K, D) (a Parameter, or a buffer
    with ema=True), ema_count (K,) and ema_sum (K, D) (ema=True), unused_steps (K,) and initialized
    (whether k-means has run: a loaded checkpoint is never re-initialised)."""

    def __init__(self, num_codes, dim, beta=0.25, ema=False, decay=0.99, eps=1e-5, kmeans_init=True,
                 kmeans_iters=10, restart_dead=True, dead_after=100):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must lie in [0, 1), got {decay}")
        if dead_after < 1:
            raise ValueError(f"VectorQuantizer: dead_after must be a positive number of steps, got {dead_after}")
        self.num_codes, self.dim, self.beta, self.ema = num_codes, dim, beta, ema
        self.decay, self.eps, self.kmeans_iters = decay, eps, kmeans_iters
        self.kmeans_init, self.restart_dead, self.dead_after = kmeans_init, restart_dead, dead_after
        # e_i ~ U(-1/K, 1/K), as in the VQ-VAE reference implementations
        e = init.get_rng().uniform(-1 / num_codes, 1 / num_codes, size=(num_codes, dim)).astype(np.float32)
        if ema:
            self.register_buffer("codebook", e)
            self.register_buffer("ema_count", np.ones(num_codes, np.float32))  # so that e_i = m_i / n_i at start
            self.register_buffer("ema_sum", e.copy())
        else:
            self.codebook = Parameter(e)
        self.register_buffer("unused_steps", np.zeros(num_codes, np.int64))
        self.register_buffer("initialized", np.array(not kmeans_init))

    # ------------------------------------------------------------------ lookups
    def _codebook_tensor(self):
        return self.codebook if not self.ema else Tensor._make(self.codebook, False, None)

    def _codebook_array(self):
        return self.codebook.data if not self.ema else self.codebook

    def _flat(self, z):
        """(B, D, *spatial) array -> (N, D) array, N = B prod(spatial)."""
        xp = backend.xp_of(z)
        return xp.moveaxis(z, 1, -1).reshape(-1, self.dim)

    def _check(self, z):
        if not isinstance(z, Tensor) or z.ndim < 2 or z.shape[1] != self.dim:
            shape = tuple(z.shape) if hasattr(z, "shape") else type(z).__name__
            raise ShapeError(f"VectorQuantizer: expected a channel-first Tensor (B, {self.dim}, *spatial), got "
                             f"{shape}; transpose tokens (B, T, D) to (B, D, T)")

    def _nearest(self, z_flat):
        # k = argmin_i ||z - e_i||^2
        return squared_distances(z_flat, self._codebook_array()).argmin(axis=1)   # (N,)

    def encode(self, z):
        """The nearest code at each position: z (B, D, *spatial) -> indices (B, *spatial) int64 (no side effects)."""
        self._check(z)
        return self._nearest(self._flat(z.data)).reshape((z.shape[0],) + tuple(z.shape[2:]))

    def decode_indices(self, indices):
        """The code vectors e_k: indices (B, *spatial) -> (B, D, *spatial) Tensor (a gradient reaches the
        codebook when it is a Parameter). What a VQ-VAE decoder gets when sampling from a prior."""
        idx = indices.data if isinstance(indices, Tensor) else indices
        e = F.embedding(idx, self._codebook_tensor())                # (B, *spatial, D)
        n = e.ndim
        return e.transpose(0, n - 1, *range(1, n - 1))              # (B, D, *spatial)

    # ------------------------------------------------------------------ forward
    def forward(self, z):
        self._check(z)
        xp = backend.xp_of(z.data)
        z_flat = self._flat(z.data)                                  # (N, D) array, no gradient
        if self.training and not bool(self.initialized):
            self._kmeans_initialise(z_flat)
        k = self._nearest(z_flat)                                    # (N,)
        indices = k.reshape((z.shape[0],) + tuple(z.shape[2:]))     # (B, *spatial)
        e = self.decode_indices(indices)                             # (B, D, *spatial): e_k
        # L_commitment = ||z - sg(e_k)||^2  (mean over elements)
        commitment = F.mse_loss(z, e.detach())
        if self.ema:
            codebook_loss = Tensor._make(xp.zeros((), dtype=z.dtype), False, None)
            loss = self.beta * commitment
        else:
            # L_codebook = ||sg(z) - e_k||^2
            codebook_loss = F.mse_loss(e, z.detach())
            loss = codebook_loss + self.beta * commitment
        # z_q = z + sg(e_k - z): the value of e_k, the gradient of z
        z_q = z + (e - z).detach()
        counts = xp.bincount(k, minlength=self.num_codes)            # (K,): c_i = |{j : k_j = i}|
        if self.training:
            if self.ema:
                self._ema_update(z_flat, k, counts)
            if self.restart_dead:
                self._restart_dead_codes(z_flat, counts)
        return Quantized(z_q, loss, indices, codebook_loss, commitment, perplexity(counts), int((counts > 0).sum()))

    # ------------------------------------------------------------------ codebook upkeep (training mode)
    def _set_codes(self, which, vectors):
        """Move codes `which` to `vectors` (and restart their EMA statistics there)."""
        self._codebook_array()[which] = vectors
        if self.ema:
            self.ema_count[which] = 1
            self.ema_sum[which] = vectors

    def _kmeans_initialise(self, z_flat):
        c, counts = kmeans(z_flat, self.num_codes, self.kmeans_iters)
        self._codebook_array()[...] = c
        if self.ema:
            n = backend.xp_of(c).maximum(counts, 1).astype(np.float32)
            self.ema_count[...] = n
            # m_i = c_i n_i, so that e_i = m_i / n_i = c_i
            self.ema_sum[...] = c * n[:, None]
        self.initialized[...] = True

    def _ema_update(self, z_flat, k, counts):
        """The codebook as running means of its encoder outputs (van den Oord et al. 2017, appendix A.1):

            n_i <- gamma n_i + (1 - gamma) c_i,               c_i = |{j : k_j = i}|
            m_i <- gamma m_i + (1 - gamma) sum_{j: k_j = i} z_j
            e_i  = m_i / n~_i,   n~_i = (n_i + eps) / (n + K eps) n,  n = sum_i n_i   (Laplace smoothing)"""
        xp = backend.xp_of(z_flat)
        g = np.float32(self.decay)
        sums = backend.scatter_add(xp, xp.zeros((self.num_codes, self.dim), dtype=z_flat.dtype), k, z_flat)
        # n_i <- gamma n_i + (1 - gamma) c_i
        self.ema_count[...] = g * self.ema_count + (1 - g) * counts.astype(np.float32)
        # m_i <- gamma m_i + (1 - gamma) sum_{k_j = i} z_j
        self.ema_sum[...] = g * self.ema_sum + (1 - g) * sums
        n = self.ema_count.sum()
        # n~_i = (n_i + eps) / (n + K eps) n
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
        # e_i = m_i / n~_i
        self.codebook[...] = self.ema_sum / smoothed[:, None]

    def _restart_dead_codes(self, z_flat, counts):
        """Codes unused for dead_after consecutive batches jump to random encoder outputs of this batch."""
        xp = backend.xp_of(z_flat)
        self.unused_steps[...] = xp.where(counts > 0, 0, self.unused_steps + 1)
        dead = xp.nonzero(self.unused_steps >= self.dead_after)[0]
        if dead.size == 0:
            return
        N = len(z_flat)
        rows = xp.asarray(init.get_rng().choice(N, size=int(dead.size), replace=N < dead.size))
        self._set_codes(dead, z_flat[rows])
        self.unused_steps[dead] = 0

    def extra_repr(self):
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}"
                + (f", decay={self.decay}" if self.ema else ""))


def perplexity(counts):
    """exp(H(p)), p_i = c_i / sum(c), H(p) = -sum_i p_i log p_i (0 log 0 = 0): from 1 (a single code
    for everything) to K (all codes equally often). counts (K,) of any backend; returns a float."""
    c = backend.to_numpy(counts).astype(np.float64)
    p = c[c > 0] / c.sum()
    # H = -sum_i p_i log p_i
    return float(math.exp(-(p * np.log(p)).sum()))
