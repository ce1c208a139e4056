"""pix2pix (Isola, Zhu, Zhou & Efros, 2017): image-to-image translation with a conditional GAN.

The idea: learn a map G from a condition image c (here an edge map, or an item with its centre cut
out) to the image x it came from, from (c, x) pairs. L1 alone gives the right structure but, where
several answers are plausible, their blurry average; a discriminator that sees the pair (c, image)
and judges every local patch of it adds the missing "looks real here" pressure. The losses:

    L_D  = -E[log D(c, x)] - E[log(1 - D(c, G(c)))]         (averaged over D's map of patches)
    L_G  = -E[log D(c, G(c))] + lambda E[|x - G(c)|_1]        lambda = 100

G is a U-Net: an encoder 28 -> 14 -> 7, a decoder 7 -> 14 -> 28, and skip connections that
concatenate each encoder map to the decoder map of the same size, so detail in c (where the edges
are) reaches the output without squeezing through the 7 x 7 bottleneck. D is a PatchGAN: a fully
convolutional net on [c, image] whose output is a 7 x 7 map of logits, each looking at an 18 x 18
patch (the paper's 70 x 70 PatchGAN shrunk for 28 x 28 images); L1 already fixes the low frequencies,
so D only needs to judge local texture. G is deterministic here (the paper's dropout noise is left out;
the paper reports that G learns to ignore its noise anyway). Config adversarial=False trains the same G
on lambda L1 alone: the blurry baseline that shows what the adversary adds.

Tasks (Config task), built from Fashion-MNIST items by tinygen.data:
    "edges":   c = Sobel edge map of x (data.edges)             -> x
    "inpaint": c = x with its centre 14 x 14 set to grey (data.mask_center)  -> x

Train:  python -m tinygen train pix2pix --dataset fashion
        other tasks and the baseline, from Python:
        from tinygen.train import train, TrainOptions
        train("pix2pix", TrainOptions(dataset="fashion", out="runs/pix2pix-inpaint"), task="inpaint")
        train("pix2pix", TrainOptions(dataset="fashion", out="runs/pix2pix-l1"), adversarial=False)
Recipe: 5 epochs of 938 steps at batch 64 (4,690 steps), edges task, lambda = 100.
        Figures, and the L1-only baseline: docs/models/pix2pix.md.
Metrics after each epoch (evaluate): test_l1 = mean |G(c) - x| on the test split in [0, 1] units. The
evaluation suite (python -m tinygen evaluate pix2pix ...) adds judge_acc, how often the judge names the
item's true class on G's output, and the FID-judge of the outputs (blur shows there, not in L1).
"""
from dataclasses import dataclass

import numpy as np

import autograd.functional as F
from autograd import Tensor
from .. import data, nn
from .base import inference
from .gan import AdversarialConfig, GANBase, dcgan_init, generator_loss

TASKS = ("edges", "inpaint")


@dataclass
class Pix2PixConfig(AdversarialConfig):
    epochs: int = 5
    batch_size: int = 64
    task: str = "edges"          # "edges" (edge map -> item) or "inpaint" (masked -> full)
    lambda_l1: float = 100.0     # weight of the L1 term
    adversarial: bool = True     # False: the L1-only baseline (same G, no D)
    width: int = 64              # channels of the 14 x 14 layers; the 7 x 7 layers have 2 x width


class UNetGenerator(nn.Module):
    """G: condition (B, 1, 28, 28) -> image (B, 1, 28, 28) in (-1, 1), a U-Net with skips at 14 x 14 and
    7 x 7 (not ddpm's noise-predicting UNet)."""

    def __init__(self, width=64):
        super().__init__()
        w = width
        self.down1 = nn.Sequential(nn.Conv2d(1, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2))   # (B, w, 14, 14)
        self.down2 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),                   # (B, 2w, 7, 7)
                                   nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2))
        self.middle = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1),                        # (B, 2w, 7, 7)
                                    nn.BatchNorm2d(2 * w), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * w, w, 4, stride=2, padding=1),            # (B, w, 14, 14)
                                 nn.BatchNorm2d(w), nn.ReLU())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * w, 1, 4, stride=2, padding=1), nn.Tanh())  # (B, 1, 28, 28)

    def forward(self, c):                                    # (B, 1, 28, 28)
        d1 = self.down1(c)                                   # (B, w, 14, 14)
        d2 = self.down2(d1)                                  # (B, 2w, 7, 7)
        m = self.middle(d2)                                  # (B, 2w, 7, 7)
        u2 = self.up2(F.concat([m, d2], axis=1))             # [m, d2] (B, 4w, 7, 7) -> (B, w, 14, 14)
        return self.up1(F.concat([u2, d1], axis=1))          # [u2, d1] (B, 2w, 14, 14) -> (B, 1, 28, 28)


class PatchGAN(nn.Module):
    """[condition, image] (B, 2, 28, 28) -> a (B, 1, 7, 7) map of logits, one per 18 x 18 patch."""

    def __init__(self, width=64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(2, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),                # (B, w, 14, 14)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),                               # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 1, 3, padding=1),                                         # (B, 1, 7, 7)
        )

    def forward(self, pair):                                                           # (B, 2, 28, 28)
        return self.net(pair)


class Pix2Pix(GANBase):
    """pix2pix (Isola et al. 2017): U-Net G, PatchGAN D on (condition, image), cGAN + 100 L1; edges or inpainting."""
    Config = Pix2PixConfig
    tiny_config = {"width": 4, "batch_size": 8}

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.task not in TASKS:
            raise ValueError(f"unknown pix2pix task {c.task!r}; valid: {', '.join(TASKS)}")
        self.generator = dcgan_init(UNetGenerator(c.width))
        if c.adversarial:
            self.discriminator = dcgan_init(PatchGAN(c.width))

    # ---------------------------------------------------------------- the paired data
    def condition_of(self, images):
        """The condition for uint8 or [0, 1] images (N, 1, 28, 28), as float32 in [0, 1]."""
        x = data.to_float(images)
        if self.config.task == "edges":
            return data.edges(x)
        return data.mask_center(x, 14, value=0.5)            # grey hole: distinct from the black background

    def prepare_batch(self, images, labels):
        """uint8 images -> (x, c): the target x and its condition c, both Tensors (B, 1, 28, 28) in [-1, 1]."""
        return Tensor(data.to_signed(images)), Tensor(data.to_signed(self.condition_of(images)))

    # ---------------------------------------------------------------- the game (training_step is GANBase's)
    def fake(self, c, n, z=None):
        return self.generator(c)                             # G(c): (B, 1, 28, 28)

    def critic(self, x, c):
        return self.discriminator(F.concat([c, x], axis=1))  # D(c, x): (B, 1, 7, 7)

    def g_objective(self, fake, x, c):
        # L1 = E|x - G(c)|
        l1 = F.l1_loss(fake, x)
        if self.discriminator is None:
            # L_G = lambda L1   (the baseline)
            return self.config.lambda_l1 * l1, {"l1": l1.item()}
        adv = generator_loss(self.critic(fake, c), self.config.loss)
        # L_G = -E log D(c, G(c)) + lambda L1
        return adv + self.config.lambda_l1 * l1, {"g_adv": adv.item(), "l1": l1.item()}

    # ---------------------------------------------------------------- using it
    def translate(self, conditions):
        """Conditions (N, 1, 28, 28) in [0, 1] (as condition_of makes them) -> G's outputs, NumPy in [0, 1]."""
        c = Tensor(data.to_signed(np.clip(np.asarray(conditions, dtype=np.float32), 0, 1)))
        return self.generate(c, len(c))

    def sample(self, n, condition=None):
        """pix2pix is conditioned on an image: translate `condition` (n images in [0, 1]); there is no
        unconditional sample. condition_of(images) builds conditions from dataset images."""
        if condition is None:
            raise ValueError("pix2pix needs condition= (n images in [0, 1], e.g. model.condition_of(test_images)); "
                             "it has no unconditional samples")
        if len(condition) != n:
            raise ValueError(f"sample({n}): got {len(condition)} condition images")
        return self.translate(condition)

    @inference
    def evaluate(self, images, labels):
        """Test metric: test_l1 = mean |G(c) - x| in [0, 1] units (the judge's metrics are the evaluation
        suite's: tinygen.evaluate.evaluate_model)."""
        outputs = self.translate(self.condition_of(images))
        return {"test_l1": float(np.abs(outputs - data.to_float(images)).mean())}

    def visualize(self, images, labels, path):
        """16 test examples, three rows: condition, G's output, the real item."""
        from ..io import save_image_grid
        x = data.to_float(images[:16])
        c = self.condition_of(x)
        save_image_grid(np.concatenate([c, self.translate(c), x]), path, nrow=len(x), scale=2)
