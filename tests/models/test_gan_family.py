"""The adversarial game every GAN of the course plays (GANBase.training_step: one D step, then one G step):
checked once for each of them, with the helpers their own test files share."""
import numpy as np
import pytest

from tinygen.models import build_model
from tinygen.models.gan import discriminator_loss


def snapshot(net):
    return [p.data.copy() for p in net.parameters()]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def batch(model, n=8, seed=0):
    """A prepared batch of n random uint8 images with labels 0..9: (x, labels) or, for pix2pix, (x, condition)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    return model.prepare_batch(images, np.arange(n) % 10)


GAME_LOGS = {"d_loss", "g_loss", "d_real", "d_fake"}
FAMILY = [  # (model, config, what its step logs besides the game's numbers)
    ("gan", {"loss": "non_saturating"}, set()),
    ("gan", {"loss": "minimax"}, set()),
    ("dcgan", {"width": 8, "z_dim": 16}, set()),
    ("cgan", {"width": 8, "z_dim": 16}, set()),
    ("pix2pix", {"width": 8}, {"g_adv", "l1"}),  # L_G = cGAN + lambda L1
]


@pytest.mark.parametrize("name, config, own_logs", FAMILY,
                         ids=["gan-non_saturating", "gan-minimax", "dcgan", "cgan", "pix2pix"])
def test_training_step_updates_each_player_with_its_own_step_only(name, config, own_logs):
    model = build_model(name, config)
    opts = model.configure_optimizers()
    G, D = model.generator, model.discriminator
    g0, d0 = snapshot(G), snapshot(D)
    seen = {}
    d_step = opts["D"].step

    def recording_d_step():
        seen["g_grads"] = [p.grad for p in G.parameters()]
        d_step()
        seen["g"], seen["d"] = snapshot(G), snapshot(D)
        seen["d_grads"] = [p.grad.copy() for p in D.parameters()]

    opts["D"].step = recording_d_step
    logs = model.training_step(batch(model), opts)
    assert set(logs) == GAME_LOGS | own_logs
    assert all(np.isfinite(v) for v in logs.values()) and 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1
    assert all(g is None for g in seen["g_grads"])          # the fake was detached for D's loss
    assert same(seen["g"], g0) and not same(seen["d"], d0)  # D's step moved D only
    assert not same(snapshot(G), seen["g"])                 # G's step moved G ...
    assert same(snapshot(D), seen["d"])                     # ... and left D alone
    assert same([p.grad for p in D.parameters()], seen["d_grads"])  # no G-loss gradient leaked into D
    assert all(p.requires_grad for p in D.parameters())


@pytest.mark.parametrize("name, config", [("gan", {"dropout": 0.0}), ("dcgan", {"width": 8, "z_dim": 16}),
                                          ("cgan", {"width": 8, "z_dim": 16})], ids=["gan", "dcgan", "cgan"])
def test_d_loss_decreases_over_d_only_steps_on_a_fixed_batch(name, config):
    model = build_model(name, config)
    opts = model.configure_optimizers()
    x, c = batch(model, 16)
    fake = model.fake(c, 16).detach()
    losses = []
    for _ in range(5):
        opts["D"].zero_grad()
        loss = discriminator_loss(model.critic(x, c), model.critic(fake, c))
        loss.backward()
        opts["D"].step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
