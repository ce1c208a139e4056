"""ViT: the Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

An image becomes a sequence: cut it into N patches of p x p pixels, embed each patch linearly, put a
learned [CLS] token in front, add a learned position embedding, and run a standard pre-LN
transformer encoder; the class comes from the final [CLS] token alone:

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos        E (p p C, D), E_pos (N + 1, D)     (eq. 1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                     l = 1 .. L                         (eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l                                                              (eq. 3)
    y    = LN(z_L^0),  logits = y W_head                                                     (eq. 4)

On 28 x 28 digits, p = 4 gives N = 49 tokens (a 7 x 7 grid) plus [CLS]. Nothing in the architecture
says that patch 8 sits next to patch 9: the position embedding has to learn the 2-D layout from
data, and `position_similarity` shows that it does (each patch's embedding is most similar to its
neighbours in the grid). `attention_rollout` (Abnar & Zuidema 2020) follows the attention from
[CLS] down through the layers, adding the residual stream as the identity:

    A_l = (mean over heads of softmax(q k^T / sqrt(d)) + I) / 2,   R = A_L A_{L-1} ... A_1,
    the map of an image = R[CLS, patches]  reshaped to the 7 x 7 grid.

`attention_distance` measures how far each head looks (the paper's Figure 7): the distance between a
patch and the patches it attends to, weighted by the attention. In the paper some heads of the first
blocks look near and others far, and the deeper blocks look farther; docs/models/vit.md says what a ViT
of digits does.

The paper's ViT needs a lot of labelled data before it beats a CNN: it has no convolution's built-in
locality to lean on. The same recipe on fewer labelled images, for the same number of steps
(`--train-size`, nested subsets of the train split), shows what data is worth here.

Recipe (Config): dim 64, 6 blocks of 4 heads, MLP ratio 2, AdamW (lr 1e-3, weight decay 0.05) with a
cosine decay, batch 128, random shifts of up to 1 pixel, grad clip 1, 10 epochs; on Fashion-MNIST 20
epochs with left-right flips (flip=true). Figures, and the runs that led there: docs/models/vit.md.

    python -m tinygen train vit --no-progress
    python -m tinygen train vit --dataset fashion --epochs 20 --set flip=true --no-progress
    python -m tinygen evaluate vit --checkpoint runs/vit-mnist/last.npz
    python -m tinygen train vit --train-size 6000 --epochs 102 --max-steps 4680 --evaluate-every 10 --out runs/vit-n6000
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn, optim
from ..data import N_CLASSES
from ..io import save_image_grid
from .base import Config, inference
from .classifier import _Classifier, random_shift


@dataclass
class ViTConfig(Config):
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    weight_decay: float = 0.05
    patch_size: int = 4        # 28 x 28 -> a 7 x 7 grid of 49 patches
    dim: int = 64
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    augment: int = 1           # random shifts of up to this many pixels (0 turns augmentation off)
    flip: bool = False         # also mirror half the images left-right (for Fashion-MNIST, not for digits)


# The paper's three sizes (its Table 1; there on 224 x 224 RGB images in 16 x 16 patches): the same
# architecture, wider and deeper; parameter_count agrees with the table within 1%. On digits tinygen
# trains a far smaller one (ViTConfig's dim 64, 6 blocks).
SIZES = {
    "Base":  dict(depth=12, dim=768, mlp_ratio=4.0, num_heads=12),    # 86M parameters
    "Large": dict(depth=24, dim=1024, mlp_ratio=4.0, num_heads=16),   # 307M
    "Huge":  dict(depth=32, dim=1280, mlp_ratio=4.0, num_heads=16),   # 632M
}


def parameter_count(config, image_size=28, channels=1, num_classes=N_CLASSES):
    """The parameters of ViT(config, image_size, channels, num_classes), counted from eqs. 1-4 without
    building it (ViT-Huge would take 2.5 GB of float32). Weights and biases of every linear map:
        E (p p C + 1) D,  [CLS] D,  E_pos (N + 1) D,
        per block: q, k, v, out (D + 1) D each, the MLP (D + 1) hD + (hD + 1) D, two LayerNorms 2 D each,
        the final LayerNorm 2 D, the head (D + 1) K."""
    c = config
    D, hidden = c.dim, int(c.dim * c.mlp_ratio)
    N = (image_size // c.patch_size) ** 2
    block = 4 * (D + 1) * D + (D + 1) * hidden + (hidden + 1) * D + 2 * 2 * D
    return ((c.patch_size ** 2 * channels + 1) * D + D + (N + 1) * D
            + c.depth * block + 2 * D + (D + 1) * num_classes)


class ViT(_Classifier):
    """ViT classifier: 4x4 patches, [CLS] token, learned positions, pre-LN encoder, head on [CLS]."""
    Config = ViTConfig
    tiny_config = {"dim": 16, "depth": 1, "num_heads": 2, "batch_size": 8}

    def __init__(self, config=None, image_size=28, channels=1, num_classes=N_CLASSES):
        super().__init__(config)
        c = self.config
        if image_size % c.patch_size:
            raise ValueError(f"ViT: patch_size {c.patch_size} does not divide the image size {image_size}")
        self.grid = image_size // c.patch_size                        # 7 patches per side
        num_patches = self.grid * self.grid                           # N = 49
        self.patch_embed = nn.PatchEmbed(c.patch_size, channels, c.dim)   # x_p E
        self.cls_token = nn.Parameter(np.zeros((1, 1, c.dim), np.float32))
        nn.init.normal_(self.cls_token, std=0.02)
        self.pos_embed = nn.LearnedPositionEmbedding(num_patches + 1, c.dim)  # E_pos
        self.encoder = nn.Transformer(c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout)
        self.head = nn.Linear(c.dim, num_classes)

    def configure_optimizers(self):
        return {"main": optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)}

    def prepare_batch(self, images, labels):
        x, y = super().prepare_batch(images, labels)
        if self.config.augment:
            x = Tensor(random_shift(x.data, self.config.augment, self.rng))
        if self.config.flip:
            mirror = self.rng.random(x.shape[0]) < 0.5                # (B,): which images to mirror
            x = Tensor(np.where(mirror[:, None, None, None], x.data[..., ::-1], x.data))
        return x, y

    def tokens(self, x):
        """z_0: the [CLS] token and the patch embeddings, plus positions. (B, 1, H, W) -> (B, N + 1, D)."""
        B = x.shape[0]
        patches = self.patch_embed(x)                                 # (B, N, D)
        cls = self.cls_token.expand(B, 1, self.config.dim)            # (B, 1, D)
        return self.pos_embed(F.concat([cls, patches], axis=1))       # (B, N + 1, D)

    def features(self, x):
        """y = LN(z_L^0) of eq. 4: the final [CLS] token, the image's feature. (B, 1, H, W) -> (B, D)
        (CLIP's image encoder is this ViT, its head the projection to the joint space)."""
        return self.encoder(self.tokens(x))[:, 0]                     # (B, D), final LN applied

    def logits(self, x):
        return self.head(self.features(x))                            # (B, 10): from [CLS] alone

    # ---------------------------------------------------------------- the lecture's two pictures
    def position_similarity(self):
        """Cosine similarity of the patches' position embeddings, (N, grid, grid): map i shows how
        similar patch i's embedding is to every other patch's (the [CLS] position left out)."""
        e = self.pos_embed.weight.data[1:].astype(np.float64)        # (N, D)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return (e @ e.T).reshape(-1, self.grid, self.grid)            # (N, 7, 7)

    def position_neighbour_fraction(self):
        """The share of patches whose most similar OTHER position embedding belongs to a grid neighbour
        (the 8 patches around it): at most 8 / 48 for unrelated embeddings, near 1 for a learned 2-D layout."""
        sim = self.position_similarity().reshape(-1, self.grid * self.grid)    # (N, N)
        np.fill_diagonal(sim, -np.inf)
        i, j = np.arange(len(sim)), sim.argmax(axis=1)
        return float(np.mean(np.maximum(abs(i // self.grid - j // self.grid), abs(i % self.grid - j % self.grid)) == 1))

    def position_mirror_fraction(self):
        """The share of patches whose most similar OTHER position embedding is the patch at the mirrored
        column of the same row (centre column left out): near 1 when training mirrored the images."""
        sim = self.position_similarity().reshape(-1, self.grid * self.grid)    # (N, N)
        np.fill_diagonal(sim, -np.inf)
        i, j = np.arange(len(sim)), sim.argmax(axis=1)
        row, col = i // self.grid, i % self.grid
        off_centre = 2 * col != self.grid - 1
        mirror = (j // self.grid == row) & (j % self.grid == self.grid - 1 - col)
        return float(np.mean(mirror[off_centre]))

    @inference
    def attention_maps(self, images):
        """The attention weights of every block for uint8 or [0, 1] images (B, 1, 28, 28): a list of depth
        arrays (B, heads, N + 1, N + 1), token 0 being [CLS]."""
        h = self.tokens(Tensor(data.to_float(images)))
        _, hidden = self.encoder(h, return_layers=tuple(range(self.config.depth)))
        inputs = [h] + hidden[:-1]                                    # the input of every block
        return [block.attn.attention_weights(block.ln1(z)).numpy() for block, z in zip(self.encoder.blocks, inputs)]

    def attention_rollout(self, images):
        """Attention rollout from [CLS] (see the module docstring): (B, grid, grid) maps, each summing to
        at most 1, for uint8 or [0, 1] images (B, 1, 28, 28)."""
        maps = self.attention_maps(images)
        B, T = maps[0].shape[0], maps[0].shape[-1]
        rollout = np.broadcast_to(np.eye(T), (B, T, T))
        for P in maps:
            a = 0.5 * (P.mean(axis=1) + np.eye(T))                    # heads averaged, + the residual connection
            rollout = a @ rollout                                     # R = A_l R
        return rollout[:, 0, 1:].reshape(-1, self.grid, self.grid)    # from [CLS] to each patch

    def patch_distances(self):
        """||c_i - c_j||: the distance in pixels between the centres of patches i and j, (N, N)."""
        rows, cols = np.divmod(np.arange(self.grid * self.grid), self.grid)
        return self.config.patch_size * np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None])

    def attention_distance(self, images):
        """The mean attention distance of every head (the paper's Figure 7, right), in pixels, (depth, heads):
        how far from its own patch a patch query takes information, weighted by its attention,

            d(l, h) = mean over images b and patches i of  sum_j P_lh[b, i, j] ||c_i - c_j||  /  sum_j P_lh[b, i, j],

        j running over the patches. [CLS] has no place in the image: its row and column are left out, so each
        query's weights over the patches are renormalised. d = 0: every patch looks at itself; uniform attention
        gives the mean of patch_distances() (14.4 px on the 7 x 7 grid of 4 x 4 patches)."""
        dist = self.patch_distances()                                 # (N, N)
        out = []
        for P in self.attention_maps(images):                         # (B, H, N + 1, N + 1) per block
            w = P[:, :, 1:, 1:]                                       # patch queries, patch keys
            w = w / w.sum(axis=-1, keepdims=True)
            out.append((w * dist).sum(axis=-1).mean(axis=(0, 2)))    # (H,)
        return np.stack(out)                                          # (depth, heads)

    def evaluate_representation(self, images, labels, n=1000):
        """The mean attention distance of every head (pixels, one list per block) over the first `n` test
        images, beside what uniform attention would give (`python -m tinygen evaluate vit` prints it)."""
        d = self.attention_distance(images[:n])
        return {"attention_distance_px": [[round(float(v), 2) for v in layer] for layer in d],
                "attention_distance_uniform_px": round(float(self.patch_distances().mean()), 2)}

    def save_attention_distance(self, images, path):
        """The mean attention distance of every head against the block it is in; in each block the heads are
        sorted from the nearest-looking to the farthest, between the two ends of the scale: a head that looks
        everywhere alike ("uniform attention") and one that looks at its own patch only (0)."""
        from ..io import save_line_plots
        d = np.sort(self.attention_distance(images), axis=1)          # (depth, heads), nearest head first
        layers = list(range(1, len(d) + 1))
        H = d.shape[1]
        names = ["nearest head"] + [f"rank {k + 1}" for k in range(1, H - 1)] + ["farthest head"] * (H > 1)
        curves = {name: (layers, list(d[:, k])) for k, name in enumerate(names)}
        curves["uniform attention"] = (layers, [float(self.patch_distances().mean())] * len(layers))
        curves["own patch only"] = (layers, [0.0] * len(layers))     # the scale's other end
        save_line_plots([("mean attention distance (pixels)", curves)], path, xlabel="block")

    def save_pictures(self, images, path_positions, path_rollout):
        """The two pictures: position-embedding similarity (one 7x7 map per patch, in the patch grid) and
        test images beside their attention-rollout maps (brighter: more attention from [CLS])."""
        sim = self.position_similarity()                             # each map stretched to its own range
        lo, hi = sim.min(axis=(1, 2), keepdims=True), sim.max(axis=(1, 2), keepdims=True)
        save_image_grid(((sim - lo) / (hi - lo))[:, None], path_positions, nrow=self.grid, scale=6)
        maps = self.attention_rollout(images)
        maps = maps / maps.max(axis=(1, 2), keepdims=True)
        p = self.config.patch_size
        big = np.repeat(np.repeat(maps, p, axis=1), p, axis=2)[:, None]   # (B, 1, 28, 28)
        pairs = np.stack([data.to_float(images), big], axis=1).reshape(-1, 1, *images.shape[2:])
        save_image_grid(pairs, path_rollout, nrow=8, scale=3)
