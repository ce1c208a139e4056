"""Tensor: an array plus the record of how it was computed, for reverse-mode autodiff.

    x = Tensor([[1., 2.], [3., 4.]], requires_grad=True)
    y = (x * x).sum()          # y = sum_ij x_ij^2
    y.backward()               # x.grad = dy/dx = 2 x

`backward()` visits the graph in reverse topological order with an explicit stack (no recursion,
so a chain of 10,000 ops is fine), adds up the gradients of tensors used more than once, and frees
what each op saved once its backward has run.

In-place methods (copy_, fill_, zero_, add_, sub_, mul_) change .data without recording an op; each
bumps the tensor's version counter, and backward refuses an op whose saved array was changed since
its forward pass, as PyTorch does. The counter is shared by every tensor that shares the memory: the
detach()ed copy and every view (x[0:2], x.reshape(...), x.T, x.expand(...), made with or without
grad), so a change through any of them is seen. Since they are not recorded, in-place methods are
refused on a tensor computed by an op that needs a gradient (the graph would not know the change).
Writing to .data directly bypasses the counter, as in PyTorch.
"""
import numpy

from . import backend
from .function import ShapeError, _owner

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) that turns graph building off: for evaluation and sampling."""

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Turn graph building back on inside a no_grad block (classifier guidance needs d log p / dx)."""

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, True


def _as_array(data, dtype=None, device=None):
    """Convert data to a backend array. Floats become float32 unless `dtype` says otherwise."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.module_for(device) if device is not None else backend.xp_of(data)
    if not hasattr(data, "dtype") or isinstance(data, numpy.generic):
        data = numpy.asarray(data)
    if dtype is not None:
        dtype = numpy.dtype(dtype)
    elif data.dtype.kind == "f" and data.dtype != numpy.float32:
        dtype = numpy.dtype(numpy.float32)
    elif data.dtype.kind in "iu" and data.dtype != numpy.int64:
        dtype = numpy.dtype(numpy.int64)
    if device is not None:
        data = backend.to_device(data, device)
    return xp.asarray(data, dtype=dtype) if dtype is not None else data


class Tensor:
    __array_priority__ = 1000  # numpy_scalar * tensor -> Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        self.data = _as_array(data, dtype, device)
        self.grad = None
        self._ctx = None  # the Function that produced this tensor (None for leaves)
        self._retain_grad = False
        self._requires_grad = False
        self.requires_grad = requires_grad  # checked: floating tensors only
        self._version_counter = [0]  # bumped by in-place methods; a list, so that views and detach() share it
        if isinstance(data, Tensor) and _owner(self.data) is _owner(data.data):
            # Tensor(t) (and Parameter(t)) without a copy is one more name for t's memory: one counter
            self._version_counter = data._version_counter

    @classmethod
    def _make(cls, data, requires_grad, ctx):
        """Wrap an op's output array as it is (no dtype conversion; the caller vouches for requires_grad)."""
        t = cls.__new__(cls)
        t.data, t._requires_grad, t.grad, t._ctx, t._retain_grad = data, requires_grad, None, ctx, False
        t._version_counter = [0]
        return t

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        # a gradient is a direction of infinitesimal change: integers and booleans have none (PyTorch refuses too)
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}; "
                            f"cast it first with .astype('float32')")
        self._requires_grad = bool(flag)

    # ------------------------------------------------------------------ attributes
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    _version = property(lambda self: self._version_counter[0], doc="how many in-place changes .data has had")

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        """The sub-tensors along the first axis (as NumPy iterates an array)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __bool__(self):
        """The truth value of a one-element tensor; any other size is ambiguous, as in NumPy."""
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.size} elements (shape {tuple(self.shape)}) "
                             f"is ambiguous: use .any() or .all()")
        return bool(self.data.item())

    def __float__(self):
        return float(self._scalar("float"))

    def __int__(self):
        return int(self._scalar("int"))

    def _scalar(self, kind):
        if self.size != 1:
            raise TypeError(f"{kind}() of a tensor of shape {tuple(self.shape)}: only one-element tensors "
                            f"convert to Python scalars")
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        body = numpy.array2string(backend.to_numpy(self.data), precision=4, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self):
        """The values as a NumPy array on the CPU (a copy for GPU tensors)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """The same values, cut from the graph (shares memory, and the version counter)."""
        t = Tensor._make(self.data, False, None)
        t._version_counter = self._version_counter
        return t

    # ------------------------------------------------------------------ in-place (not recorded in the graph)
    def _in_place(self, value, fn, name):
        """Apply fn(data, value) in place and bump the version counter (shared with views and detach())."""
        if self._ctx is not None and self._requires_grad and _grad_enabled:
            # the change is not recorded: later ops would differentiate the old formula (y.mul_(3) would
            # leave the factor 3 out of the gradient), so refuse it, as PyTorch refuses what it cannot record
            raise RuntimeError(
                f"{name}: in-place change of a tensor of shape {tuple(self.shape)} computed by "
                f"{self._ctx.name()} that requires grad: in-place methods are not recorded in the graph, so "
                f"the gradient would be wrong. Write it out of place (y = y * 3), or change it under no_grad()")
        value = value.data if isinstance(value, Tensor) else value
        fn(self.data, value)
        self._version_counter[0] += 1
        return self

    def copy_(self, src):
        """self[...] = src (broadcast), in place."""
        return self._in_place(src, lambda d, v: d.__setitem__(Ellipsis, v), "copy_")

    def fill_(self, value):
        return self._in_place(value, lambda d, v: d.fill(v), "fill_")

    def zero_(self):
        return self._in_place(0, lambda d, v: d.fill(v), "zero_")

    def add_(self, other, alpha=1):
        """self += alpha * other, in place."""
        def add(d, v):
            d += v if alpha == 1 else d.dtype.type(alpha) * v
        return self._in_place(other, add, "add_")

    def sub_(self, other):
        def sub(d, v):
            d -= v
        return self._in_place(other, sub, "sub_")

    def mul_(self, other):
        def mul(d, v):
            d *= v
        return self._in_place(other, mul, "mul_")

    def to(self, device):
        """A copy on `device` ('cpu' or 'cuda'); gradients flow back across the copy."""
        if device == self.device:
            return self
        backend.module_for(device)  # clear error if the device is unavailable
        from .ops.shape import ToDevice
        return ToDevice.apply(self, device=device)

    def astype(self, dtype):
        from .ops.elementwise import Cast
        if numpy.dtype(dtype) == self.dtype:
            return self
        return Cast.apply(self, dtype=numpy.dtype(dtype))

    def float(self):
        return self.astype(numpy.float32)

    def double(self):
        return self.astype(numpy.float64)

    def requires_grad_(self, flag=True):
        """Start (or stop) recording ops on this leaf; only floating-point tensors can require grad."""
        self.requires_grad = flag
        return self

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (for inspection)."""
        self._retain_grad = True
        return self

    # ------------------------------------------------------------------ autodiff
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires it.

        `grad` is dL/d(self); it may be omitted only when self holds a single element."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad (no input had requires_grad=True, "
                               "or it was computed under no_grad())")
        xp = backend.xp_of(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar tensor of shape {self.shape}: pass a gradient of that shape, "
                    f"e.g. y.backward(ones_like(y)), or reduce to a scalar first, e.g. y.sum().backward()")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ShapeError(f"backward: gradient of shape {grad.shape} for a tensor of shape {self.shape}")
            if grad.dtype != self.dtype:
                raise TypeError(f"backward: gradient of dtype {grad.dtype} for a {self.dtype} tensor; cast it with "
                                f".astype('{self.dtype}') (no silent upcast)")

        grads = {id(self): grad}
        for node in _reverse_topological(self):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is None or node._retain_grad:  # a leaf (or a watched tensor): keep its gradient
                node.grad = g.copy() if node.grad is None else node.grad + g
            if ctx is None:
                continue
            if ctx.saved is None:
                raise RuntimeError(f"backward through {ctx.name()} a second time: its saved arrays were freed; "
                                   f"pass retain_graph=True to the first backward()")
            if ctx.saved_versions:
                ctx.check_saved_versions()
            in_grads = ctx.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for parent, pg in zip(ctx.parents, in_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape:
                    from .function import unbroadcast
                    pg = unbroadcast(pg, parent.shape)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                ctx.saved = None  # free the arrays forward kept for backward

    def zero_grad(self):
        self.grad = None


def _reverse_topological(root):
    """Nodes reachable from root that require grad, each after every node that uses it."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for p in node._ctx.parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))
    return reversed(order)


# ---------------------------------------------------------------------- creation functions
def tensor(data, requires_grad=False, dtype=None, device=None):
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _creator(name):
    def create(*shape, dtype="float32", device="cpu", requires_grad=False):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        xp = backend.module_for(device)
        return Tensor._make(getattr(xp, name)(shape, dtype=dtype), False, None).requires_grad_(requires_grad)
    create.__name__ = name
    create.__doc__ = f"A new tensor of the given shape filled by {name}."
    return create


zeros = _creator("zeros")
ones = _creator("ones")
empty = _creator("empty")


def full(shape, value, dtype="float32", device="cpu", requires_grad=False):
    xp = backend.module_for(device)
    return Tensor._make(xp.full(shape, value, dtype=dtype), False, None).requires_grad_(requires_grad)


def zeros_like(t, requires_grad=False):
    return Tensor._make(backend.xp_of(t.data).zeros_like(t.data), False, None).requires_grad_(requires_grad)


def ones_like(t, requires_grad=False):
    return Tensor._make(backend.xp_of(t.data).ones_like(t.data), False, None).requires_grad_(requires_grad)


def arange(*args, dtype="int64", device="cpu"):
    return Tensor._make(backend.module_for(device).arange(*args, dtype=dtype), False, None)


def randn(*shape, rng=None, dtype="float32", device="cpu", requires_grad=False):
    """Standard normal samples (from `rng`, a NumPy Generator, for reproducibility)."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    rng = rng if rng is not None else numpy.random.default_rng()
    data = rng.standard_normal(shape, dtype=numpy.float32).astype(dtype, copy=False)
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def rand(*shape, rng=None, dtype="float32", device="cpu", requires_grad=False):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    rng = rng if rng is not None else numpy.random.default_rng()
    data = rng.random(shape, dtype=numpy.float32).astype(dtype, copy=False)
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


from . import _methods  # noqa: E402,F401  (attaches operators and methods to Tensor)
