"""Module and Parameter: the containers every network is built from.

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 256)     # a sub-module, registered by assignment
            self.scale = nn.Parameter(np.ones(256, np.float32))
            self.register_buffer("mean", np.zeros(784, np.float32))

        def forward(self, x):                  # (B, 784) -> (B, 256)
            return self.fc1(x - self.mean) * self.scale

Parameters, buffers and sub-modules are kept in assignment order; named_parameters() lists a
module's own parameters first, then each sub-module's, with dotted names ("layers.0.weight").

Buffers are RAW ARRAYS (numpy or cupy), not Tensors: state that is saved and moved with the model
but never trained (BatchNorm's running statistics, fixed schedules). Ops accept them where they
accept constants (x * self.mean); wrap one in a Tensor to call Tensor methods on it.
register_buffer(name, array, persistent=False) keeps a buffer out of state_dict().
"""
from collections import OrderedDict

import numpy as np

from autograd import Tensor, backend

__all__ = ["Parameter", "Module", "StateDictError", "Sequential", "ModuleList"]


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad=True, floating point (float32 unless given
    another float dtype). Built from an array, a list or a Tensor (whose array it shares)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data)
        if self.data.dtype.kind != "f":
            self.data = self.data.astype(np.float32)
        self.requires_grad = bool(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(KeyError, ValueError):
    """load_state_dict() found missing, unexpected or mis-shaped entries (all named in the message)."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _shape_str(a):
    return str(tuple(np.shape(a)))


class Module:
    """Base class of all layers and models: override forward(); call the module to run it."""

    training = True

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def _registries(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__(): call super().__init__() "
                                 f"first in {type(self).__name__}.__init__")
        return self._parameters, self._buffers, self._modules

    def __setattr__(self, name, value):
        params, buffers, modules = self._registries(name)
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value  # a re-assigned name keeps its place in the order
        elif isinstance(value, Module):
            self._forget(name, keep=modules)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__} (expected a Parameter or None)")
            params[name] = None
        elif name in buffers:
            buffers[name] = _buffer_array(name, value)
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r} of "
                                f"{type(self).__name__} (expected a Module or None)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep=None):
        """Remove `name` from every registry but `keep` (and from the plain attributes)."""
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if any(name in r for r in (self._parameters, self._buffers, self._modules)):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Same as `self.name = param`; param may be None (an absent optional parameter, e.g. bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._registries(name)
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name, array, persistent=True):
        """A raw array saved in state_dict() (unless persistent=False) and moved by to(device)."""
        self._registries(name)
        self._forget(name, keep=self._buffers)
        self._buffers[name] = _buffer_array(name, array)
        if not persistent:
            self._non_persistent.add(name)

    def register_module(self, name, module):
        """Same as `self.name = module` (for names that are not identifiers)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"register_module({name!r}): expected a Module, got {type(module).__name__}")
        self._registries(name)
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ("") and every module below it, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((k, m) for k, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) in registration order; a parameter shared by two modules appears once."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for k, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{k}" if mname else k), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix="", persistent_only=False):
        for mname, m in self.named_modules(prefix):
            for k, b in m._buffers.items():
                if b is not None and not (persistent_only and k in m._non_persistent):
                    yield (f"{mname}.{k}" if mname else k), b

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def num_parameters(self, trainable_only=False):
        """The number of scalar parameters (each shared parameter counted once)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        """Training mode (dropout active, batch statistics) for this module and all below it."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def apply(self, fn):
        """Call fn(module) on every module below this one and on this one (children first)."""
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ state
    def _state_items(self):
        """(name, owner module, attribute, kind) of every saved entry, parameters then buffers per module."""
        for mname, m in self.named_modules():
            for k, p in m._parameters.items():
                if p is not None:
                    yield (f"{mname}.{k}" if mname else k), m, k, "parameter"
            for k, b in m._buffers.items():
                if b is not None and k not in m._non_persistent:
                    yield (f"{mname}.{k}" if mname else k), m, k, "buffer"

    def state_dict(self):
        """{dotted name: NumPy array copy} of every parameter and persistent buffer."""
        out = OrderedDict()
        for name, m, k, kind in self._state_items():
            a = m._parameters[k].data if kind == "parameter" else m._buffers[k]
            out[name] = np.array(backend.to_numpy(a), copy=True)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of `state_dict` into the parameters and buffers, in place.

        Refuses (StateDictError naming every problem, nothing loaded) entries whose shape differs,
        and with strict=True also missing and unexpected names. Returns (missing, unexpected)."""
        targets = {name: (m, k, kind) for name, m, k, kind in self._state_items()}
        missing = [n for n in targets if n not in state_dict]
        unexpected = [n for n in state_dict if n not in targets]
        mis_shaped = []
        for name, value in state_dict.items():
            value = value.data if isinstance(value, Tensor) else value
            if name in targets:
                current = self._state_array(*targets[name])
                if tuple(np.shape(value)) != tuple(current.shape):
                    mis_shaped.append((name, tuple(np.shape(value)), tuple(current.shape)))
        problems = []
        if strict and missing:
            problems.append("missing (in the model, not in the state dict): " + ", ".join(
                f"{n} {_shape_str(self._state_array(*targets[n]))}" for n in missing))
        if strict and unexpected:
            problems.append("unexpected (in the state dict, not in the model): " + ", ".join(
                f"{n} {_shape_str(state_dict[n])}" for n in unexpected))
        if mis_shaped:
            problems.append("mis-shaped: " + ", ".join(f"{n} {s} in the state dict, {t} in the model"
                                                       for n, s, t in mis_shaped))
        if problems:
            raise StateDictError(f"load_state_dict for {type(self).__name__} refused, nothing loaded:\n  "
                                 + "\n  ".join(problems))
        for name, value in state_dict.items():
            if name in targets:
                a = self._state_array(*targets[name])
                value = value.data if isinstance(value, Tensor) else value
                xp = backend.xp_of(a)
                a[...] = xp.asarray(backend.to_numpy(value) if xp is np else value, dtype=a.dtype)
        return missing, unexpected

    @staticmethod
    def _state_array(m, k, kind):
        return m._parameters[k].data if kind == "parameter" else m._buffers[k]

    def to(self, device):
        """Move every parameter (and its gradient) and buffer to `device` ('cpu' or 'cuda'), in place."""
        backend.module_for(device)  # a clear error when the device is unavailable
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = backend.to_device(p.data, device)
                    if p.grad is not None:
                        p.grad = backend.to_device(p.grad, device)
            for k, b in m._buffers.items():
                if b is not None:
                    m._buffers[k] = backend.to_device(b, device)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # ------------------------------------------------------------------ printing
    def extra_repr(self):
        """The constructor arguments shown by repr() (override in layers)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = [extra] if extra else []
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))


def _buffer_array(name, value):
    """A buffer is kept as a raw array (a Tensor gives its array; None is allowed)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.data
    if not hasattr(value, "shape") or isinstance(value, np.generic):
        value = np.asarray(value)
    if value.dtype.kind == "f" and value.dtype != np.float32:
        value = value.astype(np.float32)
    return value


# ---------------------------------------------------------------------- containers
class Sequential(Module):
    """Modules applied one after another: Sequential(Linear(2, 8), ReLU(), Linear(8, 1)).
    Sub-modules are named "0", "1", ... (or by the keys of an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for k, m in modules[0].items():
                self.register_module(str(k), m)
        else:
            for i, m in enumerate(modules):
                self.register_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def append(self, module):
        self.register_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        items = list(self._modules.items())
        if isinstance(i, slice):
            return Sequential(OrderedDict(items[i]))
        return items[i][1]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """A list of modules whose parameters are registered (names "0", "1", ...); no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        self.register_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(mods[i])
        return mods[i]

    def __setitem__(self, i, module):
        key = list(self._modules)[i]
        self.register_module(key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
