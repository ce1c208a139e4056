"""DiT: diffusion with a transformer (Peebles & Xie, 2023, "Scalable Diffusion Models with Transformers").

The idea: replace the U-Net of latent diffusion by a plain ViT. The noisy latent x_t (here the 4x7x7
latent of latent_diffusion.py's autoencoder, or the 28x28 image itself) is cut into p x p patches, each
patch a token; a stack of transformer blocks conditioned on the timestep and the class predicts, per
token, the noise and the variance of its patch. The paper's finding is that such a model scales like
a transformer does: sample quality improves steadily with forward GFLOPs (wider, deeper, smaller
patches), whatever the parameter count.

    tokens      z_0 = patchify(x_t) E + E_pos          E (C p p, D), E_pos the fixed 2-D sin-cos embedding
    condition   c = TimestepEmbedding(t) + E_y[y]      E_y has a row for the null label (classifier-free)
    adaLN-Zero  (beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2) = W SiLU(c) + b,  W = b = 0 at init
                z = z + alpha_1 Attn(LN(z) (1 + gamma_1) + beta_1)
                z = z + alpha_2 MLP(LN(z) (1 + gamma_2) + beta_2)          (LN without its own affine)
    output      LN(z) (1 + gamma) + beta -> Linear (zero-initialised) -> (N, p p 2C) -> unpatchify
                -> [eps_theta, v] (B, 2C, H, W): the noise and the variance mix of each element
    loss        L_hybrid = L_simple + lambda T L_t (lambda = 0.001; tinygen/diffusion.py, improved DDPM):
                the simple loss trains eps, the bound trains Sigma_theta = exp(f log beta_t + (1 - f) log beta~_t),
                f = (v + 1) / 2, through a stop-gradient on the mean; L_0 is the continuous Gaussian
                density on latents, the discretised one on pixels
    guidance    eps~ = eps(x, none) + s (eps(x, y) - eps(x, none)) on the eps channels; v from eps(x, y)

Because every gate alpha and the output layer start at zero, a fresh block is exactly the identity
and a fresh DiT predicts eps = 0, v = 0 (the paper's best conditioning, Table 1 / Fig. 5).

On the 7x7 latent, patch 2 needs an even grid: the network pads x_t to 8x8 with zeros, works on the
4x4 = 16 tokens, and crops its output back to 7x7 (the diffusion itself never sees the padding).
`--set input=pixels patch_size=4` runs the same model on 1x28x28 pixels in [-1, 1] (49 tokens).

The autoencoder comes from a latent_diffusion run that has trained its first stage, named on the command
line (`--set autoencoder=PATH`; there is no default: without it, or `input=pixels`, `train dit` stops with
the command below); its weights only, frozen, are copied into the DiT when it is built, so that a DiT
checkpoint stands alone (it loads where the stage's file is not). Recipe (Config defaults): dim 128, depth 6, 4 heads, patch 2, learned sigma,
the null label 10% of steps, AdamW 5e-4 without weight decay, gradient clipping at 1, 6 epochs at batch 64.
Figures, and the scaling runs: docs/models/dit.md.

    python -m tinygen train latent_diffusion --max-steps 2000 --out runs/ld-ae      (the autoencoder)
    python -m tinygen train dit --set autoencoder=runs/ld-ae/last.npz               (the recipe)
    python -m tinygen sample dit --checkpoint runs/dit-mnist/last.npz --label 3 --guidance 3 --steps 50
    python -m tinygen evaluate dit --checkpoint runs/dit-mnist/last.npz --n 2000 --steps 20 --guidance 2
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd.functional as F
from autograd import Tensor, no_grad
from .. import data, io, nn, optim
from ..io import save_image_grid
from .ddpm import DDPMConfig, DiffusionModel
from .latent_diffusion import KLAutoencoder


# the command that trains the stage a latent DiT needs (its error messages name it)
AUTOENCODER_COMMAND = "python -m tinygen train latent_diffusion --max-steps 2000 --out runs/ld-ae"


@dataclass
class DiTConfig(DDPMConfig):
    epochs: int = 6
    batch_size: int = 64
    lr: float = 5e-4
    grad_clip: float = 1.0
    input: str = "latent"         # "latent": the autoencoder's 4x7x7 latents; "pixels": 1x28x28 in [-1, 1]
    autoencoder: str = ""         # input=latent: a latent_diffusion checkpoint (required)
    autoencoder_loaded: bool = False  # set once its weights are copied in: a checkpoint then carries them
    latent_channels: int = 4      # must match the autoencoder's
    ae_width: int = 32
    patch_size: int = 2           # latent 7x7 (padded to 8x8) -> 16 tokens; use 4 on pixels (49 tokens)
    dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    learn_sigma: bool = True      # output [eps, v] and train with L_hybrid; False: eps and L_simple
    vlb_weight: float = 0.001     # lambda of L_hybrid
    p_uncond: float = 0.1         # the null label's probability in training (the paper's 0.1)
    quick_steps: int = 150


def modulate(x, shift, scale):
    """adaLN: x (B, N, D) -> x (1 + scale) + shift, with shift and scale (B, D) shared by all tokens."""
    # LN(x) (1 + gamma) + beta
    return x * (1 + scale.reshape(len(x), 1, -1)) + shift.reshape(len(x), 1, -1)


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning on c (B, D); the identity at initialisation."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)                 # -> beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2
        nn.init.zeros_(self.ada.weight)                    # adaLN-Zero: every alpha starts at 0
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, c):                               # (B, N, D), (B, D)
        D, B = self.dim, len(x)
        m = self.ada(F.silu(c))                            # (B, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, i * D:(i + 1) * D] for i in range(6))
        # z = z + alpha_1 Attn(LN(z) (1 + gamma_1) + beta_1)
        x = x + gate1.reshape(B, 1, D) * self.attn(modulate(self.norm1(x), shift1, scale1))
        # z = z + alpha_2 MLP(LN(z) (1 + gamma_2) + beta_2)
        return x + gate2.reshape(B, 1, D) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN, then a zero-initialised Linear to p p C_out numbers per token: (B, N, D) -> (B, N, p p C_out)."""

    def __init__(self, dim, patch_size, out_channels):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ada = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        for p in (self.ada.weight, self.ada.bias, self.linear.weight, self.linear.bias):
            nn.init.zeros_(p)

    def forward(self, x, c):
        m = self.ada(F.silu(c))                            # (B, 2D)
        return self.linear(modulate(self.norm(x), m[:, :self.dim], m[:, self.dim:]))


class DiTNet(nn.Module):
    """[eps_theta, v](x_t, t, y): (B, C, H, W), (B,), (B,) or None -> (B, C_out, H, W), C_out = 2C with
    learned sigma. Labels index num_classes + 1 rows (the last: the null label)."""

    def __init__(self, in_channels, size, patch_size, dim, depth, num_heads, mlp_ratio=4.0, num_classes=0,
                 learn_sigma=True):
        super().__init__()
        if dim % 4:
            raise ValueError(f"DiT: dim {dim} must be divisible by 4 (the 2-D sin-cos position embedding)")
        if patch_size < 1:
            raise ValueError(f"DiT: patch_size must be at least 1, got {patch_size}")
        self.in_channels, self.size, self.p, self.num_classes = in_channels, size, patch_size, num_classes
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.padded = size + (-size) % patch_size          # 7 -> 8 for p = 2
        self.grid = self.padded // patch_size              # tokens per side
        self.patch_embed = nn.PatchEmbed(patch_size, in_channels, dim)          # x_p E
        self.pos = nn.sincos_2d_position_embedding(self.grid, self.grid, dim)   # E_pos (N, D), fixed
        self.time = nn.TimestepEmbedding(256, dim)         # sinusoidal 256 -> MLP -> D (the paper's)
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None
        if self.label is not None:
            nn.init.normal_(self.label.weight, std=0.02)
        self.blocks = nn.ModuleList([DiTBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.final = FinalLayer(dim, patch_size, self.out_channels)

    def forward(self, x, t, y=None):
        B, C, H, W = x.shape
        if C != self.in_channels or H != self.size or W != self.size:
            raise ValueError(f"DiT: expected x_t (B, {self.in_channels}, {self.size}, {self.size}), got {tuple(x.shape)}")
        pad = self.padded - self.size
        if pad:
            x = F.pad(x, (0, pad, 0, pad))                 # (B, C, H', W'), zeros right and below
        h = self.patch_embed(x) + self.pos                 # (B, N, D)
        c = self.time(t)                                   # (B, D)
        if self.label is not None:
            y = np.full(B, self.num_classes) if y is None else np.asarray(y)    # None: the null label
            # c = TimestepEmbedding(t) + E_y[y]
            c = c + self.label(y)
        for block in self.blocks:
            h = block(h, c)
        out = self.final(h, c)                             # (B, N, p p C_out)
        out = nn.unpatchify(out, self.p, self.out_channels, self.padded, self.padded)   # (B, C_out, H', W')
        return out[:, :, :H, :W] if pad else out


class DiT(DiffusionModel):
    """DiT (Peebles & Xie 2023): a transformer on patches of the latent, adaLN-Zero, learned sigma, CFG."""
    Config = DiTConfig
    sample_options = ("label", "guidance", "steps")
    stages = {"autoencoder": "latent_diffusion"}   # config field -> the model its checkpoint holds
    tiny_config = {"T": 5, "ae_width": 4, "dim": 16, "depth": 1, "num_heads": 2,
                   "batch_size": 8, "sample_steps": 2}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.input not in ("latent", "pixels"):
            raise ValueError(f"DiT: unknown input {c.input!r}; valid: 'latent', 'pixels'")
        self.conditional = bool(c.num_classes)
        self.learned_variance = bool(c.learn_sigma)
        self.latent = c.input == "latent"
        if self.latent:
            if not c.autoencoder:
                raise ValueError(f"DiT: input=latent needs the autoencoder of a latent_diffusion run: train it with "
                                 f"`{AUTOENCODER_COMMAND}`, then give --set autoencoder=runs/ld-ae/last.npz "
                                 f"(or --set input=pixels)")
            self.image_range = "unit"                      # the autoencoder's input
            self.autoencoder = KLAutoencoder(c.ae_width, c.latent_channels)
            # the frozen stage, copied in now; a checkpoint of this model carries its weights, so one that
            # recorded the copy loads where the stage's file is not
            if not (c.autoencoder_loaded and not Path(c.autoencoder).is_file()):
                self.load_autoencoder(c.autoencoder)
                c.autoencoder_loaded = True
            self.register_buffer("latent_std", np.ones(1, np.float32))      # std(z), measured at the first step
            channels, size = c.latent_channels, 7
        else:
            channels, size = 1, 28
        self.register_buffer("steps_done", np.zeros(1, np.float32))
        net = DiTNet(channels, size, c.patch_size, c.dim, c.depth, c.num_heads, c.mlp_ratio, c.num_classes,
                     c.learn_sigma)
        self.setup_diffusion(net, (channels, size, size), clip_x0=not self.latent)

    def configure_optimizers(self):
        return {"main": optim.AdamW(self.net.parameters(), lr=self.config.lr, weight_decay=0.0)}  # the paper's

    # ------------------------------------------------------------------ the autoencoder (latent input)
    def load_autoencoder(self, path):
        """Copy the autoencoder of a latent_diffusion checkpoint into this model (its raw weights: the
        autoencoder is frozen after stage 1, so they are the ones its diffusion model was trained on)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"DiT: no autoencoder checkpoint at {path}; train one with "
                                    f"`{AUTOENCODER_COMMAND}`, or give --set autoencoder=PATH (or input=pixels)")
        arrays, meta = io.load_checkpoint(path)
        if meta.get("model") != "latent_diffusion":
            raise ValueError(f"DiT: {path} holds a {meta.get('model')!r} model, not a latent_diffusion run")
        theirs = meta.get("config", {})
        for key in ("latent_channels", "ae_width"):
            if theirs.get(key) != getattr(self.config, key):
                raise ValueError(f"DiT: the autoencoder in {path} has {key}={theirs.get(key)}, this DiT "
                                 f"{key}={getattr(self.config, key)} (--set {key}={theirs.get(key)})")
        state = io.unflatten_state("model", arrays, meta["scalars"])
        self.autoencoder.load_state_dict({k[len("autoencoder."):]: v for k, v in state.items()
                                          if k.startswith("autoencoder.")})

    def encode(self, x):
        """Scaled latents z' = mu(x) / std(z) (B, C, 7, 7) of images x (B, 1, 28, 28) in [0, 1], NumPy."""
        with no_grad():
            mu, _ = self.autoencoder.encoder(Tensor(x))
        return mu.numpy() / self.latent_std[0]

    def decode(self, z_scaled):
        """x = sigmoid(D(z' std(z))): images (B, 1, 28, 28) in [0, 1]."""
        with no_grad():
            return F.sigmoid(self.autoencoder.decoder(Tensor(z_scaled * self.latent_std[0]))).numpy()

    def to_images(self, x0):
        return self.decode(x0) if self.latent else super().to_images(x0)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, optimizers):
        if self.steps_done[0] == 0 and self.latent:        # the first step: std(z) of the frozen autoencoder
            self.latent_std[0] = np.float32(self.encode(batch[0].numpy()).std())
            self.ema = optim.EMA(self, decay=self.config.ema_decay, warmup=True)
        self.steps_done[0] += 1
        return super().training_step(batch, optimizers)

    def loss(self, batch):
        x, labels = batch
        return self.diffusion_terms(self.encode(x.numpy()) if self.latent else x.numpy(), labels)

    def diffusion_terms(self, x0, labels, rng=None):
        """(loss, logs) on clean x0 (B, C, H, W) NumPy: L_hybrid (learned sigma) or L_simple."""
        c, rng = self.config, rng or self.rng
        x_t, t, noise = self.diffusion.diffuse(x0, rng)
        # classifier-free guidance: the null label with probability p_uncond
        y = self.drop_condition(labels, c.p_uncond, rng) if c.num_classes else None
        out = self.net(Tensor(x_t), t, y)                  # (B, C_out, H, W)
        if not c.learn_sigma:
            return F.mse_loss(out, Tensor(noise)), {}
        C = x0.shape[1]
        loss, simple, vlb = self.diffusion.hybrid_loss(x0, x_t, t, Tensor(noise), out[:, :C], out[:, C:],
                                                       c.vlb_weight, "gaussian" if self.latent else "discretized")
        return loss, {"mse": simple, "vlb_bits": vlb}

    def evaluate(self, images, labels, n=500):
        """L_simple and the sampled bound term L_t (bits/dim) on the first n test images, a fixed noise seed."""
        if self.latent and self.steps_done[0] == 0:
            return {}
        with no_grad():
            x = data.to_float(images[:n])
            x0 = self.encode(x) if self.latent else data.to_signed(images[:n])
            _, logs = self.diffusion_terms(x0, np.asarray(labels[:n]), np.random.default_rng(0))
        return {f"test_{k}": v for k, v in logs.items()}

    # ------------------------------------------------------------------ pictures
    def save_pictures(self, path_samples, guidance=2.0, steps=50):
        """Samples with classifier-free guidance, one row per digit (10 x 10), for docs/."""
        label = np.repeat(np.arange(data.N_CLASSES), 10)
        save_image_grid(self.sample(100, label=label, guidance=guidance, steps=steps), path_samples, nrow=10, scale=2)
