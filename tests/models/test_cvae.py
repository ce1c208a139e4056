"""Conditional VAE: shapes, training on a fixed batch, the label steering the decoder, sampling by
label, the style grid, the label-marginalised likelihood, and one pass through the training loop."""
import numpy as np
import pytest
from PIL import Image

from autograd import Tensor
from tinygen import data, optim
from tinygen.models.vae import VAE
from tinygen.models import build_model
from tinygen.train import TrainOptions, Trainer

TINY = {"hidden": 64, "latent_dim": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def binary(images):
    return data.binarize(images, np.random.default_rng(0))


def test_builds_on_the_vae(mnist):
    model = build_model("cvae", TINY)
    assert isinstance(model, VAE) and model.conditional and model.image_range == "binary"
    x, y = Tensor(binary(mnist[0][:5])), mnist[1][:5]
    mu, logvar = model.encode(x, y)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.decode(mu, y).shape == (5, 1, 28, 28)
    assert model.elbo(x, y).shape == (5,)
    assert model.embed(mnist[0][:5], y).shape == (5, 3)


def test_loss_decreases_on_a_fixed_batch(mnist):
    model = build_model("cvae", TINY)
    batch = (Tensor(binary(mnist[0][:64])), mnist[1][:64])
    opts = {"main": optim.Adam(model.parameters(), lr=3e-3)}
    logs = [model.training_step(batch, opts) for _ in range(30)]
    assert set(logs[0]) >= {"loss", "recon", "kl"}
    assert np.mean([l["loss"] for l in logs[-5:]]) < 0.7 * logs[0]["loss"]


def test_changing_the_label_with_z_fixed_changes_the_image():
    model = build_model("cvae", TINY)
    z = Tensor(np.random.default_rng(0).standard_normal((1, 3)).astype(np.float32))
    a = model.decode(z, np.array([3])).numpy()
    b = model.decode(z, np.array([8])).numpy()
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(a, model.decode(z, np.array([3])).numpy())  # same z, same y: same image


def test_sample_by_label():
    model = build_model("cvae", TINY)
    samples = model.sample(5, label=3)
    assert samples.shape == (5, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    assert model.sample(4, label=np.array([0, 1, 2, 3])).shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(model.labels_for(12, None), np.arange(12) % 10)
    np.testing.assert_array_equal(model.labels_for(3, 7), [7, 7, 7])
    with pytest.raises(ValueError):
        model.labels_for(2, 10)
    assert model.training
    # the same z for every label: the rng draws z only, so fixing it fixes the styles
    model.rng = np.random.default_rng(2)
    a = model.sample(4, label=1)
    model.rng = np.random.default_rng(2)
    np.testing.assert_array_equal(a, model.sample(4, label=1))


def test_style_grid_rows_share_z_and_columns_are_digits(tmp_path):
    model = build_model("cvae", TINY)
    images = model.style_grid(tmp_path / "g.png", n_styles=3)
    assert images.shape == (30, 1, 28, 28)
    width, height = Image.open(tmp_path / "g.png").size
    assert (width, height) == (2 * (10 * 30 + 2), 2 * (3 * 30 + 2))
    model.visualize(None, None, tmp_path / "v.png")
    assert (tmp_path / "v.png").exists()


def test_label_marginalised_likelihood(mnist):
    model = build_model("cvae", TINY)
    result = model.evaluate_nll(mnist[0], k=50, n=8)
    assert result["iwae_nll_nats"] <= result["neg_elbo_nats"]
    with pytest.raises(ValueError, match="multiple of 10"):
        model.evaluate_nll(mnist[0], k=15, n=2)
    # the 10 strata: each label's weights averaged alone give that label's conditional ELBO
    x = binary(mnist[0][:2])
    log_w = model.iwae_log_weights(x, 10 * 300)                                    # (2, 3000)
    per_label = log_w.reshape(2, 300, 10).mean(axis=1)                             # (2, 10)
    y = np.arange(10)
    elbo = model.elbo(Tensor(np.repeat(x, 10 * 300, axis=0)), np.tile(y, 2 * 300)).numpy()
    np.testing.assert_allclose(per_label, elbo.reshape(2, 300, 10).mean(axis=1), atol=1.0)


def test_a_few_steps_through_the_training_loop(tmp_path):
    model = build_model("cvae", TINY)
    summary = Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    assert summary["steps"] == 3 and np.isfinite(summary["test_neg_elbo"])


def test_interpolation_and_manifold_take_a_label(tmp_path):
    from tinygen.models.cvae import CVAE
    model = CVAE(CVAE.Config(latent_dim=2))
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    assert model.interpolate(x[0], x[1], steps=5, label=3).shape == (5, 1, 28, 28)
    a = model.latent_manifold(tmp_path / "m3.png", grid=4, label=3)
    b = model.latent_manifold(tmp_path / "m5.png", grid=4, label=5)
    assert a.shape == (16, 1, 28, 28) and not np.allclose(a, b)


def test_class_log_likelihoods_score_every_label_with_its_own_posterior(mnist):
    model = build_model("cvae", TINY)
    seen = {"encode": [], "decode": []}
    encode, decode = model.encode, model.decode
    model.encode = lambda x, y: seen["encode"].append(np.asarray(y).copy()) or encode(x, y)
    model.decode = lambda z, y: seen["decode"].append(np.asarray(y).copy()) or decode(z, y)
    x = binary(mnist[0][:3])
    log_pxy = model.class_log_likelihoods(x, k=4)
    assert log_pxy.shape == (3, 10) and np.isfinite(log_pxy).all()
    # column y: z ~ q(z|x, y) and p(x|z, y), the k draws of an image decoded with its label
    assert [list(y) for y in seen["encode"]] == [[y] * 3 for y in range(10)]
    assert [list(y) for y in seen["decode"]] == [[y] * 12 for y in range(10)]
    # k = 1 is a one-sample ELBO(x|y): averaged over many draws it is the ELBO of that label
    model.encode, model.decode = encode, decode
    x = binary(mnist[0][:2])
    one = model.class_log_likelihoods(np.repeat(x, 300, axis=0), k=1).reshape(2, 300, 10).mean(axis=1)
    elbo = np.stack([model.elbo(Tensor(np.repeat(x, 300, axis=0)), np.full(600, y)).numpy().reshape(2, 300)
                     .mean(axis=1) for y in range(10)], axis=1)                     # (2, 10)
    np.testing.assert_allclose(one, elbo, atol=1.0)
