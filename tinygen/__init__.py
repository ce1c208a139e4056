"""tinygen: readable generative models on the autograd engine."""
import autograd  # noqa: F401  first, so that its BLAS settings are in place before NumPy loads (autograd/_blas.py)
