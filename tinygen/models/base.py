"""What every model shares with the training loop: its Config, the optimiser it trains with,
how a raw data batch becomes model input, and the default training step.

    loss(batch) -> (loss Tensor, logs dict)      models with one optimiser
    training_step(batch, optimizers) -> logs     override for several optimisers (GANs)
    sample(n, **condition) -> (n, 1, H, W) NumPy array in [0, 1]   generative models
"""
import functools
from dataclasses import asdict, dataclass, fields

import numpy as np

from autograd import Tensor, no_grad
from .. import data, nn, optim


def inference(method):
    """Run a model method under no_grad() in eval mode, and put the model back in the mode it was in
    (for sample, predict, evaluate: dropout off, BatchNorm on its running statistics, no graph)."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return method(self, *args, **kwargs)
        finally:
            self.train(was_training)
    return wrapped


@dataclass
class Config:
    """Training recipe fields every model has; each model's Config adds its own."""
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float = 0.0  # global-norm clipping; 0 turns it off
    lr_schedule: str = "constant"  # "constant", or "cosine": lr (1 + cos(pi step / total steps)) / 2
    quick_steps: int = 300  # --quick trains this many steps


def config_from_dict(cls, values):
    """Build a Config dataclass from a dict, refusing unknown keys by name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
    return cls(**values)


class Model(nn.Module):
    Config = Config
    name = "model"
    conditional = False  # True when sample() takes labels
    sample_options = ()  # the CLI's sampling options sample() takes: "label", "prompt", "guidance", "steps"
    dataset = "mnist"  # the dataset it is trained on (set by the trainer and by evaluate.load_trained)
    image_range = "unit"  # "unit" [0, 1], "signed" [-1, 1] or "binary" {0, 1}: what prepare_batch feeds

    def __init__(self, config=None):
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.rng = np.random.default_rng(0)  # the model's own randomness (noise, binarisation); seeded by the trainer

    def config_dict(self):
        return asdict(self.config)

    # ---------------------------------------------------------------- training
    def configure_optimizers(self):
        """{name: optimizer}; one Adam over all parameters unless a model says otherwise."""
        return {"main": optim.Adam(self.parameters(), lr=self.config.lr)}

    def prepare_batch(self, images, labels):
        """Raw uint8 images (B, 1, 28, 28) and int labels -> the model's input (as NumPy)."""
        if self.image_range == "signed":
            x = data.to_signed(images)
        elif self.image_range == "binary":
            x = data.binarize(images, self.rng)
        else:
            x = data.to_float(images)
        return Tensor(x), labels

    def training_step(self, batch, optimizers):
        opt = optimizers["main"]
        opt.zero_grad()
        loss, logs = self.loss(batch)
        loss.backward()
        if self.config.grad_clip:
            logs["grad_norm"] = optim.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        opt.step()
        return {"loss": loss.item(), **logs}

    # ---------------------------------------------------------------- showing progress
    def visualize(self, images, labels, path):
        """Save a picture of what the model does now (samples for generative models)."""
        from ..io import save_image_grid
        save_image_grid(self.sample(64), path, scale=2)

    def evaluate(self, images, labels):
        """Test-split metrics computed after each epoch (a dict; empty by default)."""
        return {}
