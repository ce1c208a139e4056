"""Neural-network ops: gradients (gradcheck in float64), values against closed forms in NumPy,
running statistics, randomness with a fixed seed, masks, and errors that name the op."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, gradcheck, no_grad

FEW = settings(max_examples=10, deadline=None)
SOME = settings(max_examples=15, deadline=None)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def randn(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------- softmax
@SOME
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16), data=st.data())
def test_softmax_and_log_softmax_gradients(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(np.random.default_rng(seed), *shape)
    assert gradcheck(lambda a: F.softmax(a, axis=axis), x)
    assert gradcheck(lambda a: F.log_softmax(a, axis=axis), x)


def test_softmax_gradients_on_non_contiguous_input(rng):
    x = randn(rng, 4, 3, 5)
    assert gradcheck(lambda a: F.softmax(F.transpose(a, 2, 0, 1), axis=1), x)
    assert gradcheck(lambda a: F.log_softmax(a[:, ::2], axis=0), x)


def test_softmax_values(rng):
    x = randn(rng, 3, 6).astype(np.float32) * 5
    y = F.softmax(Tensor(x), axis=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), np_softmax(x.astype(np.float64), 1), rtol=1e-5)
    np.testing.assert_allclose(F.log_softmax(Tensor(x), axis=0).numpy(), np.log(np_softmax(x.astype(np.float64), 0)),
                               rtol=1e-5, atol=1e-6)
    big = Tensor([[1000.0, 1001.0, -1000.0]])  # no overflow: the max is subtracted
    np.testing.assert_allclose(F.softmax(big).numpy(), np_softmax(np.array([[0.0, 1.0, -2000.0]])), rtol=1e-6)
    assert np.isfinite(F.log_softmax(big).numpy()).all()
    np.testing.assert_allclose(Tensor(x).softmax(axis=-1).numpy(), y.numpy())  # the Tensor method


# ---------------------------------------------------------------------- classification losses
def np_cross_entropy(z, t, ignore_index=-100, eps=0.0, reduction="mean"):
    """z (B, C, *d), t (B, *d), the classes on axis 1."""
    logp = np.log(np_softmax(z, axis=1))
    logp = np.moveaxis(logp, 1, -1).reshape(-1, z.shape[1])
    t = t.reshape(-1)
    valid = t != ignore_index
    ts = np.where(valid, t, 0)
    loss = -(1 - eps) * logp[np.arange(len(t)), ts] - eps * logp.mean(axis=1)
    loss = np.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    return loss.sum() / valid.sum() if reduction == "mean" else loss.sum()


@SOME
@given(B=st.integers(1, 4), C=st.integers(2, 5), extra=st.lists(st.integers(1, 3), max_size=2),
       smoothing=st.sampled_from([0.0, 0.1]), reduction=st.sampled_from(["mean", "sum", "none"]),
       ignore=st.booleans(), seed=st.integers(0, 2**16))
def test_cross_entropy_gradients_and_values(B, C, extra, smoothing, reduction, ignore, seed):
    rng = np.random.default_rng(seed)
    z = randn(rng, B, C, *extra)
    t = rng.integers(0, C, size=(B, *extra))
    if ignore:
        t.reshape(-1)[0] = -100  # at least one ignored target
        if t.size > 1:
            t.reshape(-1)[-1] = 0  # and at least one counted
    fn = lambda a: F.cross_entropy(a, t, label_smoothing=smoothing, reduction=reduction)  # noqa: E731
    if t.size > 1 or not ignore:
        assert gradcheck(fn, z)
        expected = np_cross_entropy(z, t, eps=smoothing, reduction=reduction)
        out = F.cross_entropy(Tensor(z, dtype="float64"), Tensor(t), label_smoothing=smoothing, reduction=reduction)
        np.testing.assert_allclose(out.numpy().reshape(-1), np.reshape(expected, -1), rtol=1e-10, atol=1e-12)
        if reduction == "none":
            assert out.shape == t.shape


def test_cross_entropy_is_minus_log_softmax_at_target(rng):
    z = randn(rng, 5, 7).astype(np.float32)
    t = np.array([0, 6, 3, 3, 1])
    loss = F.cross_entropy(Tensor(z), t, reduction="none")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.numpy(), -np.log(np_softmax(z.astype(np.float64), 1))[np.arange(5), t], rtol=1e-5)
    np.testing.assert_allclose(F.cross_entropy(Tensor(z), t).item(), loss.numpy().mean(), rtol=1e-6)


def test_cross_entropy_ignore_index_and_smoothing(rng):
    z = Tensor(randn(rng, 4, 3), requires_grad=True)
    t = np.array([1, -100, 2, -100])
    loss = F.cross_entropy(z, t)
    np.testing.assert_allclose(loss.item(), np_cross_entropy(z.numpy().astype(np.float64), t), rtol=1e-5)
    loss.backward()
    np.testing.assert_array_equal(z.grad[[1, 3]], 0)  # ignored rows get no gradient
    np.testing.assert_allclose(z.grad.sum(axis=1), 0, atol=1e-6)  # softmax - onehot sums to 0 per row
    # another ignore_index, and smoothing: (1 - eps) nll + eps * mean_c(-log p_c)
    t2 = np.array([1, 5, 2, 0])
    np.testing.assert_allclose(F.cross_entropy(z, t2, ignore_index=5, label_smoothing=0.2).item(),
                               np_cross_entropy(z.numpy().astype(np.float64), t2, ignore_index=5, eps=0.2), rtol=1e-5)


def test_cross_entropy_unbatched_and_spatial(rng):
    z = randn(rng, 4)
    assert gradcheck(lambda a: F.cross_entropy(a, np.array(2)), z)
    np.testing.assert_allclose(F.cross_entropy(Tensor(z), np.array(2)).item(), -np.log(np_softmax(z)[2]), rtol=1e-5)
    z4 = randn(rng, 2, 3, 2, 2)  # (B, C, H, W): a per-pixel classification
    t4 = rng.integers(0, 3, size=(2, 2, 2))
    assert gradcheck(lambda a: F.cross_entropy(F.transpose(a, 0, 1, 3, 2), t4), z4)  # non-contiguous input


def test_cross_entropy_all_ignored():
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    t = np.array([-100, -100])
    assert F.cross_entropy(z, t, reduction="sum").item() == 0
    np.testing.assert_array_equal(F.cross_entropy(z, t, reduction="none").numpy(), 0)
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.cross_entropy(z, t).item())  # mean over no targets, as in PyTorch


def test_cross_entropy_errors():
    z = Tensor(np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"cross_entropy.*\(4, 3\).*\(4,\).*\(4, 1\)"):
        F.cross_entropy(z, np.zeros((4, 1), dtype=int))
    with pytest.raises(IndexError, match="cross_entropy"):
        F.cross_entropy(z, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="cross_entropy.*integers"):
        F.cross_entropy(z, np.zeros(4))
    with pytest.raises(ValueError, match="cross_entropy.*reduction"):
        F.cross_entropy(z, np.zeros(4, dtype=int), reduction="avg")


@FEW
@given(B=st.integers(1, 4), C=st.integers(2, 5), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**16))
def test_nll_loss(B, C, reduction, seed):
    rng = np.random.default_rng(seed)
    z = randn(rng, B, C)
    t = rng.integers(0, C, size=B)
    t[0] = -100 if B > 1 else t[0]
    assert gradcheck(lambda a: F.nll_loss(a, t, reduction=reduction), z)
    zt = Tensor(z, dtype="float64")
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(zt, axis=1), t, reduction=reduction).numpy(),
                               F.cross_entropy(zt, t, reduction=reduction).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------- binary and regression losses
@SOME
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**16))
def test_pairwise_loss_gradients(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    a, b = randn(rng, *shape), randn(rng, *shape)
    p, t = rng.uniform(0.1, 0.9, size=shape), rng.uniform(0, 1, size=shape)
    assert gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction), a, t)
    assert gradcheck(lambda x, y: F.binary_cross_entropy(x, y, reduction=reduction), p, t)
    assert gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), a, b)
    assert gradcheck(lambda x, y: F.l1_loss(x, y, reduction=reduction), a, b)


def test_pairwise_loss_values(rng):
    a, b = randn(rng, 3, 4).astype(np.float32), randn(rng, 3, 4).astype(np.float32)
    t = rng.uniform(0, 1, size=(3, 4)).astype(np.float32)
    A, B = Tensor(a), Tensor(b)
    np.testing.assert_allclose(F.mse_loss(A, B).item(), ((a - b) ** 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(F.mse_loss(A, b, reduction="sum").item(), ((a - b) ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(F.l1_loss(A, B, reduction="none").numpy(), np.abs(a - b), rtol=1e-6)
    s = 1 / (1 + np.exp(-a.astype(np.float64)))
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(A, t, reduction="none").numpy(), bce, rtol=1e-5)
    np.testing.assert_allclose(F.binary_cross_entropy(Tensor(s), Tensor(t)).item(), bce.mean(), rtol=1e-5)
    for op in (F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits):
        assert op(A, B).dtype == np.float32


def test_binary_losses_are_stable_at_extremes():
    x = Tensor([-200.0, 200.0, 0.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, Tensor([1.0, 0.0, 1.0]), reduction="sum")
    np.testing.assert_allclose(loss.item(), 400 + math.log(2), rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(x.grad, [-1.0, 1.0, -0.5])
    p = Tensor([0.0, 1.0, 0.5], requires_grad=True)
    loss = F.binary_cross_entropy(p, Tensor([1.0, 1.0, 0.0]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [100.0, 0.0, math.log(2)], rtol=1e-6)  # log clamped at -100
    loss.sum().backward()
    assert np.isfinite(p.grad).all()


def test_pairwise_loss_errors():
    a, b = Tensor(np.zeros((3, 1))), Tensor(np.zeros(3))
    for name in ("mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy"):
        with pytest.raises(ShapeError, match=rf"{name}.*\(3, 1\).*\(3,\)"):
            getattr(F, name)(a, b)
    with pytest.raises(ValueError, match="mse_loss.*reduction"):
        F.mse_loss(b, b, reduction="max")


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
        F.batch_norm(Tensor(np.zeros((1, 3))), np.zeros(3), np.ones(3))
    with pytest.raises(ShapeError, match="batch_norm: bias"):
        F.batch_norm(Tensor(np.zeros((2, 3))), None, None, bias=Tensor(np.ones(2)))


# ---------------------------------------------------------------------- dropout
def test_dropout_gradient_with_fixed_seed(rng):
    x = randn(rng, 4, 5)
    assert gradcheck(lambda a: F.dropout(a, 0.4, rng=np.random.default_rng(3)), x)
    assert gradcheck(lambda a: F.dropout(a[:, ::2].T, 0.5, rng=np.random.default_rng(4)), x)


def test_dropout_values():
    x = Tensor(np.ones((200, 500), np.float32))
    y = F.dropout(x, 0.3, rng=np.random.default_rng(0)).numpy()
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.01
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout keeps the mean
    a = F.dropout(x, 0.3, rng=np.random.default_rng(1)).numpy()
    np.testing.assert_array_equal(a, F.dropout(x, 0.3, rng=np.random.default_rng(1)).numpy())  # reproducible
    assert F.dropout(x, 0.3, training=False) is x and F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0)
    assert F.dropout(x, 0.5).shape == x.shape  # no rng: a fresh generator
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(x, 1.5)


# ---------------------------------------------------------------------- embedding, one_hot
def test_embedding(rng):
    w = randn(rng, 5, 3)
    idx = np.array([[0, 2, 2], [4, 2, 0]])  # repeated indices accumulate
    assert gradcheck(lambda ww: F.embedding(idx, ww), w)
    W = Tensor(w, requires_grad=True)
    out = F.embedding(Tensor(idx), W)
    np.testing.assert_allclose(out.numpy(), w[idx].astype(np.float32))
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    out.sum().backward()
    np.testing.assert_allclose(W.grad, np.bincount(idx.ravel(), minlength=5)[:, None] * np.ones((1, 3)))
    W.grad = None
    F.embedding(idx, W, padding_idx=2).sum().backward()
    np.testing.assert_array_equal(W.grad[2], 0)
    with pytest.raises(IndexError, match="embedding"):
        F.embedding(np.array([5]), W)
    with pytest.raises(ShapeError, match="embedding"):
        F.embedding(idx, Tensor(np.ones(5)))


def test_one_hot():
    y = F.one_hot(Tensor([2, 0, 1]), 4)
    assert y.dtype == np.float32 and not y.requires_grad and y.shape == (3, 4)
    np.testing.assert_array_equal(y.numpy(), np.eye(4)[[2, 0, 1]])
    np.testing.assert_array_equal(F.one_hot(np.array([[1], [3]])).numpy(), np.eye(4)[[[1], [3]]])
    with pytest.raises(IndexError, match="one_hot"):
        F.one_hot(np.array([4]), 4)


# ---------------------------------------------------------------------- attention
def np_attention(q, k, v, keep=None, bias=None):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    return np_softmax(s, -1) @ v


@SOME
@given(batch=st.sampled_from([(), (1,), (2,), (1, 2), (2, 3)]), Tq=st.integers(1, 3), Tk=st.integers(1, 3),
       d=st.integers(1, 3), dv=st.integers(1, 3), mask=st.sampled_from(["none", "bool", "float", "causal"]),
       seed=st.integers(0, 2**16))
def test_attention_gradients_and_values(batch, Tq, Tk, d, dv, mask, seed):
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, *batch, Tq, d), randn(rng, *batch, Tk, d), randn(rng, *batch, Tk, dv)
    keep = bias = None
    if mask == "bool":  # broadcast over the leading (head) axis, every row keeps one key
        keep = rng.random((Tq, Tk)) < 0.6
        keep[np.arange(Tq), rng.integers(0, Tk, size=Tq)] = True
        if len(batch) == 2:
            keep = np.broadcast_to(keep, (batch[0], 1, Tq, Tk)).copy()
    if mask == "causal":
        Tk = Tq
        k, v = randn(rng, *batch, Tk, d), randn(rng, *batch, Tk, dv)
    if mask == "float":
        bias = randn(rng, 1, Tk)  # broadcast over queries and batch; differentiated too
        assert gradcheck(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, attn_mask=m), q, k, v, bias)
    else:
        fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=keep,  # noqa: E731
                                                            is_causal=mask == "causal")
        assert gradcheck(fn, q, k, v)
    if mask == "causal":
        keep = np.tril(np.ones((Tq, Tk), bool))
    out = F.scaled_dot_product_attention(Tensor(q, dtype="float64"), Tensor(k, dtype="float64"),
                                         Tensor(v, dtype="float64"), attn_mask=keep if mask == "bool" else bias,
                                         is_causal=mask == "causal")
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, keep, bias), rtol=1e-10, atol=1e-12)


def test_attention_broadcast_kv_and_non_contiguous(rng):
    q, k, v = randn(rng, 2, 3, 2, 4), randn(rng, 2, 1, 3, 4), randn(rng, 1, 1, 3, 3)  # shared k, v over heads
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)
    x = randn(rng, 2, 4, 3)  # q, k, v sliced and transposed from one array
    fn = lambda t: F.scaled_dot_product_attention(t[:, :, :2], t[:, ::-1, 1:], F.transpose(t, 0, 1, 2))  # noqa: E731
    assert gradcheck(fn, x)


def test_attention_float32_causal_blocks_the_future(rng):
    q, k, v = (randn(rng, 2, 2, 5, 4).astype(np.float32) for _ in range(3))
    out = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), is_causal=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, np.tril(np.ones((5, 5), bool))), rtol=1e-4,
                               atol=1e-5)
    v2, k2 = v.copy(), k.copy()
    v2[..., 3:, :] += 10.0  # changing future keys and values leaves earlier outputs alone
    k2[..., 3:, :] -= 5.0
    out2 = F.scaled_dot_product_attention(Tensor(q), Tensor(k2), Tensor(v2), is_causal=True)
    np.testing.assert_array_equal(out2.numpy()[..., :3, :], out.numpy()[..., :3, :])
    np.testing.assert_allclose(out.numpy()[..., 0, :], v[..., 0, :], rtol=1e-6)  # query 0 sees only key 0


def test_attention_fully_masked_row_gives_zero_not_nan(rng):
    q, k, v = (Tensor(randn(rng, 3, 3, 2), requires_grad=True) for _ in range(3))
    keep = np.ones((3, 3), bool)
    keep[1] = False  # query 1 may attend to nothing
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    np.testing.assert_array_equal(out.numpy()[:, 1], 0)
    out.sum().backward()
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_array_equal(q.grad[:, 1], 0)
    m = np.where(keep, 0.0, -np.inf)  # the same as an additive -inf mask
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, attn_mask=m).numpy(), out.numpy())


def test_attention_dropout_with_fixed_seed(rng):
    q, k, v = randn(rng, 2, 3, 2), randn(rng, 2, 4, 2), randn(rng, 2, 4, 3)
    fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=0.3,  # noqa: E731
                                                        rng=np.random.default_rng(5))
    assert gradcheck(fn, q, k, v)
    same = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), dropout_p=0.0).numpy()
    dropped = fn(Tensor(q), Tensor(k), Tensor(v)).numpy()
    assert not np.allclose(same, dropped)


def test_attention_errors():
    q = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"scaled_dot_product_attention.*\(2, 3, 4\).*\(2, 5, 3\)"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((2, 5, 3))), Tensor(np.zeros((2, 5, 3))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((2, 5, 4))), Tensor(np.zeros((2, 6, 4))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((3, 5, 4))), Tensor(np.zeros((3, 5, 4))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention.*attn_mask"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 2), bool))


# ---------------------------------------------------------------------- gumbel_softmax
@FEW
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), tau=st.sampled_from([0.5, 1.0, 2.0]),
       seed=st.integers(0, 2**16), data=st.data())
def test_gumbel_softmax_gradients(shape, tau, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(np.random.default_rng(seed), *shape)
    assert gradcheck(lambda a: F.gumbel_softmax(a, tau, axis=axis, rng=np.random.default_rng(seed)), x)


def test_gumbel_softmax_hard_is_one_hot_with_soft_gradient(rng):
    x = randn(rng, 4, 6).astype(np.float32)
    soft = F.gumbel_softmax(Tensor(x), 0.5, rng=np.random.default_rng(7))
    assert soft.dtype == np.float32
    np.testing.assert_allclose(soft.numpy().sum(axis=-1), 1, rtol=1e-6)
    X = Tensor(x, requires_grad=True)
    hard = F.gumbel_softmax(X, 0.5, hard=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(hard.numpy().sum(axis=-1), 1)
    np.testing.assert_array_equal(hard.numpy().argmax(axis=-1), soft.numpy().argmax(axis=-1))
    assert set(np.unique(hard.numpy())) <= {0.0, 1.0}
    w = rng.standard_normal((4, 6)).astype(np.float32)
    (hard * Tensor(w)).sum().backward()
    Xs = Tensor(x, requires_grad=True)
    (F.gumbel_softmax(Xs, 0.5, rng=np.random.default_rng(7)) * Tensor(w)).sum().backward()
    np.testing.assert_allclose(X.grad, Xs.grad, rtol=1e-6)  # straight-through: the soft gradient
    cols = F.gumbel_softmax(Tensor(x), hard=True, axis=0, rng=np.random.default_rng(1)).numpy()
    np.testing.assert_array_equal(cols.sum(axis=0), 1)


def test_gumbel_softmax_samples_follow_the_softmax():
    logits = np.log(np.array([0.6, 0.3, 0.1], np.float32))
    x = Tensor(np.tile(logits, (4000, 1)))
    counts = F.gumbel_softmax(x, hard=True, rng=np.random.default_rng(0)).numpy().mean(axis=0)
    np.testing.assert_allclose(counts, [0.6, 0.3, 0.1], atol=0.03)


# ---------------------------------------------------------------------- float32 stays float32
def test_float32_values_and_gradients_stay_float32(rng):
    def t(*shape):
        return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    x4, x2, w, b, x3 = t(2, 3, 2, 2), t(4, 3), t(3), t(3), t(2, 4, 3)
    labels = np.array([0, 2, 1, 1])
    outs = [F.softmax(x2), F.log_softmax(x2), F.cross_entropy(x2, labels, label_smoothing=0.1),
            F.nll_loss(x2, labels), F.binary_cross_entropy_with_logits(x2, np.ones((4, 3))),
            F.binary_cross_entropy(F.sigmoid(x2), np.ones((4, 3))), F.mse_loss(x2, x2 * 0.5),
            F.l1_loss(x2, x2 * 0.5), F.layer_norm(x3, 3, w, b), F.group_norm(x4, 3, w, b),
            F.batch_norm(x4, np.zeros(3, np.float32), np.ones(3, np.float32), w, b),
            F.batch_norm(x2, np.zeros(3, np.float32), np.ones(3, np.float32), w, b, training=False),
            F.dropout(x2, 0.2, rng=np.random.default_rng(0)), F.embedding(labels, x2),
            F.scaled_dot_product_attention(x3, x3, x3, is_causal=True, dropout_p=0.1, rng=np.random.default_rng(0)),
            F.gumbel_softmax(x2, hard=True, rng=np.random.default_rng(0))]
    total = None
    for out in outs:
        assert out.dtype == np.float32, out._ctx.name()
        total = out.sum() if total is None else total + out.sum()
    total.backward()
    for leaf in (x4, x2, w, b, x3):
        assert leaf.grad.dtype == np.float32
