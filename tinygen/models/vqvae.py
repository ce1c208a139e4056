"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu, 2017, "Neural Discrete Representation Learning").

The autoencoder's code is a grid of DISCRETE symbols. The encoder maps a 28x28 image to a 7x7 grid of
D-vectors z_e; each is replaced by its nearest vector of a learned codebook of K entries (tinygen.nn's
VectorQuantizer), so an image becomes 49 integers k in {0, ..., K-1}; the decoder maps the code vectors
back to an image. There is no KL term and no prior during this stage: the prior is fitted AFTER, as an
autoregressive model over the code grid (CodePixelCNN below: pixelcnn.py's gated networks, whose
"pixels" are codes), and new images are decoded from grids it samples.

    k_i = argmin_j ||z_e,i(x) - e_j||^2,   z_q,i = e_{k_i}                 i = 1..49 positions of 7x7
    z_q = z_e + sg(z_q - z_e)             straight-through: the decoder's gradient is copied to z_e
    stage 1:  L = ||x - D(z_q)||^2 / Var(x) + ||sg(z_e) - z_q||^2 + beta ||z_e - sg(z_q)||^2,  beta = 0.25
              (ema=True, the recipe: the codebook term is replaced by running means of the z_e assigned
              to each code, Razavi et al. 2019; k-means initialisation and dead-code restarts on)
    stage 2:  p(k) = prod_i p(k_i | k_<i) (a gated PixelCNN over the 7x7 grid, K-way softmax per code),
              trained on the codes of the frozen encoder: L = -log p(k(x)) nats per grid
    sample:   k ~ p(k) (49 passes), x = D(e_k)

prior_arch=gpt puts Image GPT's network in the PixelCNN's place (CodeGPT below): a causal transformer
over the 49 codes in raster order. This is how Image GPT reaches images larger than its pixel models
can take (Chen et al. 2020): 49 code tokens where a 28x28 image has 784 pixels (196 at Image GPT's 14x14).

Reconstruction is scored as the test MSE per pixel (images in [0, 1]); Var(x) is MNIST's pixel
variance, so the first term starts near 1, as in the reference implementations. The codebook's
perplexity exp(H(code frequencies)) and the number of codes in use say how much of it the data uses.

One `train` runs both stages (as latent_diffusion.py does): the first vq_steps steps train the
autoencoder and codebook, the rest the prior on the frozen codes. One run, one checkpoint, one
`sample` and `evaluate`: the prior is meaningless without its own codebook, and the training loop
already supports a model with two optimisers and a stage counter. encode(x) -> indices (B, 7, 7) and
decode(indices) -> images are the interface later token models (DALL-E) read.

Recipe (Config): 9 epochs of batch 128, 1,500 autoencoder steps then 2,712 prior steps, Adam 1e-3,
K = 128 codes of dimension 32, beta = 0.25. Figures: docs/models/vqvae.md.
Train:    python -m tinygen train vqvae --no-progress
          (--quick: 300 steps of stage 1, reconstructions; add --set vq_steps=200 to reach stage 2 too)
          python -m tinygen train vqvae --set prior_arch=gpt --out runs/vqvae-gpt    (the GPT prior)
Sample:   python -m tinygen sample vqvae --checkpoint runs/vqvae-mnist/last.npz
Evaluate: python -m tinygen evaluate vqvae --checkpoint runs/vqvae-mnist/last.npz
          (reconstruction MSE, perplexity, codes used, prior NLL in bits per grid; FID-judge, coverage)
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn, optim
from ..io import save_image_grid
from .base import Config, Model, inference, optimizer_step
from .pixelcnn import ARCHS, PixelCNNConfig, draw_categorical, fill_raster, network

MNIST_VARIANCE = 0.0949   # Var(x) of MNIST training pixels in [0, 1] (std 0.3081)


@dataclass
class VQVAEConfig(Config):
    epochs: int = 9               # 4,212 steps of batch 128: vq_steps, then 2,712 prior steps
    batch_size: int = 128
    lr: float = 1e-3              # both stages (constant: a cosine over the whole run would starve stage 2)
    vq_steps: int = 1500          # stage 1: autoencoder + codebook; the steps after it train the prior
    width: int = 64               # channels at 7x7 (32 at 14x14)
    num_codes: int = 128          # K
    code_dim: int = 32            # D
    beta: float = 0.25            # commitment weight
    ema: bool = True              # codebook by running means (False: by the codebook loss)
    decay: float = 0.99
    dead_after: int = 100         # steps unused before a code is restarted at a random encoder output
    prior_arch: str = "gated"     # a PixelCNN (pixelcnn.ARCHS) or "gpt" (CodeGPT)
    prior_channels: int = 32      # p, the width of each stack
    prior_blocks: int = 6         # gated 3 x 3 layers after the first
    prior_kernel: int = 5         # the first (mask A) layer's kernel
    prior_embed: int = 32         # embedding of each code index
    prior_head: int = 128
    prior_dim: int = 64           # gpt: the transformer's width, blocks and heads
    prior_depth: int = 5
    prior_heads: int = 4
    quick_steps: int = 300


# ---------------------------------------------------------------------- networks
class Encoder(nn.Module):
    """x (B, 1, 28, 28) -> z_e (B, D, 7, 7)."""

    def __init__(self, width, code_dim):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w // 2, 4, stride=2, padding=1), nn.ReLU(),        # (B, w/2, 14, 14)
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), nn.ReLU(),        # (B, w, 7, 7)
            nn.Conv2d(w, w, 3, padding=1), nn.ResBlock(w), nn.ResBlock(w), nn.ReLU(),
            nn.Conv2d(w, code_dim, 1))                                      # (B, D, 7, 7)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """z_q (B, D, 7, 7) -> x_hat (B, 1, 28, 28) (unbounded; clipped to [0, 1] for pictures)."""

    def __init__(self, width, code_dim):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, w, 3, padding=1), nn.ResBlock(w), nn.ResBlock(w), nn.ReLU(),   # (B, w, 7, 7)
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1), nn.ReLU(),             # (B, w/2, 14, 14)
            nn.ConvTranspose2d(w // 2, 1, 4, stride=2, padding=1))                        # (B, 1, 28, 28)

    def forward(self, z):
        return self.net(z)


# ---------------------------------------------------------------------- priors over code indices
PRIOR_ARCHS = ARCHS + ("gpt",)


class CodePrior(nn.Module):
    """What the two priors share: forward(indices (B, H, W)) -> logits (B, K, H, W), the K-way logits of
    every code given the codes before it in raster order, and from them the exact likelihood

        p(k) = prod_i softmax(l_i(k_<i))_{k_i},   k_i in {0, ..., K-1}
        NLL(k) = -sum_i log softmax(l_i)_{k_i}     nats per grid"""

    def check_indices(self, indices):
        """indices (B, H, W) of integers in 0..K-1, as a NumPy int64 array; a clear error otherwise."""
        idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
        if idx.ndim != 3 or idx.dtype.kind not in "iu" or (idx.size and not 0 <= idx.min() <= idx.max() < self.num_codes):
            raise ValueError(f"{type(self).__name__}: indices must be integers in 0..{self.num_codes - 1} of "
                             f"shape (B, H, W), got dtype {idx.dtype} shape {idx.shape}")
        return idx.astype(np.int64)

    def nll(self, indices):
        """-log p(k) (B,) in nats per grid, exact."""
        # -log p(k) = -sum_i log softmax(l_i)_{k_i}
        return F.cross_entropy(self(indices), np.asarray(indices), reduction="none").sum(axis=(1, 2))


class CodePixelCNN(CodePrior):
    """pixelcnn.py's networks over a grid of K-way indices (the codes of a VQ-VAE, van den Oord et al.
    2017): each index is embedded (an Embedding(K, E), per position, so causality is the masks' alone),
    and the heads output K logits per position.

    c: a PixelCNNConfig (arch and widths; levels is not read). forward(indices (B, H, W)) ->
    logits (B, K, H, W); nll(indices) -> (B,); sample(n, (H, W), rng) -> indices (n, H, W) int64."""

    def __init__(self, c, num_codes, embed_dim=32):
        super().__init__()
        if c.arch not in ARCHS:
            raise ValueError(f"CodePixelCNN: unknown arch {c.arch!r}; valid: {', '.join(ARCHS)}")
        self.num_codes = num_codes
        self.embed = nn.Embedding(num_codes, embed_dim)
        self.net = network(c, num_codes, embed_dim)

    def forward(self, indices):
        e = self.embed(Tensor(self.check_indices(indices)))            # (B, H, W, E)
        return self.net(e.transpose(0, 3, 1, 2))                       # (B, E, H, W) -> (B, K, H, W)

    def sample(self, n, shape, rng):
        """n grids (n, H, W) int64 drawn position by position (uniforms from rng)."""
        def draw(logits):
            return draw_categorical(logits, rng.random((len(logits), 1)))
        return fill_raster(np.zeros((n, *shape), np.int64), 0, self.net.reach,
                           lambda rows: self(rows).numpy(), draw)


class CodeGPT(CodePrior):
    """Image GPT's network (igpt.py: token and learned position embeddings, a causal nn.Transformer, a
    linear head) over the grid read in raster order as N = H W tokens, [SOS] = K before the first:

        l_i = W_head GPT(E_tok[SOS, k_1, .., k_{N-1}] + E_pos)_i       (B, N, K), position i sees k_<i

    The same likelihood as CodePixelCNN (the class above); every code sees all the codes before it, where
    a PixelCNN sees what its masked kernels reach. forward returns the logits in the PixelCNN's layout
    (B, K, H, W); sample draws one token per pass through the KV cache (nn.Transformer.forward_cached)."""

    def __init__(self, num_codes, num_positions, dim, depth, num_heads):
        super().__init__()
        self.num_codes, self.sos, self.num_positions = num_codes, num_codes, num_positions
        self.tok_embed = nn.Embedding(num_codes + 1, dim)               # E_tok: K codes and [SOS]
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.pos_embed = nn.LearnedPositionEmbedding(num_positions, dim)   # E_pos
        self.gpt = nn.Transformer(dim, depth, num_heads, causal=True)
        self.head = nn.Linear(dim, num_codes)                           # W_head

    def forward(self, indices):
        idx = self.check_indices(indices)
        B, H, W = idx.shape
        if H * W != self.num_positions:
            raise ValueError(f"CodeGPT: a grid of {self.num_positions} codes expected, got {H} x {W}")
        k = idx.reshape(B, H * W)                                       # (B, N) raster order
        inputs = np.concatenate([np.full((B, 1), self.sos), k[:, :-1]], axis=1)   # (B, N): [SOS, k_1 .. k_{N-1}]
        logits = self.head(self.gpt(self.pos_embed(self.tok_embed(inputs))))      # (B, N, K)
        return logits.reshape(B, H, W, self.num_codes).transpose(0, 3, 1, 2)      # (B, K, H, W)

    def sample(self, n, shape, rng):
        """n grids (n, H, W) int64 drawn token by token (uniforms from rng): position t runs alone,
        attending to the keys and values of positions 0 .. t-1 kept in the cache."""
        N = self.num_positions
        codes = np.zeros((n, N), np.int64)
        cache = self.gpt.new_cache(n, N)
        prev = np.full(n, self.sos)                                     # the input of position 0
        for t in range(N):
            h = self.pos_embed.weight[t] + self.tok_embed(prev[:, None])            # (n, 1, D)
            logits = self.head(self.gpt.forward_cached(h, cache)).numpy()[:, 0]     # (n, K)
            codes[:, t] = prev = draw_categorical(logits, rng.random((n, 1)))
        return codes.reshape(n, *shape)


# ---------------------------------------------------------------------- the model
class VQVAE(Model):
    """VQ-VAE (van den Oord et al. 2017): a 7x7 grid of K codes, EMA codebook, gated PixelCNN prior."""
    Config = VQVAEConfig
    image_range = "unit"
    tiny_config = {"width": 8, "num_codes": 8, "code_dim": 4, "prior_channels": 4, "prior_blocks": 1,
                   "prior_kernel": 3, "prior_embed": 4, "prior_head": 8, "batch_size": 8, "vq_steps": 1}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.width < 2 or c.width % 4:
            raise ValueError(f"VQVAE: width must be a positive multiple of 4, got {c.width}")
        self.encoder = Encoder(c.width, c.code_dim)
        self.quantizer = nn.VectorQuantizer(c.num_codes, c.code_dim, beta=c.beta, ema=c.ema, decay=c.decay,
                                            dead_after=c.dead_after)
        self.decoder = Decoder(c.width, c.code_dim)
        self.grid = (7, 7)
        if c.prior_arch not in PRIOR_ARCHS:
            raise ValueError(f"VQVAE: unknown prior_arch {c.prior_arch!r}; valid: {', '.join(PRIOR_ARCHS)}")
        if c.prior_arch == "gpt":
            self.prior = CodeGPT(c.num_codes, self.grid[0] * self.grid[1], c.prior_dim, c.prior_depth, c.prior_heads)
        else:
            prior = PixelCNNConfig(arch=c.prior_arch, first_kernel=c.prior_kernel, channels=c.prior_channels,
                                   gated_channels=c.prior_channels, blocks=c.prior_blocks, head_channels=c.prior_head)
            self.prior = CodePixelCNN(prior, c.num_codes, c.prior_embed)
        self.register_buffer("steps_done", np.zeros(1, np.float32))     # training steps so far (both stages)

    def configure_optimizers(self):
        vq = self.encoder.parameters() + self.decoder.parameters() + self.quantizer.parameters()
        return {"vq": optim.Adam(vq, lr=self.config.lr), "main": optim.Adam(self.prior.parameters(), lr=self.config.lr)}

    @property
    def stage(self):
        return 1 if self.steps_done[0] < self.config.vq_steps else 2

    # ------------------------------------------------------------------ stage 1: the autoencoder
    def vq_loss(self, x):
        """x (B, 1, 28, 28) in [0, 1] -> (loss, logs): reconstruction / Var(x) + the quantiser's loss."""
        q = self.quantizer(self.encoder(x))                          # z_q (B, D, 7, 7), straight-through
        x_hat = self.decoder(q.z_q)                                  # (B, 1, 28, 28)
        mse = F.mse_loss(x_hat, x)
        # L = ||x - D(z_q)||^2 / Var(x) + ||sg(z_e) - z_q||^2 + beta ||z_e - sg(z_q)||^2
        loss = mse / MNIST_VARIANCE + q.loss
        return loss, {"mse": mse.item(), "commitment": q.commitment_loss.item(),
                      "perplexity": q.perplexity, "codes_used": float(q.codes_used)}

    # ------------------------------------------------------------------ the interface of the codes
    @inference
    def encode(self, x):
        """Images x (B, 1, 28, 28) (uint8, or floats in [0, 1]; NumPy or Tensor) -> code indices
        (B, 7, 7) int64, the nearest codebook entry at each position."""
        x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        x = data.to_float(x) if x.dtype == np.uint8 else x.astype(np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"VQVAE.encode: images (B, 1, 28, 28) expected, got shape {x.shape}")
        return self.quantizer.encode(self.encoder(Tensor(x)))

    @inference
    def decode(self, indices):
        """Code indices (B, 7, 7) -> images D(e_k) (B, 1, 28, 28) in [0, 1] (NumPy float32)."""
        idx = np.asarray(indices)
        K = self.config.num_codes
        if idx.ndim != 3 or idx.shape[1:] != self.grid or idx.dtype.kind not in "iu" or \
                (idx.size and not 0 <= idx.min() <= idx.max() < K):
            raise ValueError(f"VQVAE.decode: indices (B, 7, 7) of integers in 0..{K - 1} expected, got "
                             f"dtype {idx.dtype} shape {idx.shape}")
        x_hat = self.decoder(self.quantizer.decode_indices(idx.astype(np.int64)))
        return np.clip(x_hat.numpy(), 0.0, 1.0)

    def reconstruct(self, x):
        """D(e_k(x)) for images x (B, 1, 28, 28)."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ the two-stage training step
    def training_step(self, batch, optimizers):
        x, _ = batch
        stage = self.stage
        self.steps_done[0] += 1
        if stage == 1:
            loss, logs = self.vq_loss(x)
            norm = optimizer_step(loss, optimizers["vq"], self.config.grad_clip)
            return {"vq_loss": loss.item(), **logs, **({} if norm is None else {"grad_norm": norm})}
        codes = self.encode(x)                                       # (B, 7, 7): the frozen encoder's codes
        # L = -log p(k(x)), nats per grid, averaged over the batch
        loss = self.prior.nll(codes).mean()
        norm = optimizer_step(loss, optimizers["main"], self.config.grad_clip)
        return {"loss": loss.item(), "bits_per_grid": loss.item() / math.log(2),
                **({} if norm is None else {"grad_norm": norm})}

    # ------------------------------------------------------------------ evaluation
    @inference
    def evaluate(self, images, labels=None, batch_size=1000):
        """On uint8 test images: reconstruction MSE per pixel, the codebook's perplexity and codes used
        over all of them, and the prior's exact NLL of their codes in bits per 7x7 grid."""
        sq, nll, counts = 0.0, 0.0, np.zeros(self.config.num_codes, np.int64)
        for i in range(0, len(images), batch_size):
            x = data.to_float(images[i:i + batch_size])
            k = self.encode(x)                                       # (b, 7, 7)
            sq += float(((self.decode(k) - x) ** 2).sum())
            counts += np.bincount(k.ravel(), minlength=self.config.num_codes)
            nll += float(self.prior.nll(k).numpy().sum())
        n = len(images)
        return {"test_recon_mse": sq / (n * 784), "test_perplexity": nn.perplexity(counts),
                "test_codes_used": int((counts > 0).sum()), "test_prior_bits_per_grid": nll / n / math.log(2)}

    def evaluate_nll(self, images):
        """What `python -m tinygen evaluate` reads from likelihood models: the prior's NLL of the test
        codes, with the reconstruction and codebook figures it goes with (evaluate above)."""
        return self.evaluate(images)

    # ------------------------------------------------------------------ sampling
    @inference
    def sample_codes(self, n, batch_size=1000):
        """n code grids (n, 7, 7) int64 from the prior, batch_size at a time (49 passes each)."""
        return np.concatenate([self.prior.sample(min(batch_size, n - i), self.grid, self.rng)
                               for i in range(0, n, batch_size)]) if n else np.zeros((0, *self.grid), np.int64)

    def sample(self, n):
        """n images decoded from prior samples: (n, 1, 28, 28) in [0, 1] (NumPy float32)."""
        return self.decode(self.sample_codes(n))

    def visualize(self, images, labels, path):
        """Stage 1: test images over their reconstructions. Stage 2: the same, then 32 samples."""
        x = data.to_float(images[:32])
        rows = [x, self.reconstruct(x)] + ([self.sample(32)] if self.stage == 2 else [])
        save_image_grid(np.concatenate(rows), Path(path), nrow=8, scale=2)

    def save_pictures(self, images, path_reconstructions, path_samples, path_codes=None):
        """The pictures in docs/: 16 test images over their reconstructions (rows in pairs), 64 decoded
        prior samples, and (path_codes) how often each code is used on `images`, a K-bar histogram."""
        x = data.to_float(images[:16])
        pairs = np.stack([x[:8], self.reconstruct(x[:8]), x[8:], self.reconstruct(x[8:])])
        save_image_grid(pairs.reshape(-1, 1, 28, 28), path_reconstructions, nrow=8, scale=2)
        save_image_grid(self.sample(64), path_samples, nrow=8, scale=2)
        if path_codes is not None:
            counts = np.bincount(self.encode(images).ravel(), minlength=self.config.num_codes)
            height = np.round(counts / max(counts.max(), 1) * 31).astype(int)            # (K,)
            bars = (np.arange(32)[::-1, None] < height[None, :]).astype(np.float32)     # (32, K)
            save_image_grid(bars[None, None], path_codes, nrow=1, scale=3)
