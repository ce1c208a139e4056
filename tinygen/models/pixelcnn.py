"""PixelCNN and PixelRNN's Row LSTM (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent Neural
Networks"), and the gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN
Decoders").

An autoregressive model: the chain rule writes the likelihood of an image as a product of one
conditional per pixel, in raster order (row by row, left to right), and one network outputs all the
conditionals at once. The likelihood is EXACT (no bound, no dequantisation):

    p(x) = prod_i p(x_i | x_1, ..., x_{i-1})                 i = 1..D in raster order, D = 784
    binarised pixels:  p(x_i | x_<i) = Bernoulli(x_i; sigmoid(l_i(x_<i)))
    NLL(x) = -log p(x) = sum_i BCE(x_i, sigmoid(l_i))        nats per image
    gray levels (option levels = L > 2): p(x_i | x_<i) = softmax(l_i(x_<i))_{k_i},  k_i in {0, ..., L-1}

For the product to be a distribution, output i must not see input pixels i, i+1, ... Masked
convolutions ensure it: the kernel's weights are multiplied by a fixed 0/1 mask that is zero below the
centre row and right of the centre in the centre row.

    mask A (first layer): the centre tap is zero too, so l_i never sees x_i
    mask B (all later layers): the centre tap is kept (feature i may use feature i, which saw x_<i only)

A blind spot. Stacked 3 x 3 mask-B convolutions grow the receptive field up and to the LEFT, but to the
right only as far as the first layer reached: part of the rows above, up and to the right, is never
seen (`receptive_field` computes it; docs/figures.py draws it). The gated PixelCNN (arch="gated") removes it
with two stacks. The vertical stack sees every pixel of the rows above (its k x k kernels keep the
whole centre row, then its output is shifted down one row); the horizontal stack sees the pixels left
of the current one in its row (1 x k kernels, mask A then B) and adds the shifted vertical features:

    v' = tanh(W_f,v * v) . sigmoid(W_g,v * v)                           gated activation, . elementwise
    h' = h + W_1x1 (tanh(W_f,h * h + V_f s(W_v * v)) . sigmoid(W_g,h * h + V_g s(W_v * v)))
    s = shift down by one row (what row i receives saw rows < i only); no residual on the first layer

PixelRNN (the same paper's recurrent networks; arch="rowlstm"): the Row LSTM runs an LSTM DOWN the image,
one whole row per step, after the same 7 x 7 mask-A conv. Its input-to-state conv reads row i (1 x 3,
mask B), its state-to-state conv the previous row's state (1 x 3, not masked: it is all in the past):

    [i, f, g, o]_i = sigma(K_ss * h_{i-1} + K_is * x_i),   c_i = f . c_{i-1} + i . g,   h_i = o . tanh(c_i)
    (sigma: the sigmoid for the gates i, f, o; tanh for the candidate g)

so the state at (i, j) carries a triangle of the rows above, widening one column a row, up to the top
row: no reach limit, as a stack of convolutions has, but the corners outside the triangle are not seen
(the paper's Diagonal BiLSTM, not built here, covers them). Sampling reruns the rows above each pixel.

Data: dynamically binarised MNIST (a fresh {0, 1} draw of every image at every step); the test split is
binarised ONCE with np.random.default_rng(0), as the VAE's, so the two are scored on the same images.

Sampling draws one pixel at a time: 784 forward passes of the batch (vectorised over the batch; the loop
over pixels is inherent to autoregressive sampling). Each pass is computed only on the rows that can
reach the current one (`reach` of them above it), not the whole image.

Recipe (Config): 7 x 7 mask-A conv to 64 channels, 15 residual blocks (1 x 1 to 32, 3 x 3 mask B, 1 x 1
to 64, ReLU before each), two 1 x 1 heads, Bernoulli logits; Adam 1e-3 with a cosine decay over 12 epochs
(11,244 steps), batch 64. The masked convs multiply their kept taps alone (F.masked_conv2d). Figures, the
8-block run and the paper's: docs/models/pixelcnn.md.
    python -m tinygen train pixelcnn --no-progress
    python -m tinygen evaluate pixelcnn --checkpoint runs/pixelcnn-mnist/last.npz --n 1000
        (the NLL on the whole test split; --n samples for FID-judge: 784 passes each, so fewer than 10,000)
    python -m tinygen train pixelcnn --set arch=gated          (or --set levels=4: 4 gray levels)
    python -m tinygen train pixelcnn --set arch=rowlstm --set blocks=4 --epochs 2 --out runs/pixelrnn-rowlstm

vqvae.py's CodePixelCNN runs the same networks over a grid of K-way code indices instead of pixels: each
index is embedded, and the heads give K logits per position.
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor, zeros_like
from .. import data, nn
from ..io import save_image_grid
from .base import Config, Model, bits_per_dim, inference

ARCHS = ("plain", "gated", "rowlstm")


@dataclass
class PixelCNNConfig(Config):
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    arch: str = "plain"        # "plain": masked convs (a blind spot); "gated": vertical + horizontal stacks;
                               # "rowlstm": PixelRNN's Row LSTM layers (a recurrence down the rows)
    levels: int = 2            # 2: binarised pixels, Bernoulli logits; L > 2: L gray levels, softmax over them
    first_kernel: int = 7      # the mask-A layer's kernel (odd)
    channels: int = 64         # plain, rowlstm: the residual stream (2h); each block or LSTM has channels // 2 (h)
    gated_channels: int = 32   # gated: p, the width of each stack (2p pre-activations for the gate)
    blocks: int = 15           # residual blocks (plain), gated layers after the first (gated) or Row LSTMs
    head_channels: int = 64    # the hidden width of the two 1 x 1 output heads
    quick_steps: int = 50      # --quick: the test NLL and the picture (784 sampling passes) come on top


# ---------------------------------------------------------------------- data: binarise or quantise
def quantize(images, levels):
    """uint8 images (0..255) -> level indices k = floor(pixel * L / 256) in {0, ..., L-1}, int64."""
    return (np.asarray(images).astype(np.int64) * levels) // 256


# ---------------------------------------------------------------------- masked convolution
def causal_mask(kernel_size, mask_type):
    """(kh, kw) float32: 1 on the taps a masked kernel keeps, centre (kh // 2, kw // 2).
    "A": the rows above, and left of the centre in the centre row;  "B": the same and the centre;
    "V" (the gated vertical stack): the rows above and the whole centre row."""
    kh, kw = kernel_size
    r, c = np.arange(kh)[:, None], np.arange(kw)[None, :]          # (kh, 1), (1, kw)
    above, centre_row = r < kh // 2, r == kh // 2
    keep = {"A": above | (centre_row & (c < kw // 2)),
            "B": above | (centre_row & (c <= kw // 2)),
            "V": above | centre_row}[mask_type]
    return np.broadcast_to(keep, (kh, kw)).astype(np.float32)


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution whose weight is multiplied by a fixed causal mask (a buffer) at every
    forward, so the masked taps stay zero whatever the optimiser does to the weight:
    y = conv2d(x, W * mask). F.masked_conv2d computes exactly that, multiplying the kept taps alone."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_type):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if mask_type not in ("A", "B", "V"):
            raise ValueError(f"MaskedConv2d: mask_type must be 'A', 'B' or 'V', got {mask_type!r}")
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2d: the kernel needs a centre, so odd sides; got {(kh, kw)}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask((kh, kw), mask_type)[None, None], persistent=False)  # (1, 1, kh, kw)

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H, W)
        # y = conv2d(x, W * mask)
        return F.masked_conv2d(x, self.weight, self.mask[0, 0], self.bias, padding=self.padding)


# ---------------------------------------------------------------------- the plain PixelCNN
class ResidualBlock(nn.Module):
    """h + 1x1(relu(3x3_B(relu(1x1(relu(h)))))): 2h -> h -> h -> 2h channels, (B, 2h, H, W) kept."""

    def __init__(self, channels):
        super().__init__()
        self.down = nn.Conv2d(channels, channels // 2, 1)
        self.conv = MaskedConv2d(channels // 2, channels // 2, 3, "B")
        self.up = nn.Conv2d(channels // 2, channels, 1)

    def forward(self, h):
        return h + self.up(F.relu(self.conv(F.relu(self.down(F.relu(h))))))


class Head(nn.Module):
    """Per pixel, two 1 x 1 convs: (B, C, H, W) -> logits (B, out, H, W)."""

    def __init__(self, channels, hidden, out_channels):
        super().__init__()
        self.hidden = nn.Conv2d(channels, hidden, 1)
        self.out = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, h):
        return self.out(F.relu(self.hidden(F.relu(h))))


class PlainNet(nn.Module):
    """x (B, in, H, W) -> logits (B, out, H, W): mask-A conv, mask-B residual blocks, 1 x 1 heads
    (in = 1 for images; CodePixelCNN feeds an embedding of code indices)."""

    def __init__(self, c, out_channels, in_channels=1):
        super().__init__()
        self.inp = MaskedConv2d(in_channels, c.channels, c.first_kernel, "A")
        self.blocks = nn.Sequential(*[ResidualBlock(c.channels) for _ in range(c.blocks)])
        self.head = Head(c.channels, c.head_channels, out_channels)
        self.reach = c.first_kernel // 2 + c.blocks   # rows above an output that can reach it

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


# ---------------------------------------------------------------------- the gated PixelCNN
def gate(a):
    """tanh(a_f) . sigmoid(a_g) for a = [a_f, a_g] on the channel axis: (B, 2p, H, W) -> (B, p, H, W)."""
    p = a.shape[1] // 2
    # y = tanh(W_f * x) . sigmoid(W_g * x)
    return F.tanh(a[:, :p]) * F.sigmoid(a[:, p:])


class GatedLayer(nn.Module):
    """One layer of the two stacks: (v, h) -> (v', h'), both (B, p, H, W) (the first takes x, 1 channel).
    The k x k and 1 x k kernels are masks of full kernels (the paper crops them to k//2+1 x k and
    1 x k//2+1); the taps they keep are the same."""

    def __init__(self, in_channels, p, kernel, first):
        super().__init__()
        self.v_conv = MaskedConv2d(in_channels, 2 * p, (kernel, kernel), "V")   # rows <= i, all columns
        self.h_conv = MaskedConv2d(in_channels, 2 * p, (1, kernel), "A" if first else "B")  # row i, columns < or <= j
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)
        self.h_out = nn.Conv2d(p, p, 1)
        self.residual = not first

    def forward(self, v, h):
        v_pre = self.v_conv(v)                                       # (B, 2p, H, W): saw rows <= i
        # s(v_pre): shift down one row, so row i of the horizontal stack gets what saw rows < i only
        v_down = F.pad(v_pre, (0, 0, 1, -1))                         # (B, 2p, H, W)
        h_pre = self.h_conv(h) + self.v_to_h(v_down)                 # (B, 2p, H, W)
        # h' = h + W_1x1 gate(h_pre)   (no residual on the first layer: h is x there)
        h_new = self.h_out(gate(h_pre))                              # (B, p, H, W)
        return gate(v_pre), (h + h_new if self.residual else h_new)


class GatedNet(nn.Module):
    """x (B, in, H, W) -> logits (B, out, H, W): a first gated layer (k x k, mask A), `blocks` 3 x 3 gated
    layers (mask B), the 1 x 1 heads on the horizontal stack."""

    def __init__(self, c, out_channels, in_channels=1):
        super().__init__()
        p = c.gated_channels
        self.layers = nn.ModuleList([GatedLayer(in_channels, p, c.first_kernel, first=True)]
                                    + [GatedLayer(p, p, 3, first=False) for _ in range(c.blocks)])
        self.head = Head(p, c.head_channels, out_channels)
        self.reach = c.first_kernel // 2 + c.blocks + 1   # rows above an output that can reach it (+1: the shift)

    def forward(self, x):
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)


# ---------------------------------------------------------------------- PixelRNN: the Row LSTM
def lstm_update(gates, c):
    """The LSTM cell from its pre-activations: gates (B, 4h, ...) = [i, f, g, o] along axis 1 (PyTorch's
    order), c (B, h, ...) the previous cell state -> (h', c'), both (B, h, ...):

        i, f, o = sigmoid(.),  g = tanh(.),   c' = f . c + i . g,   h' = o . tanh(c')"""
    h = gates.shape[1] // 4
    i, f, g, o = (gates[:, k * h:(k + 1) * h] for k in range(4))
    c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
    return F.sigmoid(o) * F.tanh(c), c


class RowLSTM(nn.Module):
    """One Row LSTM layer (PixelRNN, section 3.1): an LSTM that runs DOWN the image, one whole row per
    step, its state a row of h-vectors. (B, 2h, H, W) -> (B, 2h, H, W), with a residual connection:

        [i_i, f_i, g_i, o_i] = sigma(K_ss * h_{i-1} + K_is * x_i)       * : 1 x k convolutions along the row
        c_i = f_i . c_{i-1} + i_i . g_i,    h_i = o_i . tanh(c_i)        h_{-1} = c_{-1} = 0
        out = x + W_1x1 h                                   (sigma: the sigmoid for i, f, o; tanh for g)

    K_is reads row i of the input, masked (mask B: columns <= j); it is not recurrent, so one conv computes
    it for every row at once. K_ss reads the previous row's state at columns j - k//2 .. j + k//2 (all of
    it lies in the past). State (i, j) thus sees a triangle of the rows above, widening by k // 2 columns a
    row (the paper's "triangular receptive field"); `receptive_field` draws it."""

    def __init__(self, channels, kernel=3):
        super().__init__()
        h = self.hidden = channels // 2
        self.input_to_state = MaskedConv2d(channels, 4 * h, (1, kernel), "B")                # K_is
        self.state_to_state = nn.Conv2d(h, 4 * h, (1, kernel), padding=(0, kernel // 2), bias=False)  # K_ss
        self.out = nn.Conv2d(h, channels, 1)

    def forward(self, x):
        is_rows = F.split(self.input_to_state(x), x.shape[2], axis=2)   # H x (B, 4h, 1, W): K_is * x_i
        h = c = zeros_like(is_rows[0][:, :self.hidden])                  # (B, h, 1, W): h_{-1} = c_{-1} = 0
        rows = []
        for is_i in is_rows:    # the recurrence: row i needs the state of row i - 1
            h, c = lstm_update(is_i + self.state_to_state(h), c)
            rows.append(h)
        return x + self.out(F.concat(rows, axis=2))                     # (B, 2h, H, W)


class RowLSTMNet(nn.Module):
    """x (B, in, H, W) -> logits (B, out, H, W): PixelRNN's Row LSTM network: a 7 x 7 mask-A conv, `blocks`
    Row LSTM layers, the 1 x 1 heads. The state carries every row above, so no row is out of reach."""

    def __init__(self, c, out_channels, in_channels=1):
        super().__init__()
        self.inp = MaskedConv2d(in_channels, c.channels, c.first_kernel, "A")
        self.layers = nn.Sequential(*[RowLSTM(c.channels) for _ in range(c.blocks)])
        self.head = Head(c.channels, c.head_channels, out_channels)
        self.reach = None   # every row above an output can reach it

    def forward(self, x):
        return self.head(self.layers(self.inp(x)))


def network(c, out_channels, in_channels=1):
    """The network of c.arch: (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
    return {"plain": PlainNet, "gated": GatedNet, "rowlstm": RowLSTMNet}[c.arch](c, out_channels, in_channels)


# ---------------------------------------------------------------------- autoregressive sampling
def draw_categorical(logits, u):
    """One category per row from softmax(logits) (n, L), by uniforms u (n, 1): the first k whose
    cumulative probability exceeds u. int64 (n,)."""
    # softmax, then its cdf: k = #{l : u > cdf_l}
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(z), axis=1) / np.exp(z).sum(axis=1, keepdims=True)   # (n, L)
    return np.minimum((u > cdf).sum(axis=1), logits.shape[1] - 1)


def fill_raster(x, start, reach, logits_of, draw):
    """Sample positions start, start + 1, ... (raster order) of x (n, ..., H, W) in place, one per pass:
    logits_of(rows (n, ..., r, W)) -> logits (n, C, r, W) as NumPy, draw(logits (n, C)) -> the values of
    one position (n,). Output row i depends on input rows i - reach .. i only (reach None: all rows above),
    so each pass sees those rows alone: the rows above them are missing (zero padding instead), which
    changes rows < i of the pass, not row i."""
    H, W = x.shape[-2:]
    # one forward pass per position: the autoregressive loop (position i needs positions < i sampled first)
    for pos in range(start, H * W):
        i, j = divmod(pos, W)
        top = 0 if reach is None else max(0, i - reach)   # None: every row above reaches row i
        logits = logits_of(x[..., top:i + 1, :])                      # (n, C, rows, W)
        x[..., i, j] = draw(logits[:, :, i - top, j]).reshape(x[..., i, j].shape)
    return x


# ---------------------------------------------------------------------- the model
class PixelCNN(Model):
    """PixelCNN (van den Oord et al. 2016): masked convolutions, exact NLL; gated and Row LSTM (PixelRNN) options."""
    Config = PixelCNNConfig
    image_range = "binary"
    tiny_config = {"first_kernel": 5, "channels": 8, "gated_channels": 4, "blocks": 2, "head_channels": 8,
                   "batch_size": 8}

    def __init__(self, config=None, shape=(1, 28, 28)):
        super().__init__(config)
        c = self.config
        if c.arch not in ARCHS:
            raise ValueError(f"PixelCNN: unknown arch {c.arch!r}; valid: {', '.join(ARCHS)}")
        if not (isinstance(c.levels, int) and c.levels >= 2):
            raise ValueError(f"PixelCNN: levels must be an integer >= 2 (2: binarised pixels), got {c.levels!r}")
        if tuple(shape)[0] != 1:
            raise ValueError(f"PixelCNN: images have one channel, got shape {tuple(shape)}")
        self.shape = tuple(shape)
        out_channels = 1 if c.levels == 2 else c.levels   # a Bernoulli logit, or L softmax logits
        self.net = network(c, out_channels)

    # ------------------------------------------------------------------ data
    def to_input(self, images, rng):
        """uint8 images (B, 1, H, W) -> the model's values: {0, 1} drawn with p = pixel / 255 from rng
        (levels 2), or the level index k / (L - 1) (levels L > 2). float32 (B, 1, H, W)."""
        L = self.config.levels
        if L == 2:
            return data.binarize(images, rng)
        return (quantize(images, L) / (L - 1)).astype(np.float32)

    def prepare_batch(self, images, labels):
        """Dynamic binarisation: a fresh draw from self.rng at every step (gray levels: deterministic)."""
        return Tensor(self.to_input(images, self.rng)), labels

    # ------------------------------------------------------------------ likelihood
    def forward(self, x):
        """x (B, 1, H, W) in the model's values -> logits (B, 1 or L, H, W); logit (i, j) saw x_<(i, j) only."""
        return self.net(x)

    def nll(self, x):
        """-log p(x) (B,) in nats per image, exact, for x (B, 1, H, W) in the model's values (a Tensor)."""
        logits = self(x)
        L = self.config.levels
        if L == 2:
            # -log p(x) = sum_i BCE(x_i, sigmoid(l_i))
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(axis=(1, 2, 3))
        k = np.rint(x.numpy()[:, 0] * (L - 1)).astype(np.int64)       # (B, H, W) level indices
        # -log p(x) = -sum_i log softmax(l_i)_{k_i}
        return F.cross_entropy(logits, k, reduction="none").sum(axis=(1, 2))

    def loss(self, batch):
        x, _ = batch
        nll = self.nll(x)
        # loss = E_batch[-log p(x)] in nats per image
        loss = nll.mean()
        return loss, {"nll": loss.item()}

    @inference
    def evaluate_nll(self, images, n=None, batch_size=500):
        """Exact NLL of uint8 test images, binarised ONCE with np.random.default_rng(0) (as the VAE's)."""
        x = self.to_input(images, np.random.default_rng(0))[:n]
        nats = float(np.concatenate([self.nll(Tensor(x[i:i + batch_size])).numpy()
                                     for i in range(0, len(x), batch_size)]).mean())
        return {"nll_nats": nats, "bits_per_dim": bits_per_dim(nats, int(np.prod(self.shape)))}

    def evaluate(self, images, labels):
        return {"test_nll_nats": self.evaluate_nll(images)["nll_nats"]}

    # ------------------------------------------------------------------ sampling
    def _draw(self, logits):
        """One pixel per image from its conditional: logits (n, 1 or L) -> values (n,) in the model's range."""
        L = self.config.levels
        u = self.rng.random((len(logits), 1))
        if L == 2:
            # p = sigmoid(l) = exp(-log(1 + e^-l)), stable for any l (+inf gives 1, -inf gives 0)
            p = np.exp(-np.logaddexp(0.0, -logits.astype(np.float64)))
            return (u[:, 0] < p[:, 0]).astype(np.float32)
        return (draw_categorical(logits, u) / (L - 1)).astype(np.float32)

    def _fill(self, x, start):
        """Sample pixels start, start + 1, ... (raster order) of x (n, 1, H, W) in place, one per pass.
        Output row i depends on input rows i - reach .. i only, so each pass sees those rows alone: the
        rows above them are missing (zero padding instead), which changes rows < i of the pass, not row i."""
        return fill_raster(x, start, self.net.reach, lambda rows: self(Tensor(rows)).numpy(), self._draw)

    @inference
    def sample(self, n):
        """n images drawn pixel by pixel from the model, (n, 1, H, W) in [0, 1] (NumPy, float32)."""
        return self._fill(np.zeros((n, *self.shape), np.float32), 0)

    @inference
    def complete(self, images, rows_known=14):
        """Keep the top rows_known rows of images and sample the rest from p(x_rest | x_top).
        images: uint8 (B, 1, H, W) (binarised / quantised here, from self.rng) or floats already in the
        model's values. Returns (B, 1, H, W) float32 in [0, 1]."""
        H, W = self.shape[1:]
        if not 0 <= rows_known <= H:
            raise ValueError(f"complete: rows_known must lie in 0..{H}, got {rows_known}")
        images = np.asarray(images)
        x = self.to_input(images, self.rng) if images.dtype == np.uint8 else images.astype(np.float32, copy=True)
        if x.shape[1:] != self.shape:
            raise ValueError(f"complete: images of shape {self.shape} expected, got {x.shape[1:]}")
        return self._fill(x, rows_known * W)

    def visualize(self, images, labels, path):
        """Top: 16 samples. Bottom: 8 test images, the same with the lower half covered (gray), and
        their completions."""
        x = self.to_input(images[:8], np.random.default_rng(0))
        covered = x.copy()
        covered[:, :, self.shape[1] // 2:] = 0.5
        grid = np.concatenate([self.sample(16), x, covered, self.complete(x, self.shape[1] // 2)])
        save_image_grid(grid, path, nrow=8, scale=2)


# ---------------------------------------------------------------------- the receptive field
def receptive_field(model, i, j, x=None):
    """|d l_(i, j) / d x| (H, W) as NumPy: how strongly each input pixel moves output (i, j)'s logits
    (summed over their channels), by one backward pass of the engine at x (default: uniform noise,
    seed 0). Zero outside the receptive field; for the plain stack, zero in its blind spot as well."""
    shape = model.shape
    if x is None:
        x = np.random.default_rng(0).random((1, *shape)).astype(model.parameters()[0].dtype)
    x = Tensor(x, requires_grad=True)
    was_training = model.training
    model.eval()
    model(x)[:, :, i, j].sum().backward()
    model.train(was_training)
    model.zero_grad()                       # leave no parameter gradients behind
    return np.abs(x.grad[0, 0])
