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
Recipe: 5 epochs of 938 steps at batch 64 (4,690 steps). Figures: docs/models/cgan.md.
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from ..data import N_CLASSES
from .dcgan import DCDiscriminator, DCGANConfig, DCGenerator
from .gan import GANBase, dcgan_init


@dataclass
class CGANConfig(DCGANConfig):
    epochs: int = 5
    batch_size: int = 64


class CGAN(GANBase):
    """Conditional GAN (Mirza & Osindero 2014): DCGAN networks, one-hot label concatenated to G's and D's inputs."""
    Config = CGANConfig
    conditional = True
    sample_options = ("label",)
    tiny_config = {"z_dim": 8, "width": 4, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.generator = dcgan_init(DCGenerator(c.z_dim, c.width, extra=N_CLASSES))
        self.discriminator = dcgan_init(DCDiscriminator(c.width, in_channels=1 + N_CLASSES))

    def fake(self, y, n, z=None):
        z = self.noise(n) if z is None else Tensor(z)                         # (n, z_dim)
        # G(z, y) = G([z, e_y])
        return self.generator(F.concat([z, F.one_hot(np.asarray(y), N_CLASSES)], axis=1))  # (n, 1, 28, 28)

    def critic(self, x, y):
        B, _, H, W = x.shape
        e_y = F.one_hot(np.asarray(y), N_CLASSES).numpy()                    # (B, 10)
        planes = np.broadcast_to(e_y[:, :, None, None], (B, N_CLASSES, H, W))  # (B, 10, 28, 28)
        # D(x, y) = D([x, e_y planes])
        return self.discriminator(F.concat([x, Tensor(np.ascontiguousarray(planes))], axis=1))  # (B, 1)

    def sample(self, n, label=None, z=None):
        """n images (n, 1, 28, 28) in [0, 1] of class `label` (an int, or an array of n ints; None:
        0, 1, ..., 9, 0, 1, ...); z (n, z_dim) fixes the noise, else it is drawn from self.rng."""
        return self.generate(self.labels_for(n, label), n, z)

    def visualize(self, images, labels, path):
        """A 10 x 10 grid: row k asks for class k, column j uses the same fixed z_j in every row."""
        from ..io import save_image_grid
        z = np.random.default_rng(0).standard_normal((N_CLASSES, self.config.z_dim), dtype=np.float32)
        rows = np.repeat(np.arange(N_CLASSES), N_CLASSES)                  # 0 x10, 1 x10, ...
        save_image_grid(self.sample(N_CLASSES ** 2, label=rows, z=np.tile(z, (N_CLASSES, 1))), path,
                        nrow=N_CLASSES, scale=2)
