"""pix2pix: U-Net and PatchGAN shapes, the paired batch, the L1 + cGAN objective, the L1-only baseline."""
import numpy as np
import pytest

from autograd import Tensor
from tinygen import data, nn
from tinygen.models.pix2pix import PatchGAN, UNetGenerator
from tinygen.models import build_model
from tests.models.test_gan_family import same, snapshot

TINY = {"width": 8}


def images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.uint8)
    x[:, :, 4:24, 6:22] = rng.integers(100, 256, size=(n, 1, 20, 16))   # an "item" on a black background
    return x


def test_unet_output_has_the_input_shape_and_uses_its_skips():
    nn.manual_seed(0)
    G = UNetGenerator(width=8)
    c = Tensor(np.random.default_rng(0).uniform(-1, 1, (3, 1, 28, 28)).astype(np.float32))
    out = G(c)
    assert out.shape == c.shape and np.abs(out.numpy()).max() < 1
    # a change in the bottom-right corner changes the output there, not in the far top-left corner
    c2 = c.numpy().copy()
    c2[:, :, 24:, 24:] = -c2[:, :, 24:, 24:]
    G.eval()
    d = np.abs(G(Tensor(c2)).numpy() - G(c).numpy())
    assert d[:, :, 22:, 22:].max() > 1e-3 and d[:, :, :4, :4].max() == 0


def test_patchgan_returns_a_map_of_logits():
    nn.manual_seed(0)
    pair = Tensor(np.zeros((2, 2, 28, 28), np.float32))
    assert PatchGAN(width=8)(pair).shape == (2, 1, 7, 7)
    model = build_model("pix2pix", TINY)
    x, c = model.prepare_batch(images(2), np.zeros(2, np.int64))
    assert model.critic(x, c).shape == (2, 1, 7, 7)


def test_prepare_batch_builds_the_documented_pair():
    imgs, labels = images(4), np.arange(4)
    x, c = build_model("pix2pix", TINY).prepare_batch(imgs, labels)         # task "edges"
    np.testing.assert_allclose(x.numpy(), imgs / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(c.numpy(), data.edges(imgs / 255.0) * 2 - 1, atol=1e-6)
    x, c = build_model("pix2pix", {**TINY, "task": "inpaint"}).prepare_batch(imgs, labels)
    c, x = c.numpy(), x.numpy()
    np.testing.assert_array_equal(c[:, :, 7:21, 7:21], 0)                 # the hole: grey in [-1, 1]
    outside = np.ones((28, 28), bool)
    outside[7:21, 7:21] = False
    np.testing.assert_allclose(c[:, :, outside], x[:, :, outside], atol=1e-6)
    with pytest.raises(ValueError, match="edges"):
        build_model("pix2pix", {"task": "colorize"})


def test_generator_objective_is_adversarial_plus_lambda_l1():
    model = build_model("pix2pix", {**TINY, "lambda_l1": 7.0})
    x, c = model.prepare_batch(images(4), np.zeros(4, np.int64))
    fake = model.fake(c, 4)
    loss, logs = model.g_objective(fake, x, c)
    l1 = np.abs(fake.numpy() - x.numpy()).mean()
    a = model.critic(fake, c).numpy()
    adv = np.log1p(np.exp(-a)).mean()                                     # -log sigmoid(a)
    assert logs["l1"] == pytest.approx(l1, rel=1e-5) and logs["g_adv"] == pytest.approx(adv, rel=1e-4)
    assert loss.item() == pytest.approx(adv + 7.0 * l1, rel=1e-4)


def test_l1_only_baseline_has_no_discriminator_update():
    model = build_model("pix2pix", {**TINY, "adversarial": False})
    opts = model.configure_optimizers()
    assert model.discriminator is None and set(opts) == {"G"}
    assert not any(name.startswith("discriminator") for name, _ in model.named_parameters())
    x, c = model.prepare_batch(images(), np.zeros(8, np.int64))
    loss, logs = model.g_objective(model.fake(c, 8), x, c)
    assert set(logs) == {"l1"} and loss.item() == pytest.approx(100.0 * logs["l1"], rel=1e-6)
    g0 = snapshot(model.generator)
    logs = model.training_step((x, c), opts)
    assert set(logs) == {"g_loss", "l1"} and not same(snapshot(model.generator), g0)


def test_translate_sample_and_evaluate():
    model = build_model("pix2pix", TINY)
    imgs, labels = images(5), np.arange(5)
    conditions = model.condition_of(imgs)
    out = model.translate(conditions)
    assert out.shape == (5, 1, 28, 28) and out.min() >= 0 and out.max() <= 1 and model.training
    np.testing.assert_array_equal(model.sample(5, condition=conditions), out)
    with pytest.raises(ValueError, match="condition"):
        model.sample(5)
    metrics = model.evaluate(imgs, labels)
    assert set(metrics) == {"test_l1"} and model.training
    assert metrics["test_l1"] == pytest.approx(np.abs(out - imgs / 255.0).mean(), rel=1e-5)


def test_the_evaluation_suite_judges_the_outputs(monkeypatch):
    from tinygen import data, evaluate
    model = build_model("pix2pix", TINY)
    imgs, labels = images(20), np.arange(20) % 10
    monkeypatch.setattr(data, "load_dataset", lambda name, split: (imgs, labels))  # a 20-image "test split"
    monkeypatch.setattr(evaluate, "_test_features", {"mnist": evaluate.judge_features(data.to_float(imgs), "mnist")})
    results = evaluate.evaluate_model(model, "mnist", n=20)
    outputs = model.translate(model.condition_of(imgs))
    assert results["test_l1"] == model.evaluate(imgs, labels)["test_l1"]
    assert results["judge_acc"] == evaluate.conditional_accuracy(outputs, labels, "mnist")
    assert results["fid_judge"] > 0 and "class_coverage" not in results


def test_visualize_rows_input_output_target(tmp_path):
    from PIL import Image
    model = build_model("pix2pix", TINY)
    model.visualize(images(16), np.zeros(16, np.int64), tmp_path / "v.png")
    w, h = Image.open(tmp_path / "v.png").size
    assert (w, h) == (2 * (16 * 30 + 2), 2 * (3 * 30 + 2))
