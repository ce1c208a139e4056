"""RealNVP (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP").

A normalising flow: an invertible network f maps an image x to a code z = f(x) of the same size,
and the change-of-variables formula gives the EXACT log-likelihood, which we maximise directly:

    log p_X(x) = log p_Z(f(x)) + log |det df/dx|,      p_Z = N(0, I)
    sampling:  z ~ N(0, T^2 I),  x = f^-1(z)            (temperature T; T = 1 is the model itself)

f is a stack of bijections, each with an inverse and a log-determinant that are cheap to compute:

    affine coupling with a binary mask b (b = 1: the half that is kept and conditioned on):
        y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))      i.e. y_1 = x_1,  y_2 = x_2 e^s + t
        x = b * y + (1 - b) * (y - t(b * y)) * exp(-s(b * y))      (b * y = b * x, so s and t are known)
        log |det dy/dx| = sum_i (1 - b_i) s_i                      (the Jacobian is triangular)
        s = scale * tanh(raw_s)                                    (bounded, so exp(s) cannot explode)
    s and t come from a small ResNet on b * x; it never has to be inverted, so it can be anything.
    Masks alternate so that every pixel is transformed: checkerboard masks at 28 x 28, then a squeeze
    (B, 1, 28, 28) -> (B, 4, 14, 14) (each 2 x 2 patch becomes 4 channels), channel masks (the first
    or the second half of the channels), then checkerboard masks again at 14 x 14.

Data. Pixels are levels k in {0, ..., 255}; a density on discrete data is meaningless, so:

    x = (k + u) / 256,  u ~ U[0, 1)^D                      uniform dequantisation, x in [0, 1)^D
    p = alpha + (1 - 2 alpha) x,   y = logit(p) = log p - log(1 - p),   alpha = 0.05  (the paper's MNIST)
    log |dy/dx| = sum_i [log(1 - 2 alpha) - log p_i - log(1 - p_i)]   (the logit layer's log-det)

The logit layer is the first bijection of f, so log p_X(x) above is a density on [0, 1]^D. Each
8-bit image k owns the cell [k/256, (k+1)/256)^D of volume 256^-D, and by Jensen

    -log P(k) <= E_u[-log p_X(x)] + D log 256          (nats per image; D = 784)
    bits/dim  = (-log p_X(x) + D log 256) / (D log 2)   (what the loss and the evaluation report)

Recipe (Config): 3 + 3 + 3 couplings, each net 3x3 conv -> 1 residual block (16 channels at 28 x 28,
32 at 14 x 14) -> zero-initialised 3x3 conv (every coupling starts as the identity), no BatchNorm (so
the inverse is exact in any mode), Adam 1e-3 with a cosine decay to 0, batch 64, 8 epochs = 7,496 steps.
Figures, those of shorter, constant-lr and wider runs, and the paper's: docs/models/realnvp.md.

    python -m tinygen train realnvp --no-progress
    python -m tinygen evaluate realnvp --checkpoint runs/realnvp-mnist/last.npz
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import nn
from ..io import save_image_grid
from .base import Config, Model, bits_per_dim, dequantized_nll_nats, inference

ALPHA = 0.05                   # the logit transform squeezes [0, 1] into [alpha, 1 - alpha]
LOG_2PI = math.log(2 * math.pi)


@dataclass
class RealNVPConfig(Config):
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # a decay to 0; "constant" keeps lr
    grad_clip: float = 100.0   # trims the spikes: in the first epoch the norm is often 50-150
    couplings: int = 3         # couplings per stage (masks alternate within a stage)
    hidden_28: int = 16        # channels of the coupling nets at 28 x 28 (checkerboard stage)
    hidden_14: int = 32        # ... at 14 x 14 (channel stage, then checkerboard stage)
    blocks: int = 1            # residual blocks per coupling net
    couplings_7: int = 0       # channel couplings after a second squeeze to 7 x 7 (0: no such stage)
    hidden_7: int = 64         # ... their channels
    quick_steps: int = 200


# ---------------------------------------------------------------------- data: dequantise, logit
def dequantize(images, rng):
    """uint8 levels k (B, 1, H, W) -> x = (k + u) / 256 with u ~ U[0, 1): float32 in [0, 1)."""
    u = rng.random(images.shape, dtype=np.float32)
    # x = (k + u) / 256
    return (images.astype(np.float32) + u) / 256.0


class Logit(nn.Module):
    """x in [0, 1] -> y = logit(alpha + (1 - 2 alpha) x), the flow's first bijection."""

    def forward(self, x):
        # p = alpha + (1 - 2 alpha) x
        p = ALPHA + (1 - 2 * ALPHA) * x
        # y = log p - log(1 - p)
        y = p.log() - (1 - p).log()
        # log |dy/dx| = sum_i [log(1 - 2 alpha) - log p_i - log(1 - p_i)]
        log_det = (math.log(1 - 2 * ALPHA) - p.log() - (1 - p).log()).sum(axis=(1, 2, 3))
        return y, log_det

    def inverse(self, y):
        # x = (sigmoid(y) - alpha) / (1 - 2 alpha)
        return (F.sigmoid(y) - ALPHA) / (1 - 2 * ALPHA)


# ---------------------------------------------------------------------- squeeze and masks
def squeeze(x):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2 x 2 patch becomes 4 channels (c, dy, dx)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // 2, 2, W // 2, 2)                   # (B, C, H/2, dy, W/2, dx)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x):
    """The inverse of squeeze: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    B, C4, H, W = x.shape
    x = x.reshape(B, C4 // 4, 2, 2, H, W)                       # (B, C, dy, dx, H, W)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * H, 2 * W)


class Squeeze(nn.Module):
    """Squeeze as a bijection: a permutation of the entries, so log |det| = 0."""

    def forward(self, x):
        return squeeze(x), 0.0

    def inverse(self, y):
        return unsqueeze(y)


def checkerboard_mask(shape, parity):
    """b (1, C, H, W) float32: 1 where (i + j) % 2 == parity (the kept half), 0 elsewhere."""
    C, H, W = shape
    i, j = np.arange(H)[:, None], np.arange(W)[None, :]
    b = ((i + j) % 2 == parity).astype(np.float32)             # (H, W)
    return np.broadcast_to(b, (1, C, H, W)).copy()


def channel_mask(shape, parity):
    """b (1, C, 1, 1) float32: 1 on the first half of the channels (parity 0) or the second (parity 1)."""
    C = shape[0]
    b = (np.arange(C) < C // 2).astype(np.float32)
    b = b if parity == 0 else 1 - b
    return b.reshape(1, C, 1, 1)


# ---------------------------------------------------------------------- the coupling layer
class CouplingResBlock(nn.Module):
    """h + conv(relu(conv(relu(h)))), 3 x 3 convolutions keeping (B, H, h, w) (no time input, unlike ddpm's)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h):
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class CouplingNet(nn.Module):
    """b * x (B, C, h, w) -> raw_s, t (B, C, h, w) each; the last conv starts at zero."""

    def __init__(self, channels, hidden, blocks):
        super().__init__()
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[CouplingResBlock(hidden) for _ in range(blocks)])
        self.out = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)   # raw_s = t = 0: the coupling starts as the identity
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.out(F.relu(self.blocks(self.inp(x))))              # (B, 2C, h, w)
        C = x.shape[1]
        return h[:, :C], h[:, C:]


class AffineCoupling(nn.Module):
    """y = b * x + (1 - b) * (x * exp(s) + t), s and t computed from b * x."""

    def __init__(self, mask, hidden, blocks):
        super().__init__()
        C = mask.shape[1]
        self.register_buffer("mask", mask, persistent=False)       # (1, C, h, w) or (1, C, 1, 1)
        self.net = CouplingNet(C, hidden, blocks)
        self.scale = nn.Parameter(np.ones((1, C, 1, 1), np.float32))

    def _s_t(self, x_kept):
        """s and t, both zero on the kept half (b = 1), from x_kept = b * x."""
        b = Tensor(self.mask, dtype=x_kept.dtype)
        raw_s, t = self.net(x_kept)
        # s = (1 - b) * scale * tanh(raw_s),  t = (1 - b) * t
        return (1 - b) * self.scale * F.tanh(raw_s), (1 - b) * t

    def forward(self, x):
        s, t = self._s_t(x * Tensor(self.mask, dtype=x.dtype))
        # y = x * exp(s) + t   (= x where b = 1, since s = t = 0 there)
        y = x * s.exp() + t
        # log |det dy/dx| = sum_i (1 - b_i) s_i
        return y, s.sum(axis=(1, 2, 3))

    def inverse(self, y):
        s, t = self._s_t(y * Tensor(self.mask, dtype=y.dtype))     # b * y = b * x
        # x = (y - t) * exp(-s)
        return (y - t) * (-s).exp()


def build_flow(shape, c):
    """The bijections in order, and the shape of z:
    logit | checkerboard couplings on (C, H, W) | squeeze | channel couplings, then checkerboard
    couplings on (4C, H/2, W/2) | with couplings_7 > 0: squeeze | channel couplings on (16C, H/4, W/4),
    where a 3 x 3 conv sees a quarter of the image. Masks alternate within a stage, so each half is
    transformed in turn."""
    C, H, W = shape
    half = (4 * C, H // 2, W // 2)
    layers = ([Logit()]
              + [AffineCoupling(checkerboard_mask(shape, i % 2), c.hidden_28, c.blocks) for i in range(c.couplings)]
              + [Squeeze()]
              + [AffineCoupling(channel_mask(half, i % 2), c.hidden_14, c.blocks) for i in range(c.couplings)]
              + [AffineCoupling(checkerboard_mask(half, i % 2), c.hidden_14, c.blocks) for i in range(c.couplings)])
    if c.couplings_7 == 0:
        return nn.ModuleList(layers), half
    quarter = (16 * C, H // 4, W // 4)
    layers += ([Squeeze()]
               + [AffineCoupling(channel_mask(quarter, i % 2), c.hidden_7, c.blocks) for i in range(c.couplings_7)])
    return nn.ModuleList(layers), quarter


# ---------------------------------------------------------------------- the model
class RealNVP(Model):
    """RealNVP (Dinh et al. 2017): affine coupling flow, exact likelihood, bits/dim on dequantised MNIST."""
    Config = RealNVPConfig
    tiny_config = {"couplings": 1, "hidden_28": 4, "hidden_14": 4, "batch_size": 8}

    def __init__(self, config=None, shape=(1, 28, 28)):
        super().__init__(config)
        c = self.config
        self.shape = tuple(shape)
        self.num_dims = int(np.prod(shape))
        self.layers, self.z_shape = build_flow(self.shape, c)

    def prepare_batch(self, images, labels):
        """uint8 (B, 1, 28, 28) -> x = (k + u) / 256, a fresh u from self.rng at every step."""
        return Tensor(dequantize(images, self.rng)), labels

    # ------------------------------------------------------------------ the flow
    def forward(self, x):
        """x (B, C, H, W) in [0, 1] -> z (B, *z_shape) and log |det dz/dx| (B,) in nats."""
        log_det = 0.0
        for layer in self.layers:
            x, ld = layer(x)
            # log |det df/dx| = sum over layers of log |det d(layer)/d(input)|  (the chain rule)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z):
        """z (B, *z_shape) -> x (B, C, H, W), the layers undone in reverse order."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x):
        """log p_X(x) (B,) in nats: the density on [0, 1]^D of dequantised images x."""
        z, log_det = self.forward(x)
        # log p_Z(z) = -1/2 sum_i (z_i^2 + log 2 pi)
        log_pz = -0.5 * (z * z + LOG_2PI).sum(axis=(1, 2, 3))
        # log p_X(x) = log p_Z(f(x)) + log |det df/dx|
        return log_pz + log_det

    def loss(self, batch):
        x, _ = batch
        # loss = mean over the batch of bits/dim = (-log p_X(x) + D log 256) / (D log 2)
        loss = bits_per_dim(dequantized_nll_nats(-self.log_prob(x), self.num_dims), self.num_dims).mean()
        return loss, {"bpd": loss.item()}

    # ------------------------------------------------------------------ evaluation
    @inference
    def evaluate_nll(self, images, n=None, batch_size=500):
        """Bits/dim of uint8 test images, dequantised ONCE with np.random.default_rng(0) so that every
        run and every model is scored on the same x (a one-sample estimate of E_u[-log p(x)])."""
        x = dequantize(images[:n], np.random.default_rng(0))
        log_px = np.concatenate([self.log_prob(Tensor(x[i:i + batch_size])).numpy()
                                 for i in range(0, len(x), batch_size)])
        nats = dequantized_nll_nats(float(-log_px.mean()), self.num_dims)  # -log P(k) <= -log p_X(x) + D log 256
        return {"bits_per_dim": float(bits_per_dim(nats, self.num_dims)), "nll_nats": nats}

    def evaluate(self, images, labels):
        return {"test_bpd": self.evaluate_nll(images)["bits_per_dim"]}

    # ------------------------------------------------------------------ sampling
    @inference
    def sample(self, n, temperature=1.0, eps=None):
        """x = f^-1(T eps), eps ~ N(0, I) from self.rng (or given): (n, C, H, W) in [0, 1], NumPy."""
        if eps is None:
            eps = self.rng.standard_normal((n, *self.z_shape), dtype=np.float32)
        # z = T eps ~ N(0, T^2 I): T < 1 trades variety for cleaner digits
        x = self.inverse(Tensor(temperature * eps))
        return np.clip(x.numpy(), 0.0, 1.0)

    def temperature_grid(self, path, temperatures=(0.5, 0.7, 1.0), per_row=10, rows=2):
        """Save `rows` rows of samples per temperature; column j of every block shares its eps."""
        eps = self.rng.standard_normal((rows * per_row, *self.z_shape), dtype=np.float32)
        images = np.concatenate([self.sample(len(eps), temperature=T, eps=eps) for T in temperatures])
        save_image_grid(images, path, nrow=per_row, scale=2)
        return images

    def visualize(self, images, labels, path):
        """Samples at temperatures 0.5 (top rows), 0.7 and 1.0 (bottom rows)."""
        self.temperature_grid(path)
