"""CLIP on tiny configs: the symmetric loss against a hand computation, unit embeddings, the clipped
temperature, the <end>-token read-out of padded texts, causal text attention, zero-shot prediction,
retrieval recall and the attribute test against their definitions."""
import math

import numpy as np
import pytest

from autograd import Tensor, no_grad
from tinygen import text
from tinygen.models import get_model_class
from tinygen.models.clip import symmetric_cross_entropy

CLIP = get_model_class("clip")


def build(**kw):
    model = CLIP(CLIP.Config(**{**CLIP.tiny_config, "augment": 0, **kw}))
    model.dataset = "mnist"
    return model


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) * 255).astype(np.uint8)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_symmetric_loss_equals_the_hand_computation():
    z = np.random.default_rng(0).standard_normal((4, 4))
    rows = -np.diag(log_softmax(z)).mean()            # image b -> caption b
    cols = -np.diag(log_softmax(z.T)).mean()          # caption b -> image b
    got = symmetric_cross_entropy(Tensor(z.astype(np.float32))).item()
    assert abs(got - (rows + cols) / 2) < 1e-5
    assert abs(rows - cols) > 1e-3                     # the two directions differ: both are needed


def test_model_loss_is_the_symmetric_loss_of_scaled_cosines():
    model = build()
    x, ids = model.prepare_batch(images(6), np.arange(6))
    loss, logs = model.loss((x, ids))
    with no_grad():
        I, T = model.image_features(x).numpy(), model.text_features(ids).numpy()
    z = (1 / 0.07) * I @ T.T
    expected = (-np.diag(log_softmax(z)).mean() - np.diag(log_softmax(z.T)).mean()) / 2
    assert abs(loss.item() - expected) < 1e-4 and abs(logs["logit_scale"] - 1 / 0.07) < 1e-3


def test_embeddings_have_unit_length():
    model = build()
    e_img = model.encode_image(images(5))
    e_txt = model.encode_text(["a thin digit seven", "a photo of an ankle boot", "a digit one"])
    assert e_img.shape == (5, 16) and e_txt.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(e_img, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e_txt, axis=1), 1, rtol=1e-5)
    s = model.score(images(5), ["a thin digit seven", "a digit one"])
    np.testing.assert_allclose(s, e_img @ model.encode_text(["a thin digit seven", "a digit one"]).T, rtol=1e-5)
    assert s.shape == (5, 2) and np.abs(s).max() <= 1 + 1e-6


def test_temperature_starts_at_one_over_0_07_and_is_clipped_at_100():
    model = build()
    assert abs(model.scale().item() - 1 / 0.07) < 1e-3
    model.logit_scale.data[...] = math.log(1000.0)
    assert abs(model.scale().item() - 100.0) < 1e-3     # the forward pass never exceeds the bound
    opts = model.configure_optimizers()
    model.training_step(model.prepare_batch(images(4), np.arange(4)), opts)
    assert model.logit_scale.data <= math.log(100.0) + 1e-6   # and the parameter is clamped after a step
    assert model.logit_scale in opts["main"].param_groups[1]["params"]   # no weight decay on tau
    assert opts["main"].param_groups[1]["weight_decay"] == 0.0


def test_text_feature_is_read_at_the_end_token_of_padded_rows():
    model = build()
    enc = model.text_encoder
    texts = ["a digit one", "a thick large slanted-right digit seven low down and on the left"]
    ids = model.tokenizer.batch(texts)                            # (2, 14), row 0 padded
    eot = enc.eot_positions(ids)
    assert eot.tolist() == [len(model.tokenizer.encode(t)) - 1 for t in texts]
    with no_grad():
        h = enc.transformer(enc.pos_embed(enc.token_embed(ids))).numpy()
        expected = h[np.arange(2), eot] @ enc.projection.weight.data.T
        np.testing.assert_allclose(enc(ids).numpy(), expected, rtol=1e-5, atol=1e-6)
        # what comes after <end> (the padding, or garbage in its place, or a shorter padded length) is never read
        noisy = ids.copy()
        noisy[0, eot[0] + 1:] = np.random.default_rng(0).integers(3, model.tokenizer.vocab_size, ids.shape[1] - eot[0] - 1)
        short = model.tokenizer.batch(texts[:1], eot[0] + 1)      # no padding at all
        np.testing.assert_allclose(enc(noisy).numpy(), enc(ids).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(enc(short).numpy()[0], enc(ids).numpy()[0], rtol=1e-5, atol=1e-6)


def test_text_encoder_is_causal():
    """Changing the token at position j changes the hidden states at j and after, never before."""
    model = build(text_depth=2)
    enc = model.text_encoder
    ids = model.tokenizer.batch(["a thick small digit seven"])
    other = ids.copy()
    other[0, 3] = model.tokenizer.index["thin"]
    with no_grad():
        a = enc.transformer(enc.pos_embed(enc.token_embed(ids))).numpy()
        b = enc.transformer(enc.pos_embed(enc.token_embed(other))).numpy()
    np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-5, atol=1e-6)
    assert np.abs(a[0, 3:] - b[0, 3:]).max() > 1e-4


def test_rows_without_one_end_token_are_refused():
    model = build()
    ids = model.tokenizer.batch(["a digit one", "a digit two"])
    ids[1, ids[1] == model.tokenizer.end_id] = model.tokenizer.pad_id
    with pytest.raises(ValueError, match=r"rows \[1\].*<end>"):
        model.encode_text(ids)
    with pytest.raises(TypeError, match="one string"):
        model.encode_text("a digit one")


def test_training_texts_are_captions_some_in_a_template():
    model = build(template_prob=0.5)
    texts = model.training_texts(images(64), np.arange(64) % 10)
    wrapped = [t for t in texts if t.startswith(("a photo of", "a picture of", "a drawing of"))]
    assert 0 < len(wrapped) < 64
    assert all(text.label_phrases("mnist")[i % 10] in t for i, t in enumerate(texts))
    model.tokenizer.batch(texts)                                   # every word is in the vocabulary


def test_training_lowers_the_loss_on_a_fixed_batch():
    model = build(lr=3e-3, lr_schedule="constant", template_prob=0.0)
    batch = model.prepare_batch(images(8), np.arange(8))
    opts = model.configure_optimizers()
    losses = [model.training_step(batch, opts)["loss"] for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


def test_zero_shot_prediction_is_the_nearest_prompt():
    model = build()
    x = images(6)
    W = model.class_embeddings()
    np.testing.assert_allclose(W, model.encode_text(text.prompts("mnist")), rtol=1e-5)
    assert (model.predict(x) == (model.encode_image(x) @ W.T).argmax(axis=1)).all()
    each = np.stack([model.encode_text(text.prompts("mnist", t)) for t in text.PROMPT_TEMPLATES])
    mean = each.mean(axis=0)
    np.testing.assert_allclose(model.class_embeddings(text.PROMPT_TEMPLATES),
                               mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-5)


def test_retrieval_with_images_embedded_as_their_captions_reaches_the_ceiling():
    """If each image's embedding is its own caption's, every caption finds an image with its very caption,
    and among identical captions the first image wins: exactly the ceiling mean 1 / (copies in the gallery)."""
    model = build()
    x, y = images(40), np.arange(40) % 3
    captions = text.captions(x, y, "mnist")
    distinct, codes = np.unique(captions, return_inverse=True)
    own = model.encode_text(list(distinct))[codes]                 # identical captions: identical rows
    r = model.retrieval(x, y, image=own, gallery=20)
    assert r["test_recall_at_1_same_caption"] == 1.0
    assert abs(r["test_recall_at_1"] - r["test_recall_at_1_ceiling"]) < 1e-9 and r["test_recall_at_1_ceiling"] < 1
    rolled = model.retrieval(x, y, image=np.roll(own, 1, axis=0), gallery=20)
    assert rolled["test_recall_at_1"] < r["test_recall_at_1"]


def test_evaluate_reports_fractions_and_chance():
    model = build()
    x, y = images(30), np.arange(30) % 10
    r = model.evaluate(x, y)
    for key in ("test_acc", "test_acc_ensemble", "test_recall_at_1", "test_attr_thickness_acc",
                "test_attr_thickness_chance", "test_attr_slant_acc", "test_attr_size_acc"):
        assert 0.0 <= r[key] <= 1.0, key
    assert all(r[k] >= 0.5 for k in r if k.endswith("_chance"))
    model.dataset = "fashion"                               # squares of dim (0.55) or bright (1.0) ink
    squares = np.zeros((30, 1, 28, 28), np.uint8)
    squares[:, :, 6:22, 6:22] = np.where(np.arange(30) % 2, 255, 140)[:, None, None, None]
    r = model.evaluate(squares, y)
    assert 0.0 <= r["test_attr_brightness_acc"] <= 1.0 and r["test_attr_brightness_chance"] == 0.5


def test_similarity_picture_is_written(tmp_path):
    model = build()
    x, y = images(4), np.arange(4)
    model.visualize(x, y, tmp_path / "sim.png")
    assert (tmp_path / "sim.png").stat().st_size > 0
