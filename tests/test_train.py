"""The training loop: exact resume, NaN stop that keeps the last good checkpoint, refusals."""
import json

import numpy as np
import pytest

from tinygen import io
from tinygen.train import TrainingError, TrainOptions, Trainer, build_model

TINY = {"hidden": 16, "batch_size": 32, "dropout": 0.3}  # dropout: the resumed run must replay its random masks


def losses(run):
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def fit(out, max_steps, resume=False, **overrides):
    model = build_model("mlp", {**TINY, **overrides})
    options = TrainOptions(out=str(out), max_steps=max_steps, resume=resume, log_every=1, checkpoint_every=3,
                           progress=False, evaluate=False)
    return Trainer(model, options).fit()


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    fit(tmp_path / "straight", 8)
    fit(tmp_path / "split", 4)                      # stops after step 4: checkpoint there
    fit(tmp_path / "split", 8, resume=True)
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(straight) == 8 and len(split) == 8
    np.testing.assert_allclose(split, straight, rtol=0, atol=0)


def test_cosine_schedule_decays_over_the_recipe_and_resumes_exactly(tmp_path):
    fit(tmp_path / "straight", 8, lr_schedule="cosine", epochs=1)
    fit(tmp_path / "split", 4, lr_schedule="cosine", epochs=1)
    fit(tmp_path / "split", 8, resume=True, lr_schedule="cosine", epochs=1)
    np.testing.assert_allclose(losses(tmp_path / "split"), losses(tmp_path / "straight"), rtol=0, atol=0)
    fit(tmp_path / "constant", 8, epochs=1)
    assert losses(tmp_path / "straight")[-1] != losses(tmp_path / "constant")[-1]  # the schedule changed the lr
    # the optimiser's lr after the last step: lr (1 + cos(pi 7 / total)) / 2, total = one epoch of batches
    _, meta = io.load_checkpoint(tmp_path / "split" / "last.npz")
    model = build_model("mlp", {**TINY, "lr_schedule": "cosine", "epochs": 1})
    total = -(-60000 // TINY["batch_size"])
    expected = model.config.lr * (1 + np.cos(np.pi * 7 / total)) / 2
    saved = [v for k, v in meta["scalars"].items() if k.endswith("param_groups/0/lr")]
    assert saved and saved[0] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(tmp_path / "bad", 1, lr_schedule="linear")


def test_cpu_seconds_add_up_across_a_resume(tmp_path):
    first = fit(tmp_path, 4)
    _, meta = io.load_checkpoint(tmp_path / "last.npz")
    assert meta["cpu_seconds"] == pytest.approx(first["cpu_seconds"], abs=0.2) and meta["cpu_counted_from_step"] == 0
    second = fit(tmp_path, 8, resume=True)
    assert second["cpu_seconds"] >= meta["cpu_seconds"] and "cpu_counted_from_step" not in second


def test_run_folder_contents(tmp_path):
    summary = fit(tmp_path / "run", 5)
    assert summary["steps"] == 5 and summary["cpu_seconds"] >= 0
    for name in ["config.json", "metrics.jsonl", "last.npz", "samples_latest.png", "summary.json"]:
        assert (tmp_path / "run" / name).exists(), name
    arrays, meta = io.load_checkpoint(tmp_path / "run" / "last.npz")
    assert meta["step"] == 5 and meta["model"] == "mlp"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = build_model("mlp", TINY)
    real_step = model.training_step
    calls = {"n": 0}

    def step(batch, optimizers):
        calls["n"] += 1
        logs = real_step(batch, optimizers)
        return {**logs, "loss": float("nan")} if calls["n"] == 5 else logs

    model.training_step = step
    options = TrainOptions(out=str(tmp_path), max_steps=10, checkpoint_every=3, progress=False, evaluate=False)
    with pytest.raises(TrainingError, match=r"non-finite .*step 5.*last good checkpoint .*step 3"):
        Trainer(model, options).fit()
    _, meta = io.load_checkpoint(tmp_path / "last.npz")
    assert meta["step"] == 3


def test_resume_refuses_a_different_config(tmp_path):
    fit(tmp_path, 3)
    with pytest.raises(TrainingError, match="config differs"):
        fit(tmp_path, 6, resume=True, hidden=32)


def test_config_comparison_reads_json_tuples_new_defaults_and_ignores_quick_steps():
    from tinygen.models.ddpm import DDPMConfig
    from tinygen.train import _config_differences
    now = {"channel_mult": (1, 2, 4), "lr_schedule": "constant", "quick_steps": 120, "lr": 1e-3}
    saved = {"channel_mult": [1, 2, 4], "quick_steps": 400, "lr": 1e-3}   # older: no lr_schedule yet
    assert _config_differences(saved, now, DDPMConfig()) == {}
    assert _config_differences(saved, {**now, "lr_schedule": "cosine"}, DDPMConfig()) == {
        "lr_schedule": (None, "cosine")}
    assert _config_differences({**saved, "lr": 2e-3}, now, DDPMConfig()) == {"lr": (2e-3, 1e-3)}
    assert _config_differences({**saved, "epochs": 6}, {**now, "epochs": 9}, DDPMConfig()) == {}  # train further
    assert _config_differences({**saved, "lr_schedule": "cosine", "epochs": 6},
                               {**now, "lr_schedule": "cosine", "epochs": 9}, DDPMConfig()) == {"epochs": (6, 9)}


def test_resume_without_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        fit(tmp_path / "empty", 3, resume=True)


def test_unknown_model_and_dataset_list_valid_ones():
    with pytest.raises(ValueError, match="valid models: .*cnn"):
        build_model("resnet")
    with pytest.raises(ValueError, match="valid datasets: mnist, fashion"):
        Trainer(build_model("mlp", TINY), TrainOptions(dataset="cifar"))
    with pytest.raises(ValueError, match="unknown config field"):
        build_model("mlp", {"depth": 3})
