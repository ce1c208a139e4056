"""unCLIP, the model of DALL·E 2 (Ramesh, Dhariwal, Nichol, Chu & Chen 2022, "Hierarchical Text-Conditional
Image Generation with CLIP Latents").

Text to image in two steps through the joint space of a trained CLIP (clip.py), which stays frozen: a
*prior* turns the caption into a CLIP image embedding, a *decoder* turns that embedding into an image.

    y --CLIP text encoder--> (h_1 .. h_L, z_text) --prior--> z_img --decoder--> x

Embeddings: every one the model handles is CLIP's unit vector scaled to norm sqrt(D) (D: CLIP's joint
dimension), so that its components have about unit variance, like the noise they are diffused with:

    z = sqrt(D) e / |e|,     e = I_e(x) for an image, T_e(y) for a caption

The prior is a diffusion model (tinygen/diffusion.py's process on (B, D) vectors, cosine schedule) over
z_img, given the caption. Its network is a transformer with a causal mask (the paper's "decoder-only
Transformer with a causal attention mask") over L + 4 tokens of width d:

    seq = [W_h h_1 .. W_h h_L,  W_z z_text,  TimeEmb(t),  W_x z_t,  q] + P     h: CLIP's token outputs
    x0_theta(z_t, t, y) = W_out Transformer_causal(seq)[q]                     read at the learned query q

(the caption's padding masked out). It predicts the clean embedding itself, not the noise, as the paper:

    L_prior = E |z_img - x0_theta(sqrt(abar_t) z_img + sqrt(1 - abar_t) eps, t, y)|^2

and is sampled with DDIM through eps = (z_t - sqrt(abar_t) x0_theta) / sqrt(1 - abar_t)
(GaussianDiffusion.eps_fn_from_x0). The caption is replaced by the empty caption "" with p = 0.1, for
classifier-free guidance of the prior. The paper's trick: draw k = prior_candidates embeddings per
caption and keep the one nearest the text embedding, argmax_i z_i . z_text. A sample is renormalised
to norm sqrt(D) before it is decoded, as the decoder's training embeddings are.

The decoder is ddpm.py's U-Net on pixels (GLIDE's, glide.py), given z_img two ways:

    emb = TimeEmb(t) + W_e z_img                        added to the time embedding of every block
    K, V of the attention layer = [image tokens; W_c z_img as 4 tokens of width D]
    L_decoder = E |eps - eps_theta(x_t, t, z_img)|^2

z_img is replaced by the zero vector with p = 0.1 (its projections are then their biases alone: a learned
"no image"), so that  guided eps = eps(x_t, 0) + s (eps(x_t, z) - eps(x_t, 0)),  s = 1 plain conditional.
Unlike the paper's decoder, this one does not read the caption: the embedding alone makes the image, so
a variation needs no caption.

Training: one loss, L = L_prior + L_decoder, one Adam step for both on each batch. The networks share no
weight, so each gets its own loss's gradient, and Adam scales each weight's step by that weight's own
gradient history: the sum trains each as if it were alone (each network's gradient is clipped alone
too), while one batch feeds both, CLIP encoding its images and captions once. CLIP is frozen: no
optimizer sees its weights and its EMA copy is kept exact (optim.EMA copies frozen parameters).

What the lecture asks of it:
    text -> image          prior -> decoder                      sample(n, prompt)
    why a prior            decode z_text itself (renormalised like an image's z) with the same decoder:
                           sample(n, prompt, decode_from="text"), or --set decode_from=text
    variations             CLIP-encode an image, decode its z several times       vary(images, n)
    interpolation          decode slerp(z_a, z_b, w), w in [0, 1], with the same noise   interpolate(a, b)

The captions are text.captions' (words dropped at random) without the pairs of text.HOLDOUT.

Recipe (Config): the CLIP of `python -m tinygen train clip`, frozen; the prior d = 128, 4 causal blocks of
4 heads, T = 1000 (cosine), 64 DDIM steps, 2 candidates; the decoder DDPM's U-Net at base 16 (widths 16, 32,
64), 4 context tokens, T = 1000 (linear), guidance 3; Adam 1e-3, batch 64, grad clip 1, EMA 0.999, 8 epochs.

    python -m tinygen train clip                                                      (the stage)
    python -m tinygen train unclip --set clip=runs/clip-mnist/last.npz
    python -m tinygen sample unclip --checkpoint runs/unclip-mnist/last.npz --prompt "a thick digit seven" --steps 50
    python -m tinygen vary unclip --checkpoint runs/unclip-mnist/last.npz --image 0 --n 8 --steps 50
    python -m tinygen.evaluate prompts --checkpoint runs/unclip-mnist/last.npz --steps 50
    python -m tinygen.evaluate prompts --checkpoint runs/unclip-mnist/last.npz --steps 50 --set decode_from=text
    python -m tinygen.evaluate prior --checkpoint runs/unclip-mnist/last.npz
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor, no_grad
from .. import data, nn, optim, text
from ..diffusion import GaussianDiffusion, beta_schedule, classifier_free, drop_condition
from ..io import save_image_grid
from . import frozen_stage
from .base import inference
from .ddpm import DDPMConfig, DiffusionModel, UNet

DECODE_FROM = ("prior", "text")   # what the decoder is given: the prior's z_img, or z_text itself


@dataclass
class UnCLIPConfig(DDPMConfig):
    epochs: int = 8
    base_channels: int = 16      # the decoder's U-Net: widths base * channel_mult at 28, 14, 7
    num_classes: int = 0         # conditioned on CLIP embeddings, not labels
    p_uncond: float = 0.1        # the decoder's z_img replaced by the zero vector with this probability
    clip: str = ""               # the CLIP checkpoint (python -m tinygen train clip); required
    clip_config: dict = None     # its Config, recorded when it is loaded (its weights are in ours)
    context_tokens: int = 4      # z_img as this many extra keys and values of the decoder's attention
    guidance: float = 3.0        # the decoder's guidance scale when sample() is given none
    prior_dim: int = 128
    prior_depth: int = 4
    prior_heads: int = 4
    prior_mlp_ratio: float = 4.0
    prior_T: int = 1000
    prior_schedule: str = "cosine"
    p_uncond_prior: float = 0.1  # the prior's caption replaced by "" with this probability
    prior_steps: int = 64        # the prior's DDIM steps when sampling
    prior_guidance: float = 1.0  # the prior's classifier-free guidance scale (1: plain conditional)
    prior_candidates: int = 2    # embeddings drawn per caption; the one nearest z_text is kept
    decode_from: str = "prior"   # "prior", or "text": the decoder given z_text (the comparison)
    holdout: bool = True         # captions without the pairs of text.HOLDOUT
    quick_steps: int = 40


def unit(v):
    """v / |v| along the last axis (NumPy)."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def slerp(a, b, w):
    """Spherical interpolation between the rows of a and b (B, D) at w in [0, 1]; rows of one norm stay on
    that sphere (linear where a and b point the same way):
        theta = arccos(a.b / |a| |b|),   slerp = sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b"""
    cos = np.clip((a * b).sum(-1, keepdims=True) / (np.linalg.norm(a, axis=-1, keepdims=True)
                                                   * np.linalg.norm(b, axis=-1, keepdims=True)), -1.0, 1.0)
    theta = np.arccos(cos)                                              # (B, 1)
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    wa = np.where(near, 1 - w, np.sin((1 - w) * theta) / safe)
    wb = np.where(near, w, np.sin(w * theta) / safe)
    return (wa * a + wb * b).astype(np.float32)


# ---------------------------------------------------------------------- the two networks
class Prior(nn.Module):
    """x0_theta(z_t, t, y) -> (B, D): a causal transformer over [W_h h_1..h_L, W_z z_text, TimeEmb(t), W_x z_t, q],
    read at the learned query q. tokens h (B, L, text_dim) with token_mask (B, L) False at the padding;
    z_text, z_t (B, D)."""

    def __init__(self, text_dim, embed_dim, length, dim, depth, num_heads, mlp_ratio):
        super().__init__()
        self.tokens_in = nn.Linear(text_dim, dim)                       # W_h
        self.text_in = nn.Linear(embed_dim, dim)                        # W_z
        self.time = nn.TimestepEmbedding(dim, dim)
        self.x_in = nn.Linear(embed_dim, dim)                           # W_x
        self.query = nn.Parameter(np.zeros((1, 1, dim), np.float32))   # q
        nn.init.normal_(self.query, std=0.02)
        self.pos = nn.LearnedPositionEmbedding(length + 4, dim)        # P
        self.transformer = nn.Transformer(dim, depth, num_heads, mlp_ratio=mlp_ratio, causal=True)
        self.out = nn.Linear(dim, embed_dim)                            # W_out

    def forward(self, z_t, t, tokens, token_mask, z_text):
        B, d = z_t.shape[0], self.query.shape[-1]
        seq = F.concat([self.tokens_in(tokens),                        # (B, L, d)
                        self.text_in(z_text).reshape(B, 1, d),
                        self.time(t).reshape(B, 1, d),
                        self.x_in(z_t).reshape(B, 1, d),
                        self.query.expand(B, 1, d)], axis=1)            # (B, L + 4, d)
        # the caption's padding is never attended to; the four tokens after it always are (and causally)
        mask = np.concatenate([np.asarray(token_mask, bool), np.ones((B, 4), bool)], axis=1)   # (B, L + 4)
        h = self.transformer(self.pos(seq), attn_mask=mask[:, None, None, :])                  # (B, L + 4, d)
        return self.out(h[:, -1])                                                               # (B, D)


class Decoder(nn.Module):
    """eps_theta(x_t, t, z) -> (B, 1, 28, 28): the U-Net given z (B, D) added to its time embedding (W_e) and
    as context_tokens tokens of its attention layer (W_c)."""

    def __init__(self, embed_dim, base, mult, dropout, context_tokens):
        super().__init__()
        self.context_tokens = context_tokens
        self.unet = UNet(1, base, mult, 0, dropout, context_dim=embed_dim)
        self.embed_proj = nn.Linear(embed_dim, 4 * base)                        # W_e
        self.embed_tokens = nn.Linear(embed_dim, context_tokens * embed_dim)   # W_c

    def forward(self, x_t, t, z):
        z = Tensor(np.asarray(z, np.float32))                                   # (B, D); zeros: no image
        B, k = z.shape[0], self.context_tokens
        tokens = self.embed_tokens(z).reshape(B, k, -1)                         # (B, k, D)
        # emb = TimeEmb(t) + W_e z;  K, V = [image tokens; W_c z]
        return self.unet(x_t, t, cond_emb=self.embed_proj(z), context=tokens, context_mask=np.ones((B, k), bool))


# ---------------------------------------------------------------------- the model
class UnCLIP(DiffusionModel):
    """unCLIP (DALL·E 2): a diffusion prior text -> CLIP image embedding, a diffusion decoder embedding -> image."""
    Config = UnCLIPConfig
    conditional = False          # conditioned on prompts, not labels
    sample_options = ("prompt", "guidance", "steps")
    sample_settings = ("decode_from", "prior_candidates", "prior_guidance", "prior_steps")  # --set at sampling
    stages = {"clip": "clip"}    # config field -> the model its checkpoint holds (tinygen.models.load_stage)
    tiny_config = {"T": 5, "base_channels": 8, "channel_mult": (1, 2, 2), "batch_size": 8, "sample_steps": 2,
                   "context_tokens": 2, "prior_dim": 16, "prior_depth": 1, "prior_heads": 2, "prior_T": 5,
                   "prior_steps": 2}

    @classmethod
    def check_config(cls, c):
        super().check_config(c)
        if not 1 <= c.prior_steps <= c.prior_T:
            raise ValueError(f"--set prior_steps={c.prior_steps}: the prior's sampling steps must lie in 1..prior_T "
                             f"= 1..{c.prior_T}")
        if c.decode_from not in DECODE_FROM:
            raise ValueError(f"--set decode_from={c.decode_from}: valid: {', '.join(DECODE_FROM)}")
        beta_schedule(c.prior_schedule, 2)   # an unknown schedule is refused by name

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.num_classes:
            raise ValueError("unclip: num_classes must be 0 (the condition is the caption)")
        self.clip = frozen_stage(self, "clip", "clip")                # frozen; it travels in our checkpoints
        self.tokenizer = self.clip.tokenizer
        self.D = self.clip.config.embed_dim
        self.prior = Prior(self.clip.config.text_dim, self.D, self.tokenizer.max_length, c.prior_dim,
                           c.prior_depth, c.prior_heads, c.prior_mlp_ratio)
        self.prior_diffusion = GaussianDiffusion(beta_schedule(c.prior_schedule, c.prior_T), clip_x0=False)
        self.setup_diffusion(Decoder(self.D, c.base_channels, tuple(c.channel_mult), c.dropout, c.context_tokens),
                             (1, 28, 28))

    def configure_optimizers(self):
        return {"main": optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.config.lr)}

    # ------------------------------------------------------------------ CLIP's embeddings, at norm sqrt(D)
    def caption_ids(self, prompts):
        return self.tokenizer.batch(list(prompts))                     # (B, L) int64, <pad> after <end>

    def null_ids(self, n):
        """The empty caption "" (<start> <end>): the prior's null condition."""
        return self.caption_ids([""] * n)

    def encode_captions(self, ids):
        """CLIP's token outputs h (B, L, text_dim) (a constant Tensor), the mask of the caption's tokens (B, L)
        and z_text = sqrt(D) T_e / |T_e| (B, D), NumPy."""
        ids = np.asarray(ids)
        encoder = self.clip.text_encoder
        with no_grad():
            h, final = encoder.token_outputs(ids)                      # (B, L, text_dim), (B, text_dim)
            e = encoder.projection(final).numpy()                      # (B, D): T_e before its norm
        # z_text = sqrt(D) T_e / |T_e|
        return h, ids != self.tokenizer.pad_id, (math.sqrt(self.D) * unit(e)).astype(np.float32)

    def text_embedding(self, prompts):
        """z_text (n, D) of n prompts, at norm sqrt(D)."""
        return self.encode_captions(self.caption_ids(prompts))[2]

    def image_embedding(self, images):
        """z_img = sqrt(D) I_e(x) (n, D) of images (n, 1, 28, 28), uint8 or [0, 1] (I_e is a unit vector)."""
        return (math.sqrt(self.D) * self.clip.encode_image(images)).astype(np.float32)

    def prepare_batch(self, images, labels):
        """Images in [-1, 1], their captions' ids (words dropped at random, held-out pairs left out) and
        their embeddings z_img (B, D) from the frozen CLIP."""
        if self.clip.dataset != self.dataset:
            raise ValueError(f"--set clip={self.config.clip}: a CLIP of {self.clip.dataset}, but unclip trains on "
                             f"{self.dataset}; train one with `python -m tinygen train clip --dataset {self.dataset}`")
        x, _ = super().prepare_batch(images, labels)
        holdout = text.HOLDOUT[self.dataset] if self.config.holdout else ()
        ids = self.caption_ids(text.captions(images, labels, self.dataset, rng=self.rng, holdout=holdout))
        return x, ids, self.image_embedding(images)

    # ------------------------------------------------------------------ the prior
    def prior_x0(self, z_t, t, ids):
        """x0_theta(z_t, t, y) (B, D) as a Tensor: z_t (B, D), t (B,), caption ids (B, L)."""
        tokens, mask, z_text = self.encode_captions(ids)
        return self.prior(Tensor(np.asarray(z_t, np.float32)), t, tokens, mask, Tensor(z_text))

    def prior_loss(self, z_img, ids):
        z_t, t, _ = self.prior_diffusion.diffuse(z_img, self.rng)
        ids = drop_condition(ids, self.null_ids(len(ids)), self.config.p_uncond_prior, self.rng)   # "" at p
        # L_prior = |z_img - x0_theta(z_t, t, y)|^2
        return F.mse_loss(self.prior_x0(z_t, t, ids), Tensor(z_img))

    @inference
    def prior_sample(self, prompts, batch_size=500):
        """z_img (n, D) for n prompts: prior_candidates drawn by the prior (DDIM, prior_steps, guidance
        prior_guidance), each renormalised to norm sqrt(D); the one nearest z_text kept."""
        c, n = self.config, len(prompts)
        k, ids = c.prior_candidates, self.caption_ids(prompts)
        drawn = np.repeat(ids, k, axis=0)                              # (n k, L): each caption k times
        eps_fn = self.prior_diffusion.eps_fn_from_x0(lambda z_t, t, y: self.prior_x0(z_t, t, y).numpy())
        z = []
        for i in range(0, len(drawn), batch_size):
            part = drawn[i:i + batch_size]
            guided = classifier_free(eps_fn, self.null_ids(len(part)), c.prior_guidance)
            z.append(self.prior_diffusion.ddim_sample(guided, (len(part), self.D), self.rng, c.prior_steps, cond=part))
        z = (math.sqrt(self.D) * unit(np.concatenate(z))).astype(np.float32).reshape(n, k, self.D)
        # keep argmax_i z_i . z_text
        best = np.einsum("nkd,nd->nk", z, self.text_embedding(prompts)).argmax(axis=1)   # (n,)
        return z[np.arange(n), best]

    # ------------------------------------------------------------------ the decoder and the loss
    def null_condition(self, n):
        """The zero vector: the decoder's null condition, "no image embedding"."""
        return np.zeros((n, self.D), np.float32)

    def loss(self, batch):
        x0, ids, z_img = batch
        decoder = self.diffusion_loss(x0.numpy(), z_img)              # z_img -> 0 with p_uncond
        prior = self.prior_loss(z_img, ids)
        # L = L_prior + L_decoder
        return prior + decoder, {"prior": prior.item(), "decoder": decoder.item()}

    def training_step(self, batch, optimizers):
        loss, logs = self.loss(batch)
        optimizer = optimizers["main"]
        optimizer.zero_grad()
        loss.backward()
        if self.config.grad_clip:  # each network alone, so that a spike in one never shrinks the other's step
            for name, part in (("prior", self.prior), ("decoder", self.net)):
                logs[f"grad_norm_{name}"] = float(optim.clip_grad_norm_(part.parameters(), self.config.grad_clip))
        optimizer.step()
        self.ema.update()
        return {"loss": loss.item(), **logs}

    @inference
    def decode(self, z, guidance=None, steps=None, batch_size=100):
        """Images (n, 1, 28, 28) in [0, 1] from embeddings z (n, D) at norm sqrt(D): guidance scale s (default
        config.guidance), DDIM steps (None: all T ancestral)."""
        s = self.config.guidance if guidance is None else guidance
        return np.concatenate([self.to_images(self.sample_latents(len(z[i:i + batch_size]), guidance=s, steps=steps,
                                                                  cond=z[i:i + batch_size]))
                               for i in range(0, len(z), batch_size)])

    # ------------------------------------------------------------------ text -> image, variations, interpolation
    @inference
    def sample(self, n, prompt="", guidance=None, steps=None, decode_from=None, batch_size=100):
        """n images (n, 1, 28, 28) in [0, 1] for `prompt` (one string, or n): prior -> decoder, or with
        decode_from="text" (default config.decode_from) the decoder given z_text itself."""
        prompts = text.check_prompts(prompt, n, self.tokenizer)
        source = self.config.decode_from if decode_from is None else decode_from
        if source not in DECODE_FROM:
            raise ValueError(f"decode_from={source!r}: valid: {', '.join(DECODE_FROM)}")
        z = self.text_embedding(prompts) if source == "text" else self.prior_sample(prompts)
        return self.decode(z, guidance, steps, batch_size)

    @inference
    def vary(self, images, n=8, guidance=None, steps=None):
        """n variations of each of the images (B, 1, 28, 28) (uint8 or [0, 1]): its z_img decoded n times,
        (B n, 1, 28, 28) in [0, 1], each image's n together."""
        return self.decode(np.repeat(self.image_embedding(images), n, axis=0), guidance, steps)

    @inference
    def interpolate(self, images_a, images_b, frames=8, guidance=None, steps=None):
        """(B, frames, 1, 28, 28) in [0, 1]: for each pair, slerp(z_a, z_b, w) at `frames` w from 0 to 1, each
        decoded by DDIM (eta 0; steps default config.sample_steps) from the same x_T, so that the row changes
        with z alone."""
        z_a, z_b = self.image_embedding(images_a), self.image_embedding(images_b)   # (B, D) each
        steps = self.config.sample_steps if steps is None else steps
        start = self.rng.bit_generator.state
        rows = []
        for w in np.linspace(0.0, 1.0, frames):
            self.rng.bit_generator.state = start                      # the same noise for every frame
            rows.append(self.decode(slerp(z_a, z_b, w), guidance, steps))
        return np.stack(rows, axis=1)

    # ------------------------------------------------------------------ pictures
    def prompt_grid(self, per_prompt=8, steps=None):
        """A row per prompt of text.grid_prompts ("a thin digit zero", "a thick digit zero", ...): the images
        (rows per_prompt, 1, 28, 28) and the prompts."""
        prompts = text.grid_prompts(self.dataset)
        return self.sample(len(prompts) * per_prompt, prompt=list(np.repeat(prompts, per_prompt)), steps=steps), prompts

    def visualize(self, images, labels, path):
        """The prompt grid, 8 samples per prompt (EMA weights, sample_steps DDIM steps)."""
        with self.ema.average_parameters(self):
            grid, _ = self.prompt_grid(8, steps=self.config.sample_steps)
        save_image_grid(grid, path, nrow=8, scale=2)

    def save_pictures(self, images, path_grid, path_variations, path_interpolation, path_text, steps=50):
        """The four pictures: the prompt grid; per test image (8) a row: the image and 7 variations; per pair
        of them (4) a row: image a, 8 decoded slerps, image b; per class prompt ("a digit zero", ...) a row:
        4 images through the prior, then 4 decoded from the text embedding."""
        save_image_grid(self.prompt_grid(8, steps)[0], path_grid, nrow=8, scale=2)
        x = data.to_float(np.asarray(images)[:8])
        varied = self.vary(x, 7, steps=steps).reshape(8, 7, 1, 28, 28)
        save_image_grid(np.concatenate([x[:, None], varied], axis=1).reshape(-1, 1, 28, 28), path_variations,
                        nrow=8, scale=2)
        a, b = x[0::2], x[1::2]
        rows = np.concatenate([a[:, None], self.interpolate(a, b, 8, steps=steps), b[:, None]], axis=1)
        save_image_grid(rows.reshape(-1, 1, 28, 28), path_interpolation, nrow=10, scale=2)
        asked = list(np.repeat([text.fill_template("a {label}", p) for p in text.label_phrases(self.dataset)], 4))
        both = [self.sample(len(asked), asked, steps=steps, decode_from=s).reshape(-1, 4, 1, 28, 28)
                for s in DECODE_FROM]
        save_image_grid(np.concatenate(both, axis=1).reshape(-1, 1, 28, 28), path_text, nrow=8, scale=2)
