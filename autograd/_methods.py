"""Operators and NumPy-vocabulary methods on Tensor, each a thin call into autograd.functional."""
from . import backend
from .tensor import Tensor
from . import functional as F


def _constant(fn):
    """A comparison returns a plain (non-differentiable) boolean Tensor."""
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._make(fn(self.data, other), False, None)
    return method


Tensor.__add__ = lambda a, b: F.add(a, b)
Tensor.__radd__ = lambda a, b: F.add(b, a)
Tensor.__sub__ = lambda a, b: F.sub(a, b)
Tensor.__rsub__ = lambda a, b: F.sub(b, a)
Tensor.__mul__ = lambda a, b: F.mul(a, b)
Tensor.__rmul__ = lambda a, b: F.mul(b, a)
Tensor.__truediv__ = lambda a, b: F.div(a, b)
Tensor.__rtruediv__ = lambda a, b: F.div(b, a)
Tensor.__neg__ = lambda a: F.neg(a)
Tensor.__pow__ = lambda a, b: F.pow(a, b)
Tensor.__rpow__ = lambda a, b: F.pow(b, a)
Tensor.__matmul__ = lambda a, b: F.matmul(a, b)
Tensor.__rmatmul__ = lambda a, b: F.matmul(b, a)
Tensor.__getitem__ = lambda a, index: F.getitem(a, index)
Tensor.__lt__ = _constant(lambda x, y: x < y)
Tensor.__le__ = _constant(lambda x, y: x <= y)
Tensor.__gt__ = _constant(lambda x, y: x > y)
Tensor.__ge__ = _constant(lambda x, y: x >= y)
Tensor.__hash__ = object.__hash__  # tensors are graph nodes: hashed by identity

for _name in ["exp", "log", "sqrt", "abs", "clip", "relu", "sigmoid", "tanh", "sum", "mean", "var", "max",
              "min", "logsumexp", "reshape", "transpose", "expand", "flatten", "squeeze", "unsqueeze"]:
    # looked up at call time, so ops defined in any module of autograd.functional can be methods
    setattr(Tensor, _name, (lambda name: lambda self, *a, **k: getattr(F, name)(self, *a, **k))(_name))

# methods speak NumPy (axis), F speaks PyTorch (dim)
Tensor.softmax = lambda self, axis=-1: F.softmax(self, dim=axis)
Tensor.log_softmax = lambda self, axis=-1: F.log_softmax(self, dim=axis)
Tensor.T = property(lambda self: F.transpose(self))
Tensor.argmax = lambda self, axis=None: Tensor._make(self.data.argmax(axis=axis), False, None)
Tensor.argmin = lambda self, axis=None: Tensor._make(self.data.argmin(axis=axis), False, None)
Tensor.cpu = lambda self: self.to("cpu")
Tensor.cuda = lambda self: self.to("cuda")
Tensor.xp = property(lambda self: backend.xp_of(self.data))
