"""Shape ops: reshape, transpose, expand, getitem, concat, stack, split, pad (PyTorch's form) and
pad_width (NumPy's), and device copies."""
from .. import backend
from ..function import Function, ShapeError
from ..tensor import Tensor
from ._util import check_axis

__all__ = ["reshape", "transpose", "expand", "getitem", "concat", "stack", "split", "pad", "pad_width",
           "flatten", "squeeze", "unsqueeze"]


class Reshape(Function):
    op_name = "reshape"

    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape {a.shape} ({a.size} elements) to {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    op_name = "transpose"

    def forward(self, a, axes):
        if axes is None:
            axes = tuple(reversed(range(a.ndim)))
        if len(axes) != a.ndim or sorted(check_axis(ax, a.ndim, "transpose") for ax in axes) != list(range(a.ndim)):
            raise ShapeError(f"transpose: axes {axes} are not a permutation of the {a.ndim} axes of {a.shape}")
        self.axes = tuple(ax % a.ndim for ax in axes)
        return a.transpose(self.axes)

    def backward(self, g):  # the inverse permutation
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax] = i
        return g.transpose(inverse)


class Expand(Function):
    op_name = "expand"

    def forward(self, a, shape):
        try:
            return backend.xp_of(a).broadcast_to(a, shape)
        except ValueError:
            raise ShapeError(f"expand: cannot broadcast {a.shape} to {tuple(shape)}") from None

    def backward(self, g):  # the engine sums g back to the input's shape
        return g


def _index_arrays(index, xp):
    """Tensors inside an index become raw arrays (integer or boolean)."""
    if isinstance(index, tuple):
        return tuple(_index_arrays(i, xp) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return xp.asarray(index)
    return index


def _has_integer_array(index):
    """Integer-array (not boolean) indexing can pick an element twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "dtype") and p.dtype.kind in "iu" and p.ndim > 0 for p in parts)


class GetItem(Function):
    """a[index] for slices, integers, None, Ellipsis and integer/boolean arrays.
    With integer arrays an element may be picked several times: its gradients add up."""
    op_name = "getitem"

    def forward(self, a, index):
        self.index, self.shape, self.dtype = index, a.shape, a.dtype
        try:
            return a[index]
        except IndexError as e:
            raise ShapeError(f"getitem: index {index!r} does not fit a tensor of shape {a.shape}: {e}") from None

    def backward(self, g):
        xp = backend.xp_of(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        if _has_integer_array(self.index):
            backend.scatter_add(xp, grad, self.index, g)  # repeated indices accumulate
        else:
            grad[self.index] = g  # slices and boolean masks pick each element at most once
        return grad


class Concat(Function):
    op_name = "concat"

    def forward(self, *arrays, axis):
        xp = backend.xp_of(*arrays)
        ref = arrays[0].shape
        ax = check_axis(axis, arrays[0].ndim, "concat")
        for a in arrays:
            if a.ndim != len(ref) or any(a.shape[i] != ref[i] for i in range(a.ndim) if i != ax):
                raise ShapeError(f"concat: shapes {[x.shape for x in arrays]} differ outside axis {axis}")
        self.axis, self.sizes = ax, [a.shape[ax] for a in arrays]
        return xp.concatenate(arrays, axis=ax)

    def backward(self, g):
        xp = backend.xp_of(g)
        cuts = []
        total = 0
        for s in self.sizes[:-1]:
            total += s
            cuts.append(total)
        return tuple(xp.split(g, cuts, axis=self.axis))


class Stack(Function):
    op_name = "stack"

    def forward(self, *arrays, axis):
        if len({a.shape for a in arrays}) > 1:
            raise ShapeError(f"stack: all shapes must be equal, got {[a.shape for a in arrays]}")
        self.axis = check_axis(axis, arrays[0].ndim + 1, "stack")  # the new axis may also come last
        return backend.xp_of(*arrays).stack(arrays, axis=self.axis)

    def backward(self, g):
        xp = backend.xp_of(g)
        return tuple(xp.take(g, i, axis=self.axis) for i in range(g.shape[self.axis]))


class Pad(Function):
    """Constant padding by per-axis (before, after) widths, as in numpy.pad; a negative width crops.
    Forward: crop by the negative widths, then pad by the positive ones with `value`.
    Backward: the padding gets no gradient (slice it off); the cropped elements get zeros."""
    op_name = "pad"

    def forward(self, a, widths, value):
        xp = backend.xp_of(a)
        self.shape = a.shape
        # the slice of a that is kept, and the (before, after) padding added around it
        self.kept = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, a.shape))
        self.added = tuple((max(lo, 0), max(hi, 0)) for lo, hi in widths)
        return xp.pad(a[self.kept], self.added, mode="constant", constant_values=value)

    def backward(self, g):
        xp = backend.xp_of(g)
        g = g[tuple(slice(lo, n - hi) for (lo, hi), n in zip(self.added, g.shape))]
        if g.shape == self.shape:
            return g
        grad = xp.zeros(self.shape, dtype=g.dtype)
        grad[self.kept] = g
        return grad


class ToDevice(Function):
    op_name = "to"

    def forward(self, a, device):
        self.src = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, g):
        return backend.to_device(g, self.src)


def reshape(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(a, shape=tuple(shape))


def flatten(a, start_axis=1):
    """Merge axes start_axis.. into one: (B, C, H, W) -> (B, C*H*W)."""
    return reshape(a, a.shape[:start_axis] + (-1,))


def squeeze(a, axis):
    ax = check_axis(axis, a.ndim, "squeeze")
    if a.shape[ax] != 1:
        raise ShapeError(f"squeeze: axis {axis} of shape {a.shape} has size {a.shape[ax]}, not 1")
    return reshape(a, a.shape[:ax] + a.shape[ax + 1:])


def unsqueeze(a, axis):
    axis = check_axis(axis, a.ndim + 1, "unsqueeze")
    return reshape(a, a.shape[:axis] + (1,) + a.shape[axis:])


def transpose(a, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    return Transpose.apply(a, axes=tuple(axes) if axes else None)


def expand(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Expand.apply(a, shape=tuple(shape))


def getitem(a, index):
    return GetItem.apply(a, index=_index_arrays(index, backend.xp_of(a.data)))


def concat(tensors, axis=0):
    if not len(tensors):
        raise ShapeError("concat: needs at least one tensor, got none")
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    if not len(tensors):
        raise ShapeError("stack: needs at least one tensor, got none")
    return Stack.apply(*tensors, axis=axis)


def split(a, sections, axis=0):
    """Split into equal `sections` (an int) or at the given sizes (a list of ints)."""
    axis = check_axis(axis, a.ndim, "split")
    n = a.shape[axis]
    if isinstance(sections, int):
        if sections < 1:
            raise ShapeError(f"split: sections must be at least 1, got {sections}")
        if n % sections:
            raise ShapeError(f"split: axis {axis} of size {n} does not divide into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if sum(sizes) != n:
            raise ShapeError(f"split: sizes {sizes} do not add up to {n} (axis {axis} of {a.shape})")
    out, start = [], 0
    for s in sizes:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, start + s)
        out.append(getitem(a, tuple(index)))
        start += s
    return out


def pad(x, pad, mode="constant", value=None):
    """F.pad, PyTorch's form: `pad` is a flat tuple of (before, after) widths starting from the LAST
    axis and going backwards:

        pad(x, (left, right))                          the last axis
        pad(x, (left, right, top, bottom))             the last two: (B, C, H, W) -> (B, C, H + t + b, W + l + r)
        pad(x, (left, right, top, bottom, front, back)) the last three, and so on

    A negative width crops instead (as in PyTorch). Only mode='constant' is implemented; `value` fills
    the padding (None: 0). For NumPy's per-axis form ((before, after) for every axis, first axis first)
    use F.pad_width."""
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported; only mode='constant' is implemented")
    pad = tuple(pad)
    if not all(isinstance(p, int) or (hasattr(p, "dtype") and p.dtype.kind in "iu") for p in pad):
        raise TypeError(f"pad: pad={pad} must hold integers")
    if len(pad) % 2:
        raise ValueError(f"pad: pad={pad} has an odd length; it lists (before, after) pairs from the last axis "
                         f"backwards, e.g. (left, right, top, bottom)")
    if len(pad) // 2 > x.ndim:
        raise ShapeError(f"pad: pad={pad} has {len(pad) // 2} (before, after) pairs for a {x.ndim}-d input of "
                         f"shape {tuple(x.shape)}")
    # (left, right, top, bottom) -> ((0, 0), ..., (top, bottom), (left, right)), first axis first
    pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)]
    widths = ((0, 0),) * (x.ndim - len(pairs)) + tuple(reversed(pairs))
    for axis, ((lo, hi), n) in enumerate(zip(widths, x.shape)):
        if n + lo + hi < 0:
            raise ShapeError(f"pad: pad={pad} crops axis {axis} of size {n} by {-(lo + hi)}, more than it has "
                             f"(input {tuple(x.shape)})")
    return Pad.apply(x, widths=widths, value=0.0 if value is None else value)


def pad_width(x, pad_width, constant_values=0.0):
    """Constant padding in numpy.pad's form: pad_width holds one (before, after) pair per axis, FIRST
    axis first, e.g. pad_width(x, ((0, 0), (0, 0), (top, bottom), (left, right))) for (B, C, H, W);
    widths are non-negative and constant_values (a scalar) fills the padding. F.pad takes PyTorch's
    flat, last-axis-first form instead."""
    try:
        widths = tuple((int(lo), int(hi)) for lo, hi in pad_width)
    except (TypeError, ValueError):
        raise TypeError(f"pad_width: pad_width={pad_width!r} must be one (before, after) pair of integers per "
                        f"axis") from None
    if len(widths) != x.ndim:
        raise ShapeError(f"pad_width: pad_width={widths} has {len(widths)} (before, after) pairs for a {x.ndim}-d "
                         f"input of shape {tuple(x.shape)}")
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"pad_width: pad_width={widths} must be non-negative (as in numpy.pad; F.pad crops with "
                         f"negative widths)")
    return Pad.apply(x, widths=widths, value=constant_values)
