"""Autoencoder: shapes, training on a fixed batch, the pictures (reconstructions, latent scatter
with and without PCA), and one pass through the training loop."""
import numpy as np
import pytest
from PIL import Image

from autograd import Tensor
from tinygen import data, optim
from tinygen.models.ae import AE, inference, latent_scatter, mlp
from tinygen.train import TrainOptions, Trainer, build_model

TINY = {"hidden": 64, "batch_size": 32}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def test_shapes_and_modes(mnist):
    model = build_model("ae", TINY)
    x = Tensor(data.to_float(mnist[0][:5]))
    z = model.encode(x)
    assert z.shape == (5, 2)
    assert model.decode(z).shape == (5, 1, 28, 28)
    assert model.embed(mnist[0][:5]).shape == (5, 2)
    recon = model.reconstruct(mnist[0][:5])
    assert recon.shape == (5, 1, 28, 28) and 0 <= recon.min() and recon.max() <= 1
    samples = model.sample(6)
    assert samples.shape == (6, 1, 28, 28) and isinstance(samples, np.ndarray)
    assert 0 <= samples.min() and samples.max() <= 1
    assert model.training  # back in train mode after sampling
    assert model.evaluate(mnist[0][:100], mnist[1][:100])["test_recon_bce"] > 0


def test_mlp_and_inference_helpers():
    net = mlp(3, 4, 5)  # Linear, ReLU, Linear
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]

    class Probe(AE):
        @inference
        def state(self):
            return self.training, Tensor(np.ones(1), requires_grad=True) * 2
    probe = Probe()
    training, y = probe.state()
    assert not training and not y.requires_grad and probe.training


def test_loss_decreases_on_a_fixed_batch(mnist):
    model = build_model("ae", TINY)
    batch = (Tensor(data.to_float(mnist[0][:64])), mnist[1][:64])
    opts = {"main": optim.Adam(model.parameters(), lr=3e-3)}
    losses = [model.training_step(batch, opts)["loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.7 * losses[0]


def test_visualize_shows_inputs_above_reconstructions(mnist, tmp_path):
    model = build_model("ae", TINY)
    model.visualize(mnist[0][:64], mnist[1][:64], tmp_path / "r.png")
    width, height = Image.open(tmp_path / "r.png").size
    assert width == height == 2 * (8 * 30 + 2)  # 8 x 8 grid of 28-pixel images, padding 2, scale 2


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_latent_scatter_in_two_dimensions(mnist, tmp_path, latent_dim):
    model = build_model("ae", {**TINY, "latent_dim": latent_dim})
    points = latent_scatter(model, mnist[0][:300], mnist[1][:300], tmp_path / "s.png", batch_size=128)
    assert points.shape == (300, 2) and (tmp_path / "s.png").exists()
    if latent_dim == 2:
        np.testing.assert_allclose(points, model.embed(mnist[0][:300]), rtol=1e-5, atol=1e-6)  # float32: a batch of 128 and one of 300 round apart
    else:  # principal components: centred, the first with the larger variance
        np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-4)
        assert points[:, 0].var() >= points[:, 1].var()


def test_a_few_steps_through_the_training_loop(tmp_path):
    model = build_model("ae", TINY)
    summary = Trainer(model, TrainOptions(out=str(tmp_path), max_steps=3, progress=False)).fit()
    assert summary["steps"] == 3 and np.isfinite(summary["test_recon_bce"])
