"""Every op reaches its arrays through the backend (xp = backend.xp_of(x)), never through NumPy
directly, so the same code runs on CuPy.

The proof: register a stand-in backend whose arrays are a NumPy subclass (Tagged) and whose module
records every call and tags every array it returns. Run each public op forward and backward on
Tagged inputs: the output and every gradient must still be Tagged (an array made by numpy.zeros or
numpy.empty inside an op would come out untagged), and the module must have been used. A second
test reads the op modules' source: none of them imports numpy."""
import ast
import types
from pathlib import Path

import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor, backend


class Tagged(np.ndarray):
    """Arrays of the stand-in backend."""


def _tag(value):
    if isinstance(value, np.ndarray) and not isinstance(value, Tagged):
        return value.view(Tagged)
    if isinstance(value, (tuple, list)):
        return type(value)(_tag(v) for v in value)
    return value


class Recorder:
    """A stand-in array module: forwards to NumPy, records each call, tags each array returned."""

    def __init__(self, target, path, calls):
        self._target, self._path, self._calls = target, path, calls

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if isinstance(value, (types.ModuleType, np.ufunc)) or (callable(value) and not isinstance(value, type)):
            return Recorder(value, f"{self._path}.{name}", self._calls)
        return value  # dtypes, constants, classes

    def __call__(self, *args, **kwargs):
        self._calls.append(self._path)
        return _tag(self._target(*args, **kwargs))


@pytest.fixture
def standin():
    calls = []
    backend.register_backend(Tagged, Recorder(np, "xp", calls), "standin")
    yield calls
    backend.unregister_backend(Tagged)


def T(rng, *shape, grad=True):
    return Tensor._make(rng.standard_normal(shape).astype(np.float32).view(Tagged), grad, None)


def I(values):
    return Tensor._make(np.asarray(values, dtype=np.int64).view(Tagged), False, None)


def cases(rng):
    """op name -> (function, inputs). Every public op of autograd.functional appears here."""
    x4 = lambda: T(rng, 2, 4, 5, 5)
    return {
        "add": (F.add, [T(rng, 2, 3), T(rng, 3)]), "sub": (F.sub, [T(rng, 2, 3), T(rng, 1, 3)]),
        "mul": (F.mul, [T(rng, 2, 3), T(rng, 2, 1)]), "div": (F.div, [T(rng, 2, 3), T(rng, 3)]),
        "neg": (F.neg, [T(rng, 3)]), "pow": (lambda a: F.pow(F.abs(a), 1.5), [T(rng, 3)]),
        "exp": (F.exp, [T(rng, 3)]), "log": (lambda a: F.log(F.abs(a)), [T(rng, 3)]),
        "sqrt": (lambda a: F.sqrt(F.abs(a)), [T(rng, 3)]), "abs": (F.abs, [T(rng, 3)]),
        "clip": (lambda a: F.clip(a, -0.5, 0.5), [T(rng, 3)]), "maximum": (F.maximum, [T(rng, 3), T(rng, 3)]),
        "minimum": (F.minimum, [T(rng, 3), T(rng, 3)]),
        "where": (lambda a, b: F.where(a > 0, a, b), [T(rng, 3), T(rng, 3)]),
        "relu": (F.relu, [T(rng, 3)]), "leaky_relu": (F.leaky_relu, [T(rng, 3)]), "gelu": (F.gelu, [T(rng, 3)]),
        "silu": (F.silu, [T(rng, 3)]), "sigmoid": (F.sigmoid, [T(rng, 3)]), "tanh": (F.tanh, [T(rng, 3)]),
        "softplus": (F.softplus, [T(rng, 3)]),
        "sum": (lambda a: F.sum(a, axis=1), [T(rng, 2, 3)]), "mean": (F.mean, [T(rng, 2, 3)]),
        "var": (lambda a: F.var(a, axis=0), [T(rng, 2, 3)]), "max": (lambda a: F.max(a, axis=1), [T(rng, 2, 3)]),
        "min": (F.min, [T(rng, 2, 3)]), "logsumexp": (lambda a: F.logsumexp(a, axis=1), [T(rng, 2, 3)]),
        "reshape": (lambda a: F.reshape(a, (3, 2)), [T(rng, 2, 3)]),
        "transpose": (lambda a: F.transpose(a, (1, 0)), [T(rng, 2, 3)]),
        "expand": (lambda a: F.expand(a, (4, 3)), [T(rng, 1, 3)]),
        "getitem": (lambda a: a[np.array([0, 0, 1])], [T(rng, 2, 3)]),
        "concat": (lambda a, b: F.concat([a, b], axis=1), [T(rng, 2, 3), T(rng, 2, 1)]),
        "stack": (lambda a, b: F.stack([a, b]), [T(rng, 2, 3), T(rng, 2, 3)]),
        "split": (lambda a: F.split(a, 3, axis=1)[1], [T(rng, 2, 3)]),
        "pad": (lambda a: F.pad(a, (1, -1, 0, 2)), [T(rng, 2, 3)]),
        "pad_width": (lambda a: F.pad_width(a, ((1, 0), (0, 2))), [T(rng, 2, 3)]),
        "flatten": (F.flatten, [T(rng, 2, 3, 2)]), "squeeze": (lambda a: F.squeeze(a, 0), [T(rng, 1, 3)]),
        "unsqueeze": (lambda a: F.unsqueeze(a, 0), [T(rng, 3)]),
        "matmul": (F.matmul, [T(rng, 2, 2, 3), T(rng, 3, 4)]), "linear": (F.linear, [T(rng, 2, 3), T(rng, 4, 3), T(rng, 4)]),
        "einsum": (lambda a, b: F.einsum("bij,jk->bk", a, b), [T(rng, 2, 2, 3), T(rng, 3, 4)]),
        "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2), [x4(), T(rng, 6, 2, 3, 3), T(rng, 6)]),
        "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
                             [x4(), T(rng, 4, 3, 3, 3), T(rng, 3)]),
        "masked_conv2d": (lambda x, w, b: F.masked_conv2d(x, w, np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]]), b,
                                                          padding=1), [x4(), T(rng, 3, 4, 3, 3), T(rng, 3)]),
        "conv2d_plain": (lambda x, w, b: F.conv2d_plain(x, w, b, stride=2, padding=1, groups=2),
                         [x4(), T(rng, 6, 2, 3, 3), T(rng, 6)]),
        "conv_transpose2d_plain": (lambda x, w, b: F.conv_transpose2d_plain(x, w, b, stride=2, padding=1,
                                                                              output_padding=1),
                                   [x4(), T(rng, 4, 3, 3, 3), T(rng, 3)]),
        "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), [x4()]),
        "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [x4()]),
        "upsample_nearest": (lambda x: F.upsample_nearest(x, scale_factor=2), [x4()]),
        "interpolate": (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), [x4()]),
        "softmax": (F.softmax, [T(rng, 2, 5)]), "log_softmax": (F.log_softmax, [T(rng, 2, 5)]),
        "cross_entropy": (lambda a: F.cross_entropy(a, I([1, 4]), label_smoothing=0.1), [T(rng, 2, 5)]),
        "nll_loss": (lambda a: F.nll_loss(F.log_softmax(a, dim=1), I([1, 4])), [T(rng, 2, 5)]),
        "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, [T(rng, 2, 5), T(rng, 2, 5, grad=False)]),
        "binary_cross_entropy": (lambda a: F.binary_cross_entropy(F.sigmoid(a), F.sigmoid(a).detach()), [T(rng, 2, 5)]),
        "mse_loss": (F.mse_loss, [T(rng, 2, 5), T(rng, 2, 5)]), "l1_loss": (F.l1_loss, [T(rng, 2, 5), T(rng, 2, 5)]),
        "layer_norm": (lambda x, w, b: F.layer_norm(x, (5,), w, b), [T(rng, 2, 3, 5), T(rng, 5), T(rng, 5)]),
        "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), [x4(), T(rng, 4), T(rng, 4)]),
        "group_norm_plain": (lambda x, w, b: F.group_norm_plain(x, 2, w, b), [x4(), T(rng, 4), T(rng, 4)]),
        "batch_norm": (lambda x, w, b: F.batch_norm(x, np.zeros(4, np.float32).view(Tagged),
                                                    np.ones(4, np.float32).view(Tagged), w, b, training=True),
                       [x4(), T(rng, 4), T(rng, 4)]),
        "dropout": (lambda x: F.dropout(x, 0.5, training=True), [T(rng, 4, 5)]),
        "embedding": (lambda w: F.embedding(I([0, 2, 2]), w), [T(rng, 3, 4)]),
        "one_hot": (lambda a: a * F.one_hot(I([0, 2]), 3), [T(rng, 2, 3)]),
        "scaled_dot_product_attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                         [T(rng, 2, 2, 4, 3), T(rng, 2, 2, 4, 3), T(rng, 2, 2, 4, 3)]),
        "gumbel_softmax": (lambda a: F.gumbel_softmax(a, tau=0.5, hard=True), [T(rng, 2, 5)]),
    }


def public_ops():
    return sorted(name for name in dir(F) if not name.startswith("_") and callable(getattr(F, name))
                  and getattr(getattr(F, name), "__module__", "").startswith("autograd.ops"))


def test_every_public_op_has_a_case():
    missing = set(public_ops()) - set(cases(np.random.default_rng(0)))
    assert not missing, f"ops without a stand-in backend case: {sorted(missing)}"


@pytest.mark.parametrize("name", public_ops())
def test_op_runs_on_the_standin_backend(name, standin):
    fn, inputs = cases(np.random.default_rng(0))[name]
    out = fn(*inputs)
    assert isinstance(out.data, Tagged), f"{name}: output left the backend ({type(out.data).__name__})"
    assert out.device == "standin"
    out.backward(np.ones(out.shape, dtype=out.dtype).view(Tagged))
    for i, t in enumerate(inputs):
        if t.requires_grad:
            assert t.grad is not None, f"{name}: no gradient for input {i}"
            assert isinstance(t.grad, Tagged), f"{name}: gradient of input {i} made outside the backend"
    assert standin, f"{name}: the backend's array module was never called"


def test_op_modules_do_not_import_numpy():
    ops_dir = Path(F.__file__).parent / "ops"
    offenders = []
    for path in sorted(ops_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("numpy", "cupy") for n in names):
                offenders.append(path.name)
    assert not offenders, f"op modules importing numpy/cupy directly: {offenders}"
