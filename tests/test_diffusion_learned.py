"""The learned variance and the hybrid loss of improved DDPM (tinygen/diffusion.py)."""
import math

import numpy as np
import pytest

from autograd import Tensor
from tinygen.diffusion import (GaussianDiffusion, beta_schedule, classifier_free, discretized_gaussian_log_likelihood,
                               gaussian_log_likelihood, normal_kl, split_learned)


def _diffusion(T=10):
    return GaussianDiffusion(beta_schedule("linear", T), clip_x0=False)


def test_kl_of_a_gaussian_to_itself_is_zero_and_a_hand_case():
    m, lv = np.array([0.3, -1.0]), np.array([0.2, -2.0])
    assert np.allclose(normal_kl(m, lv, m, lv), 0.0)
    # KL(N(0, 1) || N(1, e^2)) = 1/2 (-1 + 2 - 0 + e^-2 + e^-2)
    assert normal_kl(0.0, 0.0, 1.0, 2.0) == pytest.approx(0.5 * (1 + 2 * math.exp(-2)))


def test_vlb_term_on_a_hand_case():
    d = _diffusion()
    x0, eps_true = np.array([[0.5]], np.float32), np.array([[0.2]], np.float32)
    t = np.array([3])
    x_t = d.q_sample(x0, t, eps_true)
    eps_pred, v = np.array([[0.0]], np.float32), np.array([[0.4]], np.float32)
    got = d.vlb_terms(x0, x_t, t, eps_pred, v)[0]
    # by hand: mu~ = c0 x0 + ct x_t, the prediction's mean with x0_hat = x_t / sqrt(abar_t)
    c0, ct = d.posterior_c0[3], d.posterior_ct[3]
    mu_true = c0 * 0.5 + ct * x_t[0, 0]
    mu_pred = c0 * x_t[0, 0] / math.sqrt(d.abar[3]) + ct * x_t[0, 0]
    lv_true = math.log(d.posterior_variance[3])
    f = 0.7
    lv_pred = f * math.log(d.betas[3]) + (1 - f) * lv_true
    kl = 0.5 * (-1 + lv_pred - lv_true + math.exp(lv_true - lv_pred) + (mu_true - mu_pred) ** 2 * math.exp(-lv_pred))
    assert got == pytest.approx(kl / math.log(2), rel=1e-4)


def test_vlb_is_zero_for_the_true_noise_and_beta_tilde():
    d = _diffusion()
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    t = np.array([1, 4, 7, 9])
    x_t = d.q_sample(x0, t, eps)
    assert np.allclose(d.vlb_terms(x0, x_t, t, eps, -np.ones_like(x0)), 0.0, atol=1e-4)


def test_decoder_terms_at_t0():
    d = _diffusion()
    x0 = np.array([[-1.0, 0.0, 1.0]], np.float32)
    t = np.array([0])
    x_t = d.q_sample(x0, t, np.zeros_like(x0))
    lv = d.learned_log_variance(np.full_like(x0, -1.0), t)
    # the Gaussian term is -log N(x0; mean, var); the discretised one a probability: -log P >= 0
    nll_g = d.vlb_terms(x0, x_t, t, np.zeros_like(x0), np.full_like(x0, -1.0), decoder="gaussian")[0]
    mean = d.posterior_c0[0] * x_t / math.sqrt(d.abar[0]) + d.posterior_ct[0] * x_t
    want = -gaussian_log_likelihood(x0, mean, lv).mean() / math.log(2)
    assert nll_g == pytest.approx(want, rel=1e-4)
    nll_d = d.vlb_terms(x0, x_t, t, np.zeros_like(x0), np.full_like(x0, -1.0), decoder="discretized")[0]
    assert nll_d >= 0
    with pytest.raises(ValueError, match="decoder"):
        d.vlb_terms(x0, x_t, t, np.zeros_like(x0), np.zeros_like(x0), decoder="laplace")


def test_discretized_likelihood_sums_to_one_over_the_levels():
    levels = np.linspace(-1, 1, 256)
    logp = discretized_gaussian_log_likelihood(levels, 0.1, np.log(0.3))
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=2e-3)


def test_learned_step_reduces_to_the_fixed_one():
    d = _diffusion()
    rng = np.random.default_rng(1)
    x, eps, z = (rng.standard_normal((3, 2, 2)).astype(np.float32) for _ in range(3))
    for step in (5, 0):
        t = np.full(3, step)
        fixed = d.ancestral_step(x, t, eps, z)
        learned = d.learned_ancestral_step(x, t, eps, -np.ones_like(x), z)   # v = -1: Sigma = beta~
        assert np.allclose(fixed, learned, atol=1e-5)
    t = np.full(3, 5)
    mean, _ = d.q_posterior(d.predict_x0(x, t, eps), x, t)
    beta = d.learned_ancestral_step(x, t, eps, np.ones_like(x), z)           # v = 1: Sigma = beta
    assert np.allclose(beta, mean + math.sqrt(d.betas[5]) * z, atol=1e-5)


def test_hybrid_loss_gradients_stop_at_the_mean():
    d = _diffusion()
    rng = np.random.default_rng(2)
    x0, noise = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    t = np.array([1, 2, 3, 4])
    x_t = d.q_sample(x0, t, noise)
    eps = Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    v = Tensor(np.zeros((4, 3), np.float32), requires_grad=True)
    vlb = d.vlb_terms(x0, x_t, t, eps, v).mean()
    vlb.backward()
    assert eps.grad is None or not np.any(eps.grad)       # L_vlb does not reach eps
    assert np.any(v.grad)                                 # but trains v
    loss, simple, vlb_value = d.hybrid_loss(x0, x_t, t, Tensor(noise), eps, v, vlb_weight=0.001)
    assert loss.item() == pytest.approx(simple + 0.001 * d.T * vlb_value, rel=1e-5)


def test_samplers_and_guidance_with_learned_variance():
    d = _diffusion()
    rng = np.random.default_rng(3)
    def fn(x, t, cond):
        return np.concatenate([np.zeros_like(x) + (0 if cond is None else cond.reshape(-1, 1, 1, 1)),
                               -np.ones_like(x)], axis=1)
    x = d.ancestral_sample(fn, (2, 1, 2, 2), rng, learned_variance=True)
    assert x.shape == (2, 1, 2, 2)
    x = d.ddim_sample(fn, (2, 1, 2, 2), rng, steps=3, learned_variance=True)
    assert x.shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="learned variance"):
        d.ancestral_sample(lambda x, t, c: x, (2, 1, 2, 2), rng, learned_variance=True)
    g = classifier_free(fn, np.zeros(2), 3.0, guided_channels=1)
    out = g(np.zeros((2, 1, 2, 2), np.float32), np.array([1, 1]), np.array([1.0, 2.0]))
    assert np.allclose(out[:, 0], np.array([3.0, 6.0]).reshape(2, 1, 1)) and np.allclose(out[:, 1], -1)
    with pytest.raises(ValueError, match="split_learned"):
        split_learned(np.zeros((2, 3, 2, 2)), np.zeros((2, 1, 2, 2)))
