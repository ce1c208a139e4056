"""What every model shares: the training-step helper, the inference decorator, labels, names."""
import numpy as np
import pytest

from autograd import Tensor, is_grad_enabled
from tinygen import nn, optim
from tinygen.models.base import Model, inference, optimizer_step


def _net():
    """Linear -> Dropout -> Linear: in eval mode d sum(net(x)) / dx = W2 W1 for every row."""
    nn.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))


def test_optimizer_step_zeroes_backpropagates_and_steps():
    net = _net().eval()
    opt = optim.SGD(net.parameters(), lr=0.1)
    x = Tensor(np.ones((2, 3), np.float32))
    for p in net.parameters():  # stale gradients must not be added to the new ones
        p.grad = np.full(p.shape, 100.0, np.float32)
    w0, h = net[2].weight.data.copy(), net[0](x).numpy()                # h = W1 x + b1 before the step
    assert optimizer_step(net(x).sum(), opt) is None  # no clipping: no norm
    # d sum(W2 h + b2) / dW2 = sum over the batch of h
    np.testing.assert_allclose(net[2].weight.data, w0 - 0.1 * h.sum(axis=0, keepdims=True), rtol=1e-5)


def test_optimizer_step_clips_the_global_norm():
    net = _net().eval()
    opt = optim.SGD(net.parameters(), lr=0.1)
    x = Tensor(np.ones((2, 3), np.float32))
    norm = optimizer_step((net(x) * 1000.0).sum(), opt, grad_clip=1.0)
    assert norm > 1.0
    total = float(np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in net.parameters())))
    assert total == pytest.approx(1.0, rel=1e-4)  # the gradients the step used were scaled to norm 1


class Tiny(Model):
    def __init__(self):
        super().__init__()
        self.net = _net()

    @inference
    def plain(self):
        return self.training, is_grad_enabled()

    @inference(grad=True)
    def input_gradient(self, x):
        x = Tensor(x, requires_grad=True)
        self.net(x).sum().backward()
        return self.training, x.grad


def test_inference_runs_in_eval_mode_with_or_without_a_graph():
    model = Tiny()
    assert model.plain() == (False, False) and model.training and is_grad_enabled()
    x = np.ones((2, 3), np.float32)
    training, grad = model.input_gradient(x)
    assert not training and model.training  # eval inside, the mode it was in after
    # dropout off: every row's gradient is W2 W1
    np.testing.assert_allclose(grad, np.broadcast_to(model.net[2].weight.data @ model.net[0].weight.data, (2, 3)),
                               rtol=1e-5)
    model.eval()
    assert model.input_gradient(x)[0] is False and not model.training


def test_labels_for():
    model = Tiny()
    np.testing.assert_array_equal(model.labels_for(12), np.arange(12) % 10)
    np.testing.assert_array_equal(model.labels_for(3, 7), [7, 7, 7])
    np.testing.assert_array_equal(model.labels_for(2, [1, 2]), [1, 2])
    with pytest.raises(ValueError, match=r"label: class labels must lie in 0..9, got \[10\]"):
        model.labels_for(2, 10)
    with pytest.raises(ValueError, match="expected one label or 2 labels"):
        model.labels_for(2, [1, 2, 3])
    with pytest.raises(ValueError, match="must be integers"):
        model.labels_for(2, 1.5)


def test_a_models_name_is_its_registered_one():
    from tinygen.models.cvae import CVAE
    from tinygen.models.vae import VAE
    assert VAE.name == "vae" and CVAE.name == "cvae" and Tiny.name == "tiny" and Model.name == "model"


# ---------------------------------------------------------------------- every Config field checked before the first step
from tinygen.models import build_model  # noqa: E402  (this section's own import)

BAD_VALUES = [  # (model, overrides, what the one-line refusal must say)
    ("mlp", {"hidden": 0}, r"--set hidden=0: hidden must be a whole number >= 1"),
    ("ddpm", {"T": 0}, r"--set T=0: T must be a whole number >= 1"),
    ("vit", {"num_heads": 0}, r"--set num_heads=0: num_heads must be a whole number >= 1"),
    ("igpt", {"dim": 0}, r"--set dim=0: dim must be a whole number >= 1"),
    ("ddpm", {"channel_mult": [1, 0]}, r"channel_mult=\[1, 0\]: channel_mult must be a whole number >= 1"),
    ("ddpm", {"channel_mult": []}, r"channel_mult takes at least one value"),
    ("ddpm", {"num_classes": -1}, r"--set num_classes=-1: num_classes must be a whole number >= 0"),
    ("ddpm", {"p_uncond": 2}, r"--set p_uncond=2.0: p_uncond is a probability: it must lie in \[0, 1\]"),
    ("clip", {"template_prob": -0.1}, r"template_prob is a probability"),
    ("mlp", {"dropout": 1.0}, r"--set dropout=1.0: dropout is a probability below 1"),
    ("ddpm", {"ema_decay": 1e39}, r"--set ema_decay=1e\+39: ema_decay must be finite in float32"),
    ("pix2pix", {"lambda_l1": -5.0}, r"--set lambda_l1=-5.0: lambda_l1 must be >= 0"),
    ("ddpm", {"T": 20}, r"--set sample_steps=50: .* 1..T = 1..20"),          # the picture would fail after an epoch
    ("latent_diffusion", {"T": 10}, r"--set sample_steps=50: .* 1..10"),
    ("igpt", {"probe_layer": 4}, r"--set probe_layer=4: .* 0..3 \(or -1 for depth // 2\)"),
    ("igpt", {"probe_layer": -2}, r"--set probe_layer=-2"),
    ("mlp", {"hidden": None, "lr": 1e-3}, None),                              # None keeps the recipe (the API's)
]


def build_and_check(name, overrides):
    """What the trainer does before it writes anything: build (check_values), then check_config."""
    model = build_model(name, overrides)
    model.check_config(model.config)
    return model


@pytest.mark.parametrize("name, overrides, culprit", BAD_VALUES, ids=[f"{m}-{sorted(o)[0]}" for m, o, _ in BAD_VALUES])
def test_every_field_is_checked_before_training(name, overrides, culprit):
    if culprit is None:
        assert build_and_check(name, overrides).config.hidden == 512
        return
    with pytest.raises(ValueError, match=culprit):
        build_and_check(name, overrides)


def test_every_models_recipe_and_tiny_config_pass_the_checks():
    from tinygen.models import MODULES, get_model_class
    from tinygen.models.base import check_values
    for name in MODULES:
        cls = get_model_class(name)
        check_values(cls.Config())
        config = cls.Config(**{**vars(cls.Config()), **(cls.tiny_config or {})})
        check_values(config)
        cls.check_config(config)
