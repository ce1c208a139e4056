"""DALL·E (tinygen/models/dalle.py): the sequence, its causal mask and padding tokens, the loss weights,
the frozen dVAE, KV-cached sampling against the plain forward pass, CLIP re-ranking and completion, and
the stage named on the command line. Tiny untrained stages stand in for the trained ones."""
import numpy as np
import pytest

from autograd import no_grad
from tinygen import data, text
from tinygen.models import build_model, get_model_class, save_model
from tinygen.models.dalle import DALLE


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stages")
    save_model(build_model("dvae", get_model_class("dvae").tiny_config), folder / "dvae.npz")
    save_model(build_model("clip", get_model_class("clip").tiny_config), folder / "clip.npz")
    return folder


def build(stages, **overrides):
    return build_model("dalle", {**DALLE.tiny_config, "dvae": str(stages / "dvae.npz"), **overrides})


def batch(model, n=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return model.prepare_batch(images, np.arange(n) % 10)


def test_the_sequence_is_caption_ids_then_49_image_tokens(stages):
    model = build(stages)
    ids, tokens = batch(model)
    assert ids.shape == (4, model.L) and tokens.shape == (4, 49)
    assert tokens.min() >= 0 and tokens.max() < model.K
    one = model.caption_ids(["a digit seven"])[0]
    words = model.tokenizer.encode("a digit seven")                  # <start> a digit seven <end>
    np.testing.assert_array_equal(one[:len(words)], words)
    # each padding position its own token: V + position
    np.testing.assert_array_equal(one[len(words):], model.tokenizer.vocab_size + np.arange(len(words), model.L))


def test_a_position_never_sees_a_later_token(stages):
    """Changing the image token at position j leaves every logit before j as it was (the causal mask)."""
    model = build(stages)
    model.eval()
    ids, tokens = batch(model, 2)
    other = tokens.copy()
    other[:, 20] = (other[:, 20] + 1) % model.K
    with no_grad():
        h = model.transformer(model.embed(ids, tokens[:, :-1])).numpy()
        h2 = model.transformer(model.embed(ids, other[:, :-1])).numpy()
    j = model.L + 20                                                  # where z_21 is input
    np.testing.assert_array_equal(h[:, :j], h2[:, :j])
    assert not np.allclose(h[:, j:], h2[:, j:])


def test_the_loss_weighs_text_one_eighth_and_image_seven_eighths(stages):
    model = build(stages)
    loss, logs = model.loss(batch(model))
    assert loss.item() == pytest.approx(logs["text_ce"] / 8 + 7 * logs["image_ce"] / 8, rel=1e-5)
    only_image = build(stages, text_loss_weight=0.0)
    loss, _ = only_image.loss(batch(only_image))
    loss.backward()
    assert np.abs(only_image.text_head.weight.grad).max() == 0    # no text term: no gradient to its head
    assert np.abs(only_image.image_head.weight.grad).max() > 0


def test_a_training_step_leaves_the_dvae_as_trained(stages):
    model = build(stages)
    before = {k: v.copy() for k, v in model.dvae.state_dict().items()}
    optimizers = model.configure_optimizers()
    model.training_step(batch(model), optimizers)
    assert all(np.array_equal(before[k], v) for k, v in model.dvae.state_dict().items())
    assert not any(p is q for p in optimizers["main"].param_groups[0]["params"] for q in model.dvae.parameters())


def test_kv_cached_sampling_is_the_plain_forward_pass(stages):
    """With top_k = 1 the draw is the argmax: the cached sampler must pick, token by token, what the full
    forward pass over the sequence so far picks."""
    model = build(stages, top_k=1)
    model.eval()
    prompts = ["a thick digit seven", "a small digit two"]
    ids = model.caption_ids(prompts)
    model.rng = np.random.default_rng(0)
    with no_grad():
        cached = model._generate(ids, np.zeros((2, 49), np.int64), 0)
        plain = np.zeros((2, 49), np.int64)
        for j in range(49):
            h = model.transformer(model.embed(ids, plain[:, :j]))
            plain[:, j] = model.image_head(h[:, -1]).numpy().argmax(axis=1)
    np.testing.assert_array_equal(cached, plain)


def test_top_k_keeps_only_the_k_most_likely_codes(stages):
    model = build(stages, top_k=2)
    model.rng = np.random.default_rng(0)
    logits = np.tile(np.arange(model.K, dtype=np.float32), (500, 1))
    assert set(model._draw(logits).tolist()) == {model.K - 1, model.K - 2}


def test_reranking_keeps_the_candidate_clip_scores_highest(stages):
    from tinygen.models import load_model
    model, clip = build(stages), load_model(stages / "clip.npz", "clip")[0]
    prompts = ["a thick digit seven", "a small digit two", "a thick digit seven"]
    model.rng = np.random.default_rng(3)
    candidates = model.sample(12, prompt=list(np.repeat(prompts, 4)))
    best = DALLE.rerank(candidates, prompts, 4, clip)
    for i, p in enumerate(prompts):
        np.testing.assert_array_equal(best[i], clip.score(candidates[4 * i:4 * i + 4], [p])[:, 0].argmax())
    model.rng = np.random.default_rng(3)
    kept = model.sample(3, prompt=prompts, candidates=4, clip=clip)
    np.testing.assert_array_equal(kept, candidates.reshape(3, 4, 1, 28, 28)[np.arange(3), best])
    with pytest.raises(ValueError, match="needs a CLIP model"):
        model.sample(2, prompt="a digit one", candidates=4)


def test_completion_keeps_the_known_rows(stages):
    model = build(stages)
    model.rng = np.random.default_rng(0)
    tokens = np.random.default_rng(1).integers(0, model.K, (3, 49))
    with no_grad():
        done = model._generate(model.caption_ids(["a digit one"] * 3), tokens.copy(), 21)
    np.testing.assert_array_equal(done[:, :21], tokens[:, :21])
    images = np.random.default_rng(2).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    out = model.complete(images, "a digit one", rows_known=3)
    assert out.shape == (3, 1, 28, 28) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="rows_known"):
        model.complete(images, "a digit one", rows_known=8)


def test_a_dvae_of_another_dataset_is_refused(stages):
    model = build(stages)
    model.dataset = "fashion"
    with pytest.raises(ValueError, match="a dVAE of mnist, but dalle trains on fashion"):
        batch(model)


def test_the_stage_is_named_on_the_command_line(stages, tmp_path):
    with pytest.raises(ValueError, match="--set dvae=PATH.*python -m tinygen train dvae"):
        build_model("dalle", DALLE.tiny_config)
    with pytest.raises(ValueError, match="--set dvae=.*nope.npz: no such checkpoint"):
        build_model("dalle", {**DALLE.tiny_config, "dvae": str(tmp_path / "nope.npz")})
    from tinygen.io import CheckpointError
    with pytest.raises(CheckpointError, match="holds a 'clip' model, not 'dvae'"):
        build_model("dalle", {**DALLE.tiny_config, "dvae": str(stages / "clip.npz")})


def test_the_picture_grid_has_a_row_per_prompt(stages):
    model = build(stages)
    grid, prompts = model.prompt_grid(per_prompt=2)
    assert len(prompts) == 20 and prompts[:2] == ["a thin digit zero", "a thick digit zero"]
    assert grid.shape == (40, 1, 28, 28)
    assert text.check_prompts(prompts, 20) == prompts and data.N_CLASSES == 10


# ---------------------------------------------------------------------- from the command line
def test_prompts_and_stages_are_one_line_errors(stages, tmp_path, one_line_error):
    from tinygen.__main__ import main
    from tinygen.evaluate import main as evaluate_main
    checkpoint = tmp_path / "dalle.npz"
    save_model(build(stages), checkpoint)
    base = ["sample", "dalle", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.npz")]
    assert "'purple' in 'a purple digit' is not in the vocabulary; the 49 words are: a, an" in \
        one_line_error(main, base + ["--prompt", "a purple digit"])
    assert "the prompt is empty" in one_line_error(main, base + ["--prompt", " "])
    assert main(base + ["--prompt", "a thick digit seven", "--n", "3"]) == 0
    from tinygen import io
    arrays, meta = io.load_checkpoint(tmp_path / "s.npz")
    assert arrays["images"].shape == (3, 1, 28, 28) and meta["prompt"] == "a thick digit seven"
    train = ["train", "dalle", "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert "--set dvae=PATH" in one_line_error(main, train)
    assert "no such checkpoint" in one_line_error(main, train + ["--set", f"dvae={tmp_path / 'none.npz'}"])
    prompts = ["prompts", "--checkpoint", str(checkpoint), "--n-per-prompt", "2"]
    assert "give --clip PATH" in one_line_error(evaluate_main, prompts + ["--candidates", "1", "4"])
    assert "takes no --guidance" in one_line_error(evaluate_main, prompts + ["--guidance", "2"])
    assert "takes no prompt" in one_line_error(evaluate_main, ["prompts", "--checkpoint", str(stages / "clip.npz")])


def test_a_checkpoint_loads_where_the_stage_file_is_not(stages, tmp_path):
    import shutil
    from tinygen.models import load_model
    shutil.copy(stages / "dvae.npz", tmp_path / "dvae.npz")
    model = build_model("dalle", {**DALLE.tiny_config, "dvae": str(tmp_path / "dvae.npz")})
    save_model(model, tmp_path / "dalle.npz")
    (tmp_path / "dvae.npz").unlink()                                    # the stage moved away
    loaded, _ = load_model(tmp_path / "dalle.npz", "dalle")
    for k, v in model.dvae.state_dict().items():
        np.testing.assert_array_equal(loaded.dvae.state_dict()[k], v)   # the weights came with the checkpoint
    loaded.rng, model.rng = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(loaded.sample(2, prompt="a digit one"), model.sample(2, prompt="a digit one"))


@pytest.mark.slow
def test_the_benchmark_takes_top_k_for_token_models_only(stages, tmp_path, capsys, one_line_error):
    from tinygen.evaluate import main as evaluate_main
    checkpoint = tmp_path / "dalle.npz"
    save_model(build(stages), checkpoint)
    assert evaluate_main(["prompts", "--checkpoint", str(checkpoint), "--n-per-prompt", "2", "--top-k", "3"]) == 0
    import json
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["top_k"] == 3 and row["images"] == 10 * 10 + 90 * 2
    glide = tmp_path / "glide.npz"
    save_model(build_model("glide", get_model_class("glide").tiny_config), glide)
    assert "takes no --top-k" in one_line_error(evaluate_main, ["prompts", "--checkpoint", str(glide), "--top-k", "3"])
