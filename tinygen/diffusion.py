"""Gaussian diffusion for any tensor shape and any condition: beta schedules, the forward process,
the ancestral (DDPM: Ho, Jain & Abbeel, 2020) and DDIM (Song, Meng & Ermon, 2021) samplers over a
pluggable noise predictor, and guidance, classifier-free (Ho & Salimans, 2022) and by a classifier
(Dhariwal & Nichol, 2021), the learned variance with the hybrid loss of improved DDPM (Nichol &
Dhariwal, 2021), and the score-based view: the score of a noise predictor, annealed Langevin dynamics
(Song & Ermon, 2019), predictor-corrector sampling and the probability-flow ODE (Song et al., 2021).
ddpm.py, guidance.py, latent_diffusion.py and dit.py are built on it.

The idea: destroy x_0 by adding a little Gaussian noise at each of T steps until only noise is left;
a network eps_theta(x_t, t, c) learns which noise was added; generation starts from pure noise and
undoes the steps one by one. x can be anything with a batch axis first, (B, ...): images (B, C, H, W),
latents, embedding vectors (B, D), token grids (B, T); every per-step coefficient is a (B,) vector
broadcast as (B, 1, ..., 1) against x (per_sample).

    forward step      q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    closed form       q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)
    simple loss       L = E_{x_0, t, eps} |eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c)|^2
    posterior         q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)
    ancestral step    x_{t-1} = mu~_t(x_t, x0_hat) + sqrt(beta~_t) z
    DDIM step         x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_theta + sigma z,   t' < t

Learned variance (improved DDPM, section 3.1): the network also outputs v per element, in [-1, 1] (not
enforced), and the reverse step's variance interpolates between the two fixed choices in the log domain;
v then gets its gradient from the variational bound alone, while the mean keeps the simple loss:

    Sigma_theta(x_t, t) = exp(f log beta_t + (1 - f) log beta~_t),   f = (v + 1) / 2
    L_t    = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))                  t > 0  (bits per dim)
    L_0    = -log p_theta(x_0 | x_1)   discretised Gaussian on 256 levels in [-1, 1] (pixels), or the
             continuous Gaussian density (latents, which have no levels): decoder="discretized" / "gaussian"
    L_hybrid = L_simple + lambda T L_t,   lambda = 0.001,  t ~ U{0..T-1}  (T L_t estimates L_vlb = sum_t L_t),
             the mean mu_theta inside L_t built from stop-gradient(eps_theta): L_vlb trains v only

(the KL in bits per dim, as the reference code has it; with T = 1000, lambda T L_t = L_t).
Samplers with learned_variance=True take an eps_fn that returns [eps, v] concatenated on axis 1.

Index t runs 0 .. T-1 in the code (the papers' 1 .. T), and abar_{-1} = 1 (t' = -1: the end, x_0).

What a model supplies:
    eps_fn(x_t, t, cond) -> eps     x_t (B, ...) NumPy; t (B,) integer steps; cond None or an array with B
                                    rows (labels (B,), tokens (B, L), embeddings (B, D)); eps like x_t
                                    (a network that predicts x_0 instead: GaussianDiffusion.eps_fn_from_x0)
    null_condition(B)               the condition meaning "none" (a null label index, empty tokens, zeros)
    drop_condition(cond, p, rng)    training with the null condition with probability p (drop_condition
                                    below does it for any array condition)

Guidance wraps an eps_fn into another eps_fn (classifier_free, classifier_guidance), so a sampler
never knows which guidance, if any, it runs. The convention, everywhere:

    guided eps = eps(x, null) + s (eps(x, c) - eps(x, null))     s = 1: plain conditional, s = 0: unconditional

The score-based view (NCSN: Song & Ermon, 2019; score SDEs: Song et al., 2021): "the objective is the same".
The score of the noisy marginal q_t is what a noise predictor estimates, up to a scale:

    score                s(x_t, t) = grad_{x_t} log q_t(x_t) = -E[eps | x_t] / sqrt(1 - abar_t)
                                   ~ -eps_theta(x_t, t) / sqrt(1 - abar_t)
    denoising score      grad_{x_t} log q(x_t | x_0) = -(x_t - sqrt(abar_t) x_0) / (1 - abar_t) = -eps / sqrt(1 - abar_t)
    matching (DSM)       L_DSM = E |s_theta(x_t, t) - grad log q(x_t | x_0)|^2 = E |eps - eps_theta|^2 / (1 - abar_t)

so DDPM's simple loss is DSM weighted by lambda_t = 1 - abar_t (NCSN's weight sigma^2). Sampling with the score:

    Langevin step        x <- x + delta s(x, t) + sqrt(2 delta) z                    (samples q_t as delta -> 0)
    annealed Langevin    M Langevin steps at each noise level, from the noisiest down, the samples carried
                         from level to level in xbar = x / sqrt(abar); NCSN's step rule, delta_t proportional
                         to the noise variance: delta_t = 2 r^2 (1 - abar_t)
    predictor-corrector  at each level: M Langevin steps (the corrector), step by the signal-to-noise rule
                         delta = 2 alpha_t (r |z| / |s|)^2, then one ancestral step to the next level (the predictor)
    NFE                  network evaluations per image: 1 per level (DDIM, ancestral), M + 1 (PC), M (Langevin)

(r, the snr, is the ratio |delta s| / |sqrt(2 delta) z| of one Langevin step; with |s| ~ sqrt(D / (1 - abar_t)),
the expected norm, the signal-to-noise rule is NCSN's: both Langevin samplers take r.) The variance-preserving
SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, whose discretisation is the forward process above, has the
same marginals q_t as the deterministic probability-flow ODE

    dx/dt = -1/2 beta(t) (x + s(x, t)),   in xbar = x / sqrt(abar), sigma = sqrt((1 - abar) / abar):
    d xbar / d sigma = eps(x, t)

and DDIM (eta = 0) is its Euler step in these variables: xbar_t' = xbar_t + (sigma_t' - sigma_t) eps_theta.
"""
import math

import numpy as np

from autograd import Tensor


# ---------------------------------------------------------------------- schedules and broadcasting
def beta_schedule(name, T):
    """beta_1 .. beta_T (float64, shape (T,)): the lecture's linear schedule or the cosine one. The linear
    one is scaled by 1000 / T so that a shorter chain still ends in noise (as in improved DDPM)."""
    if name == "linear":
        return np.clip(np.linspace(1e-4, 0.02, T, dtype=np.float64) * (1000 / T), 0, 0.999)
    if name == "cosine":
        # abar(t) = f(t) / f(0),  f(t) = cos^2((t / T + s) / (1 + s) * pi / 2),  s = 0.008  (Nichol & Dhariwal 2021)
        s = 0.008
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        # beta_t = 1 - abar_t / abar_{t-1}
        return np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    raise ValueError(f"unknown beta schedule {name!r}; valid: 'linear', 'cosine'")


def per_sample(values, x, dtype=np.float32):
    """A per-sample vector (B,) (or a scalar) as (B, 1, ..., 1), to broadcast against x of shape (B, ...)."""
    return np.asarray(values, dtype=dtype).reshape((-1,) + (1,) * (np.ndim(x) - 1))


class GaussianDiffusion:
    """The fixed forward process of a beta schedule and the update rules built from it, on NumPy arrays
    of any shape (B, ...). clip_x0: clip predicted x_0 to the data range [-1, 1] (pixels; latents and
    embeddings have no such range)."""

    def __init__(self, betas, clip_x0=True):
        self.clip_x0 = clip_x0
        self.betas = np.asarray(betas, dtype=np.float64)                    # (T,)
        if self.betas.ndim != 1 or not self.betas.size or not np.all((self.betas > 0) & (self.betas < 1)):
            span = f" with values in [{self.betas.min():g}, {self.betas.max():g}]" if self.betas.size else ""
            raise ValueError(f"GaussianDiffusion: betas must be a non-empty (T,) vector in (0, 1), got shape "
                             f"{self.betas.shape}{span}")
        self.T = len(self.betas)
        self.alphas = 1.0 - self.betas
        # abar_t = prod_{s<=t} alpha_s,  abar_{-1} = 1
        self.abar = np.cumprod(self.alphas)
        self.abar_prev = np.append(1.0, self.abar[:-1])
        self.sqrt_abar, self.sqrt_one_minus_abar = np.sqrt(self.abar), np.sqrt(1 - self.abar)
        # beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t    (beta~ at the first step is 0: x_0 gets no noise)
        self.posterior_variance = (1 - self.abar_prev) / (1 - self.abar) * self.betas
        # mu~_t = c0 x_0 + ct x_t,  c0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),  ct = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
        self.posterior_c0 = np.sqrt(self.abar_prev) * self.betas / (1 - self.abar)
        self.posterior_ct = np.sqrt(self.alphas) * (1 - self.abar_prev) / (1 - self.abar)
        # log beta~_t with beta~_0 (= 0) replaced by beta~_1: the lower end of the learned variance (improved DDPM)
        self.posterior_log_variance = np.log(np.append(self.posterior_variance[1:2], self.posterior_variance[1:])) \
            if self.T > 1 else np.log(self.betas)
        self.log_betas = np.log(self.betas)
        self.evaluations = 0   # rows handed to eps_fn by the samplers so far (NFE per image: its rise / B)

    # ------------------------------------------------------------------ the forward process
    def q_step(self, x_prev, t, eps):
        """One forward step from x_{t-1} (B, ...) at steps t (B,)."""
        # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps
        return per_sample(np.sqrt(1 - self.betas)[t], x_prev) * x_prev + per_sample(np.sqrt(self.betas)[t], eps) * eps

    def q_sample(self, x0, t, eps):
        """Jump straight from x_0 (B, ...) to step t (B,)."""
        # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
        return per_sample(self.sqrt_abar[t], x0) * x0 + per_sample(self.sqrt_one_minus_abar[t], eps) * eps

    def diffuse(self, x0, rng):
        """A training input: t ~ U{0..T-1} per sample, eps ~ N(0, I) like x0, and x_t = q_sample(x0, t, eps).
        Returns (x_t, t, eps); the loss is then |eps - eps_theta(x_t, t, c)|^2."""
        t = rng.integers(0, self.T, len(x0))                                 # (B,)
        eps = rng.standard_normal(x0.shape, dtype=np.float32)                # (B, ...)
        return self.q_sample(x0, t, eps), t, eps

    def q_posterior(self, x0, x_t, t):
        """Mean (B, ...) and variance (B, 1, ..., 1) of q(x_{t-1} | x_t, x_0)."""
        # mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
        mean = per_sample(self.posterior_c0[t], x0) * x0 + per_sample(self.posterior_ct[t], x_t) * x_t
        return mean, per_sample(self.posterior_variance[t], x_t)

    # ------------------------------------------------------------------ from a noise prediction
    def predict_x0(self, x_t, t, eps):
        """The x_0 that a noise prediction implies (clipped to [-1, 1] when clip_x0)."""
        # x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        x0 = (x_t - per_sample(self.sqrt_one_minus_abar[t], x_t) * eps) / per_sample(self.sqrt_abar[t], x_t)
        return np.clip(x0, -1, 1) if self.clip_x0 else x0

    def eps_from_x0(self, x_t, t, x0):
        """The noise that takes x_0 to x_t (the inverse of predict_x0)."""
        # eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)
        return (x_t - per_sample(self.sqrt_abar[t], x_t) * x0) / per_sample(self.sqrt_one_minus_abar[t], x_t)

    def eps_fn_from_x0(self, x0_fn):
        """The eps_fn the samplers and guidance take, made from a network that predicts x_0 itself,
        x0_fn(x_t, t, cond) -> x0_theta like x_t (unCLIP's prior). In float64, so that the samplers'
        x0_hat = predict_x0(x_t, t, eps) gives x0_theta back even where sqrt(abar_t) is tiny (near t = T
        on the cosine schedule, about 5e-5, where float32 would lose it). Classifier-free guidance of this
        eps is guidance of x0_theta: at a fixed x_t each is an affine function of the other."""
        def eps_fn(x_t, t, cond):
            x0 = np.asarray(x0_fn(x_t, t, cond), np.float64)
            # eps = (x_t - sqrt(abar_t) x0_theta) / sqrt(1 - abar_t)
            return self.eps_from_x0(np.asarray(x_t, np.float64), t, x0)
        return eps_fn

    def ancestral_step(self, x_t, t, eps, z):
        """x_t -> x_{t-1}, with z ~ N(0, I) like x_t (beta~ is 0 at the last step, t = 0: no noise)."""
        mean, var = self.q_posterior(self.predict_x0(x_t, t, eps), x_t, t)
        # x_{t-1} = mu~_t(x_t, x0_hat) + sqrt(beta~_t) z
        return (mean + np.sqrt(var) * z).astype(np.float32)

    def ddim_step(self, x_t, t, t_prev, eps, eta, z):
        """x_t -> x_{t'} for t' = t_prev < t (-1: the end). eta = 0: deterministic; eta = 1 with t' = t - 1:
        the ancestral step."""
        x0 = self.predict_x0(x_t, t, eps)
        eps = self.eps_from_x0(x_t, t, x0)                                   # the eps that agrees with a clipped x0
        t_prev = np.asarray(t_prev)
        abar, abar_prev = self.abar[t], np.where(t_prev >= 0, self.abar[t_prev], 1.0)
        # sigma = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')
        sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        # x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps + sigma z
        return (per_sample(np.sqrt(abar_prev), x0) * x0
                + per_sample(np.sqrt(np.maximum(1 - abar_prev - sigma ** 2, 0.0)), eps) * eps
                + per_sample(sigma, z) * z).astype(np.float32)

    # ------------------------------------------------------------------ learned variance (improved DDPM)
    def learned_log_variance(self, v, t):
        """log Sigma_theta for the network's v (B, ...) (a NumPy array or a Tensor) at steps t (B,)."""
        f = (v + 1) * 0.5
        # log Sigma = f log beta_t + (1 - f) log beta~_t
        return f * per_sample(self.log_betas[t], v) + (1 - f) * per_sample(self.posterior_log_variance[t], v)

    def learned_ancestral_step(self, x_t, t, eps, v, z):
        """x_t -> x_{t-1} with the learned variance: x_{t-1} = mu~_t(x_t, x0_hat) + exp(log Sigma / 2) z,
        no noise at the last step (t = 0). v = -1 gives ancestral_step (Sigma = beta~), v = 1 Sigma = beta."""
        mean, _ = self.q_posterior(self.predict_x0(x_t, t, eps), x_t, t)
        std = np.exp(0.5 * self.learned_log_variance(v, t)) * per_sample(t > 0, x_t)
        # x_{t-1} = mu~_t + Sigma^1/2 z
        return (mean + std * z).astype(np.float32)

    def vlb_terms(self, x0, x_t, t, eps, v, decoder="discretized"):
        """The bound's term at each sample's step, bits per dim, (B,): L_t = KL(q(x_{t-1}|x_t,x_0) ||
        p(x_{t-1}|x_t)) for t > 0, L_0 = -log p(x_0|x_1) for t = 0. x0, x_t, eps NumPy (B, ...): eps the
        network's noise prediction, taken as a constant (the stop-gradient on the mean); v (B, ...) a
        Tensor (the gradient flows to it) or an array. x0_hat is not clipped here, as in the reference code."""
        if decoder not in ("discretized", "gaussian"):
            raise ValueError(f"vlb_terms: unknown decoder {decoder!r}; valid: 'discretized', 'gaussian'")
        eps = eps.data if isinstance(eps, Tensor) else eps                    # stop-gradient
        true_mean, _ = self.q_posterior(x0, x_t, t)                          # mu~_t(x_t, x_0)
        true_logvar = per_sample(self.posterior_log_variance[t], x_t)
        # x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)   (unclipped)
        x0_hat = (x_t - per_sample(self.sqrt_one_minus_abar[t], x_t) * eps) / per_sample(self.sqrt_abar[t], x_t)
        mean = per_sample(self.posterior_c0[t], x0) * x0_hat + per_sample(self.posterior_ct[t], x_t) * x_t
        logvar = self.learned_log_variance(v, t)                              # (B, ...)
        kl = normal_kl(true_mean, true_logvar, mean, logvar)
        if decoder == "discretized":
            nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)
        else:
            nll = -gaussian_log_likelihood(x0, mean, logvar)
        first = per_sample(t == 0, x_t)                                       # 1 where t = 0
        terms = kl * (1 - first) + nll * first                                # (B, ...)
        axes = tuple(range(1, np.ndim(x_t)))
        # mean over the dimensions, in bits: / ln 2
        return terms.mean(axis=axes) * (1 / math.log(2))                      # (B,)

    def hybrid_loss(self, x0, x_t, t, noise, eps, v, vlb_weight=0.001, decoder="discretized"):
        """L_hybrid = |noise - eps_theta|^2 + lambda T L_t (module docstring), averaged over the batch;
        eps and v Tensors (B, ...) from the network, noise (B, ...) what q_sample added. Returns
        (loss, L_simple, L_t) with the last two as floats for the logs."""
        # L_simple = mean |noise - eps_theta|^2
        simple = ((eps - noise) ** 2).mean()
        vlb = self.vlb_terms(x0, x_t, t, eps, v, decoder).mean()
        # L_hybrid = L_simple + lambda T L_t
        return simple + vlb * (vlb_weight * self.T), float(simple.item()), float(vlb.item())

    # ------------------------------------------------------------------ the samplers
    def timesteps(self, steps):
        """`steps` timesteps spread evenly from T-1 down to 0 (one step: T-1 alone), in sampling order."""
        if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= self.T:
            raise ValueError(f"sampling steps must lie in 1..{self.T}, got {steps}")
        return np.unique(np.linspace(self.T - 1, 0, steps).round().astype(int))[::-1]

    def ancestral_sample(self, eps_fn, shape, rng, cond=None, frames=0, learned_variance=False, known=None):
        """The reverse process over all T steps: x_T ~ N(0, I), then x_{t-1} = mu~_t + sqrt(beta~_t) z
        (learned_variance: + Sigma_theta^1/2 z, eps_fn returning [eps, v] on axis 1). shape (B, ...) is that
        of x; returns x_0, and with frames > 0 also that many snapshots along the way."""
        def step(x, t, t_prev, out, z):
            if learned_variance:
                eps, v = split_learned(out, x)
                return self.learned_ancestral_step(x, t, eps, v, z)
            return self.ancestral_step(x, t, out, z)
        return self._reverse(eps_fn, shape, rng, np.arange(self.T)[::-1], cond, frames, step, learned_variance, known)

    def ddim_sample(self, eps_fn, shape, rng, steps, eta=0.0, cond=None, frames=0, learned_variance=False,
                    known=None):
        """DDIM over `steps` of the T steps (timesteps(steps)); eta scales the fresh noise (0: none).
        learned_variance: eps_fn returns [eps, v] on axis 1 and DDIM uses eps alone (its sigma is its own)."""
        def step(x, t, t_prev, out, z):
            eps = split_learned(out, x)[0] if learned_variance else out
            return self.ddim_step(x, t, t_prev, eps, eta, z)
        return self._reverse(eps_fn, shape, rng, self.timesteps(steps), cond, frames, step, learned_variance, known)

    def _reverse(self, eps_fn, shape, rng, ts, cond, frames, step, learned_variance=False, known=None):
        """The loop both samplers share: ask eps_fn at each timestep of ts, move x by `step`.
        known = (x0, keep), keep a boolean array like x: after every step the kept region is replaced by
        x0 noised to the step reached, q(x_{t'} | x0), and by x0 itself at the end (editing, GLIDE): the
        model draws the rest to fit it."""
        B = shape[0]
        self._check_condition(cond, shape)
        keep = set(np.linspace(0, len(ts) - 1, frames).round().astype(int).tolist()) if frames else set()
        x, snapshots = rng.standard_normal(shape, dtype=np.float32), []     # x_T ~ N(0, I)
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            eps = self._evaluate(eps_fn, x, t, cond, learned_variance)      # like x ([eps, v]: 2C channels)
            z = rng.standard_normal(x.shape, dtype=np.float32)
            x = step(x, np.full(B, t), np.full(B, t_prev), eps, z)
            if known is not None:
                x0, region = known
                # the known region at the level x has reached: x_{t'} ~ q(x_{t'} | x0), or x0 at the end
                at_level = x0 if t_prev < 0 else self.q_sample(x0, np.full(B, t_prev),
                                                                rng.standard_normal(x.shape, dtype=np.float32))
                x = np.where(region, at_level, x).astype(np.float32)
            if i in keep:
                snapshots.append(x)
        return (x, snapshots) if frames else x

    @staticmethod
    def _check_condition(cond, shape):
        if cond is not None and len(cond) != shape[0]:
            raise ValueError(f"the condition has {len(cond)} rows for a batch of {shape[0]} samples "
                             f"(shape {tuple(shape)})")

    def _evaluate(self, eps_fn, x, t, cond, learned_variance=False):
        """eps_fn(x, t, cond) at one step t for the whole batch, its shape checked; every sampler asks the
        network through here, and `evaluations` counts the rows asked (NFE per image = its rise / B)."""
        B = len(x)
        eps = eps_fn(x, np.full(B, t), cond)
        want = (B, 2 * x.shape[1], *x.shape[2:]) if learned_variance else x.shape
        if eps.shape != want:
            raise ValueError(f"eps_fn returned shape {eps.shape} for x_t of shape {x.shape}; expected {want}"
                             + (" ([eps, v] on axis 1: learned variance)" if learned_variance else ""))
        self.evaluations += B
        return eps

    # ------------------------------------------------------------------ the score-based view
    def score(self, x_t, t, eps):
        """The score grad_{x_t} log q_t(x_t) that a noise prediction eps (B, ...) at steps t (B,) implies."""
        # s(x_t, t) = -eps_theta(x_t, t) / sqrt(1 - abar_t)
        return -eps / per_sample(self.sqrt_one_minus_abar[t], x_t)

    def conditional_score(self, x_t, t, x0):
        """grad_{x_t} log q(x_t | x_0): the target of denoising score matching."""
        # grad log q(x_t | x_0) = -(x_t - sqrt(abar_t) x_0) / (1 - abar_t)
        return -(x_t - per_sample(self.sqrt_abar[t], x_t) * x0) / per_sample(1 - self.abar[t], x_t)

    @staticmethod
    def simple_loss_terms(eps_pred, eps):
        """DDPM's simple loss per example, (B,): |eps - eps_theta|^2, the mean over the dimensions."""
        return ((eps - eps_pred) ** 2).reshape(len(eps), -1).mean(axis=1)

    def dsm_loss_terms(self, score, x_t, t, x0):
        """Denoising score matching per example, (B,): |s_theta(x_t, t) - grad log q(x_t | x_0)|^2, the mean
        over the dimensions. For s_theta = score(x_t, t, eps_theta) it is simple_loss_terms / (1 - abar_t)."""
        return ((score - self.conditional_score(x_t, t, x0)) ** 2).reshape(len(x_t), -1).mean(axis=1)

    @staticmethod
    def langevin_step(x, score, z, delta):
        """One Langevin step with step size delta (B,) (a scalar broadcasts); z ~ N(0, I) like x (None: no noise)."""
        # x <- x + delta s(x) + sqrt(2 delta) z
        x = x + per_sample(delta, x) * score
        return (x if z is None else x + per_sample(np.sqrt(2 * np.asarray(delta)), z) * z).astype(np.float32)

    def snr_step_size(self, t, score, z, snr):
        """The corrector's step size (B,) by the signal-to-noise rule of Song et al. 2021 (Algorithm 5): the
        delta with |delta s| / |sqrt(2 delta) z| = snr, scaled by alpha_t = 1 - beta_t."""
        B = len(score)
        # the norms averaged over the batch, as in the reference code: one example near a mode (|s| ~ 0)
        # would otherwise take a huge step (in few dimensions)
        s_norm = np.linalg.norm(score.reshape(B, -1), axis=1).mean()
        z_norm = np.linalg.norm(z.reshape(B, -1), axis=1).mean()
        # delta = 2 alpha_t (r |z| / |s|)^2
        return 2 * self.alphas[t] * (snr * z_norm / max(s_norm, 1e-12)) ** 2

    def ncsn_step_size(self, t, snr):
        """Annealed Langevin's step size at noise level t (NCSN: delta proportional to the noise variance),
        written with the snr that it gives for a score of the expected norm sqrt(D / (1 - abar_t))."""
        # delta_t = 2 r^2 (1 - abar_t)
        return 2 * snr ** 2 * (1 - self.abar[t])

    def annealed_langevin_sample(self, eps_fn, shape, rng, levels, snr=0.16, langevin_steps=1, cond=None,
                                 learned_variance=False):
        """NCSN's sampler (Song & Ermon 2019, Algorithm 1), written in the variance-preserving variables:
        x ~ N(0, I), then at each of `levels` noise levels (timesteps(levels), noisiest first)
        `langevin_steps` Langevin steps on the score of q_t, step ncsn_step_size. NCSN carries its samples
        unchanged from one level to the next in its own variables, xbar = x / sqrt(abar) (the mean of
        q_t in xbar is the data's at every level); in x that is x <- sqrt(abar_t' / abar_t) x. The very last
        step adds no noise. NFE = levels * langevin_steps. learned_variance: eps_fn returns [eps, v]; v is unused."""
        self._check_condition(cond, shape)
        check_whole("langevin_steps", langevin_steps, 1)
        ts = self.timesteps(levels)
        x = rng.standard_normal(shape, dtype=np.float32)                    # x ~ N(0, I)
        B = shape[0]
        for i, t in enumerate(ts):
            if i:  # xbar carried to the next level: x_t = sqrt(abar_t / abar_t_before) x
                x = (np.sqrt(self.abar[t] / self.abar[ts[i - 1]]) * x).astype(np.float32)
            delta = self.ncsn_step_size(t, snr)
            for j in range(langevin_steps):
                eps = self._evaluate(eps_fn, x, t, cond, learned_variance)
                eps = split_learned(eps, x)[0] if learned_variance else eps
                last = i == len(ts) - 1 and j == langevin_steps - 1
                z = None if last else rng.standard_normal(x.shape, dtype=np.float32)
                x = self.langevin_step(x, self.score(x, np.full(B, t), eps), z, delta)
        return x

    def pc_sample(self, eps_fn, shape, rng, levels, snr=0.16, corrector_steps=1, cond=None, learned_variance=False):
        """Predictor-corrector sampling (Song et al. 2021, Algorithm 1 with the order of their code): x_T ~
        N(0, I); at each level t of timesteps(levels), `corrector_steps` Langevin steps at t with
        snr_step_size, then one ancestral step t -> t' (the respaced chain's: ddim_step with eta = 1, which
        is ancestral_step when t' = t - 1). NFE = levels * (corrector_steps + 1)."""
        self._check_condition(cond, shape)
        check_whole("corrector_steps", corrector_steps, 0)
        ts = self.timesteps(levels)
        x = rng.standard_normal(shape, dtype=np.float32)                    # x_T ~ N(0, I)
        B = shape[0]
        for i, t in enumerate(ts):
            t_prev, tb = (ts[i + 1] if i + 1 < len(ts) else -1), np.full(B, t)
            for _ in range(corrector_steps):                                # the corrector: Langevin at level t
                eps = self._evaluate(eps_fn, x, t, cond, learned_variance)
                eps = split_learned(eps, x)[0] if learned_variance else eps
                score, z = self.score(x, tb, eps), rng.standard_normal(x.shape, dtype=np.float32)
                x = self.langevin_step(x, score, z, self.snr_step_size(tb, score, z, snr))
            eps = self._evaluate(eps_fn, x, t, cond, learned_variance)      # the predictor: t -> t'
            eps = split_learned(eps, x)[0] if learned_variance else eps
            x = self.ddim_step(x, tb, np.full(B, t_prev), eps, 1.0, rng.standard_normal(x.shape, dtype=np.float32))
        return x

    def flow_sigma(self, t):
        """sigma_t = sqrt((1 - abar_t) / abar_t), the noise scale of xbar = x / sqrt(abar) (0 at t = -1, the end)."""
        t = np.asarray(t)
        abar = np.where(t >= 0, self.abar[np.maximum(t, 0)], 1.0)
        return np.sqrt((1 - abar) / abar)

    def probability_flow_step(self, x_t, t, t_prev, eps):
        """One Euler step of the probability-flow ODE d xbar / d sigma = eps(x, t) from t to t' = t_prev
        (-1: the end), in xbar = x / sqrt(abar) and sigma = flow_sigma; returns x_t'. (DDIM with eta = 0
        is this step; with clip_x0 DDIM first replaces eps by the one that agrees with the clipped x0.)"""
        t_prev = np.asarray(t_prev)
        abar_prev = np.where(t_prev >= 0, self.abar[np.maximum(t_prev, 0)], 1.0)
        xbar = x_t / per_sample(self.sqrt_abar[t], x_t)                     # xbar_t = x_t / sqrt(abar_t)
        # xbar_t' = xbar_t + (sigma_t' - sigma_t) eps_theta(x_t, t)
        xbar = xbar + per_sample(self.flow_sigma(t_prev) - self.flow_sigma(t), x_t) * eps
        return (per_sample(np.sqrt(abar_prev), x_t) * xbar).astype(np.float32)   # x_t' = sqrt(abar_t') xbar_t'

    def probability_flow_sample(self, eps_fn, shape, rng, steps, cond=None, learned_variance=False):
        """Euler on the probability-flow ODE over timesteps(steps), from x_T ~ N(0, I): deterministic after
        the start; DDIM with eta = 0 when clip_x0 is off. NFE = steps."""
        def step(x, t, t_prev, out, z):
            eps = split_learned(out, x)[0] if learned_variance else out
            return self.probability_flow_step(x, t, t_prev, eps)
        return self._reverse(eps_fn, shape, rng, self.timesteps(steps), cond, 0, step, learned_variance)

    # ------------------------------------------------------------------ every sampler by name, and its cost
    def sample(self, sampler, eps_fn, shape, rng, levels=None, cond=None, snr=0.16, corrector_steps=1,
               learned_variance=False):
        """One of SAMPLERS over `levels` noise levels (None: all T):
            ancestral   all T steps: ancestral_sample; fewer: the respaced chain's ancestral steps (DDIM, eta = 1)
            ddim        DDIM with eta = 0 (the probability-flow ODE's Euler steps)
            pc          pc_sample, corrector_steps Langevin steps per level with the snr rule
            langevin    annealed_langevin_sample, corrector_steps Langevin steps per level"""
        levels = self.T if levels is None else levels
        if sampler == "ancestral":
            if levels == self.T:
                return self.ancestral_sample(eps_fn, shape, rng, cond, learned_variance=learned_variance)
            return self.ddim_sample(eps_fn, shape, rng, levels, 1.0, cond, learned_variance=learned_variance)
        if sampler == "ddim":
            return self.ddim_sample(eps_fn, shape, rng, levels, 0.0, cond, learned_variance=learned_variance)
        if sampler == "pc":
            return self.pc_sample(eps_fn, shape, rng, levels, snr, corrector_steps, cond, learned_variance)
        if sampler == "langevin":
            return self.annealed_langevin_sample(eps_fn, shape, rng, levels, snr, corrector_steps, cond,
                                                 learned_variance)
        raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")

    @staticmethod
    def nfe_per_level(sampler, corrector_steps=1):
        """Network evaluations per image and noise level: 1 (ancestral, ddim), corrector_steps + 1 (pc),
        corrector_steps (langevin)."""
        per_level = {"ancestral": 1, "ddim": 1, "pc": corrector_steps + 1, "langevin": corrector_steps}
        if sampler not in per_level:
            raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
        return per_level[sampler]

    def levels_for(self, sampler, nfe, corrector_steps=1):
        """The most noise levels `sampler` visits within `nfe` network evaluations per image (at most T)."""
        per_level = self.nfe_per_level(sampler, corrector_steps)
        if per_level < 1:
            raise ValueError(f"{sampler} needs corrector_steps >= 1 (its Langevin steps per noise level), "
                             f"got {corrector_steps}")
        levels = min(nfe // per_level, self.T)
        if levels < 1:
            raise ValueError(f"{sampler} with {corrector_steps} corrector steps needs {per_level} network "
                             f"evaluations per noise level; {nfe} is too few")
        return levels


SAMPLERS = ("ddim", "ancestral", "pc", "langevin")


def check_whole(name, value, low):
    if not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


def split_learned(out, x):
    """[eps, v] concatenated on axis 1, (B, 2C, ...), -> eps and v, each like x (B, C, ...)."""
    C = x.shape[1]
    if out.shape[1] != 2 * C:
        raise ValueError(f"split_learned: output of shape {tuple(out.shape)} is not [eps, v] for x of shape "
                         f"{tuple(x.shape)} (expected {2 * C} channels on axis 1)")
    return out[:, :C], out[:, C:]


# ---------------------------------------------------------------------- densities for the bound
def _exp(a):
    return a.exp() if isinstance(a, Tensor) else np.exp(a)


def _log(a):
    return a.log() if isinstance(a, Tensor) else np.log(a)


def _tanh(a):
    return a.tanh() if isinstance(a, Tensor) else np.tanh(a)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats; NumPy arrays or Tensors that
    broadcast (any of them may carry a gradient)."""
    # KL = 1/2 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + _exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * _exp(-logvar2))


def gaussian_log_likelihood(x, mean, logvar):
    """log N(x; mean, e^logvar) per element, in nats (a density: for continuous data such as latents)."""
    # log N = -1/2 (log 2 pi + logvar + (x - mean)^2 exp(-logvar))
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * _exp(-logvar))


def _approx_standard_normal_cdf(a):
    # Phi(a) ~ 1/2 (1 + tanh(sqrt(2 / pi) (a + 0.044715 a^3)))
    return 0.5 * (1.0 + _tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3)))


def _clip_low(a, lo):
    return a.clip(lo, None) if isinstance(a, Tensor) else np.maximum(a, lo)


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(x) per element of data x in [-1, 1] on 256 levels (bins of width 2/255) under N(mean, e^(2
    log_scale)), the outer bins reaching to -inf and +inf (Ho et al. 2020, eq. 13); x a NumPy array."""
    x = np.asarray(x)
    centered = x - mean
    inv_std = _exp(-log_scale)
    # P = Phi((x + 1/255 - mu) / sigma) - Phi((x - 1/255 - mu) / sigma)
    cdf_plus = _approx_standard_normal_cdf((centered + 1.0 / 255) * inv_std)
    cdf_min = _approx_standard_normal_cdf((centered - 1.0 / 255) * inv_std)
    log_cdf_plus = _log(_clip_low(cdf_plus, 1e-12))                       # the lowest bin: Phi(upper edge)
    log_one_minus_cdf_min = _log(_clip_low(1.0 - cdf_min, 1e-12))         # the highest bin: 1 - Phi(lower edge)
    log_delta = _log(_clip_low(cdf_plus - cdf_min, 1e-12))
    low, high = (x < -0.999).astype(np.float32), (x > 0.999).astype(np.float32)
    return log_cdf_plus * low + log_one_minus_cdf_min * high + log_delta * (1 - low - high)


# ---------------------------------------------------------------------- conditions and guidance
def drop_condition(cond, null_cond, p, rng):
    """Classifier-free training: each row of cond (B, ...) becomes the matching row of null_cond with
    probability p. (A learned null embedding must be swapped in inside the network, for its gradient.)"""
    drop = rng.random(len(cond)) < p                                        # (B,)
    return np.where(per_sample(drop, cond, dtype=bool), null_cond, cond)


def classifier_free(eps_fn, null_cond, scale, guided_channels=None):
    """An eps_fn guided towards its condition; cond and null_cond go through eps_fn in one batch of 2B.
    A cond of None (or scale 0) gives the unconditional eps(x, null). guided_channels = C: the output is
    [eps, v] (learned variance) and only its first C channels (eps) are guided; v is the conditional one."""
    def guided(x_t, t, cond):
        if cond is None or scale == 0:
            return eps_fn(x_t, t, null_cond)
        if scale == 1:
            return eps_fn(x_t, t, cond)
        B = len(x_t)
        both = eps_fn(np.concatenate([x_t, x_t]), np.concatenate([t, t]), np.concatenate([cond, null_cond]))
        eps_c, eps_null = both[:B], both[B:]
        if guided_channels is not None:
            C = guided_channels
            # eps~ = eps(x_t, null) + s (eps(x_t, c) - eps(x_t, null));  v = v(x_t, c)
            return np.concatenate([eps_null[:, :C] + scale * (eps_c[:, :C] - eps_null[:, :C]), eps_c[:, C:]], axis=1)
        # eps~ = eps(x_t, null) + s (eps(x_t, c) - eps(x_t, null))
        return eps_null + scale * (eps_c - eps_null)
    return guided


def classifier_guidance(diffusion, eps_fn, grad_log_p, scale):
    """An eps_fn steered by a classifier of noisy x_t: grad_log_p(x_t, t, cond) = grad_x log p(cond | x_t, t),
    an array like x_t. With Bayes' rule, grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t) and
    eps = -sqrt(1 - abar_t) grad log p(x_t), so the guided noise is eps^ below (s > 1 sharpens p(y | x_t)^s)."""
    if scale == 0:
        return eps_fn

    def guided(x_t, t, cond):
        if cond is None:
            raise ValueError("classifier guidance needs a condition: the labels to steer towards")
        eps = eps_fn(x_t, t, cond)
        # eps^ = eps - s sqrt(1 - abar_t) grad_{x_t} log p(y | x_t)
        return eps - per_sample(scale * diffusion.sqrt_one_minus_abar[t], x_t) * grad_log_p(x_t, t, cond)
    return guided
