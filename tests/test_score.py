"""The score-based view of tinygen.diffusion: the score of a noise predictor against the true score of
Gaussian data, DDPM's loss as denoising score matching, DDIM as the Euler step of the probability-flow
ODE, the network evaluations (NFE) of every sampler, and annealed Langevin and predictor-corrector
sampling of Gaussian data with the exact score."""
import numpy as np
import pytest

from tinygen.diffusion import SAMPLERS, GaussianDiffusion, beta_schedule, per_sample
from tinygen.train import build_model


def _gaussian_eps(d, m, s):
    """The exact eps = E[eps | x_t] for data x_0 ~ N(m, diag s^2) (s = 0: the single point m):
    x_t ~ N(sqrt(abar_t) m, v_t), v_t = abar_t s^2 + 1 - abar_t, so eps* = sqrt(1 - abar_t) (x_t - sqrt(abar_t) m) / v_t."""
    def eps_fn(x, t, cond):
        a = per_sample(d.abar[t], x, np.float64)
        return (np.sqrt(1 - a) * (x - np.sqrt(a) * m) / (a * s ** 2 + 1 - a)).astype(np.float32)
    return eps_fn


def _log_q(d, m, s, x, t):
    """log q_t(x) (up to a constant) for data N(m, diag s^2): the density whose gradient is the true score."""
    a = d.abar[t][:, None]
    v = a * s ** 2 + 1 - a
    return (-(x - np.sqrt(a) * m) ** 2 / (2 * v)).sum(axis=1)


@pytest.mark.parametrize("s", [np.array([0.5, 1.5]), np.array([0.0, 0.0])])   # Gaussian data; a single point
def test_the_score_of_the_exact_eps_is_the_gradient_of_log_q_t(s):
    d = GaussianDiffusion(beta_schedule("linear", 1000), clip_x0=False)
    m = np.array([1.0, -2.0])
    rng = np.random.default_rng(0)
    t = np.array([0, 10, 300, 999, 500])
    x = rng.standard_normal((5, 2)) * 2
    score = d.score(x, t, _gaussian_eps(d, m, s)(x, t, None))             # (5, 2)
    # the gradient of log q_t by central differences, one coordinate at a time
    h, numeric = 1e-5, np.zeros_like(x)
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        numeric[:, k] = (_log_q(d, m, s, x + e, t) - _log_q(d, m, s, x - e, t)) / (2 * h)
    np.testing.assert_allclose(score, numeric, rtol=1e-4, atol=1e-4)
    # the sign: the score points from x towards the mean of q_t, sqrt(abar_t) m
    towards = np.sqrt(d.abar[t])[:, None] * m - x
    assert np.all((score * towards).sum(axis=1) > 0)
    if not s.any():  # a single point: q_t = q(x_t | x_0 = m), so the score is the denoising target itself
        np.testing.assert_allclose(score, d.conditional_score(x, t, np.tile(m, (5, 1))), rtol=1e-5, atol=1e-6)


def test_the_ddpm_loss_is_denoising_score_matching_weighted_by_one_minus_abar():
    """On the batch DDPM's loss draws (same t, eps and label drops): |s_theta - grad log q(x_t | x_0)|^2
    = |eps - eps_theta|^2 / (1 - abar_t), example by example, and the simple losses' mean is DDPM's loss."""
    model = build_model("ddpm", {**build_model("ddpm").tiny_config, "T": 100})
    for p in model.net.parameters():  # leave the zero initialisation: eps_theta depends on x_t, t and y
        p.data[...] = np.random.default_rng(0).normal(0, 0.05, p.data.shape)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    from autograd import Tensor
    model.rng = np.random.default_rng(2)
    loss = float(model.loss((Tensor(x0), labels))[0].item())
    d, again = model.diffusion, np.random.default_rng(2)                # the same draws, in the same order
    x_t, t, eps = d.diffuse(x0, again)
    cond = model.drop_condition(labels, model.config.p_uncond, again)
    eps_theta = model.eps(x_t, t, cond)
    simple = d.simple_loss_terms(eps_theta, eps)                           # (8,)
    dsm = d.dsm_loss_terms(d.score(x_t, t, eps_theta), x_t, t, x0)         # (8,)
    assert simple.shape == dsm.shape == (8,)
    assert simple.mean() == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(dsm, simple / (1 - d.abar[t]), rtol=1e-4)
    assert len(set(t.tolist())) > 3 and dsm.std() / dsm.mean() > 0.5      # the weights differ: not one factor
    # the denoising target is the noise, rescaled
    np.testing.assert_allclose(d.conditional_score(x_t, t, x0), -eps / d.sqrt_one_minus_abar[t][:, None, None, None],
                               rtol=1e-3, atol=1e-3)


def test_ddim_is_the_euler_step_of_the_probability_flow_ode():
    """In xbar = x / sqrt(abar) and sigma = sqrt((1 - abar) / abar) the probability-flow ODE reads
    d xbar / d sigma = eps(x, t); one Euler step from t to t' is DDIM's update with eta = 0."""
    d = GaussianDiffusion(beta_schedule("cosine", 200), clip_x0=False)
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((5, 1, 4, 4)).astype(np.float32)
    eps = rng.standard_normal((5, 1, 4, 4)).astype(np.float32)
    t, t_prev = np.array([199, 150, 80, 10, 0]), np.array([120, 149, 40, -1, -1])
    abar = d.abar[t][:, None, None, None]
    abar_prev = np.where(t_prev >= 0, d.abar[np.maximum(t_prev, 0)], 1.0)[:, None, None, None]
    sigma, sigma_prev = np.sqrt((1 - abar) / abar), np.sqrt((1 - abar_prev) / abar_prev)
    xbar = x_t / np.sqrt(abar) + (sigma_prev - sigma) * eps                # the Euler step, written out
    euler = np.sqrt(abar_prev) * xbar
    ddim = d.ddim_step(x_t, t, t_prev, eps, 0.0, np.zeros_like(x_t))
    np.testing.assert_allclose(ddim, euler, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.probability_flow_step(x_t, t, t_prev, eps), euler, rtol=1e-5, atol=1e-5)
    # over a whole trajectory too
    eps_fn = lambda x, t, c: np.tanh(x) * per_sample(d.abar[t], x)
    np.testing.assert_allclose(d.probability_flow_sample(eps_fn, (3, 6), np.random.default_rng(1), 17),
                               d.ddim_sample(eps_fn, (3, 6), np.random.default_rng(1), 17), rtol=1e-5, atol=1e-5)
    # in the VP variables the same ODE is dx/dt = -1/2 beta(t) (x + s(x, t)): one step t -> t - 1 of that Euler
    # agrees with DDIM up to O(beta^2), far closer than either is to x_t
    t1 = np.array([150, 100, 50, 20, 5])
    ddim = d.ddim_step(x_t, t1, t1 - 1, eps, 0.0, np.zeros_like(x_t))
    beta = d.betas[t1][:, None, None, None]
    vp = x_t + 0.5 * beta * (x_t + d.score(x_t, t1, eps))                  # dt = -1
    assert np.abs(ddim - vp).max() < 0.05 * np.abs(ddim - x_t).max()


def test_for_a_single_point_the_flow_is_straight_and_one_ddim_step_lands_on_it():
    """Data = the point m: eps = (xbar - m) / sigma, so xbar(sigma) = m + sigma (xbar_T - m) / sigma_T, a straight
    line that the Euler step follows exactly."""
    d = GaussianDiffusion(beta_schedule("linear", 1000), clip_x0=False)
    m = np.array([0.7, -0.3, 0.1])
    for steps in (1, 3):
        x = d.ddim_sample(_gaussian_eps(d, m, np.zeros(3)), (4, 3), np.random.default_rng(0), steps)
        np.testing.assert_allclose(x, np.tile(m, (4, 1)), atol=1e-4)


def _counting(eps_fn):
    def counted(x, t, cond):
        counted.rows += len(x)
        return eps_fn(x, t, cond)
    counted.rows = 0
    return counted


@pytest.mark.parametrize("shape", [(3, 2), (2, 1, 4, 4)])
def test_every_sampler_by_name_its_shape_and_its_network_evaluations(shape):
    d = GaussianDiffusion(beta_schedule("linear", 30))
    eps_fn = lambda x, t, c: (0.5 * np.tanh(x) * per_sample(d.abar[t], x)).astype(np.float32)
    B, expected = shape[0], {"ddim": 1, "ancestral": 1, "pc": 3, "langevin": 2}   # corrector_steps = 2
    for sampler in SAMPLERS:
        counted, before = _counting(eps_fn), d.evaluations
        x = d.sample(sampler, counted, shape, np.random.default_rng(0), levels=5, corrector_steps=2)
        assert x.shape == shape and x.dtype == np.float32 and np.isfinite(x).all(), sampler
        assert counted.rows == B * 5 * expected[sampler] == d.evaluations - before, sampler
        assert d.nfe_per_level(sampler, 2) == expected[sampler]
        if sampler != "ancestral":  # [eps, v] of a learned-variance model: these samplers read eps alone
            with_v = lambda x, t, c: np.concatenate([eps_fn(x, t, c), np.ones_like(x)], axis=1)
            np.testing.assert_array_equal(d.sample(sampler, with_v, shape, np.random.default_rng(0), levels=5,
                                                   corrector_steps=2, learned_variance=True), x)
    counted = _counting(eps_fn)
    d.sample("ancestral", counted, shape, np.random.default_rng(0))           # levels None: all T steps
    assert counted.rows == B * 30
    # the most levels within an NFE budget
    assert [d.levels_for(s, 10) for s in SAMPLERS] == [10, 10, 5, 10]
    assert d.levels_for("pc", 10, corrector_steps=2) == 3 and d.levels_for("ddim", 250) == 30
    with pytest.raises(ValueError, match="pc with 1 corrector steps needs 2 network evaluations per noise level; 1"):
        d.levels_for("pc", 1)
    with pytest.raises(ValueError, match="langevin needs corrector_steps >= 1"):
        d.levels_for("langevin", 10, corrector_steps=0)
    with pytest.raises(ValueError, match="unknown sampler 'euler'; valid: ddim, ancestral, pc, langevin"):
        d.sample("euler", eps_fn, shape, np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="langevin_steps must be a whole number >= 1"):
        d.annealed_langevin_sample(eps_fn, shape, np.random.default_rng(0), 3, langevin_steps=0)
    with pytest.raises(ValueError, match="4 rows for a batch of"):
        d.pc_sample(eps_fn, shape, np.random.default_rng(0), 3, cond=np.zeros(4))


def test_pc_without_a_corrector_is_the_ancestral_sampler_of_its_levels():
    d = GaussianDiffusion(beta_schedule("linear", 40))
    eps_fn = lambda x, t, c: (np.tanh(x) * per_sample(d.abar[t], x)).astype(np.float32)
    for levels in (7, 40):
        pc = d.pc_sample(eps_fn, (4, 3), np.random.default_rng(0), levels, corrector_steps=0)
        ancestral = d.sample("ancestral", eps_fn, (4, 3), np.random.default_rng(0), levels)
        np.testing.assert_allclose(pc, ancestral, rtol=1e-5, atol=1e-5)


def test_the_snr_rule_gives_the_asked_signal_to_noise_ratio():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    rng = np.random.default_rng(0)
    score, z = rng.standard_normal((6, 10)) * 3, rng.standard_normal((6, 10))
    t = np.full(6, 40)
    delta = d.snr_step_size(t, score, z, 0.16)
    ratio = np.linalg.norm(delta[:, None] * score, axis=1).mean() / np.linalg.norm(np.sqrt(2 * delta)[:, None] * z,
                                                                                    axis=1).mean()
    assert ratio == pytest.approx(0.16 * np.sqrt(d.alphas[40]), rel=1e-6)
    # NCSN's rule gives the same ratio for a score of the expected norm sqrt(D / (1 - abar_t))
    delta = d.ncsn_step_size(40, 0.16)
    assert np.sqrt(delta / 2) * np.sqrt(1 / (1 - d.abar[40])) == pytest.approx(0.16)


def test_pc_and_annealed_langevin_with_the_exact_score_sample_gaussian_data():
    m, s, B = np.array([1.0, -2.0]), np.array([0.5, 1.5]), 3000
    d = GaussianDiffusion(beta_schedule("linear", 1000), clip_x0=False)
    eps_fn = _gaussian_eps(d, m, s)
    runs = {"pc": d.pc_sample(eps_fn, (B, 2), np.random.default_rng(0), 50, snr=0.16),
            "langevin": d.annealed_langevin_sample(eps_fn, (B, 2), np.random.default_rng(0), 100, snr=0.5,
                                                   langevin_steps=5)}
    for name, x in runs.items():
        np.testing.assert_allclose(x.mean(axis=0), m, atol=0.08, err_msg=name)
        np.testing.assert_allclose(x.std(axis=0), s, rtol=0.1, err_msg=name)
    # the same budget with a step too small to move: x stays near N(0, I), far from the data
    stuck = d.annealed_langevin_sample(eps_fn, (B, 2), np.random.default_rng(0), 100, snr=0.005, langevin_steps=5)
    assert np.abs(stuck.mean(axis=0) - m).max() > 0.5 or np.abs(stuck.std(axis=0) / s - 1).max() > 0.3


def test_a_ddpm_samples_with_every_sampler_and_counts_its_evaluations():
    model = build_model("ddpm", {**build_model("ddpm").tiny_config, "T": 12})
    for p in model.net.parameters():
        p.data[...] = np.random.default_rng(0).normal(0, 0.05, p.data.shape)
    model.rng = np.random.default_rng(0)
    for sampler in SAMPLERS:
        before = model.diffusion.evaluations
        x = model.sample(3, label=[1, 2, 3], steps=2, sampler=sampler, snr=0.2, corrector_steps=1)
        assert x.shape == (3, 1, 28, 28) and 0 <= x.min() and x.max() <= 1, sampler
        assert model.diffusion.evaluations - before == 3 * 2 * model.diffusion.nfe_per_level(sampler, 1)
    with pytest.raises(ValueError, match="frames and known go with the default samplers"):
        model.sample_latents(2, steps=2, sampler="pc", frames=2)


# ---------------------------------------------------------------------- the measurement command
@pytest.fixture
def tiny_ddpm(tmp_path, monkeypatch):
    """An untrained class-conditional DDPM (T = 12) in tmp_path/ddpm/last.npz, and FID-judge against 300 test
    images instead of the whole split (the bookkeeping is what is tested here)."""
    from tinygen import data, evaluate
    from tinygen.models import save_model
    model = build_model("ddpm", {**build_model("ddpm").tiny_config, "T": 12})
    model.dataset = "mnist"
    (tmp_path / "ddpm").mkdir()
    save_model(model, tmp_path / "ddpm" / "last.npz")
    x, _ = data.load_dataset("mnist", "test")
    monkeypatch.setitem(evaluate._test_features, "mnist", evaluate.judge_features(x[:300], "mnist"))
    return tmp_path / "ddpm" / "last.npz"


def test_the_sampler_sweep_at_equal_nfe_rows_table_and_plot(tiny_ddpm, capsys, one_line_error):
    import json
    from tinygen import evaluate, io
    evaluate.main(["sampler-sweep", "--checkpoint", str(tiny_ddpm), "--n", "4", "--nfe", "4", "12",
                   "--snr", "0.1", "0.3"])
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out if line.startswith("{")]
    # ddim and ancestral: one row per NFE; pc and langevin: one per NFE and snr
    assert [(r["sampler"], r["snr"], r["nfe"], r["levels"]) for r in rows] == [
        ("ddim", None, 4, 4), ("ddim", None, 12, 12), ("ancestral", None, 4, 4), ("ancestral", None, 12, 12),
        ("pc", 0.1, 4, 2), ("pc", 0.1, 12, 6), ("pc", 0.3, 4, 2), ("pc", 0.3, 12, 6),
        ("langevin", 0.1, 4, 4), ("langevin", 0.1, 12, 12), ("langevin", 0.3, 4, 4), ("langevin", 0.3, 12, 12)]
    for r in rows:
        assert r["n"] == 4 and 0 <= r["conditional_accuracy"] <= 1 and r["fid_judge"] > 0 and r["images_per_s"] > 0
        assert r["corrector_steps"] == (1 if r["sampler"] in ("pc", "langevin") else None)
    table = [line for line in out if line.startswith("|")]
    assert table[0] == ("| sampler | snr | corrector_steps | levels | nfe | n | conditional_accuracy | fid_judge | "
                        "class_coverage | images_per_s |") and len(table) == 2 + len(rows)
    assert table[2].startswith("| ddim | — | — | 4 | 4.0 | 4 |")
    plot = tiny_ddpm.with_name("sampler_sweep.png")
    assert out[-1] == f"plot: {plot}" and io.png_text(plot)["tinygen"] == "sampler-sweep"
    from PIL import Image
    with Image.open(plot) as image:
        assert image.size == (840, 300)                                   # two panels: FID-judge, accuracy
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 6               # the curves' colours, not a blank page
    # its own plot it replaces; any other file it refuses, one line, exit status 2
    evaluate.main(["sampler-sweep", "--checkpoint", str(tiny_ddpm), "--n", "2", "--nfe", "2", "--samplers", "ddim"])
    capsys.readouterr()
    mine = tiny_ddpm.with_name("mine.png")
    mine.write_bytes(b"not the sweep's")
    for argv, message in [
        (["--nfe", "2", "--plot", str(mine)], "--plot .*mine.png: the file exists and was not written by sampler-sweep"),
        (["--nfe", "2", "--plot", str(tiny_ddpm.with_name("plot.jpg"))], "--plot .*plot.jpg: the plot is a PNG"),
        (["--steps", "5", "--nfe", "10"], "--steps with --nfe: --steps sweeps DDIM steps"),
        (["--nfe", "13", "--samplers", "ddim"], r"--nfe 13: ddim visits at most the T = 12 noise levels of ddpm"),
        (["--nfe", "1", "--samplers", "pc"], "--nfe 1: pc with --corrector-steps 1 takes 2 network evaluations"),
        (["--samplers", "euler"], "--samplers: invalid choice: 'euler'"),
        (["--nfe", "20", "--samplers", "pc", "langevin"], "--nfe 20: langevin visits at most the T = 12 noise levels"),
        (["--snr", "0"], "--snr: must be a finite number > 0"),
    ]:
        err = one_line_error(evaluate.main, ["sampler-sweep", "--checkpoint", str(tiny_ddpm), "--n", "2", *argv])
        import re
        assert re.search(message, err), err
    assert mine.read_bytes() == b"not the sweep's"
