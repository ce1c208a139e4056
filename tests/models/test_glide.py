"""GLIDE (tinygen/models/glide.py): the caption reaches eps through the attention layers and the time
embedding, the empty caption is the null condition of classifier-free guidance, and editing keeps the
region it was told to keep. Tiny untrained networks, their output layer made non-zero where it matters."""
import numpy as np
import pytest

from autograd import Tensor, no_grad
from tinygen import data, text
from tinygen.models import build_model
from tinygen.models.glide import GLIDE, region


def build(**overrides):
    model = build_model("glide", {**GLIDE.tiny_config, **overrides})
    rng = np.random.default_rng(0)
    # the U-Net's last conv starts at zero (eps = 0 for every input): give it weights to tell inputs apart
    model.net.out.weight.data[...] = rng.standard_normal(model.net.out.weight.shape).astype(np.float32) * 0.1
    return model


def eps_of(model, captions, seed=0):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((len(captions), 1, 28, 28)).astype(np.float32))
    with no_grad():
        return model.eps_theta(x, np.full(len(captions), 3), model.caption_ids(captions)).numpy()


def test_a_caption_changes_eps_through_both_paths():
    model = build()
    a, b = eps_of(model, ["a thick digit seven"] * 2), eps_of(model, ["a thin digit one"] * 2)
    assert not np.allclose(a, b)
    # without the final-token path (W_f zeroed) the tokens in the attention layer still change eps
    model.text_encoder.projection.weight.data[...] = 0
    a, b = eps_of(model, ["a thick digit seven"] * 2), eps_of(model, ["a thin digit one"] * 2)
    assert not np.allclose(a, b)
    # and the caption of one row never changes another row's eps
    np.testing.assert_allclose(eps_of(model, ["a thick digit seven", "a digit two"])[0],
                               eps_of(model, ["a thick digit seven", "a thin digit one"])[0], atol=1e-6)


def test_the_empty_caption_is_the_null_condition():
    model = build()
    np.testing.assert_array_equal(model.null_condition(3), model.tokenizer.batch(["", "", ""]))
    ids = model.caption_ids(["a digit one"] * 4)
    np.testing.assert_array_equal(model.drop_condition(ids, 1.0, np.random.default_rng(0)), model.null_condition(4))
    np.testing.assert_array_equal(model.drop_condition(ids, 0.0, np.random.default_rng(0)), ids)
    # guidance 0 samples eps(x, ""): the prompt no longer matters
    def draw(prompt, guidance):
        model.rng = np.random.default_rng(5)
        return model.sample(2, prompt=prompt, guidance=guidance, steps=2)
    np.testing.assert_array_equal(draw("a digit one", 0.0), draw("a thick digit seven", 0.0))
    assert not np.array_equal(draw("a digit one", 0.0), draw("a digit one", 3.0))


def test_training_captions_leave_the_held_out_pairs_out():
    model = build()
    x, y = data.load_dataset("mnist", "test")
    _, ids = model.prepare_batch(x[:300], y[:300])
    captions = [model.tokenizer.decode(row) for row in ids]
    held = set(text.HOLDOUT["mnist"])
    names = text.label_phrases("mnist")
    for caption, label in zip(captions, y[:300]):
        assert caption.endswith(names[label]) or " on the " in caption or " up" in caption or " down" in caption
        assert not any((label, w) in held for w in caption.split())


@pytest.mark.parametrize("mask", ["lower", "left", "box"])
def test_edit_keeps_the_region_outside_the_mask(mask):
    model = build()
    x, _ = data.load_dataset("mnist", "test")
    model.rng = np.random.default_rng(0)
    edited = model.edit(x[:3], mask, "a digit one", guidance=3.0, steps=3)
    redraw = region(mask)
    original = data.to_float(x[:3])
    assert edited.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(np.where(redraw, 0, edited), np.where(redraw, 0, original), atol=1e-6)
    assert np.abs(edited - original)[:, redraw].mean() > 0.01      # and the masked region was redrawn
    with pytest.raises(ValueError, match="valid masks are"):
        region("middle")


def test_glide_refuses_labels_and_bad_prompts():
    with pytest.raises(ValueError, match="num_classes must be 0"):
        build_model("glide", {**GLIDE.tiny_config, "num_classes": 10})
    with pytest.raises(ValueError, match="empty"):
        build().sample(2, prompt="")


def test_edit_from_the_command_line(tmp_path, capsys):
    from tinygen import io
    from tinygen.__main__ import main
    from tinygen.models import save_model
    checkpoint = tmp_path / "glide.npz"
    save_model(build(), checkpoint)
    out = tmp_path / "edit.npz"
    base = ["edit", "glide", "--checkpoint", str(checkpoint), "--image", "0", "--prompt", "a digit one",
            "--steps", "2"]
    assert main(base + ["--mask", "lower", "--n", "2", "--out", str(out)]) == 0
    edited = io.load_checkpoint(out)[0]["images"]
    x, _ = data.load_dataset("mnist", "test")
    np.testing.assert_allclose(edited[:, :, :14], np.repeat(data.to_float(x[:1]), 2, axis=0)[:, :, :14], atol=1e-6)
    for extra, message in ((["--mask", "middle"], "valid masks are"), (["--mask", "lower", "--steps", "9"], "T = 5"),
                           (["--mask", "lower", "--image", "10000"], "images 0..9999")):
        with pytest.raises(SystemExit):
            main(base + extra + ["--out", str(tmp_path / "x.png")])
        assert message in capsys.readouterr().err


def test_the_edit_benchmark_keeps_the_outside_and_counts_the_prompt_class():
    from tinygen.evaluate import edit_benchmark
    row = edit_benchmark(build(), "mnist", n=4, steps=2)
    assert row["n"] == 4 and row["outside_l1_max"] < 1e-6 and row["inside_l1_mean"] > 0
    assert 0 <= row["edit_accuracy"] <= 1 and row["mask"] == "lower"


def test_the_pictures_grid_sweep_and_edits(tmp_path):
    from PIL import Image
    model = build()
    model.dataset = "mnist"
    x, y = data.load_dataset("mnist", "test")
    paths = [tmp_path / f"{name}.png" for name in ("grid", "sweep", "edits")]
    model.save_pictures(x[:2], y[:2], *paths, scales=(0, 3))
    n_prompts = len(text.grid_prompts("mnist"))
    # rows x columns: 8 a prompt; a row per scale, a column per class; image, kept part, 4 edits
    sizes = [Image.open(p).size for p in paths]
    cell, pad = sizes[2][0] // 6, sizes[2][0] % 6
    grid = lambda columns, rows: (columns * cell + pad, rows * cell + pad)   # noqa: E731
    assert sizes == [grid(8, n_prompts), grid(10, 2), grid(6, 2)]
    # edit rows: the image, then the kept part with the redrawn lower half grey
    rows = model.edit_grid(data.to_float(x[:2]), region("lower"), np.zeros((8, 1, 28, 28), np.float32))
    assert rows.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(rows[1, :, 14:], 0.5)
    np.testing.assert_array_equal(rows[1, :, :14], data.to_float(x[:1])[0, :, :14])


@pytest.fixture
def clip_file(tmp_path):
    """A tiny CLIP whose text encoder has GLIDE's tiny text dims, its weights not a fresh model's."""
    from tinygen.models import get_model_class, save_model
    text_dims = {"text_dim": GLIDE.tiny_config["text_dim"], "text_depth": GLIDE.tiny_config["text_depth"],
                 "text_heads": GLIDE.tiny_config["text_heads"], "mlp_ratio": 2.0}
    clip = build_model("clip", {**get_model_class("clip").tiny_config, **text_dims})
    for p in clip.text_encoder.parameters():
        p.data[...] += 0.25
    save_model(clip, tmp_path / "clip.npz")
    return clip, tmp_path / "clip.npz"


def test_text_init_starts_the_text_encoder_from_clip_and_trains_it(clip_file, tmp_path):
    from tinygen.models import load_model, save_model
    clip, path = clip_file
    model = build(text_init=str(path))
    theirs, mine = clip.text_encoder.state_dict(), model.text_encoder.state_dict()
    copied = [k for k in mine if not k.startswith("projection.")]
    assert copied and all(np.array_equal(mine[k], theirs[k]) for k in copied)
    # W_f maps to the time embedding's width, not CLIP's joint space: it keeps its own start
    assert mine["projection.weight"].shape != theirs["projection.weight"].shape
    assert all(p.requires_grad for p in model.text_encoder.parameters())     # trained with the U-Net
    assert model.config.text_init_config["text_dim"] == GLIDE.tiny_config["text_dim"]
    # a checkpoint loads where the CLIP file is gone, with its own weights (not a fresh CLIP's)
    save_model(model, tmp_path / "glide.npz")
    path.unlink()
    loaded = load_model(tmp_path / "glide.npz", "glide")[0].text_encoder.state_dict()
    assert all(np.array_equal(loaded[k], mine[k]) for k in mine)


def test_text_init_refuses_a_missing_file_and_other_dims(clip_file, tmp_path):
    _, path = clip_file
    with pytest.raises(ValueError, match="--set text_init=.*none.npz: no such checkpoint.*train clip"):
        build(text_init=str(tmp_path / "none.npz"))
    with pytest.raises(ValueError, match="CLIP's text encoder is dim 8, 1 blocks.*text_dim"):
        build(text_init=str(path), text_dim=16)
