"""Convolution: conv2d and conv_transpose2d, first as the textbook computes them, then the ops.

A 2-D convolution (a cross-correlation, as in every deep-learning library) slides a kernel over the
image; each output pixel is a dot product of the kernel with the window it covers:

    y[b, o, Y, X] = bias[o] + sum_{c, i, j} x_pad[b, c, s Y + d i, s X + d j] w[o, c, i, j]

Shapes (per spatial axis, k kernel size, s stride, p padding, d dilation):

    conv2d            H_out = floor((H + 2p - d(k-1) - 1) / s) + 1
    conv_transpose2d  H_out = (H - 1) s - 2p + d(k-1) + output_padding + 1

The textbook way to compute it ("im2col", below): copy every window into one row of a matrix,
cols (B H_out W_out, C kh kw), and the whole convolution is ONE matrix product with the weight
reshaped to (C kh kw, C_out). The gradients are two more products:

    dL/dW = cols^T  dL/dY                 (C kh kw, C_out)
    dL/dX = col2im(dL/dY  W^T)            every window's share added back onto the pixels it read

conv_transpose2d is the adjoint (the input gradient of conv2d as an op): col2im in forward, im2col
in backward. `conv2d_plain` and `conv_transpose2d_plain` are exactly that, in a few dozen lines.
The public `conv2d` and `conv_transpose2d` compute the same thing through `conv_fast.py`, which
arranges the same products for speed (channels-last memory, tiles that stay in the cache, a choice
between two input-gradient rules, split-K, depthwise einsum); a test checks the two against each
other on random shapes, strides, dilations and groups.

Only the array module of the inputs (NumPy or CuPy) is used, through `backend`.
"""
from .. import backend
from ..function import Function, ShapeError
from . import conv_fast

__all__ = ["conv2d", "conv_transpose2d", "masked_conv2d", "conv2d_plain", "conv_transpose2d_plain"]


# ---------------------------------------------------------------------- the textbook version
def im2col(x, kernel, stride, padding, dilation, out_hw):
    """Windows of x (B, C, H, W) as rows: (B H_out W_out, C kh kw), row (b, Y, X) holding the window
    whose top-left tap is x_pad[b, :, s Y, s X], its taps d apart."""
    xp = backend.xp_of(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (Ho, Wo) = kernel, stride, padding, dilation, out_hw
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    B, C = x.shape[:2]
    s = xpad.strides
    win = backend.as_strided(xp, xpad, (B, C, Ho, Wo, kh, kw),  # a view: window (Y, X), tap (i, j)
                             (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw))
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(B * Ho * Wo, C * kh * kw)  # the copy


def col2im(cols, x_shape, kernel, stride, padding, dilation, out_hw):
    """The adjoint of im2col: rows (B H_out W_out, C kh kw) added back onto an image (B, C, H, W);
    pixels read by several windows receive the sum. One strided slice-add per kernel tap."""
    xp = backend.xp_of(cols)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (Ho, Wo) = kernel, stride, padding, dilation, out_hw
    B, C, H, W = x_shape
    taps = cols.reshape(B, Ho, Wo, C, kh, kw).transpose(0, 3, 1, 2, 4, 5)  # (B, C, Ho, Wo, kh, kw)
    xpad = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # tap (i, j) of window (Y, X) read pixel (s Y + d i, s X + d j)
            xpad[:, :, dh * i:dh * i + sh * (Ho - 1) + 1:sh, dw * j:dw * j + sw * (Wo - 1) + 1:sw] += taps[..., i, j]
    return xpad[:, :, ph:ph + H, pw:pw + W]


def _grouped_matmul(a, b, groups):
    """(N, g K) @ block-diagonal weight given as (g, K, M) -> (N, g M): each group of columns of a
    times its own weight block (groups = 1: a plain matmul)."""
    N = a.shape[0]
    g, K, M = b.shape
    return (a.reshape(N, g, K).transpose(1, 0, 2) @ b).transpose(1, 0, 2).reshape(N, g * M)


class Conv2dPlain(Function):
    """conv2d the textbook way: y = im2col(x) @ W, dW = cols^T dY, dX = col2im(dY W^T)."""
    op_name = "conv2d"

    def forward(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, out_hw=None):
        B, (co, cg, kh, kw) = x.shape[0], w.shape
        self.geometry = (x.shape, (kh, kw), stride, padding, dilation, out_hw, groups)
        cols = im2col(x, (kh, kw), stride, padding, dilation, out_hw)          # (B Ho Wo, C kh kw)
        wm = w.reshape(groups, co // groups, cg * kh * kw).transpose(0, 2, 1)  # (g, C_g kh kw, C_out/g)
        self.save_for_backward(cols, wm)
        y = _grouped_matmul(cols, wm, groups)                                  # (B Ho Wo, C_out)
        if b is not None:
            y = y + b
        return y.reshape(B, out_hw[0], out_hw[1], co).transpose(0, 3, 1, 2)    # (B, C_out, Ho, Wo)

    def backward(self, g):
        cols, wm = self.saved
        x_shape, kernel, stride, padding, dilation, out_hw, groups = self.geometry
        co = g.shape[1]
        gm = g.transpose(0, 2, 3, 1).reshape(-1, co)                           # dL/dY as (B Ho Wo, C_out)
        # dL/dW = cols^T dL/dY, group by group
        n, K = cols.shape[0], cols.shape[1] // groups
        gw = cols.reshape(n, groups, K).transpose(1, 2, 0) @ gm.reshape(n, groups, co // groups).transpose(1, 0, 2)
        gw = gw.transpose(0, 2, 1).reshape(co, -1, *kernel)                    # (C_out, C_g, kh, kw)
        # dL/dX = col2im(dL/dY W^T)
        gx = col2im(_grouped_matmul(gm, wm.transpose(0, 2, 1), groups), x_shape, kernel, stride, padding,
                    dilation, out_hw)
        gb = gm.sum(axis=0) if len(self.needs_input_grad) > 2 else None
        return gx, gw, gb


class ConvTranspose2dPlain(Function):
    """conv_transpose2d the textbook way: y = col2im(x W), the adjoint of conv2d; in backward,
    dX = im2col(dY) W^T (a conv2d of dY) and dW = x^T im2col(dY)."""
    op_name = "conv_transpose2d"

    def forward(self, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, out_hw=None):
        (B, C, H, W), (ci, cog, kh, kw) = x.shape, w.shape
        self.geometry = ((kh, kw), stride, padding, dilation, (H, W), groups, cog * groups)
        xm = x.transpose(0, 2, 3, 1).reshape(B * H * W, C)                     # (B H W, C_in)
        wm = w.reshape(groups, ci // groups, cog * kh * kw)                    # (g, C_in/g, C_out/g kh kw)
        self.save_for_backward(xm, wm)
        out_shape = (B, cog * groups) + tuple(out_hw)
        y = col2im(_grouped_matmul(xm, wm, groups), out_shape, (kh, kw), stride, padding, dilation, (H, W))
        return y if b is None else y + b.reshape(1, -1, 1, 1)

    def backward(self, g):
        xm, wm = self.saved
        kernel, stride, padding, dilation, in_hw, groups, co = self.geometry
        B = g.shape[0]
        cols = im2col(g, kernel, stride, padding, dilation, in_hw)             # (B H W, C_out kh kw)
        # dL/dX = im2col(dL/dY) W^T
        gx = _grouped_matmul(cols, wm.transpose(0, 2, 1), groups)             # (B H W, C_in)
        gx = gx.reshape(B, in_hw[0], in_hw[1], -1).transpose(0, 3, 1, 2)
        # dL/dW = x^T im2col(dL/dY), group by group
        n, ci = xm.shape
        K = cols.shape[1] // groups
        gw = xm.reshape(n, groups, ci // groups).transpose(1, 2, 0) @ cols.reshape(n, groups, K).transpose(1, 0, 2)
        gw = gw.reshape(ci, co // groups, *kernel)
        gb = g.sum(axis=(0, 2, 3)) if len(self.needs_input_grad) > 2 else None
        return gx, gw, gb


# ---------------------------------------------------------------------- argument checks
def _pair(value, what, op):
    """An int or a pair of ints -> (int, int)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{op}: {what} must be an int or a pair of ints, got {value!r}")
        a, b = value
    else:
        a = b = value
    if int(a) != a or int(b) != b:
        raise ValueError(f"{op}: {what} must be integers, got {value!r}")
    return int(a), int(b)


def _conv_params(op, stride, padding, dilation):
    stride, padding, dilation = (_pair(stride, "stride", op), _pair(padding, "padding", op),
                                 _pair(dilation, "dilation", op))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: need stride >= 1, dilation >= 1 and padding >= 0, "
                         f"got stride={stride}, padding={padding}, dilation={dilation}")
    return stride, padding, dilation


def _check_4d(op, x, what):
    if x.ndim != 4:
        raise ShapeError(f"{op}: {what} must be 4-D, got shape {tuple(x.shape)}")


def _check_groups(op, groups):
    if int(groups) != groups or groups < 1:
        raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")


def _check_positive(op, out_hw, x, w, stride, padding, dilation):
    if min(out_hw) <= 0:
        raise ShapeError(f"{op}: output size {out_hw} is not positive for input {tuple(x.shape)}, weight "
                         f"{tuple(w.shape)}, stride={stride}, padding={padding}, dilation={dilation}")


def _check_conv2d(x, w, b, stride, padding, dilation, groups):
    op = "conv2d"
    _check_4d(op, x, "input (B, C, H, W)")
    _check_4d(op, w, "weight (C_out, C_in/groups, kh, kw)")
    _check_groups(op, groups)
    c_in, c_out = x.shape[1], w.shape[0]
    if c_in % groups or c_out % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c_in}) and the output channels "
                         f"({c_out}); input {tuple(x.shape)}, weight {tuple(w.shape)}")
    if w.shape[1] * groups != c_in:
        raise ShapeError(f"{op}: input {tuple(x.shape)} has {c_in} channels but weight {tuple(w.shape)} with "
                         f"groups={groups} expects {w.shape[1] * groups}")
    if b is not None and tuple(b.shape) != (c_out,):
        raise ShapeError(f"{op}: bias of shape {tuple(b.shape)}, expected ({c_out},) for weight {tuple(w.shape)}")
    out_hw = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                   zip(x.shape[2:], w.shape[2:], stride, padding, dilation))
    _check_positive(op, out_hw, x, w, stride, padding, dilation)
    return out_hw


def _check_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    op = "conv_transpose2d"
    _check_4d(op, x, "input (B, C, H, W)")
    _check_4d(op, w, "weight (C_in, C_out/groups, kh, kw)")
    _check_groups(op, groups)
    c_in = x.shape[1]
    if c_in % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c_in}); "
                         f"input {tuple(x.shape)}, weight {tuple(w.shape)}")
    if w.shape[0] != c_in:
        raise ShapeError(f"{op}: input {tuple(x.shape)} has {c_in} channels but weight {tuple(w.shape)} "
                         f"expects {w.shape[0]}")
    c_out = w.shape[1] * groups
    if b is not None and tuple(b.shape) != (c_out,):
        raise ShapeError(f"{op}: bias of shape {tuple(b.shape)}, expected ({c_out},) for weight {tuple(w.shape)} "
                         f"with groups={groups}")
    for op_, s, d in zip(output_padding, stride, dilation):
        if not 0 <= op_ < max(s, d):
            raise ValueError(f"{op}: output_padding {output_padding} must be >= 0 and smaller than the stride "
                             f"{stride} or the dilation {dilation}")
    out_hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + op_ + 1 for n, k, s, p, d, op_ in
                   zip(x.shape[2:], w.shape[2:], stride, padding, dilation, output_padding))
    _check_positive(op, out_hw, x, w, stride, padding, dilation)
    return out_hw


# ---------------------------------------------------------------------- public functions
def _conv2d_args(x, weight, bias, stride, padding, dilation, groups):
    stride, padding, dilation = _conv_params("conv2d", stride, padding, dilation)
    out_hw = _check_conv2d(x, weight, bias, stride, padding, dilation, groups)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups), out_hw=out_hw)
    return ((x, weight) if bias is None else (x, weight, bias)), attrs


def _conv_transpose2d_args(x, weight, bias, stride, padding, output_padding, groups, dilation):
    stride, padding, dilation = _conv_params("conv_transpose2d", stride, padding, dilation)
    output_padding = _pair(output_padding, "output_padding", "conv_transpose2d")
    out_hw = _check_conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    attrs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=int(groups),
                 dilation=dilation, out_hw=out_hw)
    return ((x, weight) if bias is None else (x, weight, bias)), attrs


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d: 2-D cross-correlation of x (B, C_in, H, W) with weight (C_out, C_in/groups, kh, kw),
    plus bias (C_out,). stride, padding (zeros), dilation: an int or a (height, width) pair.
    Output (B, C_out, H_out, W_out), H_out = floor((H + 2p - d(kh-1) - 1) / s) + 1; its memory is
    channels-last (see conv_fast.py), its values and shape are PyTorch's."""
    inputs, attrs = _conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    return conv_fast.Conv2d.apply(*inputs, **attrs)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """F.conv_transpose2d (the gradient of conv2d w.r.t. its input, as an op): x (B, C_in, H, W),
    weight (C_in, C_out/groups, kh, kw), bias (C_out,). Output (B, C_out, H_out, W_out) with
    H_out = (H - 1) s - 2p + d(kh-1) + output_padding + 1 (output_padding < stride or dilation picks
    among the input sizes that conv2d maps to the same output size)."""
    inputs, attrs = _conv_transpose2d_args(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return conv_fast.ConvTranspose2d.apply(*inputs, **attrs)


def masked_conv2d(x, weight, mask, bias=None, padding=0):
    """conv2d(x, weight * mask, bias, padding=padding) for a fixed 0/1 mask (kh, kw) of kernel taps (a
    NumPy array; a PixelCNN's causal mask), stride 1: the same values and gradients (0 on the masked
    taps of the weight), computed on the kept taps alone, so a 3x3 mask keeping 5 taps costs 5/9 of
    the conv's multiplications. The plain way to read it: conv2d(x, weight * Tensor(mask), ...)."""
    mask = backend.to_numpy(mask)   # a host array: only which taps are kept is read from it
    values = set(mask.reshape(-1).tolist())
    if tuple(mask.shape) != tuple(weight.shape[2:]) or not values <= {0, 1} or 1 not in values:
        raise ShapeError(f"masked_conv2d: the mask must be 0/1 of the kernel's shape {tuple(weight.shape[2:])} "
                         f"with at least one 1, got shape {tuple(mask.shape)} with values {sorted(values)[:4]}")
    inputs, attrs = _conv2d_args(x, weight, bias, 1, padding, 1, 1)
    del attrs["stride"], attrs["dilation"], attrs["groups"]
    return conv_fast.MaskedConv2d.apply(*inputs, mask=mask, **attrs)


def conv2d_plain(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d computed the textbook way (im2col, one matmul; col2im for the input gradient): the
    same values and gradients as conv2d, slower and with more memory. For reading and for tests."""
    inputs, attrs = _conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    return Conv2dPlain.apply(*inputs, **attrs)


def conv_transpose2d_plain(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """conv_transpose2d computed the textbook way (col2im in forward, im2col in backward)."""
    inputs, attrs = _conv_transpose2d_args(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return ConvTranspose2dPlain.apply(*inputs, **attrs)
