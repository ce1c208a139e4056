"""The categorical dVAE of DALL·E, stage 1 (Ramesh et al. 2021, registered as `dvae`): a discrete VAE
whose latent is a 7 x 7 grid of K-way tokens per image, the tokens Image GPT and DALL·E model.

The conv encoder outputs K logits per grid cell; training decodes the Gumbel-softmax relaxation (Jang et
al. 2017; Maddison et al. 2017), whose temperature tau is annealed from 1 towards 1/16, and the KL to the
uniform prior is warmed up from 0 to 1:

    q(z_hw = k | x) = softmax_k(l_hw(x)),   p(z_hw = k) = 1 / K
    y_hw = softmax((l_hw + g_hw) / tau),  g_hwk = -log(-log u),  u ~ U(0, 1)      (rows sum to 1)
    KL(q(z_hw | x) || U(K)) = sum_k q_k log(q_k K) = log K - H(q(z_hw | x))
    loss = E_batch[-log p(x | y) + w_kl sum_hw KL_hw]

    encode(x) -> tokens (B, 7, 7) ints in [0, K)      (the argmax of q: what Image GPT / DALL·E model)
    decode(tokens) -> images (B, 1, 28, 28) in [0, 1]  (the Bernoulli means of p(x | z))

The figure: -ELBO in nats per image on the test split (binarised once with seed 0) with HARD latents, not
the relaxation: E_{z ~ q(z|x)}[-log p(x | z)] estimated with `eval_samples` draws of discrete tokens per
image, plus the KL of q to the prior in closed form; an upper bound on -log p(x) of the discrete-latent
model. What both discrete VAEs share (DiscreteConfig, DiscreteVAE: binary images, the schedules' step
counter, the hard bound) lives here; Rolfe's binary DVAE (dvae_rolfe.py) builds on it.

Recipe (Config defaults): K = 64, conv widths 32/64 with 4 residual blocks at 7x7 on each side, tau
1 -> 1/16 over 6,000 steps, KL warmed up over 2,000 steps, Adam 1e-3 with a cosine decay, batch 128,
30 epochs (14,040 steps). Figures and the runs that led here: docs/models/dvae.md.

    python -m tinygen train dvae --no-progress
    python -m tinygen evaluate dvae --checkpoint runs/dvae-mnist/last.npz
    python -m tinygen sample dvae --checkpoint runs/dvae-mnist/last.npz     (tokens from the uniform prior)
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn
from ..data import to_float
from ..io import save_image_grid
from .base import Config, Model, cluster_purity, inference
from .vae import bernoulli_log_likelihood


def geometric_schedule(step, start, end, steps):
    """start -> end geometrically over `steps` steps, then end: start (end / start)^min(step / steps, 1)."""
    return start * (end / start) ** min(step / max(steps, 1), 1.0)


# ---------------------------------------------------------------------- the categorical pieces
def categorical_kl_uniform(logits, dim=1):
    """KL(softmax(logits) || uniform over K) along `dim`, summed over all other axes but the first (B,)."""
    K = logits.shape[dim]
    log_q = F.log_softmax(logits, dim=dim)
    # KL = sum_k q_k log q_k + log K = log K - H(q)
    kl = (log_q.exp() * log_q).sum(axis=dim) + math.log(K)
    return kl.reshape(len(kl), -1).sum(axis=1)


def sample_tokens(logits, rng):
    """Hard tokens z ~ softmax(logits) along axis 1 by the Gumbel-max trick (NumPy (B, K, h, w) -> (B, h, w))."""
    u = np.maximum(rng.random(logits.shape, dtype=np.float32), np.finfo(np.float32).tiny)
    # z = argmax_k (l_k + g_k),  g = -log(-log u)
    return np.argmax(logits - np.log(-np.log(u)), axis=1)


# ---------------------------------------------------------------------- what both discrete VAEs share
@dataclass
class DiscreteConfig(Config):
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    anneal_steps: int = 20000   # steps over which tau (or beta) moves from its start to its end value
    kl_warmup_steps: int = 5000  # w_kl = min(1, step / kl_warmup_steps)
    eval_samples: int = 1       # hard latent draws per test image in evaluate / evaluate_nll
    quick_steps: int = 600


class DiscreteVAE(Model):
    """What both discrete VAEs share: binary images, a step counter for the schedules, the hard -ELBO."""
    image_range = "binary"

    def __init__(self, config=None):
        super().__init__(config)
        self.register_buffer("steps_done", np.zeros(1, np.float32))  # saved: a resumed run keeps its schedules

    def kl_weight(self):
        # w_kl = min(1, step / kl_warmup_steps)
        return min(1.0, float(self.steps_done[0]) / max(self.config.kl_warmup_steps, 1))

    def loss(self, batch):
        x, _ = batch
        recon, kl = self.relaxed_terms(x)                                    # (B,) each
        w = self.kl_weight()
        # loss = E_batch[-log p(x | relaxed z) + w_kl KL(q || p)]
        loss = (recon + w * kl).mean()
        if self.training:
            self.steps_done = self.steps_done + 1
        return loss, {"recon": float(recon.data.mean()), "kl": float(kl.data.mean()), "kl_weight": w,
                      **self.schedule_logs()}

    @inference
    def hard_terms(self, x, samples=1):
        """-log p(x | z) averaged over `samples` hard draws z ~ q(z|x), and the exact KL(q || p), per image
        (B,) NumPy, for binary images x (B, 1, 28, 28) (NumPy)."""
        logits = self.posterior_logits(Tensor(x))
        recon = np.zeros(len(x))
        for _ in range(samples):
            z = self.draw_hard(logits.numpy())
            recon -= bernoulli_log_likelihood(self.decoder_logits(z), Tensor(x)).numpy() / samples
        return recon, self.prior_kl(logits).numpy()

    def evaluate_nll(self, images, samples=None, batch_size=1000):
        """The figure: -ELBO with hard latents, nats per image, on uint8 images binarised once with
        np.random.default_rng(0) (the vae.py convention); the samples draw from self.rng."""
        x = data.binarize(images, np.random.default_rng(0))
        samples = samples or self.config.eval_samples
        sums = np.zeros(2)
        for i in range(0, len(x), batch_size):
            recon, kl = self.hard_terms(x[i:i + batch_size], samples)
            sums += [recon.sum(), kl.sum()]
        recon, kl = (float(v) for v in sums / len(x))
        return {"neg_elbo_hard_nats": recon + kl, "recon_hard_nats": recon, "kl_nats": kl, "samples": samples}

    def evaluate(self, images, labels):
        r = self.evaluate_nll(images)
        return {"test_neg_elbo": r["neg_elbo_hard_nats"], "test_recon": r["recon_hard_nats"], "test_kl": r["kl_nats"]}

    @inference
    def code_means(self, images):
        """E_q[z]: the posterior's mean code of images (B, 1, 28, 28), flattened to (B, D) NumPy: for one-hot
        tokens q(z_hw = k | x) itself, for bits q(z = 1 | x)."""
        return self.code_probabilities(self.posterior_logits(Tensor(to_float(images)))).numpy().reshape(len(images), -1)

    def evaluate_representation(self, images, labels, n=10000, batch_size=1000):
        """Does the discrete code separate the digits without labels? k-means with 10 clusters on the mean
        codes E_q[z] of the first n test images, and on their pixels for comparison; each scored by
        cluster_purity (the labels are read only to score)."""
        x = data.binarize(images[:n], np.random.default_rng(0))
        codes = np.concatenate([self.code_means(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        return {"code_cluster_purity": cluster_purity(codes, labels[:n]),
                "pixel_cluster_purity": cluster_purity(x, labels[:n])}

    @inference
    def reconstruct(self, images):
        """Bernoulli means of p(x | z) for one hard z ~ q(z|x) per image: (B, 1, 28, 28) in [0, 1]."""
        logits = self.posterior_logits(Tensor(to_float(images)))
        return F.sigmoid(self.decoder_logits(self.draw_hard(logits.numpy()))).numpy()

    def visualize(self, images, labels, path):
        """Rows 1-2: test images; rows 3-4: their reconstructions; rows 5-8: samples from the prior."""
        x = data.binarize(images[:16], np.random.default_rng(0))
        save_image_grid(np.concatenate([x, self.reconstruct(x), self.sample(32)]), path, nrow=8, scale=2)

    def save_pictures(self, images, path_reconstructions, path_samples):
        """Test images (odd rows) above their hard-latent reconstructions (even rows); 64 prior samples."""
        x = data.binarize(images[:32], np.random.default_rng(0))
        rec = self.reconstruct(x)
        pairs = np.stack([x.reshape(4, 8, 1, 28, 28), rec.reshape(4, 8, 1, 28, 28)], axis=1).reshape(-1, 1, 28, 28)
        save_image_grid(pairs, path_reconstructions, nrow=8, scale=2)
        save_image_grid(self.sample(64), path_samples, nrow=8, scale=2)


# ---------------------------------------------------------------------- the categorical dVAE
@dataclass
class DVAEConfig(DiscreteConfig):
    epochs: int = 30
    anneal_steps: int = 6000   # of the recipe's 14,040 steps
    kl_warmup_steps: int = 2000
    num_tokens: int = 64       # K
    channels: int = 32         # conv widths: channels at 14 x 14, 2 channels at 7 x 7
    res_blocks: int = 4        # residual blocks (nn.ResBlock) at 7 x 7 in the encoder and in the decoder
    quick_steps: int = 250     # --quick: about a minute of CPU with the blocks
    tau_start: float = 1.0     # Gumbel-softmax temperature, annealed geometrically to tau_end
    tau_end: float = 1 / 16


class TokenEncoder(nn.Module):
    """x (B, 1, 28, 28) -> logits (B, K, 7, 7): two stride-2 convs, a 3x3 conv, `res_blocks` residual
    blocks, a 1x1 to K."""

    def __init__(self, K, c, res_blocks=0):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),       # (B, c, 14, 14)
                                 nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),   # (B, 2c, 7, 7)
                                 nn.Conv2d(2 * c, 2 * c, 3, 1, 1),
                                 *[nn.ResBlock(2 * c) for _ in range(res_blocks)], nn.ReLU(),
                                 nn.Conv2d(2 * c, K, 1))                    # (B, K, 7, 7)

    def forward(self, x):
        return self.net(x)


class TokenDecoder(nn.Module):
    """One-hot or relaxed tokens y (B, K, 7, 7) -> pixel logits (B, 1, 28, 28) (dvae_rolfe's net=conv feeds
    its K = cell_bits bits, or their smoothed zeta, per cell). The 1x1 conv is the token
    embedding (a one-hot times its weight picks one column per cell); a learned embedding of the cell's
    position is added to it, so that a token may mean one thing in a corner and another in the centre
    (a cell the image does not need can then spend no KL: every token there decodes to background)."""

    def __init__(self, K, c, grid=7, res_blocks=0):
        super().__init__()
        self.embed = nn.Conv2d(K, 2 * c, 1)
        self.position = nn.Parameter(np.zeros((1, 2 * c, grid, grid), np.float32))
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1),
                                 *[nn.ResBlock(2 * c) for _ in range(res_blocks)], nn.ReLU(),
                                 nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),  # (B, c, 14, 14)
                                 nn.ConvTranspose2d(c, 1, 4, 2, 1))         # (B, 1, 28, 28)

    def forward(self, y):
        return self.net(self.embed(y) + self.position)                     # (B, 2c, 7, 7) -> (B, 1, 28, 28)


class DVAE(DiscreteVAE):
    """Categorical dVAE (DALL·E): 7x7 grid of K-way tokens, Gumbel-softmax, KL to the uniform prior."""
    Config = DVAEConfig
    tiny_config = {"num_tokens": 8, "channels": 4, "batch_size": 8}
    grid = 7

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.encoder = TokenEncoder(c.num_tokens, c.channels, c.res_blocks)
        self.decoder = TokenDecoder(c.num_tokens, c.channels, res_blocks=c.res_blocks)

    def tau(self):
        c = self.config
        return geometric_schedule(float(self.steps_done[0]), c.tau_start, c.tau_end, c.anneal_steps)

    def schedule_logs(self):
        return {"tau": self.tau()}

    def posterior_logits(self, x):
        return self.encoder(x)                                              # (B, K, 7, 7)

    def prior_kl(self, logits):
        return categorical_kl_uniform(logits, dim=1)                        # (B,)

    def draw_hard(self, logits):
        return sample_tokens(logits, self.rng)                              # (B, 7, 7)

    def code_probabilities(self, logits):
        return F.softmax(logits, dim=1)                                     # (B, K, 7, 7): q(z_hw = k | x)

    def one_hot(self, tokens):
        """tokens (B, h, w) ints -> one-hot (B, K, h, w) float32, refusing tokens outside [0, K)."""
        tokens = np.asarray(tokens)
        K = self.config.num_tokens
        if tokens.ndim != 3 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"dvae.decode: tokens must be integers of shape (B, h, w), got {tokens.dtype} "
                             f"{tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= K):
            raise ValueError(f"dvae.decode: tokens must lie in [0, {K}), got {tokens.min()}..{tokens.max()}")
        return np.eye(K, dtype=np.float32)[tokens].transpose(0, 3, 1, 2)    # (B, K, h, w)

    def decoder_logits(self, z):
        return self.decoder(Tensor(self.one_hot(z)) if isinstance(z, np.ndarray) else z)

    def relaxed_terms(self, x):
        logits = self.posterior_logits(x)                                   # (B, K, 7, 7)
        y = F.gumbel_softmax(logits, self.tau(), dim=1, rng=self.rng)        # (B, K, 7, 7), sums to 1 over K
        recon = -bernoulli_log_likelihood(self.decoder(y), x)               # (B,)
        return recon, self.prior_kl(logits)

    # ------------------------------------------------------------------ the token API (Image GPT, DALL·E)
    @inference
    def encode(self, x):
        """Images x (B, 1, 28, 28), uint8 or [0, 1] (binarised or grey) -> tokens (B, 7, 7) int64 in [0, K):
        the most probable token of q(z_hw | x) in each cell (deterministic)."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"dvae.encode: images must have shape (B, 1, 28, 28), got {x.shape}")
        return self.posterior_logits(Tensor(to_float(x))).numpy().argmax(axis=1).astype(np.int64)

    @inference
    def decode(self, tokens):
        """Tokens (B, 7, 7) ints in [0, K) -> images (B, 1, 28, 28) in [0, 1]: the Bernoulli means of p(x | z)."""
        return F.sigmoid(self.decoder_logits(np.asarray(tokens))).numpy()

    @inference
    def sample(self, n):
        """Decode tokens drawn from the uniform prior (independent cells): shows what the prior knows, which
        is nothing about digits; a learned prior over tokens (Image GPT, DALL·E) is what makes samples."""
        return self.decode(self.rng.integers(0, self.config.num_tokens, (n, self.grid, self.grid)))
