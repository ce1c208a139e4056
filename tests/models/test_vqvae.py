"""VQ-VAE: shapes of the code interface, the straight-through gradient, the two training stages (the
autoencoder first, then the prior on frozen codes), a causal prior over the code grid, sampling from it,
evaluation, and train / sample / evaluate from the command line."""
import json

import numpy as np
import pytest

from autograd import Tensor
from tinygen import data
from tinygen.__main__ import main
from tinygen.models import load_model
from tinygen.models.pixelcnn import draw_categorical
from tinygen.train import build_model

TINY = {"width": 8, "num_codes": 16, "code_dim": 4, "prior_channels": 8, "prior_blocks": 1, "prior_kernel": 3,
        "prior_embed": 4, "prior_head": 16, "batch_size": 16, "vq_steps": 30, "dead_after": 5}


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", "test")


def tiny(**overrides):
    model = build_model("vqvae", {**TINY, **overrides})
    model.rng = np.random.default_rng(0)
    return model


def test_bad_inputs_are_refused_by_name():
    model = tiny()
    with pytest.raises(ValueError, match="VQVAE.encode.*28"):
        model.encode(np.zeros((2, 1, 14, 14), np.float32))
    with pytest.raises(ValueError, match="VQVAE.decode.*0..15"):
        model.decode(np.full((2, 7, 7), 16))
    with pytest.raises(ValueError, match="VQVAE.decode.*shape"):
        model.decode(np.zeros((2, 49), np.int64))
    with pytest.raises(ValueError, match="CodePixelCNN.*0..15"):
        model.prior(np.full((1, 7, 7), -1))
    with pytest.raises(ValueError, match="width"):
        tiny(width=6)


def test_encode_decode_shapes(mnist):
    model = tiny()
    k = model.encode(mnist[0][:5])                                   # uint8 is scaled to [0, 1] first
    assert k.shape == (5, 7, 7) and k.dtype == np.int64 and 0 <= k.min() and k.max() < 16
    np.testing.assert_array_equal(k, model.encode(data.to_float(mnist[0][:5])))
    x = model.decode(k)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert model.reconstruct(mnist[0][:5]).shape == (5, 1, 28, 28)
    assert model.prior(k).shape == (5, 16, 7, 7)


def test_straight_through_gradient_reaches_the_encoder(mnist):
    model = tiny()
    model.train()
    x = Tensor(data.to_float(mnist[0][:8]))
    loss, _ = model.vq_loss(x)
    loss.backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.encoder.parameters())
    # only through z_q = z_e + sg(e_k - z_e) does the decoder's error reach the encoder: take the
    # reconstruction term alone and the encoder still gets a gradient
    model.zero_grad()
    q = model.quantizer(model.encoder(x))
    ((model.decoder(q.z_q) - x) ** 2).mean().backward()
    assert np.abs(model.encoder.net[0].weight.grad).sum() > 0


def test_stage_one_then_stage_two_on_frozen_codes(mnist):
    model = tiny(lr=1e-2)
    opts = model.configure_optimizers()
    batch = model.prepare_batch(mnist[0][:64], mnist[1][:64])
    logs = [model.training_step(batch, opts) for _ in range(30)]
    assert model.stage == 2 and all("vq_loss" in l for l in logs)
    assert logs[-1]["vq_loss"] < 0.7 * logs[0]["vq_loss"], [l["vq_loss"] for l in logs]
    assert logs[-1]["mse"] < logs[0]["mse"]
    frozen = {n: v.copy() for n, v in model.state_dict().items() if not n.startswith("prior.") and n != "steps_done"}
    losses = [model.training_step(batch, opts)["loss"] for _ in range(30)]
    assert losses[-1] < 0.85 * losses[0], losses                  # nats per grid fall on a fixed batch
    state = model.state_dict()
    for n, v in frozen.items():                                  # encoder, decoder and codebook untouched
        np.testing.assert_array_equal(state[n], v, err_msg=n)


GPT = {"prior_arch": "gpt", "prior_dim": 8, "prior_depth": 2, "prior_heads": 2}


@pytest.mark.parametrize("prior", [{"prior_blocks": 2}, GPT], ids=["gated", "gpt"])
def test_the_prior_is_causal_over_the_code_grid(prior):
    """Changing code q changes no logit at positions <= q (raster order), and some later logit."""
    model = tiny(**prior)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 16, size=(7, 7))
    grids = np.repeat(base[None], 49, axis=0)                     # grid q: code q changed
    q = np.arange(49)
    grids[q, q // 7, q % 7] = (base.ravel() + 1 + rng.integers(0, 15, 49)) % 16
    with_change = model.prior(grids).numpy()                     # (49, K, 7, 7)
    without = model.prior(base[None]).numpy()                    # (1, K, 7, 7)
    moved = np.abs(with_change - without).max(axis=1).reshape(49, 49) > 1e-6   # [q, position]
    order = np.arange(49)
    assert not moved[order[:, None] >= order[None, :]].any()     # positions <= q never move
    assert moved[:48].any(axis=1).all()                          # every code but the last reaches a later one


@pytest.mark.parametrize("prior", [{}, GPT], ids=["gated", "gpt"])
def test_samples_are_decoded_prior_samples_and_follow_forced_logits(prior):
    model = tiny(**prior)
    head = model.prior.head if prior else model.prior.net.head.out
    head.weight.data[...] = 0.0
    head.bias.data[...] = -1e4
    head.bias.data[5] = 0.0                                      # the prior puts all its mass on code 5
    codes = model.sample_codes(3)
    assert codes.shape == (3, 7, 7) and (codes == 5).all()
    x = model.sample(3)
    np.testing.assert_allclose(x, model.decode(np.full((3, 7, 7), 5)))
    assert model.sample_codes(0).shape == (0, 7, 7)


def test_the_gpt_prior_samples_through_its_cache_what_its_full_pass_gives():
    """Each code drawn with the KV cache is the code the full (B, K, H, W) forward pass of the finished
    grid gives at that position with the same uniform: the cached and the full pass agree."""
    model = tiny(**GPT)
    model.eval()
    with_cache = model.prior.sample(4, (7, 7), np.random.default_rng(3))          # (4, 7, 7)
    logits = model.prior(with_cache).numpy().reshape(4, 16, 49)                   # position i sees codes < i
    rng, redrawn = np.random.default_rng(3), np.zeros((4, 49), np.int64)
    for t in range(49):
        redrawn[:, t] = draw_categorical(logits[:, :, t], rng.random((4, 1)))
    np.testing.assert_array_equal(redrawn.reshape(4, 7, 7), with_cache)
    assert len(np.unique(with_cache)) > 4                                         # an untrained prior draws many codes


def test_the_gpt_prior_learns_and_is_refused_on_a_wrong_grid(mnist):
    model = tiny(**GPT, lr=1e-2, vq_steps=1)
    model.steps_done[0] = 1                                      # stage 2: the prior on (untrained) codes
    opts = model.configure_optimizers()
    batch = model.prepare_batch(mnist[0][:32], mnist[1][:32])
    losses = [model.training_step(batch, opts)["loss"] for _ in range(20)]
    assert losses[-1] < 0.85 * losses[0], losses
    with pytest.raises(ValueError, match="CodeGPT.*49"):
        model.prior(np.zeros((1, 6, 6), np.int64))
    with pytest.raises(ValueError, match="CodeGPT.*0..15"):
        model.prior(np.full((1, 7, 7), 16))
    with pytest.raises(ValueError, match="prior_arch 'lstm'.*gpt"):
        tiny(prior_arch="lstm")


def test_evaluate_reports_reconstruction_codebook_and_prior(mnist):
    model = tiny()
    out = model.evaluate(mnist[0][:50])
    assert out.keys() == {"test_recon_mse", "test_perplexity", "test_codes_used", "test_prior_bits_per_grid"}
    k = model.encode(mnist[0][:50])
    assert out["test_codes_used"] == len(np.unique(k)) and 1 <= out["test_perplexity"] <= out["test_codes_used"]
    mse = ((model.decode(k) - data.to_float(mnist[0][:50])) ** 2).mean()
    assert out["test_recon_mse"] == pytest.approx(mse, rel=1e-5)
    bits = model.prior.nll(k).numpy().mean() / np.log(2)
    assert out["test_prior_bits_per_grid"] == pytest.approx(bits, rel=1e-5)
    # an untrained prior is close to uniform: about 49 log2(K) bits per grid
    assert abs(out["test_prior_bits_per_grid"] - 49 * 4) < 49


def test_train_sample_and_evaluate_from_the_command_line(tmp_path, capsys):
    tiny_set = [x for k, v in TINY.items() if k != "batch_size" for x in ("--set", f"{k}={v}")]
    main(["train", "vqvae", "--max-steps", "33", "--out", str(tmp_path / "run"), "--no-progress",
          "--batch-size", "16", *tiny_set])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 33 and summary["test_codes_used"] >= 2
    loaded, _ = load_model(tmp_path / "run/last.npz", "vqvae")
    assert loaded.stage == 2
    main(["sample", "vqvae", "--checkpoint", str(tmp_path / "run/last.npz"), "--n", "4",
          "--out", str(tmp_path / "s.npz")])
    assert "saved 4 samples" in capsys.readouterr().out
    main(["evaluate", "vqvae", "--checkpoint", str(tmp_path / "run/last.npz"), "--n", "20"])
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 20 and result["fid_judge"] > 0 and 0 <= result["class_coverage"] <= np.log(10) + 1e-9
    assert result["test_codes_used"] >= 2 and result["test_prior_bits_per_grid"] > 0


def test_save_pictures(tmp_path, mnist):
    model = tiny()
    model.save_pictures(mnist[0][:100], tmp_path / "r.png", tmp_path / "s.png", tmp_path / "c.png")
    assert all((tmp_path / f).stat().st_size > 100 for f in ("r.png", "s.png", "c.png"))
