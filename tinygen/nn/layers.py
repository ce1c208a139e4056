"""The layers: thin Modules around autograd.functional ops, with PyTorch's constructor signatures
and default initialisation (so recipes written for PyTorch carry over):

    weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))   (kaiming_uniform_ with a = sqrt(5))
    bias   ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    norm layers: weight = 1, bias = 0;  Embedding: N(0, 1)

Shapes: Linear (..., in) -> (..., out); the conv and pool layers take (B, C, H, W).
"""
import math

import numpy as np

import autograd.functional as F

from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm",
           "Embedding", "Dropout", "Flatten", "Identity", "ReLU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh",
           "Softplus", "Upsample", "MaxPool2d", "AvgPool2d"]


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _empty(*shape):
    return Parameter(np.zeros(shape, np.float32))


def _reset_fan_in(weight, bias):
    """PyTorch's default: kaiming_uniform_(a=sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


# ---------------------------------------------------------------------- linear and convolutions
class Linear(Module):
    """y = x W^T + b,  W (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.register_parameter("bias", _empty(out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in(self.weight, self.bias)

    def forward(self, x):  # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-d cross-correlation, weight (out_channels, in_channels / groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = _pair(padding)
        self.weight = _empty(out_channels, in_channels // groups, *self.kernel_size)
        self.register_parameter("bias", _empty(out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in(self.weight, self.bias)

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H', W')
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class ConvTranspose2d(Module):
    """The adjoint of Conv2d (upsampling by `stride`), weight (in_channels, out_channels / groups, kh, kw).
    Output size: (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1.
    Default init as PyTorch: fan_in from weight.shape[1] * kh * kw."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.output_padding, self.dilation = _pair(output_padding), _pair(dilation)
        self.weight = _empty(in_channels, out_channels // groups, *self.kernel_size)
        self.register_parameter("bias", _empty(out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in(self.weight, self.bias)

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H', W')
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding, groups=self.groups, dilation=self.dilation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


# ---------------------------------------------------------------------- normalisation
class _BatchNorm(Module):
    """y = (x - mu_c) / sqrt(var_c + eps) * weight_c + bias_c. Training: batch statistics, and the
    buffers running_mean / running_var move towards them by `momentum`; eval: the running statistics."""
    _input_ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter("weight", Parameter(np.ones(num_features, np.float32)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(num_features, np.float32)) if affine else None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, np.float32))
            self.register_buffer("running_var", np.ones(num_features, np.float32))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1

    def forward(self, x):
        if x.ndim not in self._input_ndims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(map(str, self._input_ndims))}-d input, "
                             f"got shape {tuple(x.shape)}")
        batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=batch_stats, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (B, C) or (B, C, L)."""
    _input_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (B, C, H, W), statistics per channel over B, H and W."""
    _input_ndims = (4,)


class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) axes, then y = xhat * weight + bias."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self.register_parameter("weight", Parameter(np.ones(self.normalized_shape, np.float32))
                                if elementwise_affine else None)
        self.register_parameter("bias", Parameter(np.zeros(self.normalized_shape, np.float32))
                                if elementwise_affine and bias else None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Split the channels of (B, C, *spatial) into num_groups groups, normalise each per sample."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels {num_channels} is not divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.register_parameter("weight", Parameter(np.ones(num_channels, np.float32)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(num_channels, np.float32)) if affine else None)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


# ---------------------------------------------------------------------- embedding and dropout
class Embedding(Module):
    """A lookup table: integer indices of any shape (...) -> (..., embedding_dim); weight ~ N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = _empty(num_embeddings, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices):
        return F.embedding(indices, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Zero each element with probability p while training (scaling the rest by 1/(1-p)); the
    identity in eval mode. Random draws come from the global tinygen.nn generator (manual_seed)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return F.dropout(x, self.p, training=True, rng=init.get_rng())

    def extra_repr(self):
        return f"p={self.p}"


# ---------------------------------------------------------------------- residual block
class ResBlock(Module):
    """The bottleneck residual block of VQ-VAE and DALL·E's dVAE: h + 1x1(relu(3x3(relu(h)))).
    (B, C, H, W) kept; the 3x3 conv narrows to C // 2 channels, the 1x1 widens back to C."""

    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels // 2, 3, padding=1)
        self.proj = Conv2d(channels // 2, channels, 1)

    def forward(self, h):
        return h + self.proj(F.relu(self.conv(F.relu(h))))


# ---------------------------------------------------------------------- shape and activations
class Flatten(Module):
    """Merge axes start_dim..end_dim: (B, C, H, W) -> (B, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        s, e = self.start_dim % x.ndim, self.end_dim % x.ndim
        return F.reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


def _activation(name, fn, doc):
    cls = type(name, (Module,), {"__doc__": doc, "forward": lambda self, x: fn(x),
                                 "__init__": lambda self, *a, **k: Module.__init__(self)})
    cls.__module__ = __name__
    return cls


ReLU = _activation("ReLU", lambda x: F.relu(x), "max(x, 0)")
GELU = _activation("GELU", lambda x: F.gelu(x), "x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (tanh approximation)")
SiLU = _activation("SiLU", lambda x: F.silu(x), "x sigmoid(x) (swish)")
Sigmoid = _activation("Sigmoid", lambda x: F.sigmoid(x), "1 / (1 + exp(-x))")
Tanh = _activation("Tanh", lambda x: F.tanh(x), "tanh(x)")
Softplus = _activation("Softplus", lambda x: F.softplus(x), "log(1 + exp(x))")


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x (PyTorch's default slope 0.01; GAN discriminators use 0.2)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


# ---------------------------------------------------------------------- resampling and pooling
class Upsample(Module):
    """Nearest-neighbour upsampling of (B, C, H, W) by an integer scale_factor."""

    def __init__(self, scale_factor=2, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is available, got {mode!r}")
        self.scale_factor, self.mode = scale_factor, mode

    def forward(self, x):  # (B, C, H, W) -> (B, C, H * s, W * s)
        return F.upsample_nearest(x, scale_factor=self.scale_factor)

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = stride if stride is not None else kernel_size

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)


class AvgPool2d(_Pool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)
