"""Stable Diffusion (tinygen/models/stable_diffusion.py): cross-attention on the token outputs of a frozen
CLIP text encoder, the empty caption as the null condition, the latents scaled to unit variance, and the
CLIP stage named on the command line. A tiny untrained CLIP stands in for the trained one."""
import numpy as np
import pytest

from autograd import Tensor, no_grad
from tinygen import data, text
from tinygen.models import build_model, get_model_class, load_model, save_model
from tinygen.models.stable_diffusion import StableDiffusion


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stages")
    save_model(build_model("clip", get_model_class("clip").tiny_config), folder / "clip.npz")
    save_model(build_model("dvae", get_model_class("dvae").tiny_config), folder / "dvae.npz")
    ld = build_model("latent_diffusion", get_model_class("latent_diffusion").tiny_config)
    for p in ld.autoencoder.parameters():                          # not the weights a fresh model draws
        p.data[...] += 0.5
    save_model(ld, folder / "ld.npz")
    save_model(build_model("latent_diffusion", {**get_model_class("latent_diffusion").tiny_config, "ae_steps": 5}),
               folder / "ld-unfinished.npz")
    return folder


def build(stages, **overrides):
    model = build_model("stable_diffusion", {**StableDiffusion.tiny_config, "clip": str(stages / "clip.npz"),
                                             **overrides})
    rng = np.random.default_rng(0)
    # the U-Net's last conv and the transformer's W_out start at zero (eps = 0, and the caption unread):
    # give them weights so that inputs can be told apart
    for p in (model.net.out.weight, model.net.mid_attn.proj_out.weight):
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.1
    return model


def a_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), np.arange(n) % data.N_CLASSES


def eps_of(model, captions, seed=0):
    rng = np.random.default_rng(seed)
    z = Tensor(rng.standard_normal((len(captions), 4, 7, 7)).astype(np.float32))
    with no_grad():
        return model.eps_theta(z, np.full(len(captions), 3), model.caption_ids(captions)).numpy()


def test_clip_exposes_its_token_outputs(stages):
    clip = load_model(stages / "clip.npz", "clip")[0]
    texts = ["a thick digit seven", "a digit one", "a photo of a small digit two"]
    tokens = clip.encode_text_tokens(texts)                          # (3, L, text_dim)
    ids = clip.tokenizer.batch(texts)
    assert tokens.shape == (3, ids.shape[1], clip.config.text_dim)
    np.testing.assert_array_equal(clip.encode_text_tokens(ids), tokens)
    # the output at <end>, projected by W_t and normalised, is CLIP's text embedding
    eot = tokens[np.arange(3), clip.text_encoder.eot_positions(ids)]
    projected = eot @ clip.text_encoder.projection.weight.data.T
    np.testing.assert_allclose(projected / np.linalg.norm(projected, axis=1, keepdims=True),
                               clip.encode_text(texts), atol=1e-5)
    with pytest.raises(TypeError, match="one string"):
        clip.encode_text_tokens("a digit one")


def test_the_unet_cross_attends_to_the_frozen_clip_token_outputs(stages):
    model = build(stages)
    assert model.net.mid_attn.blocks[0].cross_attn.context_dim == model.clip.config.text_dim
    a, b = eps_of(model, ["a thick digit seven"] * 2), eps_of(model, ["a thin digit one"] * 2)
    assert not np.allclose(a, b)                                     # a caption changes eps
    # and the caption of one row never changes another row's eps
    np.testing.assert_allclose(eps_of(model, ["a thick digit seven", "a digit two"])[0],
                               eps_of(model, ["a thick digit seven", "a thin digit one"])[0], atol=1e-6)
    # eps reads CLIP's token outputs: other CLIP weights, other eps
    model.clip.text_encoder.token_embed.weight.data[...] *= 2
    assert not np.allclose(eps_of(model, ["a thick digit seven"] * 2), a)


def test_a_training_step_leaves_clip_as_trained(stages):
    model = build(stages)
    opts = model.configure_optimizers()
    trained = [p for o in opts.values() for g in o.param_groups for p in g["params"]]
    assert not any(p is q for p in trained for q in model.clip.parameters())
    clip_before = {n: p.data.copy() for n, p in model.clip.named_parameters()}
    net_before = {n: p.data.copy() for n, p in model.net.named_parameters()}
    for _ in range(2):
        logs = model.training_step(model.prepare_batch(*a_batch()), opts)
    assert np.isfinite(logs["loss"]) and model.stage == 2
    for n, p in model.clip.named_parameters():
        np.testing.assert_array_equal(p.data, clip_before[n], err_msg=n)
        assert p.grad is None and not p.requires_grad, n             # no gradient was even computed
    assert any(not np.array_equal(p.data, net_before[n]) for n, p in model.net.named_parameters())


def test_the_empty_caption_is_the_null_condition(stages):
    model = build(stages)
    np.testing.assert_array_equal(model.null_condition(3), model.clip.tokenizer.batch(["", "", ""]))
    ids = model.caption_ids(["a digit one"] * 4)
    np.testing.assert_array_equal(model.drop_condition(ids, 1.0, np.random.default_rng(0)), model.null_condition(4))
    np.testing.assert_array_equal(model.drop_condition(ids, 0.0, np.random.default_rng(0)), ids)
    assert 0.1 <= model.Config().p_uncond <= 0.2

    def draw(prompt, guidance):
        model.rng = np.random.default_rng(5)
        return model.sample(2, prompt=prompt, guidance=guidance, steps=2)
    # guidance 0 samples eps(z, ""): the prompt no longer matters
    np.testing.assert_array_equal(draw("a digit one", 0.0), draw("a thick digit seven", 0.0))
    assert not np.array_equal(draw("a digit one", 0.0), draw("a digit one", 3.0))


def test_latents_are_scaled_to_unit_variance_when_stage_two_starts(stages):
    model = build(stages, ae_steps=2)
    opts = model.configure_optimizers()
    images, labels = data.load_dataset("mnist", "test")
    batch = model.prepare_batch(images[:32], labels[:32])
    for _ in range(2):
        assert "ae_loss" in model.training_step(batch, opts)
    assert model.latent_std[0] == 1
    ae = {n: p.data.copy() for n, p in model.autoencoder.named_parameters()}
    assert "loss" in model.training_step(batch, opts)               # the first stage-2 step measures std(z)
    mu = model.autoencoder.encoder(Tensor(batch[0].numpy()))[0].numpy()
    assert model.latent_std[0] == pytest.approx(mu.std(), rel=1e-5) and model.latent_std[0] != 1
    z = model.encode(batch[0].numpy())                              # z' = mu / std(z)
    assert z.shape == (32, 4, 7, 7) and z.std() == pytest.approx(1.0, rel=1e-4)
    model.training_step(batch, opts)
    for n, p in model.autoencoder.named_parameters():               # frozen in stage 2
        np.testing.assert_array_equal(p.data, ae[n], err_msg=n)


def test_training_captions_leave_the_held_out_pairs_out(stages):
    model = build(stages)
    x, y = data.load_dataset("mnist", "test")
    _, ids = model.prepare_batch(x[:300], y[:300])
    held = set(text.HOLDOUT["mnist"])
    for row, label in zip(ids, y[:300]):
        assert not any((label, w) in held for w in model.tokenizer.decode(row).split())


def test_the_clip_stage_is_named_and_checked(stages, tmp_path):
    with pytest.raises(ValueError, match="--set clip=PATH.*python -m tinygen train clip"):
        build_model("stable_diffusion", StableDiffusion.tiny_config)
    with pytest.raises(ValueError, match="--set clip=.*nope.npz: no such checkpoint"):
        build_model("stable_diffusion", {**StableDiffusion.tiny_config, "clip": str(tmp_path / "nope.npz")})
    from tinygen.io import CheckpointError
    with pytest.raises(CheckpointError, match="holds a 'dvae' model, not 'clip'"):
        build_model("stable_diffusion", {**StableDiffusion.tiny_config, "clip": str(stages / "dvae.npz")})
    with pytest.raises(ValueError, match="num_classes must be 0"):
        build(stages, num_classes=10)
    model = build(stages)
    model.dataset = "fashion"
    with pytest.raises(ValueError, match="a CLIP of mnist, but stable_diffusion trains on fashion"):
        model.prepare_batch(*a_batch())


def test_a_checkpoint_loads_where_the_clip_file_is_not(stages, tmp_path):
    import shutil
    shutil.copy(stages / "clip.npz", tmp_path / "clip.npz")
    model = build_model("stable_diffusion", {**StableDiffusion.tiny_config, "clip": str(tmp_path / "clip.npz")})
    save_model(model, tmp_path / "sd.npz")
    (tmp_path / "clip.npz").unlink()                                 # the stage moved away
    loaded, _ = load_model(tmp_path / "sd.npz", "stable_diffusion")
    for k, v in model.clip.state_dict().items():
        np.testing.assert_array_equal(loaded.clip.state_dict()[k], v)   # the weights came with the checkpoint
    loaded.rng, model.rng = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(loaded.sample(2, prompt="a digit one", steps=2),
                                  model.sample(2, prompt="a digit one", steps=2))


def test_stage_one_can_come_from_a_latent_diffusion_run(stages, tmp_path):
    import shutil
    shutil.copy(stages / "ld.npz", tmp_path / "ld.npz")
    model = build(stages, ae_steps=50, autoencoder=str(tmp_path / "ld.npz"))
    ld = load_model(tmp_path / "ld.npz", "latent_diffusion")[0]
    for k, v in ld.autoencoder.state_dict().items():
        np.testing.assert_array_equal(model.autoencoder.state_dict()[k], v, err_msg=k)
    assert model.config.ae_steps == 0 and model.config.autoencoder_loaded
    logs = model.training_step(model.prepare_batch(*a_batch()), model.configure_optimizers())
    assert "loss" in logs and model.latent_std[0] != 1               # stage 2 from the first step
    save_model(model, tmp_path / "sd.npz")
    (tmp_path / "ld.npz").unlink()                                  # the stage moved away: the checkpoint has it
    loaded, _ = load_model(tmp_path / "sd.npz", "stable_diffusion")
    for k, v in ld.autoencoder.state_dict().items():  # (the EMA of a constant, up to float32 rounding)
        np.testing.assert_allclose(loaded.autoencoder.state_dict()[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    with pytest.raises(ValueError, match="has trained 0 of its 5 steps"):
        build(stages, autoencoder=str(stages / "ld-unfinished.npz"))
    with pytest.raises(ValueError, match="ae_width=4, this model 8 \\(--set ae_width=4\\)"):
        build(stages, ae_width=8, autoencoder=str(stages / "ld.npz"))
    from tinygen.io import CheckpointError
    with pytest.raises(CheckpointError, match="holds a 'clip' model, not 'latent_diffusion'"):
        build(stages, autoencoder=str(stages / "clip.npz"))


# ---------------------------------------------------------------------- from the command line
def test_missing_stages_and_bad_prompts_are_one_line_errors(stages, tmp_path, one_line_error):
    from tinygen.__main__ import main
    checkpoint = tmp_path / "sd.npz"
    save_model(build(stages), checkpoint)
    base = ["sample", "stable_diffusion", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.npz")]
    assert "'purple' in 'a purple digit' is not in the vocabulary" in one_line_error(main, base + ["--prompt", "a purple digit"])
    assert "the prompt is empty" in one_line_error(main, base + ["--prompt", " "])
    assert "takes no --label" in one_line_error(main, base + ["--label", "3"])
    assert main(base + ["--prompt", "a thick digit seven", "--n", "3", "--guidance", "3", "--steps", "2"]) == 0
    from tinygen import io
    arrays, meta = io.load_checkpoint(tmp_path / "s.npz")
    assert arrays["images"].shape == (3, 1, 28, 28) and meta["prompt"] == "a thick digit seven"
    train = ["train", "stable_diffusion", "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert "--set clip=PATH" in one_line_error(main, train)
    assert "no such checkpoint" in one_line_error(main, train + ["--set", f"clip={tmp_path / 'none.npz'}"])
    assert "--set autoencoder=" in one_line_error(main, train + ["--set", f"clip={stages / 'clip.npz'}", "--set",
                                                       f"autoencoder={tmp_path / 'none.npz'}"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_prompt_benchmark_takes_a_stable_diffusion_checkpoint(stages, tmp_path, capsys):
    import json
    from tinygen.evaluate import main as evaluate_main
    checkpoint = tmp_path / "sd.npz"
    save_model(build(stages), checkpoint)
    assert evaluate_main(["prompts", "--checkpoint", str(checkpoint), "--n-per-prompt", "2", "--guidance", "3",
                          "--steps", "2"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["model"] == "stable_diffusion" and row["images"] == 10 * 10 + 90 * 2 and row["guidance"] == 3
    assert evaluate_main(["prompts", "--checkpoint", str(checkpoint), "--n-per-prompt", "2", "--steps", "1",
                          "--by-prompt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "by_prompt" not in json.loads(out[0]) and len(json.loads(out[1])["by_prompt"]) == 90
    assert any(line.startswith("| label | attribute | word | heldout | agreement") for line in out)
