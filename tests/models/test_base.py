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
