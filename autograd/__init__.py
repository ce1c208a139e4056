"""autograd: a small reverse-mode automatic differentiation engine on NumPy (CuPy on a GPU).

    from autograd import Tensor
    import autograd.functional as F

Tensor holds an array and how it was computed; each op is a Function with forward and backward on
raw arrays; Tensor.backward() applies the chain rule in reverse topological order.
This package knows nothing of models: it must not import tinygen.
"""
from ._blas import short_blas_spin
short_blas_spin()             # before NumPy loads OpenBLAS: idle BLAS threads sleep at once; see autograd/_blas.py
from ._malloc import keep_large_arrays_on_heap
from .function import Function, ShapeError
from .tensor import (Tensor, arange, empty, enable_grad, full, is_grad_enabled, no_grad, ones, ones_like, rand,
                     randn, tensor, zeros, zeros_like)
from . import functional
from .gradcheck import GradcheckError, gradcheck

__all__ = ["Tensor", "Function", "ShapeError", "no_grad", "enable_grad", "is_grad_enabled", "tensor", "zeros",
           "ones", "empty", "full", "zeros_like", "ones_like", "arange", "randn", "rand", "functional",
           "gradcheck", "GradcheckError"]

keep_large_arrays_on_heap()   # a third less CPU time on large batches; see autograd/_malloc.py
