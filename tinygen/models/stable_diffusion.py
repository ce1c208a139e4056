"""Text-conditioned latent diffusion (Rombach, Blattmann, Lorenz, Esser & Ommer 2022, "High-Resolution
Image Synthesis with Latent Diffusion Models"): the lecture's Stable Diffusion.

latent_diffusion.py with a caption instead of a label. Its KL autoencoder compresses an image to a
4 x 7 x 7 latent (stage 1, trained first in the same run, then frozen); a U-Net denoises the latents,
its attention layer reading the caption through cross-attention to the per-token outputs of a frozen,
contrastively trained CLIP text encoder (clip.py), as Stable Diffusion reads CLIP ViT-L/14's:

    z = mu(x),  z' = z / std(z)                 stage 1's latent (B, 4, 7, 7), scaled to unit variance
                                                (std(z) measured on the first batch of stage 2)
    tau(y) = CLIP_text(y)                       (B, L, d): the frozen text transformer's output at every
                                                token, its padding included (Stable Diffusion masks none)
    the U-Net's attention layer (7x7), a spatial transformer:
        h = W_in GN(x) as tokens                (B, 49, C)
        h = h + SelfAttn(LN(h))
        h = h + softmax(Q K^T / sqrt(d_head)) V,   Q = W_Q LN(h),  K = W_K tau(y),  V = W_V tau(y)
        h = h + MLP(LN(h))
        out = x + W_out h                       (W_out starts at zero: the layer starts as the identity)
    L = E |eps - eps_theta(sqrt(abar_t) z'_0 + sqrt(1 - abar_t) eps, t, tau(y))|^2
    x = sigmoid(D(z'_0 std(z)))                 the sample, decoded

Against GLIDE (glide.py), the pixel model of the same course: the U-Net runs on 7x7 latents instead of
28x28 pixels (the autoencoder's compression is what cuts the cost); the text encoder is CLIP's, trained
before and frozen (its weights never change: its outputs are computed without a graph), not one trained
with the U-Net; and the caption reaches the U-Net through cross-attention alone (no pooled token added to
the time embedding).

Classifier-free guidance: while training, the caption is replaced by the empty caption "" with
probability p_uncond (the paper's 10%); the empty caption's CLIP tokens are the null condition:

    guided eps = eps(z_t, "") + s (eps(z_t, y) - eps(z_t, ""))      s = 1: the plain conditional model

The captions come from text.captions (words dropped at random) without the pairs of text.HOLDOUT, so
the prompt benchmark can ask whether the model composes words it never saw together.

Stage 1 is trained in the same run for ae_steps steps, as latent_diffusion.py trains it; or it is taken
from a latent_diffusion run that has trained it, named with --set autoencoder=PATH (DiT's convention).

Recipe (Config): the autoencoder of latent_diffusion.py (width 32, kl_weight 0.01) for 2,000 steps;
then the latent U-Net at base 64 (7x7 only), a spatial transformer of 1 block and 4 heads on CLIP's
64-wide token outputs; the caption dropped with p = 0.1; T = 1000 (linear betas); Adam 1e-3, batch 64,
grad clip 1, EMA 0.999, 12 epochs in all; sampling with 50 DDIM steps at guidance 4. Cost and figures:
docs/models/stable_diffusion.md.

    python -m tinygen train clip                                                    (the text encoder)
    python -m tinygen train stable_diffusion --set clip=runs/clip-mnist/last.npz
    python -m tinygen train stable_diffusion --set clip=runs/clip-mnist/last.npz --set autoencoder=runs/ld-ae/last.npz
    python -m tinygen sample stable_diffusion --checkpoint runs/stable_diffusion-mnist/last.npz \\
        --prompt "a thick digit seven" --guidance 4 --steps 50
    python -m tinygen.evaluate prompts --checkpoint runs/stable_diffusion-mnist/last.npz --guidance 4 --steps 50
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autograd import Tensor
from .. import nn, text
from ..io import save_image_grid
from . import frozen_stage, load_stage
from .base import inference
from .ddpm import UNet, _groups
from .latent_diffusion import LatentDiffusion, LatentDiffusionConfig


@dataclass
class StableDiffusionConfig(LatentDiffusionConfig):
    epochs: int = 12
    num_classes: int = 0         # conditioned on captions, not labels
    p_uncond: float = 0.1        # the caption replaced by "" with this probability
    clip: str = ""               # the CLIP checkpoint (python -m tinygen train clip); required
    clip_config: dict = None     # its Config, recorded when it is loaded (its weights are in ours)
    autoencoder: str = ""        # a latent_diffusion run past its stage 1, whose autoencoder is used (then
                                 # ae_steps becomes 0); "": stage 1 is trained here first, for ae_steps steps
    autoencoder_loaded: bool = False  # set once its weights are copied in: a checkpoint then carries them
    heads: int = 4               # the spatial transformer's attention heads
    transformer_depth: int = 1   # its blocks (self-attention, cross-attention, MLP)
    holdout: bool = True         # captions without the pairs of text.HOLDOUT
    guidance: float = 4.0        # the guidance scale of pictures and of sample() when none is given
    quick_steps: int = 300       # --quick: the autoencoder stage only (its picture: reconstructions)


class SpatialTransformer(nn.Module):
    """Stable Diffusion's attention layer: a feature map (B, C, H, W) as H*W tokens through transformer
    blocks (self-attention, cross-attention to the context, MLP: nn.TransformerBlock), back to a map and
    added to the input. forward(x, context (B, S, context_dim), context_mask ignored: every token is read)."""

    def __init__(self, channels, context_dim, heads=4, depth=1):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.proj_in = nn.Linear(channels, channels)                                        # W_in
        self.blocks = nn.ModuleList([nn.TransformerBlock(channels, heads, cross_dim=context_dim)
                                     for _ in range(depth)])
        self.proj_out = nn.Linear(channels, channels)                                       # W_out
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, context, context_mask=None):
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x).reshape(B, C, H * W).transpose(0, 2, 1))              # (B, HW, C)
        for block in self.blocks:
            h = block(h, context)                                                           # (B, HW, C)
        return x + self.proj_out(h).transpose(0, 2, 1).reshape(B, C, H, W)                  # (B, C, H, W)


class StableDiffusion(LatentDiffusion):
    """Stable Diffusion: latent diffusion with cross-attention to a frozen CLIP text encoder's tokens, CFG."""
    Config = StableDiffusionConfig
    sample_options = ("prompt", "guidance", "steps")
    stages = {"clip": "clip"}     # config field -> the model its checkpoint holds (tinygen.models.load_stage);
                                  # the optional one: autoencoder -> latent_diffusion
    tiny_config = {"T": 5, "ae_width": 4, "base_channels": 8, "batch_size": 8, "ae_steps": 0, "sample_steps": 2,
                   "heads": 2}

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.num_classes:
            raise ValueError("stable_diffusion: num_classes must be 0 (the condition is the caption)")

    def latent_unet(self):
        """The frozen CLIP first (the cross-attention reads its token width), then eps_theta: ddpm.py's
        U-Net at 7x7 with a SpatialTransformer as its attention layer."""
        c = self.config
        self.clip = frozen_stage(self, "clip", "clip")                  # frozen; it travels in our checkpoints
        self.tokenizer = self.clip.tokenizer
        if c.autoencoder and not (c.autoencoder_loaded and not Path(c.autoencoder).is_file()):
            self.load_autoencoder(c.autoencoder)
        width = c.base_channels * c.channel_mult[-1]
        block = SpatialTransformer(width, self.clip.config.text_dim, c.heads, c.transformer_depth)
        return UNet(c.latent_channels, c.base_channels, tuple(c.channel_mult), 0, c.dropout, attention=block)

    def load_autoencoder(self, path):
        """Stage 1 from a latent_diffusion run that has trained it (`python -m tinygen train latent_diffusion
        --max-steps 2000 --out runs/ld-ae`, as DiT's): its autoencoder copied in, and no stage 1 here."""
        c, stage = self.config, load_stage(path, "latent_diffusion", field="autoencoder", user=self.name)
        if stage.steps_done[0] < stage.config.ae_steps:
            raise ValueError(f"--set autoencoder={path}: its autoencoder has trained {int(stage.steps_done[0])} of "
                             f"its {stage.config.ae_steps} steps; train that run on to the end of its stage 1")
        for key in ("ae_width", "latent_channels"):
            if getattr(stage.config, key) != getattr(c, key):
                raise ValueError(f"--set autoencoder={path}: its autoencoder has {key}={getattr(stage.config, key)}, "
                                 f"this model {getattr(c, key)} (--set {key}={getattr(stage.config, key)})")
        self.autoencoder.load_state_dict(stage.autoencoder.state_dict())
        c.ae_steps, c.autoencoder_loaded = 0, True

    # ------------------------------------------------------------------ captions
    def caption_ids(self, prompts):
        return self.tokenizer.batch(list(prompts))                   # (B, L) int64, <pad> after <end>

    def null_condition(self, n):
        """The empty caption "" (<start> <end>): the condition classifier-free guidance steers away from."""
        return self.caption_ids([""] * n)

    def prepare_batch(self, images, labels):
        """Images in [0, 1] and their captions' ids (words dropped at random, held-out pairs left out)."""
        if self.clip.dataset != self.dataset:
            raise ValueError(f"--set clip={self.config.clip}: a CLIP of {self.clip.dataset}, but stable_diffusion "
                             f"trains on {self.dataset}; train one with `python -m tinygen train clip --dataset "
                             f"{self.dataset}`")
        x, _ = super().prepare_batch(images, labels)
        holdout = text.HOLDOUT[self.dataset] if self.config.holdout else ()
        return x, self.caption_ids(text.captions(images, labels, self.dataset, rng=self.rng, holdout=holdout))

    def diffusion_condition(self, ids):
        return ids

    # ------------------------------------------------------------------ eps_theta(z_t, t, tau(y))
    def eps_theta(self, z_t, t, ids):
        tau = self.clip.encode_text_tokens(np.asarray(ids))          # (B, L, d) NumPy: no graph, CLIP stays frozen
        return self.net(z_t, t, context=Tensor(tau))

    # ------------------------------------------------------------------ sampling
    @inference
    def sample(self, n, prompt="", guidance=None, steps=None, batch_size=100):
        """n images (n, 1, 28, 28) in [0, 1] for `prompt` (one string, or n); guidance scale s (default
        config.guidance), DDIM steps (None: all T ancestral)."""
        ids = self.caption_ids(text.check_prompts(prompt, n, self.tokenizer))
        s = self.config.guidance if guidance is None else guidance
        return np.concatenate([self.to_images(self.sample_latents(len(ids[i:i + batch_size]), guidance=s, steps=steps,
                                                                  cond=ids[i:i + batch_size]))
                               for i in range(0, n, batch_size)])

    def visualize(self, images, labels, path):
        """Stage 1: test images over their reconstructions. Stage 2: a row per prompt ("a thin digit zero",
        "a thick digit zero", ...), 8 samples each (EMA weights)."""
        if self.stage == 1:
            return super().visualize(images, labels, path)
        prompts = text.grid_prompts(self.dataset)
        with self.ema.average_parameters(self):
            x = self.sample(8 * len(prompts), prompt=list(np.repeat(prompts, 8)), steps=self.config.sample_steps)
        save_image_grid(x, path, nrow=8, scale=2)
