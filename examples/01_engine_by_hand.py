"""The engine by hand: a tiny MLP on MNIST with explicit parameters, forward, backward and an SGD
update written out. Nothing from tinygen.nn or tinygen.optim: only Tensors and autograd.functional.

    python examples/01_engine_by_hand.py
"""
import numpy as np

import autograd.functional as F
from autograd import Tensor, no_grad
from tinygen.data import DataLoader, load_mnist, to_float

rng = np.random.default_rng(0)
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")


def init(fan_in, fan_out):
    """Weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch's default Linear init."""
    bound = 1 / np.sqrt(fan_in)
    return (Tensor(rng.uniform(-bound, bound, (fan_out, fan_in)), requires_grad=True),
            Tensor(rng.uniform(-bound, bound, fan_out), requires_grad=True))


W1, b1 = init(784, 128)
W2, b2 = init(128, 10)
params = [W1, b1, W2, b2]


def forward(x):                                   # x: (B, 784)
    h = F.relu(x @ W1.T + b1)                     # (B, 128)
    return h @ W2.T + b2                          # (B, 10) logits


lr = 0.1
loader = DataLoader((x_train, y_train), batch_size=128, seed=0)
for step, (images, labels) in enumerate(loader):
    x = Tensor(to_float(images).reshape(len(images), 784))
    loss = F.cross_entropy(forward(x), labels)    # -mean log softmax(logits)[y]
    for p in params:
        p.grad = None
    loss.backward()                               # fills p.grad = dloss/dp for every parameter
    for p in params:                              # SGD: p <- p - lr * dloss/dp
        p.data -= lr * p.grad
    if step % 100 == 0:
        print(f"step {step:4d}  loss {loss.item():.3f}")

with no_grad():
    pred = forward(Tensor(to_float(x_test).reshape(-1, 784))).numpy().argmax(axis=1)
print(f"test accuracy after one epoch: {(pred == y_test).mean():.4f}")
