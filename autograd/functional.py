"""The public op namespace:  import autograd.functional as F

Names follow PyTorch's torch.nn.functional where one exists (F.conv2d, F.cross_entropy,
F.scaled_dot_product_attention, ...), and NumPy's vocabulary otherwise (sum(axis, keepdims),
reshape, transpose(*axes), concat, stack, where, einsum).

Where the two share a name, ours takes PyTorch's arguments: the same names, in the same order, with
the same defaults, so F.pad(x, (left, right, top, bottom)) and F.interpolate(x, size) mean what they
mean in PyTorch (NumPy's per-axis padding is F.pad_width(x, pad_width)). The ops, by module:

    ops/elementwise.py    arithmetic, exp, log, ..., relu, gelu, silu, sigmoid, tanh, softplus
    ops/reduce.py         sum, mean, var, max, min, logsumexp
    ops/shape.py          reshape, transpose, expand, getitem, concat, stack, split, pad, pad_width
    ops/linalg.py         matmul, linear, einsum
    ops/conv.py           conv2d, conv_transpose2d, masked_conv2d (the fast path in conv_fast.py), and the textbook
                          conv2d_plain, conv_transpose2d_plain
    ops/pooling.py        max_pool2d, avg_pool2d, upsample_nearest, interpolate
    ops/nn.py             softmax, log_softmax, dropout, embedding, one_hot, gumbel_softmax
    ops/losses.py         cross_entropy, nll_loss, binary_cross_entropy(_with_logits), mse_loss, l1_loss
    ops/normalization.py  layer_norm, group_norm, batch_norm, and the textbook group_norm_plain
    ops/attention.py      scaled_dot_product_attention

Differences from torch.nn.functional (tests/autograd/test_signatures.py holds the full list and
keeps it true against the installed PyTorch):

- Arguments for features we do not have are absent: `inplace` (no op works in place), the
  deprecated `size_average` / `reduce` of the losses, loss `weight`s, `ceil_mode`, `dilation` and
  `return_indices` of pooling, `align_corners` / `antialias` of interpolate (mode='nearest' only),
  `max_norm` and `sparse` of embedding, `beta` / `threshold` of softplus, `enable_gqa`, `dtype`.
- Where PyTorch has such an argument BEFORE one we take, ours after it is keyword-only, so a
  positional call cannot land on the wrong parameter: F.cross_entropy(z, t, reduction="sum"),
  F.mse_loss(a, b, reduction="none"), F.gumbel_softmax(z, tau, hard, dim=1).
- Random ops (dropout, gumbel_softmax, scaled_dot_product_attention's dropout) take a keyword
  `rng`: a NumPy (or CuPy) Generator, instead of PyTorch's global generator.
- softmax and log_softmax default to dim=-1 (PyTorch's dim=None guesses an axis and warns).
- gelu is the tanh approximation (PyTorch's gelu(x, approximate='tanh'); its default is exact erf).
- The first tensor operand may be named for what it holds (x, logits, probs, indices) rather
  than `input`; it is always passed by position.
- Tensor methods speak NumPy: x.softmax(axis=-1), x.sum(axis=0, keepdims=True).
"""
from .ops.elementwise import *  # noqa: F401,F403
from .ops.reduce import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403
from .ops.linalg import *  # noqa: F401,F403
from .ops.conv import *  # noqa: F401,F403
from .ops.pooling import *  # noqa: F401,F403
from .ops.nn import *  # noqa: F401,F403
from .ops.losses import *  # noqa: F401,F403
from .ops.normalization import *  # noqa: F401,F403
from .ops.attention import *  # noqa: F401,F403
