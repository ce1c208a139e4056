"""Shared test setup: point the data loader at the repository's neighbouring shared/datasets when
TINYGEN_DATA is not set, and never download during tests; the stand-in device fixtures."""
import os
from pathlib import Path

import numpy as np
import pytest

_shared = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
if "TINYGEN_DATA" not in os.environ and _shared.is_dir():
    os.environ["TINYGEN_DATA"] = str(_shared)
os.environ.setdefault("TINYGEN_OFFLINE", "1")


# ---------------------------------------------------------------------- a stand-in device
class Tagged(np.ndarray):
    """Arrays of a stand-in device: they prove that to(device) moves everything and that nothing (an op,
    an optimiser update, an EMA) falls back to plain NumPy."""


class TaggingNumpy:
    """An array module that forwards to NumPy and returns Tagged arrays."""

    def __init__(self, target=np):
        self._target = target

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if isinstance(value, type(np)):
            return TaggingNumpy(value)
        if callable(value) and not isinstance(value, type):
            def call(*args, **kwargs):
                out = value(*args, **kwargs)
                return out.view(Tagged) if isinstance(out, np.ndarray) and not isinstance(out, Tagged) else out
            return call
        return value


@pytest.fixture
def standin_device():
    """A device named "standin" whose arrays are Tagged (standin_array): registered for the test only."""
    from autograd import backend
    backend.register_backend(Tagged, TaggingNumpy(), "standin")
    yield "standin"
    backend.unregister_backend(Tagged)


@pytest.fixture
def standin_array():
    """The array type of the stand-in device (type(p.data) is standin_array once moved there)."""
    return Tagged


# ---------------------------------------------------------------------- commands that refuse their input
@pytest.fixture
def one_line_error(capsys):
    """refused(main, argv): run a command that must refuse its input, check that it exits 2 with one line
    on stderr (no traceback), and return that line."""
    def refused(main, argv):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
        return err
    return refused
