"""tinygen.diffusion on shapes other than images: schedules, the forward process in closed form against
iterating it on (B, D) vectors and (B, T) grids, the posterior against Bayes' rule and samples, DDIM
against the ancestral sampler, both samplers on Gaussian data with the exact eps, condition dropping,
and both kinds of guidance (on a two-Gaussian mixture, where the exact guided eps is known)."""
import numpy as np
import pytest

from tinygen.diffusion import (GaussianDiffusion, beta_schedule, classifier_free, classifier_guidance,
                               drop_condition, per_sample)


def test_schedules():
    linear = beta_schedule("linear", 1000)
    assert linear[0] == pytest.approx(1e-4) and linear[-1] == pytest.approx(0.02)
    cosine = GaussianDiffusion(beta_schedule("cosine", 1000))
    assert np.all(np.diff(cosine.abar) < 0) and cosine.betas.max() <= 0.999
    assert cosine.abar[0] > 0.999 and cosine.abar[-1] < 1e-4
    with pytest.raises(ValueError, match="cosine"):
        beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match=r"betas must be .* shape \(2, 2\)"):
        GaussianDiffusion(np.full((2, 2), 0.1))
    with pytest.raises(ValueError, match=r"in \(0, 1\), got shape \(2,\) with values in \[0.1, 1\]"):
        GaussianDiffusion([0.1, 1.0])
    with pytest.raises(ValueError, match=r"got shape \(0,\)$"):
        GaussianDiffusion([])


def test_per_sample_broadcasts_against_any_rank():
    v = np.array([1.0, 2.0, 3.0])
    for shape in [(3,), (3, 5), (3, 4, 6), (3, 1, 28, 28)]:
        c = per_sample(v, np.zeros(shape))
        assert c.shape == (3,) + (1,) * (len(shape) - 1) and c.dtype == np.float32
        np.testing.assert_array_equal((c * np.ones(shape))[:, ...].reshape(3, -1)[:, 0], v)
    assert per_sample(2.0, np.zeros((4, 2))).shape == (1, 1)


def test_closed_form_matches_iterating_the_one_step_process_on_vectors():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    rng, M = np.random.default_rng(0), 40_000
    x0 = np.array([0.9, -0.5, 0.1], np.float32)                      # one (D,) vector, M copies: (M, D)
    x = np.tile(x0, (M, 1))
    for t in range(60):                                               # x_t ~ q(x_t | x_{t-1}), 60 times
        x = d.q_step(x, np.full(M, t), rng.standard_normal(x.shape).astype(np.float32))
    jump = d.q_sample(np.tile(x0, (M, 1)), np.full(M, 59), rng.standard_normal(x.shape).astype(np.float32))
    # both follow N(sqrt(abar_t) x_0, (1 - abar_t) I)
    mean, std = np.sqrt(d.abar[59]) * x0, np.sqrt(1 - d.abar[59])
    for samples in (x, jump):
        assert samples.shape == (M, 3)
        np.testing.assert_allclose(samples.mean(axis=0), mean, atol=4 * std / np.sqrt(M))
        np.testing.assert_allclose(samples.std(axis=0), std, rtol=0.02)
    assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.03           # independent coordinates


def test_q_sample_uses_each_rows_own_step_on_token_grids():
    """(B, L) float grids, each row at its own t: row b ~ N(sqrt(abar_{t_b}) x_0b, (1 - abar_{t_b}) I)."""
    d = GaussianDiffusion(beta_schedule("cosine", 100))
    rng, M, L = np.random.default_rng(1), 20_000, 5
    t = np.array([0, 10, 50, 99])
    x0 = rng.uniform(-1, 1, (4, L)).astype(np.float32)                # (4, L)
    x0_rep, t_rep = np.repeat(x0, M, axis=0), np.repeat(t, M)         # (4M, L), (4M,)
    x_t = d.q_sample(x0_rep, t_rep, rng.standard_normal(x0_rep.shape, dtype=np.float32))
    assert x_t.shape == (4 * M, L) and x_t.dtype == np.float32
    groups = x_t.reshape(4, M, L)
    np.testing.assert_allclose(groups.mean(axis=1), np.sqrt(d.abar[t])[:, None] * x0, atol=0.03)
    np.testing.assert_allclose(groups.var(axis=1), np.broadcast_to((1 - d.abar[t])[:, None], (4, L)), rtol=0.05,
                               atol=1e-5)
    # diffuse draws t and eps itself and returns the input it built
    x_t, t_drawn, eps = d.diffuse(x0, np.random.default_rng(2))
    assert t_drawn.shape == (4,) and eps.shape == x0.shape and 0 <= t_drawn.min() and t_drawn.max() < 100
    np.testing.assert_array_equal(x_t, d.q_sample(x0, t_drawn, eps))


def test_posterior_matches_bayes_rule_and_samples():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    t, x0 = 30, np.float32(0.6)
    a, b, abar_prev = d.alphas[t], d.betas[t], d.abar[t - 1]
    # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(a) x_{t-1}, b) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})
    precision = a / b + 1 / (1 - abar_prev)
    x_t = np.array([[-1.0], [0.3], [2.0]], np.float32)                # (3, 1) vectors
    mean, var = d.q_posterior(np.full((3, 1), x0), x_t, np.full(3, t))
    np.testing.assert_allclose(mean, (np.sqrt(a) * x_t / b + np.sqrt(abar_prev) * x0 / (1 - abar_prev)) / precision,
                               rtol=1e-5)
    np.testing.assert_allclose(var, np.full((3, 1), 1 / precision), rtol=1e-5)
    # in distribution: draw (x_{t-1}, x_t) from the forward process; regress x_{t-1} on x_t
    rng, M = np.random.default_rng(1), 200_000
    x_prev = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * rng.standard_normal(M)
    x_t = np.sqrt(a) * x_prev + np.sqrt(b) * rng.standard_normal(M)
    slope, intercept = np.polyfit(x_t, x_prev, 1)
    residual = x_prev - (slope * x_t + intercept)
    assert slope == pytest.approx(d.posterior_ct[t], rel=0.01)
    assert intercept == pytest.approx(d.posterior_c0[t] * x0, abs=0.003)
    assert residual.var() == pytest.approx(d.posterior_variance[t], rel=0.02)
    assert d.posterior_variance[0] == 0                               # the last reverse step adds no noise


def _toy_eps(d):
    """A nonlinear stand-in for a network, with a (B, D) condition added in."""
    def eps_fn(x, t, cond):
        e = np.tanh(1.5 * x) * per_sample(d.abar[t], x) + 0.1 * np.sin(x)
        return (e if cond is None else e + 0.3 * cond).astype(np.float32)
    return eps_fn


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_with_eta_one_over_every_step_is_the_ancestral_sampler(clip_x0):
    """With t' = t - 1 and eta = 1, sigma^2 = beta~_t, and sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps
    with eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) is mu~_t(x_t, x0): the same update, whatever x0 is
    (clipped or not), given the same noise z. So the two samplers give the same trajectory."""
    d = GaussianDiffusion(beta_schedule("linear", 50), clip_x0=clip_x0)
    cond = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)   # (B, D) embeddings
    ddim = d.ddim_sample(_toy_eps(d), (6, 4), np.random.default_rng(0), steps=50, eta=1.0, cond=cond)
    ancestral = d.ancestral_sample(_toy_eps(d), (6, 4), np.random.default_rng(0), cond=cond)
    assert ancestral.shape == (6, 4) and ancestral.dtype == np.float32
    np.testing.assert_allclose(ddim, ancestral, rtol=1e-4, atol=1e-4)
    # one step, per-sample t on images
    rng = np.random.default_rng(2)
    x_t, eps, z = (rng.standard_normal((3, 1, 5, 5)).astype(np.float32) * s for s in (1, 0.5, 1))
    t = np.array([49, 20, 1])
    np.testing.assert_allclose(d.ddim_step(x_t, t, t - 1, eps, 1.0, z), d.ancestral_step(x_t, t, eps, z),
                               rtol=1e-4, atol=1e-5)


class _SameStartRng:
    """x_T from one seed, every later draw (the fresh noise z) from another."""

    def __init__(self, noise_seed):
        self.first, self.rest = np.random.default_rng(0), np.random.default_rng(noise_seed)
        self.calls = 0

    def standard_normal(self, shape, dtype):
        self.calls += 1
        return (self.first if self.calls == 1 else self.rest).standard_normal(shape, dtype=dtype)


def test_ddim_with_eta_zero_is_deterministic_and_eta_brings_noise_in():
    d = GaussianDiffusion(beta_schedule("linear", 40), clip_x0=False)
    grid = (5, 7)                                                       # (B, T) float grids
    a = d.ddim_sample(_toy_eps(d), grid, _SameStartRng(1), steps=8)
    b = d.ddim_sample(_toy_eps(d), grid, _SameStartRng(2), steps=8)
    np.testing.assert_array_equal(a, b)
    c = d.ddim_sample(_toy_eps(d), grid, _SameStartRng(1), steps=8, eta=0.5)
    e = d.ddim_sample(_toy_eps(d), grid, _SameStartRng(2), steps=8, eta=0.5)
    assert np.abs(c - e).max() > 1e-2 and np.abs(a - c).max() > 1e-2
    ts = d.timesteps(7)
    assert ts[0] == 39 and ts[-1] == 0 and np.all(np.diff(ts) < 0) and len(ts) == 7
    assert list(d.timesteps(1)) == [39]
    for bad in (0, 41, 2.5):
        with pytest.raises(ValueError, match="1..40"):
            d.timesteps(bad)


def test_frames_and_errors_of_the_samplers():
    d = GaussianDiffusion(beta_schedule("linear", 10))
    x, frames = d.ddim_sample(_toy_eps(d), (2, 3), np.random.default_rng(0), steps=5, frames=3)
    assert len(frames) == 3 and all(f.shape == (2, 3) for f in frames)
    np.testing.assert_array_equal(frames[-1], x)
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        d.ancestral_sample(_toy_eps(d), (2, 3), np.random.default_rng(0), cond=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"eps_fn returned shape \(2,\) for x_t of shape \(2, 3\)"):
        d.ancestral_sample(lambda x, t, c: x[:, 0], (2, 3), np.random.default_rng(0))


def _gaussian_eps(d, m, s):
    """The exact eps = E[eps | x_t] for data x_0 ~ N(m, diag s^2):
    x_t ~ N(sqrt(abar_t) m, abar_t s^2 + 1 - abar_t), so eps* = sqrt(1 - abar_t) (x_t - sqrt(abar_t) m) / v_t."""
    def eps_fn(x, t, cond):
        a = per_sample(d.abar[t], x, np.float64)
        return (np.sqrt(1 - a) * (x - np.sqrt(a) * m) / (a * s ** 2 + 1 - a)).astype(np.float32)
    return eps_fn


def test_both_samplers_with_the_exact_eps_sample_gaussian_data():
    m, s, B = np.array([1.0, -2.0]), np.array([0.5, 1.5]), 5000
    for schedule, sampler in (("linear", "ancestral"), ("cosine", "ddim")):
        d = GaussianDiffusion(beta_schedule(schedule, 1000), clip_x0=False)
        rng = np.random.default_rng(0)
        if sampler == "ancestral":
            x = d.ancestral_sample(_gaussian_eps(d, m, s), (B, 2), rng)
        else:
            x = d.ddim_sample(_gaussian_eps(d, m, s), (B, 2), rng, steps=250)
        np.testing.assert_allclose(x.mean(axis=0), m, atol=4 * s.max() / np.sqrt(B), err_msg=sampler)
        np.testing.assert_allclose(x.std(axis=0), s, rtol=0.04, err_msg=sampler)


@pytest.mark.parametrize("cond, null", [
    (np.array([3, 1, 4, 1, 5, 9]), np.full(6, 10)),                              # labels (B,), null index
    (np.arange(6 * 4).reshape(6, 4) % 7, np.zeros((6, 4), int)),                  # tokens (B, L), empty caption
    (np.ones((6, 3), np.float32), np.zeros((6, 3), np.float32)),                  # embeddings (B, D), zeros
])
def test_drop_condition_replaces_whole_rows(cond, null):
    np.testing.assert_array_equal(drop_condition(cond, null, 0.0, np.random.default_rng(0)), cond)
    np.testing.assert_array_equal(drop_condition(cond, null, 1.0, np.random.default_rng(0)), null)
    big = np.repeat(cond, 500, axis=0)
    dropped = drop_condition(big, np.repeat(null, 500, axis=0), 0.3, np.random.default_rng(0))
    rows = (dropped == np.repeat(null, 500, axis=0)).reshape(len(big), -1).all(axis=1)
    kept = (dropped == big).reshape(len(big), -1).all(axis=1)
    assert np.all(rows | kept) and rows.mean() == pytest.approx(0.3, abs=0.03)


def test_classifier_free_guidance_at_scales_zero_one_and_three_in_one_batch():
    d = GaussianDiffusion(beta_schedule("linear", 20))
    calls = []

    def eps_fn(x, t, cond):
        calls.append(len(x))
        return _toy_eps(d)(x, t, cond)

    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    t, cond, null = np.array([19, 5, 5, 0]), np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32)
    e_c, e_null = eps_fn(x, t, cond), eps_fn(x, t, null)
    np.testing.assert_array_equal(classifier_free(eps_fn, null, 1.0)(x, t, cond), e_c)       # plain conditional
    np.testing.assert_array_equal(classifier_free(eps_fn, null, 0.0)(x, t, cond), e_null)    # unconditional
    np.testing.assert_array_equal(classifier_free(eps_fn, null, 3.0)(x, t, None), e_null)
    calls.clear()
    guided = classifier_free(eps_fn, null, 3.0)(x, t, cond)
    assert calls == [8]                                                 # cond and null in one pass of 2B
    np.testing.assert_allclose(guided, e_null + 3 * (e_c - e_null), rtol=1e-6, atol=1e-6)
    assert not np.allclose(guided, e_c)


def _mixture(d, means, s):
    """Data: the mixture 1/2 N(m_0, s^2) + 1/2 N(m_1, s^2) on (B, 1); at step t each component is
    N(sqrt(abar_t) m_k, v_t), v_t = abar_t s^2 + 1 - abar_t. Returns the exact eps of the component
    (cond = k) or of the mixture (cond = 2, the null label), and grad_x log p(y | x_t) of the exact classifier."""
    def log_components(x, t):                                           # (B, 2): log N(x; sqrt(abar_t) m_k, v_t)
        a = d.abar[t][:, None]
        v = a * s ** 2 + 1 - a
        return -(x - np.sqrt(a) * means) ** 2 / (2 * v), -(x - np.sqrt(a) * means) / v, v

    def eps_fn(x, t, cond):
        logs, grads, _ = log_components(x, t)                           # grads: d/dx log N_k, (B, 2)
        w = np.exp(logs - logs.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)                               # p(k | x_t)
        score = np.where(cond[:, None] == 2, (w * grads).sum(axis=1, keepdims=True),
                         np.take_along_axis(grads, np.minimum(cond, 1)[:, None], axis=1))
        # eps = -sqrt(1 - abar_t) grad log p_t(x_t)
        return (-np.sqrt(1 - d.abar[t])[:, None] * score).astype(np.float32)

    def grad_log_p(x, t, y):
        logs, grads, _ = log_components(x, t)
        w = np.exp(logs - logs.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        # log p(y | x_t) = log N_y - log sum_k N_k  =>  grad = grad log N_y - sum_k p(k | x_t) grad log N_k
        return (np.take_along_axis(grads, y[:, None], axis=1) - (w * grads).sum(axis=1, keepdims=True)).astype(
            np.float32)
    return eps_fn, grad_log_p


def test_guidance_on_a_two_gaussian_mixture():
    """Classifier guidance at s = 1 with the exact classifier turns the mixture's eps into the chosen
    component's; classifier-free guidance at s = 1 is the component's eps, at s = 0 the mixture's. Sampling
    with either gives the component's mean."""
    d = GaussianDiffusion(beta_schedule("linear", 200), clip_x0=False)
    means, s = np.array([-1.5, 2.0]), 0.4
    eps_fn, grad_log_p = _mixture(d, means, s)
    rng = np.random.default_rng(0)
    x, t, y = rng.standard_normal((6, 1)).astype(np.float32) * 2, rng.integers(0, 200, 6), np.array([0, 1] * 3)

    def steered(n):  # the unconditional eps (CFG at s = 0), steered by the classifier at s = 1
        return classifier_guidance(d, classifier_free(eps_fn, np.full(n, 2), 0.0), grad_log_p, 1.0)
    np.testing.assert_allclose(steered(6)(x, t, y), eps_fn(x, t, y), rtol=1e-4, atol=1e-5)
    unguided = classifier_guidance(d, eps_fn, grad_log_p, 0.0)
    assert unguided is eps_fn
    # eps^ = eps - s sqrt(1 - abar_t) grad, per sample
    np.testing.assert_allclose(classifier_guidance(d, eps_fn, grad_log_p, 2.5)(x, t, y),
                               eps_fn(x, t, y) - 2.5 * np.sqrt(1 - d.abar[t])[:, None] * grad_log_p(x, t, y),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a condition"):
        steered(6)(x, t, None)
    B = 2000
    y = np.array([0, 1] * (B // 2))
    for guided in (steered(B), classifier_free(eps_fn, np.full(B, 2), 1.0)):
        samples = d.ddim_sample(guided, (B, 1), np.random.default_rng(1), steps=50, cond=y)
        np.testing.assert_allclose([samples[y == 0].mean(), samples[y == 1].mean()], means, atol=0.06)
    mixture = d.ddim_sample(classifier_free(eps_fn, np.full(B, 2), 0.0), (B, 1), np.random.default_rng(1), 50, cond=y)
    assert abs(mixture[y == 0].mean() - mixture[y == 1].mean()) < 0.3   # s = 0 ignores the label


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_an_x0_prediction_goes_through_the_samplers_unchanged(schedule):
    """eps_fn_from_x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), and the samplers' x0_hat of that eps
    is x0 again at every step, t = 0 and t = T - 1 included; a network that always predicts the same
    (B, D) vectors is sampled into exactly them."""
    d = GaussianDiffusion(beta_schedule(schedule, 1000), clip_x0=False)
    rng = np.random.default_rng(0)
    x0 = (rng.standard_normal((4, 16)) * 3).astype(np.float32)          # (B, D), outside [-1, 1]
    eps_fn = d.eps_fn_from_x0(lambda x_t, t, cond: x0)
    for step in (0, 1, 500, 999):
        t = np.full(4, step)
        noise = rng.standard_normal(x0.shape).astype(np.float32)
        x_t = d.q_sample(x0, t, noise).astype(np.float32)
        eps = eps_fn(x_t, t, None)
        np.testing.assert_allclose(d.predict_x0(x_t, t, eps), x0, rtol=1e-6, atol=1e-6)
        if step < 999:  # the noise itself comes back where sqrt(1 - abar_t) keeps it in float32
            np.testing.assert_allclose(eps, noise, rtol=1e-3, atol=2e-3 if step else 1e-2)
    np.testing.assert_allclose(d.ddim_sample(eps_fn, x0.shape, rng, 10), x0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.ancestral_sample(eps_fn, x0.shape, rng), x0, rtol=1e-5, atol=1e-5)
    assert d.ddim_sample(eps_fn, x0.shape, rng, 10).shape == (4, 16)
