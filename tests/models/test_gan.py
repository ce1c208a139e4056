"""The MLP GAN and the shared adversarial machinery: loss formulas, gradients, zeroed gradients, clipping,
resume (the alternating step of every GAN is checked in test_gan_family.py)."""
import numpy as np
import pytest

from autograd import Tensor
from tinygen.models.gan import GANBase, discriminator_loss, generator_loss
from tinygen.models import build_model
from tests.models.test_gan_family import batch


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def test_shapes_and_ranges():
    model = build_model("gan")
    z = Tensor(np.random.default_rng(0).standard_normal((5, 64), dtype=np.float32))
    x = model.generator(z)
    assert x.shape == (5, 1, 28, 28) and np.abs(x.numpy()).max() < 1
    assert model.discriminator(x).shape == (5, 1)
    assert isinstance(model, GANBase) and model.image_range == "signed"
    assert set(model.configure_optimizers()) == {"G", "D"}
    opt = model.configure_optimizers()["G"]
    assert opt.lr == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_discriminator_loss_matches_hand_computed_value():
    real, fake = np.array([[2.0], [-0.5], [0.3]], np.float32), np.array([[-1.0], [1.5], [0.0]], np.float32)
    expected = -np.log(sigmoid(real)).mean() - np.log(1 - sigmoid(fake)).mean()
    assert discriminator_loss(Tensor(real), Tensor(fake)).item() == pytest.approx(expected, rel=1e-5)


def test_generator_losses_match_hand_computed_values():
    a = np.array([[-3.0], [0.0], [2.5], [-0.7]], np.float32)
    assert generator_loss(Tensor(a), "non_saturating").item() == pytest.approx(-np.log(sigmoid(a)).mean(), rel=1e-5)
    assert generator_loss(Tensor(a), "minimax").item() == pytest.approx(np.log(1 - sigmoid(a)).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="minimax"):
        generator_loss(Tensor(a), "wasserstein")


def test_non_saturating_gradient_is_larger_when_d_rejects_the_fakes():
    """D(G(z)) ~ 0: minimax dL/da = -D / N vanishes, non-saturating dL/da = -(1 - D) / N does not."""
    a = np.full((8, 1), -8.0, np.float32)
    d = sigmoid(a)
    grads = {}
    for kind in ("non_saturating", "minimax"):
        logits = Tensor(a, requires_grad=True)
        generator_loss(logits, kind).backward()
        grads[kind] = logits.grad
    np.testing.assert_allclose(grads["non_saturating"], -(1 - d) / 8, rtol=1e-4)
    np.testing.assert_allclose(grads["minimax"], -d / 8, rtol=1e-3)
    assert (grads["non_saturating"] < 0).all() and (grads["minimax"] < 0).all()   # both raise D(G(z))
    assert np.abs(grads["non_saturating"]).min() > 1000 * np.abs(grads["minimax"]).max()


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="non_saturating"):
        build_model("gan", {"loss": "hinge"})


def test_each_step_starts_from_zeroed_gradients():
    model = build_model("gan")
    opts = model.configure_optimizers()
    stale = 1e6
    for p in model.parameters():                   # leftovers that a missing zero_grad would add to
        p.grad = np.full_like(p.data, stale)
    seen = {}
    for name in ("G", "D"):
        step = opts[name].step

        def recording_step(name=name, step=step):
            seen[name] = max(float(np.abs(p.grad).max()) for p in opts[name]._params())
            step()
        opts[name].step = recording_step
    model.training_step(batch(model, 16), opts)
    assert seen["G"] < 1e3 and seen["D"] < 1e3, seen


def test_sample_is_unit_range_numpy_in_eval_mode_and_restores_train_mode():
    model = build_model("gan")
    z = np.random.default_rng(1).standard_normal((7, 64), dtype=np.float32)
    s = model.sample(7, z=z)
    assert isinstance(s, np.ndarray) and s.shape == (7, 1, 28, 28) and s.dtype == np.float32
    assert s.min() >= 0 and s.max() <= 1 and model.training
    np.testing.assert_array_equal(s, model.sample(7, z=z))     # eval mode: deterministic given z


def test_resumed_run_replays_the_same_noise_and_losses(tmp_path):
    import json
    from tinygen.train import TrainOptions, Trainer

    def fit(out, steps, resume=False):
        options = TrainOptions(out=str(out), max_steps=steps, resume=resume, log_every=1, checkpoint_every=2,
                               progress=False, evaluate=False)
        Trainer(build_model("gan", {"batch_size": 16}), options).fit()
        return [(r["d_loss"], r["g_loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]

    straight = fit(tmp_path / "a", 6)
    fit(tmp_path / "b", 3)
    assert fit(tmp_path / "b", 6, resume=True) == straight


def test_gradient_clipping_logs_each_players_norm():
    model = build_model("gan", {"grad_clip": 1.0})
    logs = model.training_step(batch(model, 16), model.configure_optimizers())
    assert logs["d_grad_norm"] > 0 and logs["g_grad_norm"] > 0
