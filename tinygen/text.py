"""Text for the text-conditioned models: captions of MNIST / Fashion-MNIST images, prompts, and a
word-level tokenizer.

Captions
    ``image_attributes`` measures simple geometric properties of each image (stroke
    thickness, size, slant, position, brightness) and ``captions`` turns them, together
    with the class name, into short sentences such as "a thick small slanted-right digit
    seven" or "a dark large ankle boot on the left", so that a caption says more than the label.

Prompts
    ``prompts(dataset)`` fills a template ("a photo of a {label}", CLIP's zero-shot prompt) with
    every class of a dataset, one string per label 0..9.

Tokenizer
    ``Tokenizer()`` maps words to integer ids and back. Its vocabulary is every word the caption
    generator and the prompt templates can produce, in a fixed (sorted) order after the special
    tokens <pad> = 0, <start> = 1, <end> = 2, so ids never change between runs:

        tok = Tokenizer()
        tok.encode("a thin digit seven")       # [1, ..., 2]: <start> a thin digit seven <end>
        tok.decode(ids)                        # "a thin digit seven"
        tok.batch(texts, tok.max_length)       # int64 (B, length), padded with <pad>
"""
from __future__ import annotations

import re

import numpy as np

# _canonical_name resolves the dataset aliases ("fashion-mnist" -> "fashion") as load_dataset does
from .data import CLASS_NAMES, _canonical_name, to_float

__all__ = ["image_attributes", "attribute_words", "captions", "CAPTION_BINS", "POSITION_THRESHOLD",
           "CAPTION_DROPOUT", "HOLDOUT", "check_holdout", "check_prompts", "grid_prompts", "label_phrases", "PROMPT_TEMPLATES", "fill_template", "prompts", "caption_vocabulary",
           "split_words", "Tokenizer"]


# ------------------------------------------------------------------------ captions

#: A pixel counts as ink when its intensity is above this (on the [0, 1] scale).
INK_THRESHOLD = 0.5


def _as_unit_images(images) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) images -> float32 (N, H, W) in [0, 1]."""
    x = to_float(images)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected single-channel images, got shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, 1, H, W) or (N, H, W), got {x.shape}")
    return x


def _extent(occupied: np.ndarray) -> np.ndarray:
    """For (N, L) booleans: the span from the first to the last True (0 if none)."""
    L = occupied.shape[1]
    first = occupied.argmax(axis=1)
    last = L - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(occupied.any(axis=1), last - first + 1, 0).astype(np.float32)


def _stroke_width(ink: np.ndarray) -> np.ndarray:
    """Mean stroke width in pixels, estimated as 2 * area / perimeter.

    A stroke of length L and width w has area L*w and perimeter about 2L, so the ratio
    recovers w for long strokes. The perimeter counts the pixel sides separating ink
    from background (the image border counts as background).
    """
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    horizontal = (padded[:, :, 1:] != padded[:, :, :-1]).sum(axis=(1, 2))
    vertical = (padded[:, 1:, :] != padded[:, :-1, :]).sum(axis=(1, 2))
    area = ink.sum(axis=(1, 2))
    return (2 * area / np.maximum(horizontal + vertical, 1)).astype(np.float32)


def image_attributes(images) -> dict[str, np.ndarray]:
    """Measure simple properties of every image, vectorised over the batch.

    Args:
        images: uint8 (N, 1, H, W) or (N, H, W), 0..255 (floats in [0, 1] also work).

    Returns a dict of float32 arrays:
        thickness  (N,)   mean stroke width in pixels (2 * ink area / ink perimeter).
        height     (N,)   height in pixels of the bounding box of the ink (pixels > 0.5).
        width      (N,)   width in pixels of that bounding box.
        size       (N,)   sqrt(height * width), the side of a square of the same area.
                          (MNIST digits are scaled to a height of 20 pixels, so their
                          height alone says little; their width varies a lot.)
        slant      (N,)   shear from second moments, -mu11 / mu02: horizontal shift per
                          pixel of height; > 0 when the top leans to the right.
        position   (N, 2) centre-of-mass offset (dx, dy) from the image centre in
                          pixels; dx > 0 is right, dy > 0 is down.
        brightness (N,)   ink-weighted mean intensity sum(v^2) / sum(v), in [0, 1].
        ink        (N,)   fraction of the image covered by ink.
    """
    x = _as_unit_images(images)
    N, H, W = x.shape
    ink = x > INK_THRESHOLD
    height = _extent(ink.any(axis=2))  # rows that contain ink
    width = _extent(ink.any(axis=1))  # columns that contain ink
    mass = np.maximum(x.sum(axis=(1, 2)), 1e-6)
    ys = np.arange(H, dtype=np.float32)[None, :, None]
    xs = np.arange(W, dtype=np.float32)[None, None, :]
    cy = (x * ys).sum(axis=(1, 2)) / mass
    cx = (x * xs).sum(axis=(1, 2)) / mass
    dy = ys - cy[:, None, None]
    dx = xs - cx[:, None, None]
    mu02 = (x * dy * dy).sum(axis=(1, 2))
    mu11 = (x * dx * dy).sum(axis=(1, 2))
    return {
        "thickness": _stroke_width(ink),
        "height": height,
        "width": width,
        "size": np.sqrt(height * width),
        "slant": (-mu11 / np.maximum(mu02, 1e-6)).astype(np.float32),
        "position": np.stack([cx - (W - 1) / 2, cy - (H - 1) / 2], axis=1).astype(np.float32),
        "brightness": ((x * x).sum(axis=(1, 2)) / mass).astype(np.float32),
        "ink": ink.mean(axis=(1, 2), dtype=np.float32),
    }


#: Words for each attribute, from low to high values, and the two cut points between
#: them. The cut points are roughly the 1/3 and 2/3 quantiles of each attribute over
#: the training set, so each word covers about a third of the images; they are fixed
#: numbers (not recomputed per batch) so that a caption does not depend on its batch.
CAPTION_BINS = {
    "mnist": {
        "thickness": ((1.75, 2.20), ("thin", "regular", "thick")),
        "size": ((16.0, 18.0), ("small", "mid-sized", "large")),
        "slant": ((0.0, 0.22), ("slanted-left", "upright", "slanted-right")),
    },
    "fashion": {
        "brightness": ((0.63, 0.77), ("dark", "grey", "light")),
        "size": ((19.0, 23.0), ("small", "mid-sized", "large")),
    },
}

#: Centre-of-mass offset in pixels beyond which a position phrase ("on the left", ...)
#: is added. MNIST digits are centred by their centre of mass (offsets under 1 pixel),
#: Fashion-MNIST articles less so (about 10% are off by more than 3 pixels).
POSITION_THRESHOLD = {"mnist": 1.5, "fashion": 3.0}

#: With an ``rng``, each descriptive word or phrase is left out with this probability.
CAPTION_DROPOUT = 0.3

#: (label, attribute word) pairs that the text-to-image recipes never see together: an image of such a
#: pair is captioned without that word (``captions(..., holdout=HOLDOUT[dataset])``), so the image is
#: still seen, never with that phrase. Each pair occurs in over a thousand training images, and each
#: attribute of CAPTION_BINS has two or three pairs. The prompt benchmark (tinygen.evaluate) asks for
#: them: does a model compose words it never saw together?
HOLDOUT = {
    "mnist": ((1, "thick"), (3, "thin"), (0, "regular"),
              (9, "small"), (6, "large"), (8, "mid-sized"),
              (7, "slanted-left"), (4, "slanted-right")),
    "fashion": ((0, "light"), (5, "dark"), (7, "grey"), (2, "light"),
                (3, "small"), (8, "large"), (6, "mid-sized"), (9, "large")),
}


def _position_phrases(position: np.ndarray, threshold: float) -> np.ndarray:
    """" on the left", " high up and on the right", ... or "" near the centre."""
    dx, dy = position[:, 0], position[:, 1]
    horizontal = np.select([dx < -threshold, dx > threshold], ["on the left", "on the right"], "")
    vertical = np.select([dy < -threshold, dy > threshold], ["high up", "low down"], "")
    return np.array([" " + " and ".join(filter(None, (v, h))) if v or h else ""
                     for v, h in zip(vertical, horizontal)])


def _with_article(words: list[str]) -> str:
    """Join words into a phrase that starts with "a" or "an"."""
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def label_phrases(dataset: str) -> list[str]:
    """The noun phrase of each label 0..9 as captions and prompts write it: "digit seven", "ankle boot"."""
    key = _canonical_name(dataset)
    noun = "digit " if key == "mnist" else ""
    return [noun + name for name in CLASS_NAMES[key]]


def attribute_words(images, dataset: str) -> dict[str, np.ndarray]:
    """The word of each attribute of CAPTION_BINS for every image, by the fixed cut points:
    {"thickness": array(["thick", "thin", ...]), "size": ..., "slant": ...} (MNIST), (N,) strings each.
    What a caption says of an image, and what the prompt benchmark checks a generated image against."""
    return _binned(image_attributes(images), _canonical_name(dataset))


def _binned(attributes: dict, key: str) -> dict[str, np.ndarray]:
    """The measured attributes of image_attributes turned into their CAPTION_BINS words."""
    return {name: np.asarray(words)[np.digitize(attributes[name], cuts)]
            for name, (cuts, words) in CAPTION_BINS[key].items()}


def check_holdout(holdout, dataset: str) -> tuple:
    """The (label, word) pairs of `holdout`, each checked: a label 0..9 and a word of CAPTION_BINS."""
    key = _canonical_name(dataset)
    words = {w for _, names in CAPTION_BINS[key].values() for w in names}
    pairs = tuple((int(label), str(word)) for label, word in holdout)
    bad = [p for p in pairs if not 0 <= p[0] < len(CLASS_NAMES[key]) or p[1] not in words]
    if bad:
        raise ValueError(f"holdout pairs {bad} are not (label 0..9, attribute word) of {key}; "
                         f"the words are: {', '.join(sorted(words))}")
    return pairs


def captions(images, labels, dataset: str, rng: np.random.Generator | None = None, holdout=()) -> list[str]:
    """Describe each image in words, e.g. "a thick small slanted-right digit seven".

    The attributes of ``image_attributes`` are binned with the fixed thresholds in
    ``CAPTION_BINS``: MNIST captions use thickness, size and slant, Fashion-MNIST ones
    brightness and size; both add a position phrase for off-centre images. Without
    ``rng`` the result is deterministic; with an ``rng`` each descriptive word is
    dropped with probability ``CAPTION_DROPOUT`` (the class name always stays), a cheap
    augmentation that teaches a model partial descriptions.

    Args:
        images: uint8 (N, 1, 28, 28) or (N, 28, 28), 0..255.
        labels: integer class labels (N,), 0..9.
        dataset: "mnist" or "fashion" (or an alias accepted by ``load_dataset``).
        holdout: (label, word) pairs (HOLDOUT[dataset] for the text-to-image recipes): an image of
            that label whose attribute is that word is captioned without the word.
    """
    key = _canonical_name(dataset)
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    attributes = image_attributes(images)
    adjectives = np.stack(list(_binned(attributes, key).values()), axis=1)  # (N, number of attributes)
    for label, word in check_holdout(holdout, key):
        # a held-out pair: the image keeps its caption, less the word
        adjectives[(labels[:, None] == label) & (adjectives == word)] = ""
    positions = _position_phrases(attributes["position"], POSITION_THRESHOLD[key])
    if rng is not None:
        adjectives = np.where(rng.random(adjectives.shape) < CAPTION_DROPOUT, "", adjectives)
        positions = np.where(rng.random(len(positions)) < CAPTION_DROPOUT, "", positions)
    names = label_phrases(key)
    return [_with_article([*filter(None, row), names[int(label)]]) + position
            for row, label, position in zip(adjectives, labels, positions)]


# ------------------------------------------------------------------------- prompts

#: Zero-shot prompt templates (CLIP, Radford et al. 2021); the first is the paper's default, the
#: others make a small ensemble (average the text embeddings of one label over the templates).
PROMPT_TEMPLATES = ("a photo of a {label}", "a picture of a {label}", "a drawing of a {label}")


def fill_template(template: str, phrase: str) -> str:
    """The template filled with a noun phrase, "a" made "an" before a vowel as the captions write it:
    fill_template("a photo of a {label}", "upright digit one") == "a photo of an upright digit one"."""
    if "{label}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{label}}' to fill")
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(label=phrase))


def prompts(dataset: str, template: str = PROMPT_TEMPLATES[0]) -> list[str]:
    """The template filled with each label's phrase, labels 0..9 (fill_template):
    prompts("fashion")[9] == "a photo of an ankle boot"."""
    return [fill_template(template, phrase) for phrase in label_phrases(dataset)]


def grid_prompts(dataset: str) -> list[str]:
    """The prompts of a text-to-image model's picture, two per class: the two ends of the first attribute
    of CAPTION_BINS ("a thin digit zero", "a thick digit zero", ...; Fashion: "a dark t-shirt", "a light
    t-shirt", ...), so a row per prompt shows both the class and the attribute."""
    key = _canonical_name(dataset)
    _, words = next(iter(CAPTION_BINS[key].values()))
    return [fill_template(f"a {word} {{label}}", phrase) for phrase in label_phrases(key) for word in (words[0], words[-1])]


def check_prompts(prompt, n: int, tokenizer=None) -> list[str]:
    """The n prompts of a text-conditioned sample: one string (for all n images) or a list of n
    strings. An empty prompt (no word) is refused, and so is a word outside the vocabulary (the
    Tokenizer's error lists the vocabulary), before any work is done."""
    prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
    if len(prompts) != n:
        raise ValueError(f"--prompt: got {len(prompts)} prompts for {n} images; give one, or one per image")
    tokenizer = tokenizer or Tokenizer()
    for p in dict.fromkeys(prompts):
        if not isinstance(p, str) or not split_words(p):
            raise ValueError(f"--prompt {p!r}: the prompt is empty; write a caption such as 'a thick digit seven'")
        tokenizer.encode(p)  # a word outside the vocabulary: one line that lists the vocabulary
    return prompts


# ----------------------------------------------------------------------- tokenizer

# a word: letters and digits, possibly joined by hyphens or apostrophes ("t-shirt", "slanted-right")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def split_words(text: str) -> list[str]:
    """Lowercase ``text`` and split it into words: a word is a run of letters and digits, which
    hyphens and apostrophes join ("t-shirt", "mid-sized" and "slanted-right" are one word each);
    every other character (spaces, ".", ",", "/", ...) separates words and is dropped. So
    "An Ankle boot." -> ["an", "ankle", "boot"] and "t-shirt/top" -> ["t-shirt", "top"]."""
    return _WORD.findall(text.lower())


def _every_position_phrase() -> list[str]:
    """Every phrase _position_phrases can write, read off it at the nine extreme offsets."""
    offsets = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)], np.float32)
    return list(_position_phrases(offsets, 0.5))


def caption_vocabulary() -> list[str]:
    """Every word the caption generator and the prompt templates can produce, sorted: the articles,
    the attribute words of CAPTION_BINS, the label phrases of both datasets, the position phrases
    and the templates' words."""
    vocab = {"a", "an"} | {w for phrase in _every_position_phrase() for w in split_words(phrase)}
    for key, bins in CAPTION_BINS.items():
        vocab |= {w for _, names in bins.values() for name in names for w in split_words(name)}
        vocab |= {w for phrase in label_phrases(key) for w in split_words(phrase)}
    vocab |= {w for t in PROMPT_TEMPLATES for w in split_words(t.replace("{label}", " "))}
    return sorted(vocab)


def _max_words() -> int:
    """The most words in any caption or prompt: the article, one word per attribute, the longest label
    phrase and the longest position phrase (captions), or the longest filled template (prompts)."""
    longest_position = max(len(split_words(p)) for p in _every_position_phrase())
    most = 0
    for key, bins in CAPTION_BINS.items():
        label = max(len(split_words(p)) for p in label_phrases(key))
        most = max(most, 1 + len(bins) + label + longest_position,
                   *(len(split_words(t.replace("{label}", " "))) + label for t in PROMPT_TEMPLATES))
    return most


class Tokenizer:
    """Word-level tokenizer over the caption vocabulary (minGPT keeps its tokenizer in a file of its own too).

        ids:    <pad> = 0, <start> = 1, <end> = 2, then the words of caption_vocabulary() in sorted order
        encode("A thin digit seven.") -> [<start>, a, thin, digit, seven, <end>]   (split_words rules)
        decode(ids)                    -> "a thin digit seven"                     (special tokens dropped)
        batch(texts, length)           -> int64 (B, length): encode each, then pad with <pad>; a longer
                                          text is truncated to its first length - 2 words and keeps its
                                          <end>, so every row has exactly one <end> (CLIP reads the
                                          text feature there) and ids != pad_id is the key-padding mask.

    A word outside the vocabulary raises a ValueError that names it and lists the vocabulary.
    max_length: the longest encoded caption or prompt (with <start> and <end>): a context length that
    never truncates. vocab_size: the number of ids (the size of a model's token embedding)."""

    PAD, START, END = "<pad>", "<start>", "<end>"
    pad_id, start_id, end_id = 0, 1, 2

    def __init__(self, vocabulary=None):
        words = list(caption_vocabulary() if vocabulary is None else vocabulary)
        bad = [w for w in words if split_words(w) != [w]]
        if bad or len(set(words)) != len(words):
            raise ValueError(f"Tokenizer: vocabulary entries must be distinct lowercase words (see split_words); "
                             f"got {bad or 'duplicates'}")
        self.vocab = [self.PAD, self.START, self.END] + words           # id -> token
        self.index = {w: i for i, w in enumerate(self.vocab)}           # token -> id
        self.max_length = _max_words() + 2

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """[<start>, word ids..., <end>] of one text (lowercased, split by split_words)."""
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode: expected a string, got {type(text).__name__}")
        tokens = split_words(text)
        unknown = list(dict.fromkeys(w for w in tokens if w not in self.index))
        if unknown:
            listed = ", ".join(self.vocab[3:])
            raise ValueError(f"Tokenizer: {', '.join(map(repr, unknown))} in {text!r} "
                             f"{'is' if len(unknown) == 1 else 'are'} not in the vocabulary; "
                             f"the {self.vocab_size - 3} words are: {listed}")
        return [self.start_id] + [self.index[w] for w in tokens] + [self.end_id]

    def decode(self, ids) -> str:
        """The words of a sequence of ids, joined by single spaces; <pad>, <start> and <end> are dropped."""
        ids = np.asarray(ids).reshape(-1) if not isinstance(ids, (list, tuple)) else list(ids)
        bad = [int(i) for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"Tokenizer.decode: ids {bad} are outside 0 .. {self.vocab_size - 1}")
        return " ".join(self.vocab[int(i)] for i in ids if int(i) > self.end_id)

    def batch(self, texts, length: int | None = None) -> np.ndarray:
        """int64 (B, length) ids of the texts, padded with <pad>; too long a text keeps <start>, its first
        length - 2 words and <end>. length defaults to max_length."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.batch: expected a list of strings, got one string (wrap it in a list)")
        length = self.max_length if length is None else int(length)
        if length < 2:
            raise ValueError(f"Tokenizer.batch: length must be at least 2 (<start> and <end>), got {length}")
        out = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        for row, text in zip(out, texts):
            ids = self.encode(text)
            if len(ids) > length:
                ids = ids[:length - 1] + [self.end_id]
            row[:len(ids)] = ids
        return out

    def __repr__(self):
        return f"Tokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"
