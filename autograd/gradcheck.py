"""Numerical gradient checking, in float64.

For a function f of tensors returning a tensor, compare the analytic gradient of the scalar
L = sum(f(x) * w) (w a fixed random weight, so every output element matters) with

    central differences  dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / 2h      on every element, and
    a random direction   dL/dx . v ~ (L(x + h v) - L(x - h v)) / 2h        for all inputs at once.
"""
import numpy

from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def _op_name(out):
    return out._ctx.name() if out._ctx is not None else "<no op>"


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-4, max_elements=None, seed=0):
    """Check fn's gradients at `inputs` (Tensors or arrays; floating ones are differentiated).

    Every input is cast to float64. Raises GradcheckError naming the op, the input, the worst
    element and its analytic and numeric values; returns True when all gradients agree.
    `max_elements` limits the elementwise check to a random subset (the directional check always
    covers everything)."""
    rng = numpy.random.default_rng(seed)
    xs = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else x
        xp = backend.xp_of(data)
        data = xp.asarray(data)
        if data.dtype.kind == "f":
            # float64 input is used as it is (no copy), so a transposed or sliced view reaches the op as one
            data = data.astype(numpy.float64, copy=False)
            xs.append(Tensor._make(data, True, None))
        else:
            xs.append(Tensor(data, dtype=data.dtype))
    diff = [x for x in xs if x.requires_grad]

    out = fn(*xs)
    op = _op_name(out)
    xp = backend.xp_of(out.data)
    w = xp.asarray(rng.standard_normal(out.shape))

    def loss():
        with no_grad():
            return float((fn(*xs).data * w).sum())

    out.backward(w)
    analytic = [x.grad if x.grad is not None else xp.zeros_like(x.data) for x in diff]

    # 1. central differences, element by element
    for k, (x, ga) in enumerate(zip(diff, analytic)):
        idx = numpy.arange(x.size)
        if max_elements is not None and x.size > max_elements:
            idx = rng.choice(x.size, max_elements, replace=False)
        ga = backend.to_numpy(ga).reshape(-1)
        for i in idx:
            where = numpy.unravel_index(i, x.shape)  # index the array itself: it may be a strided view
            orig = x.data[where].item()
            x.data[where] = orig + eps
            up = loss()
            x.data[where] = orig - eps
            down = loss()
            x.data[where] = orig
            numeric = (up - down) / (2 * eps)
            if abs(ga[i] - numeric) > atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck failed for {op}: input {k} (shape {x.shape}), element {tuple(int(j) for j in where)}: "
                    f"analytic {ga[i]:.8g} vs numeric {numeric:.8g}")

    # 2. one random direction for all inputs together
    vs = [xp.asarray(rng.standard_normal(x.shape)) for x in diff]
    saved = [x.data.copy() for x in diff]
    for x, v in zip(diff, vs):
        x.data += eps * v
    up = loss()
    for x, s, v in zip(diff, saved, vs):
        x.data[...] = s - eps * v
    down = loss()
    for x, s in zip(diff, saved):
        x.data[...] = s
    numeric = (up - down) / (2 * eps)
    directional = sum(float((g * v).sum()) for g, v in zip(analytic, vs))
    if abs(directional - numeric) > atol * 10 + rtol * abs(numeric):
        raise GradcheckError(f"gradcheck failed for {op}: random-direction derivative, analytic {directional:.8g} "
                             f"vs numeric {numeric:.8g}")
    return True
