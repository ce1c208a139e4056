"""Linear algebra: matmul (batched, broadcast), linear (x W^T + b as one GEMM), einsum."""
import string

from .. import backend
from ..function import Function, ShapeError, broadcast_shapes
from ..tensor import Tensor
from .shape import reshape

__all__ = ["matmul", "linear", "einsum"]


class MatMul(Function):
    """C = A @ B over the last two axes, batch axes broadcast.
    dL/dA = dL/dC @ B^T,  dL/dB = A^T @ dL/dC (then summed over broadcast batch axes)."""
    op_name = "matmul"

    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(f"matmul: {a.shape} @ {b.shape}: inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
        broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved
        ga = g @ b.swapaxes(-1, -2) if self.needs_input_grad[0] else None
        gb = a.swapaxes(-1, -2) @ g if self.needs_input_grad[1] else None
        return ga, gb


class Linear(Function):
    """y = x W^T + b, for x of shape (..., in): the leading axes fold into one GEMM, so that the
    weight gradient dL/dW = g^T x is a single (out, N) @ (N, in) product, not a batch of them."""
    op_name = "linear"

    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[1]:
            raise ShapeError(f"linear: input {x.shape} has {x.shape[-1]} features, weight {w.shape} expects {w.shape[1]}")
        x2 = x.reshape(-1, x.shape[-1])
        self.save_for_backward(x2, w)
        self.x_shape = x.shape
        y = x2 @ w.T
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        x2, w = self.saved
        g2 = g.reshape(-1, g.shape[-1])                                            # (N, out)
        gx = (g2 @ w).reshape(self.x_shape) if self.needs_input_grad[0] else None  # (N, in)
        gw = g2.T @ x2 if self.needs_input_grad[1] else None                       # (out, in)
        gb = g2.sum(axis=0) if len(self.needs_input_grad) > 2 and self.needs_input_grad[2] else None
        return gx, gw, gb


class Einsum(Function):
    """Einstein summation with explicit output ('ij,jk->ik'). The gradient of operand i is the
    einsum of the output gradient with the other operands, written to operand i's subscripts."""
    op_name = "einsum"

    def forward(self, *arrays, subscripts):
        xp = backend.xp_of(*arrays)
        self.inputs, self.output = _parse_einsum(subscripts, arrays)
        self.shapes = [a.shape for a in arrays]
        self.save_for_backward(*arrays)
        return xp.einsum(",".join(self.inputs) + "->" + self.output, *arrays, optimize=True)

    def backward(self, g):
        xp = backend.xp_of(g)
        arrays = self.saved
        grads = []
        for i, subs in enumerate(self.inputs):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [(s, a) for j, (s, a) in enumerate(zip(self.inputs, arrays)) if j != i]
            available = set(self.output).union(*[set(s) for s, _ in others])
            kept = "".join(c for c in subs if c in available)  # letters summed away only in operand i
            spec = ",".join([self.output] + [s for s, _ in others]) + "->" + kept
            gi = xp.einsum(spec, g, *[a for _, a in others], optimize=True)
            view_shape = tuple(n if c in available else 1 for c, n in zip(subs, self.shapes[i]))
            grads.append(xp.broadcast_to(gi.reshape(view_shape), self.shapes[i]))
        return tuple(grads)


def _parse_einsum(subscripts, arrays):
    """Expand '...' into explicit letters; return (input subscripts, output subscripts)."""
    subscripts = subscripts.replace(" ", "")
    if "->" not in subscripts:
        raise ValueError(f"einsum: give the output explicitly, e.g. 'ij,jk->ik' (got {subscripts!r})")
    lhs, out = subscripts.split("->")
    inputs = lhs.split(",")
    if len(inputs) != len(arrays):
        raise ShapeError(f"einsum: {subscripts!r} names {len(inputs)} operands, got {len(arrays)}")
    unused = [c for c in string.ascii_letters if c not in subscripts]
    n_ell = max((a.ndim - len(s.replace("...", "")) for s, a in zip(inputs, arrays) if "..." in s), default=0)
    ell = "".join(unused[:n_ell])
    expanded = []
    for s, a in zip(inputs, arrays):
        if "..." in s:
            k = a.ndim - len(s.replace("...", ""))
            s = s.replace("...", ell[n_ell - k:])
        if len(s) != a.ndim:
            raise ShapeError(f"einsum: subscripts {s!r} for an operand of shape {a.shape}")
        if len(set(s)) != len(s):
            raise ValueError(f"einsum: repeated subscript within one operand ({s!r}, a diagonal) is not supported")
        expanded.append(s)
    sizes = {}
    for s, a in zip(expanded, arrays):
        for c, n in zip(s, a.shape):
            if sizes.get(c, n) != n and 1 not in (n, sizes[c]):
                raise ShapeError(f"einsum {subscripts!r}: index {c!r} has sizes {sizes[c]} and {n} "
                                 f"(shapes {[x.shape for x in arrays]})")
            sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
    return expanded, out.replace("...", ell)


def matmul(a, b):
    """a @ b with NumPy's rules: 1-d operands gain (and then lose) an axis."""
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    out = MatMul.apply(a, b)
    if squeeze_a or squeeze_b:
        shape = out.shape[:-2] + (() if squeeze_a else out.shape[-2:-1]) + (() if squeeze_b else out.shape[-1:])
        out = reshape(out, shape)
    return out


def linear(x, weight, bias=None):
    """F.linear: y = x weight^T + bias, weight of shape (out, in)."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def einsum(subscripts, *operands):
    return Einsum.apply(*operands, subscripts=subscripts)
