"""DDPM, the model (the process, samplers and guidance are tested in tests/test_diffusion.py): training
on a fixed batch, the null label and label dropping, guided sampling, shapes and errors, EMA weights
through a checkpoint."""
import numpy as np
import pytest

from tinygen import data, optim
from tinygen.models import load_model
from tinygen.diffusion import classifier_free
from tinygen.train import TrainOptions, Trainer, build_model

TINY = {"T": 50, "base_channels": 8, "channel_mult": [1, 2, 2], "batch_size": 16, "sample_steps": 5}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def test_loss_decreases_on_a_fixed_batch(mnist):
    model = build_model("ddpm", TINY)
    batch = model.prepare_batch(mnist[0][:32], mnist[1][:32])
    assert batch[0].numpy().min() == -1 and batch[0].numpy().max() == 1
    opts = {"main": optim.Adam(model.parameters(), lr=3e-3)}
    model.rng = np.random.default_rng(0)  # the same t, noise and label drops every step: a fixed problem
    first = model.training_step(batch, opts)["loss"]
    assert first == pytest.approx(1.0, abs=0.15)  # zero-initialised output: eps_hat = 0, loss = E eps^2
    for _ in range(15):  # 0.6 of the first loss after 8 steps, 0.29 after 16 (0.03 after 41)
        model.rng = np.random.default_rng(0)
        last = model.training_step(batch, opts)["loss"]
    assert last < 0.6 * first
    assert model.ema.num_updates == 16


def test_sampling_shapes_guidance_and_errors():
    model = build_model("ddpm", TINY)
    for p in model.net.parameters():  # leave the zero initialisation so eps depends on x, t and y
        p.data[...] = np.random.default_rng(0).normal(0, 0.05, p.data.shape)
    model.rng = np.random.default_rng(0)
    x = model.sample(3, label=[1, 2, 3], steps=4)
    assert x.shape == (3, 1, 28, 28) and x.min() >= 0 and x.max() <= 1 and model.training
    x_t = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    y, t = np.array([4, 5]), np.full(2, 10)
    e_y, e_none = model.eps(x_t, t, y), model.eps(x_t, t, None)       # None: the null label
    np.testing.assert_array_equal(model.eps(x_t, t, model.null_condition(2)), e_none)
    assert not np.allclose(e_y, e_none)
    guided = classifier_free(model.eps, model.null_condition(2), 3.0)(x_t, t, y)   # y and null in one batch of 4
    np.testing.assert_allclose(guided, e_none + 3 * (e_y - e_none), rtol=1e-4, atol=1e-5)
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
    eps = model.eps(x_T, np.full(2, t), np.array([1, 2])) - 2.0 * np.sqrt(1 - d.abar[t]) * 0.5
    np.testing.assert_allclose(guided, d.predict_x0(x_T, np.full(2, t), eps), atol=1e-4)
    model.rng = np.random.default_rng(0)
    assert not np.allclose(guided, model.sample_latents(2, label=[1, 2], steps=1))
    with pytest.raises(ValueError, match="needs a condition"):
        model.sample_latents(2, steps=1, classifier=Constant(), classifier_scale=2.0)


def test_label_dropping_uses_the_null_label():
    model = build_model("ddpm", TINY)
    np.testing.assert_array_equal(model.null_condition(3), [10, 10, 10])
    y = np.arange(2000) % 10
    dropped = model.drop_condition(y, 0.2, np.random.default_rng(0))
    assert set(np.unique(dropped)) <= set(range(11)) and np.all((dropped == y) | (dropped == 10))
    assert (dropped == 10).mean() == pytest.approx(0.2, abs=0.03)


def test_training_loop_keeps_ema_weights_in_the_checkpoint(tmp_path):
    model = build_model("ddpm", TINY)
    Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    loaded, meta = load_model(tmp_path / "last.npz", "ddpm")
    assert meta["step"] == 3 and loaded.ema.num_updates == 3
    for name, p in loaded.named_parameters():  # load_model puts the averaged weights in
        np.testing.assert_array_equal(p.data, model.ema.shadow[name])
    gif = tmp_path / "trajectory.gif"
    loaded.save_trajectory(gif, n=4, frames=3, steps=3)
    assert gif.read_bytes()[:3] == b"GIF"


# ---------------------------------------------------------------------- the Bayes classifier's bound
def test_class_log_likelihoods_share_the_noise_across_labels_and_sum_the_bound(mnist):
    """(N, 10) finite log-likelihoods; a network blind to the label (its label embedding zeroed) gives the
    same column for every label, to the bit: every label sees the same steps and noise. With k = T every
    step is drawn once, and the estimate is minus the sum of the T terms of the bound, in nats."""
    model = build_model("ddpm", {**TINY, "T": 10})
    x = data.to_float(mnist[0][:3])
    model.net.label.weight.data[...] = 0
    out = model.class_log_likelihoods(x, k=model.config.T)
    assert out.shape == (3, 10) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.repeat(out[:, :1], 10, axis=1))
    # the same terms by hand: steps 0..T-1, the same noise draws in the same order
    d, rng = model.diffusion, np.random.default_rng(0)
    rng.random(model.config.T)                                           # the strata's draws
    x0 = 2 * x - 1
    total = np.zeros(3)
    for t in range(d.T):
        eps = rng.standard_normal(x0.shape, dtype=np.float32)
        x_t = d.q_sample(x0, np.full(3, t), eps)
        eps_hat = model.eps(x_t, np.full(3, t), np.zeros(3, int))
        total += d.vlb_terms(x0, x_t, np.full(3, t), eps_hat, -np.ones_like(x_t)) * (x0[0].size * np.log(2))
    np.testing.assert_allclose(out[:, 0], -total, rtol=1e-5)
    with pytest.raises(ValueError, match="trained unconditionally"):
        build_model("ddpm", {**TINY, "num_classes": 0}).class_log_likelihoods(x, k=2)


def test_evaluate_nll_sums_the_prior_term_and_one_step_per_stratum(mnist, monkeypatch):
    model = build_model("ddpm", {**TINY, "num_classes": 10})
    x = mnist[0][:6]
    d, k = model.diffusion, 5
    calls = []

    def one_bit(x0, t, cond, rng):   # every L_t one bit/dim: the estimate's sum is then T exactly
        calls.append((t.copy(), cond))
        return np.ones(len(x0))
    monkeypatch.setattr(model, "_bound_term", one_bit)
    r = model.evaluate_nll(x, k=k, batch_size=4)
    # L_T = KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)) per dim, in bits, for x0 in [-1, 1]
    x0, abar = x.astype(np.float64) / 127.5 - 1, d.abar[-1]                 # uint8 -> [-1, 1]
    prior = (0.5 * (-1 - np.log(1 - abar) + (1 - abar) + abar * x0 ** 2)).reshape(len(x), -1).mean(1) / np.log(2)
    assert r["vlb_bits_per_dim"] == pytest.approx(prior.mean() + d.T, rel=1e-5)
    assert r["vlb_steps"] == k and r["vlb_bits_per_dim_se"] == pytest.approx(prior.std(ddof=1) / np.sqrt(6), rel=1e-4)
    # each image gets one step in each of the k strata [j T / k, (j + 1) T / k), under the null label
    steps = np.concatenate([np.stack([t for t, _ in calls[:k]], 1), np.stack([t for t, _ in calls[k:]], 1)])
    assert steps.shape == (6, k) and len(calls) == 2 * k
    assert ((steps >= np.arange(k) * d.T // k) & (steps < (np.arange(k) + 1) * d.T // k)).all()
    assert all((cond == 10).all() for _, cond in calls)


def test_evaluate_nll_is_a_bound_in_bits_per_dim_and_refuses_a_model_without_p_x(mnist):
    model = build_model("ddpm", TINY)                    # unconditional, untrained: eps = 0
    r = model.evaluate_nll(mnist[0][:4], k=3)
    assert np.isfinite(r["vlb_bits_per_dim"]) and r["vlb_bits_per_dim"] > 0
    assert model.evaluate_nll(mnist[0][:4], k=3) == r                         # a fixed seed
    with pytest.raises(ValueError, match="p_uncond=0.*no p\\(x\\)"):
        build_model("ddpm", {**TINY, "num_classes": 10, "p_uncond": 0.0}).evaluate_nll(mnist[0][:4])
