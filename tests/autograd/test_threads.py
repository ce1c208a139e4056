"""autograd/_threads.py: the batch cut into one run of images per thread, and the plain way with one."""
import threading

import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor, _threads


@pytest.fixture
def any_size():
    with _threads.threads(_threads.count(), min_bytes=1):
        yield


@pytest.mark.parametrize("n, batch", [(2, 10), (3, 10), (2, 1), (4, 3)])
def test_over_batch_covers_the_batch_in_order_once(any_size, n, batch):
    with _threads.threads(n):
        runs = _threads.over_batch(np, batch, lambda b0, b1: (b0, b1, threading.current_thread().name))
    assert [r[:2] for r in runs][0][0] == 0 and runs[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))            # contiguous, no gap, no overlap
    assert len(runs) == min(n, batch)
    if len(runs) > 1:                                                     # the runs ran on worker threads
        assert all(name.startswith("autograd") for _, _, name in runs)


def test_one_thread_is_the_plain_way_on_the_callers_thread(any_size):
    with _threads.threads(1):
        runs = _threads.over_batch(np, 10, lambda b0, b1: (b0, b1, threading.current_thread()))
    assert runs == [(0, 10, threading.current_thread())]


def test_small_work_stays_on_one_thread():
    with _threads.threads(2):   # 10 images of 1 KB: far below MIN_BYTES_PER_THREAD for a second thread
        assert len(_threads.over_batch(np, 10, lambda b0, b1: (b0, b1), bytes_per_image=1024)) == 1


def test_an_error_in_a_thread_reaches_the_caller(any_size):
    def work(b0, b1):
        if b0 > 0:
            raise ValueError("the second run failed")
        return b1
    with _threads.threads(2), pytest.raises(ValueError, match="second run"):
        _threads.over_batch(np, 4, work)


def test_threads_count_is_restored():
    before = _threads.count()
    with _threads.threads(3):
        assert _threads.count() == 3
    assert _threads.count() == before


def test_a_unet_sized_conv_step_is_the_same_on_two_threads():
    """A float32 3x3 conv of 16 images of 32 channels at 28 x 28 (several MB of im2col rows: the
    default thresholds split it), forward and both gradients, on one thread and on two."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32, 28, 28)).astype(np.float32)
    w = (rng.standard_normal((48, 32, 3, 3)) * 0.1).astype(np.float32)
    g = rng.standard_normal((16, 48, 14, 14)).astype(np.float32)
    results = []
    for n in (1, 2):
        with _threads.threads(n):
            xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
            y = F.conv2d(xt, wt, stride=2, padding=1)
            y.backward(g)
            results.append((y.numpy(), np.asarray(xt.grad), np.asarray(wt.grad)))
    for name, a, b in zip(("output", "dL/dx", "dL/dw"), *results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


#: name -> (the op, its formula in NumPy, the scale of the test inputs)
ACTIVATIONS = {
    "silu": (F.silu, lambda a: a / (1 + np.exp(-a)), 4),
    "gelu": (F.gelu, lambda a: a / 2 * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3))), 3),
    "relu": (F.relu, lambda a: np.maximum(a, 0), 1),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape, layout", [((6, 4, 5, 3), "NCHW"), ((6, 4, 5, 3), "NHWC"), ((7, 3), "rows"), ((), "scalar")])
def test_activation_is_the_same_on_two_threads_and_keeps_the_layout(any_size, name, shape, layout):
    op, formula, scale = ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape) * scale
    if layout == "NHWC":  # an NCHW view of NHWC memory, as conv2d returns
        a = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    g = rng.standard_normal(shape)
    results = []
    for n in (1, 2):
        with _threads.threads(n, min_bytes=1):
            x = Tensor(a, dtype="float64", requires_grad=True)
            y = op(x)
            y.backward(g)
            results.append((y.numpy(), np.asarray(x.grad)))
        if layout == "NHWC":
            assert y.numpy().transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_allclose(results[0][0], formula(a), rtol=1e-12, atol=1e-12)
    if name == "relu":
        np.testing.assert_array_equal(results[0][1], g * (a > 0))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_is_the_same_on_two_threads(any_size, kernel, stride, padding):
    """Overlapping windows, padding and ties (integers from a small range): values and gradients."""
    rng = np.random.default_rng(5)
    a = rng.integers(-3, 4, (5, 3, 7, 6)).astype(np.float64)
    results = []
    for n in (1, 2):
        with _threads.threads(n, min_bytes=1):
            x = Tensor(a, dtype="float64", requires_grad=True)
            y = F.max_pool2d(x, kernel, stride, padding)
            y.backward(np.arange(y.size, dtype=np.float64).reshape(y.shape))
            results.append((y.numpy(), np.asarray(x.grad)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_rows_slices_the_batch_and_keeps_what_broadcasts():
    a, bias, one = np.zeros((6, 3, 2)), np.zeros((3, 2)), np.zeros((1, 3, 2))
    assert _threads.rows(a, 2, 4, 6, 3).shape == (2, 3, 2)
    assert _threads.rows(bias, 2, 4, 6, 3) is bias and _threads.rows(one, 2, 4, 6, 3) is one
    assert _threads.rows(a, 0, 6, 6, 3) is a and _threads.rows(None, 0, 3, 6, 3) is None


@pytest.mark.skipif(_threads._LIB is None, reason="NumPy's BLAS is not an OpenBLAS whose threads can be set")
def test_blas_runs_on_one_thread_inside_and_as_before_after(any_size):
    before = int(_threads._LIB[0]())
    with _threads.threads(2):
        inside = _threads.over_batch(np, 4, lambda b0, b1: int(_threads._LIB[0]()))
    assert inside == [1, 1]
    assert int(_threads._LIB[0]()) == before
