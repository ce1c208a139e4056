"""DDPM: the forward process in closed form against iterating it, the posterior against Bayes' rule
and against samples, DDIM against the ancestral step, guidance, shapes, training on a fixed batch,
EMA weights through a checkpoint."""
import numpy as np
import pytest

from tinygen import data, optim
from tinygen.models import load_model
from tinygen.models.ddpm import GaussianDiffusion, beta_schedule
from tinygen.train import TrainOptions, Trainer, build_model

TINY = {"T": 50, "base_channels": 8, "channel_mult": [1, 2, 2], "batch_size": 16, "sample_steps": 5}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def test_schedules():
    linear = beta_schedule("linear", 1000)
    assert linear[0] == pytest.approx(1e-4) and linear[-1] == pytest.approx(0.02)
    cosine = GaussianDiffusion(beta_schedule("cosine", 1000))
    assert np.all(np.diff(cosine.abar) < 0) and cosine.betas.max() <= 0.999
    assert cosine.abar[0] > 0.999 and cosine.abar[-1] < 1e-4
    with pytest.raises(ValueError, match="cosine"):
        beta_schedule("quadratic", 10)


def test_closed_form_matches_iterating_the_one_step_process():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    rng = np.random.default_rng(0)
    x0 = np.array([0.9, -0.5, 0.1], np.float32).reshape(1, 3, 1, 1)
    M = 40_000
    x = np.repeat(x0, M, axis=0)
    for t in range(60):                                   # x_t ~ q(x_t | x_{t-1}), 60 times
        x = d.q_step(x, np.full(M, t), rng.standard_normal(x.shape).astype(np.float32))
    jump = d.q_sample(np.repeat(x0, M, axis=0), np.full(M, 59), rng.standard_normal(x.shape).astype(np.float32))
    mean, std = np.sqrt(d.abar[59]) * x0.ravel(), np.sqrt(1 - d.abar[59])
    for samples in (x, jump):                             # both follow N(sqrt(abar_t) x_0, (1 - abar_t) I)
        np.testing.assert_allclose(samples.mean(axis=0).ravel(), mean, atol=4 * std / np.sqrt(M))
        np.testing.assert_allclose(samples.std(axis=0).ravel(), std, rtol=0.02)
    assert abs(np.corrcoef(x[:, 0].ravel(), x[:, 1].ravel())[0, 1]) < 0.03   # independent pixels


def test_posterior_matches_bayes_rule_and_samples():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    t, x0 = 30, np.float32(0.6)
    a, b, abar_prev = d.alphas[t], d.betas[t], d.abar[t - 1]
    # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(a) x_{t-1}, b) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})
    precision = a / b + 1 / (1 - abar_prev)
    for x_t in (-1.0, 0.3, 2.0):
        mean, var = d.q_posterior(np.full((1, 1, 1, 1), x0), np.full((1, 1, 1, 1), x_t, np.float32), [t])
        expected_mean = (np.sqrt(a) * x_t / b + np.sqrt(abar_prev) * x0 / (1 - abar_prev)) / precision
        assert mean.item() == pytest.approx(expected_mean, rel=1e-5)
        assert var.item() == pytest.approx(1 / precision, rel=1e-5)
    # in distribution: draw (x_{t-1}, x_t) from the forward process; regress x_{t-1} on x_t
    rng, M = np.random.default_rng(1), 200_000
    x_prev = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * rng.standard_normal(M)
    x_t = np.sqrt(a) * x_prev + np.sqrt(b) * rng.standard_normal(M)
    slope, intercept = np.polyfit(x_t, x_prev, 1)
    residual = x_prev - (slope * x_t + intercept)
    assert slope == pytest.approx(d.posterior_ct[t], rel=0.01)
    assert intercept == pytest.approx(d.posterior_c0[t] * x0, abs=0.003)
    assert residual.var() == pytest.approx(d.posterior_variance[t], rel=0.02)


def test_ddim_with_eta_one_over_every_step_is_the_ancestral_step():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    rng = np.random.default_rng(2)
    x_t, eps, z = (rng.standard_normal((4, 1, 5, 5)).astype(np.float32) * s for s in (1, 0.5, 1))
    for t in (99, 40, 1):
        np.testing.assert_allclose(d.ddim_step(x_t, t, t - 1, eps, 1.0, z), d.ancestral_step(x_t, t, eps, z),
                                   rtol=1e-4, atol=1e-5)
    # eta = 0 ignores the noise: deterministic
    np.testing.assert_array_equal(d.ddim_step(x_t, 40, 20, eps, 0.0, z), d.ddim_step(x_t, 40, 20, eps, 0.0, 2 * z))
    ts = d.timesteps(7)
    assert ts[0] == 99 and ts[-1] == 0 and np.all(np.diff(ts) < 0) and len(ts) == 7
    with pytest.raises(ValueError, match="1..100"):
        d.timesteps(0)


def test_loss_decreases_on_a_fixed_batch(mnist):
    model = build_model("ddpm", TINY)
    batch = model.prepare_batch(mnist[0][:32], mnist[1][:32])
    assert batch[0].numpy().min() == -1 and batch[0].numpy().max() == 1
    opts = {"main": optim.Adam(model.parameters(), lr=3e-3)}
    model.rng = np.random.default_rng(0)  # the same t, noise and label drops every step: a fixed problem
    first = model.training_step(batch, opts)["loss"]
    assert first == pytest.approx(1.0, abs=0.15)  # zero-initialised output: eps_hat = 0, loss = E eps^2
    for _ in range(40):
        model.rng = np.random.default_rng(0)
        last = model.training_step(batch, opts)["loss"]
    assert last < 0.6 * first
    assert model.ema.num_updates == 41


def test_sampling_shapes_guidance_and_errors():
    model = build_model("ddpm", TINY)
    for p in model.net.parameters():  # leave the zero initialisation so eps depends on x, t and y
        p.data[...] = np.random.default_rng(0).normal(0, 0.05, p.data.shape)
    model.rng = np.random.default_rng(0)
    x = model.sample(3, label=[1, 2, 3], steps=4)
    assert x.shape == (3, 1, 28, 28) and x.min() >= 0 and x.max() <= 1 and model.training
    x_t = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = np.array([4, 5])
    e_y, e_none = model.guided_eps(x_t, 10, y, 1.0), model.guided_eps(x_t, 10, None, 1.0)
    assert not np.allclose(e_y, e_none)
    np.testing.assert_allclose(model.guided_eps(x_t, 10, y, 0.0), e_none)
    np.testing.assert_allclose(model.guided_eps(x_t, 10, y, 3.0), e_none + 3 * (e_y - e_none), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="0..9"):
        model.sample(1, label=10, steps=2)
    plain = build_model("ddpm", {**TINY, "num_classes": 0})
    assert not plain.conditional
    with pytest.raises(ValueError, match="unconditionally"):
        plain.sample(1, label=3, steps=2)
    a = plain.sample(2)  # all T ancestral steps
    assert a.shape == (2, 1, 28, 28)


def test_classifier_guidance_moves_eps_along_the_gradient():
    model = build_model("ddpm", TINY)

    class Constant:  # grad log p(y | x_t) = g everywhere
        def log_prob_grad(self, x, t, y):
            return np.full(x.shape, 0.5, np.float32)

    model.rng = np.random.default_rng(0)
    guided = model.sample_latents(2, label=[1, 2], steps=1, classifier=Constant(), classifier_scale=2.0)
    # one DDIM step from t = T-1 to the end returns x0_hat computed with eps' = eps - s sqrt(1 - abar_t) g
    d, t = model.diffusion, model.config.T - 1
    x_T = np.random.default_rng(0).standard_normal((2, 1, 28, 28), dtype=np.float32)
    eps = model.guided_eps(x_T, t, np.array([1, 2]), 1.0) - 2.0 * np.sqrt(1 - d.abar[t]) * 0.5
    np.testing.assert_allclose(guided, d.predict_x0(x_T, t, eps), atol=1e-4)
    model.rng = np.random.default_rng(0)
    assert not np.allclose(guided, model.sample_latents(2, label=[1, 2], steps=1))


def test_training_loop_keeps_ema_weights_in_the_checkpoint(tmp_path):
    model = build_model("ddpm", TINY)
    Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    assert (tmp_path / "samples_latest.png").exists()
    loaded, meta = load_model(tmp_path / "last.npz", "ddpm")
    assert meta["step"] == 3 and loaded.ema.num_updates == 3
    for name, p in loaded.named_parameters():  # load_model puts the averaged weights in
        np.testing.assert_array_equal(p.data, model.ema.shadow[name])
    gif = tmp_path / "trajectory.gif"
    loaded.save_trajectory(gif, n=4, frames=3, steps=3)
    assert gif.read_bytes()[:3] == b"GIF"
