"""docs/figures.py, the script that draws the pictures in docs/: DiT's forward GFLOPs count and the
scaling plot it draws from them."""
import importlib.util
from pathlib import Path

import pytest

from tinygen.models.dit import DiTConfig
from tests.models.test_dit import TINY

_spec = importlib.util.spec_from_file_location("figures", Path(__file__).resolve().parent.parent / "docs" / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


def test_gflops_count_and_plot(tmp_path):
    c = DiTConfig(**TINY)                        # the count reads the config alone
    # by hand: 16 tokens, D = 16, MLP 64, depth 1, 4 channels, patch 2, learned sigma
    N, D, H = 16, 16, 64
    block = 4 * N * D * D + 2 * N * N * D + 2 * N * D * H + 6 * D * D
    want = 2 * (N * 16 * D + block + 2 * D * D + N * D * 32 + 256 * D + D * D) / 1e9
    assert figures.forward_gflops(c) == pytest.approx(want)
    wide = DiTConfig(**{**TINY, "dim": 32})
    assert 3 < figures.forward_gflops(wide) / figures.forward_gflops(c) < 4.5
    figures.save_scaling_plot([{"name": "a", "gflops": 0.01, "fid_judge": 200.0},
                       {"name": "b", "gflops": 0.04, "fid_judge": 150.0}], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 100


def test_the_receptive_field_picture(tmp_path):
    maps = figures.save_receptive_fields(tmp_path / "rf.png")
    assert (tmp_path / "rf.png").stat().st_size > 0 and maps.shape == (6, 1, 28, 28)
    assert maps[0, 0, 14, 14] == maps[1, 0, 14, 14] == maps[2, 0, 14, 14] == maps[3, 0, 27, 14] == 0.5
    assert maps[0, 0, 13, 18] == 0 and maps[1, 0, 13, 18] == 1      # the plain stack's blind spot
    assert maps[2, 0, 0].all() and maps[2, 0, 13, 18] == 0           # the Row LSTM: the top row, a triangle
    # from the bottom row: the convolutions reach 18 (plain) and 19 (gated) rows up, the Row LSTM row 0
    assert not maps[3, 0, :9].any() and maps[3, 0, 9].all() and not maps[4, 0, :8].any() and maps[5, 0, 0].all()
