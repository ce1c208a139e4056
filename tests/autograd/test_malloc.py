"""The engine's malloc setting (autograd/_malloc.py): applied on glibc, skipped on request."""
import ctypes
import sys

import numpy as np
import pytest

from autograd._malloc import keep_large_arrays_on_heap

glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_applies_on_glibc_and_large_arrays_still_work():
    assert keep_large_arrays_on_heap() is True
    a = np.ones((64 * 1024 * 1024 // 8,))        # 64 MB: above the mmap threshold it replaces
    assert a.sum() == a.size


def test_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TINYGEN_MALLOC", "default")
    assert keep_large_arrays_on_heap() is False
