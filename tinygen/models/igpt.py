"""Image GPT (Chen, Radford, Child, Wu, Jun, Luan & Sutskever 2020, "Generative Pretraining from Pixels").

A GPT on pixels: shrink the image, map every pixel to one of K palette colours found by k-means,
read the palette indices in raster order as a sequence of N tokens, and train a transformer with
causal self-attention to predict each token from the ones before it; the likelihood is exact:

    x (28 x 28) -> average pool -> 14 x 14 gray levels -> nearest palette entry -> tokens t_1 .. t_N
    palette c_1 .. c_K = k-means of the training pixels' gray levels          (K = 16, N = 196)
    p(t) = prod_i p(t_i | t_<i)                                               (raster order)
    inputs  [SOS, t_1, ..., t_{N-1}],  targets [t_1, ..., t_N]
    h_0 = E_tok[inputs] + E_pos,  h_L = Transformer_causal(h_0),  logits = LN(h_L) W_head
    L_AR = E_t[-sum_i log p(t_i | t_<i)],   bits per pixel = L_AR / (N ln 2)

Causal attention (nn.Transformer(causal=True)) lets position i attend to positions <= i only, and
position i holds t_{i-1}: logit i sees t_<i and nothing else (tests check that its gradient with
respect to every later input is exactly zero). The BERT objective (objective="bert") instead
replaces a random 15% of the tokens by a [MASK] token and predicts them from everything else, with
attention in both directions:

    M ~ Bernoulli(0.15)^N,   L_BERT = E_t[-sum_{i in M} log p(t_i | t_{not M})]

(not a likelihood of the image; its sampler below fills the tokens in raster order, each from
the known ones before it and [MASK] after it, which is far from what it was trained on).

The paper's point: the features a generative model learns are good representations, best in the
MIDDLE of the network (the last layers specialise in predicting pixels). The linear probe: freeze
the model, average a middle block's outputs over the positions, fit a softmax regression on train-
split features, report test accuracy; beside it, the same probe on the raw palette pixels.

    f(x) = (1/N) sum_i h_l(x)_i,  l = depth // 2   (0-based block index)
    p(y | x) = softmax(W (f(x) - mu) / sigma + b),  W fitted on train-split features (L2 1e-4)

Fine-tuning (the paper's section 3.4) trains every weight instead, plus a new linear head on the LAST
block's normalised outputs averaged over the positions, on the labels; the generative loss is kept
beside the classifier's (the paper found the sum best):

    p(y | x) = softmax(W_clf (1/N) sum_i LN(h_L(x))_i + b),   L = -log p(y | x) + L_AR

Sampling draws one token at a time (N passes), with the keys and values of earlier positions kept
(a KV cache): each pass runs the transformer on the newest token only. Images come back decoded
(palette gray levels) and upsampled to 28 x 28 by repeating each pixel 2 x 2.

Recipe (Config): palette 16, dim 128, 4 blocks of 4 heads, MLP ratio 4, AdamW lr 1e-3 (weight
decay 0.01) with a cosine decay, batch 32, grad clip 1; the palette is fitted on the first training
batch (as VQ-VAE's codebook) from evenly spaced initial levels and kept as a buffer in checkpoints;
2 epochs (3,750 steps). Figures: docs/models/igpt.md.

    python -m tinygen train igpt --no-progress
    python -m tinygen evaluate igpt --checkpoint runs/igpt-mnist/last.npz --n 1000
    python -m tinygen train igpt --set objective=bert --out runs/igpt-bert
    python -m tinygen.evaluate fine-tune --checkpoint runs/igpt-mnist/last.npz --steps 1000 --scratch
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from .. import data, nn, optim
from ..io import save_image_grid
from .base import Config, Model, inference, optimizer_step, softmax_regression

OBJECTIVES = ("ar", "bert")


@dataclass
class ImageGPTConfig(Config):
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    objective: str = "ar"       # "ar": next-pixel prediction (causal); "bert": masked tokens (bidirectional)
    mask_prob: float = 0.15     # bert: the share of tokens replaced by [MASK]
    side: int = 14              # 28 x 28 -> side x side by average pooling (side must divide 28)
    palette_size: int = 16      # K gray levels, found by k-means
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    probe_layer: int = -1       # the block whose outputs the linear probe reads; -1: depth // 2
    probe_train: int = 60000    # train-split images the probe is fitted on (evaluate_representation)
    probe_steps: int = 300      # full-batch Adam steps of the softmax regression
    monitor_test: int = 2000    # evaluate() after each epoch: this many test images ...
    monitor_train: int = 3000   # ... and this many train images for the probe (the CLI's evaluate: all)
    quick_steps: int = 50


# ---------------------------------------------------------------------- pixels <-> tokens
def pool(images, side):
    """uint8 or [0, 1] images (B, 1, 28, 28) -> gray levels (B, side, side) in [0, 1], float32:
    the mean of each (28 / side) x (28 / side) block."""
    x = data.to_float(images) if np.asarray(images).dtype == np.uint8 else np.asarray(images, np.float32)
    B, C, H, W = x.shape
    if C != 1 or H % side or W % side:
        raise ValueError(f"ImageGPT: images (B, 1, H, W) with side {side} dividing H and W expected, got {x.shape}")
    f = H // side
    return x.reshape(B, side, f, side, f).mean(axis=(2, 4))           # (B, side, side)


# ---------------------------------------------------------------------- the model
class ImageGPT(Model):
    """Image GPT (Chen et al. 2020): k-means palette, causal transformer on 14x14 pixels; linear probe."""
    Config = ImageGPTConfig
    tiny_config = {"dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "palette_size": 4, "side": 7,
                   "batch_size": 8, "probe_train": 40, "probe_steps": 20, "monitor_test": 20, "monitor_train": 40}

    @classmethod
    def check_config(cls, c):
        # the probe reads probe_layer after each epoch: out of range, it fails after an epoch
        if not -1 <= c.probe_layer < c.depth:
            raise ValueError(f"--set probe_layer={c.probe_layer}: the probed block must lie in 0..depth-1 = "
                             f"0..{c.depth - 1} (or -1 for depth // 2)")

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.objective not in OBJECTIVES:
            raise ValueError(f"ImageGPT: unknown objective {c.objective!r}; valid: {', '.join(OBJECTIVES)}")
        if 28 % c.side:
            raise ValueError(f"ImageGPT: side {c.side} does not divide the image size 28")
        if c.palette_size < 2:
            raise ValueError(f"ImageGPT: palette_size must be at least 2, got {c.palette_size}")
        K = c.palette_size
        self.seq_len = c.side * c.side                                # N = 196
        self.sos, self.mask_token = K, K + 1                          # the two extra tokens
        self.tok_embed = nn.Embedding(K + 2, c.dim)                   # E_tok: K colours, [SOS], [MASK]
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.pos_embed = nn.LearnedPositionEmbedding(self.seq_len, c.dim)   # E_pos
        self.gpt = nn.Transformer(c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                  causal=c.objective == "ar")
        self.head = nn.Linear(c.dim, K)                               # W_head: logits over the palette
        # the palette: evenly spaced until fitted; buffers, so a checkpoint carries them
        self.register_buffer("palette", np.linspace(0, 1, K, dtype=np.float32))   # (K,)
        self.register_buffer("palette_fitted", np.zeros(1, np.float32))

    def configure_optimizers(self):
        return {"main": optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)}

    @property
    def probe_layer(self):
        return self.config.depth // 2 if self.config.probe_layer == -1 else self.config.probe_layer

    # ------------------------------------------------------------------ the palette
    def fit_palette(self, images, iters=20):
        """k-means of the pooled gray levels of `images` (uint8 (B, 1, 28, 28)) into K levels, started
        from evenly spaced levels (random pixels would start most centroids on the black background)."""
        K = self.config.palette_size
        x = pool(images, self.config.side).reshape(-1, 1)             # (B N, 1)
        centroids, _ = nn.kmeans(x, K, iters=iters, start=np.linspace(0, 1, K, dtype=np.float32)[:, None])
        self.palette = np.sort(centroids[:, 0]).astype(np.float32)    # (K,) dark to light
        self.palette_fitted = np.ones(1, np.float32)

    def tokenize(self, images):
        """images (B, 1, 28, 28) -> palette indices (B, N) int64: t_i = argmin_k |x_i - c_k|."""
        x = pool(images, self.config.side).reshape(len(images), -1)   # (B, N)
        return np.abs(x[:, :, None] - self.palette[None, None]).argmin(axis=2)   # (B, N)

    def decode(self, tokens):
        """palette indices (B, N) -> images (B, 1, 28, 28) in [0, 1]: c_{t_i}, each pixel repeated to 28 x 28."""
        s, f = self.config.side, 28 // self.config.side
        x = self.palette[np.asarray(tokens)].reshape(-1, 1, s, s)      # (B, 1, side, side)
        return np.clip(np.repeat(np.repeat(x, f, axis=2), f, axis=3), 0, 1).astype(np.float32)

    def prepare_batch(self, images, labels):
        """Fits the palette on the first training batch; then the batch as palette tokens (B, N)."""
        if self.training and not self.palette_fitted[0]:
            self.fit_palette(images)
        return self.tokenize(images), labels

    # ------------------------------------------------------------------ the network
    def inputs_of(self, tokens):
        """The input sequence of the targets `tokens` (B, N): [SOS, t_1 .. t_{N-1}] (ar), t itself (bert)."""
        if self.config.objective == "bert":
            return tokens
        return np.concatenate([np.full((len(tokens), 1), self.sos), tokens[:, :-1]], axis=1)   # (B, N)

    def embed(self, inputs):
        """token ids (B, T) -> E_tok[inputs] (B, T, D) (positions are added in `forward`)."""
        return self.tok_embed(np.asarray(inputs))

    def forward(self, h, return_layers=()):
        """token embeddings h (B, T, D) -> logits (B, T, K) [, the outputs of blocks return_layers]."""
        y = self.gpt(self.pos_embed(h), return_layers=return_layers)   # (B, T, D)
        if return_layers:
            return self.head(y[0]), y[1]
        return self.head(y)                                           # (B, T, K)

    def loss(self, batch):
        tokens, _ = batch                                             # (B, N) palette indices
        tokens = np.asarray(tokens)
        K = self.config.palette_size
        if self.config.objective == "ar":
            logits = self(self.embed(self.inputs_of(tokens)))         # (B, N, K)
            # L_AR = -(1 / B N) sum_b sum_i log p(t_i | t_<i)    (nats per token)
            loss = F.cross_entropy(logits.reshape(-1, K), tokens.reshape(-1))
            return loss, {"bits_per_pixel": loss.item() / np.log(2)}
        masked = self.rng.random(tokens.shape) < self.config.mask_prob    # (B, N): M
        masked[:, 0] |= ~masked.any(axis=1)                           # at least one masked token per image
        logits = self(self.embed(np.where(masked, self.mask_token, tokens)))   # (B, N, K)
        # L_BERT = -mean_{i in M} log p(t_i | t_{not M})    (unmasked targets ignored)
        loss = F.cross_entropy(logits.reshape(-1, K), np.where(masked, tokens, -100).reshape(-1))
        return loss, {"masked_bits": loss.item() / np.log(2)}

    # ------------------------------------------------------------------ evaluation
    @inference
    def _scan(self, images, batch_size=250):
        """One pass over images (B, 1, 28, 28) -> (bits per pixel of each image (B,) (ar; NaN for bert, whose
        loss is not a likelihood), probe features (B, depth, D): every block's outputs averaged over the
        positions)."""
        bits, feats, K = [], [], self.config.palette_size
        for i in range(0, len(images), batch_size):
            tokens = self.tokenize(images[i:i + batch_size])          # (b, N)
            logits, hidden = self(self.embed(self.inputs_of(tokens)), return_layers=tuple(range(self.config.depth)))
            # f_l(x) = (1/N) sum_i h_l(x)_i   for every block l
            feats.append(np.stack([h.numpy().mean(axis=1) for h in hidden], axis=1))   # (b, depth, D)
            if self.config.objective == "ar":
                # bits(x) = -sum_i log2 p(t_i | t_<i) / N
                nats = F.cross_entropy(logits.reshape(-1, K), tokens.reshape(-1), reduction="none").numpy()
                bits.append(nats.reshape(len(tokens), -1).mean(axis=1) / np.log(2))
            else:
                bits.append(np.full(len(tokens), np.nan))
        return np.concatenate(bits), np.concatenate(feats)

    def evaluate_nll(self, images, n=None):
        """Test bits per pixel of the palette image (exact: -log2 p(t) / N), on images[:n] (ar only)."""
        if self.config.objective != "ar":
            return {}
        bits, _ = self._scan(np.asarray(images)[:n])
        return {"bits_per_pixel": float(bits.mean())}

    def evaluate_representation(self, test_images, test_labels, n_train=None, n_test=None, blocks=None):
        """The linear probe: softmax regression on frozen features (a block's outputs averaged over the
        positions), fitted on n_train train-split images (a fixed random subset; default config.probe_train),
        accuracy on the test images (test_images[:n_test]). probe_acc reads block probe_layer (0-based);
        probe_acc_block{l} each of `blocks` (default: all); raw_pixel_probe_acc the same regression on the
        raw palette pixels (the decoded gray levels, N numbers per image)."""
        n_train = self.config.probe_train if n_train is None else n_train
        blocks = range(self.config.depth) if blocks is None else blocks
        train_x, train_y = data.load_dataset(self.dataset, "train")
        pick = np.sort(np.random.default_rng(0).permutation(len(train_x))[:n_train])
        train_x, train_y = train_x[pick], train_y[pick]
        test_x, test_y = np.asarray(test_images)[:n_test], np.asarray(test_labels)[:n_test]
        _, f_train = self._scan(train_x)                              # (n_train, depth, D)
        bits, f_test = self._scan(test_x)
        probe = lambda l: softmax_regression(f_train[:, l], train_y, f_test[:, l], test_y, self.config.probe_steps)
        raw = lambda x: self.palette[self.tokenize(x)]                # (B, N) palette gray levels
        out = {"probe_acc": probe(self.probe_layer), "probe_layer": self.probe_layer,
               **{f"probe_acc_block{l}": probe(l) for l in blocks if l != self.probe_layer},
               "raw_pixel_probe_acc": softmax_regression(raw(train_x), train_y, raw(test_x), test_y,
                                                         self.config.probe_steps),
               "probe_train_images": int(n_train)}
        if self.config.objective == "ar":
            out["bits_per_pixel"] = float(bits.mean())
        return out

    def evaluate(self, images, labels):
        """After each epoch: the probe and bits per pixel on the first monitor_test test images, the probe
        fitted on monitor_train train images (the CLI's evaluate takes the whole test split)."""
        c = self.config
        r = self.evaluate_representation(images, labels, n_train=c.monitor_train, n_test=c.monitor_test, blocks=())
        out = {"monitor_probe_acc": r["probe_acc"], "monitor_raw_pixel_probe_acc": r["raw_pixel_probe_acc"]}
        if "bits_per_pixel" in r:
            out["monitor_bits_per_pixel"] = r["bits_per_pixel"]
        return out

    # ------------------------------------------------------------------ fine-tuning
    def classifier_logits(self, tokens, head):
        """Class logits and the generative loss of tokens (B, N): the last block's normalised outputs averaged
        over the positions, through a linear head; L_GEN as in `loss` (ar: every next token; bert: as
        trained, on a fresh mask). Returns (logits (B, 10), L_GEN), Tensors."""
        K = self.config.palette_size
        if self.config.objective == "ar":
            inputs, targets = self.inputs_of(tokens), tokens
        else:
            masked = self.rng.random(tokens.shape) < self.config.mask_prob
            masked[:, 0] |= ~masked.any(axis=1)
            inputs, targets = np.where(masked, self.mask_token, tokens), np.where(masked, tokens, -100)
        y = self.gpt(self.pos_embed(self.embed(inputs)))                  # (B, N, D): LN(h_L)
        gen = F.cross_entropy(self.head(y).reshape(-1, K), targets.reshape(-1))
        # f(x) = (1/N) sum_i LN(h_L(x))_i,  logits = W_clf f(x) + b
        return head(y.mean(axis=1)), gen

    def fine_tune(self, images, labels, steps, batch_size=32, lr=3e-4, joint=True, seed=0):
        """The paper's fine-tuning (section 3.4): every weight of the model and a new linear head on the last
        block's outputs averaged over the positions, trained on labelled images (uint8 (B, 1, 28, 28), labels
        (B,)) for `steps` Adam steps on random batches (gradient norm clipped to the recipe's grad_clip):

            p(y | x) = softmax(W_clf f(x) + b),   L_CLF = -log p(y | x)
            L = L_CLF + L_GEN  (joint=True: what the paper found best)   or   L = L_CLF

        The model's weights change in place; returns the head (nn.Linear(dim, 10)) for `fine_tuned_predict`."""
        c = self.config
        nn.manual_seed(seed)
        head = nn.Linear(c.dim, data.N_CLASSES)
        tokens, labels = self.tokenize(images), np.asarray(labels)       # (M, N), (M,)
        opt = optim.Adam(self.parameters() + head.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        self.train()
        for _ in range(steps):
            pick = rng.integers(0, len(tokens), batch_size)
            logits, gen = self.classifier_logits(tokens[pick], head)
            loss = F.cross_entropy(logits, labels[pick]) + (gen if joint else 0.0)
            optimizer_step(loss, opt, c.grad_clip)
        self.eval()
        return head

    @inference
    def fine_tuned_predict(self, images, head, batch_size=250):
        """argmax_y p(y | x) of a fine-tuned model and its head: labels (B,) of images (B, 1, 28, 28)."""
        tokens = self.tokenize(images)
        return np.concatenate([self.classifier_logits(tokens[i:i + batch_size], head)[0].numpy().argmax(axis=1)
                               for i in range(0, len(tokens), batch_size)])

    # ------------------------------------------------------------------ sampling
    def _draw(self, logits):
        """One token per row from softmax(logits) (n, K), by the Gumbel-max trick: argmax(l + g)."""
        g = -np.log(-np.log(self.rng.random(logits.shape) + 1e-20) + 1e-20)
        return (logits + g).argmax(axis=1)

    def _step(self, tok, t, cache):
        """Run position t alone: its input token tok (n,) -> logits (n, K), attending to positions 0 .. t
        through the KV cache (nn.Transformer.forward_cached), which keeps their keys and values."""
        h = self.pos_embed.weight[t] + self.embed(tok[:, None])       # (n, 1, D)
        return self.head(self.gpt.forward_cached(h, cache)).numpy()[:, 0]   # (n, K)

    def _generate(self, tokens, start):
        """Sample tokens[:, start:] (n, N) in place, raster order, given tokens[:, :start]."""
        n, N = tokens.shape
        if self.config.objective == "bert":
            for t in range(start, N):                                 # known before t, [MASK] from t on
                x = np.where(np.arange(N) < t, tokens, self.mask_token)
                tokens[:, t] = self._draw(self(self.embed(x)).numpy()[:, t])
            return tokens
        cache = self.gpt.new_cache(n, N)
        # one pass per position: input t is t_{t-1} ([SOS] at 0), logit t predicts t_t
        for t in range(N):
            logits = self._step(np.full(n, self.sos) if t == 0 else tokens[:, t - 1], t, cache)
            if t >= start:
                tokens[:, t] = self._draw(logits)
        return tokens

    @inference
    def sample(self, n):
        """n images drawn token by token, decoded and upsampled: (n, 1, 28, 28) in [0, 1], float32."""
        return self.decode(self._generate(np.zeros((n, self.seq_len), np.int64), 0))

    @inference
    def complete(self, images, rows_known=None):
        """Keep the top rows_known rows (of side; default half) of the palette image of `images` and sample
        the rest: (B, 1, 28, 28) in [0, 1]."""
        s = self.config.side
        rows_known = s // 2 if rows_known is None else rows_known
        if not 0 <= rows_known <= s:
            raise ValueError(f"complete: rows_known must lie in 0..{s}, got {rows_known}")
        return self.decode(self._generate(self.tokenize(images), rows_known * s))

    def covered(self, images, rows_known=None):
        """The palette images with the rows from rows_known down painted mid-gray (what complete sees)."""
        s = self.config.side
        rows_known = s // 2 if rows_known is None else rows_known
        x = self.decode(self.tokenize(images))
        x[:, :, rows_known * 28 // s:] = 0.5
        return x

    def visualize(self, images, labels, path):
        """16 samples; then 8 test images (palette), half-covered, and their completions."""
        x = images[:8]
        grid = np.concatenate([self.sample(16), self.decode(self.tokenize(x)), self.covered(x), self.complete(x)])
        save_image_grid(grid, path, nrow=8, scale=2)

    def save_pictures(self, images, path_samples, path_completions, n_samples=32, n_completions=4):
        """The two pictures: n_samples samples; and per test image a row: original (palette), half-covered,
        n_completions completions of the lower half."""
        save_image_grid(self.sample(n_samples), path_samples, nrow=8, scale=2)
        x = np.asarray(images)
        done = self.complete(np.repeat(x, n_completions, axis=0)).reshape(len(x), n_completions, 1, 28, 28)
        rows = np.concatenate([self.decode(self.tokenize(x))[:, None], self.covered(x)[:, None], done], axis=1)
        save_image_grid(rows.reshape(-1, 1, 28, 28), path_completions, nrow=2 + n_completions, scale=2)
