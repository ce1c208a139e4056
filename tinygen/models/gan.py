"""Generative Adversarial Networks (Goodfellow et al., 2014), with MLP generator and discriminator.

The idea: a generator G maps noise z ~ N(0, I) to an image G(z); a discriminator D(x) = sigmoid(a(x))
says how likely x is to be real. They play a two-player game,

    min_G max_D  V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],

trained by alternating gradient steps. For a fixed G the best D is D*(x) = p_data(x) / (p_data(x) + p_g(x)),
and against D* the generator minimises 2 JSD(p_data || p_g) - log 4, so the game's optimum is p_g = p_data.

    D step:  L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))]   (binary cross-entropy: real -> 1, fake -> 0)
    G step, minimax:         L_G = E_z[log(1 - D(G(z)))]
    G step, non-saturating:  L_G = -E_z[log D(G(z))]        (the lecture's default)

Why non-saturating: with D = sigmoid(a), the gradient of each G loss with respect to the logit a is
minimax -D(G(z)) and non-saturating -(1 - D(G(z))). Early in training D rejects the fakes easily,
D(G(z)) ~ 0, so the minimax gradient vanishes just when G needs it most, while the non-saturating one
is ~ -1. Both push D(G(z)) up, in the same direction; only the strength of G's learning signal differs.

This file also holds the machinery every GAN in tinygen shares (DCGAN, CGAN and pix2pix import it):
the adversarial losses, `GANBase` with the alternating D / G training step, and the optimisers
(Adam, lr 2e-4, beta1 0.5 as in the DCGAN paper).

Train:  python -m tinygen train gan --dataset mnist
        the original minimax G loss, from Python:
        from tinygen.train import train, TrainOptions
        train("gan", TrainOptions(out="runs/gan-minimax"), loss="minimax")
Recipe: 30 epochs of 938 steps at batch 64 (28,140 steps). Figures: docs/models/gan.md.
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import nn, optim
from .base import Config, Model, inference, optimizer_step

LOSSES = ("non_saturating", "minimax")


# ---------------------------------------------------------------------- the adversarial losses
def discriminator_loss(real_logits, fake_logits):
    """L_D from D's logits a(x) on real and a(G(z)) on generated images (any matching shapes)."""
    ones, zeros = np.ones(real_logits.shape, np.float32), np.zeros(fake_logits.shape, np.float32)
    # L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))],  D = sigmoid(a)
    return (F.binary_cross_entropy_with_logits(real_logits, ones)
            + F.binary_cross_entropy_with_logits(fake_logits, zeros))


def generator_loss(fake_logits, kind="non_saturating"):
    """L_G from D's logits on generated images; kind "non_saturating" or "minimax"."""
    if kind == "non_saturating":
        # L_G = -E_z[log D(G(z))]
        return F.binary_cross_entropy_with_logits(fake_logits, np.ones(fake_logits.shape, np.float32))
    if kind == "minimax":
        # L_G = E_z[log(1 - D(G(z)))] = -BCE(a, 0)
        return -F.binary_cross_entropy_with_logits(fake_logits, np.zeros(fake_logits.shape, np.float32))
    raise ValueError(f"unknown GAN loss {kind!r}; valid: {', '.join(LOSSES)}")


def dcgan_init(module):
    """The DCGAN paper's initialisation: conv and linear weights ~ N(0, 0.02), biases 0, BN scale ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


@dataclass
class AdversarialConfig(Config):
    """What every adversarial model trains with."""
    lr: float = 2e-4
    beta1: float = 0.5             # Adam's first-moment decay; 0.5 keeps the two players from oscillating
    loss: str = "non_saturating"   # generator loss: "non_saturating" or "minimax"


class GANBase(Model):
    """The alternating game. A subclass builds `self.generator` and `self.discriminator` (None: no
    adversary) and says how to fake a batch and how to judge one:

        fake(c, n)          -> G's images for n examples with conditions c (labels, images or unused)
        critic(x, c)        -> D's logits for images x with conditions c
        g_objective(fake, x, c) -> (L_G, logs); the adversarial L_G unless overridden
    """
    image_range = "signed"  # G ends in tanh, so real images are shown to D in [-1, 1] too

    def __init__(self, config=None):
        super().__init__(config)
        self.register_module("generator", None)       # the subclass builds both players
        self.register_module("discriminator", None)
        if self.config.loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {self.config.loss!r}; valid: {', '.join(LOSSES)}")

    def noise(self, n):
        """z ~ N(0, I), (n, z_dim), from the model's generator (reproducible, resumable)."""
        return Tensor(self.rng.standard_normal((n, self.config.z_dim), dtype=np.float32))

    def fake(self, c, n, z=None):
        return self.generator(self.noise(n) if z is None else Tensor(z))   # (n, 1, 28, 28)

    def critic(self, x, c):
        return self.discriminator(x)                                         # (B, 1) logits

    def g_objective(self, fake, x, c):
        loss = generator_loss(self.critic(fake, c), self.config.loss)
        return loss, {}

    def configure_optimizers(self):
        c = self.config
        players = {"G": self.generator, "D": self.discriminator}
        return {name: optim.Adam(net.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
                for name, net in players.items() if net is not None}

    def _step(self, optimizer, loss, name):
        """optimizer_step on one player; its gradient norm, when clipped, is logged as <name>_grad_norm."""
        norm = optimizer_step(loss, optimizer, self.config.grad_clip)
        return {} if norm is None else {f"{name}_grad_norm": norm}

    def training_step(self, batch, optimizers):
        """One D step on real and (detached) fake images, then one G step through the updated D."""
        x, c = batch
        fake = self.fake(c, len(x))                                          # G(z), kept in the graph for G
        logs = {}
        if "D" in optimizers:
            real_logits = self.critic(x, c)
            fake_logits = self.critic(fake.detach(), c)                      # no gradient reaches G here
            d_loss = discriminator_loss(real_logits, fake_logits)
            logs = self._step(optimizers["D"], d_loss, "d")
            logs.update({"d_loss": d_loss.item(),
                         "d_real": float(F.sigmoid(real_logits.detach()).mean().item()),  # mean D(x)
                         "d_fake": float(F.sigmoid(fake_logits.detach()).mean().item())})  # mean D(G(z))
        try:
            if self.discriminator is not None:
                self.discriminator.requires_grad_(False)                      # G's step leaves D's grads alone
            g_loss, g_logs = self.g_objective(fake, x, c)
            logs.update(self._step(optimizers["G"], g_loss, "g"))
        finally:
            if self.discriminator is not None:
                self.discriminator.requires_grad_(True)
        return {**logs, "g_loss": g_loss.item(), **g_logs}

    # ---------------------------------------------------------------- sampling
    @inference
    def generate(self, c, n, z=None, chunk=500):
        """G's images mapped to [0, 1] as NumPy (n, 1, 28, 28), in eval mode (BN running statistics)."""
        out = []
        for i in range(0, n, chunk):
            ci = None if c is None else c[i:i + chunk]
            zi = None if z is None else z[i:i + chunk]
            # x = (G(z) + 1) / 2
            out.append((self.fake(ci, min(chunk, n - i), zi).numpy() + 1) / 2)
        return np.clip(np.concatenate(out), 0.0, 1.0)

    def visualize(self, images, labels, path):
        """64 samples from the same fixed z every epoch, so the pictures show G changing."""
        from ..io import save_image_grid
        save_image_grid(self.sample(64, z=np.random.default_rng(0).standard_normal(
            (64, self.config.z_dim), dtype=np.float32)), path, scale=2)


# ---------------------------------------------------------------------- the MLP GAN
@dataclass
class GANConfig(AdversarialConfig):
    epochs: int = 30
    batch_size: int = 64
    z_dim: int = 64
    dropout: float = 0.3   # in D: a weaker, noisier D gives G a smoother signal


class MLPGenerator(nn.Module):
    def __init__(self, z_dim):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, 256), nn.BatchNorm1d(256), nn.ReLU(),           # (B, 256)
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(),             # (B, 512)
            nn.Linear(512, 784), nn.Tanh(),                                  # (B, 784) in (-1, 1)
        )

    def forward(self, z):                                                    # (B, z_dim)
        return F.reshape(self.net(z), (-1, 1, 28, 28))                       # (B, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),                                                    # (B, 784)
            nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Dropout(dropout),     # (B, 512)
            nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(dropout),     # (B, 256)
            nn.Linear(256, 1),                                               # (B, 1) logit a(x)
        )

    def forward(self, x):                                                    # (B, 1, 28, 28)
        return self.net(x)


class GAN(GANBase):
    """GAN (Goodfellow et al. 2014): MLP generator and discriminator, non-saturating or minimax G loss."""
    Config = GANConfig
    tiny_config = {"z_dim": 8, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        self.generator = MLPGenerator(self.config.z_dim)
        self.discriminator = MLPDiscriminator(self.config.dropout)

    def sample(self, n, z=None):
        """n images (n, 1, 28, 28) in [0, 1]; z (n, z_dim) fixes the noise, else it is drawn from self.rng."""
        return self.generate(None, n, z)
