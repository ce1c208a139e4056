"""Function: one differentiable op, written on raw arrays.

A Function subclass defines

    forward(self, *arrays, **attrs) -> array        the value, on NumPy/CuPy arrays
    backward(self, grad) -> grad or tuple of grads  dL/d(input) for each input, given dL/d(output)

`Function.apply(*tensors, **attrs)` runs forward, and (when a gradient is wanted) records the
Function as the creator of its output, so that `Tensor.backward()` can later call `backward`.
`backward` may return a gradient in the broadcast (output) shape: the engine sums it back to the
input's shape. It may return None for an input that needs no gradient; `self.needs_input_grad`
says which do, so an op can skip work nobody needs (the first conv layer's input gradient, say).
"""
from abc import ABC, abstractmethod

from . import backend


class ShapeError(ValueError):
    """Operands of an op have shapes that do not fit together (the message names the op and the shapes)."""


class Function(ABC):
    op_name = None  # the public name used in error messages (defaults to the class name)

    def __init__(self):
        self.saved = ()
        self.parents = ()
        self.needs_input_grad = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @abstractmethod
    def forward(self, *arrays, **attrs):
        """Compute the output array from the input arrays."""

    @abstractmethod
    def backward(self, grad):
        """Return the gradient(s) w.r.t. the inputs, given the gradient w.r.t. the output."""

    @classmethod
    def name(cls):
        return cls.op_name or cls.__name__

    @classmethod
    def apply(cls, *inputs, **attrs):
        from .tensor import Tensor, is_grad_enabled
        _check_inputs(cls.name(), inputs)
        ctx = cls()
        ctx.needs_input_grad = tuple(t.requires_grad for t in inputs)
        out = ctx.forward(*(t.data for t in inputs), **attrs)
        requires_grad = is_grad_enabled() and any(ctx.needs_input_grad)
        if requires_grad:
            ctx.parents = inputs
            return Tensor._make(out, True, ctx)
        ctx.saved = ()  # nothing will call backward: drop what forward saved
        return Tensor._make(out, False, None)


def _check_inputs(name, inputs):
    from .tensor import Tensor
    float_dtypes, devices = set(), set()
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected Tensor inputs, got {type(t).__name__}")
        if t.dtype.kind == "f":
            float_dtypes.add(str(t.dtype))
        devices.add(t.device)
    if len(float_dtypes) > 1:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in inputs)
        raise TypeError(f"{name}: mixing {' and '.join(sorted(float_dtypes))} tensors ({shapes}); "
                        f"cast one with .astype() (no silent upcast)")
    if len(devices) > 1:
        raise RuntimeError(f"{name}: tensors on different devices ({', '.join(sorted(devices))}); "
                           f"move them with .to(device) first")


def unbroadcast(grad, shape):
    """Sum `grad` over the axes that broadcasting expanded, so it has `shape` again."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def broadcast_shapes(name, *shapes):
    """The broadcast shape of `shapes`, or a ShapeError naming the op and the shapes."""
    ndim = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ShapeError(f"{name}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)
