"""Latent diffusion (Rombach et al., 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

The idea: most of an image's bits are imperceptible detail, and a diffusion model spends its compute
on every pixel at every step. So first compress: a KL-regularised autoencoder (the VAE of vae.py made
convolutional, with a light KL weight so that it keeps detail) maps a 28x28 image to a small latent
z (4 x 7 x 7, 196 numbers for 784 pixels). Then run the diffusion of ddpm.py on z (the process and
samplers of tinygen/diffusion.py, with x0_hat left unclipped: latents have no fixed range), and decode
at the end. Each denoising step now runs on 7x7 maps instead of 28x28 ones.

    stage 1 (autoencoder)  q(z|x) = N(mu(x), sigma^2(x)),  z = mu + sigma * eps
                           loss = -log p(x|z) + kl_weight KL(q(z|x) || N(0, I))   (vae.py's terms)
    latent scale           z' = z / std(z)  (measured once when stage 2 starts: unit variance for diffusion)
    stage 2 (diffusion)    L = |eps - eps_theta(sqrt(abar_t) z'_0 + sqrt(1 - abar_t) eps, t, y)|^2,
                           the autoencoder frozen; samples x = sigmoid(D(z'_0 std(z)))

One `train` runs both stages: the first ae_steps steps train the autoencoder, the rest the diffusion
model (its EMA starts when stage 2 starts). Classifier-free guidance works as in ddpm.py; text
conditioning comes with the text-to-image models.

Train:  python -m tinygen train latent_diffusion
        Recipe: 6 epochs (2,000 autoencoder steps, then 3,622 diffusion steps). Figures, and how it
        compares with the pixel DDPM: docs/models/latent_diffusion.md.
Sample: python -m tinygen sample latent_diffusion --checkpoint runs/latent_diffusion-mnist/last.npz --label 3 --guidance 3 --steps 50
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd.functional as F
from autograd import Tensor, no_grad
from .. import data, nn, optim
from ..io import save_image_grid
from .base import inference, optimizer_step
from .ddpm import DDPMConfig, DiffusionModel, UNet
from .vae import bernoulli_log_likelihood, gaussian_kl, reparameterize


@dataclass
class LatentDiffusionConfig(DDPMConfig):
    epochs: int = 6
    ae_steps: int = 2000          # stage 1: autoencoder steps; then diffusion on the latents
    latent_channels: int = 4      # z: (latent_channels, 7, 7)
    ae_width: int = 32
    kl_weight: float = 0.01       # light, as in the paper: the autoencoder keeps detail, z stays near N(0, I)
    base_channels: int = 64       # the latent U-Net works at 7x7 only
    channel_mult: tuple = (1,)
    quick_steps: int = 300        # --quick: the autoencoder stage only (its picture: reconstructions)


class ConvEncoder(nn.Module):
    """(B, 1, 28, 28) -> mu, log sigma^2, each (B, C, 7, 7)."""

    def __init__(self, width, latent_channels):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.SiLU(),                        # (B, w, 28, 28)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),          # (B, 2w, 14, 14)
            nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),      # (B, 2w, 7, 7)
            nn.Conv2d(2 * w, 2 * latent_channels, 3, padding=1))             # (B, 2C, 7, 7)

    def forward(self, x):
        h = self.net(x)
        C = h.shape[1] // 2
        return h[:, :C], h[:, C:]


class ConvDecoder(nn.Module):
    """z (B, C, 7, 7) -> Bernoulli logits (B, 1, 28, 28)."""

    def __init__(self, width, latent_channels):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * w, 3, padding=1), nn.SiLU(),                 # (B, 2w, 7, 7)
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),            # (B, w, 14, 14)
            nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), nn.SiLU(),                # (B, w, 28, 28)
            nn.Conv2d(w, 1, 3, padding=1))                                              # (B, 1, 28, 28)

    def forward(self, z):
        return self.net(z)


class KLAutoencoder(nn.Module):
    def __init__(self, width, latent_channels):
        super().__init__()
        self.encoder, self.decoder = ConvEncoder(width, latent_channels), ConvDecoder(width, latent_channels)


class LatentDiffusion(DiffusionModel):
    """Latent diffusion (Rombach et al. 2022): a KL autoencoder to 4x7x7, DDPM on the latents, CFG."""
    Config = LatentDiffusionConfig
    image_range = "unit"  # the autoencoder's Bernoulli targets; latents are scaled to unit variance
    sample_options = ("label", "guidance", "steps")
    tiny_config = {"T": 5, "ae_width": 4, "base_channels": 16, "batch_size": 8, "ae_steps": 0, "sample_steps": 2}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.conditional = bool(c.num_classes)
        self.autoencoder = KLAutoencoder(c.ae_width, c.latent_channels)
        self.register_buffer("latent_std", np.ones(1, np.float32))      # std(z), measured at the switch
        self.register_buffer("steps_done", np.zeros(1, np.float32))     # training steps so far (both stages)
        self.setup_diffusion(self.latent_unet(), (c.latent_channels, 7, 7), clip_x0=False)

    def latent_unet(self):
        """eps_theta on the latents: ddpm.py's U-Net at 7x7, label-conditioned when num_classes > 0."""
        c = self.config
        return UNet(c.latent_channels, c.base_channels, tuple(c.channel_mult), c.num_classes, c.dropout)

    def diffusion_condition(self, y):
        """The condition of the diffusion stage from a batch's second half: the labels (None when trained
        unconditionally); a text-conditioned subclass reads captions here."""
        return y if self.config.num_classes else None

    def configure_optimizers(self):
        return {"ae": optim.Adam(self.autoencoder.parameters(), lr=self.config.lr),
                "main": optim.Adam(self.net.parameters(), lr=self.config.lr)}

    @property
    def stage(self):
        return 1 if self.steps_done[0] < self.config.ae_steps else 2

    # ------------------------------------------------------------------ stage 1: the autoencoder
    def ae_loss(self, x):
        """-log p(x|z) + kl_weight KL per image, averaged; x (B, 1, 28, 28) grey levels in [0, 1]."""
        mu, logvar = self.autoencoder.encoder(x)                                      # (B, C, 7, 7) each
        z = reparameterize(mu, logvar, self.rng)
        recon = -bernoulli_log_likelihood(self.autoencoder.decoder(z), x)            # (B,)
        kl = gaussian_kl(mu.reshape(len(x), -1), logvar.reshape(len(x), -1))          # (B,)
        return (recon + self.config.kl_weight * kl).mean(), {"recon": float(recon.data.mean()),
                                                               "kl": float(kl.data.mean())}

    def encode(self, x):
        """Scaled latents z' = mu(x) / std(z) (B, C, 7, 7) as NumPy (the mean of q(z|x): the paper
        samples z; at this KL weight sigma is small and the mean is the less noisy target)."""
        with no_grad():  # NumPy out: no graph (stage 2 trains the U-Net alone)
            mu, _ = self.autoencoder.encoder(Tensor(x))
        return mu.numpy() / self.latent_std[0]

    def decode(self, z_scaled):
        """x = sigmoid(D(z' std(z))): images (B, 1, 28, 28) in [0, 1] as NumPy."""
        return F.sigmoid(self.autoencoder.decoder(Tensor(z_scaled * self.latent_std[0]))).numpy()

    to_images = decode  # what sample() does with the latents the reverse process ends at

    # ------------------------------------------------------------------ the two-stage training step
    def training_step(self, batch, optimizers):
        x, labels = batch
        stage = self.stage
        self.steps_done[0] += 1
        if stage == 1:
            loss, logs = self.ae_loss(x)
            optimizer_step(loss, optimizers["ae"])
            # the EMA (what load_model puts in) follows the weights until stage 2 starts it: a checkpoint
            # saved in stage 1 then loads the trained autoencoder, not the initial one
            self.ema = optim.EMA(self, decay=self.config.ema_decay, warmup=True)
            return {"ae_loss": loss.item(), **logs}
        if self.steps_done[0] == self.config.ae_steps + 1:  # the first stage-2 step: measure std(z), start the EMA
            self.latent_std[0] = np.float32(self.encode(x.numpy()).std())
            self.ema = optim.EMA(self, decay=self.config.ema_decay, warmup=True)
        loss = self.diffusion_loss(self.encode(x.numpy()), self.diffusion_condition(labels))
        norm = optimizer_step(loss, optimizers["main"], self.config.grad_clip)
        self.ema.update()
        return {"loss": loss.item(), **({"grad_norm": norm} if norm is not None else {})}

    # ------------------------------------------------------------------ evaluation and sampling
    @inference
    def evaluate(self, images, labels, n=1000):
        """Autoencoder reconstruction on the first n test images: BCE nats per image and mean |x - x_hat|."""
        x = data.to_float(images[:n])
        mu, _ = self.autoencoder.encoder(Tensor(x))
        logits = self.autoencoder.decoder(mu)
        bce = -bernoulli_log_likelihood(logits, Tensor(x)).numpy().mean()
        return {"test_ae_bce": float(bce), "test_ae_l1": float(np.abs(F.sigmoid(logits).numpy() - x).mean())}

    @inference
    def reconstruct(self, x):
        """D(E(x)) for images x (B, 1, 28, 28) in [0, 1]."""
        return self.decode(self.encode(x))

    def visualize(self, images, labels, path):
        """Stage 1: test images over their reconstructions. Stage 2: samples, one row per digit."""
        if self.stage == 1:
            x = data.to_float(images[:32])
            save_image_grid(np.concatenate([x, self.reconstruct(x)]), Path(path), nrow=8, scale=2)
        else:
            super().visualize(images, labels, path)
