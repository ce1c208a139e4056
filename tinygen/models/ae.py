"""Autoencoder: compress an image to a few numbers and rebuild it (Hinton & Salakhutdinov, 2006,
"Reducing the Dimensionality of Data with Neural Networks").

An encoder f maps an image x (784 pixels) to a code z of latent_dim numbers (2 by default, so the
codes can be drawn as points), a decoder g maps z back to pixel logits, and both are trained
together to reconstruct x. Nothing asks the codes to fill any particular region, so the codes of
the training set form scattered, oddly shaped clusters: decoding a random point z ~ N(0, I), which
is what `sample` does, mostly lands between, outside or on a small corner of them and gives smudges
or the same few blurry shapes, not the variety of digits. This is the gap that the VAE (vae.py)
closes by pulling q(z|x) towards the prior N(0, I).

    z = f(x),   x_hat = sigmoid(g(z))
    L(x) = sum_i BCE(x_i, x_hat_i) = -sum_i [x_i log x_hat_i + (1 - x_i) log(1 - x_hat_i)]

The reconstruction loss is the binary cross-entropy of the logits against the grey levels
x in [0, 1] (image_range "unit"), summed over the 784 pixels and averaged over the batch: nats per
image (the Bernoulli log-likelihood of the VAE, here on grey values; MSE would work too).

Recipe (Config): MLP 784-512-256-2 and back, Adam 1e-3, batch 128, 20 epochs = 9,380 steps.
Figures: docs/models/ae.md.
    python -m tinygen train ae --no-progress
Latent scatter of a trained model (colours = digit classes):
    from tinygen.models import load_model; from tinygen.data import load_dataset
    model, _ = load_model("runs/ae-mnist/last.npz"); x, y = load_dataset("mnist", "test")
    latent_scatter(model, x[:5000], y[:5000], "runs/ae-mnist/latent.png")
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import nn
from ..data import to_float
from ..io import save_image_grid, save_scatter
from .base import Config, Model, inference


@dataclass
class AEConfig(Config):
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 2       # 2: the codes can be drawn as they are (latent_scatter)
    hidden: int = 512         # widths of the two hidden layers: hidden, hidden // 2


# ---------------------------------------------------------------------- helpers shared by vae.py, cvae.py
def mlp(*widths):
    """Linear layers of the given widths with a ReLU between consecutive ones (none after the last)."""
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def latent_scatter(model, images, labels, path, batch_size=1000):
    """A 2-D scatter PNG of the codes model.embed(images, labels), coloured by label. Codes with more
    than two dimensions are projected on their first two principal components. Returns the points."""
    codes = np.concatenate([model.embed(images[i:i + batch_size], labels[i:i + batch_size])
                            for i in range(0, len(images), batch_size)])
    if codes.shape[1] > 2:
        centred = codes - codes.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)     # rows: principal directions
        codes = centred @ components[:2].T                                  # (N, 2)
    save_scatter(codes, labels, path)
    return codes


# ---------------------------------------------------------------------- networks
class Encoder(nn.Module):
    """f: flat input (B, in_features) -> (B, out_features), through hidden and hidden // 2 units."""

    def __init__(self, in_features, out_features, hidden):
        super().__init__()
        self.net = mlp(in_features, hidden, hidden // 2, out_features)

    def forward(self, x):
        return self.net(x)                                               # (B, out_features)


class Decoder(nn.Module):
    """g: z (B, in_features) -> pixel logits (B, 1, 28, 28), through hidden // 2 and hidden units."""

    def __init__(self, in_features, hidden):
        super().__init__()
        self.net = mlp(in_features, hidden // 2, hidden, 784)            # (B, 784)

    def forward(self, z):
        return self.net(z).reshape(len(z), 1, 28, 28)                    # (B, 1, 28, 28)


# ---------------------------------------------------------------------- the model
class AE(Model):
    """Autoencoder: MLP encoder to a 2-D code and back; decoding random codes shows why VAEs exist."""
    Config = AEConfig
    image_range = "unit"
    tiny_config = {"hidden": 16, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.encoder = Encoder(784, c.latent_dim, c.hidden)
        self.decoder = Decoder(c.latent_dim, c.hidden)

    def encode(self, x):
        """z = f(x): codes (B, latent_dim) of images x (B, 1, 28, 28), a Tensor in the graph."""
        return self.encoder(x.reshape(len(x), 784))                        # (B, latent_dim)

    def decode(self, z):
        """g(z): pixel logits (B, 1, 28, 28); sigmoid of them is the reconstruction x_hat."""
        return self.decoder(z)

    def reconstruction_loss(self, x):
        """Per-image L(x) = sum_i BCE(x_i, sigmoid(g(f(x))_i)), shape (B,)."""
        logits = self.decode(self.encode(x))                                # (B, 1, 28, 28)
        # L(x) = sum_i BCE(x_i, x_hat_i)
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(axis=(1, 2, 3))

    def loss(self, batch):
        x, _ = batch
        return self.reconstruction_loss(x).mean(), {}

    @inference
    def evaluate(self, images, labels, batch_size=1000):
        """Mean reconstruction BCE (nats per image) on the test split."""
        x = to_float(images)
        total = sum(float(self.reconstruction_loss(Tensor(x[i:i + batch_size])).sum().item())
                    for i in range(0, len(x), batch_size))
        return {"test_recon_bce": total / len(x)}

    @inference
    def embed(self, images, labels=None):
        """Codes z (B, latent_dim) of uint8 or [0, 1] float images (B, 1, 28, 28), as NumPy (labels:
        unused here, a conditional model's encoder reads them)."""
        return self.encode(Tensor(to_float(images))).numpy()

    @inference
    def reconstruct(self, images):
        """x_hat = sigmoid(g(f(x))) (B, 1, 28, 28) in [0, 1], as NumPy."""
        return F.sigmoid(self.decode(self.encode(Tensor(to_float(images))))).numpy()

    @inference
    def sample(self, n):
        """Decode z ~ N(0, I): the AE never asked its codes to look like N(0, I), so expect smudges."""
        z = Tensor(self.rng.standard_normal((n, self.config.latent_dim), dtype=np.float32))
        return F.sigmoid(self.decode(z)).numpy()                           # (n, 1, 28, 28)

    def visualize(self, images, labels, path):
        """Top half: 32 test images; bottom half: their reconstructions, in the same places."""
        x = to_float(images[:32])
        save_image_grid(np.concatenate([x, self.reconstruct(x)]), Path(path), nrow=8, scale=2)
