"""CGAN: the label reaches both players, sample() takes labels, the picture has one row per class."""
import numpy as np
import pytest

from tinygen.models.cgan import CGAN
from tinygen.models import build_model
from tests.models.test_gan_family import batch, snapshot

TINY = {"width": 8, "z_dim": 16}


def test_changing_the_label_changes_the_output_for_a_fixed_z():
    model = build_model("cgan", TINY)
    z = np.repeat(np.random.default_rng(0).standard_normal((1, 16), dtype=np.float32), 10, axis=0)
    s = model.sample(10, label=np.arange(10), z=z)
    assert s.shape == (10, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    diffs = np.abs(s[1:] - s[:1]).reshape(9, -1).max(axis=1)
    assert (diffs > 1e-4).all(), diffs                              # every other label draws something else
    np.testing.assert_array_equal(model.sample(2, label=3, z=z[:2]), model.sample(2, label=[3, 3], z=z[:2]))


def test_discriminator_sees_the_label():
    model = build_model("cgan", TINY)
    x, _ = batch(model, 4)
    a = model.critic(x, np.array([0, 1, 2, 3])).numpy()
    b = model.critic(x, np.array([5, 6, 7, 8])).numpy()
    assert a.shape == (4, 1) and not np.allclose(a, b)


def test_sample_labels():
    model = build_model("cgan", TINY)
    assert CGAN.conditional is True
    model.rng = np.random.default_rng(0)
    default = model.sample(12)                                      # labels 0..9, 0, 1
    model.rng = np.random.default_rng(0)
    np.testing.assert_array_equal(default, model.sample(12, label=np.arange(12) % 10))
    assert model.sample(3, label=7).shape == (3, 1, 28, 28) and model.training
    with pytest.raises(ValueError, match="0..9"):
        model.sample(2, label=10)


def test_g_step_trains_the_generators_label_weights():
    model = build_model("cgan", TINY)
    opts = model.configure_optimizers()
    g0 = snapshot(model.generator)
    model.training_step(batch(model), opts)
    # the label-input weights of G received a gradient (columns z_dim.. of the first Linear)
    label_cols = model.generator.project.weight.data[:, 16:]
    assert not np.array_equal(label_cols, g0[0][:, 16:])


def test_visualize_has_one_row_per_digit(tmp_path):
    from PIL import Image
    model = build_model("cgan", TINY)
    model.visualize(None, None, tmp_path / "grid.png")
    w, h = Image.open(tmp_path / "grid.png").size
    assert w == h == 2 * (10 * 30 + 2)                             # 10 x 10 tiles of 28 + 2 padding, scale 2
    asked = {}
    real_sample = model.sample

    def recording_sample(n, label=None, z=None):
        asked.update(label=np.asarray(label), z=z)
        return real_sample(n, label=label, z=z)

    model.sample = recording_sample
    model.visualize(None, None, tmp_path / "grid2.png")
    np.testing.assert_array_equal(asked["label"].reshape(10, 10), np.arange(10)[:, None].repeat(10, axis=1))
    z = asked["z"].reshape(10, 10, -1)
    np.testing.assert_array_equal(z, np.broadcast_to(z[:1], z.shape))  # column j: the same z in every row
