"""Small helpers shared by the op modules."""
from .. import backend
from ..tensor import Tensor


def as_tensor(x, like):
    """A Python or array scalar as a constant Tensor with `like`'s dtype and device."""
    if isinstance(x, Tensor):
        return x
    xp = backend.xp_of(like.data)
    dtype = like.dtype if like.dtype.kind == "f" else None
    return Tensor._make(xp.asarray(x, dtype=dtype), False, None)


def normalize_axis(axis, ndim):
    """axis (None, int or tuple, negative allowed) -> a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def expand_reduced(grad, axes, keepdims, shape):
    """Broadcast the gradient of a reduction over `axes` back to the input `shape`."""
    xp = backend.xp_of(grad)
    if not keepdims:
        grad = xp.expand_dims(grad, axes) if axes else grad
    return xp.broadcast_to(grad, shape)
