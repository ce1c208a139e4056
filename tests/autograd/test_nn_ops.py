"""The small network ops (softmax, log_softmax, dropout, embedding, one_hot, gumbel_softmax): gradients
(gradcheck in float64), values against closed forms in NumPy, randomness with a fixed seed, errors that
name the op; and a float32 check over every op of torch.nn.functional's families."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, gradcheck
from tests.autograd.numpy_reference import np_softmax, randn

FEW = settings(max_examples=10, deadline=None)
SOME = settings(max_examples=15, deadline=None)


# ---------------------------------------------------------------------- softmax
@SOME
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16), data=st.data())
def test_softmax_and_log_softmax_gradients(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(np.random.default_rng(seed), *shape)
    assert gradcheck(lambda a: F.softmax(a, dim=axis), x)
    assert gradcheck(lambda a: F.log_softmax(a, dim=axis), x)


def test_softmax_gradients_on_non_contiguous_input(rng):
    x = randn(rng, 4, 3, 5)
    assert gradcheck(lambda a: F.softmax(F.transpose(a, 2, 0, 1), dim=1), x)
    assert gradcheck(lambda a: F.log_softmax(a[:, ::2], dim=0), x)


def test_softmax_values(rng):
    x = randn(rng, 3, 6).astype(np.float32) * 5
    y = F.softmax(Tensor(x), dim=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), np_softmax(x.astype(np.float64), 1), rtol=1e-5)
    np.testing.assert_allclose(F.log_softmax(Tensor(x), dim=0).numpy(), np.log(np_softmax(x.astype(np.float64), 0)),
                               rtol=1e-5, atol=1e-6)
    big = Tensor([[1000.0, 1001.0, -1000.0]])  # no overflow: the max is subtracted
    np.testing.assert_allclose(F.softmax(big).numpy(), np_softmax(np.array([[0.0, 1.0, -2000.0]])), rtol=1e-6)
    assert np.isfinite(F.log_softmax(big).numpy()).all()
    # the Tensor methods speak NumPy: axis
    np.testing.assert_allclose(Tensor(x).softmax(axis=-1).numpy(), y.numpy())
    np.testing.assert_allclose(Tensor(x).log_softmax(axis=0).numpy(), F.log_softmax(Tensor(x), dim=0).numpy())


def test_softmax_and_log_softmax_with_minus_inf_entries():
    """Masked attention rows: -inf entries get probability 0 and gradient 0; a row of all -inf is NaN, as in
    PyTorch's F.softmax (F.scaled_dot_product_attention gives such a row 0 instead, also as PyTorch's does)."""
    x = Tensor([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], requires_grad=True)
    with np.errstate(invalid="ignore"):
        y = F.softmax(x, dim=1)
        np.testing.assert_allclose(y.numpy()[0], [1 / (1 + np.e), 0.0, np.e / (1 + np.e)], rtol=1e-6)
        assert np.isnan(y.numpy()[1]).all()
        (y[0] * Tensor([1.0, 2.0, 3.0])).sum().backward()
    assert np.isfinite(x.grad[0]).all() and x.grad[0, 1] == 0.0
    x = Tensor([[0.0, -np.inf, 1.0]], requires_grad=True)
    y = F.log_softmax(x, dim=1)
    assert y.numpy()[0, 1] == -np.inf and np.isfinite(y.numpy()[0, [0, 2]]).all()
    y[:, 0].sum().backward()
    assert np.isfinite(x.grad).all() and x.grad[0, 1] == 0.0
    gradcheck(lambda a: F.log_softmax(a, dim=1), np.array([[0.2, -np.inf, 1.0]]))
    gradcheck(lambda a: F.softmax(a, dim=1), np.array([[0.2, -np.inf, 1.0]]))


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
@pytest.mark.parametrize("n, N", [(5, 40), (1, 7), (50, 3), (4, 0)])
def test_embedding_gradient_sort_and_sum_equals_the_scatter_add(n, N):
    """The rows summed by index (sorted, then one np.add.reduceat per run: the speed trick) against
    np.add.at (the plain way): repeated indices, rows never indexed, a single row, no indices."""
    from autograd.ops import nn as nn_ops
    rng = np.random.default_rng(N)
    idx, rows = rng.integers(0, n, N), rng.standard_normal((N, 6))
    fast = nn_ops._rows_by_index(np, idx, rows, n)
    plain = nn_ops._rows_by_index_plain(np, idx, rows, n)
    assert fast.shape == plain.shape == (n, 6)
    np.testing.assert_allclose(fast, plain, rtol=1e-12, atol=1e-12)


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


# ---------------------------------------------------------------------- gumbel_softmax
@FEW
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), tau=st.sampled_from([0.5, 1.0, 2.0]),
       seed=st.integers(0, 2**16), data=st.data())
def test_gumbel_softmax_gradients(shape, tau, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(np.random.default_rng(seed), *shape)
    assert gradcheck(lambda a: F.gumbel_softmax(a, tau, dim=axis, rng=np.random.default_rng(seed)), x)


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
    cols = F.gumbel_softmax(Tensor(x), hard=True, dim=0, rng=np.random.default_rng(1)).numpy()
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
            F.batch_norm(x4, np.zeros(3, np.float32), np.ones(3, np.float32), w, b, training=True),
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
