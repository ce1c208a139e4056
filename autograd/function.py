"""Function: one differentiable op, written on raw arrays.

A Function subclass defines

    forward(self, *arrays, **attrs) -> array        the value, on NumPy/CuPy arrays
    backward(self, grad) -> grad or tuple of grads  dL/d(input) for each input, given dL/d(output)

`Function.apply(*tensors, **attrs)` runs forward, and (when a gradient is wanted) records the
Function as the creator of its output, so that `Tensor.backward()` can later call `backward`.
`backward` may return a gradient in the broadcast (output) shape: the engine sums it back to the
input's shape. It may return None for an input that needs no gradient; `self.needs_input_grad`
says which do, so an op can skip work nobody needs (the first conv layer's input gradient, say).

Checks that turn silent wrong answers into errors (as NumPy and PyTorch do):
- dtypes: float32 and float64 inputs do not mix, nor integer and float inputs (NumPy would upcast
  int64 + float32 to float64); an op on integer inputs only that gives floats (int / int, exp of
  ints) gives float32, the engine's default float, not NumPy's float64.
- saved arrays: each Tensor carries a version counter that its in-place methods (add_, copy_, ...)
  bump. `apply` notes the versions of the tensors whose arrays forward saved, and backward refuses
  to use an array changed in place since then, which would give a plausible but wrong gradient.
- views: an output that shares memory with an input (basic slicing, reshape, transpose, expand, ...
  whatever NumPy or CuPy returns as a view) takes that input's version counter, as in PyTorch, so an
  in-place change through the base or through any of its views is seen by every op that saved one.
- integer outputs never require grad (argmax-like casts): only floating tensors carry gradients.
"""
from abc import ABC, abstractmethod

import numpy

from . import backend


class ShapeError(ValueError):
    """Operands of an op have shapes that do not fit together (the message names the op and the shapes)."""


class Function(ABC):
    op_name = None  # the public name used in error messages (defaults to the class name)

    def __init__(self):
        self.saved = ()
        self.parents = ()
        self.needs_input_grad = ()
        self.saved_versions = ()  # (version counter, version when saved, what it is) per saved tensor

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
        if out.dtype == numpy.float64 and "dtype" not in attrs and not any(t.dtype.kind == "f" for t in inputs):
            out = out.astype(numpy.float32)  # int / int: float32 as in PyTorch, not NumPy's float64
        # a gradient is only defined for floating outputs (x.astype('int64') is a constant, as in PyTorch)
        requires_grad = is_grad_enabled() and any(ctx.needs_input_grad) and out.dtype.kind == "f"
        if requires_grad:
            ctx.parents = inputs
            result = _share_version_with_base(Tensor._make(out, True, ctx), inputs)
            if ctx.saved:
                ctx.saved_versions = _saved_versions(ctx.saved, inputs, result)
            return result
        ctx.saved = ()  # nothing will call backward: drop what forward saved
        # a view made under no_grad still shares its base's counter: changing it changes the base
        return _share_version_with_base(Tensor._make(out, False, None), inputs)

    def check_saved_versions(self):
        """Refuse to run backward on arrays that were changed in place after forward saved them."""
        for counter, version, what in self.saved_versions:
            if counter[0] != version:
                raise RuntimeError(
                    f"backward through {self.name()}: {what}, which {self.name()} saved for its gradient, was "
                    f"modified by an in-place operation after the forward pass (version {version} -> {counter[0]}); "
                    f"the gradient would be wrong. Compute the forward pass again after the change, or change a "
                    f"copy instead")


def _owner(array):
    """The object that owns the memory of `array`: NumPy and CuPy views keep their base in .base, and a
    view of a view (or an as_strided window, whose .base is a helper object) leads there step by step."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _share_version_with_base(result, inputs):
    """Give `result` the version counter of the input whose memory it shares (it is a view of it), as
    PyTorch does: x[0:2], x.reshape(...), x.T, x.expand(...) and x itself are one piece of memory, so an
    in-place change through any of them must be seen by every op that saved any of them."""
    owner = _owner(result.data)
    for t in inputs:
        if _owner(t.data) is owner:
            result._version_counter = t._version_counter
            break
    return result


def _saved_versions(saved, inputs, output):
    """(version counter, current version, description) of each input or output whose memory an array in
    `saved` shares, so that backward can tell if it was changed in place in between."""
    owners = {id(_owner(a)) for a in saved if hasattr(a, "shape")}
    watched = []
    for i, t in enumerate(inputs):
        if id(_owner(t.data)) in owners:
            watched.append((t._version_counter, t._version_counter[0], f"input {i} (shape {tuple(t.shape)})"))
    if id(_owner(output.data)) in owners:
        watched.append((output._version_counter, output._version_counter[0],
                        f"its output (shape {tuple(output.shape)})"))
    return tuple(watched)


def _check_inputs(name, inputs):
    from .tensor import Tensor
    float_dtypes, int_dtypes, devices = set(), set(), set()
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected Tensor inputs, got {type(t).__name__}")
        if t.dtype.kind == "f":
            float_dtypes.add(str(t.dtype))
        elif t.dtype.kind in "iu":
            int_dtypes.add(str(t.dtype))
        devices.add(t.device)
    if len(float_dtypes) > 1:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in inputs)
        raise TypeError(f"{name}: mixing {' and '.join(sorted(float_dtypes))} tensors ({shapes}); "
                        f"cast one with .astype() (no silent upcast)")
    if float_dtypes and int_dtypes:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in inputs)
        raise TypeError(f"{name}: mixing integer ({', '.join(sorted(int_dtypes))}) and float "
                        f"({', '.join(sorted(float_dtypes))}) tensors ({shapes}); cast the integer one with "
                        f".astype('{float_dtypes.pop()}') (no silent upcast to float64)")
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
