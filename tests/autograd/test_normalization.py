"""Normalisations (layer_norm, group_norm, batch_norm): gradients (gradcheck in float64), values against
NumPy, non-contiguous inputs, running statistics in training and evaluation, and errors that name the op."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, _threads, gradcheck, no_grad
from tests.autograd.numpy_reference import randn

SOME = settings(max_examples=15, deadline=None)


# ---------------------------------------------------------------------- layer_norm
@SOME
@given(lead=st.lists(st.integers(1, 3), max_size=2), norm=st.lists(st.integers(2, 4), min_size=1, max_size=2),
       affine=st.sampled_from(["none", "weight", "bias", "both"]), seed=st.integers(0, 2**16))
def test_layer_norm_gradients(lead, norm, affine, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, *lead, *norm)
    w, b = randn(rng, *norm), randn(rng, *norm)
    if affine == "none":
        assert gradcheck(lambda a: F.layer_norm(a, norm), x)
    elif affine == "weight":
        assert gradcheck(lambda a, ww: F.layer_norm(a, norm, weight=ww), x, w)
    elif affine == "bias":
        assert gradcheck(lambda a, bb: F.layer_norm(a, norm, bias=bb), x, b)
    else:
        assert gradcheck(lambda a, ww, bb: F.layer_norm(a, norm, ww, bb), x, w, b)


def test_layer_norm_non_contiguous_and_values(rng):
    x, w, b = randn(rng, 5, 4), randn(rng, 5), randn(rng, 5)
    assert gradcheck(lambda a, ww, bb: F.layer_norm(F.transpose(a), 5, ww, bb), x, w, b)
    x32 = (randn(rng, 2, 3, 16) * 3 + 1).astype(np.float32)
    y = F.layer_norm(Tensor(x32), (16,)).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-3)  # var / (var + eps)
    x64 = x.T.copy()
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    expected = (x64 - mu) / np.sqrt(var + 1e-5) * w + b
    out = F.layer_norm(Tensor(x64, dtype="float64"), 5, Tensor(w, dtype="float64"), Tensor(b, dtype="float64"))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10)


def test_layer_norm_errors():
    x = Tensor(np.zeros((4, 6)))
    with pytest.raises(ShapeError, match=r"layer_norm.*\(8,\).*\(4, 6\)"):
        F.layer_norm(x, 8)
    with pytest.raises(ShapeError, match=r"layer_norm: weight.*\(5,\)"):
        F.layer_norm(x, 6, weight=Tensor(np.ones(5)))


# ---------------------------------------------------------------------- group_norm
@SOME
@given(B=st.integers(1, 2), groups=st.integers(1, 3), per_group=st.integers(1, 2),
       spatial=st.lists(st.integers(1, 3), max_size=2), affine=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm_gradients(B, groups, per_group, spatial, affine, seed):
    rng = np.random.default_rng(seed)
    C = groups * per_group  # covers groups == 1 and groups == C
    if per_group * int(np.prod(spatial)) < 2:
        spatial = spatial + [2]  # at least two values per group
    x, w, b = randn(rng, B, C, *spatial), randn(rng, C), randn(rng, C)
    if affine:
        assert gradcheck(lambda a, ww, bb: F.group_norm(a, groups, ww, bb), x, w, b)
    else:
        assert gradcheck(lambda a: F.group_norm(a, groups), x)


def test_group_norm_edge_cases_and_values(rng):
    x, w, b = randn(rng, 2, 4, 3, 2), randn(rng, 4), randn(rng, 4)
    for groups in (1, 4):  # one group (layer-norm-like) and one channel per group (instance-norm-like)
        assert gradcheck(lambda a, ww, bb: F.group_norm(a, groups, ww, bb), x, w, b)
    assert gradcheck(lambda a: F.group_norm(F.transpose(a, 0, 1, 3, 2), 2), x)  # non-contiguous
    xg = x.reshape(2, 2, -1)
    xhat = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    out = F.group_norm(Tensor(x, dtype="float64"), 2, Tensor(w, dtype="float64"), Tensor(b, dtype="float64"))
    np.testing.assert_allclose(out.numpy(), xhat * w[:, None, None] + b[:, None, None], rtol=1e-10)
    assert F.group_norm(Tensor(x), 2).dtype == np.float32


@SOME
@given(B=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3), hw=st.integers(1, 4),
       layout=st.sampled_from(["NCHW", "NHWC"]), affine=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_group_norm_fast_equals_plain(B, groups, per_group, hw, layout, affine, threads, seed):
    """GroupNorm's per-channel sums against the textbook GroupNormPlain: values and every gradient in
    float64, on NCHW input and on an NCHW view of NHWC memory (a conv's output), whose layout the
    fast version keeps; on one thread and with the batch cut between two (autograd/_threads.py)."""
    rng = np.random.default_rng(seed)
    C = groups * per_group
    xn, w, b = randn(rng, B, hw, hw + 1, C), randn(rng, C), randn(rng, C)
    g = rng.standard_normal((B, C, hw, hw + 1))
    results = []
    for fn in (F.group_norm, F.group_norm_plain):
        x = Tensor(xn if layout == "NHWC" else np.ascontiguousarray(xn.transpose(0, 3, 1, 2)), dtype="float64",
                   requires_grad=True)
        ws, bs = Tensor(w, dtype="float64", requires_grad=True), Tensor(b, dtype="float64", requires_grad=True)
        xin = F.transpose(x, 0, 3, 1, 2) if layout == "NHWC" else x  # NHWC: an NCHW view, as conv2d returns
        with _threads.threads(threads, min_bytes=1):
            out = fn(xin, groups, ws, bs) if affine else fn(xin, groups)
            out.backward(g)
        results.append([out.numpy(), x.grad] + ([ws.grad, bs.grad] if affine else []))
        if fn is F.group_norm and layout == "NHWC":
            assert out.numpy().transpose(0, 2, 3, 1).flags.c_contiguous  # NHWC memory stays NHWC
    for fast, plain in zip(*results):
        np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda a, ww, bb: F.group_norm_plain(a, groups, ww, bb), xn.transpose(0, 3, 1, 2), w, b)


def test_group_norm_errors():
    with pytest.raises(ShapeError, match=r"group_norm.*num_groups=4.*6 channels.*\(2, 6, 3\)"):
        F.group_norm(Tensor(np.zeros((2, 6, 3))), 4)
    with pytest.raises(ShapeError, match="group_norm: weight"):
        F.group_norm(Tensor(np.zeros((2, 6, 3))), 3, weight=Tensor(np.ones(3)))


# ---------------------------------------------------------------------- batch_norm
@SOME
@given(B=st.integers(2, 4), C=st.integers(1, 3), spatial=st.sampled_from([(), (2, 2), (1, 3)]),
       affine=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_training_gradients(B, C, spatial, affine, seed):
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, B, C, *spatial), randn(rng, C), randn(rng, C)
    if affine:
        assert gradcheck(lambda a, ww, bb: F.batch_norm(a, None, None, ww, bb, training=True), x, w, b)
    else:
        assert gradcheck(lambda a: F.batch_norm(a, np.zeros(C), np.ones(C), training=True), x)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2)])
def test_batch_norm_eval_gradients_and_non_contiguous(rng, shape):
    C = shape[1]
    rm, rv = randn(rng, C), rng.uniform(0.5, 2, size=C)
    x, w, b = randn(rng, *shape), randn(rng, C), randn(rng, C)
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, rm, rv, ww, bb, training=False), x, w, b)
    xt = randn(rng, *shape[::-1])
    axes = tuple(range(len(shape)))[::-1]
    assert gradcheck(lambda a: F.batch_norm(F.transpose(a, *axes), None, None, training=True), xt)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_batch_norm_running_stats_and_eval(rng, shape):
    C = shape[1]
    axes = (0,) + tuple(range(2, len(shape)))
    x = (randn(rng, *shape) * 2 + 3).astype(np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    w, b = Tensor(rng.uniform(0.5, 2, size=C)), Tensor(randn(rng, C))
    y = F.batch_norm(Tensor(x), rm, rv, w, b, training=True, momentum=0.1)
    assert y.dtype == np.float32
    n = x.size // C
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    np.testing.assert_allclose(rm, 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)  # the unbiased variance
    yhat = (y.numpy() - b.numpy().reshape((C,) + (1,) * (len(shape) - 2))) \
        / w.numpy().reshape((C,) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(yhat.mean(axis=axes), 0, atol=1e-4)
    # running statistics held in Tensors are updated in place too, and evaluation uses them
    rm_t, rv_t = Tensor(rm.copy()), Tensor(rv.copy())
    with no_grad():
        F.batch_norm(Tensor(x), rm_t, rv_t, training=True, momentum=0.5)
    np.testing.assert_allclose(rm_t.numpy(), 0.5 * rm + 0.5 * mu, rtol=1e-5)
    y_eval = F.batch_norm(Tensor(x), rm_t, rv_t, training=False)
    view = (C,) + (1,) * (len(shape) - 2)
    expected = (x - rm_t.numpy().reshape(view)) / np.sqrt(rv_t.numpy().reshape(view) + 1e-5)
    np.testing.assert_allclose(y_eval.numpy(), expected, rtol=1e-5, atol=1e-6)
    before = rm_t.numpy().copy()
    F.batch_norm(Tensor(x), rm_t, rv_t, training=False)
    np.testing.assert_array_equal(rm_t.numpy(), before)  # evaluation leaves them alone


def test_batch_norm_errors():
    with pytest.raises(ShapeError, match=r"batch_norm: running_mean.*\(4,\)"):
        F.batch_norm(Tensor(np.zeros((2, 3))), np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="batch_norm.*more than 1 value"):
        F.batch_norm(Tensor(np.zeros((1, 3))), np.zeros(3), np.ones(3), training=True)
    with pytest.raises(ShapeError, match="batch_norm: bias"):
        F.batch_norm(Tensor(np.zeros((2, 3))), None, None, bias=Tensor(np.ones(2)), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: evaluation \(training=False\) needs running_mean"):
        F.batch_norm(Tensor(np.zeros((2, 3))), None, None)  # evaluation is the default, as in PyTorch
