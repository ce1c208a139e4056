"""Image GPT on tiny configs: the palette, the causal mask (no gradient from later inputs), an exact
likelihood (it sums to one over all sequences), the KV cache against the full forward pass,
completions that keep the known half, the BERT option, and the linear probe."""
import itertools

import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor
from tinygen import nn
from tinygen.models import get_model_class, load_model, save_model
from tinygen.models.base import softmax_regression
from tinygen.models.igpt import pool

ImageGPT = get_model_class("igpt")
TINY = dict(dim=16, depth=2, num_heads=2, mlp_ratio=2.0, palette_size=4, side=7, batch_size=8,
            probe_train=40, probe_steps=20, monitor_test=20, monitor_train=40)


def build(**kw):
    nn.manual_seed(0)
    return ImageGPT(ImageGPT.Config(**{**TINY, **kw}))


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) * 255).astype(np.uint8)


def test_pool_tokenize_decode_round_trip():
    model = build()
    x = images(3)
    np.testing.assert_allclose(pool(x, 7)[0, 0, 0], x[0, 0, :4, :4].mean() / 255, rtol=1e-6)
    tokens = model.tokenize(x)
    assert tokens.shape == (3, 49) and tokens.min() >= 0 and tokens.max() < 4
    decoded = model.decode(tokens)
    assert decoded.shape == (3, 1, 28, 28) and decoded.dtype == np.float32
    np.testing.assert_array_equal(model.tokenize(decoded), tokens)      # a palette image is its own tokens
    # every pixel goes to its nearest palette entry
    gray = pool(x, 7).reshape(3, -1)
    nearest = np.abs(gray[..., None] - model.palette).min(axis=2)
    np.testing.assert_allclose(np.abs(gray - model.palette[tokens]), nearest)


def test_palette_is_fitted_once_on_the_first_training_batch_and_saved(tmp_path):
    model = build(palette_size=8, side=14)
    x = np.zeros((8, 1, 28, 28), np.uint8)
    x[:, :, 8:20, 8:20] = 255                                           # black and white only ...
    x[:4, :, 10:12, 10:12] = 128                                        # ... and one gray (a 2 x 2 block)
    model.prepare_batch(x, None)
    p = model.palette.copy()
    assert model.palette_fitted[0] == 1 and (np.diff(p) >= 0).all()
    for level in (0.0, 1.0, 128 / 255):                                 # k-means puts a centroid on each mass
        assert np.abs(p - level).min() < 0.05, (level, p)
    model.prepare_batch(images(8), None)                                # not refitted
    np.testing.assert_array_equal(model.palette, p)
    save_model(model, tmp_path / "m.npz")
    loaded, _ = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.palette, p)


def test_inputs_are_the_targets_shifted_behind_a_start_token():
    model = build()
    t = model.tokenize(images(2))
    inp = model.inputs_of(t)
    assert (inp[:, 0] == model.sos).all()
    np.testing.assert_array_equal(inp[:, 1:], t[:, :-1])


def gradient_of_output(model, t, T=49, seed=0):
    """|d logits[:, t] / d h| summed over channels: (T,) one number per input position."""
    h = Tensor(np.random.default_rng(seed).standard_normal((2, T, model.config.dim)).astype(np.float32),
               requires_grad=True)
    model(h)[:, t].sum().backward()
    return np.abs(h.grad).sum(axis=(0, 2))


@pytest.mark.parametrize("t", [0, 10, 30, 48])
def test_the_causal_mask_leaks_nothing(t):
    """Output t depends on inputs 0..t only: the gradient with respect to every later input is exactly 0."""
    g = gradient_of_output(build(depth=3), t)
    assert (g[t + 1:] == 0).all()
    assert (g[:t + 1] > 0).all()


def test_bert_attends_both_ways():
    g = gradient_of_output(build(objective="bert"), 10)
    assert (g[11:] > 0).all() and (g[:11] > 0).all()


def log_prob(model, tokens):
    """log p(t) (B,) of token sequences under the model (the chain rule over the logits)."""
    logits = model(model.embed(model.inputs_of(tokens))).numpy().astype(np.float64)   # (B, N, K)
    logp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    return np.take_along_axis(logp, tokens[..., None], axis=2)[..., 0].sum(axis=1)


def test_the_likelihood_sums_to_one_over_all_images():
    """side 2, palette 3: all 3^4 = 81 token sequences; sum_t p(t) = 1 (an exact likelihood)."""
    model = build(side=2, palette_size=3)
    every = np.array(list(itertools.product(range(3), repeat=4)))       # (81, 4)
    np.testing.assert_allclose(np.exp(log_prob(model, every)).sum(), 1.0, rtol=1e-5)


def test_loss_and_bits_per_pixel_are_the_mean_negative_log_likelihood():
    model = build()
    x = images(4)
    tokens = model.tokenize(x)
    loss, logs = model.loss((tokens, None))
    expected = -log_prob(model, tokens).mean() / 49                      # nats per token
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    np.testing.assert_allclose(logs["bits_per_pixel"], expected / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(model.evaluate_nll(x)["bits_per_pixel"], expected / np.log(2), rtol=1e-5)


def test_the_kv_cache_gives_the_full_forward_logits():
    model = build(depth=2)
    model.eval()
    tokens = model.tokenize(images(3))
    full = model(model.embed(model.inputs_of(tokens))).numpy()          # (3, 49, 4)
    cache = model.gpt.new_cache(3, 49)
    inp = model.inputs_of(tokens)
    steps = np.stack([model._step(inp[:, t], t, cache) for t in range(49)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=1e-4, atol=1e-5)


def test_samples_and_completions():
    model = build()
    model.rng = np.random.default_rng(0)
    s = model.sample(5)
    assert s.shape == (5, 1, 28, 28) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    np.testing.assert_array_equal(model.tokenize(s), model.tokenize(model.decode(model.tokenize(s))))
    x = images(4)
    done = model.complete(x)                                            # 3 of 7 rows known
    known = model.decode(model.tokenize(x))
    np.testing.assert_array_equal(done[:, :, :12], known[:, :, :12])
    assert not np.array_equal(done[:, :, 12:], known[:, :, 12:])
    cov = model.covered(x)
    assert (cov[:, :, 12:] == 0.5).all() and np.array_equal(cov[:, :, :12], known[:, :, :12])
    with pytest.raises(ValueError, match="rows_known"):
        model.complete(x, rows_known=8)


def test_training_lowers_the_loss_for_both_objectives():
    x = images(8)
    x[:, :, :, :14] = 0                                                  # something to learn: a black left half
    for objective in ("ar", "bert"):
        model = build(objective=objective, lr=3e-3, lr_schedule="constant")
        model.rng = np.random.default_rng(0)
        opts = model.configure_optimizers()
        losses = [model.training_step(model.prepare_batch(x, None), opts)["loss"] for _ in range(30)]
        assert losses[-1] < 0.7 * losses[0], (objective, losses[0], losses[-1])


def test_bert_masks_about_mask_prob_and_scores_only_masked_tokens():
    model = build(objective="bert", mask_prob=0.25)
    model.rng = np.random.default_rng(0)
    tokens = model.tokenize(images(64))
    masked = np.random.default_rng(0).random(tokens.shape) < 0.25          # the draw loss() makes
    model.rng = np.random.default_rng(0)
    loss, logs = model.loss((tokens, None))
    logits = model(model.embed(np.where(masked, model.mask_token, tokens))).numpy().astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[..., None], axis=2)[..., 0]
    np.testing.assert_allclose(loss.item(), nll[masked].mean(), rtol=1e-5)
    assert 0.2 < masked.mean() < 0.3
    model.rng = np.random.default_rng(1)
    assert model.sample(2).shape == (2, 1, 28, 28)


def test_softmax_regression_separates_separable_classes():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 5)) * 4
    y = np.arange(500) % 10
    f = centres[y] + 0.3 * rng.standard_normal((500, 5))
    assert softmax_regression(f[:400], y[:400], f[400:], y[400:], steps=200) > 0.97
    assert softmax_regression(rng.standard_normal((400, 5)), y[:400], f[400:], y[400:], steps=50) < 0.4


def test_the_linear_probe_reads_frozen_features_of_every_block():
    model = build(depth=3)
    x, y = images(30), np.arange(30) % 10
    before = model.state_dict()
    r = model.evaluate_representation(x, y, n_train=40)
    assert r["probe_layer"] == 1 and set(r) >= {"probe_acc", "probe_acc_block0", "probe_acc_block2",
                                                 "raw_pixel_probe_acc", "bits_per_pixel"}
    assert all(0 <= r[k] <= 1 for k in r if k.endswith("acc") or "acc_block" in k)
    for k, v in model.state_dict().items():                              # frozen: nothing changed
        np.testing.assert_array_equal(v, before[k])
    _, feats = model._scan(x[:2])
    h = model(model.embed(model.inputs_of(model.tokenize(x[:2]))), return_layers=(1,))[1][0]
    np.testing.assert_allclose(feats[:, 1], h.numpy().mean(axis=1), rtol=1e-5, atol=1e-6)
    assert set(model.evaluate(x, y)) == {"monitor_probe_acc", "monitor_raw_pixel_probe_acc", "monitor_bits_per_pixel"}


def blobs(n):
    """Two kinds of image, labels 0 and 1: a bright top half or a bright bottom half, on sparse noise."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.random((n, 1, 28, 28)) < 0.1).astype(np.uint8) * 255
    x[y == 0, :, :14] = 255
    x[y == 1, :, 14:] = 255
    return x, y


@pytest.mark.parametrize("objective", ["ar", "bert"])
def test_fine_tuning_trains_every_weight_and_a_head_on_the_last_blocks_mean(objective):
    model = build(objective=objective)
    x, y = blobs(32)
    tokens = model.tokenize(x[:3])
    head = nn.Linear(16, 10)
    logits, gen = model.classifier_logits(tokens, head)
    if objective == "ar":                                                  # f(x) = mean_i LN(h_L)_i
        y_last = model.gpt(model.pos_embed(model.embed(model.inputs_of(tokens))))
        np.testing.assert_allclose(logits.numpy(), head(y_last.mean(axis=1)).numpy(), rtol=1e-5, atol=1e-6)
        assert gen.item() == pytest.approx(model.loss((tokens, None))[0].item(), rel=1e-5)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    head = model.fine_tune(x, y, steps=40, batch_size=8, lr=3e-3)
    assert (model.fine_tuned_predict(x, head) == y).all()
    moved = [k for k, v in model.state_dict().items() if not np.array_equal(v, before[k])]
    assert any(k.startswith("gpt.blocks.0") for k in moved) and "tok_embed.weight" in moved
    assert not model.training


def test_fine_tuning_on_the_classes_alone_also_learns_them():
    model = build()
    x, y = blobs(32)
    head = model.fine_tune(x, y, steps=40, batch_size=8, lr=3e-3, joint=False)
    assert (model.fine_tuned_predict(x, head) == y).all()


def test_bad_configs_are_refused_by_name():
    with pytest.raises(ValueError, match="objective"):
        build(objective="mae")
    with pytest.raises(ValueError, match="side"):
        build(side=5)
    with pytest.raises(ValueError, match="ImageGPT"):
        pool(np.zeros((2, 1, 27, 27), np.uint8), 7)


def test_pictures_are_written(tmp_path):
    model = build()
    model.save_pictures(images(2), tmp_path / "s.png", tmp_path / "c.png", n_samples=4, n_completions=2)
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "c.png").stat().st_size > 0
