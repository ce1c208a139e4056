"""Rolfe's discrete VAE: the spike-and-exponential smoothing (inverse CDF, its gradient), the overlapping
exponentials, the binary concrete and its straight-through form, the Bernoulli KL, the RBM prior (exact
log Z, KL, samples), the hard-latent -ELBO computed exactly on a tiny latent, the conv nets' bit layout."""
import itertools
import math

import numpy as np
import pytest

from autograd import Tensor
from autograd.gradcheck import gradcheck
from tinygen import data
from tinygen.models import build_model
from tinygen.models.dvae_rolfe import (RBMPrior, bernoulli_kl, binary_concrete, overlap_exp_cdf, overlap_exp_inverse_cdf,
                                       rbm_kl, spike_exp_cdf, spike_exp_inverse_cdf, straight_through_concrete)
from tinygen.models.vae import bernoulli_log_likelihood

from tests.models.test_dvae import ROLFE, ROLFE_CONV, binary_images


# ---------------------------------------------------------------------- spike-and-exponential
@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
def test_inverse_cdf_lies_in_the_unit_interval_and_inverts_the_cdf(beta):
    rng = np.random.default_rng(0)
    q = rng.uniform(0.01, 0.99, 2000).astype(np.float64)
    rho = rng.random(2000)
    zeta = spike_exp_inverse_cdf(rho, Tensor(q, dtype="float64"), beta).numpy()
    assert (zeta >= 0).all() and (zeta <= 1 + 1e-9).all()
    on_spike = rho < 1 - q
    assert (zeta[on_spike] == 0).all()                                 # the atom of mass 1 - q at 0
    np.testing.assert_allclose(spike_exp_cdf(zeta[~on_spike], q[~on_spike], beta), rho[~on_spike], atol=1e-9)
    # the sampled marginal: P(zeta = 0) = 1 - q on average, and the exponential's mean for the rest
    q0 = 0.4
    z = spike_exp_inverse_cdf(rng.random(200_000), Tensor(np.full(200_000, q0), dtype="float64"), beta).numpy()
    assert abs((z == 0).mean() - (1 - q0)) < 0.01
    # E[zeta | z = 1] = 1 / (1 - e^-beta) - 1 / beta
    assert abs(z[z > 0].mean() - (1 / (1 - math.exp(-beta)) - 1 / beta)) < 0.01


def test_inverse_cdf_gradient_in_q_matches_finite_differences():
    rng = np.random.default_rng(1)
    q0 = rng.uniform(0.2, 0.9, 50)
    rho = rng.random(50)
    beta = 4.0
    q = Tensor(q0, requires_grad=True, dtype="float64")
    spike_exp_inverse_cdf(rho, q, beta).sum().backward()
    h = 1e-6
    numeric = (spike_exp_inverse_cdf(rho, Tensor(q0 + h, dtype="float64"), beta).numpy()
               - spike_exp_inverse_cdf(rho, Tensor(q0 - h, dtype="float64"), beta).numpy()) / (2 * h)
    away = np.abs(rho - (1 - q0)) > 1e-3                                # not at the kink between spike and tail
    assert np.isfinite(q.grad).all()
    np.testing.assert_allclose(q.grad[away], numeric[away], rtol=1e-5, atol=1e-7)
    assert (q.grad[rho > 1 - q0] > 0).all()     # more mass on z = 1: the same rho lies further along the tail


# ---------------------------------------------------------------------- overlapping exponentials (DVAE++)
@pytest.mark.parametrize("beta", [1.0, 6.0, 20.0])
def test_overlap_inverse_cdf_inverts_the_cdf_at_every_q(beta):
    rng = np.random.default_rng(4)
    q = np.concatenate([[1e-6, 1e-3, 0.5, 0.999, 1 - 1e-6], rng.uniform(0, 1, 5000)])
    rho = rng.random(len(q))
    zeta = overlap_exp_inverse_cdf(rho, Tensor(q, dtype="float64"), beta).numpy()
    assert (zeta >= 0).all() and (zeta <= 1).all()
    np.testing.assert_allclose(overlap_exp_cdf(zeta, q, beta), rho, atol=1e-9)
    # float32, the training dtype: still finite and inverting to float32 precision
    z32 = overlap_exp_inverse_cdf(rho.astype(np.float32), Tensor(q, dtype="float32"), beta).numpy()
    assert np.isfinite(z32).all() and np.abs(overlap_exp_cdf(z32.astype(np.float64), q, beta) - rho).max() < 1e-5
    # the marginal's mean: E[zeta] = (1 - q) m0 + q m1, m1 = 1 / (1 - e^-beta) - 1 / beta, m0 = 1 - m1
    q0, m1 = 0.3, 1 / (1 - math.exp(-beta)) - 1 / beta
    z = overlap_exp_inverse_cdf(rng.random(200_000), Tensor(np.full(200_000, q0), dtype="float64"), beta).numpy()
    assert abs(z.mean() - ((1 - q0) * (1 - m1) + q0 * m1)) < 0.005


def test_overlap_inverse_cdf_has_a_gradient_in_q_for_every_rho():
    rng = np.random.default_rng(5)
    q0, rho = rng.uniform(0.05, 0.95, (6, 5)), rng.random((6, 5))
    f = lambda q: overlap_exp_inverse_cdf(rho, q, 4.0)                       # noqa: E731
    assert gradcheck(f, q0)
    assert gradcheck(f, np.asfortranarray(q0))                              # non-contiguous
    q = Tensor(q0, requires_grad=True, dtype="float64")
    f(q).sum().backward()
    # unlike the spike (no gradient when zeta = 0), every draw moves up with q
    assert (q.grad > 0).all()


def test_binary_concrete_is_a_bernoulli_draw_in_the_sharp_limit_and_differentiable():
    rng = np.random.default_rng(6)
    logits, rho = rng.normal(0, 2, 100_000), rng.random(100_000)
    zeta = binary_concrete(rho, Tensor(logits, dtype="float64"), 1e4).numpy()
    hard = zeta > 0.5
    assert ((zeta < 1e-3) | (zeta > 1 - 1e-3)).mean() > 0.99                  # beta -> inf: zeta -> z
    assert abs(hard.mean() - (1 / (1 + np.exp(-logits))).mean()) < 0.005     # z ~ Bernoulli(sigmoid(l))
    # P(zeta > 1/2 | l) = sigmoid(l) at any beta (the sign of l + L does not depend on beta)
    l0 = 0.7
    z = binary_concrete(rng.random(200_000), Tensor(np.full(200_000, l0), dtype="float64"), 2.0).numpy()
    assert abs((z > 0.5).mean() - 1 / (1 + math.exp(-l0))) < 0.005
    r = rng.random((5, 6))
    assert gradcheck(lambda l: binary_concrete(r, l, 3.0), rng.normal(size=(5, 6)))
    assert gradcheck(lambda l: binary_concrete(r[:, ::2], l, 3.0), rng.normal(size=(5, 6))[:, ::2])


def test_straight_through_concrete_is_hard_forward_and_concrete_backward():
    rng = np.random.default_rng(7)
    l0, rho, w = rng.normal(size=(4, 6)), rng.random((4, 6)), rng.normal(size=(4, 6))
    grads = []
    for f in (straight_through_concrete, binary_concrete):
        l = Tensor(l0, requires_grad=True, dtype="float64")
        z = f(rho, l, 2.0)
        (z * Tensor(w, dtype="float64")).sum().backward()
        grads.append(l.grad)
        if f is straight_through_concrete:
            L = np.log(rho) - np.log1p(-rho)
            np.testing.assert_array_equal(z.numpy(), (l0 + L > 0).astype(np.float64))   # the hard bits
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_bernoulli_kl_is_its_definition():
    rng = np.random.default_rng(2)
    lq, lp = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    q, p = 1 / (1 + np.exp(-lq)), 1 / (1 + np.exp(-lp))
    expected = (q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))).sum(axis=1)
    np.testing.assert_allclose(bernoulli_kl(Tensor(lq, dtype="float64"), Tensor(lp, dtype="float64")).numpy(), expected, rtol=1e-10)


# ---------------------------------------------------------------------- the RBM prior
def random_rbm(D=8, k=3, seed=1):
    rbm = RBMPrior(D, k)
    rng = np.random.default_rng(seed)
    for p in (rbm.a, rbm.b, rbm.W):
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32)
    every = np.array(list(itertools.product([0, 1], repeat=D)), np.float64)   # all 2^D states z
    a, b, W = (p.data.astype(np.float64) for p in (rbm.a, rbm.b, rbm.W))
    neg_energy = every[:, :k] @ a + every[:, k:] @ b + ((every[:, :k] @ W) * every[:, k:]).sum(1)
    return rbm, every, neg_energy


def test_rbm_partition_function_and_log_prob_are_exact():
    rbm, every, neg_energy = random_rbm()
    log_z = np.logaddexp.reduce(neg_energy)                                   # brute force over 2^8 states
    assert float(rbm.log_partition().numpy()) == pytest.approx(log_z, rel=1e-5)
    np.testing.assert_allclose(rbm.log_prob(every), neg_energy - log_z, atol=1e-4)


def test_rbm_kl_of_a_factorial_posterior_is_its_definition():
    rbm, every, neg_energy = random_rbm()
    logits = np.random.default_rng(2).standard_normal((3, 8))
    q = 1 / (1 + np.exp(-logits))
    log_q = (every[None] * np.log(q[:, None]) + (1 - every[None]) * np.log(1 - q[:, None])).sum(-1)  # (3, 256)
    log_p = neg_energy - np.logaddexp.reduce(neg_energy)
    expected = (np.exp(log_q) * (log_q - log_p)).sum(1)                        # sum_z q(z) log(q(z) / p(z))
    np.testing.assert_allclose(rbm.kl(Tensor(logits.astype(np.float32))).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_rbm_kl_gradients_in_the_posterior_and_the_rbm():
    rbm, _, _ = random_rbm(D=6, k=2)
    logits = np.random.default_rng(3).standard_normal((4, 6))
    a, b, W = (p.data.astype(np.float64) for p in (rbm.a, rbm.b, rbm.W))
    kl = lambda l, a_, b_, W_: rbm_kl(l, a_, b_, W_, rbm.states)              # noqa: E731
    assert gradcheck(kl, logits, a, b, W)
    assert gradcheck(kl, logits.T.copy().T, a, np.repeat(b, 2)[::2], np.asfortranarray(W))   # non-contiguous


def test_rbm_samples_follow_the_prior():
    rbm, every, neg_energy = random_rbm()
    z = rbm.sample(100_000, np.random.default_rng(0))
    index = lambda bits: (bits * 2 ** np.arange(8)).sum(1).astype(int)       # noqa: E731
    empirical = np.bincount(index(z), minlength=256) / len(z)
    exact = np.zeros(256)
    exact[index(every)] = np.exp(neg_energy - np.logaddexp.reduce(neg_energy))
    assert np.abs(empirical - exact).max() < 0.01 and 0.5 * (np.abs(empirical - exact)).sum() < 0.03


def test_rolfe_with_the_rbm_prior_trains_samples_and_refuses_a_bad_split():
    model = build_model("dvae_rolfe", {**ROLFE, "prior": "rbm", "rbm_small": 2, "kl_warmup_steps": 1, "lr": 1e-2})
    opts = model.configure_optimizers()
    x, _ = data.load_dataset("mnist", "test")
    batch = model.prepare_batch(x[:32], np.zeros(32, int))
    logs = [model.training_step(batch, opts) for _ in range(25)]
    assert np.mean([l["loss"] for l in logs[-5:]]) < 0.8 * logs[0]["loss"]
    assert model.sample(4).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="small side"):
        build_model("dvae_rolfe", {**ROLFE, "prior": "rbm", "rbm_small": 6})
    with pytest.raises(ValueError, match="unknown prior"):
        build_model("dvae_rolfe", {**ROLFE, "prior": "gaussian"})
    with pytest.raises(ValueError, match="unknown smoothing"):
        build_model("dvae_rolfe", {**ROLFE, "smoothing": "gumbel"})


def test_hard_elbo_of_the_binary_dvae_is_exact_on_a_tiny_latent():
    model = build_model("dvae_rolfe", {**ROLFE, "latent_dim": 3})
    x = binary_images(2, seed=1)
    logits = model.posterior_logits(Tensor(x)).numpy()                 # (2, 3)
    q = 1 / (1 + np.exp(-logits))
    exact = np.zeros(2)
    for bits in itertools.product((0, 1), repeat=3):
        z = np.array(bits, np.float32)[None].repeat(2, 0)
        log_px = bernoulli_log_likelihood(model.decoder_logits(z), Tensor(x)).numpy()
        exact -= np.prod(np.where(z == 1, q, 1 - q), axis=1) * log_px
    model.rng = np.random.default_rng(0)
    recon, kl = model.hard_terms(x, samples=4000)
    np.testing.assert_allclose(recon, exact, rtol=0.01)
    p = 1 / (1 + np.exp(-model.prior.data))
    np.testing.assert_allclose(kl, (q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))).sum(axis=1), rtol=1e-5)
    result = model.evaluate_nll(np.zeros((5, 1, 28, 28), np.uint8), samples=2)
    assert result["neg_elbo_hard_nats"] == pytest.approx(result["recon_hard_nats"] + result["kl_nats"])


def test_rolfe_encode_decode_and_sample_shapes():
    rolfe = build_model("dvae_rolfe", ROLFE)
    images = (binary_images(3) * 255).astype(np.uint8)
    bits = rolfe.encode(images)
    assert bits.shape == (3, 6) and set(np.unique(bits)) <= {0, 1}
    assert rolfe.decode(bits).shape == (3, 1, 28, 28) and rolfe.sample(4).shape == (4, 1, 28, 28)



def test_conv_rolfe_keeps_the_bits_of_a_cell_at_that_cell():
    """net=conv: D = 49 cell_bits, bit c of cell (h, w) is z[:, c * 49 + h * 7 + w]; flipping the bits of
    one cell changes the decoded image near that cell (the decoder's reach) and not in the far corner."""
    model = build_model("dvae_rolfe", {**ROLFE_CONV, "res_blocks": 0})
    bits = model.encode((binary_images(2) * 255).astype(np.uint8))
    assert bits.shape == (2, 98) and set(np.unique(bits)) <= {0, 1}
    z = np.zeros((1, 98), np.float32)
    flipped = z.copy()
    flipped[0, [0 * 49 + 0, 1 * 49 + 0]] = 1                          # both bits of cell (0, 0)
    change = np.abs(model.decode(flipped) - model.decode(z))[0, 0]     # (28, 28)
    assert change[:8, :8].max() > 0 and change[16:, 16:].max() == 0
    with pytest.raises(ValueError, match="unknown net"):
        build_model("dvae_rolfe", {**ROLFE, "net": "transformer"})
    with pytest.raises(ValueError, match="cell_bits"):
        build_model("dvae_rolfe", {**ROLFE_CONV, "cell_bits": 0})
