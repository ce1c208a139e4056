"""Latent diffusion: the two training stages, the latent scale, shapes, sampling, and a checkpoint."""
import numpy as np
import pytest

from tinygen import data
from tinygen.models import load_model
from tinygen.train import TrainOptions, Trainer, build_model

TINY = {"T": 20, "ae_width": 8, "base_channels": 16, "batch_size": 16, "ae_steps": 30, "sample_steps": 3}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def test_stage_one_trains_the_autoencoder_then_stage_two_the_diffusion(mnist):
    model = build_model("latent_diffusion", TINY)
    opts = model.configure_optimizers()
    batch = model.prepare_batch(mnist[0][:32], mnist[1][:32])
    ae_before = {n: p.data.copy() for n, p in model.autoencoder.named_parameters()}
    logs = [model.training_step(batch, opts) for _ in range(30)]
    assert model.stage == 2 and all("ae_loss" in l for l in logs)
    assert logs[-1]["ae_loss"] < 0.8 * logs[0]["ae_loss"]
    ae_after = {n: p.data.copy() for n, p in model.autoencoder.named_parameters()}
    assert any(not np.array_equal(ae_before[n], ae_after[n]) for n in ae_before)
    net_before = {n: p.data.copy() for n, p in model.net.named_parameters()}
    losses = [model.training_step(batch, opts)["loss"] for _ in range(15)]
    z = model.encode(batch[0].numpy())
    assert z.shape == (32, 4, 7, 7)
    assert z.std() == pytest.approx(1.0, rel=0.01)  # scaled by std(z) measured on this same batch
    for n, p in model.autoencoder.named_parameters():  # frozen in stage 2
        np.testing.assert_array_equal(p.data, ae_after[n])
    assert any(not np.array_equal(net_before[n], p.data) for n, p in model.net.named_parameters())
    assert model.ema.num_updates == 15 and np.isfinite(losses).all()


def test_sampling_shapes_and_checkpoint(mnist, tmp_path):
    model = build_model("latent_diffusion", TINY)
    Trainer(model, TrainOptions(out=str(tmp_path), max_steps=33, progress=False)).fit()
    loaded, _ = load_model(tmp_path / "last.npz", "latent_diffusion")
    assert loaded.stage == 2 and loaded.latent_std[0] == model.latent_std[0] != 1
    x = loaded.sample(5, label=[0, 1, 2, 3, 4], guidance=2.0, steps=3)
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert loaded.evaluate(mnist[0], mnist[1], n=10).keys() == {"test_ae_bce", "test_ae_l1"}


def test_a_checkpoint_saved_in_stage_one_loads_the_trained_autoencoder(tmp_path):
    model = build_model("latent_diffusion", TINY)
    Trainer(model, TrainOptions(out=str(tmp_path), max_steps=5, progress=False)).fit()
    assert model.stage == 1
    loaded, _ = load_model(tmp_path / "last.npz", "latent_diffusion")
    fresh = build_model("latent_diffusion", TINY)
    for (n, p), (_, q) in zip(loaded.autoencoder.named_parameters(), model.autoencoder.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert any(not np.array_equal(p.data, q.data)
               for (_, p), (_, q) in zip(loaded.autoencoder.named_parameters(), fresh.autoencoder.named_parameters()))


def test_trajectory_gif_decodes_latents_and_pixel_classifier_is_refused(tmp_path):
    model = build_model("latent_diffusion", TINY)
    model.save_trajectory(tmp_path / "t.gif", n=2, frames=2, steps=2)
    assert (tmp_path / "t.gif").read_bytes()[:3] == b"GIF"
    clf = build_model("noisy_classifier", {"T": 20, "base_channels": 8})
    with pytest.raises(ValueError, match="cannot guide"):
        model.sample(1, label=1, steps=2, classifier=clf, classifier_scale=1.0)
