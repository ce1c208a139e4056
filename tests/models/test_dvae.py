"""The categorical dVAE: the Gumbel-softmax relaxation, hard tokens, the KL to the uniform prior, the
schedules, the hard-latent -ELBO computed exactly on a tiny grid, the token API's shapes and errors, and
training lowering the loss (for both discrete VAEs: the loss they share)."""
import itertools
import math

import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor
from tinygen import data
from tinygen.models import build_model
from tinygen.models.dvae import categorical_kl_uniform, geometric_schedule, sample_tokens
from tinygen.models.vae import bernoulli_log_likelihood
from tinygen.train import TrainOptions, Trainer

GUMBEL = {"num_tokens": 8, "channels": 4, "batch_size": 16}
ROLFE = {"hidden": 32, "latent_dim": 6, "batch_size": 16}
ROLFE_CONV = {"net": "conv", "cell_bits": 2, "channels": 4, "res_blocks": 1, "batch_size": 16}


def binary_images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) < 0.3).astype(np.float32)


# ---------------------------------------------------------------------- Gumbel-softmax, categorical KL
def test_gumbel_softmax_rows_sum_to_one_and_hard_samples_are_one_hot():
    rng = np.random.default_rng(3)
    logits = Tensor(rng.normal(size=(4, 6, 3, 3)).astype(np.float32))
    for tau in (1.0, 1 / 16):
        y = F.gumbel_softmax(logits, tau, dim=1, rng=rng).numpy()
        np.testing.assert_allclose(y.sum(axis=1), 1, atol=1e-5)
        assert (y >= 0).all()
    hard = F.gumbel_softmax(logits, 0.5, hard=True, dim=1, rng=rng).numpy()
    assert set(np.unique(hard)) == {0.0, 1.0} and (hard.sum(axis=1) == 1).all()


def test_hard_tokens_follow_the_softmax():
    logits = np.log(np.array([0.1, 0.6, 0.3], np.float32))[None, :, None, None] * np.ones((1, 3, 100, 100), np.float32)
    tokens = sample_tokens(logits, np.random.default_rng(4))            # (1, 100, 100)
    assert tokens.shape == (1, 100, 100)
    np.testing.assert_allclose(np.bincount(tokens.ravel(), minlength=3) / tokens.size, [0.1, 0.6, 0.3], atol=0.01)


def test_kl_to_uniform_is_log_k_minus_the_entropy():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=2, size=(2, 5, 3, 3))
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    entropy = -(q * np.log(q)).sum(axis=1)                             # (2, 3, 3)
    expected = (math.log(5) - entropy).reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(categorical_kl_uniform(Tensor(logits, dtype="float64")).numpy(), expected, rtol=1e-10)
    assert categorical_kl_uniform(Tensor(np.zeros((1, 5, 3, 3)))).numpy()[0] == pytest.approx(0, abs=1e-12)


def test_schedules():
    assert geometric_schedule(0, 1, 1 / 16, 100) == 1
    assert geometric_schedule(50, 1, 1 / 16, 100) == pytest.approx(0.25)
    assert geometric_schedule(500, 1, 1 / 16, 100) == pytest.approx(1 / 16)
    model = build_model("dvae", {**GUMBEL, "kl_warmup_steps": 4, "anneal_steps": 4})
    model.steps_done[0] = 2
    assert model.kl_weight() == 0.5 and model.tau() == pytest.approx(0.25)


# ---------------------------------------------------------------------- the hard-latent -ELBO
def test_hard_elbo_of_the_categorical_dvae_is_exact_on_a_tiny_grid(monkeypatch):
    """K = 2 and a posterior whose 45 outer cells are pinned (logits +-30 at the encoder's argmax) and whose
    top-left 2 x 2 cells are free: E_q[-log p(x|z)] is a sum over 16 token maps, which the Monte Carlo
    estimate of hard_terms must approach; the KL is the closed form of those logits."""
    model = build_model("dvae", {**GUMBEL, "num_tokens": 2})
    x = binary_images(2)
    full = model.posterior_logits(Tensor(x)).numpy()                   # (2, 2, 7, 7)
    pinned = np.where(full == full.max(axis=1, keepdims=True), 30.0, -30.0)
    pinned[:, :, :2, :2] = np.random.default_rng(6).normal(size=(2, 2, 2, 2))
    log_q = pinned[:, :, :2, :2] - np.logaddexp(pinned[:, :1, :2, :2], pinned[:, 1:, :2, :2])  # (2, 2, 2, 2)
    exact = np.zeros(2)
    for bits in itertools.product((0, 1), repeat=4):
        tokens = pinned.argmax(axis=1)                                  # (2, 7, 7)
        tokens[:, :2, :2] = np.array(bits).reshape(2, 2)
        log_px = bernoulli_log_likelihood(model.decoder_logits(tokens), Tensor(x)).numpy()
        chosen = np.take_along_axis(log_q, tokens[:, None, :2, :2], axis=1)   # (2, 1, 2, 2)
        exact -= np.exp(chosen.reshape(2, -1).sum(axis=1)) * log_px
    # 3,000 draws per image: each image 1,000 times in one batch, 3 samples each (3 decoder passes of 2,000
    # images, not 3,000 passes of 2)
    copies = 1000
    monkeypatch.setattr(model, "posterior_logits", lambda t: Tensor(np.repeat(pinned, copies, axis=0)))
    model.rng = np.random.default_rng(0)
    recon, kl = model.hard_terms(np.repeat(x, copies, axis=0), samples=3)              # (2000,) each
    np.testing.assert_allclose(recon.reshape(2, copies).mean(axis=1), exact, rtol=0.01)
    q = np.exp(log_q)
    free_kl = (q * log_q).sum(axis=1).reshape(2, -1).sum(axis=1) + 4 * math.log(2)   # log K - H, 4 cells
    kl_exact = free_kl + 45 * math.log(2)                                  # pinned cells: H = 0, KL = log 2
    np.testing.assert_allclose(kl.reshape(2, copies), np.repeat(kl_exact[:, None], copies, axis=1), rtol=1e-6)


# ---------------------------------------------------------------------- the token API, training
def test_encode_decode_shapes_and_errors():
    model = build_model("dvae", GUMBEL)
    images = (binary_images(3) * 255).astype(np.uint8)
    tokens = model.encode(images)
    assert tokens.shape == (3, 7, 7) and tokens.dtype == np.int64
    assert tokens.min() >= 0 and tokens.max() < 8
    out = model.decode(tokens)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(model.encode(images), tokens)       # deterministic
    with pytest.raises(ValueError, match=r"dvae.decode.*\[0, 8\)"):
        model.decode(np.full((1, 7, 7), 8))
    with pytest.raises(ValueError, match="dvae.decode.*integers"):
        model.decode(np.zeros((1, 7, 7), np.float32))
    with pytest.raises(ValueError, match="dvae.encode.*shape"):
        model.encode(np.zeros((2, 28, 28)))
    samples = model.sample(5)
    assert samples.shape == (5, 1, 28, 28) and model.training


@pytest.mark.parametrize("name,config", [("dvae", GUMBEL), ("dvae_rolfe", ROLFE), ("dvae_rolfe", ROLFE_CONV),
                                         ("dvae_rolfe", {**ROLFE_CONV, "prior": "rbm", "rbm_small": 4}),
                                         ("dvae_rolfe", {**ROLFE_CONV, "smoothing": "overlap_exp"}),
                                         ("dvae_rolfe", {**ROLFE_CONV, "smoothing": "concrete"}),
                                         ("dvae_rolfe", {**ROLFE_CONV, "smoothing": "concrete_st"})])
def test_loss_decreases_on_a_fixed_batch(name, config):
    model = build_model(name, {**config, "kl_warmup_steps": 1, "lr": 1e-2})
    opts = model.configure_optimizers()
    x, _ = data.load_dataset("mnist", "test")
    batch = model.prepare_batch(x[:32], np.zeros(32, int))
    logs = [model.training_step(batch, opts) for _ in range(25)]
    assert logs[0]["loss"] == pytest.approx(logs[0]["recon"] + logs[0]["kl_weight"] * logs[0]["kl"], rel=1e-5)
    assert np.mean([l["loss"] for l in logs[-5:]]) < 0.8 * logs[0]["loss"]
    assert model.steps_done[0] == 25


def test_training_loop_and_pictures(tmp_path):
    model = build_model("dvae", GUMBEL)
    summary = Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    assert summary["steps"] == 3 and np.isfinite(summary["test_neg_elbo"])
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_recon"] + summary["test_kl"])
    x, _ = data.load_dataset("mnist", "test")
    model.save_pictures(x[:32], tmp_path / "rec.png", tmp_path / "prior.png")


# ---------------------------------------------------------------------- classes without labels

def test_cluster_purity_is_one_for_separated_classes_and_the_majority_share_for_no_information():
    from tinygen.models.base import cluster_purity
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), [40, 30, 30, 30, 30, 30, 30, 30, 30, 30])   # 310 rows, class 0 the largest
    separated = np.eye(10)[labels] * 5 + rng.normal(0, 0.1, (310, 10))           # one far-apart blob per class
    assert cluster_purity(separated, labels) == 1.0
    constant = np.ones((310, 4))                                                 # every row in one cluster
    assert cluster_purity(constant, labels) == pytest.approx(40 / 310)
    mixed = rng.normal(size=(310, 10))                                           # features unrelated to the labels
    assert cluster_purity(mixed, labels) < 0.35


@pytest.mark.parametrize("name,config", [("dvae", GUMBEL), ("dvae_rolfe", ROLFE), ("dvae_rolfe", ROLFE_CONV)])
def test_code_means_are_the_posteriors_means(name, config):
    """E_q[z]: q(z_hw = k | x) summing to 1 over k for tokens; q(z = 1 | x) for bits; the evaluation scores
    them and the pixels with the same clustering."""
    model = build_model(name, config)
    x = binary_images(6)
    m = model.code_means(x)
    logits = model.posterior_logits(Tensor(x)).numpy()
    if name == "dvae":
        assert m.shape == (6, 8 * 49)
        np.testing.assert_allclose(m.reshape(6, 8, 49).sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_allclose(m, F.softmax(Tensor(logits), dim=1).numpy().reshape(6, -1), rtol=1e-6)
    else:
        np.testing.assert_allclose(m, 1 / (1 + np.exp(-logits.reshape(6, -1))), rtol=1e-5)
    images, labels = data.load_dataset("mnist", "test")
    r = model.evaluate_representation(images[:200], labels[:200], n=100)
    assert set(r) == {"code_cluster_purity", "pixel_cluster_purity"}
    assert 0.1 <= r["code_cluster_purity"] <= 1 and 0.1 <= r["pixel_cluster_purity"] <= 1
