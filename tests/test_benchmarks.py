"""The engine benchmark's bookkeeping: the median of per-pair ratios, the busy-machine warnings, and
one tiny run end to end (speed itself is measured by the benchmark, never asserted in a test)."""
import functools
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def engine():
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "benchmarks" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(ms, mb=10.0, spread=1.05):
    return {"ms": ms, "peak_mb": mb, "spread": spread, "steps_ms": [ms]}


def test_the_ratio_is_the_median_of_the_pairs_ratios(engine):
    # a slow minute (pair 2) slows both engines: its ratio stays 2, where a ratio of medians would not
    pairs = [(result(200), result(100)), (result(800), result(400)), (result(210), result(100, mb=5.0))]
    row = engine.summarize(pairs)
    assert row["ratio"] == 2.0 and row["ratio_range"] == (2.0, 2.1)
    assert row["tinygen_ms"] == 210 and row["torch_ms"] == 100 and row["pairs"] == 3
    assert row["mem_ratio"] == 1.0 and row["mem_range"] == (1.0, 2.0) and row["unsteady"] == 0
    alone = engine.summarize([(result(200, spread=1.5), None), (result(300), None)])
    assert "ratio" not in alone and alone["tinygen_ms"] == 250 and alone["unsteady"] == 1


def test_a_busy_or_unsteady_run_is_flagged(engine):
    quiet = {"unet": engine.summarize([(result(600), result(300)), (result(620), result(300))])}
    assert engine.busy_warnings(0.05, 0.1, quiet, 2) == []
    warnings = engine.busy_warnings(1.2, 0.1, quiet, 2)
    assert len(warnings) == 1 and "other jobs kept 1.20 cores busy at the start" in warnings[0]
    noisy = {"unet": engine.summarize([(result(600, spread=2.0), result(300)), (result(1000), result(300))])}
    text = " ".join(engine.busy_warnings(0.0, 0.0, noisy, 2))
    assert "ratios range 2.00-3.33" in text and "1 of its processes" in text


def test_other_jobs_reads_a_busy_core(engine):
    import threading
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        busy = engine.other_jobs(0.5)
    finally:
        stop.set()
        spinner.join()
    assert 0.5 < busy <= engine.os.cpu_count() + 0.01   # the spinning thread is one busy core


@pytest.mark.slow   # four worker processes, two of them importing PyTorch: about 7 s
def test_a_tiny_run_end_to_end(engine, tmp_path, capsys, monkeypatch):
    # other jobs read over 0.2 s, not 2 s, before and after the workers (the reading itself: the test above)
    monkeypatch.setattr(engine, "other_jobs", functools.partial(engine.other_jobs, 0.2))
    assert engine.main(["--only", "mlp", "--steps", "1", "--runs", "2", "--threads", "1",
                        "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "mlp pair 1: tinygen" in out and "mlp pair 2: tinygen" in out and "other jobs:" in out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["settings"]["pairs"] == 2 and saved["rows"]["mlp"]["pairs"] == 2


def test_the_sampling_workload_runs_the_unet_without_a_graph(engine):
    """"sample": one DDIM step of the unet on 100 images (under no_grad), a finite number."""
    import numpy as np
    step = engine.tinygen_step("sample", np.random.default_rng(0))
    value = step()
    assert isinstance(value, float) and np.isfinite(value)
    assert engine.BATCH["sample"] == 100 and "sample" in engine.WORKLOADS
