"""Pinned samples of the diffusion models: tiny seeded configs of ddpm, latent_diffusion and the noisy
classifier take two SGD steps on a fixed synthetic batch and sample; a tiny ddpm checkpoint trained for
300 steps samples with DDIM (eta 0 and 1) and the ancestral sampler, with and without classifier-free
and classifier guidance. The arrays were stored by the code before the diffusion process moved into
tinygen/diffusion.py; the test holds any later code to them (within 1e-4: a different BLAS, or the same one on another number of threads, rounds float32
matmuls differently, and the first DDIM step from pure noise amplifies that by 1 / sqrt(abar_T)); the checkpoint, written
by that earlier code, must still load and give the same samples.

Regenerate (only when a change to the samples is intended, and say why in the commit):
    python tests/models/test_diffusion_pinned.py
"""
from pathlib import Path

import numpy as np
import pytest

from tinygen import optim

DATA = Path(__file__).parent / "data"
PINNED = DATA / "diffusion_pinned.npz"
OLD_CHECKPOINT = DATA / "ddpm_tiny_checkpoint.npz"   # written by the code before the move; never rewrite it
ATOL = 1e-4   # images in [0, 1]; the BLAS thread count alone moves the CFG-3 DDIM samples by 1.6e-5

DDPM = {"T": 20, "base_channels": 8, "channel_mult": [1, 2, 2], "sample_steps": 3}
LATENT = {"T": 20, "ae_width": 8, "base_channels": 16, "ae_steps": 2, "sample_steps": 3}


def _perturb(model, seed):
    """Replace the zero initialisation (eps = 0) by small random weights, so eps depends on x, t and y."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.05, p.data.shape)


def _batch(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8)
    return model.prepare_batch(images, rng.integers(0, 10, n))


def _train(model, optimizers, steps):
    """`steps` training steps on one fixed batch; their losses as float32."""
    batch = _batch(model)
    model.rng = np.random.default_rng(1)
    logs = [model.training_step(batch, optimizers) for _ in range(steps)]
    return np.array([l.get("loss", l.get("ae_loss")) for l in logs], np.float32)   # latent stage 1: ae_loss


def _sample(model, seed, **kwargs):
    model.rng = np.random.default_rng(seed)
    return model.sample(3, **kwargs).astype(np.float32)


def pinned_arrays():
    """Every pinned array, computed by the code as it is now."""
    from tinygen.models import build_model, load_model
    out = {}
    labels = [0, 1, 2]

    # the trained checkpoint: every sampler and guidance (its eps is no longer random, so few pixels clip)
    old, _ = load_model(OLD_CHECKPOINT, "ddpm")
    out["checkpoint_ddim"] = _sample(old, 1, label=labels, steps=3)
    out["checkpoint_ddim_cfg3"] = _sample(old, 1, label=labels, guidance=3.0, steps=3)
    out["checkpoint_ddim_null"] = _sample(old, 1, steps=3)
    out["checkpoint_ddim_eta1_cfg2"] = _sample(old, 2, label=labels, guidance=2.0, steps=5, eta=1.0)
    out["checkpoint_ancestral"] = _sample(old, 3, label=labels)
    out["checkpoint_ancestral_cfg2"] = _sample(old, 3, label=labels, guidance=2.0)
    out["checkpoint_ancestral_null"] = _sample(old, 3)

    clf = build_model("noisy_classifier", {"T": old.config.T, "base_channels": 8})
    _perturb(clf, 11)
    out["classifier_loss"] = _train(clf, {"main": optim.SGD(clf.parameters(), lr=0.05)}, 2)
    out["checkpoint_ddim_clf3"] = _sample(old, 4, label=labels, guidance=0.0, steps=3, classifier=clf,
                                          classifier_scale=3.0)
    out["checkpoint_ancestral_clf3"] = _sample(old, 4, label=labels, guidance=0.0, classifier=clf,
                                               classifier_scale=3.0)
    out["checkpoint_ddim_cfg2_clf1"] = _sample(old, 4, label=labels, guidance=2.0, steps=3, classifier=clf,
                                               classifier_scale=1.5)

    # fresh models, two SGD steps each: the losses (q_sample, label dropping) and sampling after them
    ddpm = build_model("ddpm", DDPM)
    _perturb(ddpm, 10)
    out["ddpm_loss"] = _train(ddpm, {"main": optim.SGD(ddpm.parameters(), lr=0.05)}, 2)
    out["ddpm_ddim_cfg3"] = _sample(ddpm, 5, label=labels, guidance=3.0, steps=3)
    out["ddpm_ancestral_cfg2"] = _sample(ddpm, 5, label=labels, guidance=2.0)

    plain = build_model("ddpm", {**DDPM, "num_classes": 0, "schedule": "cosine"})
    _perturb(plain, 12)
    out["plain_loss"] = _train(plain, {"main": optim.SGD(plain.parameters(), lr=0.05)}, 2)
    out["plain_ddim"] = _sample(plain, 6, steps=3)
    out["plain_ancestral"] = _sample(plain, 6)

    latent = build_model("latent_diffusion", LATENT)
    _perturb(latent, 13)
    out["latent_loss"] = _train(latent, {"ae": optim.SGD(latent.autoencoder.parameters(), lr=0.01),
                                         "main": optim.SGD(latent.net.parameters(), lr=0.05)}, 4)
    out["latent_std"] = latent.latent_std.copy()
    out["latent_ddim_cfg2"] = _sample(latent, 7, label=labels, guidance=2.0, steps=3)
    out["latent_ddim_null"] = _sample(latent, 7, steps=3)
    out["latent_ancestral"] = _sample(latent, 8, label=labels)
    return out


def _write_old_checkpoint():
    """A tiny class-conditional ddpm (T = 100) trained 300 Adam steps on MNIST (about 30 CPU seconds),
    as the trainer saves it."""
    import shutil
    import tempfile
    from tinygen.train import TrainOptions, Trainer, build_model
    model = build_model("ddpm", {"T": 100, "base_channels": 8, "channel_mult": [1, 2], "batch_size": 32,
                                 "lr": 3e-3, "sample_steps": 3})
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(model, TrainOptions(out=tmp, max_steps=300, progress=False, evaluate=False,
                                    checkpoint_every=10_000)).fit()
        shutil.copy(Path(tmp) / "last.npz", OLD_CHECKPOINT)


NAMES = ["checkpoint_ddim", "checkpoint_ddim_cfg3", "checkpoint_ddim_null", "checkpoint_ddim_eta1_cfg2",
         "checkpoint_ancestral", "checkpoint_ancestral_cfg2", "checkpoint_ancestral_null", "classifier_loss",
         "checkpoint_ddim_clf3", "checkpoint_ancestral_clf3", "checkpoint_ddim_cfg2_clf1",
         "ddpm_loss", "ddpm_ddim_cfg3", "ddpm_ancestral_cfg2", "plain_loss", "plain_ddim", "plain_ancestral",
         "latent_loss", "latent_std", "latent_ddim_cfg2", "latent_ddim_null", "latent_ancestral"]


@pytest.fixture(scope="module")
def fresh():
    return pinned_arrays()


@pytest.fixture(scope="module")
def stored():
    with np.load(PINNED) as f:
        return dict(f)


def test_every_pinned_array_is_computed(fresh, stored):
    assert sorted(fresh) == sorted(stored) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_samples_match_the_pinned_arrays(fresh, stored, name):
    assert fresh[name].shape == stored[name].shape
    np.testing.assert_allclose(fresh[name], stored[name], rtol=0, atol=ATOL, err_msg=name)


def test_the_pinned_samples_tell_the_settings_apart(stored):
    """Guards the test itself: guidance, the sampler and the condition each change the samples."""
    names = [n for n in stored if n.startswith("checkpoint_")]
    for i, a in enumerate(names):
        assert ((stored[a] > 0) & (stored[a] < 1)).mean() > 0.5, a     # mostly unclipped pixels
        for b in names[i + 1:]:
            assert np.abs(stored[a] - stored[b]).mean() > 1e-3, (a, b)


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    if not OLD_CHECKPOINT.exists():
        _write_old_checkpoint()
    np.savez_compressed(PINNED, **pinned_arrays())
    print(f"wrote {PINNED} ({PINNED.stat().st_size} bytes); checkpoint {OLD_CHECKPOINT.stat().st_size} bytes")
