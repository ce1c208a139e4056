"""DALL·E (Ramesh, Pavlov, Goh, Gray, Voss, Radford, Chen & Sutskever 2021, "Zero-Shot Text-to-Image
Generation").

Two stages. Stage 1 is the categorical dVAE of dvae.py: it turns an image into a 7 x 7 grid of tokens
from a codebook of K, and back. Stage 2 models text and image tokens together: one causal transformer
reads the caption's word tokens followed by the image's 49 tokens in raster order, and learns to
predict every token from the ones before it. Generating an image is then continuing a caption:

    s = [c_1 .. c_L, z_1 .. z_49]          caption ids (padded to L), then the image tokens
    p(s) = prod_i p(s_i | s_<i)             one causal transformer over both
    h_0 = [E_text[c], E_image[z]] + E_pos,  h = Transformer_causal(h_0)
    logits_text = h W_text (text positions),  logits_image = h W_image (the positions before each z_j)
    L = 1/8 CE(text) + 7/8 CE(image)        (the paper's weights: the image is what matters)

The caption's padding: each padding position has its own token (the paper's "special padding token for
each of the text positions"), so the model knows how far the caption is, and the padding after <end>
is predicted trivially.

Sampling: the caption is run through the transformer in one call, then the image tokens are drawn one
at a time, each step running only the newest position over the keys and values kept in a KV cache
(nn.Transformer.forward_cached, the one Image GPT samples with). Each token is drawn from the top_k
most likely codes at a temperature; the tokens are decoded by the dVAE's decoder.

CLIP re-ranking (the lecture's "generate many, keep the best"): draw N candidates per prompt, decode
them, score each against its prompt with a trained CLIP (clip.py: cosine of the image and text
embeddings) and keep the best:

    x* = argmax_{x in {x_1 .. x_N}} cos(I_e(x), T_e(prompt)),   x_i ~ p(x | prompt)

Completion: prime with the caption and the top rows of an image's tokens, draw the rest.

The captions come from text.captions with words dropped at random, and the pairs of text.HOLDOUT never
appear together (an image of a held-out pair is captioned without that word), so the prompt benchmark
can ask whether the model composes words it never saw together.

Recipe (Config): the dVAE of `python -m tinygen train dvae` (K = 64, 7 x 7), named on the command line;
a transformer of dim 128, 4 blocks of 4 heads, MLP ratio 4; AdamW (lr 1e-3, weight decay 0.01) with a
cosine decay and grad clip 1, batch 64, 8 epochs; sampling at temperature 1 from the top 16 of the 64
codes (the top 32, the reference implementation's half, gives more varied images that follow the words
less often: docs/models/dalle.md).

    python -m tinygen train dvae                                          (stage 1)
    python -m tinygen train dalle --set dvae=runs/dvae-mnist/last.npz     (stage 2)
    python -m tinygen sample dalle --checkpoint runs/dalle-mnist/last.npz --prompt "a thick digit seven"
    python -m tinygen.evaluate prompts --checkpoint runs/dalle-mnist/last.npz --candidates 1 4 16 64 \\
        --clip runs/clip-mnist/last.npz                                   (the prompt benchmark, re-ranked)
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from .. import data, nn, optim, text
from ..io import save_image_grid
from . import frozen_stage
from .base import Config, Model, inference

@dataclass
class DALLEConfig(Config):
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    dvae: str = ""               # the stage-1 checkpoint (python -m tinygen train dvae); required
    dvae_config: dict = None     # the stage's Config, recorded when it is loaded (its weights are in ours)
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_loss_weight: float = 0.125   # 1/8 text, 7/8 image (the paper)
    temperature: float = 1.0     # sampling: logits / temperature
    top_k: int = 16              # sampling: only the top_k most likely codes (0: all K)
    holdout: bool = True         # captions without the pairs of text.HOLDOUT
    sample_batch: int = 1000     # sequences sampled at once (the KV cache's memory grows with it)
    quick_steps: int = 200


class DALLE(Model):
    """DALL·E: a causal transformer over caption tokens then dVAE image tokens; CLIP re-ranking."""
    Config = DALLEConfig
    sample_options = ("prompt",)
    sample_settings = ("top_k", "temperature")  # --set at sampling (and --top-k, --temperature of the benchmark)
    stages = {"dvae": "dvae"}     # config field -> the model its checkpoint holds (tinygen.models.load_stage)
    tiny_config = {"dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "batch_size": 8, "top_k": 0}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.dvae = frozen_stage(self, "dvae", "dvae")                # stage 1, frozen; it travels in our checkpoints
        self.tokenizer = text.Tokenizer()
        self.L = self.tokenizer.max_length                             # caption positions
        self.K = self.dvae.config.num_tokens                           # image codes
        self.N = self.dvae.grid * self.dvae.grid                       # image positions (49)
        self.text_vocab = self.tokenizer.vocab_size + self.L           # the words, then a pad token per position
        self.text_embed = nn.Embedding(self.text_vocab, c.dim)         # E_text
        self.image_embed = nn.Embedding(self.K, c.dim)                 # E_image
        for e in (self.text_embed, self.image_embed):
            nn.init.normal_(e.weight, std=0.02)
        self.pos_embed = nn.LearnedPositionEmbedding(self.L + self.N, c.dim)   # E_pos over both
        self.transformer = nn.Transformer(c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, causal=True)
        self.text_head = nn.Linear(c.dim, self.text_vocab)             # W_text
        self.image_head = nn.Linear(c.dim, self.K)                     # W_image

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]     # the dVAE stays as trained
        return {"main": optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)}

    # ------------------------------------------------------------------ data: captions and tokens
    def caption_ids(self, prompts):
        """Texts -> caption ids (B, L): <start> words <end>, then position i's own padding token V + i."""
        ids = self.tokenizer.batch(prompts, self.L)                   # (B, L), <pad> = 0 after <end>
        pad_tokens = self.tokenizer.vocab_size + np.arange(self.L)    # (L,)
        return np.where(ids == self.tokenizer.pad_id, pad_tokens, ids)

    def prepare_batch(self, images, labels):
        """uint8 images and labels -> (caption ids (B, L), image tokens (B, 49)): captions with words dropped
        at random and the held-out pairs left out; tokens from the frozen dVAE."""
        if self.dvae.dataset != self.dataset:
            raise ValueError(f"--set dvae={self.config.dvae}: a dVAE of {self.dvae.dataset}, but dalle trains on "
                             f"{self.dataset}; train one with `python -m tinygen train dvae --dataset {self.dataset}`")
        holdout = text.HOLDOUT[self.dataset] if self.config.holdout else ()
        captions = text.captions(images, labels, self.dataset, rng=self.rng, holdout=holdout)
        return self.caption_ids(captions), self.dvae.encode(images).reshape(len(images), -1)

    # ------------------------------------------------------------------ the transformer and the loss
    def embed(self, ids, tokens):
        """h_0 = [E_text[ids], E_image[tokens]] + E_pos: ids (B, L') and image tokens (B, T) -> (B, L' + T, D)."""
        parts = [self.text_embed(ids)] + ([self.image_embed(tokens)] if tokens.shape[1] else [])
        return self.pos_embed(F.concat(parts, axis=1))

    def loss(self, batch):
        ids, tokens = (np.asarray(b) for b in batch)                   # (B, L), (B, 49)
        L = self.L
        h = self.transformer(self.embed(ids, tokens[:, :-1]))          # (B, L + 48, D): the last token is never input
        text_logits = self.text_head(h[:, :L - 1])                     # (B, L - 1, V + L): predict c_2 .. c_L
        image_logits = self.image_head(h[:, L - 1:])                   # (B, 49, K): predict z_1 .. z_49
        text_ce = F.cross_entropy(text_logits.reshape(-1, self.text_vocab), ids[:, 1:].reshape(-1))
        image_ce = F.cross_entropy(image_logits.reshape(-1, self.K), tokens.reshape(-1))
        # L = w CE(text) + (1 - w) CE(image),  w = 1/8
        w = self.config.text_loss_weight
        loss = w * text_ce + (1 - w) * image_ce
        return loss, {"text_ce": text_ce.item(), "image_ce": image_ce.item()}

    # ------------------------------------------------------------------ sampling
    def _draw(self, logits):
        """One code per row (n, K): logits / temperature, all but the top_k set to -inf, then a draw by the
        Gumbel-max trick, argmax(l + g)."""
        c = self.config
        logits = logits / c.temperature
        if 0 < c.top_k < logits.shape[1]:
            kth = np.partition(logits, -c.top_k, axis=1)[:, -c.top_k][:, None]   # the k-th largest per row
            logits = np.where(logits >= kth, logits, -np.inf)
        g = -np.log(-np.log(self.rng.random(logits.shape) + 1e-20) + 1e-20)
        return (logits + g).argmax(axis=1)

    def _generate(self, ids, tokens, start):
        """Draw image tokens tokens[:, start:] (n, 49) in place, given the caption ids (n, L) and tokens[:, :start]:
        the caption and the known tokens in one pass, then one position per pass over the KV cache."""
        n = len(ids)
        cache = self.transformer.new_cache(n, self.L + self.N)
        h = self.transformer.forward_cached(self.embed(ids, tokens[:, :start]), cache)   # (n, L + start, D)
        for j in range(start, self.N):
            tokens[:, j] = self._draw(self.image_head(h[:, -1]).numpy())   # z_j ~ p(z_j | caption, z_<j)
            if j + 1 < self.N:
                # the new token at its position L + j
                x = self.pos_embed.weight[self.L + j] + self.image_embed(tokens[:, j:j + 1])   # (n, 1, D)
                h = self.transformer.forward_cached(x, cache)
        return tokens

    @inference
    def sample(self, n, prompt="", candidates=1, clip=None):
        """n images (n, 1, 28, 28) in [0, 1] for `prompt` (one string, or n of them). With candidates N > 1,
        N are drawn per image and the one a CLIP model (clip) scores highest against its prompt is kept."""
        prompts = text.check_prompts(prompt, n, self.tokenizer)
        if candidates < 1:
            raise ValueError(f"dalle: candidates must be >= 1, got {candidates}")
        if candidates > 1 and clip is None:
            raise ValueError("dalle: re-ranking candidates needs a CLIP model (--clip PATH)")
        drawn = np.repeat(np.asarray(prompts, dtype=object), candidates)          # (n N,) each prompt N times
        images = np.concatenate([self._sample_batch(list(drawn[i:i + self.config.sample_batch]))
                                 for i in range(0, len(drawn), self.config.sample_batch)])
        if candidates == 1:
            return images
        return images.reshape(n, candidates, 1, 28, 28)[np.arange(n), self.rerank(images, prompts, candidates, clip)]

    def _sample_batch(self, prompts):
        ids = self.caption_ids(prompts)
        tokens = self._generate(ids, np.zeros((len(prompts), self.N), np.int64), 0)
        return self.decode(tokens)

    def decode(self, tokens):
        """Image tokens (n, 49) -> images (n, 1, 28, 28) in [0, 1] (the dVAE's decoder)."""
        g = self.dvae.grid
        return self.dvae.decode(np.asarray(tokens).reshape(-1, g, g))

    @staticmethod
    def rerank(images, prompts, candidates, clip):
        """The index of the best of each prompt's `candidates` images (n,): argmax_i cos(I_e(x_i), T_e(prompt)),
        images (n N, 1, 28, 28) grouped by prompt, prompts (n,)."""
        n = len(prompts)
        unique, which = np.unique(np.asarray(prompts, dtype=object).astype(str), return_inverse=True)
        image_e = clip.encode_image(images).reshape(n, candidates, -1)        # (n, N, d_e)
        text_e = clip.encode_text(list(unique))[which]                         # (n, d_e)
        return np.einsum("nkd,nd->nk", image_e, text_e).argmax(axis=1)       # (n,)

    @inference
    def complete(self, images, prompts, rows_known=3):
        """Keep the caption and the top rows_known rows (of 7) of the images' tokens, draw the rest:
        (B, 1, 28, 28) in [0, 1]."""
        g = self.dvae.grid
        if not 0 <= rows_known <= g:
            raise ValueError(f"dalle.complete: rows_known must lie in 0..{g}, got {rows_known}")
        prompts = text.check_prompts(prompts, len(images), self.tokenizer)
        tokens = self.dvae.encode(images).reshape(len(images), -1)
        return self.decode(self._generate(self.caption_ids(prompts), tokens, rows_known * g))

    # ------------------------------------------------------------------ pictures
    def prompt_grid(self, per_prompt=8):
        """The images of a grid with a row per prompt (text.grid_prompts: "a thin digit zero", "a thick digit
        zero", ...), per_prompt images each; (rows per_prompt, 1, 28, 28) and the prompts, row by row."""
        prompts = text.grid_prompts(self.dataset)
        return self.sample(len(prompts) * per_prompt, prompt=list(np.repeat(prompts, per_prompt))), prompts

    def visualize(self, images, labels, path):
        """A row per prompt ("a thin digit zero", "a thick digit zero", ...), 8 images each."""
        grid, _ = self.prompt_grid(8)
        save_image_grid(grid, path, nrow=8, scale=2)

    def save_pictures(self, images, labels, clip, path_grid, path_rerank, path_completions, candidates=64):
        """The three pictures: the prompt grid; one prompt's `candidates` draws sorted by their CLIP score, the
        8 kept ones framed and the others dimmed; and per test image a row: the image, the part kept (its
        top 3 token rows: 12 pixel rows, the rest grey), 4 completions drawn for its caption."""
        save_image_grid(self.prompt_grid(8)[0], path_grid, nrow=8, scale=2)
        prompt = text.fill_template("a thick {label}", text.label_phrases(self.dataset)[7])
        drawn = self.sample(candidates, prompt=prompt)
        order = np.argsort(-clip.score(drawn, [prompt])[:, 0])        # best first
        shown = drawn[order].copy()
        shown[8:] *= 0.35                                             # the candidates not kept, dimmed
        for frame in (slice(0, 2), slice(26, 28)):                    # a 2-pixel frame round the kept 8
            shown[:8, :, frame, :] = 0.6
            shown[:8, :, :, frame] = 0.6
        save_image_grid(shown, path_rerank, nrow=8, scale=2)
        x, y = np.asarray(images)[:8], np.asarray(labels)[:8]
        prompts = text.captions(x, y, self.dataset)
        done = self.complete(np.repeat(x, 4, axis=0), list(np.repeat(prompts, 4)), rows_known=3)
        kept = data.to_float(x).copy()
        kept[:, :, 12:] = 0.5                                         # 3 token rows = 12 pixel rows kept
        rows = np.concatenate([data.to_float(x)[:, None], kept[:, None], done.reshape(8, 4, 1, 28, 28)], axis=1)
        save_image_grid(rows.reshape(-1, 1, 28, 28), path_completions, nrow=6, scale=2)
