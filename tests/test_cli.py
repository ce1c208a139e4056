"""The command line, as a user runs it."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinygen import io
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


# ---------------------------------------------------------------------- signals and the run folder's lock
import signal  # noqa: E402  (this section's own imports)
import time  # noqa: E402

TINY_MLP = ["--set", "hidden=16", "--set", "batch_size=32", "--no-progress"]


def tinygen(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tinygen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)


def start_training(cwd):
    """A long tiny run, returned once it has logged a step (it is past start-up and training)."""
    proc = tinygen(cwd, "train", "mlp", "--max-steps", "1000000", "--out", "run", *TINY_MLP)
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
    resumed = tinygen(tmp_path, "train", "mlp", "--max-steps", str(step + 3), "--out", "run", "--resume", *TINY_MLP)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == step + 3


def test_a_second_train_in_the_same_folder_is_refused_naming_the_first(tmp_path):
    first = start_training(tmp_path)
    try:
        second = tinygen(tmp_path, "train", "mlp", "--max-steps", "5", "--out", "run", "--resume", *TINY_MLP)
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


def test_a_sample_request_too_large_for_memory_is_refused_up_front(tmp_path, vae_checkpoint, capsys, monkeypatch):
    import tinygen.models
    monkeypatch.setattr(tinygen.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for command in ("sample", "evaluate"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "vae", "--checkpoint", str(vae_checkpoint), "--n", "1000000000",
                  *(["--out", str(tmp_path / "s.png")] if command == "sample" else [])])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.search(r"--n 1000000000: needs at least \d+\.\d GiB of memory .* available; ask for fewer", err)
    assert not (tmp_path / "s.png").exists()
