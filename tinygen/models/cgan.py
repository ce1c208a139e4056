"""Conditional GAN (Mirza & Osindero, 2014): tell both players the class, and G learns p(x | y).

The idea: feed the label y to the generator and to the discriminator as an extra input. D now asks
"is x a real image *of class y*?", so a generator that draws a good 3 when asked for a 7 is caught,
and G must use y. The game of gan.py becomes

    min_G max_D  E_{x,y}[log D(x, y)] + E_{z,y}[log(1 - D(G(z, y), y))]

    L_D = -E[log D(x, y)] - E[log(1 - D(G(z, y), y))],      L_G = -E[log D(G(z, y), y)]  (non-saturating)

Conditioning, as in the paper, by concatenation of the one-hot label e_y (10 values):
    G:  [z, e_y] (64 + 10) -> the DCGAN generator of dcgan.py
    D:  [x, e_y broadcast to ten 28 x 28 planes] (1 + 10 channels) -> the DCGAN discriminator
The networks are DCGAN's (not the paper's MLPs): they train reliably in a few epochs on a CPU.
During training G is asked for the labels of the real batch, so both terms see the same p(y).

Train:  python -m tinygen train cgan --dataset mnist
Recipe: 5 epochs of 938 steps at batch 64 (4,690 steps): 1,092 CPU seconds
        measured (one BLAS thread, on a shared 2-core machine).
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from . import register
from .dcgan import DCDiscriminator, DCGANConfig, DCGenerator
from .gan import GANBase, dcgan_init

NUM_CLASSES = 10


@dataclass
class CGANConfig(DCGANConfig):
    epochs: int = 5
    batch_size: int = 64


def one_hot(labels):
    """e_y as a NumPy (B, 10) float32 array (a constant: labels are not learned)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels)]


@register("cgan")
class CGAN(GANBase):
    """Conditional GAN (Mirza & Osindero 2014): DCGAN networks, one-hot label concatenated to G's and D's inputs."""
    Config = CGANConfig
    conditional = True
    sample_options = ("label",)

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.generator = dcgan_init(DCGenerator(c.z_dim, c.width, extra=NUM_CLASSES))
        self.discriminator = dcgan_init(DCDiscriminator(c.width, in_channels=1 + NUM_CLASSES))

    def fake(self, y, n, z=None):
        z = self.noise(n) if z is None else Tensor(z)                         # (n, z_dim)
        # G(z, y) = G([z, e_y])
        return self.generator(F.concat([z, Tensor(one_hot(y))], axis=1))       # (n, 1, 28, 28)

    def critic(self, x, y):
        B, _, H, W = x.shape
        planes = np.broadcast_to(one_hot(y)[:, :, None, None], (B, NUM_CLASSES, H, W))  # (B, 10, 28, 28)
        # D(x, y) = D([x, e_y planes])
        return self.discriminator(F.concat([x, Tensor(np.ascontiguousarray(planes))], axis=1))  # (B, 1)

    def sample(self, n, label=None, z=None):
        """n images (n, 1, 28, 28) in [0, 1] of class `label` (an int, or an array of n ints; None:
        0, 1, ..., 9, 0, 1, ...); z (n, z_dim) fixes the noise, else it is drawn from self.rng."""
        if label is None:
            labels = np.arange(n) % NUM_CLASSES
        else:
            labels = np.broadcast_to(np.asarray(label, dtype=np.int64), (n,))
        if labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}, got {np.unique(labels)}")
        return self.generate(labels, n, z)

    def visualize(self, images, labels, path):
        """A 10 x 10 grid: row k asks for class k, column j uses the same fixed z_j in every row."""
        from ..io import save_image_grid
        z = np.random.default_rng(0).standard_normal((NUM_CLASSES, self.config.z_dim), dtype=np.float32)
        rows = np.repeat(np.arange(NUM_CLASSES), NUM_CLASSES)                  # 0 x10, 1 x10, ...
        save_image_grid(self.sample(NUM_CLASSES ** 2, label=rows, z=np.tile(z, (NUM_CLASSES, 1))), path,
                        nrow=NUM_CLASSES, scale=2)
