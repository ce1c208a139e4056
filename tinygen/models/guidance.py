"""Classifier guidance (Dhariwal & Nichol, 2021, "Diffusion Models Beat GANs on Image Synthesis").

The idea: an unconditional diffusion model knows p(x_t); a classifier trained on *noisy* images
knows p(y | x_t). Bayes' rule gives the conditional score, and so a way to steer any trained
diffusion model towards a class without retraining it:

    grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t)
    guided mean         mu' = mu + s Sigma grad_x log p(y | x_t)          (ancestral sampling)
    in eps form         eps' = eps - s sqrt(1 - abar_t) grad_x log p(y | x_t)   (DDIM; used for both samplers)

with s > 1 sharpening p(y | x_t)^s: more class-typical samples, less diversity. The classifier sees
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for random t, and t itself (the sinusoidal embedding),
so its schedule (T, schedule) must be the diffusion model's. The guidance itself is
tinygen.diffusion.classifier_guidance, which wraps any eps_theta with log_prob_grad below.

Train:  python -m tinygen train noisy_classifier            (2 epochs; figures: docs/models/ddpm.md)
Use:    ddpm.sample(n, label=y, guidance=0, steps=50, classifier=clf, classifier_scale=s)
        python -m tinygen.evaluate guidance-sweep --checkpoint runs/ddpm-mnist/last.npz \
            --classifier runs/noisy_classifier-mnist/last.npz
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn
from ..diffusion import GaussianDiffusion, beta_schedule
from .base import Config, Model, inference
from .ddpm import ResBlock


@dataclass
class NoisyClassifierConfig(Config):
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    T: int = 1000
    schedule: str = "linear"   # T and schedule must be those of the diffusion model it guides
    base_channels: int = 16
    quick_steps: int = 200


class NoisyClassifierNet(nn.Module):
    """The down half of ddpm's U-Net, then global average pooling and a linear layer:
    (B, 1, 28, 28), t -> logits (B, 10)."""

    def __init__(self, base=16, num_classes=data.N_CLASSES):
        super().__init__()
        emb_dim = 4 * base
        self.time = nn.TimestepEmbedding(base, emb_dim)
        self.inp = nn.Conv2d(1, base, 3, padding=1)                          # (B, base, 28, 28)
        self.block1 = ResBlock(base, base, emb_dim)
        self.down1 = nn.Conv2d(base, 2 * base, 3, stride=2, padding=1)       # (B, 2 base, 14, 14)
        self.block2 = ResBlock(2 * base, 2 * base, emb_dim)
        self.down2 = nn.Conv2d(2 * base, 4 * base, 3, stride=2, padding=1)   # (B, 4 base, 7, 7)
        self.block3 = ResBlock(4 * base, 4 * base, emb_dim)
        self.norm, self.head = nn.GroupNorm(8, 4 * base), nn.Linear(4 * base, num_classes)

    def forward(self, x, t):
        emb = self.time(t)
        h = self.block1(self.inp(x), emb)
        h = self.block2(self.down1(h), emb)
        h = self.block3(self.down2(h), emb)
        return self.head(F.silu(self.norm(h)).mean(axis=(2, 3)))             # (B, 10)


class NoisyClassifier(Model):
    """Classifier of noisy images p(y | x_t, t), for classifier guidance of a diffusion model."""
    Config = NoisyClassifierConfig
    image_range = "signed"
    tiny_config = {"T": 5, "base_channels": 8, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.diffusion = GaussianDiffusion(beta_schedule(c.schedule, c.T))
        self.net = NoisyClassifierNet(c.base_channels)

    def loss(self, batch):
        x0, y = batch
        x_t, t, _ = self.diffusion.diffuse(x0.numpy(), self.rng)          # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
        logits = self.net(Tensor(x_t), t)
        loss = F.cross_entropy(logits, y)
        return loss, {"acc": float((logits.numpy().argmax(1) == y).mean())}

    def check_matches(self, diffusion_model):
        """Refuse to guide a model whose noise schedule differs from the one this classifier learned."""
        if tuple(diffusion_model.shape) != (1, 28, 28):
            raise ValueError(f"the classifier reads 28x28 images; {diffusion_model.name} diffuses {diffusion_model.shape} "
                             f"latents, so it cannot guide it")
        mine = (self.config.T, self.config.schedule)
        theirs = (diffusion_model.config.T, diffusion_model.config.schedule)
        if mine != theirs:
            raise ValueError(f"the classifier was trained for (T, schedule) = {mine}, the diffusion model uses {theirs}")

    @inference
    def predict(self, images, t=0, batch_size=1000):
        """Labels of images (uint8 or [0, 1]) after noising them to step t."""
        x = data.to_signed(images)
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            tb = np.full(len(xb), t)
            x_t = self.diffusion.q_sample(xb, tb, self.rng.standard_normal(xb.shape, dtype=np.float32)) if t else xb
            out.append(self.net(Tensor(x_t), tb).numpy().argmax(1))
        return np.concatenate(out)

    def evaluate(self, images, labels, n=2000):
        """Test accuracy at the noise levels t = 0, T/4, T/2, 3T/4 (the first n test images)."""
        return {f"test_acc_t{t}": float((self.predict(images[:n], t) == labels[:n]).mean()) for t in self.noise_levels()}

    def noise_levels(self):
        return [round(f * self.config.T) for f in (0, 0.25, 0.5, 0.75)]

    @inference(grad=True)
    def log_prob_grad(self, x_t, t, y):
        """grad_x log p(y | x_t, t) for x_t (B, 1, 28, 28) NumPy at steps t (B,) (or one step for all),
        labels y (B,): a NumPy array like x_t (the grad_log_p of tinygen.diffusion.classifier_guidance)."""
        x = Tensor(x_t, requires_grad=True)
        log_p = F.log_softmax(self.net(x, np.broadcast_to(t, (len(x_t),))), dim=1)   # (B, 10)
        log_p[np.arange(len(y)), np.asarray(y)].sum().backward()
        return x.grad

    @inference
    def visualize(self, images, labels, path):
        """Test images noised to t = 0, T/4, T/2, 3T/4 (rows), titled with the classifier's guesses."""
        from ..io import save_labeled_grid
        x = images[:8]
        rows, titles = [], []
        for t in self.noise_levels():
            xs = data.to_signed(x)
            tb = np.full(len(xs), t)
            if t:
                xs = self.diffusion.q_sample(xs, tb, self.rng.standard_normal(xs.shape, dtype=np.float32))
            rows.append((xs + 1) / 2)
            titles += [f"t{t}:{p}" for p in self.net(Tensor(xs), tb).numpy().argmax(1)]
        save_labeled_grid(np.clip(np.concatenate(rows), 0, 1), titles, path, nrow=8)
