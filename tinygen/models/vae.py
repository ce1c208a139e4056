"""Variational autoencoder (Kingma & Welling, 2014, "Auto-Encoding Variational Bayes").

The autoencoder of ae.py made probabilistic. The encoder no longer outputs a point but a Gaussian
q(z|x) over codes; the decoder outputs a Bernoulli distribution p(x|z) over binary pixels; and the
loss asks q(z|x) to stay close to the prior p(z) = N(0, I), so that decoding z ~ N(0, I) gives
digits. Sampling z from q is made differentiable by the reparameterisation z = mu + sigma * eps.
Trained on dynamically binarised MNIST (a fresh {0, 1} draw of every image at every step).

    q(z|x) = N(z; mu(x), diag sigma^2(x))       the encoder outputs mu and log sigma^2
    z = mu + sigma * eps,   eps ~ N(0, I)        (reparameterisation: gradients reach mu and sigma)
    p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i(z))),   p(z) = N(0, I)
    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)
    KL(q(z|x) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)
    loss = -ELBO in nats per image, averaged over the batch (one z per image)

The likelihood is reported with the importance-weighted bound of Burda et al. (2016), tighter as
k grows:  log p(x) >= E log (1/k) sum_k w_k,  w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x).

Recipe: MLP encoder 784-512-256-(2 x 32), decoder 32-256-512-784, Adam 1e-3 with a cosine decay to 0,
batch 128, 100 epochs (46,800 steps). Figures, and the reference it is compared with: docs/models/vae.md.
    python -m tinygen train vae --no-progress
    python -m tinygen evaluate vae --checkpoint runs/vae-mnist/last.npz     (IWAE with k = 500: ~2 min)
The 2-D latent space (the lecture picture; two dimensions are far too few for the likelihood targets):
    from tinygen.train import train, TrainOptions
    train("vae", TrainOptions(out="runs/vae2d-mnist", epochs=20), latent_dim=2)
    load_model("runs/vae2d-mnist/last.npz")[0].latent_manifold("manifold.png")  # from tinygen.models
"""
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data
from ..data import to_float
from ..io import save_image_grid
from .ae import Decoder, Encoder
from .base import Config, Model, importance_weighted_nll, inference, softmax_regression

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig(Config):
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # a decay to 0; "constant" keeps lr
    latent_dim: int = 32
    hidden: int = 512          # widths of the two hidden layers: hidden, hidden // 2
    quick_steps: int = 600     # --quick: by then samples from N(0, I) are recognisable digits


# ---------------------------------------------------------------------- the ELBO's pieces
def reparameterize(mu, logvar, rng):
    """One z ~ q(z|x) per row, differentiable in mu and log sigma^2 (Tensors (B, D))."""
    eps = Tensor(rng.standard_normal(mu.shape, dtype=np.float32))
    # z = mu + sigma * eps,  sigma = exp(1/2 log sigma^2)
    return mu + (0.5 * logvar).exp() * eps


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag sigma^2) || N(0, I)) per row (B,), in closed form."""
    # KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)
    return 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(axis=1)


def bernoulli_log_likelihood(logits, x):
    """log p(x|z) = sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)], p = sigmoid(logits), per image (B,)."""
    # log p(x|z) = -sum_i BCE(x_i, sigmoid(l_i))
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(axis=(1, 2, 3))


# ---------------------------------------------------------------------- the model
class VAE(Model):
    """VAE (Kingma & Welling 2014): Gaussian encoder, Bernoulli decoder, binarised MNIST, IWAE NLL."""
    Config = VAEConfig
    tiny_config = {"hidden": 16, "latent_dim": 2, "batch_size": 8}
    image_range = "binary"
    label_features = 0  # width of a condition concatenated to encoder and decoder inputs (the CVAE's one-hot y)

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.encoder = Encoder(784 + self.label_features, 2 * c.latent_dim, c.hidden)  # -> [mu, log sigma^2]
        self.decoder = Decoder(c.latent_dim + self.label_features, c.hidden)           # -> Bernoulli logits

    def condition(self, labels):
        """The extra arguments of encode and decode: none here (the CVAE passes the labels)."""
        return ()

    def encode(self, x):
        """q(z|x): mu and log sigma^2 (B, D) of images x (B, 1, 28, 28), Tensors in the graph."""
        h = self.encoder(x.reshape(len(x), -1))                              # (B, 2D)
        D = self.config.latent_dim
        return h[:, :D], h[:, D:]

    def decode(self, z):
        """p(x|z): Bernoulli logits l(z) (B, 1, 28, 28) of codes z (B, D)."""
        return self.decoder(z)

    def elbo_terms(self, x, *condition):
        """-E_q[log p(x|z)] (one z per image) and KL(q(z|x) || p(z)), each per image (B,)."""
        mu, logvar = self.encode(x, *condition)                              # (B, D) each
        z = reparameterize(mu, logvar, self.rng)                             # (B, D)
        recon = -bernoulli_log_likelihood(self.decode(z, *condition), x)     # (B,)
        return recon, gaussian_kl(mu, logvar)

    def elbo(self, x, *condition):
        """ELBO(x) = E_q[log p(x|z)] - KL, per image (B,) in nats (a Tensor; one z per image)."""
        recon, kl = self.elbo_terms(x, *condition)
        return -(recon + kl)

    def loss(self, batch):
        x, labels = batch
        recon, kl = self.elbo_terms(x, *self.condition(labels))
        # loss = -ELBO = E_batch[-log p(x|z) + KL]
        loss = (recon + kl).mean()
        return loss, {"recon": float(recon.data.mean()), "kl": float(kl.data.mean())}

    @inference
    def evaluate(self, images, labels, batch_size=1000):
        """-ELBO on the test split (binarised with seed 0, one z per image), with its two terms."""
        x = data.binarize(images, np.random.default_rng(0))
        sums = np.zeros(2)
        for i in range(0, len(x), batch_size):
            recon, kl = self.elbo_terms(Tensor(x[i:i + batch_size]), *self.condition(labels[i:i + batch_size]))
            sums += [float(recon.data.sum()), float(kl.data.sum())]
        recon, kl = (float(v) for v in sums / len(x))
        return {"test_neg_elbo": recon + kl, "test_recon": recon, "test_kl": kl}

    # ------------------------------------------------------------------ likelihood
    def importance_proposal(self, x, k):
        """q(z|x) for k importance samples of each image x (n, 1, 28, 28): mu and log sigma^2 as NumPy
        (n, 1, D), broadcast over the k samples, and the decoder's extra arguments (none here)."""
        mu, logvar = self.encode(x)
        return mu.numpy()[:, None], logvar.numpy()[:, None], ()

    @inference
    def iwae_log_weights(self, x, k, rows=20000, proposal=None):
        """log w (N, k) for binary images x (N, 1, 28, 28): k draws z ~ q(z|x) per image, decoded in
        chunks of about `rows` codes, all k of an image at once. proposal(x, k) replaces
        importance_proposal (a CVAE's q(z|x, y) for one fixed label y, say)."""
        D, out = self.config.latent_dim, []
        proposal = proposal or self.importance_proposal
        per_chunk = max(1, rows // k)
        for i in range(0, len(x), per_chunk):
            xc = x[i:i + per_chunk]
            n = len(xc)
            mu, logvar, condition = proposal(Tensor(xc), k)                 # (n, 1 or k, D) each
            eps = self.rng.standard_normal((n, k, D), dtype=np.float32)
            # z = mu + sigma * eps
            z = mu + np.exp(0.5 * logvar) * eps                             # (n, k, D)
            logits = self.decode(Tensor(z.reshape(n * k, D)), *condition)  # (n k, 1, 28, 28)
            x_rep = Tensor(np.repeat(xc, k, axis=0))                        # (n k, 1, 28, 28)
            log_px_z = bernoulli_log_likelihood(logits, x_rep).numpy().reshape(n, k)
            # log p(z) = -1/2 sum_j (z_j^2 + log 2 pi)
            log_pz = -0.5 * (z ** 2 + LOG_2PI).sum(axis=2)
            # log q(z|x) = -1/2 sum_j (eps_j^2 + log sigma_j^2 + log 2 pi)
            log_qz = -0.5 * (eps ** 2 + logvar + LOG_2PI).sum(axis=2)
            # log w = log p(x|z) + log p(z) - log q(z|x)
            out.append(log_px_z + log_pz - log_qz)
        return np.concatenate(out)

    def evaluate_nll(self, images, k=500, n=None):
        """Nats per image on uint8 test images. They are binarised ONCE with np.random.default_rng(0),
        so every model and every run is scored on the same {0, 1} images; the importance samples
        draw from self.rng. -ELBO is the mean of -log w over the k samples (a k-sample estimate)."""
        x = data.binarize(images, np.random.default_rng(0))[:n]
        log_w = self.iwae_log_weights(x, k)
        return {"neg_elbo_nats": float(-log_w.mean()), "iwae_nll_nats": float(importance_weighted_nll(log_w).mean()),
                "k": k}

    def evaluate_representation(self, test_images, test_labels, n_train=10000):
        """How much of the class the code keeps: a linear probe (softmax regression) reads the label from
        the posterior mean mu(x) (the CVAE's mu(x, y)), fitted on n_train train images (a fixed random
        subset), scored on the test images. The VAE's z must carry the digit for the decoder to redraw
        it; the CVAE's decoder is told the digit, so its z keeps the style and the probe falls towards
        chance (10%)."""
        train_x, train_y = data.load_dataset(self.dataset, "train")
        pick = np.sort(np.random.default_rng(0).permutation(len(train_x))[:n_train])
        mu_train = self.embed(train_x[pick], train_y[pick])                          # (n_train, D)
        mu_test = self.embed(test_images, test_labels)                               # (N, D)
        return {"latent_probe_acc": softmax_regression(mu_train, train_y[pick], mu_test, test_labels)}

    # ------------------------------------------------------------------ pictures
    @inference
    def embed(self, images, labels=None):
        """Posterior means mu (B, D) of uint8 or [0, 1] images, as NumPy (for ae.latent_scatter)."""
        return self.encode(Tensor(to_float(images)), *self.condition(labels))[0].numpy()

    @inference
    def sample(self, n):
        """The means sigmoid(l(z)) of p(x|z) for z ~ N(0, I): (n, 1, 28, 28) in [0, 1]."""
        z = Tensor(self.rng.standard_normal((n, self.config.latent_dim), dtype=np.float32))
        return F.sigmoid(self.decode(z)).numpy()

    @inference
    def interpolate(self, x_a, x_b, steps=10, label=0):
        """Decode the line z_t = (1 - t) mu(x_a) + t mu(x_b), t = 0..1, between two images (1, 28, 28).
        `label` is used only by conditional subclasses (the CVAE): both ends and the path take it."""
        mu = self.encode(Tensor(to_float(np.stack([x_a, x_b]))), *self.condition(np.full(2, label)))[0].numpy()
        t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]                     # (steps, 1)
        # z_t = (1 - t) mu_a + t mu_b
        z = (1 - t) * mu[0] + t * mu[1]                                              # (steps, D)
        return F.sigmoid(self.decode(Tensor(z), *self.condition(np.full(steps, label)))).numpy()  # (steps, 1, 28, 28)

    @inference
    def latent_manifold(self, path, grid=15, label=0):
        """For a 2-D latent space: decode a grid x grid lattice of Gaussian quantiles (5%..95%) of
        z = (z_1, z_2), z_1 left to right, z_2 bottom to top; save it to `path` and return it."""
        if self.config.latent_dim != 2:
            raise ValueError(f"latent_manifold needs latent_dim=2, this model has {self.config.latent_dim}")
        q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, grid)], np.float32)
        z1, z2 = np.meshgrid(q, q[::-1])                                   # (grid, grid) each
        z = np.stack([z1.ravel(), z2.ravel()], axis=1)                     # (grid^2, 2)
        images = F.sigmoid(self.decode(Tensor(z), *self.condition(np.full(len(z), label)))).numpy()
        save_image_grid(images, Path(path), nrow=grid, scale=2)
        return images
