"""autograd/_blas.py: OpenBLAS's idle threads are told to sleep at once, before NumPy loads."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code, **env):
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**base, **env}, check=True)
    return out.stdout.strip()


def test_importing_tinygen_sets_the_thread_timeout_before_numpy_loads():
    code = ("import sys, os; import tinygen; print('numpy' in sys.modules, "
            "os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    from autograd._blas import THREAD_TIMEOUT
    assert _python(code) == f"True {THREAD_TIMEOUT}"


def test_a_users_value_is_kept_and_a_late_import_changes_nothing():
    code = "import os, autograd; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert _python(code, OPENBLAS_THREAD_TIMEOUT="28") == "28"
    late = ("import numpy, os; from autograd._blas import short_blas_spin; "
            "print(short_blas_spin(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(late) == "False None"   # NumPy already holds its OpenBLAS: too late, and said so
