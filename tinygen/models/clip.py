"""CLIP: Contrastive Language-Image Pre-training (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision").

Two encoders map images and texts into one space, trained so that an image and its own caption are
nearer each other than any other caption or image in the batch. The image encoder is ViT (vit.py), its
head the projection W_i; the text encoder is a causal transformer over the word tokenizer of
tinygen/text.py, read at the <end> token (EOT: with causal attention the last token is the only one
that has seen the whole text, and it never sees the padding after it):

    I_f = ViT(x)[CLS]                       (B, d_i)     x (B, 1, 28, 28)
    T_f = Transformer_causal(E[t] + P)[EOT] (B, d_t)     t (B, L) token ids, padded
    I_e = norm(I_f W_i),  T_e = norm(T_f W_t)            (B, d_e) each,  norm(v) = v / ||v||
    logits = exp(tau) I_e T_e^T             (B, B)       exp(tau) clipped at 100, tau_0 = log(1 / 0.07)
    loss = (CE(logits, arange B) + CE(logits^T, arange B)) / 2       the symmetric cross-entropy:
           row b asks "which caption is image b's?", column b "which image is caption b's?"

The captions say more than the label: "a thick small slanted-right digit seven", "a dark large
ankle boot on the left" (text.captions: stroke thickness, size, slant, brightness and position
measured on the image, each word dropped with probability 0.3 while training), and half of them
are put into one of the prompt templates ("a photo of a thick small digit seven").

Zero-shot classification needs no classifier: embed "a photo of a {label}" for the ten labels and
pick the nearest (or average the unit embeddings of several templates first: the ensemble):

    y_hat = argmax_c  I_e . W_c,      W_c = norm(mean_k T_e("template_k filled with label c"))

evaluate() reports on the test split: zero-shot accuracy (one template and the ensemble),
text-to-image retrieval recall@1 (each test caption against a gallery of RETRIEVAL_GALLERY test
images, its own image among them), and attribute zero-shot accuracy ("a thick digit seven" against
"a thin digit seven" on the images whose thickness is one of the two) with its chance level.

encode_image, encode_text and score(images, texts) are what the text-to-image models use (DALL-E
re-ranks its samples by score; unCLIP's prior maps text embeddings to image embeddings).

Recipe (Config): image ViT dim 64, 3 blocks of 4 heads, 4x4 patches; text transformer dim 64,
2 causal blocks; joint space 64; AdamW (lr 1e-3, weight decay 0.1 on the matrices) with a cosine
decay, batch 128, random shifts of up to 1 pixel, grad clip 1, 10 epochs. Figures: docs/models/clip.md.

    python -m tinygen train clip --no-progress
    python -m tinygen train clip --dataset fashion --no-progress
    python -m tinygen evaluate clip --checkpoint runs/clip-mnist/last.npz
"""
import math
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, io, nn, optim, text
from .base import Config, Model, inference, optimizer_step
from .classifier import random_shift
from .vit import ViT, ViTConfig

#: Text-to-image retrieval: each caption looks for its image among this many test images.
RETRIEVAL_GALLERY = 100


@dataclass
class CLIPConfig(Config):
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    weight_decay: float = 0.1      # on weight matrices only (not biases, norms or the temperature)
    patch_size: int = 4            # 28 x 28 -> 49 patches
    image_dim: int = 64
    image_depth: int = 3
    image_heads: int = 4
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    mlp_ratio: float = 2.0
    embed_dim: int = 64            # the joint space d_e
    init_temperature: float = 0.07  # logit scale exp(tau) starts at 1 / 0.07
    max_logit_scale: float = 100.0
    template_prob: float = 0.5     # a training caption is put into a PROMPT_TEMPLATE with this probability
    augment: int = 1               # random shifts of up to this many pixels (0 turns augmentation off)


class TextEncoder(nn.Module):
    """Token + learned position embeddings, a causal pre-LN transformer, the feature at <end>, W_t."""

    def __init__(self, vocab_size, max_length, dim, depth, num_heads, mlp_ratio, embed_dim, end_id):
        super().__init__()
        self.end_id = end_id
        self.token_embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.pos_embed = nn.LearnedPositionEmbedding(max_length, dim)
        self.transformer = nn.Transformer(dim, depth, num_heads, mlp_ratio=mlp_ratio, causal=True)
        self.projection = nn.Linear(dim, embed_dim, bias=False)          # W_t

    def eot_positions(self, ids):
        """The index of the <end> token of each row (B,); a row without exactly one is refused."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"CLIP text encoder: expected integer token ids (B, L), got {ids.dtype} {ids.shape}")
        ends = (ids == self.end_id).sum(axis=1)
        if (ends != 1).any():
            bad = np.flatnonzero(ends != 1)[:5].tolist()
            raise ValueError(f"CLIP text encoder: rows {bad} of the ids {ids.shape} do not hold exactly one <end> "
                             f"token (id {self.end_id}); encode texts with Tokenizer.batch")
        return (ids == self.end_id).argmax(axis=1)

    def token_outputs(self, ids):
        """The transformer's output at every position (B, L, dim) and T_f, the one at <end> (B, dim): what
        a text-to-image model attends to and conditions on (GLIDE)."""
        eot = self.eot_positions(ids)                                   # (B,)
        h = self.pos_embed(self.token_embed(np.asarray(ids)))           # (B, L, dim)
        h = self.transformer(h)                                         # (B, L, dim), causal, final LN
        # T_f = h[b, EOT_b]
        return h, h[np.arange(len(eot)), eot]

    def forward(self, ids):  # (B, L) int -> (B, embed_dim)
        return self.projection(self.token_outputs(ids)[1])              # (B, embed_dim)


def _unit(v):
    """norm(v) = v / ||v|| along the last axis (Tensors)."""
    return v / (v * v).sum(axis=-1, keepdims=True).sqrt()


def _unit_np(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def symmetric_cross_entropy(logits):
    """(CE(logits, arange B) + CE(logits^T, arange B)) / 2 of the (B, B) image-text logits."""
    target = np.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class CLIP(Model):
    """CLIP: a ViT and a causal text transformer trained contrastively on captions; zero-shot labels."""
    Config = CLIPConfig
    tiny_config = {"image_dim": 16, "image_depth": 1, "image_heads": 2, "text_dim": 16, "text_depth": 1,
                   "text_heads": 2, "embed_dim": 16, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.tokenizer = text.Tokenizer()
        vit = ViTConfig(patch_size=c.patch_size, dim=c.image_dim, depth=c.image_depth, num_heads=c.image_heads,
                        mlp_ratio=c.mlp_ratio, augment=0)
        self.image_encoder = ViT(vit, num_classes=c.embed_dim)          # its head is W_i
        self.text_encoder = TextEncoder(self.tokenizer.vocab_size, self.tokenizer.max_length, c.text_dim,
                                        c.text_depth, c.text_heads, c.mlp_ratio, c.embed_dim, self.tokenizer.end_id)
        self.logit_scale = nn.Parameter(np.array(math.log(1 / c.init_temperature), np.float32))   # tau

    def configure_optimizers(self):
        params = list(self.parameters())
        return {"main": optim.AdamW([{"params": [p for p in params if p.ndim >= 2]},
                                     {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                                    lr=self.config.lr, weight_decay=self.config.weight_decay)}

    # ---------------------------------------------------------------- data: images and captions
    def training_texts(self, images, labels):
        """Captions with words dropped at random (text.captions with the model's rng), half of them put
        into a prompt template: "a photo of a thick digit seven"."""
        captions = text.captions(images, labels, self.dataset, rng=self.rng)   # "a thick digit seven"
        templated = self.rng.random(len(captions)) < self.config.template_prob
        which = self.rng.integers(0, len(text.PROMPT_TEMPLATES), len(captions))
        return [text.fill_template(text.PROMPT_TEMPLATES[k], caption.split(" ", 1)[1]) if wrap else caption
                for caption, wrap, k in zip(captions, templated, which)]

    def prepare_batch(self, images, labels):
        x = data.to_float(images)                                       # (B, 1, 28, 28) in [0, 1]
        if self.config.augment:
            x = random_shift(x, self.config.augment, self.rng)
        ids = self.tokenizer.batch(self.training_texts(images, labels))  # (B, L) int64
        return Tensor(x), ids

    # ---------------------------------------------------------------- the two encoders and the loss
    def image_features(self, x):
        """I_e = norm(I_f W_i): unit image embeddings (B, embed_dim) of float images x (B, 1, 28, 28)."""
        vit = self.image_encoder
        return _unit(vit.head(vit.features(x)))                         # (B, d_e)

    def text_features(self, ids):
        """T_e = norm(T_f W_t): unit text embeddings (B, embed_dim) of token ids (B, L)."""
        return _unit(self.text_encoder(ids))                            # (B, d_e)

    def scale(self):
        """exp(tau), tau clipped at log(max_logit_scale): the inverse temperature, a 0-d Tensor."""
        return F.clip(self.logit_scale, hi=math.log(self.config.max_logit_scale)).exp()

    def loss(self, batch):
        x, ids = batch
        image, caption = self.image_features(x), self.text_features(ids)   # (B, d_e) each
        # logits = exp(tau) I_e T_e^T
        logits = self.scale() * (image @ caption.T)                     # (B, B): images x captions
        loss = symmetric_cross_entropy(logits)
        acc = float((logits.data.argmax(axis=1) == np.arange(len(ids))).mean())
        return loss, {"acc": acc, "logit_scale": float(self.scale().item())}

    def training_step(self, batch, optimizers):
        loss, logs = self.loss(batch)
        norm = optimizer_step(loss, optimizers["main"], self.config.grad_clip)
        # tau = min(tau, log 100) after each step (CLIP's clamp), so the scale never sticks above the bound
        np.minimum(self.logit_scale.data, math.log(self.config.max_logit_scale), out=self.logit_scale.data)
        return {"loss": loss.item(), **logs, **({} if norm is None else {"grad_norm": norm})}

    # ---------------------------------------------------------------- the API of the text-to-image models
    @inference
    def encode_image(self, images, batch_size=500):
        """Unit image embeddings (N, embed_dim), NumPy, of uint8 or [0, 1] images (N, 1, 28, 28)."""
        x = data.to_float(images)
        return np.concatenate([self.image_features(Tensor(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])

    @inference
    def encode_text(self, texts, batch_size=2000):
        """Unit text embeddings (N, embed_dim), NumPy, of a list of strings (or token ids (N, L))."""
        ids = self._ids(texts, "encode_text")
        return np.concatenate([self.text_features(ids[i:i + batch_size]).numpy()
                               for i in range(0, len(ids), batch_size)])

    @inference
    def encode_text_tokens(self, texts, batch_size=2000):
        """The text transformer's output at every position (N, L, text_dim), NumPy, of a list of strings (or
        token ids (N, L)): the per-token features a text-to-image model cross-attends to (Stable Diffusion).
        The positions after a row's <end> hold the padding's outputs (the causal mask lets them see the text)."""
        ids = self._ids(texts, "encode_text_tokens")
        return np.concatenate([self.text_encoder.token_outputs(ids[i:i + batch_size])[0].numpy()
                               for i in range(0, len(ids), batch_size)])

    def _ids(self, texts, method):
        if isinstance(texts, str):
            raise TypeError(f"CLIP.{method}: expected a list of strings, got one string (wrap it in a list)")
        return np.asarray(texts) if isinstance(texts, np.ndarray) else self.tokenizer.batch(list(texts))

    def score(self, images, texts):
        """Cosine similarities I_e . T_e (N images, M texts), in [-1, 1]; times exp(tau) they are the
        logits. DALL-E re-ranks N samples of one prompt by score(samples, [prompt])[:, 0]."""
        return self.encode_image(images) @ self.encode_text(texts).T

    # ---------------------------------------------------------------- zero-shot classification
    def class_embeddings(self, templates=(text.PROMPT_TEMPLATES[0],)):
        """W (10, embed_dim): per label, the mean of the unit embeddings of the filled templates, renormalised."""
        each = np.stack([self.encode_text(text.prompts(self.dataset, t)) for t in templates])  # (K, 10, d_e)
        return _unit_np(each.mean(axis=0))

    def predict(self, images, templates=(text.PROMPT_TEMPLATES[0],)):
        """Zero-shot labels (N,): argmax_c I_e . W_c."""
        return (self.encode_image(images) @ self.class_embeddings(templates).T).argmax(axis=1)

    def evaluate(self, images, labels):
        """Zero-shot accuracy (one template, the ensemble), retrieval recall@1 and attribute accuracy."""
        labels = np.asarray(labels)
        image = self.encode_image(images)                               # (N, d_e)
        results = {}
        for key, templates in (("test_acc", text.PROMPT_TEMPLATES[:1]), ("test_acc_ensemble", text.PROMPT_TEMPLATES)):
            results[key] = float(((image @ self.class_embeddings(templates).T).argmax(axis=1) == labels).mean())
        results.update(self.retrieval(images, labels, image))
        results.update(self.attribute_accuracy(images, labels, image))
        return results

    def retrieval(self, images, labels, image=None, gallery=RETRIEVAL_GALLERY):
        """Text-to-image recall@1: the full caption of each image (no words dropped) looks for its image among
        the `gallery` images of its block of the test set (consecutive blocks; the rest left out).
            test_recall_at_1               the top image is the caption's own
            test_recall_at_1_same_caption  the top image has the very same caption (an equally good answer)
            test_recall_at_1_ceiling       mean 1 / (images of the gallery with that caption): the best a
                                           model can expect when identical captions tie"""
        image = self.encode_image(images) if image is None else image
        G = min(gallery, len(image))
        n = len(image) // G * G
        captions = text.captions(images[:n], labels[:n], self.dataset)
        _, codes = np.unique(captions, return_inverse=True)             # (n,) an id per distinct caption
        codes = codes.reshape(-1, G)                                    # (n / G, G)
        caption = self.encode_text(captions).reshape(-1, G, image.shape[1])   # (n / G, G, d_e)
        sims = np.einsum("gqe,gie->gqi", caption, image[:n].reshape(-1, G, image.shape[1]))  # captions x images
        top = sims.argmax(axis=2)                                       # (n / G, G)
        same = codes[:, :, None] == codes[:, None, :]                   # (n / G, G, G)
        return {"test_recall_at_1": float((top == np.arange(G)).mean()),
                "test_recall_at_1_same_caption": float(np.take_along_axis(codes, top, axis=1).__eq__(codes).mean()),
                "test_recall_at_1_ceiling": float((1 / same.sum(axis=2)).mean())}

    def attribute_accuracy(self, images, labels, image=None):
        """For each attribute of the captions (text.CAPTION_BINS: thickness, size, slant on MNIST;
        brightness, size on Fashion): on the test images in its lowest or highest bin, the fraction for which
        "a {high word} {label}" scores above "a {low word} {label}" (the true label in both) or the reverse,
        as the image is; and the chance level, the share of the larger of the two bins."""
        image = self.encode_image(images) if image is None else image
        attributes = text.image_attributes(images)
        phrases = text.label_phrases(self.dataset)
        results = {}
        for name, (cuts, words) in text.CAPTION_BINS[data._canonical_name(self.dataset)].items():
            level = np.digitize(attributes[name], cuts)                 # (N,) 0 low, 1 middle, 2 high
            keep = level != 1
            if not keep.any():  # no image in either end bin (possible for a handful of images)
                continue
            low = self.encode_text([text.fill_template("a {label}", f"{words[0]} {p}") for p in phrases])   # (10, d_e)
            high = self.encode_text([text.fill_template("a {label}", f"{words[-1]} {p}") for p in phrases])
            y, e = labels[keep], image[keep]
            says_high = (e * high[y]).sum(axis=1) > (e * low[y]).sum(axis=1)
            is_high = level[keep] == 2
            results[f"test_attr_{name}_acc"] = float((says_high == is_high).mean())
            results[f"test_attr_{name}_chance"] = float(max(is_high.mean(), 1 - is_high.mean()))
        return results

    # ---------------------------------------------------------------- the picture
    def visualize(self, images, labels, path):
        n = min(8, len(images))
        texts = text.captions(images[:n], labels[:n], self.dataset)
        # the cosine similarities, one row per caption: a trained model puts the bright cells on the diagonal
        io.save_similarity_matrix(self.score(images[:n], texts).T, images[:n], texts, path)
