"""GLIDE (Nichol, Dhariwal, Ramesh, Shyam, Mishkin, McGrew, Sutskever & Chen 2021, "GLIDE: Towards
Photorealistic Image Generation and Editing with Text-Guided Diffusion Models").

A pixel diffusion model (ddpm.py's U-Net and tinygen/diffusion.py's process) conditioned on a caption.
A small transformer text encoder, trained with the U-Net, reads the caption; its outputs reach the U-Net
two ways:

    h_1 .. h_L = TextTransformer(E[c] + P)            the caption c's token outputs (B, L, d)
    emb = TimeEmb(t) + W_f h_EOT                      the final token's output joins the time embedding
    K, V of the attention layers = [image tokens; W_ctx h_1 .. h_L]     the tokens join the keys/values
    L = E |eps - eps_theta(x_t, t, c)|^2              (the DDPM loss, with the caption as condition)

Classifier-free guidance: while training, the caption is replaced by the empty caption "" with
probability p_uncond, so one network gives eps(x, c) and eps(x, "") (tinygen/diffusion.py's convention):

    guided eps = eps(x_t, "") + s (eps(x_t, c) - eps(x_t, ""))      s = 1: the plain conditional model

Editing, the E of GLIDE: a region of an image is kept, the rest redrawn to fit a prompt. Here without
an inpainting-trained model: at every reverse step the kept region is replaced by the original noised
to that step's level, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, and by x_0 itself at the end, so
the model draws the masked region to agree with it.

The captions come from text.captions (words dropped at random) without the pairs of text.HOLDOUT, so
the prompt benchmark can ask whether the model composes words it never saw together.

Recipe (Config): the DDPM U-Net at base 24 (widths 24, 48, 96 at 28, 14, 7), attention at 7x7 over
the image and the caption; a text encoder of dim 64, 2 causal blocks; the caption dropped with p = 0.2;
T = 1000 (linear betas); Adam 1e-3, batch 64, grad clip 1, EMA 0.999, 7 epochs; sampling with 50 DDIM
steps at guidance 3. With --set text_init=PATH the text encoder starts from a trained CLIP's (the
same dims: its embeddings and causal blocks) instead of from random weights, and trains on as before;
with it, a narrower U-Net trained longer in the same CPU (base 16, a cosine learning rate, 12 epochs)
tells the words apart best, sampled at guidance 5.

    python -m tinygen train glide
    python -m tinygen train glide --set base_channels=16 --set lr_schedule=cosine --epochs 12 --set text_init=runs/clip-mnist/last.npz --out runs/glide-clip-b16
    python -m tinygen sample glide --checkpoint runs/glide-mnist/last.npz --prompt "a thick digit seven" --guidance 3 --steps 50
    python -m tinygen edit glide --checkpoint runs/glide-mnist/last.npz --image 0 --mask lower --prompt "a digit one"
    python -m tinygen.evaluate prompts --checkpoint runs/glide-mnist/last.npz --guidance 3 --steps 50
"""
from dataclasses import dataclass

import numpy as np

from .. import data, text
from ..io import save_image_grid
from .base import inference
from .clip import TextEncoder
from . import frozen_stage
from .ddpm import DDPMConfig, DiffusionModel, UNet

#: The regions `edit` can redraw: a name -> a (28, 28) boolean mask, True where the image is redrawn.
MASKS = {"lower": (slice(14, 28), slice(0, 28)), "upper": (slice(0, 14), slice(0, 28)),
         "left": (slice(0, 28), slice(0, 14)), "right": (slice(0, 28), slice(14, 28)),
         "box": (slice(7, 21), slice(7, 21))}


def region(name):
    """The (1, 28, 28) boolean mask of a MASKS region: True where the image is redrawn."""
    if name not in MASKS:
        raise ValueError(f"--mask {name}: valid masks are {', '.join(MASKS)}")
    mask = np.zeros((1, 28, 28), bool)
    mask[(slice(None), *MASKS[name])] = True
    return mask


@dataclass
class GLIDEConfig(DDPMConfig):
    epochs: int = 7
    base_channels: int = 24
    num_classes: int = 0         # conditioned on captions, not labels
    p_uncond: float = 0.2        # the caption replaced by "" with this probability
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    text_mlp_ratio: float = 2.0
    holdout: bool = True         # captions without the pairs of text.HOLDOUT
    text_init: str = ""          # a CLIP checkpoint whose text encoder starts GLIDE's (then trained with it)
    text_init_config: dict = None  # that CLIP's Config, recorded when it is loaded
    guidance: float = 3.0        # the guidance scale of pictures and of sample() when none is given
    quick_steps: int = 60


class GLIDE(DiffusionModel):
    """GLIDE: a caption-conditioned pixel U-Net, text tokens in its attention, classifier-free guidance, editing."""
    Config = GLIDEConfig
    conditional = False          # conditioned on prompts, not labels
    sample_options = ("prompt", "guidance", "steps")
    tiny_config = {"T": 5, "base_channels": 8, "channel_mult": (1, 2, 2), "batch_size": 8, "sample_steps": 2,
                   "text_dim": 8, "text_depth": 1, "text_heads": 2}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.num_classes:
            raise ValueError("glide: num_classes must be 0 (the condition is the caption)")
        self.tokenizer = text.Tokenizer()
        emb_dim = 4 * c.base_channels
        # CLIP's causal text encoder: its outputs at every token, and its projection W_f of the <end> token
        self.text_encoder = TextEncoder(self.tokenizer.vocab_size, self.tokenizer.max_length, c.text_dim,
                                        c.text_depth, c.text_heads, c.text_mlp_ratio, emb_dim, self.tokenizer.end_id)
        self.text_init_dataset = self._start_text_encoder_from_clip() if c.text_init else None
        net = UNet(1, c.base_channels, tuple(c.channel_mult), 0, c.dropout, context_dim=c.text_dim)
        self.setup_diffusion(net, (1, 28, 28))

    def _start_text_encoder_from_clip(self):
        """--set text_init=CLIP: the text encoder starts from a trained CLIP's (its embeddings and causal
        blocks; the projection W_f keeps its own start, its output width differs) and is trained with the
        U-Net as before. Returns the dataset that CLIP was trained on. A checkpoint of this model loads
        without the CLIP file: its weights are then overwritten by the checkpoint's."""
        c = self.config
        recorded = c.text_init_config is not None
        clip = frozen_stage(self, "text_init", "clip")
        mine = (c.text_dim, c.text_depth, c.text_heads, c.text_mlp_ratio)
        theirs = (clip.config.text_dim, clip.config.text_depth, clip.config.text_heads, clip.config.mlp_ratio)
        if mine != theirs:
            raise ValueError(f"--set text_init={c.text_init}: CLIP's text encoder is dim {theirs[0]}, {theirs[1]} "
                             f"blocks, {theirs[2]} heads, mlp ratio {theirs[3]}; glide's text_dim, text_depth, "
                             f"text_heads, text_mlp_ratio must be the same (they are {', '.join(map(str, mine))})")
        state = {k: v for k, v in clip.text_encoder.state_dict().items() if not k.startswith("projection.")}
        self.text_encoder.load_state_dict(state, strict=False)
        return None if recorded else clip.dataset

    # ------------------------------------------------------------------ captions
    def caption_ids(self, prompts):
        return self.tokenizer.batch(list(prompts))                   # (B, L) int64, <pad> after <end>

    def null_condition(self, n):
        """The empty caption "" (<start> <end>), the condition classifier-free guidance steers away from."""
        return self.caption_ids([""] * n)

    def prepare_batch(self, images, labels):
        """Images in [-1, 1] and their captions' ids (words dropped at random, held-out pairs left out)."""
        if self.text_init_dataset not in (None, self.dataset):
            raise ValueError(f"--set text_init={self.config.text_init}: a CLIP of {self.text_init_dataset}, but glide "
                             f"trains on {self.dataset}; train one with `python -m tinygen train clip --dataset "
                             f"{self.dataset}`")
        x, _ = super().prepare_batch(images, labels)
        holdout = text.HOLDOUT[self.dataset] if self.config.holdout else ()
        return x, self.caption_ids(text.captions(images, labels, self.dataset, rng=self.rng, holdout=holdout))

    # ------------------------------------------------------------------ eps_theta(x_t, t, caption)
    def eps_theta(self, x_t, t, ids):
        ids = np.asarray(ids)
        tokens, final = self.text_encoder.token_outputs(ids)         # (B, L, d), (B, d)
        # emb = TimeEmb(t) + W_f h_EOT;  the tokens (not the padding) join the attention keys and values
        return self.net(x_t, t, cond_emb=self.text_encoder.projection(final), context=tokens,
                        context_mask=ids != self.tokenizer.pad_id)

    def loss(self, batch):
        x0, ids = batch
        return self.diffusion_loss(x0.numpy(), ids), {}

    # ------------------------------------------------------------------ sampling and editing
    @inference
    def sample(self, n, prompt="", guidance=None, steps=None, batch_size=100, known=None):
        """n images (n, 1, 28, 28) in [0, 1] for `prompt` (one string, or n); guidance scale s (default
        config.guidance), DDIM steps (None: all T ancestral). known = (x0 in [-1, 1], keep) holds a region."""
        ids = self.caption_ids(text.check_prompts(prompt, n, self.tokenizer))
        s = self.config.guidance if guidance is None else guidance
        out = []
        for i in range(0, n, batch_size):
            part = None if known is None else tuple(k[i:i + batch_size] for k in known)
            out.append(self.to_images(self.sample_latents(len(ids[i:i + batch_size]), guidance=s, steps=steps,
                                                          cond=ids[i:i + batch_size], known=part)))
        return np.concatenate(out)

    region = staticmethod(region)

    def edit(self, images, mask, prompt, guidance=None, steps=None):
        """Redraw the region `mask` (a MASKS name or a (1, 28, 28) boolean, True = redraw) of images
        (B, 1, 28, 28) (uint8 or [0, 1]) to fit `prompt`, keeping the rest: (B, 1, 28, 28) in [0, 1]."""
        redraw = region(mask) if isinstance(mask, str) else np.asarray(mask, bool)
        x0 = data.to_signed(images)                                   # (B, 1, 28, 28) in [-1, 1]
        keep = np.broadcast_to(~redraw, x0.shape)
        return self.sample(len(x0), prompt, guidance, steps, known=(x0.astype(np.float32), keep))

    @staticmethod
    def edit_grid(images, redraw, edited):
        """Per image a row: the image, the part kept (the redrawn region grey), its edits. images (B, 1, 28,
        28) in [0, 1], redraw (1, 28, 28) boolean, edited (B n, 1, 28, 28): n edits per image, in order.
        Returns (B (2 + n), 1, 28, 28) for a grid of 2 + n columns."""
        n = len(edited) // len(images)
        kept = np.where(redraw, 0.5, images)                                  # the region redrawn shown grey
        rows = np.concatenate([images[:, None], kept[:, None], edited.reshape(len(images), n, 1, 28, 28)], axis=1)
        return rows.reshape(-1, 1, 28, 28)

    def save_pictures(self, images, labels, path_grid, path_sweep, path_edits, scales=(0, 1, 2, 3, 5)):
        """The three pictures of docs/: the prompt grid (8 a prompt, the recipe's guidance); the guidance
        sweep (a row per scale s, the ten class prompts, the same starting noise in every row); and the
        edits (per test image: the image, the part kept, 4 redraws of its lower half for the prompt of
        the next class)."""
        with self.ema.average_parameters(self):
            self.rng = np.random.default_rng(0)
            self.visualize(images, labels, path_grid, per_prompt=8)
            phrases = text.label_phrases(self.dataset)
            prompts = [text.fill_template("a {label}", phrase) for phrase in phrases]
            rows = []
            for s in scales:
                self.rng = np.random.default_rng(0)                           # the same x_T in every row
                rows.append(self.sample(len(prompts), prompt=prompts, guidance=s, steps=self.config.sample_steps))
            save_image_grid(np.concatenate(rows), path_sweep, nrow=len(prompts), scale=2)
            x = data.to_float(images)                                         # (B, 1, 28, 28) in [0, 1]
            asked = [prompts[(int(y) + 1) % len(prompts)] for y in labels]   # the next class's prompt
            self.rng = np.random.default_rng(0)
            edited = self.edit(np.repeat(x, 4, axis=0), "lower", list(np.repeat(asked, 4)),
                               steps=self.config.sample_steps)
            save_image_grid(self.edit_grid(x, region("lower"), edited), path_edits, nrow=6, scale=2)

    def visualize(self, images, labels, path, per_prompt=4):
        """A row per prompt ("a thin digit zero", "a thick digit zero", ...), per_prompt samples each (EMA
        weights). Every epoch draws this picture: 4 a row keep it to a small share of the epoch."""
        prompts = text.grid_prompts(self.dataset)
        with self.ema.average_parameters(self):
            x = self.sample(per_prompt * len(prompts), prompt=list(np.repeat(prompts, per_prompt)),
                            steps=self.config.sample_steps)
        save_image_grid(x, path, nrow=per_prompt, scale=2)
