"""Rolfe (2017), "Discrete Variational Autoencoders" (registered as `dvae_rolfe`): D binary latents
z in {0, 1}^D. A sample of a Bernoulli cannot be differentiated in its probability, so each z_j is
smoothed by a continuous zeta_j: zeta = 0 when z = 0 (the spike), and zeta ~ r(zeta | z = 1), an
exponential on [0, 1] sharpened towards 1 by beta, when z = 1. The marginal of zeta has an inverse
CDF that is differentiable in q, so zeta is a reparameterised sample; the decoder reads zeta while
training and the hard z when the bound is evaluated. The prior is a factorial Bernoulli with learned
logits, or (prior="rbm") Rolfe's RBM prior: its partition function Z, which the ELBO needs, is exact
here because one side of the RBM is kept small (RBMPrior: 2^k states summed, the other side in closed form).

    q(z_j = 1 | x) = q_j = sigmoid(l_j(x)),   p(z_j = 1) = p_j = sigmoid(b_j)
    r(zeta | z = 0) = delta(zeta),  r(zeta | z = 1) = beta e^{beta (zeta - 1)} / (e^beta - 1),  zeta in [0, 1]
    CDF:  F(zeta) = (1 - q) + q (e^{beta zeta} - 1) / (e^beta - 1)
    inverse CDF (rho ~ U(0, 1)):  zeta = (1/beta) log(1 + max(rho + q - 1, 0) / q (e^beta - 1))
    KL(q || p) = sum_j q_j log(q_j / p_j) + (1 - q_j) log((1 - q_j) / (1 - p_j))

The spike gives a bit drawn as 0 no gradient at all. Other smoothings of the same hard z are options
(`smoothing`): DVAE++'s overlapping exponentials ("overlap_exp", Vahdat et al. 2018: z = 0 smooths to an
exponential at 0, mirror image of z = 1's, so every draw moves with q), and the binary concrete
("concrete", Maddison et al. 2017: zeta = sigmoid(beta (l + L)), L logistic noise, z = [l + L > 0]), the
two-state Gumbel-softmax of dvae.py with tau = 1 / beta; "concrete_st" decodes the hard bits z themselves
and takes the concrete's gradient (straight-through: z + sg(z - zeta) in value, zeta in gradient), so
the decoder is trained on what the bound is evaluated with. The ELBO that is reported is the same for
all of them: hard bits z (Bernoulli draws from q), the KL of the discrete q to the discrete prior, in
nats per image on the test split binarised once with seed 0 (dvae.py's DiscreteVAE computes it).

Recipe (Config defaults): MLP 784-512-256-200 and back (vae.py's), 100 epochs (46,800 steps), beta 2 -> 6
over 30,000 steps, a factorial prior. net="conv" puts cell_bits = 4 bits on each cell of the categorical
dVAE's 7 x 7 grid and uses its conv nets. Figures, and the smoothings and runs that were tried:
docs/models/dvae_rolfe.md.

    python -m tinygen train dvae_rolfe --no-progress    (binary, spike-and-exponential)
    python -m tinygen train dvae_rolfe --set prior=rbm --no-progress    (the same, with the RBM prior)
    python -m tinygen train dvae_rolfe --set prior=rbm --set net=conv --epochs 30 --set anneal_steps=9000 \
        --set kl_warmup_steps=2000 --no-progress                         (conv nets, 196 bits on the grid)
    python -m tinygen train dvae_rolfe --set prior=rbm --set net=conv --set channels=64 --epochs 30 \
        --set anneal_steps=9000 --set kl_warmup_steps=2000 --no-progress   (the same, twice the widths)
    python -m tinygen evaluate dvae_rolfe --checkpoint runs/dvae_rolfe-mnist/last.npz
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import nn
from ..data import to_float
from .ae import Decoder, Encoder
from .base import inference
from .dvae import DiscreteConfig, DiscreteVAE, TokenDecoder, TokenEncoder, geometric_schedule
from .vae import bernoulli_log_likelihood


# ---------------------------------------------------------------------- the smoothings
def spike_exp_cdf(zeta, q, beta):
    """F(zeta) of the smoothed marginal, for zeta in [0, 1] (NumPy): the atom 1 - q sits at zeta = 0."""
    # F(zeta) = (1 - q) + q (e^{beta zeta} - 1) / (e^beta - 1)
    return (1 - q) + q * np.expm1(beta * zeta) / math.expm1(beta)


def spike_exp_inverse_cdf(rho, q, beta):
    """zeta = F^{-1}(rho), differentiable in q (a Tensor of probabilities; rho: uniform NumPy noise, the
    same shape). rho < 1 - q falls on the spike (zeta = 0, no gradient), the rest on the exponential."""
    # zeta = (1/beta) log(1 + max(rho + q - 1, 0) / q (e^beta - 1))
    return (1 + F.relu(q + (rho - 1)) / q * math.expm1(beta)).log() / beta


# The overlapping exponentials of DVAE++ (Vahdat et al. 2018): z = 0 smooths to an exponential at 0,
# z = 1 to its mirror image at 1, so zeta depends on q for every rho (the spike gives z = 0 no gradient):
#     r(zeta | 0) = beta e^{-beta zeta} / (1 - e^-beta),   r(zeta | 1) = beta e^{beta (zeta - 1)} / (1 - e^-beta)
#     F(zeta) = [(1 - q)(1 - e^{-beta zeta}) + q e^-beta (e^{beta zeta} - 1)] / (1 - e^-beta)
def overlap_exp_cdf(zeta, q, beta):
    """F(zeta) of the overlapping-exponential marginal, zeta in [0, 1] (NumPy)."""
    u = math.exp(-beta)
    return ((1 - q) * -np.expm1(-beta * zeta) + q * u * np.expm1(beta * zeta)) / -math.expm1(-beta)


def overlap_exp_inverse_cdf(rho, q, beta):
    """zeta = F^{-1}(rho) of the overlapping exponentials, differentiable in q (a Tensor of probabilities
    in (0, 1); rho: uniform NumPy noise, the same shape). F(zeta) = rho is a quadratic in m = e^{beta zeta}:

        A m^2 + B m - 1 = 0,   A = q e^-beta / (1 - q),   B = 1 - (q e^-beta + rho (1 - e^-beta)) / (1 - q)
        m = 2 / (B + s)  (B >= 0)   or   (s - B) / (2 A)  (B < 0),   s = sqrt(B^2 + 4 A)

    the two forms of the same root, each taken where it has no cancellation (s + |B| in both)."""
    u = math.exp(-beta)
    q = F.clip(q, None, 1 - 1e-6)                                        # 1 - q > 0 below
    A = q * u / (1 - q)
    B = 1 - (q * u + rho * (1 - u)) / (1 - q)
    t = (B * B + 4 * A).sqrt() + B.abs()                                  # s + |B| > 0
    positive = B.data >= 0
    m = F.where(positive, 2 / t, t / (2 * F.where(positive, 1.0, A)))   # A only where B < 0 (then A > 0)
    return F.clip(m.log() / beta, 0.0, 1.0)


def logistic_noise(u):
    """L = log u - log(1 - u) of uniform u (NumPy): [l + L > 0] and [L < l] are Bernoulli(sigmoid(l)) draws."""
    return np.log(u) - np.log1p(-u)


def binary_concrete(rho, logits, beta):
    """The binary concrete (Gumbel-sigmoid) relaxation (Maddison et al. 2017; Jang et al. 2017), the
    two-state case of the categorical dVAE's Gumbel-softmax, temperature tau = 1 / beta:

        L = log rho - log(1 - rho)  (logistic noise),   z = [l + L > 0] ~ Bernoulli(sigmoid(l)),
        zeta = sigmoid(beta (l + L))  -> z as beta -> infinity

    logits: a Tensor l (B, D); rho: uniform NumPy noise, the same shape."""
    rho = np.clip(rho, 1e-7, 1 - 1e-7)
    return F.sigmoid(beta * (logits + logistic_noise(rho)))


def straight_through_concrete(rho, logits, beta):
    """The hard bits z = [l + L > 0] forward, the binary concrete's gradient backward:
    z_st = zeta + sg(z - zeta), so the decoder is trained on the bits the bound is evaluated with."""
    zeta = binary_concrete(rho, logits, beta)
    hard = (zeta.data > 0.5).astype(zeta.data.dtype)                    # zeta > 1/2  <=>  l + L > 0
    return zeta + (-zeta.detach() + hard)


INVERSE_CDFS = {"spike_exp": spike_exp_inverse_cdf, "overlap_exp": overlap_exp_inverse_cdf}
FROM_LOGITS = {"concrete": binary_concrete, "concrete_st": straight_through_concrete}
SMOOTHINGS = (*INVERSE_CDFS, *FROM_LOGITS)


# ---------------------------------------------------------------------- the priors: factorial and RBM
def bernoulli_kl(q_logits, p_logits):
    """KL(Bernoulli(q) || Bernoulli(p)) summed over the last axis, from logits, per row (B,)."""
    q = F.sigmoid(q_logits)
    # log q = -softplus(-l),  log(1 - q) = -softplus(l)
    log_q, log_1q = -F.softplus(-q_logits), -F.softplus(q_logits)
    log_p, log_1p = -F.softplus(-p_logits), -F.softplus(p_logits)
    # KL = q (log q - log p) + (1 - q) (log(1 - q) - log(1 - p))
    return (q * (log_q - log_p) + (1 - q) * (log_1q - log_1p)).sum(axis=-1)


def bernoulli_neg_entropy(logits):
    """sum_j q_j log q_j + (1 - q_j) log(1 - q_j) for q = sigmoid(logits), per row (B,)."""
    q = F.sigmoid(logits)
    # log q = -softplus(-l),  log(1 - q) = -softplus(l)
    return -(q * F.softplus(-logits) + (1 - q) * F.softplus(logits)).sum(axis=-1)


def state_bits(index, k):
    """The k bits of each state number (..., ) -> (..., k) float32: bit i of n is (n >> i) & 1."""
    return ((np.asarray(index)[..., None] >> np.arange(k)) & 1).astype(np.float32)


def rbm_state_log_weights(a, b, W, states):
    """log of the unnormalised marginal of each state z_a (rows of `states`, (S, k)):
    a . z_a + sum_j softplus(b_j + (z_a W)_j), (S,)."""
    s = Tensor(states).astype(a.dtype)                                      # (S, k) 0/1, as a's dtype
    return s @ a + F.softplus(s @ W + b).sum(axis=1)


def rbm_kl(logits, a, b, W, states):
    """KL(q || p) of a factorial q = sigmoid(logits) (B, D) to the RBM (a, b, W), per row (B,):
    E_q[log q] - E_q[-E(z)] + log Z, with E_q[z_a^T W z_b] = q_a^T W q_b (q factorises)."""
    k = a.shape[0]
    q = F.sigmoid(logits)
    q_a, q_b = q[:, :k], q[:, k:]
    energy = q_a @ a + q_b @ b + ((q_a @ W) * q_b).sum(axis=1)              # E_q[-E(z)], (B,)
    log_z = F.logsumexp(rbm_state_log_weights(a, b, W, states), axis=0)
    return bernoulli_neg_entropy(logits) - energy + log_z


class RBMPrior(nn.Module):
    """An RBM prior over D bits split into a small side z_a (k bits) and the rest z_b (D - k bits):

        p(z) = exp(-E(z)) / Z,    -E(z) = a . z_a + b . z_b + z_a^T W z_b          W (k, D - k)

    Summing z_b out in closed form leaves a sum over the 2^k states of z_a alone, so with k small the
    partition function is exact (no AIS, no persistent chains) and differentiable:

        log Z = logsumexp over z_a in {0, 1}^k of [a . z_a + sum_j softplus(b_j + (z_a W)_j)]

    The same sum says what the prior is: a mixture of 2^k factorial Bernoullis over z_b, one per state
    of z_a, which is also how `sample` draws from it exactly (z_a from its marginal, then z_b | z_a)."""

    def __init__(self, latent_dim, small):
        super().__init__()
        if not 1 <= small < latent_dim or small > 16:
            raise ValueError(f"RBMPrior: the small side must hold 1..min(16, latent_dim - 1) bits, got {small} "
                             f"of latent_dim {latent_dim}")
        self.k = small
        self.a = nn.Parameter(np.zeros(small, np.float32))                   # biases of z_a
        self.b = nn.Parameter(np.zeros(latent_dim - small, np.float32))      # biases of z_b
        self.W = nn.Parameter(np.zeros((small, latent_dim - small), np.float32))   # couplings
        nn.init.normal_(self.W, std=0.01)
        self.register_buffer("states", state_bits(np.arange(2 ** small), small), persistent=False)  # (2^k, k)

    def state_log_weights(self):
        return rbm_state_log_weights(self.a, self.b, self.W, self.states)  # (2^k,)

    def log_partition(self):
        return F.logsumexp(self.state_log_weights(), axis=0)                # log Z, a scalar

    def kl(self, logits):
        """KL(q || p) for the factorial posterior q = sigmoid(logits) (B, D), per row (B,)."""
        return rbm_kl(logits, self.a, self.b, self.W, self.states)

    def log_prob(self, z):
        """log p(z) of bits z (B, D) NumPy, exactly (NumPy (B,))."""
        z = np.asarray(z, np.float64)
        a, b, W = (p.numpy().astype(np.float64) for p in (self.a, self.b, self.W))
        z_a, z_b = z[:, :self.k], z[:, self.k:]
        return z_a @ a + z_b @ b + ((z_a @ W) * z_b).sum(1) - float(self.log_partition().numpy())

    def sample(self, n, rng):
        """n exact draws z (n, D) float32: z_a ~ its marginal over the 2^k states, then z_b ~ p(z_b | z_a),
        a factorial Bernoulli with logits b + z_a W."""
        w = self.state_log_weights().numpy().astype(np.float64)
        p = np.exp(w - w.max())
        z_a = state_bits(rng.choice(len(p), size=n, p=p / p.sum()), self.k)   # (n, k)
        logits = z_a @ self.W.numpy() + self.b.numpy()                       # (n, D - k)
        z_b = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
        return np.concatenate([z_a, z_b], axis=1).astype(np.float32)



@dataclass
class RolfeConfig(DiscreteConfig):
    epochs: int = 100
    anneal_steps: int = 30000  # of the recipe's 46,800 steps
    latent_dim: int = 200      # binary latents z in {0, 1}^D
    hidden: int = 512          # MLP widths hidden, hidden // 2 (vae.py's encoder and decoder)
    beta_start: float = 2.0    # the smoothing's sharpness, annealed geometrically to beta_end
    beta_end: float = 6.0
    prior: str = "factorial"   # "factorial": independent Bernoulli bits; "rbm": RBMPrior (exact log Z)
    rbm_small: int = 12        # rbm: the bits on the RBM's small side (its 2^k states are summed exactly)
    net: str = "mlp"           # "mlp": vae.py's MLPs, latent_dim bits; "conv": the categorical dVAE's conv nets
    cell_bits: int = 4         # conv: bits per cell of a 7 x 7 grid, D = 49 cell_bits (latent_dim unused)
    channels: int = 32         # conv: widths channels at 14 x 14, 2 channels at 7 x 7
    res_blocks: int = 4        # conv: residual blocks at 7 x 7 on each side
    smoothing: str = "spike_exp"   # Rolfe's spike-and-exponential; "overlap_exp" (DVAE++); "concrete", "concrete_st" (tau = 1 / beta)


class RolfeDVAE(DiscreteVAE):
    """Rolfe's discrete VAE: binary latents smoothed by spike-and-exponential; a factorial Bernoulli prior,
    or an RBM prior with an exact partition function (prior="rbm")."""
    Config = RolfeConfig
    tiny_config = {"hidden": 16, "latent_dim": 8, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.net == "mlp":
            self.D = c.latent_dim
            self.encoder = Encoder(784, self.D, c.hidden)                   # -> logits l(x) of q(z = 1 | x)
            self.decoder = Decoder(self.D, c.hidden)                        # zeta or z -> Bernoulli logits
        elif c.net == "conv":
            if not (isinstance(c.cell_bits, int) and c.cell_bits >= 1):
                raise ValueError(f"dvae_rolfe: cell_bits must be an integer >= 1, got {c.cell_bits!r}")
            # the categorical dVAE's nets (dvae.py), with cell_bits Bernoulli logits per cell instead of K
            # token logits: the bits of a cell are its "token", the 1x1 embedding reads zeta or z
            self.D = 49 * c.cell_bits
            self.encoder = TokenEncoder(c.cell_bits, c.channels, c.res_blocks)     # -> (B, cell_bits, 7, 7)
            self.decoder = TokenDecoder(c.cell_bits, c.channels, res_blocks=c.res_blocks)
        else:
            raise ValueError(f"dvae_rolfe: unknown net {c.net!r}; valid: 'mlp', 'conv'")
        if c.smoothing not in SMOOTHINGS:
            raise ValueError(f"dvae_rolfe: unknown smoothing {c.smoothing!r}; valid: {', '.join(map(repr, SMOOTHINGS))}")
        if c.prior not in ("factorial", "rbm"):
            raise ValueError(f"dvae_rolfe: unknown prior {c.prior!r}; valid: 'factorial', 'rbm'")
        if c.prior == "rbm":
            self.rbm = RBMPrior(self.D, c.rbm_small)                        # p(z) an RBM
        else:
            self.prior = nn.Parameter(np.zeros(self.D, np.float32))         # logits b of p(z = 1)

    def beta(self):
        c = self.config
        return geometric_schedule(float(self.steps_done[0]), c.beta_start, c.beta_end, c.anneal_steps)

    def schedule_logs(self):
        return {"beta": self.beta()}

    def posterior_logits(self, x):
        if self.config.net == "conv":
            return self.encoder(x).reshape(len(x), self.D)                  # (B, cell_bits, 7, 7) -> (B, D)
        return self.encoder(x.reshape(len(x), 784))                         # (B, D)

    def prior_kl(self, logits):
        if self.config.prior == "rbm":
            return self.rbm.kl(logits)                                      # (B,)
        return bernoulli_kl(logits, self.prior.expand(*logits.shape))       # (B,)

    def code_probabilities(self, logits):
        return F.sigmoid(logits)                                            # (B, D): q(z = 1 | x)

    def draw_hard(self, logits):
        """z ~ Bernoulli(sigmoid(l)) (NumPy (B, D) -> float32 {0, 1})."""
        u = self.rng.random(logits.shape)
        # u < sigmoid(l)  <=>  log u - log(1 - u) < l   (no overflow for large |l|)
        return (logistic_noise(u) < logits).astype(np.float32)

    def decoder_logits(self, z):
        z = Tensor(z) if isinstance(z, np.ndarray) else z                   # (B, D)
        if self.config.net == "conv":
            z = z.reshape(len(z), self.config.cell_bits, 7, 7)              # (B, cell_bits, 7, 7)
        return self.decoder(z)                                              # (B, 1, 28, 28)

    def relaxed_terms(self, x):
        logits = self.posterior_logits(x)                                   # (B, D)
        rho = self.rng.random(logits.shape, dtype=np.float32)
        if self.config.smoothing in FROM_LOGITS:
            zeta = FROM_LOGITS[self.config.smoothing](rho, logits, self.beta())   # (B, D) in [0, 1]
        else:
            q = F.clip(F.sigmoid(logits), 1e-6, 1.0)
            zeta = INVERSE_CDFS[self.config.smoothing](rho, q, self.beta())  # (B, D) in [0, 1]
        recon = -bernoulli_log_likelihood(self.decoder_logits(zeta), x)     # (B,)
        return recon, self.prior_kl(logits)

    def encode(self, x):
        """The most probable bits z = [q(z = 1 | x) > 1/2] (B, D) of images (B, 1, 28, 28), as int64."""
        return (self.posterior_logits(Tensor(to_float(x))).numpy() > 0).astype(np.int64)

    @inference
    def decode(self, z):
        """Bernoulli means of p(x | z) for bits z (B, D): (B, 1, 28, 28) in [0, 1]."""
        return F.sigmoid(self.decoder_logits(np.asarray(z, np.float32))).numpy()

    @inference
    def sample(self, n):
        """Decode z ~ the prior (factorial, or the RBM's exact draws): (n, 1, 28, 28) Bernoulli means in [0, 1]."""
        if self.config.prior == "rbm":
            return self.decode(self.rbm.sample(n, self.rng))
        p = 1 / (1 + np.exp(-self.prior.data))
        return self.decode(self.rng.random((n, self.D)) < p)
