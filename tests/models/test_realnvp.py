"""RealNVP: exact inverse, log-determinant against a numerical Jacobian, masks, squeeze, the
bits/dim bookkeeping, a loss that goes down, samples and evaluation."""
import math

import numpy as np
import pytest

from autograd import Tensor
from tinygen.models.realnvp import (ALPHA, AffineCoupling, RealNVP, channel_mask, checkerboard_mask, dequantize,
                                    squeeze, unsqueeze)


def tiny(shape=(1, 4, 4), seed=0, randomize=True, dtype=np.float32, **overrides):
    """A small flow on `shape`; with randomize, the zero-initialised last convs get random weights
    so that no coupling is the identity."""
    values = {"couplings": 2, "hidden_28": 4, "hidden_14": 4, "blocks": 1, **overrides}
    model = RealNVP(RealNVP.Config(**values), shape=shape)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if randomize and isinstance(layer, AffineCoupling):
            out = layer.net.out
            out.weight.data = rng.normal(0, 0.3, out.weight.shape).astype(np.float32)
            out.bias.data = rng.normal(0, 0.3, out.bias.shape).astype(np.float32)
            layer.scale.data = rng.uniform(0.5, 1.5, layer.scale.shape).astype(np.float32)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


# ---------------------------------------------------------------------- masks and squeeze
@pytest.mark.parametrize("shape", [(1, 4, 4), (4, 6, 2)])
def test_checkerboard_masks_are_complementary(shape):
    a, b = checkerboard_mask(shape, 0), checkerboard_mask(shape, 1)
    assert a.shape == b.shape == (1, *shape)
    np.testing.assert_array_equal(a + b, 1)
    np.testing.assert_array_equal(a * b, 0)
    assert a.sum() == a.size // 2
    assert a[0, 0, 0, 0] == 1 and a[0, 0, 0, 1] == 0 and a[0, 0, 1, 0] == 0 and a[0, 0, 1, 1] == 1


@pytest.mark.parametrize("channels", [4, 16])
def test_channel_masks_are_complementary(channels):
    a, b = channel_mask((channels, 3, 3), 0), channel_mask((channels, 3, 3), 1)
    assert a.shape == (1, channels, 1, 1)
    np.testing.assert_array_equal(a + b, 1)
    np.testing.assert_array_equal(a * b, 0)
    np.testing.assert_array_equal(a.ravel(), np.arange(channels) < channels // 2)


def test_squeeze_round_trip_and_layout():
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 6)).astype(np.float32)
    s = squeeze(Tensor(x))
    assert s.shape == (2, 12, 4, 3)
    # squeeze(x)[b, 4c + 2 dy + dx, i, j] = x[b, c, 2i + dy, 2j + dx]
    for c, dy, dx in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (2, 1, 1)]:
        np.testing.assert_array_equal(s.numpy()[:, 4 * c + 2 * dy + dx], x[:, c, dy::2, dx::2])
    np.testing.assert_array_equal(unsqueeze(s).numpy(), x)
    np.testing.assert_array_equal(squeeze(unsqueeze(s)).numpy(), s.numpy())


def test_flow_layout():
    m = RealNVP()
    assert m.z_shape == (4, 14, 14)
    couplings = [layer for layer in m.layers if isinstance(layer, AffineCoupling)]
    assert len(couplings) == 3 * m.config.couplings
    # masks alternate within each stage: consecutive couplings keep complementary halves
    for a, b in zip(couplings, couplings[1:]):
        if a.mask.shape == b.mask.shape:
            np.testing.assert_array_equal(a.mask + b.mask, 1)


def test_flow_layout_with_a_7x7_stage():
    m = RealNVP(RealNVP.Config(couplings_7=2, hidden_7=8))
    assert m.z_shape == (16, 7, 7)
    last = [layer for layer in m.layers if isinstance(layer, AffineCoupling)][-2:]
    assert [layer.mask.shape for layer in last] == [(1, 16, 1, 1)] * 2
    assert last[0].net.inp.weight.shape[0] == 8
    np.testing.assert_array_equal(last[0].mask + last[1].mask, 1)


# ---------------------------------------------------------------------- invertibility and log-det
@pytest.mark.parametrize("shape,couplings_7", [((1, 4, 4), 0), ((1, 6, 4), 0), ((1, 28, 28), 0), ((1, 8, 8), 2),
                                                ((1, 28, 28), 3)])
def test_inverse_undoes_forward(shape, couplings_7):
    model = tiny(shape, couplings_7=couplings_7, hidden_7=4)
    x = np.random.default_rng(1).uniform(0, 1, (3, *shape)).astype(np.float32)
    z, log_det = model.forward(Tensor(x))
    assert z.shape == (3, *model.z_shape) and log_det.shape == (3,)
    assert np.abs(z.numpy() - model.forward(Tensor(x))[0].numpy()).max() == 0  # deterministic
    np.testing.assert_allclose(model.inverse(z).numpy(), x, atol=1e-4)


def test_couplings_start_as_the_identity():
    model = tiny(randomize=False)
    x = np.random.default_rng(2).uniform(0, 1, (2, 1, 4, 4))
    y = np.log(ALPHA + (1 - 2 * ALPHA) * x) - np.log(1 - ALPHA - (1 - 2 * ALPHA) * x)
    z, _ = model.forward(Tensor(x))
    np.testing.assert_allclose(unsqueeze(z).numpy(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("couplings,couplings_7,seed", [(1, 0, 0), (2, 0, 1), (3, 0, 2), (1, 2, 3)])
def test_log_det_equals_numerical_jacobian(couplings, couplings_7, seed):
    """log |det df/dx| from the model vs slogdet of a central finite-difference Jacobian, in float64."""
    model = tiny((1, 4, 4), seed=seed, dtype=np.float64, couplings=couplings, couplings_7=couplings_7, hidden_7=4)
    D, h = 16, 1e-6
    x = np.random.default_rng(3).uniform(0.1, 0.9, (1, 1, 4, 4))
    steps = h * np.eye(D).reshape(D, 1, 4, 4)
    z, _ = model.forward(Tensor(np.concatenate([x + steps, x - steps]), dtype="float64"))
    assert z.dtype == np.float64
    z = z.numpy().reshape(2 * D, D)
    jacobian = ((z[:D] - z[D:]) / (2 * h)).T                     # J[i, j] = dz_i / dx_j
    sign, logabsdet = np.linalg.slogdet(jacobian)
    _, log_det = model.forward(Tensor(x, dtype="float64"))
    assert sign != 0
    assert abs(log_det.item() - logabsdet) < 1e-6
    # the couplings contribute: log |det| differs from the logit layer's alone
    p = ALPHA + (1 - 2 * ALPHA) * x
    logit_only = (math.log(1 - 2 * ALPHA) - np.log(p) - np.log(1 - p)).sum()
    assert abs(logabsdet - logit_only) > 1e-2


# ---------------------------------------------------------------------- likelihood bookkeeping
def test_bits_per_dim_of_the_identity_flow():
    """With identity couplings z = logit(p): check log p_X and bits/dim term by term in NumPy."""
    model = tiny((1, 4, 4), randomize=False, dtype=np.float64)
    k = np.random.default_rng(4).integers(0, 256, (5, 1, 4, 4)).astype(np.uint8)
    x = dequantize(k, np.random.default_rng(5)).astype(np.float64)
    assert x.min() >= 0 and x.max() < 1
    assert np.all(np.floor(x * 256) == k)                         # x lies in its level's cell
    p = ALPHA + (1 - 2 * ALPHA) * x
    y = np.log(p) - np.log(1 - p)
    log_pz = (-0.5 * (y ** 2 + np.log(2 * np.pi))).sum(axis=(1, 2, 3))
    log_det = (np.log(1 - 2 * ALPHA) - np.log(p) - np.log(1 - p)).sum(axis=(1, 2, 3))
    log_px = model.log_prob(Tensor(x, dtype="float64")).numpy()
    np.testing.assert_allclose(log_px, log_pz + log_det, rtol=1e-10)
    expected_bpd = np.mean((-(log_pz + log_det) + 16 * np.log(256)) / (16 * np.log(2)))
    loss, logs = model.loss((Tensor(x, dtype="float64"), None))
    assert abs(loss.item() - expected_bpd) < 1e-9 and abs(logs["bpd"] - expected_bpd) < 1e-9


def test_evaluate_nll_is_fixed_and_matches_the_loss():
    model = tiny((1, 4, 4))
    k = np.random.default_rng(6).integers(0, 256, (40, 1, 4, 4)).astype(np.uint8)
    a = model.evaluate_nll(k, batch_size=16)
    b = model.evaluate_nll(k)
    assert a["bits_per_dim"] == pytest.approx(b["bits_per_dim"], rel=1e-6) and np.isfinite(a["bits_per_dim"])
    x = dequantize(k, np.random.default_rng(0))                 # the fixed evaluation dequantisation
    loss, _ = model.loss((Tensor(x), None))
    assert a["bits_per_dim"] == pytest.approx(loss.item(), rel=1e-5)
    assert a["nll_nats"] == pytest.approx(a["bits_per_dim"] * 16 * math.log(2), rel=1e-5)
    assert model.evaluate_nll(k, n=10)["bits_per_dim"] != a["bits_per_dim"]
    assert model.evaluate(k, None) == {"test_bpd": a["bits_per_dim"]}


# ---------------------------------------------------------------------- training and sampling
def test_loss_decreases_on_a_fixed_batch():
    model = RealNVP(RealNVP.Config(couplings=1, hidden_28=8, hidden_14=8, blocks=1, lr=3e-3))
    images = np.zeros((8, 1, 28, 28), np.uint8)
    for i in range(8):                                           # bright bars at different places
        images[i, 0, 4 + 2 * i:10 + 2 * i, 8:20] = 255
    batch = model.prepare_batch(images, np.zeros(8, np.int64))
    optimizers = model.configure_optimizers()
    losses = [model.training_step(batch, optimizers)["bpd"] for _ in range(20)]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5, losses


def test_prepare_batch_dequantizes_with_the_model_rng():
    model = tiny()
    images = np.full((2, 1, 4, 4), 7, np.uint8)
    model.rng = np.random.default_rng(9)
    x1, _ = model.prepare_batch(images, None)
    model.rng = np.random.default_rng(9)
    x2, _ = model.prepare_batch(images, None)
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    assert np.all((x1.numpy() >= 7 / 256) & (x1.numpy() < 8 / 256))


def test_sample_shape_range_and_mode(tmp_path):
    model = tiny((1, 4, 4))
    model.train()
    model.rng = np.random.default_rng(0)
    x = model.sample(5)
    assert isinstance(x, np.ndarray) and x.shape == (5, 1, 4, 4)
    assert x.min() >= 0 and x.max() <= 1 and np.isfinite(x).all()
    assert model.training                                        # the mode is restored
    eps = np.random.default_rng(1).standard_normal((3, *model.z_shape)).astype(np.float32)
    cold, hot = model.sample(3, temperature=0.5, eps=eps), model.sample(3, temperature=1.0, eps=eps)
    assert not np.allclose(cold, hot)
    images = model.temperature_grid(tmp_path / "grid.png", temperatures=(0.5, 1.0), per_row=4, rows=1)
    assert images.shape == (8, 1, 4, 4) and (tmp_path / "grid.png").stat().st_size > 0
