"""Every core for the work around the products: a speed trick of the engine (ops/conv_fast.py's tiled
products, weight gradients, col2im, padded copies and bias adds, GroupNorm and SiLU use it).

A threaded BLAS spreads each matrix product over the cores, but the rest of a convolution -- the
im2col copies that build a product's operand tile by tile, the col2im slice-adds of the input gradient,
the many small products of a tiled layer, each too small to be worth splitting -- runs on one core.
On the DDPM U-Net step of `benchmarks/engine.py` that left half of a 2-core machine idle for about a
third of the step: two BLAS threads made the step 1.4x faster than one, where PyTorch (which runs
its convolutions on every core) gains 1.8x.

The trick: cut the batch into one run of images per core and give each run to a thread of its own,
which does the plain, sequential work on its images (tiles, copies, products) with a single-threaded
BLAS. NumPy lets go of the interpreter lock inside copies and products, so the threads really run at
once; their images are disjoint, so no two threads write to the same memory.

    over_batch(xp, B, work)    work(b0, b1) on runs of images [b0, b1) that cover 0..B, one per thread;
                               the results in order
    rows(a, b0, b1, B, ndim)   an operand's share of such a run (whole where it broadcasts along the batch)

The plain way is the same call with one thread: `over_batch` then calls work(0, B) on the caller's
thread. The engine uses as many threads as NumPy's BLAS does (OPENBLAS_NUM_THREADS=1: one, the plain
way); `threads(n)` sets it for a block (the tests hold the two ways together with it). While the
threads run, NumPy's OpenBLAS is set to one thread (`openblas_set_num_threads`, a fraction of a
microsecond), and back after: the caller waits meanwhile, so no other product runs. (OpenBLAS's
`openblas_set_num_threads_local` would be the per-thread way, but in NumPy's build it sets the count
for the whole process: measured, a 50,176 x 576 @ 576 x 64 product then ran on one core everywhere.)
Where NumPy's BLAS is not an OpenBLAS that can be set (another BLAS, CuPy arrays), everything runs the
plain way.
"""
import contextlib
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_BYTES_PER_THREAD = 1 << 20   # below about 1 MB of work per thread the handing over costs more than it saves


def _openblas():
    """NumPy's bundled OpenBLAS as a ctypes library, or None."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(folder, "*openblas*.so*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            get, put = (getattr(lib, f"{prefix}_{name}_num_threads{suffix}", None) for name in ("get", "set"))
            if get is not None and put is not None:
                return get, put   # get_num_threads(), set_num_threads(n)
    return None


_LIB = _openblas()
_threads = None      # the number of threads set by threads(n); None: as many as the BLAS runs
_pool, _pool_size = None, 0
_lock = threading.Lock()


def count():
    """The threads the engine runs the work around the products on: threads(n)'s n, else the BLAS's
    own number (1 where NumPy's BLAS is not an OpenBLAS whose threads can be set)."""
    if _threads is not None:
        return _threads
    return 1 if _LIB is None else max(1, int(_LIB[0]()))


@contextlib.contextmanager
def threads(n, min_bytes=None):
    """Run the block with n threads (1: the plain, sequential way); min_bytes: the least work a thread
    is given, for the block (the tests split tiny arrays with min_bytes=1)."""
    global _threads, MIN_BYTES_PER_THREAD
    before = _threads, MIN_BYTES_PER_THREAD
    _threads, MIN_BYTES_PER_THREAD = int(n), MIN_BYTES_PER_THREAD if min_bytes is None else min_bytes
    try:
        yield
    finally:
        _threads, MIN_BYTES_PER_THREAD = before


@contextlib.contextmanager
def _single_threaded_blas():
    """NumPy's OpenBLAS on one thread for the block (where it can be set), then as many as before."""
    if _LIB is None:
        yield
        return
    before = int(_LIB[0]())
    _LIB[1](1)
    try:
        yield
    finally:
        _LIB[1](before)


def _executor(n):
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="autograd"), n
        return _pool


def over_batch(xp, batch, work, bytes_per_image=MIN_BYTES_PER_THREAD):
    """[work(b0, b1), ...] for runs of images that cut range(batch) into one run per thread (fewer when
    a run would hold less than MIN_BYTES_PER_THREAD of work, at bytes_per_image); with one run, and
    for arrays of another module than NumPy (xp: the arrays' module), work(0, batch) on this thread."""
    n = min(count(), batch, max(1, batch * bytes_per_image // MIN_BYTES_PER_THREAD)) if xp is np else 1
    if n <= 1 or threading.current_thread().name.startswith("autograd"):
        return [work(0, batch)]
    edges = [batch * i // n for i in range(n + 1)]
    with _single_threaded_blas():
        jobs = [_executor(n).submit(work, b0, b1) for b0, b1 in zip(edges[:-1], edges[1:])]
        return [job.result() for job in jobs]


def rows(a, b0, b1, batch, ndim):
    """The rows b0 <= i < b1 of operand `a` of a result with `ndim` axes and `batch` rows on its first:
    a[b0:b1], or `a` whole where it broadcasts along that axis (fewer axes, or 1 there) or is None."""
    if a is None or (b0, b1) == (0, batch) or a.ndim < ndim or a.shape[0] != batch:
        return a
    return a[b0:b1]

