"""The command line, as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinygen.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def test_list_names_every_model(capsys):
    main(["list"])
    out = capsys.readouterr().out
    assert "cnn" in out and "mlp" in out


def test_unknown_model_lists_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "resnet"])
    assert exit_.value.code == 2 and "valid models: " in capsys.readouterr().err


def test_unknown_dataset_and_option_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "cnn", "--dataset", "cifar"])
    assert "invalid choice: 'cifar' (choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "cnn", "--frobnicate"])
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_train_then_evaluate_in_a_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "tinygen", *args], capture_output=True, text=True,
                                       env=env, cwd=tmp_path, timeout=300)
    train = run("train", "mlp", "--quick", "--max-steps", "20", "--out", "run", "--no-progress")
    assert train.returncode == 0, train.stderr
    summary = json.loads(train.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 20 and 0.5 < summary["test_acc"] <= 1.0
    assert (tmp_path / "run" / "samples_latest.png").exists()
    ev = run("evaluate", "mlp", "--checkpoint", "run/last.npz")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["test_acc"] == pytest.approx(summary["test_acc"])
    bad = run("sample", "mlp", "--checkpoint", "run/last.npz")
    assert bad.returncode != 0 and "not a generative model" in bad.stderr


def test_set_overrides_config_fields_and_refuses_unknown_ones(tmp_path, capsys):
    from tinygen.__main__ import parse_settings
    assert parse_settings(["latent_dim=2", "loss=minimax", "adversarial=false"]) == \
        {"latent_dim": 2, "loss": "minimax", "adversarial": False}
    with pytest.raises(SystemExit):
        main(["train", "mlp", "--set", "depth=3", "--max-steps", "1", "--out", str(tmp_path)])
    assert "unknown config field" in capsys.readouterr().err


def test_sample_a_diffusion_model_with_label_guidance_and_steps(tmp_path, capsys):
    tiny = ["--set", "T=50", "--set", "base_channels=8", "--set", "channel_mult=[1,2,2]", "--set", "sample_steps=2"]
    main(["train", "ddpm", "--max-steps", "2", "--out", str(tmp_path / "run"), "--no-progress", *tiny])
    capsys.readouterr()
    main(["sample", "ddpm", "--checkpoint", str(tmp_path / "run/last.npz"), "--label", "7", "--guidance", "3",
          "--steps", "5", "--n", "4", "--out", str(tmp_path / "sevens.png")])
    assert "saved 4 samples" in capsys.readouterr().out and (tmp_path / "sevens.png").exists()
    main(["evaluate", "ddpm", "--checkpoint", str(tmp_path / "run/last.npz"), "--n", "20", "--steps", "3",
          "--guidance", "2"])
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 20 and result["steps"] == 3 and result["guidance"] == 2.0
    assert 0 <= result["conditional_accuracy"] <= 1 and result["fid_judge"] > 0
