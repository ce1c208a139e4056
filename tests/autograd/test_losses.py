"""Losses: gradients (gradcheck in float64), values against closed forms in NumPy, ignore_index and label
smoothing, stability at the extremes, and errors that name the op."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, gradcheck
from tests.autograd.numpy_reference import np_softmax, randn

FEW = settings(max_examples=10, deadline=None)
SOME = settings(max_examples=15, deadline=None)


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
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(zt, dim=1), t, reduction=reduction).numpy(),
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


def test_binary_cross_entropy_refuses_values_outside_zero_one():
    p, t = Tensor([0.2, 0.7]), Tensor([0.0, 1.0])
    with pytest.raises(ValueError, match=r"binary_cross_entropy: all elements of input should be between 0 and 1, "
                                         r"got 1.5"):
        F.binary_cross_entropy(Tensor([0.2, 1.5]), t)
    with pytest.raises(ValueError, match=r"all elements of input should be between 0 and 1, got -0.1"):
        F.binary_cross_entropy(Tensor([-0.1, 0.5]), t)
    with pytest.raises(ValueError, match=r"all elements of input should be between 0 and 1, got nan"):
        F.binary_cross_entropy(Tensor([np.nan, 0.5]), t)
    with pytest.raises(ValueError, match=r"all elements of target should be between 0 and 1, got 2.0"):
        F.binary_cross_entropy(p, Tensor([0.0, 2.0]))
    assert np.isfinite(F.binary_cross_entropy(Tensor([0.0, 1.0]), Tensor([0.0, 1.0])).item())  # the ends are in


def test_cross_entropy_with_minus_inf_logits():
    z = Tensor([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], requires_grad=True)
    loss = F.cross_entropy(z, Tensor([2, 1]), reduction="none")   # masked classes: finite, as in PyTorch
    np.testing.assert_allclose(loss.numpy(), [np.log1p(np.exp(-1.0)), 0.0], rtol=1e-6)
    loss.sum().backward()
    assert np.isfinite(z.grad).all()
    np.testing.assert_allclose(z.grad[1], [0.0, 0.0, 0.0])
    assert z.grad[0, 1] == 0.0
    # the target's own logit at -inf: probability 0, loss inf (PyTorch's too)
    assert F.cross_entropy(Tensor([[0.0, -np.inf]]), Tensor([1])).item() == np.inf


def test_regression_losses_with_infinities_match_pytorch():
    a = Tensor([np.inf, 1.0], requires_grad=True)
    loss = F.mse_loss(a, Tensor([0.0, 1.0]), reduction="sum")
    assert loss.item() == np.inf
    loss.backward()
    np.testing.assert_array_equal(a.grad, [np.inf, 0.0])          # 2 (a - b): inf, not NaN
    a = Tensor([np.inf, -np.inf, 1.0], requires_grad=True)
    loss = F.l1_loss(a, Tensor([0.0, 0.0, 1.0]), reduction="sum")
    assert loss.item() == np.inf
    loss.backward()
    np.testing.assert_array_equal(a.grad, [1.0, -1.0, 0.0])       # sign(a - b)
