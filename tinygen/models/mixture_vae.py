"""A VAE with a mixture of K Gaussians in its latent space: the lecture's account of why Rolfe (2017, "Discrete
Variational Autoencoders") made the latent discrete.

A VAE's single Gaussian q(z|x) and prior N(0, I) put every digit in one blob, and the decoder must
blur what it cannot tell apart. Here the latent has two parts: a categorical choice k among K components,
held as a one-hot vector z, and a continuous code w drawn from the chosen component's Gaussian. The
encoder gives the parameters of ALL K distributions at once; the decoder gets z and the w of that
component:

    q(k | x) = softmax(a(x))_k                          z = one_hot(k), K components
    q(w | x, k) = N(w; mu_k(x), diag sigma_k^2(x))      the encoder outputs a(x) and every (mu_k, sigma_k)
    p(k) = 1 / K,   p(w | k) = N(w; m_k, I)             m_k: a learned centre per component
    p(x | k, w) = prod_i Bernoulli(x_i; sigmoid(g([z, w])_i))

    ELBO(x) = sum_k q(k|x) ( E_{q(w|x,k)}[log p(x | k, w)] - KL(q(w|x,k) || p(w|k)) ) - KL(q(k|x) || U(K))
    KL(N(mu, sigma^2) || N(m, I)) = 1/2 sum_j ((mu_j - m_j)^2 + sigma_j^2 - 1 - log sigma_j^2)
    KL(q(k|x) || U(K)) = log K - H(q(k|x))

The sum over k is exact: every image is decoded once per component (one reparameterised w each, w =
mu_k + sigma_k eps), so the choice k needs no relaxation; the gradient reaches all K parameter sets,
each weighted by q(k|x). It is the conditional VAE (cvae.py) with its label made latent and inferred.

Nothing tells a component which digit to take; if the components split the images by class, the model
separates the classes without labels. The ELBO does not ask for it: averaged over the images,

    E_x KL(q(k|x) || U(K)) = I(x; k) + KL(q(k) || U(K)),     q(k) = E_x q(k|x)

so every bit the choice k carries about the image is charged, a split by class no less than a split by
slant or thickness. kl_k="marginal" drops the mutual information I(x; k) from the loss and keeps the
second term (the batch should use every component): a loss that is no longer the -ELBO (the ELBO is still
what `evaluate` reports), which lets the components carry what the image is. `evaluate` measures it: the purity of the components (each test
image assigned to argmax_k q(k|x), each component named by its most common label), beside the -ELBO in
nats on the binarised test split (binarised once with seed 0, as the VAE's). Sampling: k ~ U(K),
w ~ N(m_k, I), the decoder's means.

Recipe (Config): K = 10 components, w of 16 dimensions, the VAE's MLPs (784-512-256 encoder, to K logits
and K (mu, log sigma^2) pairs; 26-256-512-784 decoder), Adam 1e-3 with a cosine decay, batch 128,
20 epochs (9,380 steps). Figures: docs/models/mixture_vae.md.

    python -m tinygen train mixture_vae --no-progress
    python -m tinygen evaluate mixture_vae --checkpoint runs/mixture_vae-mnist/last.npz
    python -m tinygen train mixture_vae --set kl_k=marginal --out runs/mixture_vae-marginal
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn
from ..io import save_image_grid
from .ae import Decoder, Encoder
from .base import Config, Model, assignment_purity, inference
from .dvae import categorical_kl_uniform
from .vae import bernoulli_log_likelihood, gaussian_kl, reparameterize


KL_K = ("image", "marginal")


def marginal_kl_uniform(q):
    """KL(q(k) || U(K)) of the batch's marginal q(k) = mean_x q(k|x), from q (B, K) (a scalar Tensor):
    log K - H(q(k)), zero when the batch uses every component equally, whatever each image's q(k|x)."""
    qk = q.mean(axis=0)                                                 # (K,)
    return (qk * (qk + 1e-12).log()).sum() + math.log(q.shape[1])


@dataclass
class MixtureVAEConfig(Config):
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    components: int = 10       # K
    latent_dim: int = 16       # the dimension of w
    hidden: int = 512          # the VAE's MLP widths: hidden, hidden // 2
    kl_k: str = "image"        # "image": the ELBO's KL(q(k|x) || U) per image; "marginal": KL(q(k) || U) of the batch
    quick_steps: int = 600


class MixtureVAE(Model):
    """Mixture VAE: a categorical k (one-hot z) picks one of K Gaussians for w; exact sum over k; no labels."""
    Config = MixtureVAEConfig
    tiny_config = {"hidden": 16, "latent_dim": 2, "components": 3, "batch_size": 8}
    image_range = "binary"

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.components < 2:
            raise ValueError(f"MixtureVAE: components must be at least 2, got {c.components}")
        if c.kl_k not in KL_K:
            raise ValueError(f"MixtureVAE: unknown kl_k {c.kl_k!r}; valid: {', '.join(KL_K)}")
        K, D = c.components, c.latent_dim
        self.encoder = Encoder(784, K + 2 * K * D, c.hidden)      # -> [a, mu_1..K, log sigma^2_1..K]
        self.decoder = Decoder(K + D, c.hidden)                   # [z, w] -> Bernoulli logits
        self.centres = nn.Parameter(nn.get_rng().standard_normal((K, D)).astype(np.float32))   # m_k (K, D)

    # ------------------------------------------------------------------ the two networks
    def encode(self, x):
        """q(k|x) and q(w|x, k) for every k: logits a (B, K), mu and log sigma^2 (B, K, D), Tensors."""
        K, D = self.config.components, self.config.latent_dim
        h = self.encoder(x.reshape(len(x), -1))                             # (B, K + 2 K D)
        return h[:, :K], h[:, K:K + K * D].reshape(-1, K, D), h[:, K + K * D:].reshape(-1, K, D)

    def decode(self, k, w):
        """p(x | k, w): Bernoulli logits (B, 1, 28, 28) of components k (B,) ints and codes w (B, D)."""
        z = F.one_hot(np.asarray(k), self.config.components)               # (B, K): z = one_hot(k)
        return self.decoder(F.concat([z, w], axis=1))                      # decoder input (B, K + D)

    # ------------------------------------------------------------------ the bound
    def elbo_terms(self, x):
        """Per image (B,): -E_q[log p(x | k, w)], the two KLs (of w, of k), and q(k|x) (B, K) as a Tensor."""
        K, D = self.config.components, self.config.latent_dim
        B = len(x)
        a, mu, logvar = self.encode(x)                                     # (B, K), (B, K, D) x 2
        q = F.softmax(a, dim=1)                                            # (B, K): q(k|x)
        # every image with every component: row b K + k
        w = reparameterize(mu.reshape(B * K, D), logvar.reshape(B * K, D), self.rng)   # (B K, D)
        k = np.tile(np.arange(K), B)                                       # (B K,)
        x_k = Tensor(np.repeat(x.numpy(), K, axis=0))                      # (B K, 1, 28, 28)
        recon_k = -bernoulli_log_likelihood(self.decode(k, w), x_k).reshape(B, K)      # -log p(x | k, w)
        # KL(q(w|x,k) || N(m_k, I)) = KL(N(mu_k - m_k, sigma_k^2) || N(0, I))
        kl_w_k = gaussian_kl((mu - self.centres).reshape(B * K, D), logvar.reshape(B * K, D)).reshape(B, K)
        recon = (q * recon_k).sum(axis=1)                                  # sum_k q(k|x) (...)
        kl_w = (q * kl_w_k).sum(axis=1)
        return recon, kl_w, categorical_kl_uniform(a), q

    def loss(self, batch):
        x, _ = batch
        recon, kl_w, kl_k, q = self.elbo_terms(x)
        if self.config.kl_k == "image":
            # loss = -ELBO = E_batch[sum_k q(k|x) (-log p(x|k,w) + KL_w,k) + KL(q(k|x) || U(K))]
            loss = (recon + kl_w + kl_k).mean()
        else:
            # E_x KL(q(k|x) || U) = I(x; k) + KL(q(k) || U): drop the first, which charges every image for
            # the information its component carries; keep the batch's use of the components even
            loss = (recon + kl_w).mean() + marginal_kl_uniform(q)
        used = len(np.unique(q.numpy().argmax(axis=1)))
        return loss, {"recon": float(recon.data.mean()), "kl_w": float(kl_w.data.mean()),
                      "kl_k": float(kl_k.data.mean()), "components_used": used}

    @inference
    def assign(self, images):
        """argmax_k q(k|x) of uint8 or [0, 1] images (B, 1, 28, 28): (B,) ints, the component of each."""
        return self.encode(Tensor(data.to_float(images)))[0].numpy().argmax(axis=1)

    @inference
    def evaluate_nll(self, images, batch_size=1000):
        """-ELBO in nats per image on images binarised once with seed 0 (one w per image and component), with
        its three terms: an upper bound on -log p(x)."""
        x = data.binarize(images, np.random.default_rng(0))
        sums = np.zeros(3)
        for i in range(0, len(x), batch_size):
            recon, kl_w, kl_k, _ = self.elbo_terms(Tensor(x[i:i + batch_size]))
            sums += [float(recon.data.sum()), float(kl_w.data.sum()), float(kl_k.data.sum())]
        recon, kl_w, kl_k = (float(v) for v in sums / len(x))
        return {"neg_elbo_nats": recon + kl_w + kl_k, "recon_nats": recon, "kl_w_nats": kl_w, "kl_k_nats": kl_k}

    def evaluate_representation(self, images, labels):
        """Do the components separate the classes without labels? Each image (binarised with seed 0) goes to
        argmax_k q(k|x); only then are the labels read: the purity of the components (assignment_purity)
        and how many components hold any image."""
        assigned = self.assign(data.binarize(images, np.random.default_rng(0)))
        return {"component_purity": assignment_purity(assigned, labels[:len(images)]),
                "components_used": int(len(np.unique(assigned)))}

    def evaluate(self, images, labels):
        """After each epoch: the -ELBO and its terms on the test split, the purity of the components."""
        r = self.evaluate_nll(images)
        return {"test_neg_elbo": r["neg_elbo_nats"], "test_recon": r["recon_nats"], "test_kl_w": r["kl_w_nats"],
                "test_kl_k": r["kl_k_nats"], **self.evaluate_representation(images, labels)}

    # ------------------------------------------------------------------ sampling
    @inference
    def sample_components(self, k):
        """One image per entry of k (n,) ints: w ~ N(m_k, I), the decoder's means (n, 1, 28, 28) in [0, 1]."""
        k = np.asarray(k)
        w = self.centres.numpy()[k] + self.rng.standard_normal((len(k), self.config.latent_dim), dtype=np.float32)
        return F.sigmoid(self.decode(k, Tensor(w))).numpy()

    def sample(self, n):
        """n images: k ~ U(K), w ~ N(m_k, I), the means of p(x | k, w): (n, 1, 28, 28) in [0, 1]."""
        return self.sample_components(self.rng.integers(0, self.config.components, n))

    def visualize(self, images, labels, path):
        """One row per component k: 10 samples of p(x | k, w), w ~ N(m_k, I)."""
        K = self.config.components
        save_image_grid(self.sample_components(np.repeat(np.arange(K), 10)), path, nrow=10, scale=2)
