"""DiT (tinygen/models/dit.py) on tiny configs."""
import numpy as np
import pytest

from autograd import Tensor
from tinygen import nn
from tinygen.models import build_model, save_model
from tinygen.__main__ import main
from tinygen.models.dit import DiTBlock, DiTNet

TINY = {"T": 5, "ae_width": 4, "dim": 16, "depth": 1, "num_heads": 2, "batch_size": 8, "sample_steps": 2}


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    """A tiny latent_diffusion checkpoint (untrained, but real): the stage a latent DiT is built on."""
    path = tmp_path_factory.mktemp("stage") / "ld.npz"
    save_model(build_model("latent_diffusion", {"T": 5, "ae_width": 4, "base_channels": 8, "ae_steps": 0}), path)
    return str(path)


def test_a_fresh_block_is_the_identity_and_still_learns():
    nn.manual_seed(0)
    block = DiTBlock(16, 2)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 5, 16)).astype(np.float32), requires_grad=True)
    c = Tensor(np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32))
    y = block(x, c)
    assert np.array_equal(y.numpy(), x.numpy())
    (y * y).sum().backward()
    assert np.any(block.ada.weight.grad)          # the zero gates receive a gradient: adaLN-Zero trains
    nn.init.normal_(block.ada.weight, std=0.1)
    assert not np.allclose(block(x, c).numpy(), x.numpy())


def test_fresh_net_predicts_zero_and_pads_odd_grids():
    nn.manual_seed(0)
    net = DiTNet(4, 7, 2, 16, 2, 2, num_classes=10)
    assert (net.padded, net.grid) == (8, 4)
    out = net(Tensor(np.ones((2, 4, 7, 7), np.float32)), np.array([1, 3]), np.array([0, 10]))
    assert out.shape == (2, 8, 7, 7) and not np.any(out.numpy())
    with pytest.raises(ValueError, match="expected x_t"):
        net(Tensor(np.ones((2, 1, 7, 7), np.float32)), np.array([1, 3]))
    with pytest.raises(ValueError, match="divisible by 4"):
        DiTNet(4, 7, 2, 18, 1, 2)


def test_output_depends_on_label_and_time_once_trained_weights_move():
    nn.manual_seed(0)
    net = DiTNet(1, 8, 4, 16, 1, 2, num_classes=10)
    for p in net.parameters():
        if not np.any(p.data):
            nn.init.normal_(p, std=0.1)
    x = Tensor(np.ones((2, 1, 8, 8), np.float32))
    a = net(x, np.array([1, 1]), np.array([2, 2])).numpy()
    assert not np.allclose(a, net(x, np.array([1, 1]), np.array([3, 3])).numpy())
    assert not np.allclose(a, net(x, np.array([4, 4]), np.array([2, 2])).numpy())


def test_tiny_model_trains_and_samples_latent_and_pixels(ae):
    for extra in ({"autoencoder": ae}, {"input": "pixels", "patch_size": 4}):
        m = build_model("dit", {**TINY, **extra})
        m.rng = np.random.default_rng(0)
        opt = m.configure_optimizers()
        x = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28)).astype(np.uint8)
        batch = m.prepare_batch(x, np.arange(8) % 10)
        logs = m.training_step(batch, opt)
        assert {"loss", "mse", "vlb_bits"} <= set(logs) and np.isfinite(logs["loss"])
        for steps in (2, None):
            s = m.sample(3, label=[1, 2, 3], guidance=2.0, steps=steps)
            assert s.shape == (3, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
        assert set(m.evaluate(x, np.arange(8) % 10)) == {"test_mse", "test_vlb_bits"}


def test_learn_sigma_off_uses_the_simple_loss(ae):
    m = build_model("dit", {**TINY, "autoencoder": ae, "learn_sigma": False})
    assert not m.learned_variance and m.net.out_channels == 4
    loss, logs = m.loss(m.prepare_batch(np.zeros((8, 1, 28, 28), np.uint8), np.arange(8)))
    assert logs == {} and np.isfinite(loss.item())


def test_the_autoencoder_comes_from_a_latent_diffusion_checkpoint(tmp_path):
    ld = build_model("latent_diffusion", {"T": 5, "ae_width": 4, "base_channels": 8, "ae_steps": 0})
    path = tmp_path / "ld.npz"
    save_model(ld, path)
    m = build_model("dit", {**TINY, "autoencoder": str(path)})
    w = m.autoencoder.encoder.net[0].weight.data               # copied in when the model is built
    assert np.array_equal(w, ld.autoencoder.encoder.net[0].weight.data) and m.config.autoencoder_loaded
    m.training_step(m.prepare_batch(np.zeros((8, 1, 28, 28), np.uint8), np.arange(8)), m.configure_optimizers())
    assert m.latent_std[0] > 0
    with pytest.raises(ValueError, match="latent_channels"):
        build_model("dit", {**TINY, "autoencoder": str(path), "latent_channels": 3})
    with pytest.raises(FileNotFoundError, match="no autoencoder"):
        build_model("dit", {**TINY, "autoencoder": str(tmp_path / "missing.npz")})
    with pytest.raises(ValueError, match="unknown input"):
        build_model("dit", {**TINY, "input": "voxels"})
    # a checkpoint carries the stage's weights: it loads where the stage's file is not
    from tinygen.models import load_model
    save_model(m, tmp_path / "dit.npz")
    path.unlink()
    loaded, _ = load_model(tmp_path / "dit.npz", "dit")
    np.testing.assert_allclose(loaded.autoencoder.encoder.net[0].weight.data, w, rtol=1e-6)   # (the EMA's copy)


def test_the_autoencoder_is_named_on_the_command_line(tmp_path, one_line_error):
    """No default path: a latent DiT without --set autoencoder=PATH is refused at once, with the command
    that trains the autoencoder, and the run folder is left untouched."""
    with pytest.raises(ValueError, match="train latent_diffusion --max-steps 2000 --out runs/ld-ae"):
        build_model("dit", {**TINY, "autoencoder": ""})
    out = tmp_path / "run"
    err = one_line_error(main, ["train", "dit", "--quick", "--no-progress", "--out", str(out)])
    assert "--set autoencoder=" in err and "train latent_diffusion" in err
    assert not out.exists() or not any(out.iterdir())
