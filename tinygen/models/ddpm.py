"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel, 2020), with the DDIM sampler (Song,
Meng & Ermon, 2021) and classifier-free guidance (Ho & Salimans, 2022).

The idea: destroy an image by adding a little Gaussian noise at each of T steps, until nothing but
noise is left; train a network to undo one step; generate by starting from pure noise and undoing
all T steps. Each undo step is a Gaussian whose mean we learn by predicting the noise that was added.
The process, both samplers and both kinds of guidance live in tinygen/diffusion.py, for any shape and
any condition; this file holds the network and the model that trains and samples it:

    forward process   q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),  beta 1e-4 -> 0.02, T = 1000
    closed form       x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,  eps ~ N(0, I),  abar_t = prod_{s<=t} (1 - beta_s)
    simple loss       L = E_{x_0, t, eps} |eps - eps_theta(x_t, t, y)|^2
    ancestral step    x_{t-1} = mu~_t(x_t, x0_hat) + sqrt(beta~_t) z      (all T steps)
    DDIM step         x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_theta + sigma z   (few steps)

Classifier-free guidance: during training the label is replaced by the null label (index num_classes)
with probability p_uncond, so one network learns eps(x, y) and eps(x, none). The convention used everywhere:

    guided eps = eps(x, none) + s (eps(x, y) - eps(x, none))     s = 1: plain conditional, s = 0: unconditional

Unconditional samples of a class-conditional model are its null-label samples.

The network is a small U-Net (28 -> 14 -> 7): residual blocks with GroupNorm and SiLU, the sinusoidal
time embedding (plus a label embedding) added inside every block, self-attention at 7x7, skips from
the way down to the way up. Samples use the EMA of the weights.

Train:  python -m tinygen train ddpm               (class-conditional, label dropped with p = 0.2)
        Recipe: 6 epochs of 937 steps at batch 64; train on with --resume --epochs 12.
        Figures, samplers and guidance: docs/models/ddpm.md.
        python -m tinygen train ddpm --set num_classes=0     (unconditional)
Sample: python -m tinygen sample ddpm --checkpoint runs/ddpm-mnist/last.npz --label 7 --guidance 3 --steps 50
        The score-based samplers of tinygen/diffusion.py (annealed Langevin, predictor-corrector) draw from
        the same network: model.sample(n, label=y, steps=levels, sampler="pc", snr=0.16). Compared at equal
        network evaluations per image:
        python -m tinygen.evaluate sampler-sweep --checkpoint runs/ddpm-mnist-e12/last.npz --nfe 10 20 50 100 250
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn, optim
from ..diffusion import GaussianDiffusion, beta_schedule, classifier_free, classifier_guidance, drop_condition, normal_kl
from ..io import save_gif, save_image_grid
from .base import Config, Model, inference


@dataclass
class DDPMConfig(Config):
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float = 1.0
    T: int = 1000
    schedule: str = "linear"     # "linear" (beta 1e-4 -> 0.02) or "cosine" (Nichol & Dhariwal 2021)
    base_channels: int = 16      # U-Net widths base * mult per resolution 28, 14, 7
    channel_mult: tuple = (1, 2, 4)
    num_classes: int = 10        # 0: unconditional
    p_uncond: float = 0.2        # probability of training with the null label (classifier-free guidance)
    dropout: float = 0.0
    ema_decay: float = 0.999
    sample_steps: int = 50       # DDIM steps for pictures during training; sample(steps=None) uses all T
    quick_steps: int = 120       # --quick: about a minute; blobs, not digits yet


# ---------------------------------------------------------------------- the U-Net eps_theta(x_t, t, y)
def _groups(channels):
    """GroupNorm's groups: 8, or one per channel below 8 channels. With one channel a group the norm
    removes any per-channel constant, so the shift W emb that ResBlock adds before norm2 (the timestep
    and the label) would reach nothing past it: a conditioned U-Net wants at least 16 channels a block."""
    return min(8, channels)


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W emb;  h = conv(dropout(SiLU(GN(h))));  out = skip(x) + h."""

    def __init__(self, c_in, c_out, emb_dim, dropout=0.0):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.drop = nn.GroupNorm(_groups(c_out), c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):                                            # (B, c_in, H, W), (B, emb_dim)
        h = self.conv1(F.silu(self.norm1(x)))                             # (B, c_out, H, W)
        h = h + self.emb(F.silu(emb)).reshape(len(x), -1, 1, 1)
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions: x + Attn(GN(x)), as tokens (B, HW, C).

    With context_dim (GLIDE): the text encoder's token outputs (B, S, context_dim), projected to C, join the
    keys and values, so each position attends to the image and to the caption in one softmax:
        K, V from [tokens; W_ctx context]   (B, HW + S, C),   context_mask (B, S): False at padding."""

    def __init__(self, channels, heads=4, context_dim=None):
        super().__init__()
        self.norm, self.attn = nn.GroupNorm(_groups(channels), channels), nn.MultiheadAttention(channels, heads)
        self.context_proj = nn.Linear(context_dim, channels) if context_dim else None

    def forward(self, x, context=None, context_mask=None):                # (B, C, H, W)
        B, C, H, W = x.shape
        tokens = self.norm(x).reshape(B, C, H * W).transpose(0, 2, 1)     # (B, HW, C)
        if self.context_proj is None:
            return x + self.attn(tokens).transpose(0, 2, 1).reshape(B, C, H, W)
        kv = F.concat([tokens, self.context_proj(context)], axis=1)       # (B, HW + S, C)
        # every image position, and the caption's tokens but its padding, may be attended to
        mask = np.concatenate([np.ones((B, H * W), bool), np.asarray(context_mask, bool)], axis=1)
        out = self.attn(tokens, context=kv, attn_mask=mask[:, None, None, :])   # (B, HW, C)
        return x + out.transpose(0, 2, 1).reshape(B, C, H, W)


class UNet(nn.Module):
    """eps_theta(x_t, t, y) -> (B, C, H, W). One residual block per resolution on the way down and on
    the way up; a strided conv halves, nearest upsampling doubles; attention at the lowest resolution.
    Labels index an embedding of num_classes + 1 rows: the last row is the null label.
    Text conditioning (GLIDE): cond_emb (B, 4 base) is added to the time embedding, and with context_dim
    the attention layer also attends to a context (B, S, context_dim) (AttentionBlock).
    attention: True (AttentionBlock), False (none), or a module of the caller's for that layer, called as
    block(h, context, context_mask) on (B, base mult[-1], H, W) (stable_diffusion: a spatial transformer)."""

    def __init__(self, in_channels=1, base=16, mult=(1, 2, 4), num_classes=0, dropout=0.0, attention=True,
                 context_dim=None):
        super().__init__()
        emb_dim, widths = 4 * base, [base * m for m in mult]
        self.num_classes = num_classes
        self.time = nn.TimestepEmbedding(base, emb_dim)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.inp = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down, self.downsample, self.up = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = base
        for i, w in enumerate(widths):
            self.down.append(ResBlock(c, w, emb_dim, dropout))
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, widths[i + 1], 3, stride=2, padding=1))
            c = w if last else widths[i + 1]
        self.mid1, self.mid2 = ResBlock(c, c, emb_dim, dropout), ResBlock(c, c, emb_dim, dropout)
        if isinstance(attention, nn.Module):  # the caller's block, called as block(h, context, context_mask)
            self.mid_attn = attention
        else:
            self.mid_attn = AttentionBlock(c, context_dim=context_dim) if attention else None
        for w in reversed(widths):
            self.up.append(ResBlock(c + w, w, emb_dim, dropout))              # input: upsampled h with the skip
            c = w
        self.out_norm, self.out = nn.GroupNorm(_groups(c), c), nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)

    def forward(self, x, t, y=None, cond_emb=None, context=None, context_mask=None):
        """x (B, C, H, W), t (B,), y (B,) or None; cond_emb (B, 4 base), context (B, S, context_dim)."""
        emb = self.time(t)                                                # (B, 4 base)
        if self.label is not None:
            y = np.full(len(x), self.num_classes) if y is None else np.asarray(y)  # None: the null label
            emb = emb + self.label(y)
        if cond_emb is not None:
            emb = emb + cond_emb
        h, skips = self.inp(x), []                                        # (B, base, H, W)
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)                                               # (B, w_i, H / 2^i, W / 2^i)
            h = down(h)
        h = self.mid1(h, emb)                                             # (B, w_last, 7, 7)
        if self.mid_attn is not None:
            h = self.mid_attn(h, context, context_mask)
        h = self.mid2(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.upsample_nearest(h, scale_factor=2)
            h = block(F.concat([h, skip], axis=1), emb)
        return self.out(F.silu(self.out_norm(h)))                         # (B, C, H, W)


# ---------------------------------------------------------------------- the model
class DiffusionModel(Model):
    """What pixel and latent diffusion share: eps_theta on NumPy, the null label, the loss, sampling
    through tinygen/diffusion.py, EMA."""
    image_range = "signed"

    @classmethod
    def check_config(cls, c):
        # the picture after each epoch samples with sample_steps: out of 1..T it fails after an epoch
        if not 1 <= c.sample_steps <= c.T:
            raise ValueError(f"--set sample_steps={c.sample_steps}: the steps the pictures are sampled with must "
                             f"lie in 1..T = 1..{c.T}; lower sample_steps or raise T")
    learned_variance = False  # True: eps() returns [eps, v] on axis 1 (improved DDPM; dit.py)

    def setup_diffusion(self, net, shape, clip_x0=True):
        c = self.config
        self.diffusion = GaussianDiffusion(beta_schedule(c.schedule, c.T), clip_x0)
        self.net, self.shape = net, shape                                 # shape of one x: (C, H, W)
        self.ema = optim.EMA(self, decay=c.ema_decay, warmup=True)  # short runs average over the steps they have

    def eps_theta(self, x_t, t, cond):
        """eps_theta(x_t, t, cond) on Tensors: the network given its condition (here labels (B,) or None,
        the null label; a text model reads captions)."""
        return self.net(x_t, t, cond)

    def eps(self, x_t, t, cond):
        """eps_theta(x_t, t, cond) on NumPy: x_t (B, *shape), t (B,), the condition of each row or None."""
        return self.eps_theta(Tensor(x_t), t, cond).numpy()

    def null_condition(self, n):
        """The null label, index num_classes: the U-Net's last label-embedding row."""
        return np.full(n, self.config.num_classes)

    def drop_condition(self, y, p, rng):
        """Labels y (B,) with each replaced by the null label with probability p (classifier-free training)."""
        return drop_condition(np.asarray(y), self.null_condition(len(y)), p, rng)

    def diffusion_loss(self, x0, cond):
        """L_simple = |eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c)|^2 (x0 a NumPy array;
        cond the condition of each row (labels, captions), or None for an unconditional model)."""
        x_t, t, eps = self.diffusion.diffuse(x0, self.rng)
        if cond is not None:  # classifier-free guidance: the null condition with probability p_uncond
            cond = self.drop_condition(cond, self.config.p_uncond, self.rng)
        return F.mse_loss(self.eps_theta(Tensor(x_t), t, cond), Tensor(eps))

    def training_step(self, batch, optimizers):
        logs = super().training_step(batch, optimizers)
        self.ema.update()
        return logs

    def _labels(self, n, label):
        if label is None:
            return None
        if not self.config.num_classes:
            raise ValueError(f"{self.name} was trained unconditionally (num_classes=0): it takes no label")
        return data.check_labels(label, n, self.config.num_classes)

    def sample_latents(self, n, label=None, guidance=1.0, steps=None, eta=0.0, classifier=None,
                       classifier_scale=0.0, frames=0, cond=None, known=None, sampler=None, snr=0.16,
                       corrector_steps=1):
        """Run the reverse process from x_T ~ N(0, I): ancestral over all T steps when steps is None,
        else DDIM over `steps` steps, on eps_theta guided by the label (or any other condition `cond`, one
        row per sample) with scale `guidance` and, with a noisy classifier, by its gradient (scale
        `classifier_scale`). known = (x0, keep): the region keep (a boolean like x) held to x0, noised
        to each step's level (editing, GaussianDiffusion._reverse). Returns x_0 (n, *shape), and with
        frames > 0 also that many snapshots of the batch along the way (for a GIF).
        sampler: one of diffusion.SAMPLERS by name ("ddim", "ancestral", "pc", "langevin": the score-based
        view, GaussianDiffusion.sample) over `steps` noise levels, with snr and corrector_steps for the
        Langevin steps; eta, frames and known belong to the default samplers."""
        d, y = self.diffusion, (self._labels(n, label) if cond is None else cond)
        if classifier is not None and hasattr(classifier, "check_matches"):
            classifier.check_matches(self)
        if classifier is not None and self.learned_variance:
            raise ValueError(f"{self.name}: classifier guidance is not offered for a learned-variance model "
                             f"(its output is [eps, v]); use classifier-free guidance (guidance=...)")
        eps_fn, lv = self.eps, self.learned_variance
        if y is not None:
            eps_fn = classifier_free(eps_fn, self.null_condition(n), 1.0 if guidance is None else guidance,
                                     guided_channels=self.shape[0] if lv else None)
        if classifier is not None:
            eps_fn = classifier_guidance(d, eps_fn, classifier.log_prob_grad, classifier_scale)
        shape = (n, *self.shape)
        if sampler is not None:
            if frames or known is not None:
                raise ValueError(f"sampler={sampler!r}: frames and known go with the default samplers "
                                 f"(sampler=None)")
            return d.sample(sampler, eps_fn, shape, self.rng, steps, cond=y, snr=snr, corrector_steps=corrector_steps,
                            learned_variance=lv)
        if steps is not None:  # 0 is refused by timesteps, not read as "all T"
            return d.ddim_sample(eps_fn, shape, self.rng, steps, eta, cond=y, frames=frames, learned_variance=lv,
                                 known=known)
        return d.ancestral_sample(eps_fn, shape, self.rng, cond=y, frames=frames, learned_variance=lv, known=known)

    def to_images(self, x0):
        """Samples of the reverse process -> images (n, 1, 28, 28) in [0, 1] (here: pixels in [-1, 1])."""
        return (np.clip(x0, -1, 1) + 1) / 2

    @inference
    def sample(self, n, label=None, guidance=None, steps=None, eta=0.0, classifier=None, classifier_scale=0.0,
               batch_size=100, sampler=None, snr=0.16, corrector_steps=1):
        """n images (n, 1, 28, 28) in [0, 1], in batches of batch_size; see sample_latents for the arguments.
        Why 100: smaller arrays stay in cache and in malloc's heap (autograd/_malloc.py); docs/models/ddpm.md
        has the timing."""
        label = None if label is None else np.broadcast_to(np.asarray(label), (n,))
        score_based = {} if sampler is None else {"sampler": sampler, "snr": snr, "corrector_steps": corrector_steps}
        return np.concatenate([
            self.to_images(self.sample_latents(min(batch_size, n - i), None if label is None else label[i:i + batch_size],
                                               guidance, steps, eta, classifier, classifier_scale, **score_based))
            for i in range(0, n, batch_size)])

    @inference
    def save_trajectory(self, path, n=16, frames=40, label=None, guidance=None, steps=None):
        """A GIF of x_T -> x_0 for n samples (all T ancestral steps unless `steps` is given)."""
        _, snapshots = self.sample_latents(n, label, guidance, steps, frames=frames)
        save_gif([self.to_images(s) for s in snapshots], path, scale=2)

    def visualize(self, images, labels, path):
        """Samples with the EMA weights: unconditional, or one row per digit when conditional."""
        with self.ema.average_parameters(self):
            label = np.repeat(np.arange(data.N_CLASSES), 8) if self.conditional else None
            x = self.sample(80 if self.conditional else 64, label=label, steps=self.config.sample_steps)
        save_image_grid(x, path, nrow=8, scale=2)


class DDPM(DiffusionModel):
    """DDPM (Ho et al. 2020): eps-prediction U-Net, ancestral and DDIM sampling, classifier-free guidance."""
    Config = DDPMConfig
    sample_options = ("label", "guidance", "steps")
    tiny_config = {"T": 5, "base_channels": 8, "channel_mult": (1, 2, 2), "batch_size": 8, "sample_steps": 2}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.conditional = bool(c.num_classes)
        net = UNet(1, c.base_channels, tuple(c.channel_mult), c.num_classes, c.dropout)
        self.setup_diffusion(net, (1, 28, 28))

    def loss(self, batch):
        x0, labels = batch
        loss = self.diffusion_loss(x0.numpy(), labels if self.config.num_classes else None)
        return loss, {}

    # ------------------------------------------------------------------ a generative classifier
    binary_likelihood = False   # bayes-classifier hands it grey levels: its bound is of 8-bit images

    def _bound_term(self, x0, t, cond, rng):
        """The bound's term L_t of each image x0 (B, ...) in [-1, 1] at its step t (B,), bits/dim (B,):
        x_t ~ q(x_t|x_0) drawn with rng, the network's eps under `cond`, the sampler's variance beta~_t
        (v = -1) and the discretised decoder for L_0 (GaussianDiffusion.vlb_terms)."""
        d = self.diffusion
        x_t = d.q_sample(x0, t, rng.standard_normal(x0.shape, dtype=np.float32))
        return d.vlb_terms(x0, x_t, t, self.eps(x_t, t, cond), -np.ones_like(x_t))

    @inference
    def class_log_likelihoods(self, x, k=10, batch_size=20):
        """log p(x|y) for every label y, (N, 10), of images x (N, 1, 28, 28) in [0, 1], in nats, up to a
        constant that no label changes: minus Ho et al.'s variational bound,

            -log p(x|y) <= L_T + sum_{t=1}^{T-1} L_t + L_0,   L_t = KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t, y)),

        with the sampler's variance beta~_t and the discretised decoder for L_0 (GaussianDiffusion.vlb_terms).
        The sum over t is estimated from k steps t_1..t_k, one drawn in each of k equal strata of 0..T-1:
        sum_t L_t ~ (T / k) sum_j L_{t_j}. Every label sees the same steps and the same noise (common
        random numbers: the labels' differences are what classify). L_T = KL(q(x_T|x_0) || N(0, I)) does
        not depend on y and is left out. Bayes' rule turns these into a classifier (the evaluation's
        bayes-classifier). Cost: 10 k network evaluations per image."""
        if not self.config.num_classes:
            raise ValueError(f"{self.name} was trained unconditionally (num_classes=0): it gives no log p(x|y)")
        d, C, rng = self.diffusion, self.config.num_classes, np.random.default_rng(0)
        steps = ((np.arange(k) + rng.random(k)) * d.T / k).astype(np.int64)             # (k,) one per stratum
        labels = np.arange(C)
        out = np.zeros((len(x), C))
        for b0 in range(0, len(x), batch_size):
            x0 = (2 * np.asarray(x[b0:b0 + batch_size], np.float32) - 1)                # (b, 1, 28, 28) in [-1, 1]
            b = len(x0)
            x0_rep = np.repeat(x0, C, axis=0)                                            # (b C, ...): image i, label y
            y_rep = np.tile(labels, b)
            for t in steps:
                eps = rng.standard_normal(x0.shape, dtype=np.float32)
                t_rep = np.full(b * C, t)
                x_t = np.repeat(d.q_sample(x0, np.full(b, t), eps), C, axis=0)             # the same x_t for every y
                eps_hat = self.eps(x_t, t_rep, y_rep)
                bits = d.vlb_terms(x0_rep, x_t, t_rep, eps_hat, -np.ones_like(x_t))     # v = -1: Sigma = beta~_t
                out[b0:b0 + b] -= (d.T / k) * bits.reshape(b, C) * (x0[0].size * np.log(2))
        return out

    @inference
    def evaluate_nll(self, images, n=None, k=10, batch_size=100):
        """Ho et al.'s variational bound on -log p(x) of uint8 test images (N, 1, 28, 28), in bits
        per dim: the model's unconditional p(x) (a class-conditional model's null label, trained with
        p_uncond > 0 for classifier-free guidance),

            -log p(x) <= L_T + sum_{t=1}^{T-1} L_t + L_0       (bits/dim: / (D ln 2))
            L_T = KL(q(x_T|x_0) || N(0, I)),  L_t = KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)),  L_0 = -log p(x_0|x_1)

        L_T in closed form; the sum over t estimated per image from k steps, one drawn in each of k equal
        strata of 0..T-1: sum_t L_t ~ (T / k) sum_j L_{t_j}, an unbiased estimate whose noise averages out
        over the images (its standard error is reported). Fixed seed: every run is scored on the same
        draws. Cost: k network evaluations per image. A bound, so an upper bound on the bits/dim that a
        flow's exact figure reports (realnvp.py)."""
        c = self.config
        if c.num_classes and not c.p_uncond:
            raise ValueError(f"{self.name}: trained without the null label (p_uncond=0) it has no p(x); "
                             f"class_log_likelihoods gives log p(x|y)")
        d, rng = self.diffusion, np.random.default_rng(0)
        x = data.to_signed(images[:n])                                                 # (N, 1, 28, 28) in [-1, 1]
        per_image = np.zeros(len(x))
        for b0 in range(0, len(x), batch_size):
            x0 = x[b0:b0 + batch_size]
            b = len(x0)
            cond = self.null_condition(b) if c.num_classes else None
            # L_T = KL(N(sqrt(abar_T) x_0, 1 - abar_T) || N(0, 1)), bits/dim
            last = d.T - 1
            prior = normal_kl(np.sqrt(d.abar[last]) * x0, np.log(1 - d.abar[last]), 0.0, 0.0)
            per_image[b0:b0 + b] = prior.reshape(b, -1).mean(axis=1) / np.log(2)
            strata = ((np.arange(k) + rng.random((b, k))) * d.T / k).astype(np.int64)  # (b, k) a step per stratum
            for j in range(k):
                per_image[b0:b0 + b] += (d.T / k) * self._bound_term(x0, strata[:, j], cond, rng)
        return {"vlb_bits_per_dim": float(per_image.mean()),
                "vlb_bits_per_dim_se": float(per_image.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0,
                "vlb_steps": k}
