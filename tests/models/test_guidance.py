"""Classifier guidance: the noisy classifier's input gradient against finite differences, its training
on a fixed batch, the schedule check, and guided sampling through a DDPM."""
import numpy as np
import pytest

from tinygen import data, optim
from tinygen.train import TrainOptions, Trainer, build_model

TINY = {"T": 50, "base_channels": 8, "batch_size": 16}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def test_log_prob_grad_matches_finite_differences(mnist):
    clf = build_model("noisy_classifier", TINY)
    x = data.to_signed(mnist[0][:2])
    y = np.array([3, 8])
    grad = clf.log_prob_grad(x, 10, y)
    assert grad.shape == x.shape and clf.training

    def log_p(xv):
        from autograd import Tensor, no_grad
        import autograd.functional as F
        clf.eval()
        with no_grad():
            lp = F.log_softmax(clf.net(Tensor(xv), np.full(2, 10)), dim=1).numpy()
        clf.train()
        return float(lp[np.arange(2), y].astype(np.float64).sum())

    rng = np.random.default_rng(0)
    direction = rng.standard_normal(x.shape).astype(np.float32)
    h = 1e-2
    numeric = (log_p(x + h * direction) - log_p(x - h * direction)) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=0.02, abs=1e-3)


def test_loss_decreases_on_a_fixed_batch(mnist):
    clf = build_model("noisy_classifier", TINY)
    batch = clf.prepare_batch(mnist[0][:32], mnist[1][:32])
    opts = {"main": optim.Adam(clf.parameters(), lr=3e-3)}
    losses = []
    for _ in range(30):
        clf.rng = np.random.default_rng(0)  # the same noise levels each step
        losses.append(clf.training_step(batch, opts)["loss"])
    assert losses[0] == pytest.approx(np.log(10), abs=0.3)
    assert losses[-1] < 0.5 * losses[0]


def test_guides_a_ddpm_and_refuses_another_schedule(mnist, tmp_path):
    clf = build_model("noisy_classifier", TINY)
    Trainer(clf, TrainOptions(out=str(tmp_path), max_steps=2, progress=False, evaluate=False)).fit()
    ddpm = build_model("ddpm", {"T": 50, "base_channels": 8, "channel_mult": [1, 2, 2]})
    x = ddpm.sample(2, label=[1, 2], guidance=0.0, steps=3, classifier=clf, classifier_scale=5.0)
    assert x.shape == (2, 1, 28, 28)
    other = build_model("ddpm", {"T": 60, "base_channels": 8, "channel_mult": [1, 2, 2]})
    with pytest.raises(ValueError, match="T, schedule"):
        other.sample(1, label=1, steps=2, classifier=clf, classifier_scale=1.0)
    assert clf.evaluate(mnist[0], mnist[1], n=20).keys() == {"test_acc_t0", "test_acc_t12", "test_acc_t25",
                                                             "test_acc_t38"}


@pytest.mark.slow
def test_sweeps_from_the_command_line(tmp_path, capsys):
    from tinygen.evaluate import main
    # sample_steps 2: the trainer's picture (80 images) in 2 DDIM steps, not the default 50
    ddpm = build_model("ddpm", {"T": 50, "base_channels": 8, "channel_mult": [1, 2, 2], "sample_steps": 2})
    Trainer(ddpm, TrainOptions(out=str(tmp_path / "d"), max_steps=1, progress=False, evaluate=False)).fit()
    clf = build_model("noisy_classifier", TINY)
    Trainer(clf, TrainOptions(out=str(tmp_path / "c"), max_steps=1, progress=False, evaluate=False)).fit()
    main(["sampler-sweep", "--checkpoint", str(tmp_path / "d/last.npz"), "--n", "20", "--steps", "50", "4"])
    out = capsys.readouterr().out
    assert "| 50 | ancestral | 20 |" in out and "| 4 | DDIM eta=0 | 20 |" in out
    main(["guidance-sweep", "--checkpoint", str(tmp_path / "d/last.npz"), "--n", "20", "--scales", "0", "2",
          "--steps", "3", "--classifier", str(tmp_path / "c/last.npz")])
    out = capsys.readouterr().out
    assert "| classifier | 2.0 | 3 | 20 |" in out and "CPU seconds" in out
