"""The fast convolution (conv_fast.py, behind F.conv2d / F.conv_transpose2d) against the textbook
version in conv.py (conv2d_plain / conv_transpose2d_plain): the same values and the same gradients
of input, weight and bias on random shapes, strides, paddings, dilations and groups (depthwise
included), with the fast path's tiles made tiny so that every product runs over several tiles.
The plain version itself is checked by gradcheck and against the naive loops of test_conv.py."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import Tensor, _threads, gradcheck
from autograd.ops import conv_fast

from .test_conv import array, conv2d_ref, conv_cases, conv_transpose2d_ref, conv_transpose_cases, layouts

SETTINGS = settings(max_examples=25, deadline=None)


# each case runs with the default tiles (one tile for these small shapes), with tiles of a single
# image, so that the tile loops and their boundaries are exercised, and with the batch cut between two
# threads (autograd/_threads.py) however small the work
TILES = pytest.mark.parametrize("tile_bytes", [conv_fast._TILE_BYTES, 1, "threads"],
                                ids=["one tile", "many tiles", "two threads"])


@contextlib.contextmanager
def tiles_of(nbytes):
    """Tiles of nbytes; "threads": tiles of one image, the batch cut between two threads."""
    saved, conv_fast._TILE_BYTES = conv_fast._TILE_BYTES, 1 if nbytes == "threads" else nbytes
    try:
        with _threads.threads(2 if nbytes == "threads" else 1, min_bytes=1):
            yield
    finally:
        conv_fast._TILE_BYTES = saved


def _values_and_grads(fn, x, w, b, g_seed):
    xs = Tensor(x, dtype="float64", requires_grad=True)
    ws = Tensor(w, dtype="float64", requires_grad=True)
    bs = Tensor(b, dtype="float64", requires_grad=True)
    out = fn(xs, ws, bs)
    g = np.random.default_rng(g_seed).standard_normal(out.shape)
    out.backward(g)
    return out.numpy(), xs.grad, ws.grad, bs.grad


def _assert_same(fast, plain):
    for name, a, b in zip(("output", "dL/dx", "dL/dw", "dL/db"), fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


@TILES
@SETTINGS
@given(conv_cases(), layouts, st.integers(0, 10_000))
def test_fast_conv2d_equals_plain(tile_bytes, case, layout, seed):
    x_shape, w_shape, groups, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w, b = array(rng, x_shape, layout), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    with tiles_of(tile_bytes):
        fast = _values_and_grads(lambda x, w, b: F.conv2d(x, w, b, **kw), x, w, b, seed)
    plain = _values_and_grads(lambda x, w, b: F.conv2d_plain(x, w, b, **kw), x, w, b, seed)
    _assert_same(fast, plain)


@TILES
@SETTINGS
@given(conv_transpose_cases(), layouts, st.integers(0, 10_000))
def test_fast_conv_transpose2d_equals_plain(tile_bytes, case, layout, seed):
    x_shape, w_shape, groups, stride, padding, output_padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w = array(rng, x_shape, layout), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[1] * groups)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    with tiles_of(tile_bytes):
        fast = _values_and_grads(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw), x, w, b, seed)
    plain = _values_and_grads(lambda x, w, b: F.conv_transpose2d_plain(x, w, b, **kw), x, w, b, seed)
    _assert_same(fast, plain)


@settings(max_examples=10, deadline=None)
@given(conv_cases(), st.integers(0, 10_000))
def test_plain_conv2d_values_and_gradcheck(case, seed):
    x_shape, w_shape, groups, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = F.conv2d_plain(Tensor(x, dtype="float64"), Tensor(w, dtype="float64"), Tensor(b, dtype="float64"), **kw)
    np.testing.assert_allclose(out.numpy(), conv2d_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    gradcheck(lambda x, w, b: F.conv2d_plain(x, w, b, **kw), x, w, b)


@settings(max_examples=10, deadline=None)
@given(conv_transpose_cases(), st.integers(0, 10_000))
def test_plain_conv_transpose2d_values_and_gradcheck(case, seed):
    x_shape, w_shape, groups, stride, padding, output_padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1] * groups)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    out = F.conv_transpose2d_plain(Tensor(x, dtype="float64"), Tensor(w, dtype="float64"),
                                   Tensor(b, dtype="float64"), **kw)
    np.testing.assert_allclose(out.numpy(), conv_transpose2d_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    gradcheck(lambda x, w, b: F.conv_transpose2d_plain(x, w, b, **kw), x, w, b)


# ---------------------------------------------------------------------- masked_conv2d (kept taps only)
@st.composite
def masked_cases(draw):
    """A kernel of 1..4 x 1..4 taps with a random 0/1 mask (at least one tap kept; rows may hold
    several stretches of kept taps), and an input large enough for the padding."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bits = draw(st.lists(st.booleans(), min_size=kh * kw, max_size=kh * kw).filter(any))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = max(1, kh - 2 * padding[0]) + draw(st.integers(0, 3))
    W = max(1, kw - 2 * padding[1]) + draw(st.integers(0, 3))
    c_in, c_out, B = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    return (B, c_in, H, W), (c_out, c_in, kh, kw), np.array(bits, float).reshape(kh, kw), padding


@TILES
@SETTINGS
@given(masked_cases(), layouts, st.integers(0, 10_000))
def test_masked_conv2d_equals_plain_conv_of_the_masked_weight(tile_bytes, case, layout, seed):
    x_shape, w_shape, mask, padding = case
    rng = np.random.default_rng(seed)
    x, w, b = array(rng, x_shape, layout), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    with tiles_of(tile_bytes):
        fast = _values_and_grads(lambda x, w, b: F.masked_conv2d(x, w, mask, b, padding=padding), x, w, b, seed)
    plain = _values_and_grads(lambda x, w, b: F.conv2d_plain(x, w * Tensor(mask, dtype="float64"), b,
                                                             padding=padding), x, w, b, seed)
    _assert_same(fast, plain)
    assert (fast[2][:, :, mask == 0] == 0).all()   # no gradient reaches a masked tap


@settings(max_examples=10, deadline=None)
@given(masked_cases(), st.integers(0, 10_000))
def test_masked_conv2d_gradcheck(case, seed):
    x_shape, w_shape, mask, padding = case
    rng = np.random.default_rng(seed)
    x, w, b = array(rng, x_shape, "sliced"), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    assert gradcheck(lambda x, w, b: F.masked_conv2d(x, w, mask, b, padding=padding), x, w, b)


def test_masked_conv2d_refuses_a_bad_mask():
    x, w = Tensor(np.zeros((1, 2, 5, 5))), Tensor(np.zeros((3, 2, 3, 3)))
    for bad in (np.ones((3, 2)), np.zeros((3, 3)), np.full((3, 3), 0.5)):
        with pytest.raises(ValueError, match=r"masked_conv2d: the mask must be 0/1 of the kernel's shape \(3, 3\)"):
            F.masked_conv2d(x, w, bad)
    with pytest.raises(ValueError, match="conv2d"):
        F.masked_conv2d(Tensor(np.zeros((1, 4, 5, 5))), w, np.ones((3, 3)))   # channels do not match


def test_tap_runs_of_the_causal_masks():
    index, runs = conv_fast._tap_runs(np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]]))
    assert index == [0, 1, 2, 3, 5] and runs == [(0, 0, 3, 0), (1, 0, 1, 3), (1, 2, 3, 4)]


def test_tiles_cover_the_batch_once():
    assert conv_fast._tiles(5, 1) == [(0, 5)]
    assert conv_fast._tiles(3, 1 << 40) == [(0, 1), (1, 2), (2, 3)]  # an image larger than a tile: one per tile
    tiles = conv_fast._tiles(10, conv_fast._TILE_BYTES // 3)
    assert tiles == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_forward_keeps_the_padded_input_not_the_im2col_matrix():
    """What conv2d saves for backward is about the size of its input, not kh kw times it."""
    x = Tensor(np.zeros((4, 8, 10, 10), np.float32))
    w = Tensor(np.zeros((16, 8, 3, 3), np.float32), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    saved = [a for a in y._ctx.saved if a is not None]
    assert sum(a.size for a in saved) <= 4 * 8 * 12 * 12 + w.size


@pytest.mark.parametrize("nhwc", [True, False])
def test_channel_sum_as_a_product_equals_the_plain_sum(nhwc):
    """The bias gradient: 1^T G on an NHWC view (the GEMV trick) and the plain sum over (B, H, W) agree,
    both within float32 rounding of the float64 sum; an NCHW array takes the plain way."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((6, 5, 7, 9)).astype(np.float32) + 3.0     # an offset, so rounding shows
    if nhwc:
        g = np.ascontiguousarray(g.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    exact = g.astype(np.float64).sum(axis=(0, 2, 3))
    fast, plain = conv_fast._channel_sum(g), conv_fast._channel_sum_plain(g)
    assert fast.shape == plain.shape == (5,) and fast.dtype == plain.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-6)
    np.testing.assert_allclose(plain, exact, rtol=1e-6)
