"""Let OpenBLAS's idle threads sleep soon after a product: a speed trick of the engine, applied on import.

NumPy's OpenBLAS runs a large matmul on every core, and afterwards its worker threads keep spinning for
about 2^28 CPU cycles (a tenth of a second) waiting for the next one before they go to sleep. A training
step alternates GEMMs with element-wise work (im2col copies, GroupNorm, SiLU, Adam) that runs on the main
thread alone, so for most of a step the other core is busy spinning. On the 2-core virtual machines this
project is developed on, that spinning slowed the main thread down: the DDPM U-Net step of
`benchmarks/engine.py` came in two modes, 550-640 ms or 1,000-1,100 ms, often 1,000 ms for a whole
process, with both cores busy twice as long for the same work (one thread: a steady 770 ms).
OPENBLAS_THREAD_TIMEOUT=12 makes the workers sleep after 2^12 cycles (about 2 microseconds) instead:
measured there, 2 cores, the median of 2 processes of 10 steps each,

    OPENBLAS_THREAD_TIMEOUT   unset (28)    4        12       18
    unet step                 999 ms        551 ms   555 ms   596 ms
    gpt step                  458 ms        490 ms   441 ms   457 ms
    cnn step                  248 ms        184 ms   182 ms   183 ms

OpenBLAS reads the variable once, when it is loaded (when NumPy is first imported), so it must be set
before that: `import autograd` (or `import tinygen`) before NumPy. A value already in the environment is
left alone (set OPENBLAS_THREAD_TIMEOUT=28 for OpenBLAS's own default); other BLAS libraries ignore it.
"""
import os
import sys

THREAD_TIMEOUT = "12"   # log2 of the CPU cycles an idle OpenBLAS thread spins before it sleeps (OpenBLAS: 4-30)


def short_blas_spin():
    """Set OPENBLAS_THREAD_TIMEOUT for the OpenBLAS that NumPy is about to load. Returns True where it
    applies: NumPy not imported yet, and no value of the user's own in the environment."""
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = THREAD_TIMEOUT
    return True
