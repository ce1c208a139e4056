"""Convolution and pooling: conv2d, conv_transpose2d, max_pool2d, avg_pool2d, upsample_nearest, interpolate.

Layout: the API is NCHW (batch, channels, height, width) like PyTorch, but the work is done
channels-last. A convolution is a matrix product over (kernel position, channel) pairs, and in an
NHWC array the channels of a pixel sit next to each other, so every window row of kw pixels x C
channels is one contiguous run of memory: gathering windows ("im2col") is a fast block copy, and
the GEMM result (one row per output pixel, one column per output channel) is already NHWC.

    conv2d output   = NCHW-shaped *view* of NHWC memory  (out.transpose(0, 2, 3, 1) is contiguous)

Keeping that view (instead of copying back to NCHW) means the next conv / pool / elementwise op
reads NHWC memory directly: a stack of layers never transposes its activations. The values and
shapes are exactly PyTorch's; only the strides differ.

Shapes (per spatial axis, k kernel size, s stride, p padding, d dilation):

    conv2d            H_out = floor((H + 2p - d(k-1) - 1) / s) + 1
    conv_transpose2d  H_out = (H - 1) s - 2p + d(k-1) + output_padding + 1
    pools             H_out = floor((H + 2p - k) / s) + 1

Speed tricks, each explained where it is used: im2col + one GEMM per conv (`_im2col`), one copy
that pads, transposes and groups the input (`_place`), the input gradient as a transposed conv or
as col2im, whichever moves less memory (`_conv_input_grad`), split-K for small weight gradients
(`_row_sum_product`), einsum on window views for depthwise convs, a running max with an
arithmetic argmax for max pooling (`MaxPool2d`), and Python loops only over the kh kw kernel
taps, never over pixels, images, channels or groups.

Only the array module of the inputs (NumPy or CuPy) is used, through `backend`.
"""
import math

from .. import backend
from ..function import Function, ShapeError

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "upsample_nearest", "interpolate"]


# ---------------------------------------------------------------------- argument helpers
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


def _conv_out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _check_4d(op, x, what):
    if x.ndim != 4:
        raise ShapeError(f"{op}: {what} must be 4-D, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------- channels-last building blocks
def _place(x, size, offset, step=(1, 1), fill=0, groups=1):
    """A new group-major NHWC buffer (groups, B, size[0], size[1], C/groups) filled with `fill`,
    holding the NCHW array x with x[b, c, u, v] at row offset[0] + step[0] u, column
    offset[1] + step[1] v (what falls outside is cut); groups=1 gives plain NHWC with a leading 1.

    One copy does four jobs: NCHW -> NHWC, zero (or -inf) padding, with step > 1 spreading the
    pixels apart with zeros between them (the "dilated" gradient of a strided convolution), and
    putting each group's channels in a block of their own, so that its windows are contiguous runs
    of kw C/groups floats (gathering groups apart later, from the 9x larger im2col matrix, would
    copy runs of only C/groups floats: 3-10x slower). A negative offset crops instead of padding."""
    xp = backend.xp_of(x)
    B, C, H, W = x.shape
    xg = x.reshape(B, groups, C // groups, H, W).transpose(1, 0, 3, 4, 2)  # a view (G, B, H, W, C/G)
    if tuple(size) == (H, W) and tuple(offset) == (0, 0) and tuple(step) == (1, 1):
        return xp.ascontiguousarray(xg)  # free when x is already an NHWC view (and groups = 1)
    shape = (groups, B, size[0], size[1], C // groups)
    buf = xp.zeros(shape, dtype=x.dtype) if fill == 0 else xp.full(shape, fill, dtype=x.dtype)
    src, dst = [], []
    for n, t, s, total in zip((H, W), offset, step, size):
        lo = max(0, -(t // s))                                   # first u with t + s u >= 0
        hi = min(n, (total - 1 - t) // s + 1) if total - 1 - t >= 0 else 0  # last u with t + s u < total, +1
        if hi <= lo:
            return buf
        src.append(slice(lo, hi))
        dst.append(slice(t + s * lo, t + s * (hi - 1) + 1, s))
    buf[:, :, dst[0], dst[1], :] = xg[:, :, src[0], src[1], :]
    return buf


def _windows(xn, kernel, stride, dilation, out_hw):
    """All kernel windows of the (..., H, W, C) array xn as a strided view (..., H_out, W_out, kh, kw, C):
    no copy. Window (y, x) starts at pixel (s y, s x); its taps are d apart."""
    xp = backend.xp_of(xn)
    sh, sw, sc = xn.strides[-3:]
    shape = xn.shape[:-3] + (out_hw[0], out_hw[1], kernel[0], kernel[1], xn.shape[-1])
    strides = xn.strides[:-3] + (sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc)
    return backend.as_strided(xp, xn, shape, strides)


def _im2col(xg, kernel, stride, dilation, out_hw):
    """The GEMM operand of a convolution: (groups, B H_out W_out, kh kw C/groups), one row per output
    pixel holding its whole receptive field. "im2col": the windows of the group-major NHWC array
    xg (groups, B, H, W, C/groups) copied into one contiguous matrix, so that the convolution
    becomes a single large matrix product (what BLAS is fast at); groups become the batch axis of a
    batched matmul (no Python loop over groups)."""
    win = _windows(xg, kernel, stride, dilation, out_hw)
    G, B, Ho, Wo, kh, kw, cg = win.shape
    return win.reshape(G, B * Ho * Wo, kh * kw * cg)


def _weight_matrix(w, groups):
    """Conv weight (C_out, C_in/g, kh, kw) -> (g, kh kw C_in/g, C_out/g), rows ordered like im2col's columns."""
    co, cg, kh, kw = w.shape
    w = w.reshape(groups, co // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return w.reshape(groups, kh * kw * cg, co // groups)


def _adjoint_weight_matrix(w, groups):
    """The weight of the adjoint (transposed) convolution as a GEMM operand: kernel flipped in space
    and in/out channels swapped, (g, kh kw C_out/g, C_in/g)."""
    co, cg, kh, kw = w.shape
    flipped = w.reshape(groups, co // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    return flipped.transpose(0, 3, 4, 1, 2).reshape(groups, kh * kw * (co // groups), cg)


def _matrix_to_nhwc(y, batch, hw):
    """GEMM result (g, B H W, C/g) -> NHWC array (B, H, W, C)."""
    groups, _, cols = y.shape
    if groups == 1:
        return y.reshape(batch, hw[0], hw[1], cols)
    return y.transpose(1, 0, 2).reshape(batch, hw[0], hw[1], groups * cols)


def _nchw_to_matrix(g, groups):
    """NCHW array (B, C, H, W) -> (g, B H W, C/g); a free view when g holds NHWC memory."""
    B, C, H, W = g.shape
    m = g.transpose(0, 2, 3, 1).reshape(B * H * W, C)
    return m.reshape(1, B * H * W, C) if groups == 1 else m.reshape(-1, groups, C // groups).transpose(1, 0, 2)


def _as_nchw(yn):
    return yn.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------- the three convolution products
def _depthwise(w, groups):
    """Every group has one input channel (depthwise, C_out = m C_in): einsum on windows, see below."""
    return groups > 1 and w.shape[1] == 1


def _conv_operand(x, w, stride, padding, dilation, groups, out_hw):
    """What conv2d(x, w) multiplies the weight with, from one padded (group-major) NHWC copy of x:
    the im2col matrix, or for a depthwise conv the window view (no copy). dW reuses it."""
    H, W = x.shape[2:]
    size = (H + 2 * padding[0], W + 2 * padding[1])
    if _depthwise(w, groups):
        return _windows(_place(x, size, padding)[0], w.shape[2:], stride, dilation, out_hw)
    return _im2col(_place(x, size, padding, groups=groups), w.shape[2:], stride, dilation, out_hw)


def _conv_apply(cols, w, groups, batch, out_hw):
    """conv2d's output as NHWC (B, Ho, Wo, C_out) from its operand."""
    if cols.ndim == 6:
        return _depthwise_forward(cols, w)
    return _matrix_to_nhwc(cols @ _weight_matrix(w, groups), batch, out_hw)  # the one big GEMM


def _conv_weight_grad(cols, g, w_shape, groups):
    """dL/dW = cols^T @ dL/dY, one GEMM that sums over every output pixel of the batch (g: NCHW dL/dY)."""
    co, cg, kh, kw = w_shape
    if cols.ndim == 6:  # depthwise: the window view
        return _depthwise_weight_grad(cols, g, w_shape)
    gw = _row_sum_product(cols, _nchw_to_matrix(g, groups))   # (g, kh kw C_in/g, C_out/g)
    return gw.reshape(groups, kh, kw, cg, co // groups).transpose(0, 4, 3, 1, 2).reshape(w_shape)


_SMALL_GEMM = 1 << 18  # m n k below which OpenBLAS runs a GEMM on one thread


def _row_sum_product(a, b):
    """a^T @ b for tall (g, N, K) and (g, N, O): a sum over N = B Ho Wo rows.

    When the result is small (a first layer: K = kh kw C_in = 9, O = 32) this GEMM is all reduction:
    a threaded BLAS splits its long K loop into hundreds of blocks with a thread barrier after each,
    and on a busy machine every barrier can wait a scheduler time slice: measured 150-1300 ms instead
    of 1 ms. "Split-K" instead: cut N into P chunks small enough for a single-threaded GEMM each,
    run them as one batched matmul (P, K, n) @ (P, n, O) and add the P partial results."""
    G, N, K = a.shape
    O = b.shape[2]
    if K * O > 4096:
        return a.transpose(0, 2, 1) @ b
    n = max(1, _SMALL_GEMM // (K * O))
    P = N // n
    if P <= 1:
        return a.transpose(0, 2, 1) @ b
    m = P * n
    out = (a[:, :m].reshape(G, P, n, K).transpose(0, 1, 3, 2) @ b[:, :m].reshape(G, P, n, O)).sum(axis=1)
    if m < N:
        out += a[:, m:].transpose(0, 2, 1) @ b[:, m:]
    return out


def _conv_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    """dL/dX of conv2d (= conv_transpose2d of g) as NHWC (B, H, W, C_in), for an input of spatial size in_hw:

        dX[y] = sum_i dY[(y + p - i d) / s] W[i]     (terms with a non-integer index are 0)

    Two ways, picked by cost (measured): the transposed convolution (`_spread_input_grad`) gathers
    kh kw C_out columns per input pixel, col2im (`_col2im_input_grad`) writes kh kw C_in per output
    pixel and adds them back. With stride 1 and C_out < 3 C_in the gather is cheaper; with stride > 1
    the transposed convolution would multiply the s^2 - 1 inserted zeros of every s x s block, so
    col2im wins there (3-4x on a stride-2 layer), as it does when C_out >= 3 C_in. Depthwise convs
    always take the transposed convolution, as one einsum on windows (the inserted zeros cost only
    reads there)."""
    if _depthwise(w, groups) or (stride == (1, 1) and w.shape[0] < 3 * w.shape[1] * groups):
        return _spread_input_grad(g, w, in_hw, stride, padding, dilation, groups)
    return _col2im_input_grad(g, w, in_hw, stride, padding, dilation, groups)


def _spread_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    """dL/dX as a transposed convolution: a stride-1 convolution with the flipped, in/out-swapped
    kernel of dY spread out by s (s - 1 zeros between pixels) and padded by d(k-1) - p. `_place`
    builds that spread, padded NHWC array in one copy, and the rest is the same windows + one GEMM
    as the forward pass."""
    B = g.shape[0]
    kh, kw = w.shape[2:]
    (H, W), (sh, sw), (ph, pw), (dh, dw) = in_hw, stride, padding, dilation
    size, offset = (H + (kh - 1) * dh, W + (kw - 1) * dw), ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    if _depthwise(w, groups):
        return _depthwise_input_grad(_place(g, size, offset, (sh, sw))[0], w, groups, (H, W), dilation)
    cols = _im2col(_place(g, size, offset, (sh, sw), groups=groups), (kh, kw), (1, 1), dilation, (H, W))
    return _matrix_to_nhwc(cols @ _adjoint_weight_matrix(w, groups), B, (H, W))


def _col2im_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    """dL/dX "col2im" style: one GEMM gives every tap's share, dY (B Ho Wo, C_out) @ W^T (C_out, kh kw C_in),
    and `_scatter_taps` adds each of the kh kw taps back onto the pixels it read. No products with
    inserted zeros, so this is the cheap way for stride > 1."""
    B, _, Ho, Wo = g.shape
    kh, kw = w.shape[2:]
    cg = w.shape[1]
    taps = _nchw_to_matrix(g, groups) @ _weight_matrix(w, groups).transpose(0, 2, 1)  # (g, B Ho Wo, kh kw C_in/g)
    taps = taps.reshape(groups, B, Ho, Wo, kh, kw, cg)
    parts = (((i, j), taps[..., i, j, :]) for i in range(kh) for j in range(kw))
    return _scatter_taps(parts, (B, cg * groups) + tuple(in_hw), (kh, kw), stride, padding, dilation, (Ho, Wo),
                         g.dtype, backend.xp_of(g), groups=groups)


def _scatter_taps(parts, x_shape, kernel, stride, padding, dilation, out_hw, dtype, xp, overlap=True, groups=1):
    """The adjoint of taking windows: a zero group-major NHWC image (groups, B, H + 2p, W + 2p, C/groups)
    that receives, for each kernel tap (i, j), values (groups, B, Ho, Wo, C/groups) (or (B, Ho, Wo, C)
    when groups = 1) at the pixels (s Y + d i, s X + d j) that tap read; returned as NHWC without
    the padding. One strided slice-add per tap covers every window of the batch at once (at most
    kh kw Python iterations); a tap never hits a pixel twice, and different taps that hit the same
    pixel (overlapping windows) add up. With overlap=False (stride >= kernel) assignment is enough."""
    B, C, H, W = x_shape
    (ph, pw) = padding
    gx = xp.zeros((groups, B, H + 2 * ph, W + 2 * pw, C // groups), dtype=dtype)
    gwin = _windows(gx, kernel, stride, dilation, out_hw)  # a writable view into gx
    for (i, j), part in parts:
        if overlap:
            gwin[..., i, j, :] += part
        else:
            gwin[..., i, j, :] = part
    gx = gx[:, :, ph:ph + H, pw:pw + W] if (ph, pw) != (0, 0) else gx
    return gx[0] if groups == 1 else gx.transpose(1, 2, 3, 0, 4).reshape(B, H, W, C)


# Depthwise convolution (groups = C_in, one input channel per group, C_out = m C_in): as a batched
# GEMM each group would contract only kh kw numbers, and gathering its operand group-major copies
# runs of a single float (measured 10x slower than everything else). Instead one einsum over the
# window view (no im2col copy): y[., c] = sum_{i,j} win[., i, j, c] w[c, i, j], a multiply-add
# streamed along the contiguous channel axis. The subscripts keep c innermost on every operand:
# with another axis last, NumPy's einsum loops are 2-7x slower.
def _depthwise_forward(win, w):
    """(B, Ho, Wo, kh, kw, C) windows, w (C m, 1, kh, kw) -> (B, Ho, Wo, C m); output channel c m + k."""
    xp = backend.xp_of(win)
    B, Ho, Wo, kh, kw, C = win.shape
    wt = xp.ascontiguousarray(w.reshape(C, -1, kh, kw).transpose(2, 3, 1, 0))  # (kh, kw, m, C)
    y = xp.einsum("bhwijc,ijmc->bhwmc", win, wt)
    return y.transpose(0, 1, 2, 4, 3).reshape(B, Ho, Wo, -1)


def _depthwise_weight_grad(win, g, w_shape):
    """dW[c m + k, 0, i, j] = sum over batch and pixels of win[., i, j, c] dY[., c m + k]."""
    xp = backend.xp_of(win)
    B, Ho, Wo, kh, kw, C = win.shape
    gy = g.transpose(0, 2, 3, 1).reshape(B, Ho, Wo, C, -1).transpose(0, 1, 2, 4, 3)  # (B, Ho, Wo, m, C)
    gw = xp.einsum("bhwijc,bhwmc->ijmc", win, gy)
    return gw.transpose(3, 2, 0, 1).reshape(w_shape)


def _depthwise_input_grad(spread, w, groups, in_hw, dilation):
    """dX (B, H, W, C) from the spread, padded NHWC dY (B, ., ., C m): the same windows + einsum with the
    flipped kernel, also summing over the m outputs of each input channel."""
    xp = backend.xp_of(spread)
    kh, kw = w.shape[2:]
    win = _windows(spread, (kh, kw), (1, 1), dilation, in_hw)                      # (B, H, W, kh, kw, C m)
    B, H, W = win.shape[:3]
    win = win.reshape(B, H, W, kh, kw, groups, -1).transpose(0, 1, 2, 3, 4, 6, 5)  # (..., m, C): a view
    flipped = w.reshape(groups, -1, kh, kw)[:, :, ::-1, ::-1]
    return xp.einsum("bhwijmc,ijmc->bhwc", win, xp.ascontiguousarray(flipped.transpose(2, 3, 1, 0)))


def _add_bias(yn, b):
    if b is not None:
        yn += b  # NHWC: the bias broadcasts along the contiguous last axis
    return yn


# ---------------------------------------------------------------------- conv2d
class Conv2d(Function):
    """y[b, o, Y, X] = bias[o] + sum_{c, i, j} x_pad[b, g(o) C_g + c, s Y + d i, s X + d j] w[o, c, i, j]
    with C_g = C_in / groups input channels per group and g(o) the group of output channel o.

    forward   im2col of the padded NHWC input (B Ho Wo, kh kw C_g) @ weight matrix (kh kw C_g, C_out/groups):
              one GEMM, the groups as the batch axis of a batched matmul
    dL/dW     cols^T @ dL/dY with the saved im2col matrix (split-K when the result is small)
    dL/dX     conv_transpose2d(dL/dY, W): windows + one GEMM, or col2im (see _conv_input_grad)
    dL/db     sum of dL/dY over batch and pixels
    Depthwise convs (C_g = 1) use one einsum on the window view for each of the three instead."""
    op_name = "conv2d"

    def forward(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        out_hw = _check_conv2d(x, w, b, stride, padding, dilation, groups)
        self.args = (stride, padding, dilation, groups)
        self.x_hw, self.w_shape = x.shape[2:], w.shape
        cols = _conv_operand(x, w, stride, padding, dilation, groups, out_hw)
        yn = _conv_apply(cols, w, groups, x.shape[0], out_hw)
        # the im2col matrix is kept for dW (kh kw C_g floats per output pixel, 115 MB for a 32 -> 64
        # channel 3x3 layer on 128 images of 28x28): gathering it again in backward measured 5-10% slower
        self.save_for_backward(cols if self.needs_input_grad[1] else None, w)
        return _as_nchw(_add_bias(yn, b))

    def backward(self, g):
        cols, w = self.saved
        stride, padding, dilation, groups = self.args
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            gx = _as_nchw(_conv_input_grad(g, w, self.x_hw, stride, padding, dilation, groups))
        if need[1]:
            gw = _conv_weight_grad(cols, g, self.w_shape, groups)
        if len(need) > 2 and need[2]:
            gb = g.sum(axis=(0, 2, 3))
        return gx, gw, gb


def _check_conv2d(x, w, b, stride, padding, dilation, groups):
    op = "conv2d"
    _check_4d(op, x, "input (B, C, H, W)")
    _check_4d(op, w, "weight (C_out, C_in/groups, kh, kw)")
    if int(groups) != groups or groups < 1:
        raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")
    c_in, c_out = x.shape[1], w.shape[0]
    if c_in % groups or c_out % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c_in}) and the output channels "
                         f"({c_out}); input {tuple(x.shape)}, weight {tuple(w.shape)}")
    if w.shape[1] * groups != c_in:
        raise ShapeError(f"{op}: input {tuple(x.shape)} has {c_in} channels but weight {tuple(w.shape)} with "
                         f"groups={groups} expects {w.shape[1] * groups}")
    if b is not None and tuple(b.shape) != (c_out,):
        raise ShapeError(f"{op}: bias of shape {tuple(b.shape)}, expected ({c_out},) for weight {tuple(w.shape)}")
    out_hw = tuple(_conv_out_size(n, k, s, p, d) for n, k, s, p, d in
                   zip(x.shape[2:], w.shape[2:], stride, padding, dilation))
    if min(out_hw) <= 0:
        raise ShapeError(f"{op}: output size {out_hw} is not positive for input {tuple(x.shape)}, weight "
                         f"{tuple(w.shape)}, stride={stride}, padding={padding}, dilation={dilation}")
    return out_hw


# ---------------------------------------------------------------------- conv_transpose2d
class ConvTranspose2d(Function):
    """The adjoint of conv2d: y = conv2d^T(x), so that <conv2d(z, W), x> = <z, conv_transpose2d(x, W)>.
    Each input pixel scatters x[b, i, u, v] * w[i, o, :, :] onto the output at (s u - p, s v - p).

    weight (C_in, C_out/groups, kh, kw) as in PyTorch: read as a conv2d weight from C_out to C_in.
    forward   = conv2d's input gradient (col2im for stride > 1: no products with inserted zeros)
    dL/dX     = conv2d(dL/dY, W)           (the forward conv: im2col of dL/dY, one GEMM)
    dL/dW     = conv2d's weight gradient with the roles of input and output gradient swapped,
                reusing the same im2col matrix of dL/dY."""
    op_name = "conv_transpose2d"

    def forward(self, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        out_hw = _check_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
        self.args = (stride, padding, dilation, groups)
        self.x_shape, self.w_shape = x.shape, w.shape
        self.save_for_backward(x if self.needs_input_grad[1] else None, w)
        yn = _conv_input_grad(x, w, out_hw, stride, padding, dilation, groups)
        return _as_nchw(_add_bias(yn, b))

    def backward(self, g):
        x, w = self.saved
        stride, padding, dilation, groups = self.args
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0] or need[1]:
            # windows limited to x's size: with output_padding >= stride the last ones see no input
            cols = _conv_operand(g, w, stride, padding, dilation, groups, self.x_shape[2:])
            if need[0]:
                gx = _as_nchw(_conv_apply(cols, w, groups, g.shape[0], self.x_shape[2:]))
            if need[1]:
                gw = _conv_weight_grad(cols, x, self.w_shape, groups)
        if len(need) > 2 and need[2]:
            gb = g.sum(axis=(0, 2, 3))
        return gx, gw, gb


def _check_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    op = "conv_transpose2d"
    _check_4d(op, x, "input (B, C, H, W)")
    _check_4d(op, w, "weight (C_in, C_out/groups, kh, kw)")
    if int(groups) != groups or groups < 1:
        raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")
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
    if min(out_hw) <= 0:
        raise ShapeError(f"{op}: output size {out_hw} is not positive for input {tuple(x.shape)}, weight "
                         f"{tuple(w.shape)}, stride={stride}, padding={padding}, dilation={dilation}")
    return out_hw


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
    return _as_nchw(_scatter_taps(parts, x_shape, kernel, stride, padding, (1, 1), out_hw, g.dtype,
                                  backend.xp_of(g), overlap))


class MaxPool2d(Function):
    """y[b, c, Y, X] = max over the window (s Y + i - p, s X + j - p), 0 <= i < kh, 0 <= j < kw
    (padding counts as -inf). The gradient goes to the first maximum of each window (PyTorch's
    choice for ties); overlapping windows add up.

    Speed: a running max over the kh kw taps (each tap is a strided view of all windows at once),
    rather than copying every window and calling argmax over a middle axis (slow in NumPy). The
    winning tap is remembered in a small uint8 array with arithmetic instead of masked assignment
    (copyto(where=...) and arg[mask] = t are ~5x slower): taps are visited in increasing order t, so
    "tap t beats the running max" can be recorded as arg = maximum(arg, t * (tap > max)).
    Backward: kh kw masked slice-adds."""
    op_name = "max_pool2d"

    def forward(self, x, kernel_size, stride, padding):
        xp = backend.xp_of(x)
        kernel, stride, padding, out_hw = _pool_params("max_pool2d", x, kernel_size, stride, padding)
        win = _pool_windows(x, kernel, stride, padding, out_hw, -math.inf)
        out = win[:, :, :, 0, 0, :].copy()
        arg = xp.zeros(out.shape, dtype=xp.uint8 if kernel[0] * kernel[1] <= 256 else xp.int32)
        for t in range(1, kernel[0] * kernel[1]):
            tap = win[:, :, :, t // kernel[1], t % kernel[1], :]
            better = tap > out  # strict: the first maximum wins
            xp.maximum(out, tap, out=out)
            xp.maximum(arg, better * arg.dtype.type(t), out=arg)
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
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d: 2-D cross-correlation of x (B, C_in, H, W) with weight (C_out, C_in/groups, kh, kw),
    plus bias (C_out,). stride, padding (zeros), dilation: an int or a (height, width) pair.
    Output (B, C_out, H_out, W_out), H_out = floor((H + 2p - d(kh-1) - 1) / s) + 1."""
    stride, padding, dilation = _conv_params("conv2d", stride, padding, dilation)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*inputs, **attrs)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """F.conv_transpose2d (the gradient of conv2d w.r.t. its input, as an op): x (B, C_in, H, W),
    weight (C_in, C_out/groups, kh, kw), bias (C_out,). Output (B, C_out, H_out, W_out) with
    H_out = (H - 1) s - 2p + d(kh-1) + output_padding + 1 (output_padding < stride or dilation picks
    among the input sizes that conv2d maps to the same output size)."""
    stride, padding, dilation = _conv_params("conv_transpose2d", stride, padding, dilation)
    output_padding = _pair(output_padding, "output_padding", "conv_transpose2d")
    attrs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=int(groups),
                 dilation=dilation)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return ConvTranspose2d.apply(*inputs, **attrs)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """F.max_pool2d: max over kernel_size windows every `stride` pixels (default: kernel_size),
    padding with -inf (at most half the kernel). Output (B, C, floor((H + 2p - k) / s) + 1, ...)."""
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """F.avg_pool2d with count_include_pad=True: window sums divided by kh kw, zero padding included."""
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling by an integer factor (or a (height, width) pair of them):
    (B, C, H, W) -> (B, C, sh H, sw W)."""
    if x.ndim != 4:
        raise ShapeError(f"upsample_nearest: input must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
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
    return upsample_nearest(x, scale_factor)
