"""Small helpers shared by the op modules."""
import operator

from .. import backend
from ..function import ShapeError
from ..tensor import Tensor


def as_tensor(x, like):
    """A Python or array scalar as a constant Tensor with `like`'s dtype and device."""
    if isinstance(x, Tensor):
        return x
    xp = backend.xp_of(like.data)
    dtype = like.dtype if like.dtype.kind == "f" else None
    if dtype is None and isinstance(x, float):
        dtype = "float32"  # int tensor * 0.5: the engine's float, so the dtype check names float32
    return Tensor._make(xp.asarray(x, dtype=dtype), False, None)


def check_axis(axis, ndim, op="axis"):
    """One axis (negative counts from the end) -> its non-negative index, or a ShapeError naming the op,
    the axis and the valid range: NumPy refuses axis 5 of a 2-d array, where `axis % ndim` would
    silently pick axis 1."""
    if isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an integer, got {axis!r}")
    try:
        axis = operator.index(axis)  # int and NumPy integers; 1.0 or "1" are refused
    except TypeError:
        raise TypeError(f"{op}: axis must be an integer, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        valid = f"-{ndim}..{ndim - 1}" if ndim else "none: the tensor is 0-d"
        raise ShapeError(f"{op}: axis {axis} is out of range for a {ndim}-d tensor (valid: {valid})")
    return axis % ndim


def normalize_axis(axis, ndim, op="axis"):
    """axis (None, int or tuple, negative allowed) -> a sorted tuple of non-negative axes; an axis out of
    range or named twice is a ShapeError (as NumPy's AxisError / 'duplicate value in axis')."""
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, (tuple, list)):
        axis = (axis,)
    axes = [check_axis(a, ndim, op) for a in axis]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: axis {tuple(axis)} names an axis twice (tensor of {ndim} dims)")
    return tuple(sorted(axes))


def expand_reduced(grad, axes, keepdims, shape):
    """Broadcast the gradient of a reduction over `axes` back to the input `shape`."""
    xp = backend.xp_of(grad)
    if not keepdims:
        grad = xp.expand_dims(grad, axes) if axes else grad
    return xp.broadcast_to(grad, shape)


def index_array(indices, like, name, what="indices"):
    """An integer index (Tensor, array or list) as a raw array on `like`'s device."""
    xp = backend.xp_of(like.data)
    data = indices.data if isinstance(indices, Tensor) else indices
    data = xp.asarray(data)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{name}: {what} must be integers, got dtype {data.dtype}")
    return data


def _float_dtype(xp, dtype):
    """The dtype to draw random numbers in: the input's, if the generators support it."""
    return dtype if dtype.kind == "f" and dtype.itemsize in (4, 8) else xp.float32


def uniform(xp, rng, shape, dtype):
    """U[0, 1) samples of `shape` from `rng` (a fresh xp Generator when None), on xp's device."""
    rng = rng if rng is not None else xp.random.default_rng()
    return xp.asarray(rng.random(shape, dtype=_float_dtype(xp, dtype)))
