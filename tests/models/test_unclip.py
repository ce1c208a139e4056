"""unCLIP (tinygen/models/unclip.py): the prior is a diffusion model over (B, D) vectors that predicts x_0,
the embeddings are CLIP's at norm sqrt(D), the decoder's null condition is the zero vector, CLIP stays as
trained, the prior's candidates, decoding from the text embedding, variations and interpolation, the
stage named on the command line, and the commands. A tiny untrained CLIP stands in for the trained one."""
import json
import math

import numpy as np
import pytest

from autograd import Tensor, no_grad
from tinygen import data, io
from tinygen.models import build_model, get_model_class, load_model, save_model, set_sample_settings
from tinygen.models.unclip import UnCLIP, slerp

SEVEN, TWO = "a thick digit seven", "a small digit two"


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stages")
    save_model(build_model("clip", get_model_class("clip").tiny_config), folder / "clip.npz")
    return folder


def build(stages, **overrides):
    model = build_model("unclip", {**UnCLIP.tiny_config, "clip": str(stages / "clip.npz"), **overrides})
    rng = np.random.default_rng(0)
    # the U-Net's last conv starts at zero (eps = 0 for every input): give it weights to tell inputs apart
    out = model.net.unet.out.weight
    out.data[...] = rng.standard_normal(out.shape).astype(np.float32) * 0.1
    return model


def first_test_images(n=4):
    x, y = data.load_dataset("mnist", "test")
    return x[:n], y[:n]


# ---------------------------------------------------------------------- the prior
def test_the_prior_diffuses_vectors_and_predicts_x0(stages):
    model = build(stages)
    D, T = model.D, model.config.prior_T
    x, y = first_test_images()
    _, ids, z = model.prepare_batch(x, y)
    assert z.shape == (4, D) and model.prior_diffusion.clip_x0 is False          # (B, D), no [-1, 1] clip
    with no_grad():
        out = model.prior_x0(z, np.full(4, T - 1), ids)
    assert out.shape == (4, D)
    # the loss is |z - x0_theta|^2: a network that returns the clean embedding itself has loss 0
    model.prior_x0 = lambda z_t, t, y: Tensor(z)
    assert model.prior_loss(z, ids).item() == 0.0
    # sampling through eps = (z_t - sqrt(abar) x0) / sqrt(1 - abar) ends at the x0 the network predicts
    target = z[:1]
    model.prior_x0 = lambda z_t, t, y: Tensor(np.repeat(target, len(z_t), axis=0))
    np.testing.assert_allclose(model.prior_sample([SEVEN, TWO]), np.repeat(target, 2, axis=0), rtol=1e-5, atol=1e-5)


def test_a_round_trip_at_t0_returns_the_input(stages):
    """z -> z_0 = q_sample(z, 0) -> x0_theta -> eps -> x0_hat: the sampler's x0_hat is the prediction, and
    the input barely moved at t = 0."""
    model = build(stages)
    d = model.prior_diffusion
    x, y = first_test_images()
    _, ids, z = model.prepare_batch(x, y)
    t = np.zeros(4, int)
    noise = np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)
    z_0 = d.q_sample(z, t, noise)
    assert np.abs(z_0 - z).max() <= d.sqrt_one_minus_abar[0] * np.abs(noise).max() + 1e-5
    with no_grad():
        x0_fn = lambda z_t, t, y: model.prior_x0(z_t, t, y).numpy()
        eps = d.eps_fn_from_x0(x0_fn)(z_0, t, ids)
        np.testing.assert_allclose(d.predict_x0(z_0, t, eps), x0_fn(z_0, t, ids), rtol=1e-5, atol=1e-5)
    # an oracle x0 at t = 0 gives the input back exactly
    np.testing.assert_allclose(d.predict_x0(z_0, t, d.eps_fn_from_x0(lambda *a: z)(z_0, t, None)), z, atol=1e-5)


def test_embeddings_are_at_norm_sqrt_d(stages):
    model = build(stages)
    D, x = model.D, first_test_images()[0]
    root = math.sqrt(D)
    z_img = model.prepare_batch(x, np.arange(4))[2]
    np.testing.assert_allclose(np.linalg.norm(z_img, axis=1), root, rtol=1e-5)
    np.testing.assert_allclose(z_img / root, model.clip.encode_image(x), atol=1e-6)   # CLIP's direction
    z_text = model.text_embedding([SEVEN, TWO])
    np.testing.assert_allclose(np.linalg.norm(z_text, axis=1), root, rtol=1e-5)
    np.testing.assert_allclose(z_text / root, model.clip.encode_text([SEVEN, TWO]), atol=1e-5)
    model.rng = np.random.default_rng(0)
    np.testing.assert_allclose(np.linalg.norm(model.prior_sample([SEVEN, TWO, TWO]), axis=1), root, rtol=1e-5)


def test_the_prior_keeps_the_candidate_nearest_the_text(stages):
    model = build(stages, prior_candidates=3)
    prompts = [SEVEN, TWO]
    model.rng = np.random.default_rng(4)
    kept = model.prior_sample(prompts)
    model.config.prior_candidates = 1
    model.rng = np.random.default_rng(4)                                # the same draws, one caption each
    drawn = model.prior_sample(list(np.repeat(prompts, 3))).reshape(2, 3, -1)
    best = np.einsum("nkd,nd->nk", drawn, model.text_embedding(prompts)).argmax(axis=1)
    np.testing.assert_allclose(kept, drawn[np.arange(2), best], atol=1e-6)
    assert not np.allclose(drawn[:, 0], drawn[:, 1])                    # the candidates differ


def test_the_empty_caption_is_the_priors_null_condition(stages):
    model = build(stages)
    ids = model.caption_ids([SEVEN] * 3)
    np.testing.assert_array_equal(model.null_ids(3), model.tokenizer.batch(["", "", ""]))
    model.config.p_uncond_prior = 1.0
    seen = []
    model.prior_x0 = lambda z_t, t, y: (seen.append(np.asarray(y)), Tensor(np.zeros(z_t.shape, np.float32)))[1]
    model.prior_loss(np.ones((3, model.D), np.float32), ids)
    np.testing.assert_array_equal(seen[0], model.null_ids(3))


# ---------------------------------------------------------------------- the decoder
def eps_of(model, z, seed=0):
    x = Tensor(np.random.default_rng(seed).standard_normal((len(z), 1, 28, 28)).astype(np.float32))
    with no_grad():
        return model.eps_theta(x, np.full(len(z), 3), z).numpy()


def test_the_embedding_reaches_the_decoder_both_ways_and_zero_is_its_null(stages):
    model = build(stages)
    z = model.image_embedding(first_test_images(2)[0])
    assert not np.allclose(eps_of(model, z[:1]), eps_of(model, z[1:]))
    model.net.embed_proj.weight.data[...] = 0                          # without the time-embedding path,
    assert not np.allclose(eps_of(model, z[:1]), eps_of(model, z[1:]))   # the context tokens still reach eps
    np.testing.assert_array_equal(model.null_condition(2), np.zeros((2, model.D), np.float32))
    np.testing.assert_array_equal(model.drop_condition(z, 1.0, np.random.default_rng(0)), model.null_condition(2))
    np.testing.assert_array_equal(model.drop_condition(z, 0.0, np.random.default_rng(0)), z)
    # guidance 0 decodes eps(x, 0): the embedding no longer matters
    def draw(which, guidance):
        model.rng = np.random.default_rng(5)
        return model.decode(np.repeat(z[which:which + 1], 2, axis=0), guidance=guidance, steps=2)
    np.testing.assert_array_equal(draw(0, 0.0), draw(1, 0.0))
    assert not np.array_equal(draw(0, 0.0), draw(0, 3.0))


def test_a_training_step_leaves_clip_as_trained(stages):
    model = build(stages)
    model.rng = np.random.default_rng(0)
    clip_before = {k: v.copy() for k, v in model.clip.state_dict().items()}
    rest_before = {k: v.copy() for k, v in model.state_dict().items() if not k.startswith("clip.")}
    optimizers = model.configure_optimizers()
    x, y = first_test_images(8)
    logs = model.training_step(model.prepare_batch(x, y), optimizers)
    assert {"loss", "prior", "decoder", "grad_norm_prior", "grad_norm_decoder"} <= set(logs)
    assert logs["loss"] == pytest.approx(logs["prior"] + logs["decoder"], rel=1e-5)
    for k, v in model.clip.state_dict().items():
        np.testing.assert_array_equal(v, clip_before[k], err_msg=f"clip.{k} changed")
    optimized = {id(p) for g in optimizers["main"].param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in model.clip.parameters())
    after = model.state_dict()
    for part in ("prior.", "net."):                                    # both networks trained in the one step
        assert any(not np.array_equal(after[k], v) for k, v in rest_before.items() if k.startswith(part)), part
    for k, v in model.clip.named_parameters():                         # and the EMA keeps CLIP exact
        np.testing.assert_array_equal(model.ema.shadow[f"clip.{k}"], v.data)


# ---------------------------------------------------------------------- what it draws
def test_decoding_from_the_text_embedding(stages):
    model = build(stages)
    model.rng = np.random.default_rng(2)
    from_text = model.sample(2, [SEVEN, TWO], steps=2, decode_from="text")
    model.rng = np.random.default_rng(2)
    np.testing.assert_array_equal(from_text, model.decode(model.text_embedding([SEVEN, TWO]), steps=2))
    model.rng = np.random.default_rng(2)
    assert not np.array_equal(from_text, model.sample(2, [SEVEN, TWO], steps=2))      # the prior's z differs
    assert set_sample_settings(model, {"decode_from": "text", "prior_candidates": 1}) == \
        {"decode_from": "text", "prior_candidates": 1}
    model.rng = np.random.default_rng(2)
    np.testing.assert_array_equal(model.sample(2, [SEVEN, TWO], steps=2), from_text)
    with pytest.raises(ValueError, match="decode_from=image: valid: prior, text"):
        set_sample_settings(model, {"decode_from": "image"})
    with pytest.raises(ValueError, match="base_channels: not a sampling setting of unclip"):
        set_sample_settings(model, {"base_channels": 8})
    with pytest.raises(ValueError, match="prior_steps=9: .* 1..5"):
        set_sample_settings(model, {"prior_steps": 9})
    with pytest.raises(ValueError, match="empty"):
        model.sample(2, prompt=" ")


def test_variations_and_interpolation(stages):
    model = build(stages)
    x = data.to_float(first_test_images(4)[0])
    model.rng = np.random.default_rng(0)
    varied = model.vary(x[:3], 4, steps=2)
    assert varied.shape == (12, 1, 28, 28) and 0 <= varied.min() and varied.max() <= 1
    assert not np.array_equal(varied[0], varied[1])                    # several draws of one embedding
    model.rng = np.random.default_rng(7)
    rows = model.interpolate(x[:2], x[2:4], frames=5, steps=2)
    assert rows.shape == (2, 5, 1, 28, 28)
    model.rng = np.random.default_rng(7)                               # frame 0 is image a's embedding decoded
    np.testing.assert_allclose(rows[:, 0], model.vary(x[:2], 1, steps=2), atol=1e-6)
    model.rng = np.random.default_rng(7)                               # with the noise every frame shares
    np.testing.assert_allclose(rows[:, -1], model.vary(x[2:4], 1, steps=2), atol=1e-6)
    a, b = model.image_embedding(x[:2]), model.image_embedding(x[2:4])
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-5)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    np.testing.assert_allclose(np.linalg.norm(mid, axis=1), math.sqrt(model.D), rtol=1e-5)   # on the sphere
    cos = lambda u, v: (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(np.arccos(cos(a, mid)), np.arccos(cos(a, b)) / 2, atol=1e-4)   # half the angle


def test_the_pictures(stages, tmp_path):
    from PIL import Image
    model = build(stages)
    names = ["grid", "variations", "interpolation", "text"]
    model.save_pictures(first_test_images(8)[0], *(tmp_path / f"{n}.png" for n in names), steps=2)
    cells = {n: tuple(s // 60 for s in Image.open(tmp_path / f"{n}.png").size) for n in names}   # 2 (28 + 2) a cell
    assert cells == {"grid": (8, 20), "variations": (8, 8), "interpolation": (10, 4), "text": (8, 10)}, cells


def test_the_stage_is_named_on_the_command_line(stages, tmp_path):
    with pytest.raises(ValueError, match="--set clip=PATH.*python -m tinygen train clip"):
        build_model("unclip", UnCLIP.tiny_config)
    with pytest.raises(ValueError, match="--set clip=.*nope.npz: no such checkpoint"):
        build_model("unclip", {**UnCLIP.tiny_config, "clip": str(tmp_path / "nope.npz")})
    model = build(stages)
    model.dataset = "fashion"
    with pytest.raises(ValueError, match="a CLIP of mnist, but unclip trains on fashion"):
        model.prepare_batch(*first_test_images())


def test_a_checkpoint_loads_where_the_clip_file_is_not(stages, tmp_path):
    import shutil
    shutil.copy(stages / "clip.npz", tmp_path / "clip.npz")
    model = build_model("unclip", {**UnCLIP.tiny_config, "clip": str(tmp_path / "clip.npz")})
    save_model(model, tmp_path / "unclip.npz")
    (tmp_path / "clip.npz").unlink()
    loaded, _ = load_model(tmp_path / "unclip.npz", "unclip")
    for k, v in model.clip.state_dict().items():
        np.testing.assert_array_equal(loaded.clip.state_dict()[k], v)
    loaded.rng, model.rng = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(loaded.sample(2, prompt=SEVEN, steps=2), model.sample(2, prompt=SEVEN, steps=2))


# ---------------------------------------------------------------------- from the command line
@pytest.fixture(scope="module")
def checkpoint(stages):
    path = stages / "unclip.npz"
    save_model(build(stages), path)
    return path


def test_the_commands_and_their_one_line_errors(stages, checkpoint, tmp_path, one_line_error):
    from tinygen.__main__ import main
    train = ["train", "unclip", "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert "--set clip=PATH; `python -m tinygen train clip`" in one_line_error(main, train)
    assert "no such checkpoint" in one_line_error(main, train + ["--set", f"clip={tmp_path / 'none.npz'}"])
    base = ["sample", "unclip", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.npz"), "--steps", "2"]
    assert "'purple' in 'a purple digit' is not in the vocabulary" in one_line_error(main, base + ["--prompt", "a purple digit"])
    assert "the prompt is empty" in one_line_error(main, base + ["--prompt", " "])
    assert "not a sampling setting of unclip" in one_line_error(main, base + ["--prompt", SEVEN, "--set", "T=3"])
    assert main(base + ["--prompt", SEVEN, "--n", "3", "--set", "decode_from=text"]) == 0
    arrays, meta = io.load_checkpoint(tmp_path / "s.npz")
    assert arrays["images"].shape == (3, 1, 28, 28) and meta["decode_from"] == "text"

    vary = ["vary", "unclip", "--checkpoint", str(checkpoint), "--n", "3"]
    assert main(vary + ["--image", "3", "--steps", "2", "--out", str(tmp_path / "v.npz")]) == 0
    assert io.load_checkpoint(tmp_path / "v.npz")[0]["images"].shape == (3, 1, 28, 28)
    assert main(vary + ["--image", "3", "--steps", "2", "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").stat().st_size > 0
    assert "images 0..9999" in one_line_error(main, vary + ["--image", "10000", "--steps", "2", "--out", str(tmp_path / "w.png")])
    assert "T = 5" in one_line_error(main, vary + ["--image", "3", "--steps", "9", "--out", str(tmp_path / "w.png")])
    assert not (tmp_path / "w.png").exists()
    glide = tmp_path / "glide.npz"
    save_model(build_model("glide", get_model_class("glide").tiny_config), glide)
    assert "does not make variations" in one_line_error(main, ["vary", "glide", "--checkpoint", str(glide), "--image", "0",
                                                     "--out", str(tmp_path / "w.png")])


def test_the_prior_and_variation_measurements(checkpoint, capsys):
    from tinygen.evaluate import main as evaluate_main
    assert evaluate_main(["prior", "--checkpoint", str(checkpoint), "--n-per-prompt", "1",
                          "--set", "prior_candidates=1"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["embeddings"] == 100 and row["prior_candidates"] == 1
    for key in ("prior_class_cosine", "prior_random_cosine", "text_class_cosine", "text_random_cosine",
                "image_class_cosine", "image_random_cosine"):
        assert -1 <= row[key] <= 1, key
    assert 0 <= row["prior_class_top1"] <= 1 and row["image_class_cosine"] > row["image_random_cosine"]
    assert evaluate_main(["variations", "--checkpoint", str(checkpoint), "--n", "3", "--per-image", "2",
                          "--steps", "2"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["n"] == 3 and 0 <= row["class_accuracy"] <= 1
    assert all(0 <= row[f"{k}_{a}"] <= 1 for k in ("agreement", "base") for a in ("thickness", "size", "slant"))


@pytest.mark.slow
def test_the_prompt_benchmark_measures_both_rows(checkpoint, capsys):
    from tinygen.evaluate import main as evaluate_main
    for source in ("prior", "text"):
        assert evaluate_main(["prompts", "--checkpoint", str(checkpoint), "--n-per-prompt", "2", "--steps", "2",
                              "--set", f"decode_from={source}"]) == 0
        row = json.loads(capsys.readouterr().out.splitlines()[0])
        assert row["decode_from"] == source and row["images"] == 10 * 10 + 90 * 2
