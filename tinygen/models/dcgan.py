"""DCGAN (Radford, Metz & Chintala, 2016): the GAN game of gan.py played by convolutional networks.

The idea: replace the MLPs by all-convolutional networks with a few architectural rules that made
GAN training stable: strided convolutions instead of pooling (the networks learn their own up- and
down-sampling), BatchNorm in both networks (not on G's output or D's input), ReLU in G with tanh on
the output, LeakyReLU(0.2) in D, weights initialised from N(0, 0.02), Adam with lr 2e-4 and beta1 0.5.
Shrunk for 28x28 images:

    G: z (64) -> Linear -> (128, 7, 7) -> ConvT 4x4 s2 -> (64, 14, 14) -> ConvT 4x4 s2 -> (1, 28, 28), tanh
    D: (1, 28, 28) -> Conv 4x4 s2 -> (64, 14, 14) -> Conv 4x4 s2 -> (128, 7, 7) -> Linear -> logit a(x)

The losses and the alternating training step are gan.py's:

    L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))],      L_G = -E_z[log D(G(z))]   (non-saturating)

A ConvT with kernel 4, stride 2, padding 1 exactly doubles the size: (H - 1) 2 - 2 + 4 = 2H.
Convolutions share weights across positions, so D judges strokes wherever they are and G draws them
the same way everywhere: sharper digits than the MLP GAN from fewer parameters.

Train:  python -m tinygen train dcgan --dataset mnist
Recipe: 20 epochs of 937 steps at batch 64 (18,740 steps). Figures, and the shorter runs:
        docs/models/dcgan.md.
"""
from dataclasses import dataclass

import autograd.functional as F
from .. import nn
from .gan import AdversarialConfig, GANBase, dcgan_init


@dataclass
class DCGANConfig(AdversarialConfig):
    epochs: int = 20
    batch_size: int = 64
    z_dim: int = 64
    width: int = 64   # channels of G's 14x14 and D's 14x14 layers; the 7x7 layers have 2 x width


class DCGenerator(nn.Module):
    def __init__(self, z_dim, width=64, extra=0):
        super().__init__()
        w = width
        self.w = w
        self.project = nn.Linear(z_dim + extra, 2 * w * 7 * 7)                # (B, 2w * 49)
        self.up = nn.Sequential(
            nn.BatchNorm2d(2 * w), nn.ReLU(),                                  # (B, 2w, 7, 7)
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1),              # (B, w, 14, 14)
            nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1), nn.Tanh(),       # (B, 1, 28, 28) in (-1, 1)
        )

    def forward(self, z):                                                      # (B, z_dim [+ extra])
        h = F.reshape(self.project(z), (-1, 2 * self.w, 7, 7))                 # (B, 2w, 7, 7)
        return self.up(h)


class DCDiscriminator(nn.Module):
    def __init__(self, width=64, in_channels=1):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),   # (B, w, 14, 14)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),                            # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Flatten(),                                                           # (B, 2w * 49)
            nn.Linear(2 * w * 7 * 7, 1),                                            # (B, 1) logit a(x)
        )

    def forward(self, x):                                                           # (B, C, 28, 28)
        return self.net(x)


class DCGAN(GANBase):
    """DCGAN (Radford et al. 2016): transposed-conv generator, strided-conv discriminator, BatchNorm."""
    Config = DCGANConfig
    tiny_config = {"z_dim": 8, "width": 4, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        self.generator = dcgan_init(DCGenerator(self.config.z_dim, self.config.width))
        self.discriminator = dcgan_init(DCDiscriminator(self.config.width))

    def sample(self, n, z=None):
        """n images (n, 1, 28, 28) in [0, 1]; z (n, z_dim) fixes the noise, else it is drawn from self.rng."""
        return self.generate(None, n, z)
