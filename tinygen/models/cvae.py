"""Conditional VAE (Sohn, Lee & Yan, 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models").

The VAE of vae.py with the label y given to both networks: the encoder sees [x, one_hot(y)], the
decoder [z, one_hot(y)]. Since the decoder is told which digit to draw, the KL term pushes every
piece of class information out of z, and z is left with what the label does not say: the style
(slant, width, stroke). Fixing z and changing y draws each digit in the same style; fixing y and
drawing z ~ N(0, I) draws that digit in many styles. Everything else is the VAE's, reused from
vae.py: the ELBO pieces, the networks, binarised MNIST, the likelihood evaluation.

    q(z|x, y) = N(z; mu(x, y), diag sigma^2(x, y)),   p(x|z, y) = prod_i Bernoulli(x_i; sigmoid(l_i(z, y)))
    ELBO(x|y) = E_q[log p(x|z, y)] - KL(q(z|x, y) || N(0, I))  <=  log p(x|y)
    loss = -ELBO(x|y) in nats per image, averaged over the batch

Recipe: MLP 794-512-256-(2 x 2) and 12-256-512-784, Adam 1e-3, batch 128, 20 epochs (9,380 steps).
A 2-D z leaves no room for the class, so the decoder must take the digit from y; the 2-D z holds the
style. It is scored by how often the judge recognises the requested digit, and by how little of the digit
its z keeps: the linear probe of VAE.evaluate_representation reads the label from mu(x, y) (beside the
2-D VAE's codes, which sort the digits). Figures: docs/models/cvae.md.
    python -m tinygen train cvae --no-progress
    python -m tinygen sample cvae --checkpoint runs/cvae-mnist/last.npz --label 3
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd.functional as F
from autograd import Tensor
from ..data import N_CLASSES
from ..io import save_image_grid
from .base import importance_weighted_nll, inference
from .vae import VAE, VAEConfig


@dataclass
class CVAEConfig(VAEConfig):
    epochs: int = 20
    lr_schedule: str = "constant"
    latent_dim: int = 2        # only the style lives in z; a small z leaves the digit to y from the start


def with_label(h, y):
    """[h, one_hot(y)]: the label concatenated to a batch of flat inputs h (B, F) -> (B, F + 10)."""
    return F.concat([h, F.one_hot(np.asarray(y), N_CLASSES)], axis=1)


class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): the label one-hot joins encoder and decoder; digits on demand."""
    Config = CVAEConfig
    conditional = True
    sample_options = ("label",)
    tiny_config = {"hidden": 16, "latent_dim": 2, "batch_size": 8}
    label_features = N_CLASSES  # the VAE's networks get 10 more inputs

    def condition(self, labels):
        """encode and decode take the labels y as their extra argument."""
        return (labels,)

    def encode(self, x, y):
        """q(z|x, y): mu and log sigma^2 (B, D) of images x (B, 1, 28, 28) with labels y (B,)."""
        return super().encode(with_label(x.reshape(len(x), 784), y))         # encoder input (B, 794)

    def decode(self, z, y):
        """p(x|z, y): Bernoulli logits (B, 1, 28, 28) of codes z (B, D) for labels y (B,)."""
        return super().decode(with_label(z, y))                                # decoder input (B, D + 10)

    def importance_proposal(self, x, k):
        """For log p(x) = log sum_y p(y) p(x|y), the label is sampled with z: sample j of every image
        gets y_j = j mod 10 (stratified, so q(y) = p(y) = 1/10 cancels in w when 10 divides k), then
        z ~ q(z|x, y_j). Returns mu, log sigma^2 (n, k, D) and the labels (n k,) for the decoder."""
        n, D = len(x), self.config.latent_dim
        x10 = Tensor(np.repeat(x.numpy(), N_CLASSES, axis=0))                 # (n 10, 1, 28, 28)
        mu, logvar = self.encode(x10, np.tile(np.arange(N_CLASSES), n))     # (n 10, D) each
        y = np.arange(k) % N_CLASSES                                          # (k,)
        mu = mu.numpy().reshape(n, N_CLASSES, D)[:, y]                        # (n, k, D)
        logvar = logvar.numpy().reshape(n, N_CLASSES, D)[:, y]                # (n, k, D)
        return mu, logvar, (np.tile(y, n),)

    def evaluate_nll(self, images, k=500, n=None):
        """The VAE's evaluation, of log p(x) with the label marginalised (see importance_proposal).
        iwae_nll_nats compares with the VAE's; neg_elbo_nats averages the ELBOs under all ten labels,
        right and wrong, so it is a loose bound."""
        if k % N_CLASSES:
            raise ValueError(f"k must be a multiple of {N_CLASSES} (one stratum per label), got {k}")
        return super().evaluate_nll(images, k, n)

    # ------------------------------------------------------------------ a generative classifier
    @inference
    def class_log_likelihoods(self, x, k=1):
        """log p(x|y) for every label y, (N, 10), of binary images x (N, 1, 28, 28): the k-sample
        importance-weighted bound with z ~ q(z|x, y) (k = 1: a one-sample ELBO; a lower bound that
        tightens as k grows). Bayes' rule turns them into a classifier (the evaluation's
        bayes-classifier):   y(x) = argmax_y log p(x|y) + log p(y)."""
        columns = []
        for y in range(N_CLASSES):
            def proposal(xc, k, y=y):                                           # q(z|x, y) for this y
                labels = np.full(len(xc), y)
                mu, logvar = self.encode(xc, labels)                             # (n, D) each
                return mu.numpy()[:, None], logvar.numpy()[:, None], (np.repeat(labels, k),)
            log_w = self.iwae_log_weights(x, k, proposal=proposal)              # (N, k)
            columns.append(-importance_weighted_nll(log_w))                     # log p(x|y) >= this
        return np.stack(columns, axis=1)                                        # (N, 10)

    # ------------------------------------------------------------------ sampling and pictures
    @inference
    def sample(self, n, label=None):
        """The means of p(x|z, y) for z ~ N(0, I) and the requested labels (see Model.labels_for):
        (n, 1, 28, 28) in [0, 1]."""
        y = self.labels_for(n, label)
        z = Tensor(self.rng.standard_normal((n, self.config.latent_dim), dtype=np.float32))
        return F.sigmoid(self.decode(z, y)).numpy()

    @inference
    def style_grid(self, path, n_styles=8):
        """Each row one z ~ N(0, I), each column a digit 0..9: every digit in n_styles styles."""
        z = self.rng.standard_normal((n_styles, self.config.latent_dim), dtype=np.float32)
        z = np.repeat(z, N_CLASSES, axis=0)                                   # (n_styles 10, D): row r is z_r
        y = np.tile(np.arange(N_CLASSES), n_styles)                           # (n_styles 10,): 0..9 per row
        images = F.sigmoid(self.decode(Tensor(z), y)).numpy()                 # (n_styles 10, 1, 28, 28)
        save_image_grid(images, Path(path), nrow=N_CLASSES, scale=2)
        return images

    def visualize(self, images, labels, path):
        self.style_grid(path)
