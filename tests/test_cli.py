"""The command line, as a user runs it, and the refusals and faults it meets."""
import contextlib
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

from tinygen import data, io
from tinygen.__main__ import main
from tinygen.evaluate import main as evaluate_main
from tinygen.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
MLP = ["--set", "hidden=16", "--set", "batch_size=32", "--no-progress"]


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


# ---------------------------------------------------------------------- signals and the run folder's lock
import signal  # noqa: E402  (this section's own imports)
import time  # noqa: E402


def tinygen(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tinygen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)


def start_training(cwd):
    """A long tiny run, returned once it has logged a step (it is past start-up and training)."""
    proc = tinygen(cwd, "train", "mlp", "--max-steps", "1000000", "--out", "run", *MLP)
    metrics = cwd / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_signal_leaves_a_resumable_run_and_the_shells_exit_status(tmp_path, signum):
    proc = start_training(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err                     # 130, 143, 129
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    step = int(re.search(rf"stopped by {signal.Signals(signum).name}: saved run/last.npz at step (\d+); "
                         rf"continue with --resume", err).group(1))
    run = tmp_path / "run"
    assert io.load_checkpoint(run / "last.npz")[1]["step"] == step
    assert json.loads((run / "summary.json").read_text())["interrupted"] == signal.Signals(signum).name
    assert max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()) <= step
    resumed = tinygen(tmp_path, "train", "mlp", "--max-steps", str(step + 3), "--out", "run", "--resume", *MLP)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == step + 3


def test_a_second_train_in_the_same_folder_is_refused_naming_the_first(tmp_path):
    first = start_training(tmp_path)
    try:
        second = tinygen(tmp_path, "train", "mlp", "--max-steps", "5", "--out", "run", "--resume", *MLP)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert re.fullmatch(rf"python -m tinygen: error: run is in use by process {first.pid} \(started .*\); .*\n",
                            err), err
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130


@pytest.mark.parametrize("module, prog", [("tinygen", "python -m tinygen"),
                                          ("tinygen.evaluate", "python -m tinygen.evaluate")])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path, module, prog):
    # KeyboardInterrupt raised while `python -m tinygen` (or tinygen.evaluate) imports its modules
    code = ("import runpy, sys\n"
            "class Stop:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'tinygen.models': raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Stop())\n"
            f"sys.argv = ['{module}', '--help']\n"
            f"runpy.run_module('{module}', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 130 and proc.stderr == f"{prog}: interrupted\n", proc.stderr


# ---------------------------------------------------------------------- values refused before anything is written
@pytest.mark.parametrize("argv, culprit", [
    (["train", "ddpm", "--set", "T=20", "--max-steps", "1"], r"--set sample_steps=50: .*1..T = 1..20"),
    (["train", "mlp", "--set", "hidden=0"], r"--set hidden=0: hidden must be a whole number >= 1"),
    (["train", "mlp", "--set", "hidden=null"], r"--set hidden=null: hidden takes a value"),
    (["train", "ddpm", "--set", "p_uncond=2"], r"p_uncond is a probability"),
    (["train", "mlp", "--lr", "1e39"], r"--lr: must be finite in float32"),
    (["sample", "ddpm", "--checkpoint", "nothere.npz", "--label", "1", "--guidance", "1e39"],
     r"--guidance: must be finite in float32"),
], ids=["ddpm-T-20", "hidden-0", "null", "p-uncond", "lr-float32", "guidance-float32"])
def test_bad_values_are_refused_before_the_run_folder_is_made(tmp_path, capsys, monkeypatch, argv, culprit):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", "run.png" if argv[0] == "sample" else "run"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and re.search(culprit, err), err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- sample --out and --n checked before the work
@pytest.fixture
def vae_checkpoint(tmp_path):
    from tinygen.models import build_model, save_model
    save_model(build_model("vae", {"hidden": 16, "latent_dim": 2}), tmp_path / "vae.npz")
    return tmp_path / "vae.npz"


def _make_read_only(tmp_path):
    (tmp_path / "ro").mkdir()
    if os.geteuid() == 0 and Path("/proc/self").exists():
        return "/proc/tinygen-samples.png"     # root writes in a chmod 555 folder; nobody writes in /proc
    (tmp_path / "ro").chmod(0o555)
    return "ro/x.png"


@pytest.mark.parametrize("make_out, culprit", [
    (lambda tmp: (tmp.joinpath("notes.txt").write_text("mine"), "notes.txt/x.png")[1], r"notes.txt is a file, not a folder"),
    (_make_read_only, r"(cannot write in|is not writable)"),
    (lambda tmp: "x" * 250 + ".png", r"bytes long \(with the temporary file's suffix.*more than the 255"),
    (lambda tmp: (os.mkfifo(tmp / "fifo.png"), "fifo.png")[1], r"is not a regular file"),
], ids=["parent-is-a-file", "read-only", "name-too-long", "fifo"])
def test_sample_out_that_cannot_be_written_is_refused_before_loading(tmp_path, vae_checkpoint, make_out, culprit):
    out = make_out(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tinygen", "sample", "vae", "--checkpoint", str(vae_checkpoint),
                           "--n", "4", "--out", out], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"python -m tinygen: error: --out {out}: ") and re.search(culprit, proc.stderr), \
        proc.stderr
    assert ".tmp" not in proc.stderr and not list(tmp_path.rglob(".*.tmp"))


def test_a_sample_request_too_large_for_memory_is_refused_up_front(tmp_path, vae_checkpoint, one_line_error,
                                                                   monkeypatch):
    import tinygen.models
    monkeypatch.setattr(tinygen.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for command in ("sample", "evaluate"):
        err = one_line_error(main, [command, "vae", "--checkpoint", str(vae_checkpoint), "--n", "1000000000",
                                    *(["--out", str(tmp_path / "s.png")] if command == "sample" else [])])
        assert re.search(r"--n 1000000000: needs at least \d+\.\d GiB of memory .* available; ask for fewer", err)
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------- refusals, table-driven
# Each case runs a command in-process (the entry function with an argv list) in a copy of a folder of tiny
# trained runs, and asserts exit status 2, one line on stderr that names the culprit, no traceback, and that
# no file changed (the folder and the shipped judges are hashed before and after). A few cases run end to
# end in a subprocess. The cases that do write check that only the command's own output changed.
JUDGES = ROOT / "tinygen" / "judges"
ENTRY = {"tinygen": main, "evaluate": evaluate_main}

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
        assert main(["train", "mlp", "--max-steps", "3", "--out", "mlp", *MLP]) == 0
        assert main(["train", "vae", "--max-steps", "1", "--out", "vae", *VAE]) == 0
        assert main(["train", "ddpm", "--max-steps", "1", "--out", "ddpm", *DDPM]) == 0
        assert main(["sample", "vae", "--checkpoint", "vae/last.npz", "--n", "4", "--out", "s.npz"]) == 0
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
