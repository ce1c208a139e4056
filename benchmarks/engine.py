"""Training-step speed and memory of the engine on the five standard workloads, and the U-Net's
sampling speed, side by side with PyTorch on the CPU (when installed) in the same run.

    python benchmarks/engine.py                 # all six: mlp, cnn, vit, unet, gpt, sample; 5 pairs each
    python benchmarks/engine.py --only sample   # DDPM sampling: one DDIM step of the unet for 100 images
    python benchmarks/engine.py --only cnn --steps 10 --runs 3
    python benchmarks/engine.py --profile       # and, per workload, where tinygen's step spends its time
    python benchmarks/engine.py --threads 1     # both engines on one thread (BLAS and PyTorch's intra-op)

A step is forward + backward + Adam update in float32 on random inputs ("sample": the unet workload's
network evaluated on 100 images without a graph -- no_grad, PyTorch's inference_mode -- and a DDIM
update; images/s with 50 DDIM steps is printed under the table); a process's figure is the
median of `--steps` steps after 2 warm-up steps. Each (engine, workload) runs in its own process, so
that timings do not disturb each other and peak memory can be read from the process: "peak MB" is the
growth of the resident set from just before the first step (model built, BLAS started) to its peak
(activations, gradients, optimiser state, workspace): what training costs on top of the model.

Noise. A machine's speed drifts (other jobs, frequency, a BLAS thread pool that spins or sleeps), so
the two engines are measured in turn, never one table after the other: a *pair* is a tinygen process
and a PyTorch process started one after the other (tinygen first in odd pairs, PyTorch first in even
ones, so a drift favours neither), and the reported figure is the median of the per-pair ratios,
with their range, over `--runs` pairs. The header gives both engines' BLAS / thread settings and the
CPU that other jobs use (read from /proc/stat over 2 s while no worker runs; the load average, a
minute-long mean, would count this benchmark's own workers at the end); the footer the same reading
after the last worker, and a warning when the machine was busy (other jobs above a quarter of a core
at the start or the end, or a pair's ratios spread by more than 30%): such a table is not a result.
A process whose own steps spread by more than 30% (max / min) is flagged "unsteady": a bimodal step
shows up there.

--profile runs 3 more steps of tinygen under cProfile (after the timed ones, so the timing is not
disturbed) and prints the ten engine functions (autograd/, tinygen/) with the most self time, in ms
per step and as a share of the profiled step, then the three NumPy calls with the most self time and
the engine function that made each: a slow line inside an op shows up as that op's self time.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKLOADS = ("mlp", "cnn", "vit", "unet", "gpt", "sample")
BATCH = {"mlp": 128, "cnn": 128, "vit": 128, "unet": 64, "gpt": 32, "sample": 100}
DDIM_STEPS = 50   # "sample": one DDIM step of the unet at batch 100; images/s = 100 / (50 steps' time)
GPT_VOCAB, GPT_LEN = 16, 196  # 16 gray levels or codes per token, a 14x14 image; token 16 is the start token


def gpt_batch(rng):
    """(inputs, targets): 32 sequences of 196 tokens in [0, 16); the input is the start token followed by
    the first 195 tokens, the target every token (next-token prediction at all 196 positions)."""
    import numpy as np
    codes = rng.integers(0, GPT_VOCAB, (BATCH["gpt"], GPT_LEN))
    inputs = np.concatenate([np.full((BATCH["gpt"], 1), GPT_VOCAB), codes[:, :-1]], axis=1)
    return inputs, codes


def rss_mb():
    """Current resident set size in MB (Linux /proc), or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak():
    """Reset the kernel's peak-RSS counter (Linux >= 4.0), so the peak read later is the steps' own and
    not an import-time spike."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb():
    """Peak resident set size since reset_peak(), in MB (VmHWM), or the lifetime peak elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- tinygen
def tinygen_step(name, rng):
    import numpy as np
    import autograd.functional as F
    from autograd import Tensor, no_grad
    from tinygen import nn, optim

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, temb):
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.time = nn.Linear(temb, cout)
            self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, emb):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.time(emb).reshape(h.shape[0], -1, 1, 1)
            h = self.conv2(F.silu(self.norm2(h)))
            return h + self.skip(x)

    class UNet(nn.Module):
        def __init__(self, c=32, temb=128):
            super().__init__()
            self.temb = nn.TimestepEmbedding(temb, temb)
            self.inp = nn.Conv2d(1, c, 3, padding=1)
            self.r1 = ResBlock(c, c, temb)
            self.down1 = nn.Conv2d(c, c, 3, stride=2, padding=1)
            self.r2 = ResBlock(c, 2 * c, temb)
            self.down2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
            self.mid = ResBlock(2 * c, 2 * c, temb)
            self.up1 = nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1)
            self.r3 = ResBlock(4 * c, 2 * c, temb)
            self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1)
            self.r4 = ResBlock(3 * c, c, temb)
            self.out = nn.Conv2d(c, 1, 3, padding=1)

        def forward(self, x, t):
            emb = self.temb(t)
            h1 = self.r1(self.inp(x), emb)                    # (B, c, 28, 28)
            h2 = self.r2(self.down1(h1), emb)                 # (B, 2c, 14, 14)
            h = self.mid(self.down2(h2), emb)                 # (B, 2c, 7, 7)
            h = self.r3(F.concat([self.up1(h), h2], axis=1), emb)  # (B, 2c, 14, 14)
            h = self.r4(F.concat([self.up2(h), h1], axis=1), emb)  # (B, c, 28, 28)
            return self.out(h)

    class ViT(nn.Module):
        def __init__(self, dim=128):
            super().__init__()
            self.patch = nn.Conv2d(1, dim, 4, stride=4)
            self.cls = nn.Parameter(np.zeros((1, 1, dim), np.float32))
            self.pos = nn.Parameter(np.random.default_rng(0).normal(0, 0.02, (1, 50, dim)).astype(np.float32))
            self.blocks = nn.ModuleList([nn.TransformerBlock(dim, 4, mlp_ratio=4) for _ in range(4)])
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

        def forward(self, x):
            B = x.shape[0]
            h = self.patch(x).reshape(B, 128, 49).transpose(0, 2, 1)    # (B, 49, D)
            h = F.concat([self.cls.expand(B, 1, 128), h], axis=1) + self.pos   # (B, 50, D)
            for blk in self.blocks:
                h = blk(h)
            return self.head(self.norm(h)[:, 0])

    class GPT(nn.Module):
        def __init__(self, dim=128):
            super().__init__()
            self.tok = nn.Embedding(GPT_VOCAB + 1, dim)
            self.pos = nn.Parameter(np.random.default_rng(0).normal(0, 0.02, (1, GPT_LEN, dim)).astype(np.float32))
            self.blocks = nn.ModuleList([nn.TransformerBlock(dim, 4, mlp_ratio=4, causal=True) for _ in range(4)])
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, GPT_VOCAB)

        def forward(self, idx):
            h = self.tok(idx) + self.pos                                  # (B, T, D)
            for blk in self.blocks:
                h = blk(h)
            return self.head(self.norm(h))                               # (B, T, 16)

    B = BATCH[name]
    x = Tensor(rng.standard_normal((B, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, B)
    if name == "gpt":
        model = GPT()
        idx, target = gpt_batch(rng)
        loss_fn = lambda: F.cross_entropy(model(idx).reshape(-1, GPT_VOCAB), target.reshape(-1))
    elif name == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        loss_fn = lambda: F.cross_entropy(model(x), y)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
        loss_fn = lambda: F.cross_entropy(model(x), y)
    elif name == "vit":
        model = ViT()
        loss_fn = lambda: F.cross_entropy(model(x), y)
    elif name == "sample":  # one DDIM step, no graph: eps = eps_theta(x_t, t), x_{t-1} = a x_t + b eps
        model, t = UNet(), np.full(B, 500)

        def step():
            with no_grad():
                eps = model(x, t)
            return float((0.99 * x.numpy() - 0.1 * eps.numpy()).mean())
        return step
    else:
        model = UNet()
        t = rng.integers(0, 1000, B)
        noise = Tensor(rng.standard_normal((B, 1, 28, 28)).astype(np.float32))
        loss_fn = lambda: F.mse_loss(model(x, t), noise)
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()
    return step


# ---------------------------------------------------------------------- PyTorch
def torch_step(name, rng):
    import math
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 2)))  # --threads, else both cores
    torch.manual_seed(0)

    class ResBlock(tnn.Module):
        def __init__(self, cin, cout, temb):
            super().__init__()
            self.norm1, self.conv1 = tnn.GroupNorm(8, cin), tnn.Conv2d(cin, cout, 3, padding=1)
            self.time = tnn.Linear(temb, cout)
            self.norm2, self.conv2 = tnn.GroupNorm(8, cout), tnn.Conv2d(cout, cout, 3, padding=1)
            self.skip = tnn.Conv2d(cin, cout, 1) if cin != cout else tnn.Identity()

        def forward(self, x, emb):
            h = self.conv1(TF.silu(self.norm1(x)))
            h = h + self.time(emb)[:, :, None, None]
            h = self.conv2(TF.silu(self.norm2(h)))
            return h + self.skip(x)

    class UNet(tnn.Module):
        def __init__(self, c=32, temb=128):
            super().__init__()
            self.dim = temb
            self.temb = tnn.Sequential(tnn.Linear(temb, temb), tnn.SiLU(), tnn.Linear(temb, temb))
            self.inp = tnn.Conv2d(1, c, 3, padding=1)
            self.r1 = ResBlock(c, c, temb)
            self.down1 = tnn.Conv2d(c, c, 3, stride=2, padding=1)
            self.r2 = ResBlock(c, 2 * c, temb)
            self.down2 = tnn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
            self.mid = ResBlock(2 * c, 2 * c, temb)
            self.up1 = tnn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1)
            self.r3 = ResBlock(4 * c, 2 * c, temb)
            self.up2 = tnn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1)
            self.r4 = ResBlock(3 * c, c, temb)
            self.out = tnn.Conv2d(c, 1, 3, padding=1)

        def forward(self, x, t):
            half = self.dim // 2
            freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
            args = t[:, None].float() * freqs[None]
            emb = self.temb(torch.cat([torch.cos(args), torch.sin(args)], dim=1))
            h1 = self.r1(self.inp(x), emb)
            h2 = self.r2(self.down1(h1), emb)
            h = self.mid(self.down2(h2), emb)
            h = self.r3(torch.cat([self.up1(h), h2], 1), emb)
            h = self.r4(torch.cat([self.up2(h), h1], 1), emb)
            return self.out(h)

    class Block(tnn.Module):
        def __init__(self, dim, heads, causal=False):
            super().__init__()
            self.heads, self.causal = heads, causal
            self.ln1, self.qkv, self.proj = tnn.LayerNorm(dim), tnn.Linear(dim, 3 * dim), tnn.Linear(dim, dim)
            self.ln2 = tnn.LayerNorm(dim)
            self.mlp = tnn.Sequential(tnn.Linear(dim, 4 * dim), tnn.GELU(approximate="tanh"), tnn.Linear(4 * dim, dim))

        def forward(self, x):
            B, T, D = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
            a = TF.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(B, T, D)
            x = x + self.proj(a)
            return x + self.mlp(self.ln2(x))

    class ViT(tnn.Module):
        def __init__(self, dim=128):
            super().__init__()
            self.patch = tnn.Conv2d(1, dim, 4, stride=4)
            self.cls = tnn.Parameter(torch.zeros(1, 1, dim))
            self.pos = tnn.Parameter(torch.randn(1, 50, dim) * 0.02)
            self.blocks = tnn.ModuleList([Block(dim, 4) for _ in range(4)])
            self.norm, self.head = tnn.LayerNorm(dim), tnn.Linear(dim, 10)

        def forward(self, x):
            B = x.shape[0]
            h = self.patch(x).flatten(2).transpose(1, 2)
            h = torch.cat([self.cls.expand(B, 1, -1), h], 1) + self.pos
            for blk in self.blocks:
                h = blk(h)
            return self.head(self.norm(h)[:, 0])

    class GPT(tnn.Module):
        def __init__(self, dim=128):
            super().__init__()
            self.tok = tnn.Embedding(GPT_VOCAB + 1, dim)
            self.pos = tnn.Parameter(torch.randn(1, GPT_LEN, dim) * 0.02)
            self.blocks = tnn.ModuleList([Block(dim, 4, causal=True) for _ in range(4)])
            self.norm, self.head = tnn.LayerNorm(dim), tnn.Linear(dim, GPT_VOCAB)

        def forward(self, idx):
            h = self.tok(idx) + self.pos
            for blk in self.blocks:
                h = blk(h)
            return self.head(self.norm(h))

    B = BATCH[name]
    x = torch.from_numpy(rng.standard_normal((B, 1, 28, 28)).astype("float32"))
    y = torch.from_numpy(rng.integers(0, 10, B))
    if name == "gpt":
        model = GPT()
        idx, target = (torch.from_numpy(a) for a in gpt_batch(rng))
        loss_fn = lambda: TF.cross_entropy(model(idx).reshape(-1, GPT_VOCAB), target.reshape(-1))
    elif name == "mlp":
        model = tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 512), tnn.ReLU(), tnn.Linear(512, 512), tnn.ReLU(),
                               tnn.Linear(512, 10))
        loss_fn = lambda: TF.cross_entropy(model(x), y)
    elif name == "cnn":
        model = tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.Conv2d(32, 64, 3, padding=1),
                               tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(64, 64, 3, padding=1), tnn.ReLU(),
                               tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(3136, 128), tnn.ReLU(), tnn.Linear(128, 10))
        loss_fn = lambda: TF.cross_entropy(model(x), y)
    elif name == "vit":
        model = ViT()
        loss_fn = lambda: TF.cross_entropy(model(x), y)
    elif name == "sample":  # one DDIM step in inference mode, as tinygen_step's
        model, t = UNet(), torch.full((B,), 500)

        def step():
            with torch.inference_mode():
                eps = model(x, t)
                return float((0.99 * x - 0.1 * eps).mean())
        return step
    else:
        model = UNet()
        t = torch.from_numpy(rng.integers(0, 1000, B))
        noise = torch.from_numpy(rng.standard_normal((B, 1, 28, 28)).astype("float32"))
        loss_fn = lambda: TF.mse_loss(model(x, t), noise)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def profile_steps(step, n=3, top=10):
    """Self time per step of the engine's functions and of the heaviest NumPy calls, over n steps."""
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (calls, ncalls, self s, cumulative s, callers)
    total = sum(v[2] for v in stats.values())
    engine, other = [], []
    for (file, line, func), (_, calls, self_s, _, callers) in stats.items():
        path = Path(file)
        if any(part in ("autograd", "tinygen") for part in path.parts[-3:-1]):
            rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            engine.append((self_s, f"{rel}:{line}({func})", calls))
        elif file == "~" or "numpy" in file:
            caller = max(callers.items(), key=lambda kv: kv[1][2])[0] if callers else ("?", 0, "?")
            other.append((self_s, f"{func.strip('<>')} from {Path(caller[0]).name}:{caller[1]}({caller[2]})", calls))
    rows = []
    for title, items, k in (("engine", engine, top), ("numpy", other, 3)):
        for self_s, where, calls in sorted(items, reverse=True)[:k]:
            rows.append((title, 1000 * self_s / n, 100 * self_s / total, calls // n, where))
    return rows


def blas_kernel():
    """NumPy's BLAS and the kernel it runs (threadpoolctl, when installed): 'openblas SkylakeX, 2 threads'.
    On some machines OPENBLAS_CORETYPE forces an older kernel (Haswell: AVX2 instead of AVX-512),
    which halves NumPy's float32 GEMM speed; PyTorch brings its own BLAS and is not affected."""
    try:
        import threadpoolctl
    except ImportError:
        forced = os.environ.get("OPENBLAS_CORETYPE")
        return f"BLAS kernel unknown (pip install threadpoolctl){'; OPENBLAS_CORETYPE=' + forced if forced else ''}"
    import numpy  # noqa: F401  (loads the BLAS)
    info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('version', '')} kernel {i.get('architecture', '?')}, "
                     f"{i['num_threads']} threads" for i in info) or "no BLAS found"


def worker(engine, name, steps, profile=False):
    if engine == "tinygen":
        import autograd  # noqa: F401  before NumPy, as `import tinygen` is: its BLAS settings (autograd/_blas.py)
    import numpy as np
    rng = np.random.default_rng(0)
    step = (tinygen_step if engine == "tinygen" else torch_step)(name, rng)
    # start each engine's BLAS (thread pools, work buffers) before the baseline reading, so that
    # "peak MB" is what the training step itself costs
    a = rng.standard_normal((256, 256)).astype("float32")
    if engine == "tinygen":
        a @ a
    else:
        import torch
        torch.from_numpy(a) @ torch.from_numpy(a)
    before = rss_mb()
    reset_peak()
    for _ in range(2):  # warm-up
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = peak_rss_mb()
    ms = sorted(1000 * t for t in times)
    result = {"ms": ms[len(ms) // 2], "steps_ms": [round(1000 * t, 2) for t in times],
              "spread": ms[-1] / ms[0], "peak_mb": max(peak - before, 0.0)}
    if profile:
        result["profile"] = profile_steps(step)
    print(json.dumps(result))


def run(engine, name, steps, profile=False, threads=None):
    env = dict(os.environ)
    if threads:  # the same thread count for both engines: BLAS pools (OpenBLAS, MKL, OpenMP) and PyTorch
        env.update({k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "BENCH_THREADS")})
    proc = subprocess.run([sys.executable, __file__, "--worker", engine, name, "--steps", str(steps)]
                          + (["--profile"] if profile else []), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_settings():
    """PyTorch's version, BLAS/oneDNN and intra-op threads, in one line."""
    import torch
    blas = "MKL" if torch.backends.mkl.is_available() else "its own BLAS"
    dnn = ", oneDNN" if torch.backends.mkldnn.is_available() else ""
    threads = os.environ.get("BENCH_THREADS") or 2   # what torch_step sets
    return f"torch {torch.__version__} ({blas}{dnn}, {threads} threads)"


def other_jobs(seconds=2.0):
    """Cores kept busy by other processes, read over `seconds` while this process sleeps and no worker
    runs: the busy share of the CPU time in /proc/stat times the number of cores. Unlike the load
    average (a minute-long mean), it does not count this benchmark's own workers that just finished.
    Where /proc/stat is missing: the 1-minute load average."""
    def totals():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)   # idle + iowait
        return sum(v[:8]), idle                     # user nice system idle iowait irq softirq steal
    try:
        a = totals()
        time.sleep(seconds)
        b = totals()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    total, idle = b[0] - a[0], b[1] - a[1]
    return (os.cpu_count() or 1) * (total - idle) / max(total, 1)


UNSTEADY = 1.3   # a process's max / min step time above this, or a workload's ratio range above it: noise


def summarize(pairs):
    """Per workload, from its pairs [(tinygen result, torch result or None), ...] (a worker's dicts):
    the median per-pair time ratio and its range, the same for memory, and the medians of each engine.
    The median of per-pair ratios, not the ratio of medians: a pair shares the machine's state of the
    moment, so a slow minute inflates both sides of that pair's ratio alike."""
    def med(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    ours = [a["ms"] for a, _ in pairs]
    row = {"tinygen_ms": med(ours), "tinygen_mb": med([a["peak_mb"] for a, _ in pairs]),
           "unsteady": sum(a["spread"] > UNSTEADY for a, _ in pairs), "pairs": len(pairs)}
    theirs = [(a, b) for a, b in pairs if b is not None]
    if theirs:
        t = [a["ms"] / b["ms"] for a, b in theirs]
        m = [a["peak_mb"] / max(b["peak_mb"], 1) for a, b in theirs]
        row.update(torch_ms=med([b["ms"] for _, b in theirs]), torch_mb=med([b["peak_mb"] for _, b in theirs]),
                   ratio=med(t), ratio_range=(min(t), max(t)), mem_ratio=med(m), mem_range=(min(m), max(m)),
                   unsteady=row["unsteady"] + sum(b["spread"] > UNSTEADY for _, b in theirs))
    return row


def busy_warnings(busy_start, busy_end, rows, cores):
    """Why this table should not be trusted, one line each ([] for a quiet run); busy_*: cores used by
    other jobs (`other_jobs`) before the first and after the last worker."""
    out = []
    for when, busy in (("start", busy_start), ("end", busy_end)):
        if busy > 0.25:
            out.append(f"other jobs kept {busy:.2f} cores busy at the {when} (above 0.25 of a core): they "
                       f"shared the {cores} cores")
    for name, row in rows.items():
        if "ratio_range" in row and row["ratio_range"][1] > UNSTEADY * row["ratio_range"][0]:
            out.append(f"{name}: the pairs' ratios range {row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f} "
                       f"(more than {UNSTEADY}x apart)")
        if row["unsteady"]:
            out.append(f"{name}: {row['unsteady']} of its processes had steps more than {UNSTEADY}x apart "
                       f"(an unsteady or bimodal step)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=WORKLOADS, action="append")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5, help="pairs of processes per workload (default 5)")
    ap.add_argument("--threads", type=int, help="threads for both engines (default: each engine's own default)")
    ap.add_argument("--profile", action="store_true", help="print where tinygen's step spends its time")
    ap.add_argument("--json", help="also write the rows and settings to this JSON file")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.runs < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--steps, --runs and --threads must be at least 1")
    if args.worker:
        return worker(*args.worker, args.steps, args.profile)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch is not installed: tinygen alone (pip install torch==2.13.0 for the side-by-side baseline)")
    import numpy as np
    from autograd import _blas   # the thread timeout a tinygen worker runs with (its own import sets it)
    load_start, busy_start = os.getloadavg()[0], other_jobs()
    settings = {"numpy": f"numpy {np.__version__} ({blas_kernel()})",
                "torch": torch_settings() if have_torch else None, "cores": os.cpu_count(),
                "threads": args.threads, "steps": args.steps, "pairs": args.runs, "load_start": load_start,
                "busy_start": busy_start, "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", _blas.THREAD_TIMEOUT),
                "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"{settings['numpy']}; {settings['torch'] or 'no torch'}; {settings['cores']} cores"
          f"{f', --threads {args.threads}' if args.threads else ''}; median of {args.steps} steps after "
          f"2 warm-up per process; {args.runs} pairs per workload; load average {load_start:.2f}, other jobs "
          f"{busy_start:.2f} cores")
    rows = {}
    for name in args.only or WORKLOADS:
        pairs = []
        for r in range(args.runs):
            first = ("tinygen", "torch") if r % 2 == 0 or not have_torch else ("torch", "tinygen")
            got = {}
            for engine in first:
                if engine == "torch" and not have_torch:
                    continue
                got[engine] = run(engine, name, args.steps, args.profile and r == 0 and engine == "tinygen",
                                  args.threads)
            pairs.append((got["tinygen"], got.get("torch")))
            theirs = got.get("torch")
            print(f"  {name} pair {r + 1}: tinygen {got['tinygen']['ms']:.1f} ms"
                  + (f", torch {theirs['ms']:.1f} ms, ratio {got['tinygen']['ms'] / theirs['ms']:.2f}"
                     if theirs else ""), flush=True)
            if args.profile and r == 0:
                print(f"  profile of the tinygen {name} step (self time, ms per step, share of the profiled step):")
                for kind, ms, share, calls, where in got["tinygen"]["profile"]:
                    print(f"    {kind:6s} {ms:8.1f} ms {share:5.1f}%  x{calls:<4d} {where}")
        rows[name] = summarize(pairs)
    load_end, busy_end = os.getloadavg()[0], other_jobs()
    print(f"\n{'workload':9s} {'tinygen ms':>10s} {'torch ms':>9s} {'time ratio (range)':>20s} "
          f"{'tinygen MB':>10s} {'torch MB':>9s} {'memory ratio (range)':>21s}")
    for name, row in rows.items():
        if "ratio" in row:
            print(f"{name:9s} {row['tinygen_ms']:10.1f} {row['torch_ms']:9.1f} {row['ratio']:8.2f} "
                  f"({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}) {row['tinygen_mb']:10.1f} "
                  f"{row['torch_mb']:9.1f} {row['mem_ratio']:9.2f} ({row['mem_range'][0]:.2f}-{row['mem_range'][1]:.2f})")
        else:
            print(f"{name:9s} {row['tinygen_ms']:10.1f} {'-':>9s} {'-':>20s} {row['tinygen_mb']:10.1f} "
                  f"{'-':>9s} {'-':>21s}")
    if "sample" in rows:  # a sampling step is one DDIM step of 100 images: images/s at DDIM_STEPS steps
        rate = lambda ms: BATCH["sample"] / (DDIM_STEPS * ms / 1000)
        row = rows["sample"]
        print(f"sample: {rate(row['tinygen_ms']):.1f} images/s with {DDIM_STEPS} DDIM steps, batch {BATCH['sample']}"
              + (f" (PyTorch {rate(row['torch_ms']):.1f})" if "torch_ms" in row else ""))
    warnings = busy_warnings(busy_start, busy_end, rows, os.cpu_count())
    print(f"other jobs: {busy_start:.2f} cores busy at the start, {busy_end:.2f} at the end (load average "
          f"{load_start:.2f}, {load_end:.2f}, this benchmark's own workers included)")
    for line in warnings:
        print(f"WARNING: {line}")
    if warnings:
        why = "the machine was not quiet" if any(w.startswith("other jobs") for w in warnings) else \
            "the steps were unsteady"
        print(f"WARNING: {why}: these ratios are not a result")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {**settings, "load_end": load_end, "busy_end": busy_end},
                                               "rows": rows, "warnings": warnings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
