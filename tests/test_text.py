"""Tests for tinygen.text: captions from labels and measured attributes, prompts, the word-level tokenizer."""
import numpy as np
import pytest

from tinygen import data, text
from tinygen.text import Tokenizer


# ---------------------------------------------------------------------- captions
def _stroke(width: int, slant: float = 0.0) -> np.ndarray:
    """A vertical bar of the given width, sheared to the right by `slant` px per row."""
    rows, cols = np.arange(28)[:, None], np.arange(28)[None, :]
    left = np.round(12 + slant * (14 - rows))
    bar = (rows >= 4) & (rows < 24) & (cols >= left) & (cols < left + width)
    return np.where(bar, 255, 0).astype(np.uint8)


def test_attributes_measure_thickness_slant_size_and_position():
    batch = np.stack([_stroke(1), _stroke(5), _stroke(2, slant=0.5)])[:, None]
    a = text.image_attributes(batch)
    assert a["thickness"][1] > 3 * a["thickness"][0]
    assert abs(a["slant"][0]) < 1e-6 and a["slant"][2] > 0.4
    np.testing.assert_array_equal(a["height"], [20, 20, 20])
    assert a["position"].shape == (3, 2) and a["position"][0, 0] < 0  # bar is left of centre


def test_captions_mention_class_and_attributes():
    thin, thick = _stroke(1), _stroke(6)
    texts = text.captions(np.stack([thin, thick]), np.array([7, 7]), "mnist")
    assert texts[0] != texts[1]
    assert all("seven" in t for t in texts)
    assert "thin" in texts[0] and "thick" in texts[1]
    assert texts == text.captions(np.stack([thin, thick]), [7, 7], "mnist")  # deterministic
    fashion = text.captions(np.stack([thin, thick]), [9, 1], "fashion")
    assert fashion[0].endswith("ankle boot") and "trouser" in fashion[1]
    assert all(len(t.split()) > 2 for t in fashion)  # more than "a <label>"


def test_captions_with_rng_drop_words_but_keep_class():
    images = np.stack([_stroke(3)] * 50)
    texts = text.captions(images, np.full(50, 3), "mnist", rng=np.random.default_rng(0))
    assert all(t.endswith("digit three") for t in texts)
    assert len(set(texts)) > 1


def test_captions_accept_dataset_aliases_and_check_lengths():
    images = np.stack([_stroke(2)] * 2)
    assert text.captions(images, [1, 9], "fashion-mnist") == text.captions(images, [1, 9], "fashion")
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        text.captions(images, [1, 2, 3], "mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        text.captions(images, [1, 2], "cifar")


def _real_test_images(name, n=400):
    try:
        images, labels = data.load_dataset(name, "test")
    except data.DatasetNotFoundError:
        pytest.skip(f"{name} test split not found (set TINYGEN_DATA)")
    return images[:n], labels[:n]


# ---------------------------------------------------------------------- prompts
def test_prompts_fill_the_template_with_every_label():
    assert text.prompts("mnist")[7] == "a photo of a digit seven"
    fashion = text.prompts("fashion")
    assert fashion[0] == "a photo of a t-shirt" and fashion[9] == "a photo of an ankle boot"
    assert text.prompts("fashion", "a drawing of a {label}")[9] == "a drawing of an ankle boot"
    assert text.label_phrases("mnist")[0] == "digit zero" and len(text.label_phrases("fashion")) == 10
    with pytest.raises(ValueError, match="no '{label}'"):
        text.prompts("mnist", "a photo")


# ---------------------------------------------------------------------- tokenizer
def test_vocabulary_is_fixed_and_starts_with_the_special_tokens():
    tok = Tokenizer()
    assert tok.vocab[:3] == ["<pad>", "<start>", "<end>"] and (tok.pad_id, tok.start_id, tok.end_id) == (0, 1, 2)
    words = tok.vocab[3:]
    assert words == sorted(words) and len(set(words)) == len(words)
    assert Tokenizer().vocab == tok.vocab and tok.vocab_size == len(tok) == len(words) + 3
    for w in ["a", "an", "thin", "slanted-right", "mid-sized", "digit", "seven", "t-shirt", "ankle", "boot",
              "high", "left", "photo", "of"]:
        assert w in words, w
    assert "ankle boot" not in words                  # a two-word label is two tokens


def test_every_caption_and_prompt_encodes_and_round_trips():
    tok = Tokenizer()
    images = np.stack([_stroke(1), _stroke(6, slant=0.5), _stroke(3, slant=-0.4)] * 10)
    texts = []
    for name in ("mnist", "fashion"):
        labels = np.arange(len(images)) % 10
        texts += text.captions(images, labels, name) + text.captions(images, labels, name, np.random.default_rng(0))
        texts += [p for t in text.PROMPT_TEMPLATES for p in text.prompts(name, t)]
    for t in texts:
        ids = tok.encode(t)
        assert ids[0] == tok.start_id and ids[-1] == tok.end_id and len(ids) <= tok.max_length
        assert tok.decode(ids) == t


def test_real_captions_encode_within_max_length():
    tok = Tokenizer()
    for name in ("mnist", "fashion"):
        images, labels = _real_test_images(name)
        for t in text.captions(images, labels, name):
            assert tok.decode(tok.encode(t)) == t
        batch = tok.batch(text.captions(images, labels, name))
        assert batch.shape == (len(images), tok.max_length)
        assert np.all((batch == tok.end_id).sum(axis=1) == 1)   # never truncated: every row keeps its <end>


def test_splitting_rules_for_case_punctuation_hyphens_and_spaces():
    tok = Tokenizer()
    assert text.split_words("An Ankle boot.") == ["an", "ankle", "boot"]
    assert text.split_words("T-shirt/top") == ["t-shirt", "top"]
    t_shirt, ankle_boot = tok.encode("t-shirt"), tok.encode("ankle boot")
    assert len(t_shirt) == 3 and len(ankle_boot) == 4           # <start> t-shirt <end>, <start> ankle boot <end>
    for name in data.CLASS_NAMES["fashion"] + data.CLASS_NAMES["mnist"]:
        assert tok.decode(tok.encode(name)) == name
    assert tok.decode(tok.encode("A  T-Shirt,  on the LEFT!")) == "a t-shirt on the left"
    # the official Fashion-MNIST name "T-shirt/top": "/" separates words and "top" is no caption word
    with pytest.raises(ValueError, match="'top'"):
        tok.encode("a photo of a t-shirt/top")


def test_unknown_word_names_it_and_lists_the_vocabulary():
    tok = Tokenizer()
    with pytest.raises(ValueError) as info:
        tok.encode("a purple zebra seven")
    message = str(info.value)
    assert "'purple', 'zebra'" in message and "are not in the vocabulary" in message
    assert ", ".join(tok.vocab[3:]) in message


def test_batch_pads_and_truncates_keeping_the_end_token():
    tok = Tokenizer()
    ids = tok.batch(["a thin digit seven", "a digit one"], length=8)
    assert ids.dtype == np.int64 and ids.shape == (2, 8)
    np.testing.assert_array_equal(ids[0], tok.encode("a thin digit seven") + [0, 0])
    np.testing.assert_array_equal(ids[1], tok.encode("a digit one") + [0, 0, 0])
    short = tok.batch(["a thin digit seven on the left"], length=5)[0]
    np.testing.assert_array_equal(short, tok.encode("a thin digit")[:-1] + [tok.end_id])
    assert tok.decode(short) == "a thin digit"
    assert tok.batch(["a digit one"]).shape == (1, tok.max_length)
    with pytest.raises(TypeError, match="one string"):
        tok.batch("a digit one")
    with pytest.raises(ValueError, match="at least 2"):
        tok.batch(["a"], length=1)


def test_decode_drops_special_tokens_and_checks_ids():
    tok = Tokenizer()
    ids = tok.batch(["a thick digit two"], length=10)[0]
    assert tok.decode(ids) == "a thick digit two"
    assert tok.decode(ids.tolist()) == "a thick digit two"
    with pytest.raises(ValueError, match=r"ids \[999\] are outside 0 \.\. "):
        tok.decode([1, 999, 2])


# ---------------------------------------------------------------------- held-out pairs and prompts
def test_holdout_pairs_are_real_and_cover_every_attribute():
    for dataset, pairs in text.HOLDOUT.items():
        assert text.check_holdout(pairs, dataset) == pairs and len(set(pairs)) == len(pairs) == 8
        words = {w for _, w in pairs}
        for attribute, (_, names) in text.CAPTION_BINS[dataset].items():
            assert words & set(names), f"{dataset}: no held-out pair for {attribute}"
    with pytest.raises(ValueError, match="not \\(label 0..9, attribute word\\)"):
        text.check_holdout([(7, "purple")], "mnist")
    with pytest.raises(ValueError, match="not \\(label"):
        text.check_holdout([(10, "thick")], "mnist")


def test_a_held_out_pair_is_captioned_without_its_word():
    thick, thin = _stroke(6), _stroke(1)
    images, labels = np.stack([thick, thick, thin]), np.array([1, 7, 1])
    plain = text.captions(images, labels, "mnist")
    held = text.captions(images, labels, "mnist", holdout=[(1, "thick")])
    assert "thick" in plain[0].split() and "thick" not in held[0].split()   # a thick one: the word goes
    assert held[0].endswith("digit one") and held[0] == plain[0].replace("thick ", "")
    assert held[1:] == plain[1:]              # a thick seven and a thin one keep their captions
    many = np.stack([thick] * 40)
    dropped = text.captions(many, np.ones(40, int), "mnist", rng=np.random.default_rng(0), holdout=[(1, "thick")])
    assert not any("thick" in t.split() for t in dropped)   # with word dropout too


def test_attribute_words_are_the_caption_bins():
    images = np.stack([_stroke(1), _stroke(6)])
    words = text.attribute_words(images, "mnist")
    assert list(words) == list(text.CAPTION_BINS["mnist"])
    assert list(words["thickness"]) == ["thin", "thick"]
    for caption, row in zip(text.captions(images, [4, 4], "mnist"), zip(*words.values())):
        assert caption.split()[1:4] == list(row)


def test_prompts_are_checked_before_any_work():
    assert text.check_prompts("a thick digit seven", 3) == ["a thick digit seven"] * 3
    assert text.check_prompts(["a digit one", "a digit two"], 2) == ["a digit one", "a digit two"]
    for bad, message in (("", "empty"), ("  . ", "empty"), ("a purple digit", "'purple'.*not in the vocabulary"),
                         (["a digit one"], "1 prompts for 2 images")):
        with pytest.raises(ValueError, match=message):
            text.check_prompts(bad, 2)
