"""VAE: the closed-form KL, the reparameterised gradient, training on a fixed batch, the IWAE bound,
the fixed test binarisation, shapes, and one pass through the training loop."""
import json
import math

import numpy as np
import pytest

from autograd import Tensor
from tinygen import data, optim
from tinygen.models.base import importance_weighted_nll
from tinygen.models.vae import LOG_2PI, gaussian_kl, reparameterize
from tinygen.models import build_model
from tinygen.train import TrainOptions, Trainer

TINY = {"hidden": 64, "latent_dim": 4, "batch_size": 32}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def binary(images, seed=0):
    return data.binarize(images, np.random.default_rng(seed))


def test_closed_form_kl_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(3, 4)).astype(np.float32)
    logvar = rng.normal(scale=0.7, size=(3, 4)).astype(np.float32)
    kl = gaussian_kl(Tensor(mu), Tensor(logvar)).numpy()                        # (3,)
    # KL = E_q[log q(z) - log p(z)], z = mu + sigma eps
    eps = rng.standard_normal((200_000, 3, 4))
    z = mu + np.exp(0.5 * logvar) * eps
    log_ratio = (-0.5 * (eps ** 2 + logvar + LOG_2PI) + 0.5 * (z ** 2 + LOG_2PI)).sum(axis=2)  # (M, 3)
    standard_error = log_ratio.std(axis=0) / math.sqrt(len(log_ratio))
    assert kl.shape == (3,)
    np.testing.assert_array_less(np.abs(log_ratio.mean(axis=0) - kl), 5 * standard_error + 1e-3)


def test_reparameterised_gradient_matches_the_score_function_estimate():
    # f(z) = sum_j z_j^2 with z ~ N(mu, sigma^2):  E f = sum_j (mu_j^2 + sigma_j^2),  dE f / dmu = 2 mu
    mu0 = np.array([[0.5, -1.0]], np.float32)
    logvar0 = np.array([[-0.5, 0.3]], np.float32)
    rng, M = np.random.default_rng(0), 200_000
    mu, logvar = Tensor(mu0, requires_grad=True), Tensor(logvar0, requires_grad=True)
    z = reparameterize(mu.expand(M, 2), logvar.expand(M, 2), rng)
    (z * z).sum(axis=1).mean().backward()
    # score function (REINFORCE): dE f / dmu = E[(f(z) - b) d log q(z) / dmu] = E[(f(z) - b) (z - mu) / sigma^2]
    sigma2 = np.exp(logvar0)
    zs = mu0 + np.sqrt(sigma2) * rng.standard_normal((1_000_000, 2))
    f = (zs ** 2).sum(axis=1, keepdims=True)
    score = ((f - f.mean()) * (zs - mu0) / sigma2).mean(axis=0)
    np.testing.assert_allclose(mu.grad[0], 2 * mu0[0], atol=0.03)             # against the analytic gradient
    np.testing.assert_allclose(score, 2 * mu0[0], atol=0.05)
    np.testing.assert_allclose(mu.grad[0], score, atol=0.06)
    np.testing.assert_allclose(logvar.grad[0], sigma2[0], atol=0.03)          # dE f / dlog sigma^2 = sigma^2


def test_loss_decreases_on_a_fixed_batch(mnist):
    model = build_model("vae", TINY)
    batch = (Tensor(binary(mnist[0][:64])), mnist[1][:64])
    opts = {"main": optim.Adam(model.parameters(), lr=3e-3)}
    logs = [model.training_step(batch, opts) for _ in range(30)]
    assert set(logs[0]) >= {"loss", "recon", "kl"}
    assert logs[0]["loss"] == pytest.approx(logs[0]["recon"] + logs[0]["kl"], rel=1e-5)
    assert np.mean([l["loss"] for l in logs[-5:]]) < 0.7 * logs[0]["loss"]


def test_iwae_bound_is_tighter_than_the_elbo_and_log_weights_average_to_the_elbo(mnist):
    model = build_model("vae", TINY)
    result = model.evaluate_nll(mnist[0], k=500, n=20)
    assert result["k"] == 500
    assert result["iwae_nll_nats"] <= result["neg_elbo_nats"]
    # E_q[log w] = ELBO (analytic KL): compare the mean log weight with many one-sample ELBOs
    x = binary(mnist[0][:3])
    log_w = model.iwae_log_weights(x, 2000)
    elbo = model.elbo(Tensor(np.repeat(x, 2000, axis=0))).numpy().reshape(3, 2000).mean(axis=1)
    np.testing.assert_allclose(log_w.mean(axis=1), elbo, atol=0.5)
    # with one sample the importance-weighted bound is the ELBO itself
    one = model.iwae_log_weights(x, 1)
    np.testing.assert_allclose(importance_weighted_nll(one), -one[:, 0], rtol=1e-6)


def test_evaluate_nll_binarises_the_test_split_once_with_a_fixed_seed(mnist):
    model = build_model("vae", TINY)
    model.rng = np.random.default_rng(5)
    first = model.evaluate_nll(mnist[0], k=10, n=30)
    model.rng = np.random.default_rng(5)
    assert model.evaluate_nll(mnist[0], k=10, n=30) == first  # same images, same importance samples


def test_shapes_and_modes(mnist, tmp_path):
    model = build_model("vae", TINY)
    x = Tensor(binary(mnist[0][:5]))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    assert model.decode(mu).shape == (5, 1, 28, 28)
    assert model.elbo(x).shape == (5,)
    log_w = model.iwae_log_weights(binary(mnist[0][:5]), 20, rows=50)  # 2 images a chunk: 3 chunks
    assert log_w.shape == (5, 20) and np.isfinite(log_w).all()
    samples = model.sample(7)
    assert samples.shape == (7, 1, 28, 28) and isinstance(samples, np.ndarray)
    assert samples.min() >= 0 and samples.max() <= 1
    assert model.training  # sample() ran in eval mode and put train mode back
    path = model.interpolate(mnist[0][0], mnist[0][1], steps=6)
    assert path.shape == (6, 1, 28, 28)
    assert model.embed(mnist[0][:8]).shape == (8, 4)
    with pytest.raises(ValueError, match="latent_dim=2"):
        model.latent_manifold(tmp_path / "m.png")
    flat = build_model("vae", {**TINY, "latent_dim": 2})
    assert flat.latent_manifold(tmp_path / "m.png", grid=5).shape == (25, 1, 28, 28)
    assert (tmp_path / "m.png").exists()


def test_a_few_steps_through_the_training_loop(tmp_path):
    model = build_model("vae", TINY)
    summary = Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    assert summary["steps"] == 3 and np.isfinite(summary["test_neg_elbo"])
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_recon"] + summary["test_kl"])


def test_resume_replays_the_same_noise_and_binarisation(tmp_path):
    def fit(out, steps, resume=False):
        model = build_model("vae", TINY)
        options = TrainOptions(out=str(out), max_steps=steps, resume=resume, log_every=1, checkpoint_every=2,
                               progress=False, evaluate=False)
        Trainer(model, options).fit()
        return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]

    straight = fit(tmp_path / "straight", 6)
    fit(tmp_path / "split", 3)
    assert fit(tmp_path / "split", 6, resume=True) == straight


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_the_latent_probe_reads_the_label_from_the_posterior_means(name):
    """evaluate_representation: softmax regression of the label on mu(x) (the CVAE's mu(x, y)) of a fixed
    subset of the train split, scored on the test images (evaluate_model reports it, as Image GPT's probe)."""
    from tinygen.models.base import softmax_regression
    model = build_model(name, {"hidden": 16, "latent_dim": 2, "batch_size": 8})
    model.dataset = "mnist"
    x_train, y_train = data.load_dataset("mnist", "train")
    x_test, y_test = (a[:300] for a in data.load_dataset("mnist", "test"))
    got = model.evaluate_representation(x_test, y_test, n_train=500)["latent_probe_acc"]
    pick = np.sort(np.random.default_rng(0).permutation(len(x_train))[:500])
    by_hand = softmax_regression(model.embed(x_train[pick], y_train[pick]), y_train[pick],
                                 model.embed(x_test, y_test), y_test)
    assert got == by_hand and 0 <= got <= 1
    if name == "cvae":   # the labels reach the encoder: other labels, other codes
        assert not np.allclose(model.embed(x_test, y_test), model.embed(x_test, (y_test + 1) % 10))
