"""The fast path of conv2d and conv_transpose2d: the same mathematics as the textbook version in
conv.py (im2col windows, one matmul; col2im for the input gradient), arranged for speed on a CPU.
A test checks this module against conv.py's plain version on random shapes, strides, dilations
and groups. The tricks, each explained where it is used:

1. Channels-last memory (`_place`). The API is NCHW, but the work is done in NHWC: the channels of a
   pixel sit next to each other, so every window row of kw pixels x C channels is one contiguous run
   of memory and gathering windows is a fast block copy; the GEMM result (one row per output pixel,
   one column per output channel) is already NHWC. conv2d returns an NCHW-shaped *view* of NHWC
   memory (out.transpose(0, 2, 3, 1) is contiguous), so the next conv / pool / elementwise op reads
   NHWC directly and a stack of layers never transposes its activations. One copy pads, transposes
   and lays the groups out block by block.
2. Tiles (`_im2col_tiles`). The im2col matrix is kh kw times the size of the input (115 MB for a
   32 -> 64 channel 3x3 layer on 128 images of 28 x 28). Instead of building it whole, it is built a
   few images at a time into one reused buffer of about _TILE_BYTES, each tile multiplied while it is
   still in the cache, and never kept: the weight gradient builds its tiles again from the saved
   padded input. Measured on one core: 35% less time for the forward product and the weight gradient
   of a 32 -> 32 layer, and the peak memory of a step no longer holds one im2col matrix per layer.
3. Two ways to the input gradient (`_conv_input_grad`): the transposed convolution (windows of the
   spread, padded output gradient, one GEMM) or col2im (one GEMM to every tap's share, then kh kw
   slice-adds), whichever moves less memory.
4. Split-K (`_row_sum_product`) for weight gradients whose result is small (a first layer).
5. Depthwise convs (one input channel per group): einsum on the window view, no im2col.
6. Masked kernels (`MaskedConv2d`, a PixelCNN's causal masks): im2col gathers the kept taps alone
   (`_tap_runs`), so the GEMMs skip the zero taps: 5 of 9 for a 3x3 mask B, 24 of 49 for a 7x7 mask A.
7. Threads (`autograd/_threads.py`). The GEMMs are threaded by the BLAS, the copies and slice-adds
   around them are not: the batch is cut into one run of images per thread, and each thread does the
   plain tile loop on its images with a single-threaded BLAS (the products, the weight gradient's
   partial sums, added at the end, and col2im's adds into its own images' pixels).
Python loops run only over kernel taps, tiles and runs of images, never over pixels, channels or groups.

Only the array module of the inputs (NumPy or CuPy) is used, through `backend`.
"""
import itertools

from .. import _threads, backend
from ..function import Function

_TILE_BYTES = 4 << 20  # im2col rows built at a time: a few MB, so a tile is still in the cache when multiplied


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
    buf = xp.empty((groups, B, size[0], size[1], C // groups), dtype=x.dtype)
    src, dst = [], []
    for n, t, s, total in zip((H, W), offset, step, size):
        lo = max(0, -(t // s))                                   # first u with t + s u >= 0
        hi = min(n, (total - 1 - t) // s + 1) if total - 1 - t >= 0 else 0  # last u with t + s u < total, +1
        if hi <= lo:
            buf.fill(fill)
            return buf
        src.append(slice(lo, hi))
        dst.append(slice(t + s * lo, t + s * (hi - 1) + 1, s))

    def images(b0, b1):  # the images b0 <= b < b1 (a thread of _threads.over_batch): fill, then x's pixels
        buf[:, b0:b1] = fill
        buf[:, b0:b1, dst[0], dst[1], :] = xg[:, b0:b1, src[0], src[1], :]

    _threads.over_batch(xp, B, images, x.nbytes // max(B, 1))
    return buf


def _windows(xn, kernel, stride, dilation, out_hw):
    """All kernel windows of the (..., H, W, C) array xn as a strided view (..., H_out, W_out, kh, kw, C):
    no copy. Window (y, x) starts at pixel (s y, s x); its taps are d apart."""
    xp = backend.xp_of(xn)
    sh, sw, sc = xn.strides[-3:]
    shape = xn.shape[:-3] + (out_hw[0], out_hw[1], kernel[0], kernel[1], xn.shape[-1])
    strides = xn.strides[:-3] + (sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc)
    return backend.as_strided(xp, xn, shape, strides)


def _tiles(batch, bytes_per_image):
    """[(b0, b1), ...]: the batch cut into runs of whole images of about _TILE_BYTES each."""
    n = max(1, _TILE_BYTES // max(1, bytes_per_image))
    return [(b0, min(batch, b0 + n)) for b0 in range(0, batch, n)]


def _tap_runs(mask):
    """The kept taps of a 0/1 kernel mask (kh, kw) (a host array): (index, runs). index: the flat tap
    numbers i kw + j of the kept taps in raster order (T of them); runs: (i, j0, j1, t0) for every
    stretch of kept taps j0 <= j < j1 in kernel row i, whose taps are t0, t0 + 1, ... of the T. A
    stretch of n taps is one contiguous run of n C floats in a window row of NHWC memory, so im2col
    copies it in one piece (a causal mask keeps at most one stretch per row)."""
    index, runs = [], []
    for i, row in enumerate(backend.to_numpy(mask).tolist()):
        j = 0
        for kept, stretch in itertools.groupby(row, key=bool):   # the row cut into stretches of equal bits
            n = len(list(stretch))
            if kept:
                runs.append((i, j, j + n, len(index)))
                index.extend(range(i * len(row) + j, i * len(row) + j + n))
            j += n
    return index, runs


def _kept_rows(m, index, taps_total):
    """The rows of the kept taps of a GEMM weight operand m (1, kh kw C, O) whose rows are tap-major:
    (1, T C, O) for the T tap numbers in index."""
    m = m.reshape(1, taps_total, -1, m.shape[2])
    return m[:, backend.xp_of(m).asarray(index)].reshape(1, -1, m.shape[3])


def _im2col_tiles(xg, kernel, stride, dilation, out_hw, taps=None):
    """Yield (b0, b1, cols) for runs of images b0 <= b < b1, where cols (groups, (b1 - b0) H_out W_out,
    kh kw C/groups) is the GEMM operand of those images: one row per output pixel holding its whole
    receptive field ("im2col"), copied from the windows of the group-major NHWC array xg
    (groups, B, H, W, C/groups). Groups are the batch axis of a batched matmul. With taps (from
    `_tap_runs`) a row holds the T kept taps alone: (groups, rows, T C/groups).

    Speed: every tile is copied into the same buffer of about _TILE_BYTES (see the module
    docstring), so `cols` is overwritten by the next tile: use it before asking for the next."""
    xp = backend.xp_of(xg)
    win = _windows(xg, kernel, stride, dilation, out_hw)  # (G, B, Ho, Wo, kh, kw, C/G), a view
    G, B, Ho, Wo, kh, kw, cg = win.shape
    T = kh * kw if taps is None else len(taps[0])
    K = T * cg
    tiles = _tiles(B, G * Ho * Wo * K * xg.dtype.itemsize)
    per_tile = tiles[0][1] - tiles[0][0]
    buf = xp.empty((G, per_tile * Ho * Wo * K), dtype=xg.dtype)
    for b0, b1 in tiles:
        rows = (b1 - b0) * Ho * Wo
        if taps is None:
            cols = buf[:, :rows * K].reshape(G, b1 - b0, Ho, Wo, kh, kw, cg)
            cols[...] = win[:, b0:b1]
        else:
            cols = buf[:, :rows * K].reshape(G, b1 - b0, Ho, Wo, T, cg)
            for i, j0, j1, t0 in taps[1]:  # one copy per stretch of kept taps (at most kh kw)
                cols[:, :, :, :, t0:t0 + j1 - j0] = win[:, b0:b1, :, :, i, j0:j1]
        yield b0, b1, cols.reshape(G, rows, K)


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
def _depthwise(w_shape, groups):
    """Every group has one input channel (depthwise, C_out = m C_in): einsum on windows, see below."""
    return groups > 1 and w_shape[1] == 1


def _padded(x, padding, w, groups):
    """The padded NHWC copy of x that every product of conv2d with weight w reads (and backward
    keeps): group-major (groups, B, H, W, C/groups), except for depthwise convs, whose einsum reads
    plain NHWC (1, B, H, W, C)."""
    H, W = x.shape[2:]
    layout = 1 if _depthwise(w.shape, groups) else groups
    return _place(x, (H + 2 * padding[0], W + 2 * padding[1]), padding, groups=layout)


def _pointwise(xg, kernel, stride, out_hw):
    """A 1x1 kernel with stride 1 over an unpadded, contiguous input: im2col would only copy it."""
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(xg.shape[2:4]) == tuple(out_hw) \
        and xg.flags.c_contiguous


def _cols_bytes(xg, K, HW):
    """The bytes of one image's im2col rows (HW rows of K numbers a group): the work _threads.over_batch weighs."""
    return xg.shape[0] * HW * K * xg.dtype.itemsize


def _tiled_product(xg, wm, kernel, stride, dilation, out_hw, taps=None):
    """conv(xg) as (g, B H_out W_out, C_out/g): for each tile of images, its im2col rows @ wm
    (g, kh kw C_in/g, C_out/g), written straight into the result. With taps: the kept taps' rows
    of both, wm (g, T C_in/g, C_out/g)."""
    xp = backend.xp_of(xg)
    G, B = xg.shape[:2]
    HW = out_hw[0] * out_hw[1]
    if taps is None and _pointwise(xg, kernel, stride, out_hw):  # 1x1: the NHWC input is its own im2col matrix
        return xg.reshape(G, B * HW, -1) @ wm
    out = xp.empty((G, B * HW, wm.shape[2]), dtype=xg.dtype)

    def images(i0, i1):  # the images i0 <= b < i1, a tile at a time (a thread of _threads.over_batch)
        for b0, b1, cols in _im2col_tiles(xg[:, i0:i1], kernel, stride, dilation, out_hw, taps):
            xp.matmul(cols, wm, out=out[:, (i0 + b0) * HW:(i0 + b1) * HW])  # the GEMM of this tile

    _threads.over_batch(xp, B, images, _cols_bytes(xg, wm.shape[1], HW))
    return out


def _tiled_weight_grad(xg, gm, w_shape, stride, dilation, out_hw, taps=None):
    """dL/dW = cols^T @ dL/dY summed over every output pixel of the batch, tile by tile (gm: dL/dY as
    (g, B H_out W_out, C_out/g)); returned in the weight's layout (C_out, C_in/g, kh, kw). With taps:
    the kept taps' gradient, and 0 on the others."""
    xp = backend.xp_of(xg)
    co, cg, kh, kw = w_shape
    G, B = xg.shape[:2]
    HW = out_hw[0] * out_hw[1]
    T = kh * kw if taps is None else len(taps[0])
    if taps is None and _pointwise(xg, (kh, kw), stride, out_hw):  # a 1x1 conv: no im2col
        gw = _row_sum_product(xg.reshape(G, B * HW, -1), gm)
    else:
        def images(i0, i1):  # the images i0 <= b < i1's share of the sum (a thread of _threads.over_batch)
            gw = xp.zeros((G, T * cg, co // G), dtype=xg.dtype)
            for b0, b1, cols in _im2col_tiles(xg[:, i0:i1], (kh, kw), stride, dilation, out_hw, taps):
                gw += _row_sum_product(cols, gm[:, (i0 + b0) * HW:(i0 + b1) * HW])
            return gw

        gw = sum(_threads.over_batch(xp, B, images, _cols_bytes(xg, T * cg, HW)))
    if taps is not None:  # put the T taps back among the kh kw, zeros on the masked ones
        full = xp.zeros((G, kh * kw, cg, co // G), dtype=xg.dtype)
        full[:, xp.asarray(taps[0])] = gw.reshape(G, T, cg, co // G)
        gw = full
    return gw.reshape(G, kh, kw, cg, co // G).transpose(0, 4, 3, 1, 2).reshape(w_shape)


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
    if w.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0) and tuple(in_hw) == tuple(g.shape[2:]) \
            and not _depthwise(w.shape, groups):
        # a 1x1 conv: dX = dY W^T, one GEMM on the NHWC matrix of dY
        gx = _nchw_to_matrix(g, groups) @ _weight_matrix(w, groups).transpose(0, 2, 1)
        return _matrix_to_nhwc(gx, g.shape[0], in_hw)
    if _depthwise(w.shape, groups) or (stride == (1, 1) and w.shape[0] < 3 * w.shape[1] * groups):
        return _spread_input_grad(g, w, in_hw, stride, padding, dilation, groups)
    return _col2im_input_grad(g, w, in_hw, stride, padding, dilation, groups)


def _spread_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    """dL/dX as a transposed convolution: a stride-1 convolution with the flipped, in/out-swapped
    kernel of dY spread out by s (s - 1 zeros between pixels) and padded by d(k-1) - p. `_place`
    builds that spread, padded NHWC array in one copy, and the rest is the same tiled windows + GEMM
    as the forward pass."""
    B = g.shape[0]
    kh, kw = w.shape[2:]
    (H, W), (sh, sw), (ph, pw), (dh, dw) = in_hw, stride, padding, dilation
    size, offset = (H + (kh - 1) * dh, W + (kw - 1) * dw), ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    if _depthwise(w.shape, groups):
        return _depthwise_input_grad(_place(g, size, offset, (sh, sw))[0], w, groups, (H, W), dilation)
    spread = _place(g, size, offset, (sh, sw), groups=groups)
    y = _tiled_product(spread, _adjoint_weight_matrix(w, groups), (kh, kw), (1, 1), dilation, (H, W))
    return _matrix_to_nhwc(y, B, (H, W))


def _col2im_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    """dL/dX "col2im" style: one GEMM gives every tap's share, dY (B Ho Wo, C_out) @ W^T (C_out, kh kw C_in),
    and each of the kh kw taps is added back onto the pixels it read (a strided slice-add per tap,
    over all the windows of a tile of images at once). No products with inserted zeros, so this is
    the cheap way for stride > 1. Tiled like im2col: the taps of a few images at a time."""
    xp = backend.xp_of(g)
    B, _, Ho, Wo = g.shape
    kh, kw = w.shape[2:]
    cg = w.shape[1]
    (H, W), (ph, pw) = in_hw, padding
    gm = _nchw_to_matrix(g, groups)                                  # (g, B Ho Wo, C_out/g)
    wt = _weight_matrix(w, groups).transpose(0, 2, 1)                # (g, C_out/g, kh kw C_in/g)
    gx = xp.zeros((groups, B, H + 2 * ph, W + 2 * pw, cg), dtype=g.dtype)
    gwin = _windows(gx, (kh, kw), stride, dilation, (Ho, Wo))       # a writable view into gx
    bytes_per_image = groups * Ho * Wo * kh * kw * cg * g.dtype.itemsize

    def images(i0, i1):  # the images i0 <= b < i1 (a thread of _threads.over_batch: its own pixels of gx)
        for t0, t1 in _tiles(i1 - i0, bytes_per_image):
            b0, b1 = i0 + t0, i0 + t1
            taps = gm[:, b0 * Ho * Wo:b1 * Ho * Wo] @ wt            # (g, b Ho Wo, kh kw C_in/g)
            taps = taps.reshape(groups, b1 - b0, Ho, Wo, kh, kw, cg)
            for i in range(kh):
                for j in range(kw):
                    gwin[:, b0:b1, :, :, i, j, :] += taps[:, :, :, :, i, j, :]

    _threads.over_batch(xp, B, images, bytes_per_image)
    gx = gx[:, :, ph:ph + H, pw:pw + W] if (ph, pw) != (0, 0) else gx
    return gx[0] if groups == 1 else gx.transpose(1, 2, 3, 0, 4).reshape(B, H, W, groups * cg)


def _scatter_taps(parts, x_shape, kernel, stride, padding, out_hw, dtype, xp, overlap=True):
    """The adjoint of taking pooling windows: a zero NHWC image (B, H + 2p, W + 2p, C) that receives,
    for each kernel tap (i, j), values (B, Ho, Wo, C) at the pixels (s Y + i, s X + j) that tap read;
    returned as NHWC without the padding. One strided slice-add per tap covers every window of the
    batch at once (at most kh kw Python iterations); different taps that hit the same pixel
    (overlapping windows) add up. With overlap=False (stride >= kernel) assignment is enough."""
    B, C, H, W = x_shape
    (ph, pw) = padding
    gx = xp.zeros((B, H + 2 * ph, W + 2 * pw, C), dtype=dtype)
    gwin = _windows(gx, kernel, stride, (1, 1), out_hw)  # a writable view into gx
    for (i, j), part in parts:
        if overlap:
            gwin[..., i, j, :] += part
        else:
            gwin[..., i, j, :] = part
    return gx[:, ph:ph + H, pw:pw + W] if (ph, pw) != (0, 0) else gx


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


def _conv_forward(xg, w, stride, dilation, groups, out_hw):
    """conv2d's output as NHWC (B, Ho, Wo, C_out) from the padded group-major NHWC input xg."""
    if _depthwise(w.shape, groups):
        return _depthwise_forward(_windows(xg[0], w.shape[2:], stride, dilation, out_hw), w)
    y = _tiled_product(xg, _weight_matrix(w, groups), w.shape[2:], stride, dilation, out_hw)
    return _matrix_to_nhwc(y, xg.shape[1], out_hw)


def _conv_weight_grad(xg, g, w_shape, stride, dilation, groups):
    """dL/dW of conv2d from the padded input xg and the NCHW output gradient g."""
    out_hw = g.shape[2:]
    if _depthwise(w_shape, groups):
        return _depthwise_weight_grad(_windows(xg[0], w_shape[2:], stride, dilation, out_hw), g, w_shape)
    return _tiled_weight_grad(xg, _nchw_to_matrix(g, groups), w_shape, stride, dilation, out_hw)


def _add_bias(yn, b):
    """yn += b for an NHWC array (B, H, W, C): the bias broadcasts along the contiguous last axis; the
    batch cut between the engine's threads."""
    if b is not None:
        def images(b0, b1):  # the images b0 <= i < b1 (a thread of _threads.over_batch)
            yn[b0:b1] += b
        _threads.over_batch(backend.xp_of(yn), len(yn), images, yn.nbytes // max(len(yn), 1))
    return yn


# ---------------------------------------------------------------------- the ops
class Conv2d(Function):
    """y[b, o, Y, X] = bias[o] + sum_{c, i, j} x_pad[b, g(o) C_g + c, s Y + d i, s X + d j] w[o, c, i, j]
    with C_g = C_in / groups input channels per group and g(o) the group of output channel o.

    forward   im2col of the padded NHWC input (B Ho Wo, kh kw C_g) @ weight matrix (kh kw C_g, C_out/groups),
              tile by tile; the groups as the batch axis of a batched matmul
    dL/dW     cols^T @ dL/dY, the im2col tiles built again from the saved padded input
    dL/dX     conv_transpose2d(dL/dY, W): windows + one GEMM, or col2im (see _conv_input_grad)
    dL/db     sum of dL/dY over batch and pixels
    Depthwise convs (C_g = 1) use one einsum on the window view for each of the three instead.
    Arguments are checked by conv.conv2d before they reach here."""
    op_name = "conv2d"

    def forward(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, out_hw=None):
        self.args = (stride, padding, dilation, groups)
        self.x_hw, self.w_shape = x.shape[2:], w.shape
        xg = _padded(x, padding, w, groups)
        yn = _conv_forward(xg, w, stride, dilation, groups, out_hw)
        # the padded input (about the size of x) is kept for dW, not the kh kw times larger im2col matrix
        self.save_for_backward(xg if self.needs_input_grad[1] else None, w)
        return _as_nchw(_add_bias(yn, b))

    def backward(self, g):
        xg, w = self.saved
        stride, padding, dilation, groups = self.args
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            gx = _as_nchw(_conv_input_grad(g, w, self.x_hw, stride, padding, dilation, groups))
        if need[1]:
            gw = _conv_weight_grad(xg, g, self.w_shape, stride, dilation, groups)
        if len(need) > 2 and need[2]:
            gb = _channel_sum(g)
        return gx, gw, gb


class MaskedConv2d(Function):
    """y = conv2d(x, w * mask) for a fixed 0/1 tap mask (kh, kw), stride 1, no dilation, one group: a
    PixelCNN's causal convolution, computed on the T kept taps alone (trick 6 of the module docstring).
    The values and gradients are those of conv2d(x, w * mask): dL/dW is conv2d's weight gradient times
    the mask (0 on the masked taps), dL/dX the transposed convolution with the flipped kernel, whose
    kept taps are the flipped mask's.

    forward   im2col of the kept taps (B Ho Wo, T C_in) @ the kept rows of the weight (T C_in, C_out)
    dL/dW     the same tiles^T @ dL/dY, scattered back to (C_out, C_in, kh, kw)
    dL/dX     the kept taps of the flipped kernel over the padded dL/dY, one GEMM per tile
    Arguments are checked by conv.masked_conv2d before they reach here."""
    op_name = "masked_conv2d"

    def forward(self, x, w, b=None, mask=None, padding=(0, 0), out_hw=None):
        (H, W), (ph, pw) = x.shape[2:], padding
        self.w_shape, (kh, kw) = w.shape, w.shape[2:]
        self.x_hw, self.padding, self.mask = (H, W), padding, mask
        self.taps = taps = _tap_runs(mask)
        xg = _place(x, (H + 2 * ph, W + 2 * pw), padding)                       # (1, B, Hp, Wp, C_in)
        wm = _kept_rows(_weight_matrix(w, 1), taps[0], kh * kw)                 # (1, T C_in, C_out)
        y = _tiled_product(xg, wm, (kh, kw), (1, 1), (1, 1), out_hw, taps)
        self.save_for_backward(xg if self.needs_input_grad[1] else None, w)
        return _as_nchw(_add_bias(_matrix_to_nhwc(y, x.shape[0], out_hw), b))

    def backward(self, g):
        xg, w = self.saved
        need = self.needs_input_grad
        kh, kw = self.w_shape[2:]
        (H, W), (ph, pw) = self.x_hw, self.padding
        gx = gw = gb = None
        if need[0]:
            # dX = the stride-1 transposed convolution: the flipped, in/out-swapped kernel over dY padded by k - 1 - p
            taps = _tap_runs(self.mask[::-1, ::-1])
            spread = _place(g, (H + kh - 1, W + kw - 1), (kh - 1 - ph, kw - 1 - pw))   # (1, B, ., ., C_out)
            wa = _kept_rows(_adjoint_weight_matrix(w, 1), taps[0], kh * kw)     # (1, T' C_out, C_in)
            y = _tiled_product(spread, wa, (kh, kw), (1, 1), (1, 1), (H, W), taps)
            gx = _as_nchw(_matrix_to_nhwc(y, g.shape[0], (H, W)))
        if need[1]:
            gw = _tiled_weight_grad(xg, _nchw_to_matrix(g, 1), self.w_shape, (1, 1), (1, 1), g.shape[2:], self.taps)
        if len(need) > 2 and need[2]:
            gb = _channel_sum(g)
        return gx, gw, gb


def _channel_sum(g):
    """dL/db = sum of g (B, C, H, W) over batch and pixels.

    A speed trick: where g is an NHWC view, its (B H W, C) matrix is summed over its rows as a product
    with a vector of ones, 1^T G (a BLAS GEMV, on every core). NumPy sums a tall, narrow matrix's
    columns one row at a time on one core: measured at (50176, 32) 0.81 ms against 0.12 ms, at
    (12544, 64) 0.23 against 0.05 ms (the U-Net step makes 19 of these, serially, while the other
    core waits). The GEMV also adds in blocks, so its float32 rounding is no worse. The plain way,
    `_channel_sum_plain`, is held to it by a test."""
    B, C, H, W = g.shape
    nhwc = g.transpose(0, 2, 3, 1)
    if not nhwc.flags.c_contiguous:
        return _channel_sum_plain(g)
    xp = backend.xp_of(g)
    return xp.ones(B * H * W, dtype=g.dtype) @ nhwc.reshape(B * H * W, C)     # 1^T (B H W, C) -> (C,)


def _channel_sum_plain(g):
    """dL/db = sum of g (B, C, H, W) over the batch and the pixels, as it reads."""
    return g.sum(axis=(0, 2, 3))


class ConvTranspose2d(Function):
    """The adjoint of conv2d: y = conv2d^T(x), so that <conv2d(z, W), x> = <z, conv_transpose2d(x, W)>.
    Each input pixel scatters x[b, i, u, v] * w[i, o, :, :] onto the output at (s u - p, s v - p).

    weight (C_in, C_out/groups, kh, kw) as in PyTorch: read as a conv2d weight from C_out to C_in.
    forward   = conv2d's input gradient (col2im for stride > 1: no products with inserted zeros)
    dL/dX     = conv2d(dL/dY, W)           (the forward conv: im2col of dL/dY, one GEMM)
    dL/dW     = conv2d's weight gradient with the roles of input and output gradient swapped,
                from the same padded dL/dY.
    Arguments are checked by conv.conv_transpose2d before they reach here."""
    op_name = "conv_transpose2d"

    def forward(self, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, out_hw=None):
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
            gg = _padded(g, padding, w, groups)
            # windows limited to x's size: with output_padding >= stride the last ones see no input
            if need[0]:
                gx = _as_nchw(_conv_forward(gg, w, stride, dilation, groups, self.x_shape[2:]))
            if need[1]:
                gw = _conv_weight_grad(gg, x, self.w_shape, stride, dilation, groups)
        if len(need) > 2 and need[2]:
            gb = _channel_sum(g)
        return gx, gw, gb
