"""Pooling and nearest upsampling: max_pool2d, avg_pool2d, upsample_nearest, interpolate.

    H_out = floor((H + 2p - k) / s) + 1

Like the convolutions (conv_fast.py), pooling works on channels-last memory: the windows are a
strided view of an NHWC copy (no copy at all when the input already holds NHWC memory and there
is no padding), a reduction runs over the kh kw taps of all windows at once, and the gradient
goes back with one strided slice-add per tap. Python loops run over kernel taps only.

Only the array module of the inputs (NumPy or CuPy) is used, through `backend`.
"""
import math

from .. import _threads, backend
from ..function import ShapeError, Function
from .conv import _check_4d, _pair
from .conv_fast import _as_nchw, _place, _scatter_taps, _windows

__all__ = ["max_pool2d", "avg_pool2d", "upsample_nearest", "interpolate"]


# ---------------------------------------------------------------------- pooling
def _pool_params(op, x, kernel_size, stride, padding):
    _check_4d(op, x, "input (B, C, H, W)")
    kernel = _pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else _pair(stride, "stride", op)
    padding = _pair(padding, "padding", op)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: need kernel_size >= 1, stride >= 1, padding >= 0, "
                         f"got {kernel}, {stride}, {padding}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    out_hw = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(x.shape[2:], kernel, stride, padding))
    if min(out_hw) <= 0:
        raise ShapeError(f"{op}: output size {out_hw} is not positive for input {tuple(x.shape)}, "
                         f"kernel_size={kernel}, stride={stride}, padding={padding}")
    return kernel, stride, padding, out_hw


def _pool_windows(x, kernel, stride, padding, out_hw, fill):
    """The pooling windows (B, Ho, Wo, kh, kw, C) of a padded NHWC copy of x (no copy when x already
    holds NHWC memory and there is no padding)."""
    H, W = x.shape[2:]
    xn = _place(x, (H + 2 * padding[0], W + 2 * padding[1]), padding, fill=fill)[0]
    return _windows(xn, kernel, stride, (1, 1), out_hw)


def _pool_grad(parts, x_shape, kernel, stride, padding, out_hw, g):
    overlap = stride[0] < kernel[0] or stride[1] < kernel[1]
    return _as_nchw(_scatter_taps(parts, x_shape, kernel, stride, padding, out_hw, g.dtype,
                                  backend.xp_of(g), overlap))


class MaxPool2d(Function):
    """y[b, c, Y, X] = max over the window (s Y + i - p, s X + j - p), 0 <= i < kh, 0 <= j < kw
    (padding counts as -inf). The gradient goes to the first maximum of each window (PyTorch's
    choice for ties); overlapping windows add up.

    Speed: a running max over the kh kw taps (each tap is a strided view of all windows at once),
    rather than copying every window and calling argmax over a middle axis (slow in NumPy). The
    winning tap is remembered in a small uint8 array with arithmetic instead of masked assignment
    (copyto(where=...) and arg[mask] = t are ~5x slower): taps are visited in increasing order t, so
    "tap t beats the running max" can be recorded as arg = maximum(arg, t * (tap > max)). The batch
    is cut between the engine's threads (autograd/_threads.py), each running the taps over its images
    into its rows of out and arg (both made on the caller's thread, with the comparison's buffer).
    Backward: kh kw masked slice-adds."""
    op_name = "max_pool2d"

    def forward(self, x, kernel_size, stride, padding):
        xp = backend.xp_of(x)
        kernel, stride, padding, out_hw = _pool_params("max_pool2d", x, kernel_size, stride, padding)
        win = _pool_windows(x, kernel, stride, padding, out_hw, -math.inf)
        B, Ho, Wo, C = win.shape[:3] + win.shape[-1:]
        out = xp.empty((B, Ho, Wo, C), dtype=win.dtype)
        arg = xp.zeros(out.shape, dtype=xp.uint8 if kernel[0] * kernel[1] <= 256 else xp.int32)
        better = xp.empty(out.shape, dtype=arg.dtype)

        def images(b0, b1):  # the images b0 <= b < b1 (a thread of _threads.over_batch)
            wi, oi, ai, bi = win[b0:b1], out[b0:b1], arg[b0:b1], better[b0:b1]
            oi[...] = wi[:, :, :, 0, 0, :]
            for t in range(1, kernel[0] * kernel[1]):
                tap = wi[:, :, :, t // kernel[1], t % kernel[1], :]
                xp.greater(tap, oi, out=bi)  # strict: the first maximum wins
                bi *= bi.dtype.type(t)
                xp.maximum(oi, tap, out=oi)
                xp.maximum(ai, bi, out=ai)

        _threads.over_batch(xp, B, images, out.nbytes // max(B, 1))
        self.args = (x.shape, kernel, stride, padding, out_hw)
        self.save_for_backward(arg)
        return _as_nchw(out)

    def backward(self, g):
        (arg,) = self.saved
        x_shape, kernel, stride, padding, out_hw = self.args
        gn = backend.xp_of(g).ascontiguousarray(g.transpose(0, 2, 3, 1))  # same layout as arg: fast elementwise
        parts = (((t // kernel[1], t % kernel[1]), gn * (arg == t)) for t in range(kernel[0] * kernel[1]))
        return _pool_grad(parts, x_shape, kernel, stride, padding, out_hw, g)


class AvgPool2d(Function):
    """y[b, c, Y, X] = (1 / (kh kw)) sum over the window (zero padding counted: count_include_pad=True).
    Backward: every tap of a window gets g / (kh kw), with kh kw slice-adds."""
    op_name = "avg_pool2d"

    def forward(self, x, kernel_size, stride, padding):
        kernel, stride, padding, out_hw = _pool_params("avg_pool2d", x, kernel_size, stride, padding)
        win = _pool_windows(x, kernel, stride, padding, out_hw, 0)
        out = win[:, :, :, 0, 0, :].copy()
        for t in range(1, kernel[0] * kernel[1]):
            out += win[:, :, :, t // kernel[1], t % kernel[1], :]
        out *= 1.0 / (kernel[0] * kernel[1])  # in place: stays float32
        self.args = (x.shape, kernel, stride, padding, out_hw)
        return _as_nchw(out)

    def backward(self, g):
        x_shape, kernel, stride, padding, out_hw = self.args
        share = backend.xp_of(g).ascontiguousarray(g.transpose(0, 2, 3, 1)) * (1.0 / (kernel[0] * kernel[1]))
        parts = (((i, j), share) for i in range(kernel[0]) for j in range(kernel[1]))
        return _pool_grad(parts, x_shape, kernel, stride, padding, out_hw, g)


# ---------------------------------------------------------------------- nearest upsampling
class UpsampleNearest(Function):
    """y[b, c, Y, X] = x[b, c, Y // sh, X // sw]: each pixel repeated into an sh x sw block.

    Forward: sh sw strided assignments y[:, :, i::sh, j::sw] = x; backward: the sum of the sh sw
    strided slices of the gradient (at most sh sw Python iterations). Both keep the memory layout
    of their input (NHWC stays NHWC): measured 2-10x faster than broadcasting into a 6-d view
    and reshaping, whose innermost run is a single pixel (sw floats) for NCHW data."""
    op_name = "upsample_nearest"

    def forward(self, x, scale):
        self.scale = scale
        B, C, H, W = x.shape
        sh, sw = scale
        xp = backend.xp_of(x)
        if x.transpose(0, 2, 3, 1).flags.c_contiguous and not x.flags.c_contiguous:
            y = xp.empty((B, H * sh, W * sw, C), dtype=x.dtype).transpose(0, 3, 1, 2)
        else:
            y = xp.empty((B, C, H * sh, W * sw), dtype=x.dtype)
        for i in range(sh):
            for j in range(sw):
                y[:, :, i::sh, j::sw] = x
        return y

    def backward(self, g):
        sh, sw = self.scale
        blocks = [g[:, :, i::sh, j::sw] for i in range(sh) for j in range(sw)]
        if len(blocks) == 1:
            return blocks[0]
        gx = blocks[0] + blocks[1]  # a new array in g's layout
        for block in blocks[2:]:
            gx += block
        return gx


# ---------------------------------------------------------------------- public functions
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """F.max_pool2d: max over kernel_size windows every `stride` pixels (default: kernel_size),
    padding with -inf (at most half the kernel). Output (B, C, floor((H + 2p - k) / s) + 1, ...)."""
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """F.avg_pool2d with count_include_pad=True: window sums divided by kh kw, zero padding included."""
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def upsample_nearest(x, size=None, scale_factor=None):
    """F.upsample_nearest: nearest-neighbour upsampling (B, C, H, W) -> (B, C, sh H, sw W) by an integer
    scale_factor (or a (height, width) pair of them), or to a `size` that is an integer multiple of
    the input's. PyTorch's order: size comes second, so upsample_nearest(x, scale_factor=2) doubles x."""
    if x.ndim != 4:
        raise ShapeError(f"upsample_nearest: input must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if (size is None) == (scale_factor is None):
        raise ValueError("upsample_nearest: give exactly one of size and scale_factor")
    if size is not None:
        size = _pair(size, "size", "upsample_nearest")
        if size[0] % x.shape[2] or size[1] % x.shape[3] or min(size) < 1:
            raise ValueError(f"upsample_nearest: size {size} must be a positive integer multiple of the input's "
                             f"spatial size (input {tuple(x.shape)})")
        scale_factor = (size[0] // x.shape[2], size[1] // x.shape[3])
    scale = _pair(scale_factor, "scale_factor (an integer factor)", "upsample_nearest")
    if min(scale) < 1:
        raise ValueError(f"upsample_nearest: scale_factor must be >= 1, got {scale_factor!r}")
    return UpsampleNearest.apply(x, scale=scale)


def interpolate(x, size=None, scale_factor=None, mode="nearest"):
    """F.interpolate for mode='nearest' with an integer scale_factor, or a `size` that is an integer
    multiple of the input's (both: an int or a (height, width) pair). The arguments are PyTorch's, in
    PyTorch's order: interpolate(x, (56, 56)) gives size 56x56, interpolate(x, scale_factor=2) doubles x."""
    if mode != "nearest":
        raise ValueError(f"interpolate: mode {mode!r} is not supported; only mode='nearest' "
                         f"(with an integer scale_factor) is implemented")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        size = _pair(size, "size", "interpolate")
        if x.ndim != 4 or size[0] % x.shape[2] or size[1] % x.shape[3]:
            raise ValueError(f"interpolate: size {size} must be an integer multiple of the input's spatial size "
                             f"(input {tuple(x.shape)})")
        scale_factor = (size[0] // x.shape[2], size[1] // x.shape[3])
    return upsample_nearest(x, scale_factor=scale_factor)
