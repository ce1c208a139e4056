"""DCGAN: the convolutional players' shapes, their init, and sampling with BatchNorm's running statistics
(the alternating step is checked for every GAN in test_gan_family.py)."""
import numpy as np
import pytest

from autograd import Tensor
from tinygen import nn
from tinygen.models.dcgan import DCGAN, DCDiscriminator, DCGenerator
from tinygen.models.gan import GANBase
from tinygen.models import build_model
from tests.models.test_gan_family import batch

TINY = {"width": 8, "z_dim": 16}


def test_generator_and_discriminator_shapes():
    nn.manual_seed(0)
    G, D = DCGenerator(16, width=8), DCDiscriminator(width=8)
    z = Tensor(np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32))
    h = G.project(z)
    assert h.shape == (3, 2 * 8 * 7 * 7)
    x = G(z)
    assert x.shape == (3, 1, 28, 28) and np.abs(x.numpy()).max() < 1
    assert D(x).shape == (3, 1)
    assert D.net[0](x).shape == (3, 8, 14, 14)


def test_recipe_defaults():
    c = DCGAN.Config()
    assert (c.lr, c.beta1, c.loss, c.z_dim, c.width) == (2e-4, 0.5, "non_saturating", 64, 64)
    model = DCGAN()
    assert isinstance(model, GANBase)
    slopes = [m.negative_slope for m in model.discriminator.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2]
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())


def test_weights_initialised_from_n_0_002():
    model = DCGAN()
    w = model.discriminator.net[2].weight.data                 # 128 x 64 x 4 x 4 values
    assert abs(float(w.mean())) < 2e-3 and float(w.std()) == pytest.approx(0.02, rel=0.05)


def test_sample_uses_running_statistics_and_restores_train_mode():
    model = build_model("dcgan", TINY)
    opts = model.configure_optimizers()
    for seed in range(2):
        model.training_step(batch(model, seed=seed), opts)
    bn = model.generator.up[0]
    assert not np.allclose(bn.running_mean, 0)                  # training moved the running statistics
    z = np.random.default_rng(0).standard_normal((6, 16), dtype=np.float32)
    s = model.sample(6, z=z)
    assert s.shape == (6, 1, 28, 28) and s.min() >= 0 and s.max() <= 1 and model.training
    # eval mode: each sample depends on its own z only, not on the rest of the batch
    np.testing.assert_allclose(model.sample(3, z=z[:3]), s[:3], atol=1e-6)
