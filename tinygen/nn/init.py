"""Random number generation for tinygen.nn and in-place parameter initialisers.

Everything random in tinygen.nn (weight initialisation, Dropout) draws from ONE NumPy Generator,
so that

    nn.manual_seed(0); a = Model()
    nn.manual_seed(0); b = Model()      # a and b have identical weights

The generator starts from a fixed seed (0), as PyTorch's does, so a script is reproducible even
without calling manual_seed. get_rng_state() / set_rng_state() save and restore its position
(a JSON-able dict) for exact resumption of training.

The initialisers work in place on a Parameter's (or Tensor's) array, on whatever device it lives:
samples are drawn on the CPU in float32 and copied over. Each takes `rng` (a NumPy Generator);
without one it uses the global generator above. Each returns its argument.

    fan_in  = weight.shape[1] * prod(weight.shape[2:])   (in_features, or in_channels/groups * kh * kw)
    fan_out = weight.shape[0] * prod(weight.shape[2:])
"""
import copy
import math

import numpy as np

from autograd import Tensor, backend

__all__ = ["manual_seed", "get_rng", "get_rng_state", "set_rng_state", "calculate_gain", "fan_in_and_fan_out",
           "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_",
           "kaiming_uniform_", "kaiming_normal_"]

_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the generator used by everything random in tinygen.nn."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng():
    """The current global NumPy Generator (fetch it at use time: manual_seed replaces it)."""
    return _rng


def get_rng_state():
    """The generator's position as a JSON-able dict (for checkpoints)."""
    return copy.deepcopy(_rng.bit_generator.state)


def set_rng_state(state):
    """Continue the global generator from a state returned by get_rng_state()."""
    global _rng
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    _rng = rng


# ---------------------------------------------------------------------- helpers
def _array(t):
    return t.data if isinstance(t, Tensor) else t


def _fill(t, values):
    """Write the NumPy array `values` into t's array in place (on t's device, in t's dtype)."""
    a = _array(t)
    xp = backend.xp_of(a)
    a[...] = xp.asarray(values, dtype=a.dtype)
    return t


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for an activation (as torch.nn.init.calculate_gain)."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(t):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel) (PyTorch's convention)."""
    shape = _array(t).shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 axes, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _rng_or_global(rng):
    return rng if rng is not None else _rng


# ---------------------------------------------------------------------- initialisers
def uniform_(t, a=0.0, b=1.0, rng=None):
    """t ~ U(a, b)."""
    return _fill(t, _rng_or_global(rng).uniform(a, b, size=_array(t).shape).astype(np.float32))


def normal_(t, mean=0.0, std=1.0, rng=None):
    """t ~ N(mean, std^2)."""
    z = _rng_or_global(rng).standard_normal(size=_array(t).shape, dtype=np.float32)
    return _fill(t, z * np.float32(std) + np.float32(mean))


def constant_(t, value):
    _array(t)[...] = value
    return t


def zeros_(t):
    return constant_(t, 0)


def ones_(t):
    return constant_(t, 1)


def xavier_uniform_(t, gain=1.0, rng=None):
    """t ~ U(-b, b),  b = gain * sqrt(6 / (fan_in + fan_out))  (Glorot & Bengio 2010)."""
    fan_in, fan_out = fan_in_and_fan_out(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, rng)


def xavier_normal_(t, gain=1.0, rng=None):
    """t ~ N(0, std^2),  std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _kaiming_std(t, a, mode, nonlinearity):
    fan_in, fan_out = fan_in_and_fan_out(t)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """t ~ U(-b, b),  b = gain * sqrt(3 / fan),  gain = sqrt(2 / (1 + a^2)) for leaky_relu (He et al. 2015).
    With a = sqrt(5) (the layers' default) b = 1 / sqrt(fan_in)."""
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity)
    return uniform_(t, -bound, bound, rng)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """t ~ N(0, std^2),  std = gain / sqrt(fan)."""
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity), rng)
