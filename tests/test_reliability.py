"""Bad inputs and faults, table-driven: the CLI, checkpoints, the data and the engine.

Each CLI case runs a command in-process (the entry function with an argv list) in a copy of a folder
of tiny trained runs, and asserts exit status 2, one line on stderr that names the culprit, no
traceback, and that no file changed (the folder and the shipped judges are hashed before and after).
A few cases run end to end in a subprocess. The library and engine cases assert the exception and
its message. The cases that do write check that only the command's own output changed.
"""
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import autograd.functional as F
from autograd import ShapeError, Tensor
from tinygen import data, io, optim
from tinygen.__main__ import main as tinygen_main
from tinygen.evaluate import main as evaluate_main
from tinygen.train import TrainingError, TrainOptions, Trainer, build_model

ROOT = Path(__file__).resolve().parent.parent
JUDGES = ROOT / "tinygen" / "judges"
ENTRY = {"tinygen": tinygen_main, "evaluate": evaluate_main}

MLP = ["--set", "hidden=16", "--set", "batch_size=32", "--no-progress"]
VAE = ["--set", "hidden=32", "--set", "latent_dim=2", "--set", "batch_size=16", "--no-progress"]
DDPM = ["--set", "T=20", "--set", "base_channels=8", "--set", "channel_mult=[1,2,2]", "--set", "sample_steps=2",
        "--set", "batch_size=4", "--no-progress"]


# ---------------------------------------------------------------------- the folder every CLI case starts from
def snapshot(*folders):
    """{path: (size, SHA-256)} of every file under `folders`."""
    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                files[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


@contextlib.contextmanager
def inside(folder):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield Path(folder)
    finally:
        os.chdir(previous)


def run(entry, argv, capsys):
    """(exit status, stdout, stderr) of an in-process command."""
    capsys.readouterr()
    try:
        code = ENTRY[entry](argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Tiny trained runs (mlp, vae, ddpm), a sample file, a picture and a note of the user's, and some
    damaged files: the starting folder of every CLI case."""
    from PIL import Image
    root = tmp_path_factory.mktemp("template")
    with inside(root), contextlib.redirect_stdout(None):
        assert tinygen_main(["train", "mlp", "--max-steps", "3", "--out", "mlp", *MLP]) == 0
        assert tinygen_main(["train", "vae", "--max-steps", "1", "--out", "vae", *VAE]) == 0
        assert tinygen_main(["train", "ddpm", "--max-steps", "1", "--out", "ddpm", *DDPM]) == 0
        assert tinygen_main(["sample", "vae", "--checkpoint", "vae/last.npz", "--n", "4", "--out", "s.npz"]) == 0
    Image.new("L", (8, 8)).save(root / "picture.png")                  # the user's picture
    (root / "notes.txt").write_text("my notes\n")
    (root / "x.png").mkdir()                                            # a folder with a picture's name
    for name, damage in (("flipped", lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:]),
                         ("truncated", lambda b: b[:len(b) // 3])):
        shutil.copytree(root / "mlp", root / name)
        (root / name / "last.npz").write_bytes(damage((root / "mlp" / "last.npz").read_bytes()))
    shutil.copytree(root / "mlp", root / "mixed")
    shutil.copy(root / "vae" / "last.npz", root / "mixed" / "last.npz")  # a vae checkpoint in an mlp run
    (root / "runs" / "broken").mkdir(parents=True)
    (root / "runs" / "broken" / "summary.json").write_text("{not json")
    (root / "text.npz").write_text("not a zip file")
    np.save(root / "array.npy", np.zeros(3))
    return root


@pytest.fixture
def workspace(template, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    with inside(ws):
        yield ws


# ---------------------------------------------------------------------- CLI refusals: (id, entry, argv, culprit)
TRAIN = ["train", "mlp", *MLP]
SAMPLE_VAE = ["sample", "vae", "--checkpoint", "vae/last.npz", "--n", "4"]
SAMPLE_DDPM = ["sample", "ddpm", "--checkpoint", "ddpm/last.npz", "--n", "2"]
CLI_REFUSALS = [
    # train: ranges at the door
    ("max-steps-0", "tinygen", [*TRAIN, "--out", "new", "--max-steps", "0"], r"--max-steps: must be >= 1, got 0"),
    ("max-steps-abc", "tinygen", [*TRAIN, "--out", "new", "--max-steps", "abc"], r"--max-steps: .*'abc'"),
    ("epochs-0", "tinygen", [*TRAIN, "--out", "new", "--epochs", "0"], r"--epochs: must be >= 1"),
    ("lr-negative", "tinygen", [*TRAIN, "--out", "new", "--lr", "-0.001"], r"--lr: must be a finite number > 0"),
    ("lr-zero", "tinygen", [*TRAIN, "--out", "new", "--lr", "0"], r"--lr: must be a finite number > 0"),
    ("lr-inf", "tinygen", [*TRAIN, "--out", "new", "--lr", "inf"], r"--lr: .*got inf"),
    ("lr-nan", "tinygen", [*TRAIN, "--out", "new", "--lr", "nan"], r"--lr: .*got nan"),
    ("batch-size-0", "tinygen", [*TRAIN, "--out", "new", "--batch-size", "0"], r"--batch-size: must be >= 1"),
    ("seed-negative", "tinygen", [*TRAIN, "--out", "new", "--seed", "-1"], r"--seed: must be >= 0"),
    ("device-gpu", "tinygen", [*TRAIN, "--out", "new", "--device", "gpu"], r"--device: invalid choice: 'gpu'.*'cpu', 'cuda'"),
    ("dataset-cifar", "tinygen", [*TRAIN, "--out", "new", "--dataset", "cifar"], r"--dataset: invalid choice: 'cifar'"),
    ("unknown-option", "tinygen", [*TRAIN, "--frobnicate"], r"unrecognized arguments: --frobnicate"),
    ("unknown-model", "tinygen", ["train", "resnet"], r"unknown model 'resnet'; valid models: .*cnn"),
    ("resume-and-overwrite", "tinygen", [*TRAIN, "--out", "mlp", "--resume", "--overwrite"], r"--overwrite: not allowed with argument --resume"),
    # train: --set
    ("set-batch-size-abc", "tinygen", [*TRAIN, "--out", "new", "--set", "batch_size=abc"], r"--set batch_size=abc: batch_size takes a whole number"),
    ("set-epochs-float", "tinygen", [*TRAIN, "--out", "new", "--set", "epochs=1.5"], r"--set epochs=1.5: epochs takes a whole number"),
    ("set-epochs-0", "tinygen", [*TRAIN, "--out", "new", "--set", "epochs=0"], r"--epochs 0: must be a whole number >= 1"),
    ("set-grad-clip-negative", "tinygen", [*TRAIN, "--out", "new", "--set", "grad_clip=-1"], r"grad_clip=-1.0: must be >= 0"),
    ("set-lr-infinity", "tinygen", [*TRAIN, "--out", "new", "--set", "lr=Infinity"], r"--set lr=Infinity: lr takes a finite number"),
    ("set-lr-negative", "tinygen", [*TRAIN, "--out", "new", "--set", "lr=-0.1"], r"--lr -0.1: the learning rate must be a finite number > 0"),
    ("set-hidden-list", "tinygen", [*TRAIN, "--out", "new", "--set", "hidden=[1,2]"], r"--set hidden=\[1, 2\]: hidden takes a whole number"),
    ("set-unknown-field", "tinygen", [*TRAIN, "--out", "new", "--set", "depth=3"], r"unknown config field.*depth"),
    ("set-no-equals", "tinygen", [*TRAIN, "--out", "new", "--set", "hidden"], r"--set hidden: expects FIELD=VALUE"),
    ("set-lr-schedule", "tinygen", [*TRAIN, "--out", "new", "--set", "lr_schedule=linear"], r"lr_schedule 'linear'; valid"),
    ("set-quick-steps-0", "tinygen", [*TRAIN, "--out", "new", "--quick", "--set", "quick_steps=0"], r"quick_steps 0: must be"),
    # train: run folders and resume
    ("fresh-run-into-existing", "tinygen", [*TRAIN, "--out", "mlp", "--max-steps", "2"], r"--out mlp already holds a run.*--resume.*--overwrite"),
    ("resume-without-checkpoint", "tinygen", [*TRAIN, "--out", "new", "--resume"], r"--resume: no checkpoint at new/last.npz"),
    ("resume-other-seed", "tinygen", [*TRAIN, "--out", "mlp", "--resume", "--max-steps", "6", "--seed", "1"], r"--resume with --seed 1: .*--seed 0"),
    ("resume-quick-mismatch", "tinygen", [*TRAIN, "--out", "mlp", "--resume", "--quick"], r"--resume with --quick True: .*--quick False"),
    ("resume-finished", "tinygen", [*TRAIN, "--out", "mlp", "--resume", "--max-steps", "3"], r"already finished \(step 3.*nothing was changed"),
    ("resume-other-config", "tinygen", [*TRAIN, "--out", "mlp", "--resume", "--max-steps", "6", "--set", "hidden=32"], r"config differs.*hidden"),
    ("resume-other-model", "tinygen", [*TRAIN, "--out", "mixed", "--resume", "--max-steps", "6"], r"mixed/last.npz belongs to vae"),
    ("resume-flipped-checkpoint", "tinygen", [*TRAIN, "--out", "flipped", "--resume", "--max-steps", "6"], r"flipped/last.npz: (checksum|unreadable)"),
    ("resume-truncated-checkpoint", "tinygen", [*TRAIN, "--out", "truncated", "--resume", "--max-steps", "6"], r"truncated/last.npz: unreadable or truncated"),
    # sample: --out
    ("sample-out-checkpoint", "tinygen", [*SAMPLE_VAE, "--out", "vae/last.npz"], r"--out vae/last.npz: that is the --checkpoint itself"),
    ("sample-out-other-checkpoint", "tinygen", [*SAMPLE_VAE, "--out", "mlp/last.npz"], r"--out mlp/last.npz: the file exists and was not written by"),
    ("sample-out-jpg", "tinygen", [*SAMPLE_VAE, "--out", "x.jpg"], r"--out x.jpg: unsupported suffix '.jpg'; valid: .png .*; .npz"),
    ("sample-out-npy", "tinygen", [*SAMPLE_VAE, "--out", "x.npy"], r"--out x.npy: unsupported suffix '.npy'; valid: .png"),
    ("sample-out-no-suffix", "tinygen", [*SAMPLE_VAE, "--out", "samples"], r"--out samples: unsupported suffix '\(none\)'"),
    ("sample-out-user-picture", "tinygen", [*SAMPLE_VAE, "--out", "picture.png"], r"--out picture.png: the file exists and was not written by"),
    ("sample-out-run-picture", "tinygen", [*SAMPLE_VAE, "--out", "vae/samples_latest.png"], r"not written by `python -m tinygen sample`"),
    ("sample-out-folder", "tinygen", [*SAMPLE_VAE, "--out", "x.png"], r"--out x.png: is a folder"),
    # sample: values and options
    ("sample-n-0", "tinygen", [*SAMPLE_VAE, "--n", "0"], r"--n: must be >= 1, got 0"),
    ("sample-n-negative", "tinygen", [*SAMPLE_VAE, "--n", "-5"], r"--n: must be >= 1, got -5"),
    ("sample-n-abc", "tinygen", [*SAMPLE_VAE, "--n", "abc"], r"--n: expects a whole number"),
    ("sample-label-on-vae", "tinygen", [*SAMPLE_VAE, "--label", "3"], r"--label: vae takes no --label \(its sampling options: none\)"),
    ("sample-guidance-on-vae", "tinygen", [*SAMPLE_VAE, "--guidance", "2"], r"--guidance: vae takes no --guidance"),
    ("sample-steps-on-vae", "tinygen", [*SAMPLE_VAE, "--steps", "5"], r"--steps: vae takes no --steps"),
    ("sample-prompt-on-vae", "tinygen", [*SAMPLE_VAE, "--prompt", "a seven"], r"--prompt: vae takes no --prompt"),
    ("sample-label-10", "tinygen", [*SAMPLE_DDPM, "--label", "10"], r"--label 10: valid labels are 0..9"),
    ("sample-label-negative", "tinygen", [*SAMPLE_DDPM, "--label", "-1"], r"--label: must be >= 0"),
    ("sample-steps-0", "tinygen", [*SAMPLE_DDPM, "--steps", "0"], r"--steps: must be >= 1, got 0"),
    ("sample-steps-over-T", "tinygen", [*SAMPLE_DDPM, "--steps", "50"], r"--steps 50: ddpm has T = 20 .*valid: 1..20"),
    ("sample-guidance-negative", "tinygen", [*SAMPLE_DDPM, "--label", "1", "--guidance", "-1"], r"--guidance: must be a finite number >= 0"),
    ("sample-guidance-nan", "tinygen", [*SAMPLE_DDPM, "--label", "1", "--guidance", "nan"], r"--guidance: .*got nan"),
    ("sample-guidance-without-label", "tinygen", [*SAMPLE_DDPM, "--guidance", "3"], r"--guidance 3: .*give --label too"),
    ("sample-prompt-on-ddpm", "tinygen", [*SAMPLE_DDPM, "--prompt", "a seven"], r"--prompt: ddpm takes no --prompt \(its sampling options: --label, --guidance, --steps\)"),
    ("sample-classifier-model", "tinygen", ["sample", "mlp", "--checkpoint", "mlp/last.npz"], r"mlp is not a generative model"),
    ("sample-wrong-model", "tinygen", ["sample", "vae", "--checkpoint", "ddpm/last.npz"], r"ddpm/last.npz holds a 'ddpm' model, not 'vae'"),
    ("sample-missing-checkpoint", "tinygen", ["sample", "vae", "--checkpoint", "nothere.npz"], r"nothere.npz: no such checkpoint file"),
    ("sample-text-checkpoint", "tinygen", ["sample", "vae", "--checkpoint", "text.npz", "--out", "t.png"], r"text.npz: unreadable or truncated"),
    ("sample-npy-checkpoint", "tinygen", ["sample", "vae", "--checkpoint", "array.npy", "--out", "t.png"], r"array.npy: not a checkpoint"),
    ("sample-from-samples-file", "tinygen", ["sample", "vae", "--checkpoint", "s.npz", "--out", "t.png"], r"s.npz: not a training checkpoint"),
    # evaluate (python -m tinygen evaluate)
    ("evaluate-n-1", "tinygen", ["evaluate", "vae", "--checkpoint", "vae/last.npz", "--n", "1"], r"--n: must be >= 2, got 1"),
    ("evaluate-steps-on-vae", "tinygen", ["evaluate", "vae", "--checkpoint", "vae/last.npz", "--steps", "3"], r"--steps: vae takes no --steps"),
    ("evaluate-guidance-on-vae", "tinygen", ["evaluate", "vae", "--checkpoint", "vae/last.npz", "--guidance", "2"], r"--guidance: vae takes no --guidance"),
    ("evaluate-steps-over-T", "tinygen", ["evaluate", "ddpm", "--checkpoint", "ddpm/last.npz", "--steps", "21"], r"--steps 21: ddpm has T = 20"),
    ("evaluate-flipped", "tinygen", ["evaluate", "mlp", "--checkpoint", "flipped/last.npz"], r"flipped/last.npz: (checksum|unreadable)"),
    ("report-broken-summary", "tinygen", ["report", "--runs", "runs"], r"runs/broken/summary.json: not valid JSON"),
    # python -m tinygen.evaluate
    ("train-judge-epochs-0", "evaluate", ["train-judge", "--dataset", "mnist", "--epochs", "0"], r"--epochs: must be >= 1, got 0"),
    ("train-judge-into-package", "evaluate", ["train-judge", "--dataset", "mnist", "--epochs", "1", "--out", str(JUDGES)], r"the shipped judges .* are never written by a command"),
    ("train-judge-dataset", "evaluate", ["train-judge", "--dataset", "cifar"], r"--dataset: invalid choice: 'cifar'"),
    ("sampler-sweep-on-vae", "evaluate", ["sampler-sweep", "--checkpoint", "vae/last.npz", "--n", "4"], r"holds a vae, not a diffusion model"),
    ("sampler-sweep-steps-0", "evaluate", ["sampler-sweep", "--checkpoint", "ddpm/last.npz", "--steps", "0"], r"--steps: must be >= 1, got 0"),
    ("sampler-sweep-steps-over-T", "evaluate", ["sampler-sweep", "--checkpoint", "ddpm/last.npz", "--steps", "5", "40"], r"--steps 40: ddpm has T = 20"),
    ("sampler-sweep-n-1", "evaluate", ["sampler-sweep", "--checkpoint", "ddpm/last.npz", "--n", "1"], r"--n: must be >= 2, got 1"),
    ("sampler-sweep-missing", "evaluate", ["sampler-sweep", "--checkpoint", "nothere.npz"], r"nothere.npz: no such checkpoint file"),
    ("sampler-sweep-samples-file", "evaluate", ["sampler-sweep", "--checkpoint", "s.npz"], r"s.npz: not a training checkpoint"),
    ("guidance-sweep-scale-negative", "evaluate", ["guidance-sweep", "--checkpoint", "ddpm/last.npz", "--scales", "-1"], r"--scales: must be a finite number >= 0"),
    ("guidance-sweep-steps-0", "evaluate", ["guidance-sweep", "--checkpoint", "ddpm/last.npz", "--steps", "0"], r"--steps: must be >= 1"),
    ("guidance-sweep-bad-classifier", "evaluate", ["guidance-sweep", "--checkpoint", "ddpm/last.npz", "--steps", "2", "--classifier", "vae/last.npz"], r"--classifier vae/last.npz holds a vae, not a noisy_classifier"),
    ("evaluate-no-command", "evaluate", [], r"the following arguments are required"),
]


@pytest.mark.parametrize("entry, argv, culprit", [c[1:] for c in CLI_REFUSALS], ids=[c[0] for c in CLI_REFUSALS])
def test_cli_refuses_in_one_line_and_changes_nothing(workspace, capsys, entry, argv, culprit):
    before = snapshot(workspace, JUDGES)
    code, out, err = run(entry, argv, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(culprit, lines[0]), lines[0]
    assert snapshot(workspace, JUDGES) == before


def test_missing_data_is_refused_before_anything_is_written(workspace, capsys, monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TINYGEN_DATA", str(empty))
    monkeypatch.setenv("TINYGEN_CACHE", str(empty))
    monkeypatch.setattr(data, "SYSTEM_DIRS", ())
    monkeypatch.setattr(data, "_CACHE", {})
    before = snapshot(workspace)
    for argv in ([*TRAIN, "--out", "new", "--max-steps", "1"], [*TRAIN, "--out", "mlp", "--resume", "--max-steps", "6"]):
        code, _, err = run("tinygen", argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Could not find the mnist train split" in err
        assert snapshot(workspace) == before and not (workspace / "new").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be usable here")
def test_device_cuda_without_cupy_is_one_line(workspace, capsys):
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    code, _, err = run("tinygen", [*TRAIN, "--out", "new", "--device", "cuda"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--device cuda: device 'cuda' needs CuPy" in err
    assert not (workspace / "new").exists()


# ---------------------------------------------------------------------- end to end, in a subprocess
SUBPROCESS = [
    (["-m", "tinygen", "train", "mlp", "--max-steps", "0"], r"--max-steps: must be >= 1, got 0"),
    (["-m", "tinygen", "train", "mlp", "--out", "mlp", "--set", "batch_size=abc"], r"--set batch_size=abc"),
    (["-m", "tinygen", "sample", "vae", "--checkpoint", "vae/last.npz", "--out", "vae/last.npz"], r"--checkpoint itself"),
    (["-m", "tinygen", "sample", "vae", "--checkpoint", "vae/last.npz", "--label", "3"], r"--label: vae takes no --label"),
    (["-m", "tinygen.evaluate", "train-judge", "--dataset", "mnist", "--epochs", "0"], r"--epochs: must be >= 1"),
]


@pytest.mark.parametrize("argv, culprit", SUBPROCESS, ids=[" ".join(a[1:4]) + f" {i}" for i, (a, _) in enumerate(SUBPROCESS)])
def test_subprocess_exit_status_2_one_line_no_traceback(workspace, argv, culprit):
    before = snapshot(workspace, JUDGES)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TINYGEN_TRACEBACK", None)
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=workspace, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(culprit, proc.stderr)
    assert snapshot(workspace, JUDGES) == before


# ---------------------------------------------------------------------- commands that write: only their own output
def changed(before, after):
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def test_sample_png_then_npz_write_only_their_output(workspace, capsys):
    before = snapshot(workspace)
    code, out, _ = run("tinygen", SAMPLE_VAE, capsys)
    assert code == 0 and "saved 4 samples to vae/samples.png" in out
    assert changed(before, snapshot(workspace)) == {str(workspace / "vae" / "samples.png")}
    assert io.png_text(workspace / "vae" / "samples.png")["tinygen"] == "tinygen-samples"
    assert run("tinygen", [*SAMPLE_VAE, "--seed", "1"], capsys)[0] == 0  # an earlier output may be replaced
    before = snapshot(workspace)
    assert run("tinygen", [*SAMPLE_VAE, "--out", "out/v.npz"], capsys)[0] == 0
    assert changed(before, snapshot(workspace)) == {str(workspace / "out" / "v.npz")}
    samples = np.load(workspace / "out" / "v.npz")
    images, labels = samples["images"], samples["labels"]
    assert images.shape == (4, 1, 28, 28) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    assert labels.tolist() == [-1] * 4


def test_sample_ddpm_npz_records_the_labels_asked_for(workspace, capsys):
    code, _, _ = run("tinygen", [*SAMPLE_DDPM, "--n", "3", "--label", "7", "--guidance", "2", "--steps", "2",
                                 "--out", "sevens.npz"], capsys)
    assert code == 0
    samples = np.load(workspace / "sevens.npz")
    assert samples["labels"].tolist() == [7, 7, 7] and samples["images"].shape == (3, 1, 28, 28)


def test_overwrite_starts_over_and_keeps_files_that_are_not_the_runs(workspace, capsys):
    (workspace / "mlp" / "notes.txt").write_text("mine")
    old = (workspace / "mlp" / "metrics.jsonl").read_text()
    code, _, _ = run("tinygen", [*TRAIN, "--out", "mlp", "--max-steps", "2", "--overwrite"], capsys)
    assert code == 0
    assert (workspace / "mlp" / "notes.txt").read_text() == "mine"
    assert io.load_checkpoint(workspace / "mlp" / "last.npz")[1]["step"] == 2
    assert (workspace / "mlp" / "metrics.jsonl").read_text() != old
    assert not (workspace / "mlp" / "samples_step000003.png").exists()  # the old run's pictures are gone


def test_train_judge_writes_its_run_folder_never_the_package(workspace, monkeypatch, capsys):
    from tinygen import evaluate
    before = snapshot(JUDGES)
    calls = {}

    def fake_fit(self):  # the recipe's training is not what is tested here; where the files go is
        calls["out"] = self.out
        return {"steps": 0, "cpu_seconds": 0.0, "test_acc": 0.0}
    monkeypatch.setattr(Trainer, "fit", fake_fit)
    path, digest = evaluate.train_judge("mnist", epochs=1, out="judge-run")
    assert calls["out"] == Path("judge-run") and path == Path("judge-run") / "judge.npz" and path.exists()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert snapshot(JUDGES) == before


# ---------------------------------------------------------------------- the training loop's faults (API)
TINY = {"hidden": 16, "batch_size": 32}


def fit(out, max_steps=4, resume=False, model=None, **options):
    model = model or build_model("mlp", TINY)
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
    model = blow_up_at(build_model("mlp", TINY), step=6)   # the loss of step 6 is finite; its update is not
    with pytest.raises(TrainingError, match=r"non-finite values after step 6 in model/.*not saved; the last good "
                                            r"checkpoint is .*last.npz \(step 3\)"):
        fit(tmp_path, max_steps=8, model=model)
    arrays, meta = io.load_checkpoint(tmp_path / "last.npz")
    assert meta["step"] == 3 and all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_gan_at_a_huge_lr_stops_without_a_non_finite_checkpoint(tmp_path):
    model = build_model("gan", {"batch_size": 16, "lr": 1e30})
    with pytest.raises(TrainingError, match="non-finite"):
        fit(tmp_path, max_steps=6, model=model, checkpoint_every=1)
    if (tmp_path / "last.npz").exists():
        arrays, _ = io.load_checkpoint(tmp_path / "last.npz")
        assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_weights_blown_up_at_the_last_step_are_not_saved(tmp_path):
    model = blow_up_at(build_model("mlp", TINY), step=2, value=np.nan)
    with pytest.raises(TrainingError, match=r"non-finite test metrics .*test_acc|non-finite values"):
        fit(tmp_path, max_steps=2, model=model, evaluate=True)
    assert not (tmp_path / "last.npz").exists()


def test_nan_test_metrics_stop_before_the_epoch_checkpoint(tmp_path):
    model = build_model("vae", {"hidden": 32, "latent_dim": 2, "batch_size": 16, "lr": 1e30})
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"non-finite test metrics \{'test_neg_elbo': nan"):
        fit(tmp_path, max_steps=1, model=model, evaluate=True)
    assert not (tmp_path / "last.npz").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())   # the stop is recorded, for the report
    assert summary["diverged"].startswith("non-finite test metrics {'test_neg_elbo': nan") and summary["steps"] == 1


def test_resume_after_kill_removes_temporaries_and_does_not_log_a_step_twice(tmp_path):
    fit(tmp_path, max_steps=4)                     # checkpoints at step 3 and at the stop, step 4
    fit_steps = lambda: [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    # what kill -9 after step 7 (checkpoint at 4) leaves: log lines past the checkpoint, a cut line, temporaries
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps({"step": s, "epoch": 1, "loss": 1.0}) + "\n" for s in (5, 6, 7)) + '{"step": 8, "lo')
    size = (tmp_path / "last.npz").stat().st_size
    for name in (".last.npz.0123456789ab.tmp", ".last.npz.ba9876543210.tmp"):
        (tmp_path / name).write_bytes(b"\0" * size)
    (tmp_path / "notes.tmp").write_text("not ours")
    fit(tmp_path, max_steps=8, resume=True)
    assert fit_steps() == list(range(1, 9))
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [] and (tmp_path / "notes.tmp").exists()


def test_resume_of_a_finished_run_keeps_its_summary(tmp_path):
    fit(tmp_path, max_steps=3, evaluate=True)
    summary = (tmp_path / "summary.json").read_text()
    assert "test_acc" in summary
    with pytest.raises(TrainingError, match="already finished"):
        fit(tmp_path, max_steps=3, resume=True, evaluate=True)
    assert (tmp_path / "summary.json").read_text() == summary
    fit(tmp_path, max_steps=4, resume=True, evaluate=False)     # trained further without an evaluation:
    assert "test_acc" in json.loads((tmp_path / "summary.json").read_text())  # the last test metrics carry over


API_REFUSALS = [
    ("max-steps-0", lambda out: fit(out, max_steps=0), ValueError, r"--max-steps 0: must be a whole number >= 1"),
    ("seed-negative", lambda out: fit(out, seed=-3), ValueError, r"--seed -3"),
    ("dataset", lambda out: fit(out, dataset="cifar"), ValueError, r"valid datasets: mnist, fashion"),
    ("epochs-0", lambda out: fit(out, model=build_model("mlp", {**TINY, "epochs": 0})), ValueError, r"--epochs 0"),
    ("lr-negative", lambda out: fit(out, model=build_model("mlp", {**TINY, "lr": -1.0})), ValueError, r"--lr -1.0"),
    ("grad-clip-negative", lambda out: fit(out, model=build_model("mlp", {**TINY, "grad_clip": -0.5})), ValueError,
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


# ---------------------------------------------------------------------- checkpoints and data
def _gzip_of(raw):
    return gzip.compress(raw)


def _dataset_folder(tmp_path, images_bytes):
    """A folder mnist/ with good labels and the given train-images file."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    shared = Path(os.environ["TINYGEN_DATA"]) / "mnist"
    shutil.copy(shared / "train-labels-idx1-ubyte.gz", folder)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(images_bytes)
    return tmp_path


def _real_images():
    return (Path(os.environ["TINYGEN_DATA"]) / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()


LIBRARY_FAULTS = [
    ("checkpoint-missing", lambda tmp: io.load_checkpoint(tmp / "none.npz"), io.CheckpointError, r"no such checkpoint file"),
    ("checkpoint-not-zip", lambda tmp: (tmp.joinpath("a.npz").write_text("hello"), io.load_checkpoint(tmp / "a.npz")),
     io.CheckpointError, r"unreadable or truncated"),
    ("checkpoint-npy", lambda tmp: (np.save(tmp / "a.npy", np.ones(2)), io.load_checkpoint(tmp / "a.npy")),
     io.CheckpointError, r"an .npy array"),
    ("checkpoint-plain-npz", lambda tmp: (np.savez(tmp / "p.npz", w=np.ones(2)), io.load_checkpoint(tmp / "p.npz")),
     io.CheckpointError, r"not a tinygen checkpoint"),
    ("checkpoint-sample-file", lambda tmp: (io.save_checkpoint(tmp / "s.npz", {"images": np.zeros((1, 1, 2, 2))},
                                                               {"kind": "tinygen-samples", "model": "vae"}),
                                            __import__("tinygen.models").models.load_model(tmp / "s.npz", "vae")),
     io.CheckpointError, r"not a training checkpoint"),
    ("dataset-name", lambda tmp: data.load_dataset("cifar"), ValueError, r"unknown dataset 'cifar'"),
    ("dataset-split", lambda tmp: data.load_dataset("mnist", "validation"), ValueError, r"unknown split 'validation'"),
    ("loader-batch-0", lambda tmp: data.DataLoader((np.zeros((4, 1)),), 0), ValueError, r"batch_size must be a positive"),
    ("loader-lengths", lambda tmp: data.DataLoader((np.zeros((4, 1)), np.zeros(3)), 2), ValueError, r"same first dimension"),
    ("dataset-truncated-gzip", lambda tmp: data.load_dataset("mnist", "train", root=_dataset_folder(tmp, _real_images()[:5000])),
     data.DatasetError, r"train-images-idx3-ubyte.gz"),
    ("dataset-garbage-idx", lambda tmp: data.load_dataset("mnist", "train", root=_dataset_folder(tmp, _gzip_of(b"\x00" * 64))),
     data.DatasetError, r"train-images-idx3-ubyte"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in LIBRARY_FAULTS], ids=[c[0] for c in LIBRARY_FAULTS])
def test_library_faults_name_the_culprit(tmp_path, call, error, culprit):
    with pytest.raises(error, match=culprit):
        call(tmp_path)


def test_stale_temporaries_are_found_by_their_pattern_only(tmp_path):
    (tmp_path / ".last.npz.0123456789ab.tmp").write_bytes(b"x")
    (tmp_path / ".last.npz.tmp").write_bytes(b"keep")          # not a name atomic_open gives
    (tmp_path / "last.npz").write_bytes(b"keep")
    assert [p.name for p in io.remove_stale_temporaries(tmp_path)] == [".last.npz.0123456789ab.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.npz.tmp", "last.npz"]


# ---------------------------------------------------------------------- the engine's silent wrong answers
def _saved_input_changed():
    w, x = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    y = (w * x).sum()
    w.mul_(2.0)
    y.backward()


def _saved_output_changed():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = F.exp(x)
    z = y.sum()
    y.detach().zero_()       # a detached view shares the version counter
    z.backward()


def _optimizer_step_between_forward_and_backward():
    w = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    loss = (F.matmul(Tensor(np.ones((1, 2), np.float32)), w) ** 2).sum()
    loss.backward(retain_graph=True)
    opt.step()               # w changes in place: the graph of `loss` is stale
    loss.backward()


A = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
ENGINE = [
    ("sum-axis-out-of-range", lambda: A.sum(axis=5), ShapeError, r"sum: axis 5 is out of range for a 2-d tensor \(valid: -2..1\)"),
    ("sum-axis-repeated", lambda: A.sum(axis=(0, 0)), ShapeError, r"sum: axis \(0, 0\) names an axis twice"),
    ("sum-axis-float", lambda: A.sum(axis=1.0), TypeError, r"sum: axis must be an integer, got 1.0"),
    ("mean-axis-negative", lambda: A.mean(axis=-3), ShapeError, r"mean: axis -3 is out of range"),
    ("max-axis", lambda: A.max(axis=2), ShapeError, r"max: axis 2"),
    ("min-axis", lambda: A.min(axis=-5), ShapeError, r"min: axis -5"),
    ("var-axis", lambda: A.var(axis=3), ShapeError, r"var: axis 3"),
    ("logsumexp-axis", lambda: F.logsumexp(A, axis=9), ShapeError, r"logsumexp: axis 9"),
    ("transpose-axis", lambda: A.transpose(0, 5), ShapeError, r"transpose: axis 5 is out of range"),
    ("transpose-length", lambda: A.transpose(1, 0, 2), ShapeError, r"transpose: axes \(1, 0, 2\) are not a permutation"),
    ("concat-axis", lambda: F.concat([A, A], axis=2), ShapeError, r"concat: axis 2 is out of range for a 2-d"),
    ("concat-empty", lambda: F.concat([], axis=0), ShapeError, r"concat: needs at least one tensor"),
    ("stack-axis", lambda: F.stack([A, A], axis=4), ShapeError, r"stack: axis 4 is out of range for a 3-d"),
    ("unsqueeze-axis", lambda: F.unsqueeze(A, 7), ShapeError, r"unsqueeze: axis 7"),
    ("squeeze-axis", lambda: F.squeeze(A, 5), ShapeError, r"squeeze: axis 5 is out of range"),
    ("split-axis", lambda: F.split(A, 2, axis=4), ShapeError, r"split: axis 4"),
    ("softmax-dim", lambda: F.softmax(A, dim=3), ShapeError, r"softmax: axis 3 is out of range"),
    ("truth-value-multi", lambda: bool(A), ValueError, r"truth value of a tensor with 6 elements .* ambiguous: use .any\(\) or .all\(\)"),
    ("truth-value-if", lambda: 1 if A > 2 else 0, ValueError, r"ambiguous"),
    ("truth-value-empty", lambda: bool(Tensor(np.zeros(0, np.float32))), ValueError, r"0 elements"),
    ("float-of-multi", lambda: float(A), TypeError, r"only one-element tensors"),
    ("len-of-0d", lambda: len(Tensor(1.0)), TypeError, r"len\(\) of a 0-d tensor"),
    ("iter-of-0d", lambda: list(Tensor(1.0)), TypeError, r"iteration over a 0-d tensor"),
    ("int-plus-float", lambda: Tensor([1, 2]) + Tensor([0.5, 0.5]), TypeError, r"add: mixing integer \(int64\) and float \(float32\)"),
    ("int-times-python-float", lambda: Tensor([1, 2]) * 0.5, TypeError, r"mul: mixing integer \(int64\) and float \(float32\)"),
    ("where-int-float", lambda: F.where(Tensor([True, False]), Tensor([1, 2]), Tensor([0.5, 0.5])), TypeError, r"where: mixing integer"),
    ("concat-int-float", lambda: F.concat([Tensor([1]), Tensor([0.5])]), TypeError, r"concat: mixing integer"),
    ("float32-float64", lambda: Tensor([1.0]) + Tensor([1.0], dtype="float64"), TypeError, r"add: mixing float32 and float64"),
    ("saved-input-changed-in-place", _saved_input_changed, RuntimeError, r"backward through mul: input 0 \(shape \(2,\)\), which mul saved .* modified by an in-place operation .*version 0 -> 1"),
    ("saved-output-changed-in-place", _saved_output_changed, RuntimeError, r"backward through exp: its output .* modified by an in-place"),
    ("optimizer-step-before-backward", _optimizer_step_between_forward_and_backward, RuntimeError, r"modified by an in-place operation"),
    ("backward-grad-dtype", lambda: (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(Tensor([1.0, 1.0], dtype="float64")),
     TypeError, r"backward: gradient of dtype float64 for a float32 tensor"),
    ("backward-non-scalar", lambda: (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(), RuntimeError, r"non-scalar tensor of shape \(2,\)"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in ENGINE], ids=[c[0] for c in ENGINE])
def test_engine_refuses_what_numpy_or_pytorch_would(call, error, culprit):
    with pytest.raises(error, match=culprit):
        call()


def test_engine_gives_the_right_answer_where_it_can():
    a = Tensor([1.0, 2.0, 3.0])
    assert (a == Tensor([1.0, 0.0, 3.0])).data.tolist() == [True, False, True]       # elementwise, not identity
    assert (a != 2.0).data.tolist() == [True, False, True]
    assert bool((a > 0).all()) and not bool((a > 2).all()) and bool((a > 2).any())
    assert [float(t) for t in a] == [1.0, 2.0, 3.0] and len(list(A)) == 2 and list(A)[1].shape == (3,)
    assert bool(Tensor([0.5])) and not bool(Tensor(0.0)) and int(Tensor([7])) == 7
    q = Tensor([1, 2]) / Tensor([2, 2])
    assert q.dtype == np.float32 and q.data.tolist() == [0.5, 1.0]                     # int / int: float32
    assert (Tensor([1, 2]) * 3).dtype == np.int64
    assert F.exp(Tensor([0, 1])).dtype == np.float32
    assert F.stack([A, A], axis=-1).shape == (2, 3, 2) and F.unsqueeze(A, -1).shape == (2, 3, 1)
    # an input changed in place that the op did not save is harmless: the gradient stays right
    w, x = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    y = (w + x).sum()
    w.mul_(2.0)
    y.backward()
    assert x.grad.tolist() == [1.0, 1.0] and w.grad.tolist() == [1.0, 1.0] and w._version == 1


def test_the_suite_has_at_least_sixty_cases():
    cases = len(CLI_REFUSALS) + len(SUBPROCESS) + len(API_REFUSALS) + len(LIBRARY_FAULTS) + len(ENGINE)
    assert cases >= 60, cases


def test_every_models_sampling_options_are_parameters_of_its_sample():
    import inspect
    from tinygen import models
    for name in models.MODULES:
        cls = models.get_model_class(name)
        takes = set(getattr(cls, "sample_options", ()))
        assert takes <= {"label", "prompt", "guidance", "steps"}, name
        if takes:
            assert takes <= set(inspect.signature(cls.sample).parameters), name
