"""Time forward+backward of a small conv stack (batch 128 of 1x28x28):

    conv 1->32 3x3 p1, conv 32->64 3x3 p1, max_pool 2, conv 64->64 3x3 p1, max_pool 2

with autograd (and with torch on the CPU when it is importable), median over a few runs.
Alternative implementations of the conv internals are included to compare designs:

    python benchmarks/conv_profile.py [--runs 7] [--variants] [--rounds 2]
    OPENBLAS_NUM_THREADS=1 python benchmarks/conv_profile.py --threads 1 --cpu-time   # single-threaded work
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autograd.functional as F
from autograd import Tensor, backend
from autograd.ops import conv as C

SHAPES = [(32, 1), (64, 32), (64, 64)]


def engine_step(x, params):
    (w1, b1), (w2, b2), (w3, b3) = params
    h = F.conv2d(x, w1, b1, padding=1)
    h = F.conv2d(h, w2, b2, padding=1)
    h = F.max_pool2d(h, 2)
    h = F.conv2d(h, w3, b3, padding=1)
    h = F.max_pool2d(h, 2)
    h.backward(np.ones(h.shape, dtype=np.float32))


CLOCK = time.perf_counter


def time_it(fn, runs):
    fn()  # warm up (allocator, BLAS threads)
    times = []
    for _ in range(runs):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return 1000 * statistics.median(times), 1000 * min(times)


def engine_setup(rng):
    x = Tensor(rng.standard_normal((128, 1, 28, 28), dtype=np.float32))
    params = [(Tensor(rng.standard_normal((co, ci, 3, 3), dtype=np.float32) * 0.1, requires_grad=True),
               Tensor(np.zeros(co, np.float32), requires_grad=True)) for co, ci in SHAPES]
    return lambda: engine_step(x, params)


def torch_setup(rng):
    import torch
    import torch.nn.functional as TF
    x = torch.tensor(rng.standard_normal((128, 1, 28, 28), dtype=np.float32))
    params = [(torch.tensor(rng.standard_normal((co, ci, 3, 3), dtype=np.float32) * 0.1, requires_grad=True),
               torch.zeros(co, requires_grad=True)) for co, ci in SHAPES]

    def step():
        (w1, b1), (w2, b2), (w3, b3) = params
        h = TF.conv2d(x, w1, b1, padding=1)
        h = TF.conv2d(h, w2, b2, padding=1)
        h = TF.max_pool2d(h, 2)
        h = TF.conv2d(h, w3, b3, padding=1)
        h = TF.max_pool2d(h, 2)
        h.backward(torch.ones_like(h))
    return step


# ---------------------------------------------------------------------- variants of the conv internals
class Conv2dRecompute(C.Conv2d):
    """Save the padded NHWC input (small) instead of the im2col matrix; gather the columns again in backward."""

    def forward(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        out_hw = C._check_conv2d(x, w, b, stride, padding, dilation, groups)
        self.args = (stride, padding, dilation, groups)
        self.x_hw, self.w_shape, self.out_hw = x.shape[2:], w.shape, out_hw
        H, W = x.shape[2:]
        xn = C._place(x, (H + 2 * padding[0], W + 2 * padding[1]), padding, groups=groups)
        cols = C._im2col(xn, w.shape[2:], stride, dilation, out_hw)
        yn = C._conv_apply(cols, w, groups, x.shape[0], out_hw)
        self.save_for_backward(xn, w)
        return C._as_nchw(C._add_bias(yn, b))

    def backward(self, g):
        xn, w = self.saved
        stride, padding, dilation, groups = self.args
        self.saved = (C._im2col(xn, w.shape[2:], stride, dilation, self.out_hw), w)
        return super().backward(g)


class Conv2dShifted(C.Conv2d):
    """No im2col in the forward pass (stride 1, groups 1): on the flattened padded NHWC image, tap (i, j)
    of every output pixel is the same contiguous row block shifted by i*Wp + j, so the conv is kh*kw
    GEMMs (contraction C_in) on offset views, accumulated on the whole padded grid and cropped."""

    def forward(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        out_hw = C._check_conv2d(x, w, b, stride, padding, dilation, groups)
        self.args = (stride, padding, dilation, groups)
        self.x_hw, self.w_shape = x.shape[2:], w.shape
        xp = backend.xp_of(x)
        B, cin, H, W = x.shape
        co, _, kh, kw = w.shape
        Hp, Wp = H + 2 * padding[0], W + 2 * padding[1]
        xn = C._place(x, (Hp, Wp), padding)
        flat = xn[0].reshape(-1, cin)
        taps = w.transpose(2, 3, 1, 0)
        M = flat.shape[0] - ((kh - 1) * Wp + (kw - 1))
        out = xp.zeros((flat.shape[0], co), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                off = i * Wp + j
                out[:M] += flat[off:off + M] @ taps[i, j]
        yn = out.reshape(B, Hp, Wp, co)[:, :out_hw[0], :out_hw[1]]
        # the weight gradient still needs the columns
        self.save_for_backward(C._im2col(xn, (kh, kw), stride, dilation, out_hw), w)
        return C._as_nchw(C._add_bias(yn, b))


def _plain_row_sum_product(a, b):
    return a.transpose(0, 2, 1) @ b


def variants():
    saved = dict(C.__dict__)
    yield "main (im2col + one GEMM, saved columns, dX by cost, split-K small dW)"
    C._conv_input_grad = C._col2im_input_grad
    yield "dX always by col2im (GEMM + 9 slice-adds)"
    C._conv_input_grad = saved["_conv_input_grad"]
    C._row_sum_product = _plain_row_sum_product
    yield "dW always one threaded GEMM (no split-K)"
    C._row_sum_product = saved["_row_sum_product"]
    C.Conv2d = Conv2dRecompute
    yield "save padded NHWC input, re-gather im2col in backward"
    C.Conv2d = Conv2dShifted
    yield "forward by 9 shifted GEMMs (no forward im2col)"
    C.Conv2d = saved["Conv2d"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison (noisy shared CPUs)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (for NumPy set OPENBLAS_NUM_THREADS in the environment)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="process CPU time instead of wall time: with one thread, robust to other load")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    rng = np.random.default_rng(0)
    try:
        tstep = torch_setup(rng)
    except ImportError:
        tstep = None
    for _ in range(args.rounds):
        if args.variants:
            for name in variants():
                report(time_it(engine_setup(rng), args.runs), name)
        else:
            report(time_it(engine_setup(rng), args.runs), "autograd conv stack fwd+bwd")
        if tstep is not None:
            report(time_it(tstep, args.runs), f"torch (CPU, {__import__('torch').get_num_threads()} threads)")


def report(times, name):
    print(f"median {times[0]:7.1f} ms  min {times[1]:7.1f} ms  {name}", flush=True)


if __name__ == "__main__":
    main()
