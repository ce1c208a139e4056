"""Classifiers: an MLP and a small CNN that label MNIST / Fashion-MNIST digits and articles.

They prove the stack end to end, and the CNN is the evaluation suite's judge (tinygen.evaluate):
its penultimate 128-d features give FID-judge, its predictions give conditional accuracy.

    p(y | x) = softmax(f_theta(x)),   loss = -log p(y_true | x)   (cross-entropy)

Train:  python -m tinygen train cnn --dataset mnist
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import nn
from . import register
from .base import Config, Model, inference


@dataclass
class MLPConfig(Config):
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    hidden: int = 512
    dropout: float = 0.2


@dataclass
class CNNConfig(Config):
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.3
    augment: int = 2  # random shifts of up to this many pixels (0 turns augmentation off)


class _Classifier(Model):
    """Shared by both classifiers: cross-entropy loss, accuracy, prediction grids."""

    def logits(self, x):
        raise TypeError(f"{type(self).__name__} must define logits(x)")

    def loss(self, batch):
        x, y = batch
        logits = self.logits(x)                                     # (B, 10)
        loss = F.cross_entropy(logits, y)                           # mean_b -log softmax(logits_b)[y_b]
        acc = float((logits.data.argmax(axis=1) == y).mean())
        return loss, {"acc": acc}

    @inference
    def predict_proba(self, images, batch_size=1000):
        """Class probabilities for uint8 or [0,1] float images (B, 1, 28, 28), in eval mode."""
        x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        return np.concatenate([F.softmax(self.logits(Tensor(x[i:i + batch_size])), dim=1).numpy()
                               for i in range(0, len(x), batch_size)])

    def predict(self, images):
        return self.predict_proba(images).argmax(axis=1)

    def evaluate(self, images, labels):
        return {"test_acc": float((self.predict(images) == labels).mean())}

    def visualize(self, images, labels, path):
        """A grid of test images titled with the predicted label (red when wrong)."""
        from ..io import save_labeled_grid
        pred = self.predict(images[:64])
        save_labeled_grid(images[:64], [str(p) for p in pred], path, wrong=pred != labels[:64])


@register("mlp")
class MLP(_Classifier):
    """MLP classifier: 784-512-512-10 with ReLU and dropout (>= 98% on MNIST)."""
    Config = MLPConfig

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.net = nn.Sequential(
            nn.Flatten(),                                 # (B, 784)
            nn.Linear(784, c.hidden), nn.ReLU(), nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.hidden), nn.ReLU(), nn.Dropout(c.dropout),
            nn.Linear(c.hidden, 10),                      # (B, 10) logits
        )

    def logits(self, x):
        return self.net(x)


@register("cnn")
class CNN(_Classifier):
    """CNN classifier: 3 conv layers + 2 FC (>= 99.2% MNIST, >= 91.5% Fashion); the judge."""
    Config = CNNConfig

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),                      # (B, 32, 28, 28)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (B, 64, 14, 14)
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (B, 64, 7, 7)
            nn.Flatten(),                                                   # (B, 3136)
            nn.Linear(3136, 128), nn.ReLU(),                                # (B, 128): the judge's features
        )
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(128, 10))

    def prepare_batch(self, images, labels):
        x, y = super().prepare_batch(images, labels)
        if self.config.augment:  # shift every image by its own random (dy, dx): one gather, no loop
            x = Tensor(random_shift(x.data, self.config.augment, self.rng))
        return x, y

    def logits(self, x):
        return self.head(self.features(x))

    @inference
    def embed(self, images, batch_size=1000):
        """Penultimate features (N, 128) of [0,1] float or uint8 images, in eval mode."""
        x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        return np.concatenate([self.features(Tensor(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])


def random_shift(x, max_shift, rng):
    """Translate each image (B, C, H, W) by an integer offset in [-max_shift, max_shift], zero-filled."""
    B, C, H, W = x.shape
    p = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, B))
    rows = dy[:, None] + np.arange(H)                               # (B, H)
    cols = dx[:, None] + np.arange(W)                               # (B, W)
    b = np.arange(B)[:, None, None]
    return padded[b, :, rows[:, :, None], cols[:, None, :]].transpose(0, 3, 1, 2)  # (B, C, H, W)
