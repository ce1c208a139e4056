"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op asks for the array module of its inputs with ``xp_of(array)`` and calls
``xp.exp``, ``xp.matmul``, ... on it, never ``numpy`` directly, so one op works on both.
The few places where NumPy and CuPy differ (scatter-add, strided windows) live here.

Backends are a small registry of (array type -> module); tests register a stand-in
backend that records every call, to prove no op falls back to NumPy.
"""
import numpy

try:  # CuPy is the optional GPU extra
    import cupy  # type: ignore
except Exception:  # ImportError, or a CUDA driver problem at import time
    cupy = None

# (array type, array module, device name), first match wins; NumPy is the fallback.
_BACKENDS = []
if cupy is not None:
    _BACKENDS.append((cupy.ndarray, cupy, "cuda"))


def register_backend(array_type, module, device):
    """Make arrays of `array_type` use `module` as their array module (device name `device`)."""
    _BACKENDS.insert(0, (array_type, module, device))


def unregister_backend(array_type):
    _BACKENDS[:] = [b for b in _BACKENDS if b[0] is not array_type]


def _lookup(array):
    for array_type, module, device in _BACKENDS:
        if isinstance(array, array_type):
            return module, device
    return numpy, "cpu"


def xp_of(*arrays):
    """The array module (numpy, cupy, ...) that the given arrays belong to."""
    for a in arrays:
        if a is not None and not isinstance(a, (int, float, bool)):
            return _lookup(a)[0]
    return numpy


def device_of(array):
    return _lookup(array)[1]


def module_for(device):
    """The array module for a device name: 'cpu' or 'cuda' (clear error without CuPy or a GPU)."""
    if device == "cpu":
        return numpy
    if device in ("cuda", "gpu") or str(device).startswith("cuda:"):
        if cupy is None:
            raise RuntimeError(
                "device 'cuda' needs CuPy and an NVIDIA GPU: CuPy is not importable here. "
                "Install the GPU extra (pip install cupy-cuda12x) on a machine with a GPU, or use device='cpu'.")
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver / no device
            raise RuntimeError(f"device 'cuda': CuPy is installed but no GPU is usable ({e}); use device='cpu'.")
        return cupy
    for _, module, name in _BACKENDS:
        if name == device:
            return module
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def to_device(array, device):
    """Copy `array` to `device` ('cpu' or 'cuda'); a no-op when it is already there."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get() if hasattr(array, "get") else numpy.asarray(array)
    return module_for(device).asarray(array)


def to_numpy(array):
    """A NumPy array on the CPU, whatever backend `array` lives on."""
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


def is_numpy(xp):
    """Whether xp is NumPy itself (where an op may use a NumPy-only speed trick)."""
    return xp is numpy


def scatter_add(xp, target, index, values):
    """target[index] += values with repeated indices accumulated (np.add.at / cupyx.scatter_add)."""
    if xp is numpy or not hasattr(xp, "cuda"):
        xp.add.at(target, index, values)
    else:  # CuPy
        import cupyx  # type: ignore
        cupyx.scatter_add(target, index, values)
    return target


def as_strided(xp, x, shape, strides):
    """A strided view of x (no copy): numpy.lib.stride_tricks.as_strided / cupy.lib.stride_tricks."""
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)
