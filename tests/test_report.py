"""python -m tinygen report: tiny real runs (a few steps of tiny configs) in a tmp folder, the rows and
their units, stability over three seeds, a diverged run counted, the plan of --train, and the refusals.

The evaluation reads the first TEST_N images of the test split (data.load_dataset patched), so that a
VAE's IWAE bound and the judge's test features take a second, not minutes."""
import json
import re
import shutil
from pathlib import Path

import pytest

from autograd import _threads
from tinygen import data, evaluate, io, report
from tinygen.__main__ import main
from tinygen.models import build_model, get_model_class, load_model
from tinygen.train import TrainOptions, Trainer, TrainingError, train

ROOT = Path(__file__).resolve().parent.parent
TEST_N = 200


def tiny_run(runs, model, seed=0, steps=4, **overrides):
    """A real run of `model`'s tiny config, in the folder --train would give it."""
    folder = report.RECIPE_OF[model].folder(runs, seed)
    options = TrainOptions(out=str(folder), seed=seed, max_steps=steps, progress=False, evaluate=False)
    return train(model, options, **{**get_model_class(model).tiny_config, **overrides})


def diverged_run(runs, model, seed):
    """A run of the same tiny recipe whose loss turns NaN at its third step: train.py stops it and writes
    summary.json with "diverged"."""
    m = build_model(model, get_model_class(model).tiny_config, seed=seed)
    real, calls = m.training_step, {"n": 0}

    def step(batch, optimizers):
        calls["n"] += 1
        logs = real(batch, optimizers)
        return {**logs, "loss": float("nan")} if calls["n"] == 3 else logs
    m.training_step = step
    options = TrainOptions(out=str(report.RECIPE_OF[model].folder(runs, seed)), seed=seed, max_steps=4,
                           checkpoint_every=1, progress=False, evaluate=False)
    with pytest.raises(TrainingError, match="non-finite"):
        Trainer(m, options).fit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for seed in range(3):
        tiny_run(runs, "vae", seed)
    tiny_run(runs, "gan", 0)
    diverged_run(runs, "gan", 1)
    return runs


@pytest.fixture
def small_test_split(monkeypatch):
    load = data.load_dataset
    monkeypatch.setattr(data, "load_dataset",
                        lambda name, split: tuple(a[:TEST_N] for a in load(name, split)) if split == "test"
                        else load(name, split))
    monkeypatch.setattr(evaluate, "_test_features", {})


def cells(text, model):
    """The measured table's cells of the row of `model`."""
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return dict(zip(names, [c.strip() for c in line.strip("|").split("|")]))


def test_rows_units_stability_and_a_diverged_run(runs, small_test_split, tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text(report.MARK + "\nan earlier report\n")          # its own file: replaced
    assert main(["report", "--runs", str(runs), "--out", str(out), "--n", "20"]) == 0
    text = out.read_text()
    assert text.splitlines()[0] == report.MARK and "an earlier report" not in text
    vae, gan = cells(text, "vae"), cells(text, "gan")
    assert re.fullmatch(r"[\d.]+ nats/image \(bound\)", vae["likelihood"]), vae
    assert gan["likelihood"] == "—" and re.fullmatch(r"[\d.]+ \(n = 20\)", gan["FID-judge"]), gan
    assert float(vae["images/s"].replace(",", "")) > 0 and vae["training CPU"].endswith(" s")
    k = _threads.count()                                    # what images/s depends on, said with it
    assert f"images/s is the wall time of {report.SPEED_N} images on this machine, on {k} thread" in text

    # the spread: the same bound, evaluate_nll, of each seed's model, computed here on its own
    x_test, _ = data.load_dataset("mnist", "test")
    values = [load_model(runs / name / "last.npz")[0].evaluate_nll(x_test)["iwae_nll_nats"]
              for name in ("vae-mnist", "vae-mnist-seed1", "vae-mnist-seed2")]
    assert len(set(values)) == 3 and vae["likelihood"].startswith(f"{values[0]:.4g} ")
    low, high = report.fmt(min(values), 4), report.fmt(max(values), 4)
    spread = report.fmt(max(values) - min(values))
    assert re.fullmatch(rf"nats/image {low}–{high} over 3 seeds \(spread {spread}, [\d.]+%\); "
                        rf"diverged 0/3, collapsed [0-3]/3", vae["stability"]), vae["stability"]
    # the seeds, a line each, with the figures whose spread that is
    for k, value in enumerate(values):
        folder = "vae-mnist" + (f"-seed{k}" if k else "")
        assert re.search(rf"^\| vae \| `{folder}` \| {k} \| {value:#.4g} nats/image \| "
                         rf"[\d.]+ \| [\d.]+ \| [\d,]+ s \| finished \|$", text, re.M), folder
    assert re.search(r"^\| gan \| `gan-mnist-seed1` \| 1 \| — \| — \| — \| .* \| diverged \|$", text, re.M)

    # the NaN stop of seed 1, counted in the GAN's row; seed 0 evaluated
    assert gan["runs"] == "`gan-mnist`, `gan-mnist-seed1` (diverged)"
    assert re.fullmatch(r"1 seed measured; diverged 1/2, collapsed [01]/1", gan["stability"]), gan["stability"]
    # the course's table: GAN has no likelihood, as the course says; the VAE's is a bound ("fair")
    assert re.search(r"GAN \(gan\): likelihood none against the course's none \(none computed\): agrees", text)
    assert re.search(r"VAE \(vae\): likelihood fair against the course's fair", text)
    assert "stability poor against the course's poor" in text               # a GAN run diverged
    assert "CPU-hours" in text and "pixelcnn 12,887 s" in text


def test_a_run_being_trained_counts_as_neither_diverged_nor_not(runs, small_test_split, tmp_path):
    """A run that has not ended has no outcome: it stays out of both counts of the stability cell."""
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    lock = io.FolderLock.acquire(work / "gan-mnist-seed1")     # seed 1 as if a process trained it now
    try:
        out = tmp_path / "report.md"
        assert main(["report", "--runs", str(work), "--models", "gan", "--n", "20", "--out", str(out)]) == 0
    finally:
        lock.release()
    gan = cells(out.read_text(), "gan")
    assert gan["runs"] == "`gan-mnist`, `gan-mnist-seed1` (being trained now)"
    assert re.fullmatch(r"1 seed measured; diverged 0/1, collapsed [01]/1", gan["stability"]), gan["stability"]


def test_dry_run_prints_the_plan_with_cpu_estimates_and_writes_nothing(runs, tmp_path, capsys):
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    shutil.copytree(work / "vae-mnist", work / "vae-mnist-seed9")     # not a planned folder: not touched
    (work / "vae-mnist-seed2" / "summary.json").unlink()             # what kill -9 leaves: resumed
    summary = json.loads((work / "vae-mnist-seed1" / "summary.json").read_text())   # what Ctrl-C leaves
    (work / "vae-mnist-seed1" / "summary.json").write_text(json.dumps({**summary, "interrupted": "SIGINT",
                                                                       "cpu_seconds": 300.0}))
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    out = tmp_path / "report.md"
    assert main(["report", "--runs", str(work), "--families", "--dry-run", "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    lines = {tuple(line.split()[:4]): line for line in plan.splitlines()[1:]}
    assert "done" in lines[("done", "vae", "seed", "0")] and "finished" in lines[("done", "vae", "seed", "0")]
    vae, gan = report.RECIPE_OF["vae"].cpu_s, report.RECIPE_OF["gan"].cpu_s
    assert re.search(rf"vae-mnist-seed2 +{vae:,.0f} CPU s +unfinished", lines[("resume", "vae", "seed", "2")])
    assert re.search(rf"vae-mnist-seed1 +{vae - 300:,.0f} CPU s +stopped by SIGINT", lines[("resume", "vae", "seed", "1")])
    assert "diverged: not trained again" in lines[("skip", "gan", "seed", "1")]
    dcgan = report.RECIPE_OF["dcgan"].cpu_s
    assert re.search(rf"dcgan-mnist-seed2 +{dcgan:,.0f} CPU s +missing", lines[("train", "dcgan", "seed", "2")])
    cpu = {m: report.RECIPE_OF[m].cpu_s for m in report.FAMILY_MODELS}
    expected = gan + 3 * dcgan + (vae - 300) + vae + 3 * cpu["ddpm"] + 3 * cpu["realnvp"]   # gan seed 2,
    # dcgan, vae 1 and 2, ddpm, realnvp
    assert plan.splitlines()[0] == (f"plan: 12 run(s) to train, expected {expected:,} CPU s = "
                                    f"{expected / 3600:.1f} CPU-hours (docs/results.md's recorded times)")
    assert not out.exists() and sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_a_dry_run_into_a_folder_not_made_yet_plans_every_run(tmp_path, capsys):
    """A newcomer's first look: what --train would train, before any runs folder exists; nothing is made."""
    missing = tmp_path / "runs"
    assert main(["report", "--runs", str(missing), "--families", "--dry-run", "--out", str(tmp_path / "r.md")]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert plan[0].startswith(f"plan: {report.SEEDS * len(report.FAMILY_MODELS)} run(s) to train, expected ")
    assert all(line.split()[0] == "train" and line.endswith("missing") for line in plan[1:]), plan
    assert not missing.exists()


def test_the_ledger_keeps_what_was_measured_when_the_run_folders_are_gone(runs, small_test_split, tmp_path,
                                                                         monkeypatch, capsys):
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    out = tmp_path / "report.md"
    measured = []
    real = report.measure
    monkeypatch.setattr(report, "measure", lambda *a, **k: measured.append(1) or real(*a, **k))
    assert main(["report", "--runs", str(work), "--out", str(out), "--n", "20"]) == 0
    first = {m: cells(out.read_text(), m) for m in ("vae", "gan")}
    ledger = json.loads(out.with_suffix(".json").read_text())
    assert ledger["kind"] == report.LEDGER_KIND and len(measured) == 4       # 3 VAE seeds and the GAN's seed 0
    entries = {e["folder"]: e for e in ledger["runs"].values()}
    assert sorted(entries) == ["gan-mnist", "gan-mnist-seed1", "vae-mnist", "vae-mnist-seed1", "vae-mnist-seed2"]
    assert entries["gan-mnist-seed1"]["status"] == "diverged" and entries["gan-mnist-seed1"]["metrics"] is None
    assert entries["vae-mnist"]["checkpoint_sha256"] == report.checkpoint_sha256(work / "vae-mnist")

    # on another machine: two folders gone, one checkpoint replaced; only that one is evaluated again
    shutil.rmtree(work / "vae-mnist-seed1")
    shutil.rmtree(work / "gan-mnist-seed1")
    shutil.copy(work / "vae-mnist" / "last.npz", work / "vae-mnist-seed2" / "last.npz")
    measured.clear()
    assert main(["report", "--runs", str(work), "--out", str(out), "--n", "20"]) == 0
    assert len(measured) == 1
    text = out.read_text()
    vae, gan = cells(text, "vae"), cells(text, "gan")
    day = entries["vae-mnist-seed1"]["measured"][:10]
    assert vae["runs"] == f"`vae-mnist`, `vae-mnist-seed1` (recorded {day}), `vae-mnist-seed2`"
    assert vae["likelihood"] == first["vae"]["likelihood"]                     # seed 0: the ledger's figure
    figure = lambda folder: re.search(rf"^\| vae \| `{folder}` \| \d \| ([^|]+) \|", text, re.M).group(1)
    assert figure("vae-mnist-seed2") == figure("vae-mnist")                     # seed 2: measured anew
    assert gan["stability"] == first["gan"]["stability"]           # the diverged seed still counts: 1/2
    assert gan["runs"] == f"`gan-mnist`, `gan-mnist-seed1` (diverged, recorded {day})"
    assert re.search(rf"^\| vae \| `vae-mnist-seed1` \| 1 \| .* \| finished, recorded {day} ", text, re.M)

    # --train counts a recorded run as done; at another n the ledger's figures are not this report's
    capsys.readouterr()
    assert main(["report", "--runs", str(work), "--out", str(out), "--n", "20", "--models", "vae", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert re.search(r"done +vae +seed 1 .*recorded in .*report\.json on ", plan) and plan.startswith("plan: 0 run")
    assert main(["report", "--runs", str(work), "--out", str(out), "--n", "30", "--models", "vae", "--dry-run"]) == 0
    assert re.search(r"train +vae +seed 1 .*missing", capsys.readouterr().out)


@pytest.mark.parametrize("ledger, message", [
    ('{"my": "data"}', "is not the ledger of `python -m tinygen report`"),
    ('{"kind": "tinygen-report-ledger", "runs": {"vae-mnist n=2000 seed=0": {"folder": "vae-mnist"}}}',
     "the entry 'vae-mnist n=2000 seed=0' lacks model, dataset, seed, recipe, status"),
])
def test_refuses_a_ledger_it_did_not_write(runs, tmp_path, capsys, ledger, message):
    out = tmp_path / "report.md"
    out.with_suffix(".json").write_text(ledger)
    with pytest.raises(SystemExit) as stop:
        main(["report", "--runs", str(runs), "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert out.with_suffix(".json").read_text() == ledger and not out.exists()


def test_a_failed_training_is_reported_in_the_table(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "report.md"
    # DALL-E's stage (runs/dvae-mnist) is missing: its training fails at once, and is reported, not hidden
    assert main(["report", "--runs", str(runs), "--models", "dalle", "--train", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("plan: 1 run(s) to train, expected 2,597 CPU s")
    assert re.search(r"failed: .*dalle-mnist: --set dvae=.*dvae-mnist/last.npz: no such checkpoint", printed)
    assert re.search(r"\| dalle \| .*`dalle-mnist` \(training failed: --set dvae=", out.read_text())


def test_refuses_to_overwrite_a_file_it_did_not_write(runs, tmp_path, capsys):
    out = tmp_path / "notes.md"
    out.write_text("# my notes\n")
    with pytest.raises(SystemExit) as stop:
        main(["report", "--runs", str(runs), "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "notes.md: the file exists and was not written by `python -m tinygen report`" in err
    assert out.read_text() == "# my notes\n"


@pytest.mark.parametrize("argv, message", [
    (["--runs", "no/such/folder"], r"--runs no/such/folder: no such folder"),
    (["--models", "vae", "resnet"], r"--models resnet: unknown; valid models: ae, "),
    (["--families", "--models", "vae"], r"argument --models: not allowed with argument --families"),
    (["--n", "1"], r"--n: must be >= 2, got 1"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["report", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and re.search(message, err), err


def test_the_recipes_cpu_times_agree_with_results_md():
    results = (ROOT / "docs" / "results.md").read_text()
    for recipe in report.RECIPES:
        assert recipe.source in results, f"{recipe.model}: {recipe.source!r} is not in docs/results.md"
        if recipe.cpu_s is not None:
            figure = re.escape(f"{recipe.cpu_s:,.0f}") + "|" + re.escape(f"{recipe.cpu_s:.0f}")
            assert re.search(rf"(?<![\d,])({figure}) (CPU )?s\b", recipe.source), (recipe.model, recipe.source)
    assert {r.model for r in report.RECIPES} >= set(report.FAMILY_MODELS)
    total, timed, untimed, extra = report.budget()
    assert total == sum(r.cpu_s for r in timed) and timed[0].model == "pixelcnn"
    assert untimed == []   # every recipe has a recorded time


def test_a_stage_recipe_comes_before_the_model_built_on_it():
    order = [r.model for r in report.RECIPES]
    for recipe in report.RECIPES:
        for field, stage in getattr(get_model_class(recipe.model), "stages", {}).items():
            assert field in dict(recipe.settings), f"{recipe.model}: its stage {field} is not named"
            assert order.index(stage) < order.index(recipe.model), (stage, recipe.model)
    assert report.RECIPE_OF["dalle"].command("runs", 1) == (
        "python -m tinygen train dalle --seed 1 --set dvae=runs/dvae-mnist/last.npz --out runs/dalle-mnist-seed1")
    assert json.loads(json.dumps(report.CLAIMS))["GAN"][:4] == ["none", "poor", "good", "good"]


def test_no_likelihood_is_none_only_where_the_course_says_none():
    """A GAN computes no likelihood, as the course says ("none"); a diffusion model without a figure in
    the report is "not measured", not "none": the course gives it one."""
    from types import SimpleNamespace
    stability = lambda: {"seeds": 1, "runs": 1, "evaluated": 1, "diverged": 0, "collapsed": 0}
    row = lambda: SimpleNamespace(measured=SimpleNamespace(metrics={"fid_judge": 40.0, "images_per_s": 9.0}),
                                  stability=stability)
    rated = report.ratings({"GAN": row(), "diffusion": row()})
    assert rated["GAN"]["likelihood"] == ("none", "none computed")
    assert rated["diffusion"]["likelihood"] == (None, "none computed")
