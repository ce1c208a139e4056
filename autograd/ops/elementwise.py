"""Elementwise ops: arithmetic with broadcasting, pow, exp, log, sqrt, abs, clip, maximum, minimum,
where, and the activations (relu, leaky_relu, gelu, silu, sigmoid, tanh, softplus)."""
import math

from .. import _threads, backend
from ..function import Function, broadcast_shapes
from ..tensor import Tensor
from ._util import as_tensor

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "clip", "maximum",
           "minimum", "where", "relu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softplus"]


class _Binary(Function):
    """Base for broadcasting binary ops: checks shapes and names the op in the error."""

    @classmethod
    def apply(cls, a, b):
        if a.shape != b.shape:
            broadcast_shapes(cls.name(), a.shape, b.shape)
        return super().apply(a, b)


class Add(_Binary):
    op_name = "add"

    def forward(self, a, b):
        return a + b

    def backward(self, g):  # d(a+b)/da = 1, d(a+b)/db = 1 (unbroadcast by the engine)
        return g, g


class Sub(_Binary):
    op_name = "sub"

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(_Binary):
    op_name = "mul"

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return (g * b if self.needs_input_grad[0] else None,
                g * a if self.needs_input_grad[1] else None)


class Div(_Binary):
    op_name = "div"

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        a, b = self.saved
        ga = g / b if self.needs_input_grad[0] else None
        gb = -g * a / (b * b) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(_Binary):
    """a ** b for tensors a > 0 (when b needs a gradient) and b."""
    op_name = "pow"

    def forward(self, a, b):
        out = a ** b
        self.save_for_backward(a, b, out)
        return out

    def backward(self, g):  # d(a^b)/da = b a^(b-1),  d(a^b)/db = a^b log a
        a, b, out = self.saved
        xp = backend.xp_of(a)
        ga = g * b * a ** (b - 1) if self.needs_input_grad[0] else None
        gb = g * out * xp.log(xp.where(a > 0, a, 1)) if self.needs_input_grad[1] else None
        return ga, gb


def int_power(a, p):
    """a ** p for a Python number p, computed by multiplying when p is a small integer.

    Speed trick: NumPy's float32 power with a non-trivial exponent calls powf per element, about
    100 times slower than multiplying (208 ms against 1.8 ms for a ** 3 on a (128, 50, 512) array,
    the MLP activation of one transformer block). Square-and-multiply gives a ** p in at most
    2 log2 |p| products; p = 0.5 is a square root. Other exponents fall back to power."""
    xp = backend.xp_of(a)
    if p == 0.5:
        return xp.sqrt(a)
    if float(p).is_integer() and -64 <= p <= 64:
        n, out, base = int(p) if p > 0 else -int(p), None, a
        while n:
            if n & 1:
                out = base if out is None else out * base
            n >>= 1
            if n:
                base = base * base
        if out is None:  # p = 0
            return xp.ones_like(a)
        if out is a:  # p = +-1: a new array, never the input itself
            out = a.copy()
        return 1 / out if p < 0 else out
    return a ** p


class PowScalar(Function):
    """a ** p for a constant exponent p (integer exponents multiply: see int_power)."""
    op_name = "pow"

    def forward(self, a, p):
        self.save_for_backward(a)
        self.p = p
        return int_power(a, p)

    def backward(self, g):  # d(a^p)/da = p a^(p-1)
        (a,) = self.saved
        return g * self.p * int_power(a, self.p - 1)


class Neg(Function):
    op_name = "neg"

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Cast(Function):
    op_name = "astype"

    def forward(self, a, dtype):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


class Exp(Function):
    op_name = "exp"

    def forward(self, a):
        out = backend.xp_of(a).exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):  # d e^a / da = e^a
        return g * self.saved[0]


class Log(Function):
    op_name = "log"

    def forward(self, a):
        self.save_for_backward(a)
        return backend.xp_of(a).log(a)

    def backward(self, g):
        return g / self.saved[0]


class Sqrt(Function):
    op_name = "sqrt"

    def forward(self, a):
        out = backend.xp_of(a).sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):  # d sqrt(a)/da = 1 / (2 sqrt(a))
        return g / (2 * self.saved[0])


class Abs(Function):
    op_name = "abs"

    def forward(self, a):
        self.save_for_backward(a)
        return backend.xp_of(a).abs(a)

    def backward(self, g):
        return g * backend.xp_of(g).sign(self.saved[0])


class Clip(Function):
    op_name = "clip"

    def forward(self, a, lo, hi):
        xp = backend.xp_of(a)
        inside = xp.ones(a.shape, dtype=bool)
        if lo is not None:
            inside &= a >= lo
        if hi is not None:
            inside &= a <= hi
        self.save_for_backward(inside)
        return xp.clip(a, lo, hi)

    def backward(self, g):  # the gradient passes only where the value was not clipped
        return g * self.saved[0]


class Maximum(_Binary):
    op_name = "maximum"

    def forward(self, a, b):
        self.save_for_backward(a >= b)
        return backend.xp_of(a).maximum(a, b)

    def backward(self, g):  # ties send the gradient to a
        a_wins = self.saved[0]
        return g * a_wins, g * ~a_wins


class Minimum(_Binary):
    op_name = "minimum"

    def forward(self, a, b):
        self.save_for_backward(a <= b)
        return backend.xp_of(a).minimum(a, b)

    def backward(self, g):
        a_wins = self.saved[0]
        return g * a_wins, g * ~a_wins


class Where(Function):
    op_name = "where"

    def forward(self, cond, a, b):
        broadcast_shapes("where", cond.shape, a.shape, b.shape)
        self.save_for_backward(cond)
        return backend.xp_of(a).where(cond, a, b)

    def backward(self, g):
        (cond,) = self.saved
        zero = g.dtype.type(0)
        xp = backend.xp_of(g)
        return None, xp.where(cond, g, zero), xp.where(cond, zero, g)


# ---------------------------------------------------------------------- activations
class ReLU(Function):
    """relu(a) = max(a, 0); d/da = [a > 0], read from the output: [relu(a) > 0] = sign(relu(a)).

    Speed: as SiLU's, the batch is cut between the engine's threads (autograd/_threads.py), each
    writing its rows of one new array made on the caller's thread (in a's memory layout)."""
    op_name = "relu"

    def forward(self, a):
        xp = backend.xp_of(a)
        rows = a.reshape(1) if a.ndim == 0 else a
        out = xp.empty_like(rows)

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            xp.maximum(rows[b0:b1], 0, out=out[b0:b1])

        _threads.over_batch(xp, len(rows), samples, rows.nbytes // max(len(rows), 1))
        out = out.reshape(a.shape)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        xp = backend.xp_of(g)
        rows = [v.reshape(1) if v.ndim == 0 else v for v in (self.saved[0], g)]
        d = xp.empty_like(rows[0])

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            oi, gi, di = rows[0][b0:b1], rows[1][b0:b1], d[b0:b1]
            xp.sign(oi, out=di)                          # [a > 0]: the output is 0 or positive
            di *= gi

        _threads.over_batch(xp, len(d), samples, d.nbytes // max(len(d), 1))
        return d.reshape(g.shape)


class LeakyReLU(Function):
    op_name = "leaky_relu"

    def forward(self, a, slope):
        self.slope = slope
        self.save_for_backward(a > 0)
        return backend.xp_of(a).where(a > 0, a, a * a.dtype.type(slope))

    def backward(self, g):
        return backend.xp_of(g).where(self.saved[0], g, g * g.dtype.type(self.slope))


class Sigmoid(Function):
    op_name = "sigmoid"

    def forward(self, a):
        xp = backend.xp_of(a)
        # sigma(a) = 1 / (1 + e^-a), evaluated as (1 + tanh(a/2)) / 2: stable for large |a|
        out = 0.5 * (1 + xp.tanh(0.5 * a))
        self.save_for_backward(out)
        return out

    def backward(self, g):  # sigma' = sigma (1 - sigma)
        s = self.saved[0]
        return g * s * (1 - s)


class Tanh(Function):
    op_name = "tanh"

    def forward(self, a):
        out = backend.xp_of(a).tanh(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):  # tanh' = 1 - tanh^2
        t = self.saved[0]
        return g * (1 - t * t)


class SiLU(Function):
    """silu(a) = a sigmoid(a), sigmoid(a) = (1 + tanh(a/2)) / 2 (stable for large |a|).

    Memory: only a is kept for backward, which computes sigmoid(a) again (as PyTorch does): a U-Net
    has two SiLUs a block, each on a whole feature map, and keeping s as well held one more map per
    SiLU from the forward pass to the backward.
    Speed: the activations of a conv net are its largest arrays, so forward and backward work in
    place on one or two new arrays (in a's memory layout) instead of a fresh temporary per arithmetic
    step, and the batch is cut between the engine's threads (autograd/_threads.py), each writing its
    rows of those arrays."""
    op_name = "silu"

    def forward(self, a):
        xp = backend.xp_of(a)
        rows = a.reshape(1) if a.ndim == 0 else a
        y = xp.empty_like(rows)

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            ai, yi = rows[b0:b1], y[b0:b1]
            _sigmoid_into(xp, ai, yi)                    # s = sigmoid(a)
            yi *= ai                                     # y = a s

        _threads.over_batch(xp, len(rows), samples, rows.nbytes // max(len(rows), 1))
        self.save_for_backward(a)
        return y.reshape(a.shape)

    def backward(self, g):  # d(a s)/da = s + a s (1 - s) = s (1 + a (1 - s))
        (a,) = self.saved
        xp = backend.xp_of(g)
        rows = [v.reshape(1) if v.ndim == 0 else v for v in (a, g)]
        s, d = xp.empty_like(rows[0]), xp.empty_like(rows[0])   # in a's memory layout

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            ai, gi, si, di = (v[b0:b1] for v in (*rows, s, d))
            _sigmoid_into(xp, ai, si)                    # s = sigmoid(a), again
            xp.subtract(si.dtype.type(1), si, out=di)    # 1 - s
            di *= ai
            di += 1
            di *= si
            di *= gi

        _threads.over_batch(xp, len(d), samples, d.nbytes // max(len(d), 1))
        return d.reshape(g.shape)


def _sigmoid_into(xp, a, out):
    """out = sigmoid(a) = (1 + tanh(a/2)) / 2, in place in out."""
    xp.multiply(a, a.dtype.type(0.5), out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5


class Softplus(Function):
    op_name = "softplus"

    def forward(self, a):
        xp = backend.xp_of(a)
        self.save_for_backward(a)
        return xp.logaddexp(a.dtype.type(0), a)  # log(1 + e^a), stable

    def backward(self, g):  # softplus' = sigmoid
        a = self.saved[0]
        return g * 0.5 * (1 + backend.xp_of(a).tanh(0.5 * a))


class GELU(Function):
    """GELU with the tanh approximation (Hendrycks & Gimpel 2016; as in GPT-2):
    gelu(a) = a/2 (1 + tanh(u)),  u = sqrt(2/pi) (a + 0.044715 a^3).

    Speed: a^3 is a * a * a, never a ** 3 (see int_power: 100x slower on float32), and the steps
    work in place on one or two new arrays (these are the largest activations of a transformer); as
    SiLU's, the batch is cut between the engine's threads (autograd/_threads.py), each writing its rows."""
    op_name = "gelu"
    C = math.sqrt(2 / math.pi)

    def forward(self, a):
        xp = backend.xp_of(a)
        rows = a.reshape(1) if a.ndim == 0 else a
        t, out = xp.empty_like(rows), xp.empty_like(rows)

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            ai, ti, oi = rows[b0:b1], t[b0:b1], out[b0:b1]
            # u = C (a + 0.044715 a^3)
            xp.multiply(ai, ai, out=ti)
            ti *= ai
            ti *= 0.044715
            ti += ai
            ti *= self.C
            xp.tanh(ti, out=ti)                          # t = tanh(u)
            # gelu = a/2 (1 + t)
            xp.add(ti, 1, out=oi)
            oi *= ai
            oi *= 0.5

        _threads.over_batch(xp, len(rows), samples, rows.nbytes // max(len(rows), 1))
        self.save_for_backward(a, t.reshape(a.shape))
        return out.reshape(a.shape)

    def backward(self, g):  # d/da = (1 + t)/2 + a/2 (1 - t^2) du/da,  du/da = C (1 + 3 * 0.044715 a^2)
        a, t = self.saved
        xp = backend.xp_of(g)
        rows = [v.reshape(1) if v.ndim == 0 else v for v in (a, t, g)]
        d, e = xp.empty_like(rows[1]), xp.empty_like(rows[1])

        def samples(b0, b1):  # rows b0 <= i < b1 of the batch (a thread of _threads.over_batch)
            ai, ti, gi, di, ei = (v[b0:b1] for v in (*rows, d, e))
            # a/2 du/da = (C/2) a (1 + 0.134145 a^2)
            xp.multiply(ai, ai, out=di)
            di *= 0.134145
            di += 1
            di *= 0.5 * self.C
            di *= ai
            xp.multiply(ti, ti, out=ei)
            xp.subtract(ei.dtype.type(1), ei, out=ei)   # 1 - t^2
            di *= ei
            xp.multiply(ti, ti.dtype.type(0.5), out=ei)   # t / 2
            di += ei
            di += 0.5                                     # + (1 + t) / 2
            di *= gi

        _threads.over_batch(xp, len(d), samples, d.nbytes // max(len(d), 1))
        return d.reshape(g.shape)


# ---------------------------------------------------------------------- public wrappers
def add(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Add.apply(a, as_tensor(b, a))


def sub(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Sub.apply(a, as_tensor(b, a))


def mul(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Mul.apply(a, as_tensor(b, a))


def div(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Div.apply(a, as_tensor(b, a))


def neg(a):
    return Neg.apply(a)


def pow(a, b):
    if not isinstance(a, Tensor):
        return Pow.apply(as_tensor(a, b), b)
    if isinstance(b, Tensor):
        return Pow.apply(a, b)
    return PowScalar.apply(a, p=b)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def abs(a):
    return Abs.apply(a)


def clip(a, lo=None, hi=None):
    return Clip.apply(a, lo=lo, hi=hi)


def maximum(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Maximum.apply(a, as_tensor(b, a))


def minimum(a, b):
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Minimum.apply(a, as_tensor(b, a))


def where(cond, a, b):
    """Elementwise cond ? a : b (cond is a boolean array or Tensor, not differentiated)."""
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    cond = cond.data if isinstance(cond, Tensor) else cond
    xp = backend.xp_of(a.data)
    return Where.apply(Tensor._make(xp.asarray(cond, dtype=bool), False, None), a, b)


def relu(a):
    return ReLU.apply(a)


def leaky_relu(a, negative_slope=0.01):
    return LeakyReLU.apply(a, slope=negative_slope)


def gelu(a):
    return GELU.apply(a)


def silu(a):
    return SiLU.apply(a)


def sigmoid(a):
    return Sigmoid.apply(a)


def tanh(a):
    return Tanh.apply(a)


def softplus(a):
    return Softplus.apply(a)
