"""The training loop: exact resume, NaN stop that keeps the last good checkpoint, refusals, signals, the
run folder's lock, faults (non-finite weights never saved as good, what a killed run leaves behind)."""
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


def test_resume_is_exact_on_a_subset_evaluated_every_few_epochs(tmp_path):
    """24 images in batches of 8 (3 steps an epoch), evaluated every 2 epochs: a run stopped at step 7 and
    resumed to 15 gives the losses of one run to 15."""
    def run(out, max_steps, resume=False):
        model = build_model("mlp", {**TINY, "batch_size": 8, "epochs": 5})
        Trainer(model, TrainOptions(out=str(out), max_steps=max_steps, resume=resume, log_every=1, checkpoint_every=4,
                                    progress=False, evaluate=True, evaluate_every=2, train_size=24)).fit()
    run(tmp_path / "straight", 15)
    run(tmp_path / "split", 7)
    run(tmp_path / "split", 15, resume=True)
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(straight) == 15
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
    summary = json.loads((tmp_path / "summary.json").read_text())     # the stop, as the report reads it
    assert summary["diverged"].startswith("non-finite {'loss': nan} at step 5") and summary["steps"] == 4


def test_resume_refuses_a_different_config(tmp_path):
    fit(tmp_path, 3)
    with pytest.raises(TrainingError, match=r"config differs.*hidden: \(16, 32\); resume with the run's own "
                                            r"options: --set hidden=16"):
        fit(tmp_path, 6, resume=True, hidden=32)


def test_a_config_difference_names_a_recorded_stage_config_and_gives_the_options_to_resume_with():
    from tinygen.train import _resume_hint, _shown_differences
    diff = {"text_init": ("runs/clip-mnist/last.npz", ""), "text_init_config": ({"text_dim": 64}, None),
            "channel_mult": ([1, 2, 4], [1, 2])}
    shown = _shown_differences(diff)
    assert "text_init: ('runs/clip-mnist/last.npz', '')" in shown and "text_dim" not in shown
    assert "text_init_config: (recorded from another option)" in shown
    assert _resume_hint(diff) == "; resume with the run's own options: --set text_init=runs/clip-mnist/last.npz"
    assert _resume_hint({"channel_mult": ([1, 2, 4], [1, 2])}) == ""


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


def test_train_size_trains_on_a_fixed_nested_subset(tmp_path):
    from tinygen import data
    x, y = np.arange(100)[:, None], np.arange(100) % 10
    small, large = data.train_subset(x, y, 10), data.train_subset(x, y, 40)
    assert len(small[0]) == 10 and set(small[0].ravel()) < set(large[0].ravel())     # nested
    assert (np.diff(large[0].ravel()) > 0).all() and (large[1] == large[0].ravel() % 10).all()   # in order, paired
    # 40 images in batches of 8: 5 batches an epoch, so 2 epochs are 10 steps; the run records the size
    summary = fit_with(tmp_path, max_steps=None, model=build_model("mlp", {**PLAIN, "batch_size": 8, "epochs": 2}),
                       train_size=40)
    assert summary["steps"] == 10
    assert json.loads((tmp_path / "config.json").read_text())["options"]["train_size"] == 40
    with pytest.raises(TrainingError, match=r"--resume with --train-size \(all\): the run .* was trained with "
                                            r"--train-size 40"):
        fit_with(tmp_path, max_steps=12, resume=True, model=build_model("mlp", {**PLAIN, "batch_size": 8, "epochs": 3}))


def test_evaluate_every_tests_and_draws_every_n_epochs_and_after_the_last(tmp_path):
    """40 images in batches of 8 for 5 epochs, evaluated every 2: after epochs 2 and 4, and 5 (the last)."""
    fit_with(tmp_path, max_steps=None, model=build_model("mlp", {**PLAIN, "batch_size": 8, "epochs": 5}),
             train_size=40, evaluate=True, evaluate_every=2)
    tested = [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if "test_acc" in r]
    assert tested == [10, 20, 25]
    assert sorted(p.name for p in tmp_path.glob("samples_step*.png")) == [
        "samples_step000010.png", "samples_step000020.png", "samples_step000025.png"]


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


# ---------------------------------------------------------------------- signals: a stopped run resumes exactly
import os      # noqa: E402  (this section's own imports)
import signal  # noqa: E402

from tinygen.train import Interrupted  # noqa: E402


def signalled(model, at_call, *signums):
    """Make training_step send this process `signums` during its call number `at_call`."""
    real_step, calls = model.training_step, {"n": 0}

    def training_step(batch, optimizers):
        calls["n"] += 1
        logs = real_step(batch, optimizers)
        if calls["n"] == at_call:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return logs
    model.training_step = training_step
    return model


def run_to(out, max_steps, model=None, resume=False):
    options = TrainOptions(out=str(out), max_steps=max_steps, resume=resume, log_every=3, checkpoint_every=3,
                           progress=False, evaluate=True)
    return Trainer(model or build_model("mlp", TINY), options).fit()


def same_run(a, b):
    """metrics.jsonl equal line for line, and the checkpoints' weights and optimiser state bit for bit."""
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    arrays_a, meta_a = io.load_checkpoint(a / "last.npz")
    arrays_b, meta_b = io.load_checkpoint(b / "last.npz")
    assert sorted(arrays_a) == sorted(arrays_b) and meta_a["step"] == meta_b["step"]
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_signal_saves_the_last_step_and_the_resumed_run_equals_a_straight_one(tmp_path, signum):
    run_to(tmp_path / "straight", 8)
    with pytest.raises(Interrupted, match=rf"stopped by {signal.Signals(signum).name}: saved .*step 4") as stop:
        run_to(tmp_path / "split", 8, model=signalled(build_model("mlp", TINY), 4, signum))
    assert stop.value.status == 128 + signum                       # 130, 143, 129: what a shell reports
    split = tmp_path / "split"
    assert io.load_checkpoint(split / "last.npz")[1]["step"] == 4
    assert json.loads((split / "summary.json").read_text())["interrupted"] == signal.Signals(signum).name
    assert [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()] == [3]  # no test line
    assert not (split / io.FolderLock.NAME).exists()
    run_to(split, 8, resume=True)
    same_run(split, tmp_path / "straight")
    assert "interrupted" not in json.loads((split / "summary.json").read_text())


def test_a_signal_during_the_last_evaluation_skips_it_and_the_resumed_run_does_it(tmp_path):
    run_to(tmp_path / "straight", 6)
    model = build_model("mlp", TINY)
    real_evaluate = model.evaluate

    def evaluate(images, labels):  # Ctrl-C while the end-of-run test metrics are computed
        os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(images, labels)
    model.evaluate = evaluate
    with pytest.raises(Interrupted, match="step 6"):
        run_to(tmp_path / "split", 6, model=model)
    assert io.load_checkpoint(tmp_path / "split" / "last.npz")[1]["evaluation_pending"]
    summary = run_to(tmp_path / "split", 6, resume=True)          # finished, but for its evaluation
    assert summary["steps"] == 6 and "test_acc" in summary
    same_run(tmp_path / "split", tmp_path / "straight")


def test_a_second_signal_during_the_save_lets_the_checkpoint_be_written_whole(tmp_path, monkeypatch):
    real_save = io.save_checkpoint

    def save_checkpoint(path, arrays, meta=None):  # the second Ctrl-C arrives while step 4 is written
        if meta["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        real_save(path, arrays, meta)
    with pytest.raises(Interrupted, match="SIGINT: saved .*step 4"):
        monkeypatch.setattr(io, "save_checkpoint", save_checkpoint)
        run_to(tmp_path, 8, model=signalled(build_model("mlp", TINY), 4, signal.SIGINT))
    monkeypatch.undo()
    assert io.load_checkpoint(tmp_path / "last.npz")[1]["step"] == 4
    assert sorted(p.name for p in tmp_path.glob(".*")) == []       # no temporary file, no lock left


def test_a_second_signal_during_a_step_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    run_to(tmp_path / "straight", 8)
    with pytest.raises(Interrupted, match=r"SIGINT at once: the last good checkpoint is .*\(step 3\)"):
        run_to(tmp_path / "split", 8, model=signalled(build_model("mlp", TINY), 5, signal.SIGINT, signal.SIGINT))
    assert io.load_checkpoint(tmp_path / "split" / "last.npz")[1]["step"] == 3
    run_to(tmp_path / "split", 8, resume=True)
    same_run(tmp_path / "split", tmp_path / "straight")


# ---------------------------------------------------------------------- one trainer per run folder
def test_a_second_trainer_in_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    run_to(tmp_path, 3)
    lock = io.FolderLock.acquire(tmp_path)          # as if another `train` were running there
    try:
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(io.FolderLocked, match=rf"is in use by process {os.getpid()} \(started "):
            run_to(tmp_path, 6, resume=True)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    finally:
        lock.release()
    run_to(tmp_path, 6, resume=True)
    assert io.load_checkpoint(tmp_path / "last.npz")[1]["step"] == 6


def test_a_lock_left_by_a_dead_process_is_taken_over_saying_so(tmp_path, capsys):
    tmp_path.joinpath(io.FolderLock.NAME).write_text(json.dumps({"pid": 999999999, "started": "2026-01-01T00:00:00"}))
    run_to(tmp_path, 3)
    assert "took over the lock left by process 999999999 (started 2026-01-01T00:00:00)" in capsys.readouterr().out
    assert not (tmp_path / io.FolderLock.NAME).exists()


# ---------------------------------------------------------------------- progress in a log
def test_progress_in_a_pipe_is_a_few_plain_lines_labelled_with_the_steps(tmp_path, capfd):
    options = TrainOptions(out=str(tmp_path), max_steps=200, log_every=20, progress=True, evaluate=False)
    Trainer(build_model("mlp", TINY), options).fit()
    err = capfd.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 11, err
    assert err.splitlines()[-1].startswith("mlp 200 steps: 200/200 (100%), loss ") and "epoch" not in err


# ---------------------------------------------------------------------- the training loop's faults (API)
PLAIN = {"hidden": 16, "batch_size": 32}  # no dropout


def fit_with(out, max_steps=4, resume=False, model=None, **options):
    model = model or build_model("mlp", PLAIN)
    options = {"log_every": 1, "checkpoint_every": 3, "progress": False, "evaluate": False, **options}
    return Trainer(model, TrainOptions(out=str(out), max_steps=max_steps, resume=resume, **options)).fit()


def blow_up_at(model, step, value=np.inf):
    """Make training_step write `value` into a weight at call `step`, with a finite loss."""
    real_step, calls = model.training_step, {"n": 0}

    def training_step(batch, optimizers):
        calls["n"] += 1
        logs = real_step(batch, optimizers)
        if calls["n"] == step:
            next(iter(model.parameters())).data[0, 0] = value
        return logs
    model.training_step = training_step
    return model


def test_non_finite_weights_are_never_saved_as_good(tmp_path):
    model = blow_up_at(build_model("mlp", PLAIN), step=6)   # the loss of step 6 is finite; its update is not
    with pytest.raises(TrainingError, match=r"non-finite values after step 6 in model/.*not saved; the last good "
                                            r"checkpoint is .*last.npz \(step 3\)"):
        fit_with(tmp_path, max_steps=8, model=model)
    arrays, meta = io.load_checkpoint(tmp_path / "last.npz")
    assert meta["step"] == 3 and all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_gan_at_a_huge_lr_stops_without_a_non_finite_checkpoint(tmp_path):
    model = build_model("gan", {"batch_size": 16, "lr": 1e30})
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match="non-finite"):   # overflow is the point
        fit_with(tmp_path, max_steps=6, model=model, checkpoint_every=1)
    if (tmp_path / "last.npz").exists():
        arrays, _ = io.load_checkpoint(tmp_path / "last.npz")
        assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_weights_blown_up_at_the_last_step_are_not_saved(tmp_path):
    model = blow_up_at(build_model("mlp", PLAIN), step=2, value=np.nan)
    with pytest.raises(TrainingError, match=r"non-finite test metrics .*test_acc|non-finite values"):
        fit_with(tmp_path, max_steps=2, model=model, evaluate=True)
    assert not (tmp_path / "last.npz").exists()


def test_nan_test_metrics_stop_before_the_epoch_checkpoint(tmp_path):
    model = build_model("vae", {"hidden": 32, "latent_dim": 2, "batch_size": 16, "lr": 1e30})
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"non-finite test metrics \{'test_neg_elbo': nan"):
        fit_with(tmp_path, max_steps=1, model=model, evaluate=True)
    assert not (tmp_path / "last.npz").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())   # the stop is recorded, for the report
    assert summary["diverged"].startswith("non-finite test metrics {'test_neg_elbo': nan") and summary["steps"] == 1


def test_resume_after_kill_removes_temporaries_and_does_not_log_a_step_twice(tmp_path):
    fit_with(tmp_path, max_steps=4)                     # checkpoints at step 3 and at the stop, step 4
    fit_steps = lambda: [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    # what kill -9 after step 7 (checkpoint at 4) leaves: log lines past the checkpoint, a cut line, temporaries
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps({"step": s, "epoch": 1, "loss": 1.0}) + "\n" for s in (5, 6, 7)) + '{"step": 8, "lo')
    size = (tmp_path / "last.npz").stat().st_size
    for name in (".last.npz.0123456789ab.tmp", ".last.npz.ba9876543210.tmp"):
        (tmp_path / name).write_bytes(b"\0" * size)
    (tmp_path / "notes.tmp").write_text("not ours")
    fit_with(tmp_path, max_steps=8, resume=True)
    assert fit_steps() == list(range(1, 9))
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [] and (tmp_path / "notes.tmp").exists()


def test_resume_of_a_finished_run_keeps_its_summary(tmp_path):
    fit_with(tmp_path, max_steps=3, evaluate=True)
    summary = (tmp_path / "summary.json").read_text()
    assert "test_acc" in summary
    with pytest.raises(TrainingError, match="already finished"):
        fit_with(tmp_path, max_steps=3, resume=True, evaluate=True)
    assert (tmp_path / "summary.json").read_text() == summary
    fit_with(tmp_path, max_steps=4, resume=True, evaluate=False)     # trained further without an evaluation:
    assert "test_acc" in json.loads((tmp_path / "summary.json").read_text())  # the last test metrics carry over


API_REFUSALS = [
    ("max-steps-0", lambda out: fit_with(out, max_steps=0), ValueError, r"--max-steps 0: must be a whole number >= 1"),
    ("seed-negative", lambda out: fit_with(out, seed=-3), ValueError, r"--seed -3"),
    ("dataset", lambda out: fit_with(out, dataset="cifar"), ValueError, r"valid datasets: mnist, fashion"),
    ("train-size-0", lambda out: fit_with(out, train_size=0), ValueError, r"--train-size 0: must be a whole number"),
    ("evaluate-every-0", lambda out: fit_with(out, evaluate_every=0), ValueError, r"--evaluate-every 0: must be"),
    ("train-size-beyond", lambda out: fit_with(out, train_size=60001), ValueError,
     r"--train-size 60001: the train split has 60000 images"),
    ("epochs-0", lambda out: fit_with(out, model=build_model("mlp", {**PLAIN, "epochs": 0})), ValueError, r"--epochs 0"),
    ("lr-negative", lambda out: fit_with(out, model=build_model("mlp", {**PLAIN, "lr": -1.0})), ValueError, r"--lr -1.0"),
    ("grad-clip-negative", lambda out: fit_with(out, model=build_model("mlp", {**PLAIN, "grad_clip": -0.5})), ValueError,
     r"grad_clip=-0.5: must be >= 0"),
    ("lr-inf-field", lambda out: build_model("mlp", {"lr": float("inf")}), ValueError, r"lr takes a finite number"),
    ("batch-size-str", lambda out: build_model("mlp", {"batch_size": "abc"}), ValueError, r"batch_size takes a whole number"),
    ("bool-for-int", lambda out: build_model("mlp", {"hidden": True}), ValueError, r"hidden takes a whole number"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in API_REFUSALS], ids=[c[0] for c in API_REFUSALS])
def test_training_refusals_write_nothing(tmp_path, call, error, culprit):
    out = tmp_path / "run"
    with pytest.raises(error, match=culprit):
        call(out)
    assert not out.exists()
