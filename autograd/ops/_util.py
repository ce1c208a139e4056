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
