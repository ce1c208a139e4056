"""PixelCNN: the masks, causality of the whole network over every output pixel (plain, gated and
PixelRNN's Row LSTM), the blind spot of the plain stack and its absence in the gated one, the Row LSTM's
triangle, an exact likelihood that sums to one, sampling from the model's own conditionals, completion,
evaluation."""
import itertools

import numpy as np
import pytest

from autograd import Tensor
from tinygen import data, nn
from tinygen.models.pixelcnn import (MaskedConv2d, PixelCNN, causal_mask, lstm_update, quantize,
                                     receptive_field)
from tinygen.models.vqvae import CodePixelCNN

TINY = {"first_kernel": 5, "channels": 8, "gated_channels": 4, "blocks": 2, "head_channels": 8}
CASES = [("plain", 2), ("gated", 2), ("rowlstm", 2), ("plain", 4), ("gated", 4), ("rowlstm", 4)]


def tiny(arch="plain", levels=2, shape=(1, 8, 8), seed=0, **overrides):
    nn.manual_seed(seed)
    return PixelCNN(PixelCNN.Config(arch=arch, levels=levels, **{**TINY, **overrides}), shape=shape)


def positive(model):
    """float64 weights |w|: with a positive input no ReLU is dead and no two paths cancel (tanh, sigmoid
    and their slopes are positive too), so a zero gradient means that no path exists."""
    for p in model.parameters():
        p.data = np.abs(p.data).astype(np.float64)
    return model


def dependence(model, x):
    """D[i, j] = the input pixels that output (i, j) has a nonzero gradient on, (H, W, H, W) bool, for every
    output pixel by ONE backward pass: H W copies of x, copy n seeded at output pixel n only."""
    _, H, W = model.shape
    copies = Tensor(np.repeat(x, H * W, axis=0), dtype=np.float64, requires_grad=True)      # (HW, 1, H, W)
    logits = model(copies)                                                  # (HW, C, H, W)
    seed = np.zeros(logits.shape)
    n = np.arange(H * W)
    seed[n, :, n // W, n % W] = 1.0
    logits.backward(seed)
    return (copies.grad[:, 0] != 0).reshape(H, W, H, W)


def before(H, W):
    """B[i, j] = the pixels strictly before (i, j) in raster order, (H, W, H, W) bool."""
    order = np.arange(H * W).reshape(H, W)
    return order[None, None] < order[:, :, None, None]


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="arch 'rnn'.*plain, gated, rowlstm"):
        tiny(arch="rnn")
    with pytest.raises(ValueError, match="levels"):
        tiny(levels=1)
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 2, 4, "A")
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 2, 3, "C")


# ---------------------------------------------------------------------- masks
def test_masks():
    np.testing.assert_array_equal(causal_mask((3, 3), "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((3, 3), "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((3, 3), "V"), [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((1, 3), "A"), [[1, 0, 0]])
    np.testing.assert_array_equal(causal_mask((1, 3), "B"), [[1, 1, 0]])
    a7 = causal_mask((7, 7), "A")
    assert a7.shape == (7, 7) and a7.sum() == 3 * 7 + 3 and a7[3, 3] == 0 and a7[3:, 4:].sum() == 0
    conv = MaskedConv2d(2, 3, 5, "B")
    assert conv.weight.shape == (3, 2, 5, 5) and conv.mask.shape == (1, 1, 5, 5)


def test_masked_taps_get_no_weight_and_no_gradient():
    conv = MaskedConv2d(1, 1, 3, "A")
    conv.weight.data[...] = 1.0                     # the masked taps too: the mask must hide them
    conv.bias.data[...] = 0.0
    x = Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    y = conv(x)
    # y[1, 1] = x[0, 0] + x[0, 1] + x[0, 2] + x[1, 0] = 0 + 1 + 2 + 4
    assert y.shape == (1, 1, 4, 4) and y.numpy()[0, 0, 1, 1] == 7
    y.sum().backward()
    assert np.all(conv.weight.grad[0, 0][causal_mask((3, 3), "A") == 0] == 0)


# ---------------------------------------------------------------------- causality and the blind spot
@pytest.mark.parametrize("arch,levels", CASES)
def test_no_output_pixel_depends_on_itself_or_later_pixels(arch, levels):
    model = positive(tiny(arch, levels))
    x = np.random.default_rng(0).uniform(0.1, 1.0, (1, 1, 8, 8))
    D = dependence(model, x)
    assert not D[~before(8, 8)].any()               # over every output pixel: only pixels before it
    assert D[7, 7].sum() > 20                       # and the check can fail: outputs do depend on inputs


def test_gated_receptive_field_is_every_earlier_pixel_within_reach():
    model = positive(tiny("gated"))
    D = dependence(model, np.random.default_rng(0).uniform(0.1, 1.0, (1, 1, 8, 8)))
    R = TINY["first_kernel"] // 2 + TINY["blocks"]  # columns either side; rows above: R + 1 (the shift)
    assert model.net.reach == R + 1
    i, j, r, c = np.meshgrid(*[np.arange(8)] * 4, indexing="ij")
    within = (r >= i - (R + 1)) & (np.abs(c - j) <= R)
    np.testing.assert_array_equal(D, before(8, 8) & within)   # no blind spot, for every output pixel
    # on a 5 x 5 image everything earlier is within reach: output (i, j) sees exactly the pixels before it
    small = positive(tiny("gated", shape=(1, 5, 5)))
    np.testing.assert_array_equal(dependence(small, np.full((1, 1, 5, 5), 0.5)), before(5, 5))


def test_plain_stack_has_a_blind_spot_up_and_to_the_right():
    model = positive(tiny("plain"))
    D = dependence(model, np.random.default_rng(0).uniform(0.1, 1.0, (1, 1, 8, 8)))
    assert not D[~before(8, 8)].any()
    # the row above reaches only as far right as the first layer did (k // 2), however deep the stack
    k = TINY["first_kernel"] // 2
    for i in range(1, 8):
        for j in range(8 - k - 1):
            assert D[i, j, i - 1, j + k] and not D[i, j, i - 1, j + k + 1:].any(), (i, j)
    # the gated model of the same size does see that pixel
    G = dependence(positive(tiny("gated")), np.full((1, 1, 8, 8), 0.5))
    assert G[4, 2, 3, 2 + k + 1]


def test_row_lstm_sees_a_triangle_above_reaching_every_row():
    """PixelRNN's Row LSTM: the state of row i reads row i - 1 at columns j - 1 .. j + 1, so output (i, j)
    sees a triangle widening one column a row above it, up to the top row (no reach limit); in its own row,
    the pixels left of it that the mask-A conv and the mask-B input-to-state convs reach."""
    for shape, over in [((1, 8, 8), {}), ((1, 12, 12), {"blocks": 3}), ((1, 12, 12), {"first_kernel": 3})]:
        H = shape[1]
        model = positive(tiny("rowlstm", shape=shape, **over))
        assert model.net.reach is None
        D = dependence(model, np.random.default_rng(0).uniform(0.1, 1.0, (1, 1, H, H)))
        k, L = over.get("first_kernel", TINY["first_kernel"]) // 2, over.get("blocks", TINY["blocks"])
        i, j, r, c = np.meshgrid(*[np.arange(H)] * 4, indexing="ij")
        triangle = (r < i) & (c >= j - (i - r) - (k + L)) & (c <= j + (i - r) + k - 1)
        left = (r == i) & (c < j) & (c >= j - (k + L))
        np.testing.assert_array_equal(D, triangle | left)
        assert D[H - 1, 0, 0].all()          # the top row, H - 1 rows up: beyond any stack of convs of this depth


def test_lstm_update_is_pytorchs_lstm_cell():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    B, D, h = 3, 5, 4
    x, h0, c0 = rng.normal(size=(B, D)), rng.normal(size=(B, h)), rng.normal(size=(B, h))
    cell = torch.nn.LSTMCell(D, h).double()
    w_ih, w_hh = cell.weight_ih.detach().numpy(), cell.weight_hh.detach().numpy()
    bias = (cell.bias_ih + cell.bias_hh).detach().numpy()
    gates = Tensor(x @ w_ih.T + h0 @ w_hh.T + bias, dtype=np.float64)       # (B, 4h): [i, f, g, o]
    h1, c1 = lstm_update(gates, Tensor(c0, dtype=np.float64))
    th, tc = cell(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    np.testing.assert_allclose(h1.numpy(), th.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(c1.numpy(), tc.detach().numpy(), rtol=1e-12)


def test_receptive_field_maps_of_the_full_size_models():
    """The maps docs/figures.py draws: white where output (14, 14) depends on the input, gray itself."""
    plain, gated = ((receptive_field(PixelCNN(PixelCNN.Config(arch=a)), 14, 14) > 0).astype(np.float32)
                    for a in ("plain", "gated"))
    plain[14, 14] = gated[14, 14] = 0.5
    earlier = before(28, 28)[14, 14]
    assert plain[14, 14] == gated[14, 14] == 0.5
    assert not plain[~earlier & (plain != 0.5)].any() and not gated[~earlier & (gated != 0.5)].any()
    assert plain[13, 18] == 0 and gated[13, 18] == 1      # 4 right of the column, one row up: the blind spot
    assert plain[13, 17] == 1 and gated[13, 13:26].all() and gated[14, 3:14].all()
    row = (receptive_field(PixelCNN(PixelCNN.Config(arch="rowlstm")), 14, 14) > 0)
    assert not row[~earlier].any() and row[0].all() and row[14, :14].all()   # every row above; the whole left
    assert row[13, 17] and not row[13, 18] and row[12, 18] and not row[12, 19]   # the triangle: 1 column a row
    rf = receptive_field(tiny(), 3, 3)
    assert rf.shape == (8, 8) and rf[2, 3] > 0 and rf[3:, 3:].max() == 0


# ---------------------------------------------------------------------- the exact likelihood
@pytest.mark.parametrize("arch,levels,shape", [("plain", 2, (1, 2, 3)), ("gated", 2, (1, 2, 3)),
                                               ("rowlstm", 2, (1, 2, 3)), ("plain", 4, (1, 2, 2)),
                                               ("gated", 4, (1, 2, 2)), ("rowlstm", 4, (1, 2, 2))])
def test_the_likelihood_sums_to_one_over_all_images(arch, levels, shape):
    model = tiny(arch, levels, shape=shape)
    D = shape[1] * shape[2]
    values = np.arange(levels, dtype=np.float32) / (levels - 1)
    every = np.array(list(itertools.product(values, repeat=D)), np.float32).reshape(-1, *shape)  # (L^D, ...)
    nll = model.nll(Tensor(every)).numpy()
    assert nll.shape == (levels ** D,)
    np.testing.assert_allclose(np.exp(-nll.astype(np.float64)).sum(), 1.0, rtol=1e-4)


@pytest.mark.parametrize("levels", [2, 4])
def test_nll_and_loss_are_the_definition(levels):
    model = tiny(levels=levels)
    images = (np.random.default_rng(1).random((3, 1, 8, 8)) * 256).astype(np.uint8)
    x, _ = model.prepare_batch(images, None)
    logits = model(x).numpy().astype(np.float64)
    if levels == 2:
        # -log p(x) = sum_i [log(1 + e^l) - x l]
        want = (np.logaddexp(0, logits) - x.numpy() * logits).sum(axis=(1, 2, 3))
    else:
        k = quantize(images, 4)[:, 0]
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        want = -np.take_along_axis(log_softmax, k[:, None], axis=1).sum(axis=(1, 2, 3))
        np.testing.assert_array_equal(x.numpy(), (k[:, None] / 3).astype(np.float32))
    np.testing.assert_allclose(model.nll(x).numpy(), want, rtol=1e-5)
    loss, logs = model.loss((x, None))
    np.testing.assert_allclose(loss.item(), want.mean(), rtol=1e-5)
    assert logs["nll"] == loss.item()


def test_quantize_levels():
    np.testing.assert_array_equal(quantize(np.array([0, 63, 64, 127, 128, 191, 192, 255], np.uint8), 4),
                                  [0, 0, 1, 1, 2, 2, 3, 3])


def test_evaluation_binarises_the_test_split_once_with_seed_0():
    model = tiny(shape=(1, 28, 28))
    images = data.load_dataset("mnist", "test")[0][:40]
    result = model.evaluate_nll(images)
    x = data.binarize(images, np.random.default_rng(0))
    np.testing.assert_allclose(result["nll_nats"], model.nll(Tensor(x)).numpy().mean(), rtol=1e-5)
    np.testing.assert_allclose(result["bits_per_dim"], result["nll_nats"] / (784 * np.log(2)), rtol=1e-6)
    assert model.evaluate_nll(images) == result


def test_loss_decreases_on_a_fixed_batch():
    model = tiny(shape=(1, 28, 28), lr=1e-2)
    opt = model.configure_optimizers()
    images = data.load_dataset("mnist", "test")[0][:16]
    batch = (Tensor(data.binarize(images, np.random.default_rng(0))), None)
    losses = [model.training_step(batch, opt)["loss"] for _ in range(30)]
    assert losses[-1] < 0.75 * losses[0], losses


# ---------------------------------------------------------------------- sampling
@pytest.mark.parametrize("arch", ["plain", "gated"])
def test_sampling_a_crop_of_reach_rows_gives_the_full_forward(arch):
    model = tiny(arch)
    x = Tensor(np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32))
    full = model(x).numpy()
    for i in range(8):
        top = max(0, i - model.net.reach)
        crop = model(x[:, :, top:i + 1]).numpy()
        np.testing.assert_allclose(crop[:, :, i - top], full[:, :, i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch,levels", CASES)
def test_samples_follow_the_models_own_distribution(arch, levels):
    shape = (1, 2, 2)
    model = tiny(arch, levels, shape=shape)
    model.rng = np.random.default_rng(0)
    n = 20000
    s = model.sample(n)
    assert s.shape == (n, *shape) and s.dtype == np.float32 and s.min() >= 0 and s.max() <= 1
    k = np.rint(s.reshape(n, 4) * (levels - 1)).astype(int)
    np.testing.assert_allclose(k / (levels - 1), s.reshape(n, 4), atol=1e-6)   # values on the model's grid
    index = (k * levels ** np.arange(3, -1, -1)).sum(axis=1)                   # image -> its number
    freq = np.bincount(index, minlength=levels ** 4) / n
    values = np.arange(levels, dtype=np.float32) / (levels - 1)
    every = np.array(list(itertools.product(values, repeat=4)), np.float32).reshape(-1, *shape)
    p = np.exp(-model.nll(Tensor(every)).numpy().astype(np.float64))           # same numbering
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3)


def test_forced_logits_give_forced_samples():
    model = tiny()
    model.net.head.out.weight.data[...] = 0.0
    model.net.head.out.bias.data[...] = np.inf
    assert (model.sample(3) == 1).all()
    model.net.head.out.bias.data[...] = -np.inf
    assert (model.sample(3) == 0).all()
    model = tiny(levels=4)
    model.net.head.out.weight.data[...] = 0.0
    model.net.head.out.bias.data[...] = [0.0, 0.0, 1e4, 0.0]
    np.testing.assert_allclose(model.sample(3), 2 / 3, rtol=1e-6)


def test_completion_keeps_the_known_rows():
    model = tiny(shape=(1, 28, 28), channels=4, blocks=1)
    images = data.load_dataset("mnist", "test")[0][:3]
    x = data.binarize(images, np.random.default_rng(0))
    out = model.complete(x, rows_known=20)
    assert out.shape == x.shape and set(np.unique(out)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out[:, :, :20], x[:, :, :20])
    assert (out[:, :, 20:] != x[:, :, 20:]).any()               # the rest is drawn, not copied
    uint8 = model.complete(images, rows_known=27)               # uint8 is binarised first
    assert set(np.unique(uint8)) <= {0.0, 1.0} and uint8.shape == x.shape
    with pytest.raises(ValueError, match="rows_known"):
        model.complete(x, rows_known=29)


# ---------------------------------------------------------------------- a prior over code indices
@pytest.mark.parametrize("arch", ["plain", "gated", "rowlstm"])
def test_code_prior_is_a_distribution_over_grids_and_samples_follow_it(arch):
    """K = 3 codes on a 2 x 2 grid: the 81 grids' probabilities sum to one, and sampled grids come with
    those frequencies."""
    nn.manual_seed(0)
    K, shape, n = 3, (2, 2), 20000
    prior = CodePixelCNN(PixelCNN.Config(arch=arch, **TINY), K, embed_dim=4)
    for p in prior.parameters():                       # larger weights: conditionals far from uniform
        p.data = p.data * 3
    every = np.array(list(itertools.product(range(K), repeat=4))).reshape(-1, *shape)   # (81, 2, 2)
    p = np.exp(-prior.nll(every).numpy().astype(np.float64))
    assert p.sum() == pytest.approx(1.0, abs=1e-4)
    s = prior.sample(n, shape, np.random.default_rng(0))
    assert s.shape == (n, *shape) and s.dtype == np.int64
    freq = np.bincount((s.reshape(n, 4) * K ** np.arange(3, -1, -1)).sum(axis=1), minlength=K ** 4) / n
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3)
