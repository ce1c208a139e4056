"""Tests for tinygen.io: checkpoints, atomic writes, image grids, GIFs and scatter plots."""
import json
import os
import re
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygen import io as tio
from tinygen.io import CheckpointError

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {
        "encoder.w": rng.standard_normal((4, 3)).astype(np.float32),
        "encoder.b": np.zeros(3, np.float32),
        "step": np.array(7, np.int64),
        "mask": np.array([True, False]),
        "file": np.arange(5, dtype=np.uint8),  # a name np.savez could not take
    }


def _assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        np.testing.assert_array_equal(a[name], b[name])


# ----------------------------------------------------------------------- checkpoints


def test_round_trip(tmp_path, arrays):
    meta = {"epoch": 3, "lr": np.float32(0.5), "config": {"model": "vae", "dims": [1, 2]}}
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, meta)
    loaded, loaded_meta = tio.load_checkpoint(path)
    _assert_same(arrays, loaded)
    assert loaded_meta == {"epoch": 3, "lr": 0.5, "config": {"model": "vae", "dims": [1, 2]}}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left over


def test_meta_is_json_and_loads_without_pickle(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, {"a": 1})
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["__meta__"].tobytes())
    assert header["version"] == tio.CHECKPOINT_VERSION and len(header["sha256"]) == 64


def test_objects_that_look_like_cupy_arrays_are_fetched(tmp_path):
    class FakeDeviceArray:
        def get(self):
            return np.arange(3.0)

    tio.save_checkpoint(tmp_path / "c.npz", {"x": FakeDeviceArray()}, {})
    np.testing.assert_array_equal(tio.load_checkpoint(tmp_path / "c.npz")[0]["x"], [0, 1, 2])


def test_failed_write_keeps_old_file(tmp_path, arrays, monkeypatch):
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, {"version": "old"})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        tio.save_checkpoint(path, {"x": np.ones(3)}, {"version": "new"})
    with pytest.raises(OSError):
        tio.atomic_write_text(tmp_path / "notes.txt", "never written")
    monkeypatch.undo()
    loaded, meta = tio.load_checkpoint(path)
    assert meta == {"version": "old"}
    _assert_same(arrays, loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


def test_missing_and_non_zip_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.npz.*no such"):
        tio.load_checkpoint(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz"):
        tio.load_checkpoint(tmp_path / "text.npz")
    np.save(tmp_path / "bare.npy", np.ones(3))
    with pytest.raises(CheckpointError, match="bare.npy.*not an .npz"):
        tio.load_checkpoint(tmp_path / "bare.npy")


def test_truncated_file(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, {})
    data = path.read_bytes()
    for length in (len(data) // 2, len(data) - 10):
        path.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="ckpt.npz"):
            tio.load_checkpoint(path)


def test_flipped_bytes_anywhere_are_detected(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, {"k": "v"})
    data = path.read_bytes()
    for position in range(0, len(data), 5):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x55
        path.write_bytes(bytes(corrupt))
        try:
            loaded, meta = tio.load_checkpoint(path)
        except CheckpointError as error:
            assert "ckpt.npz" in str(error)
        else:  # a flip in a byte zip readers ignore: the content must be intact
            _assert_same(arrays, loaded)
            assert meta == {"k": "v"}


def _rewrite_member(path, name, array):
    """Replace one .npy member of an .npz (keeping its CRC valid), as tampering would."""
    with zipfile.ZipFile(path) as archive:
        members = {m: archive.read(m) for m in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            if member == f"{name}.npy":
                with archive.open(member, "w") as out:
                    np.lib.format.write_array(out, array)
            else:
                archive.writestr(member, content)


def test_tampered_array_fails_checksum(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    tio.save_checkpoint(path, arrays, {})
    _rewrite_member(path, "encoder.b", np.ones(3, np.float32))
    with pytest.raises(CheckpointError, match="ckpt.npz.*checksum"):
        tio.load_checkpoint(path)


def test_missing_meta_and_wrong_version(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(2))
    with pytest.raises(CheckpointError, match="plain.npz.*__meta__"):
        tio.load_checkpoint(tmp_path / "plain.npz")
    path = tmp_path / "future.npz"
    tio.save_checkpoint(path, {"x": np.ones(2)}, {})
    with np.load(path) as npz:
        header = json.loads(npz["__meta__"].tobytes())
    header["version"] = 99
    _rewrite_member(path, "__meta__", np.frombuffer(json.dumps(header).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="future.npz.*version 99"):
        tio.load_checkpoint(path)


def test_bad_inputs_to_save(tmp_path):
    with pytest.raises(ValueError, match="__meta__"):
        tio.save_checkpoint(tmp_path / "c.npz", {"__meta__": np.ones(1)}, {})
    with pytest.raises(TypeError, match="object"):
        tio.save_checkpoint(tmp_path / "c.npz", {"x": np.array([None])}, {})
    with pytest.raises(TypeError, match="JSON"):
        tio.save_checkpoint(tmp_path / "c.npz", {"x": np.ones(1)}, {"f": object()})
    assert not list(tmp_path.iterdir())


def test_atomic_text_and_bytes(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    tio.atomic_write_text(path, '{"loss": 1}')
    tio.atomic_write_text(path, '{"loss": 0.5}')
    assert path.read_text() == '{"loss": 0.5}'
    tio.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


# ----------------------------------------------------------------------- pictures


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), nrow=st.one_of(st.none(), st.integers(1, 8)),
       padding=st.integers(0, 3), channels=st.sampled_from([None, 1, 3]))
def test_grid_shape(n, nrow, padding, channels):
    shape = (n, 5, 7) if channels is None else (n, channels, 5, 7)
    grid = tio.make_grid(np.full(shape, 0.5), nrow=nrow, padding=padding)
    per_row = nrow or int(np.ceil(np.sqrt(n)))
    rows = -(-n // per_row)
    expected = (rows * (5 + padding) + padding, per_row * (7 + padding) + padding)
    assert grid.shape == (expected if channels != 3 else expected + (3,))
    assert grid.dtype == np.uint8


def test_grid_places_images_in_row_major_order():
    images = np.stack([np.full((2, 2), v) for v in (0.0, 0.25, 0.5, 1.0, 2.0)])  # 2.0 clips
    grid = tio.make_grid(images, nrow=2, padding=1, pad_value=0.0)
    assert grid.shape == (10, 7)
    assert grid[1, 1] == 0 and grid[1, 4] == 64 and grid[4, 1] == 128 and grid[4, 4] == 255
    assert grid[7, 1] == 255 and grid[7, 4] == 0  # last image, then a blank filler
    assert grid[0].max() == 0 and grid[:, 0].max() == 0  # padding
    with pytest.raises(ValueError, match="C in"):
        tio.make_grid(np.zeros((2, 2, 4, 4)))


def test_png_grid(tmp_path):
    path = tmp_path / "grid.png"
    tio.save_image_grid(np.random.default_rng(0).random((10, 1, 28, 28)), path, nrow=5, scale=2)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (2 * (5 * 30 + 2), 2 * (2 * 30 + 2))


def test_gif(tmp_path):
    path = tmp_path / "samples.gif"
    frames = [np.full((4, 1, 8, 8), t / 4) for t in range(5)]
    tio.save_gif(frames, path, duration_ms=50, scale=3)
    with Image.open(path) as image:
        assert image.format == "GIF" and image.n_frames == 5
        assert image.size == (3 * (2 * 10 + 2), 3 * (2 * 10 + 2))


def test_scatter(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.standard_normal((500, 2))
    points[0] = np.nan  # skipped
    path = tmp_path / "latent.png"
    tio.save_scatter(points, rng.integers(0, 10, 500), path, size=300)
    with Image.open(path) as image:
        assert image.size == (300, 300)
        pixels = np.asarray(image.convert("RGB"))
    colours = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert sum(tuple(c) in colours for c in tio.PALETTE) == 10
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        tio.save_scatter(np.zeros((3, 3)), np.zeros(3), tmp_path / "bad.png")


# ----------------------------------------------------------------------- what atomic_open would refuse, found first


def test_unwritable_reason_finds_what_atomic_open_would_fail_on(tmp_path):
    assert tio.unwritable_reason(tmp_path / "new" / "deeper" / "x.png") is None      # atomic_open makes folders
    assert tio.unwritable_reason(tmp_path / "x.png") is None
    (tmp_path / "file").write_text("mine")
    assert "is a file, not a folder" in tio.unwritable_reason(tmp_path / "file" / "x.png")
    assert "is a file, not a folder" in tio.unwritable_reason(tmp_path / "file" / "sub" / "x.png")
    os.mkfifo(tmp_path / "fifo.png")
    assert "not a regular file" in tio.unwritable_reason(tmp_path / "fifo.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere")
    assert "not a regular file" in tio.unwritable_reason(tmp_path / "dangling.png")
    fits = "x" * 250 + ".png"                 # 254 bytes fit; with ".<name>.<12 hex>.tmp" they do not
    assert "more than the 255" in tio.unwritable_reason(tmp_path / fits)
    assert "more than the 255" in tio.unwritable_reason(tmp_path / ("d" * 256) / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.png", "fifo.png", "file"]  # nothing left


def test_folder_lock_names_its_holder_and_is_taken_over_when_left_by_a_dead_one(tmp_path):
    lock = tio.FolderLock.acquire(tmp_path)
    record = json.loads((tmp_path / tio.FolderLock.NAME).read_text())
    assert record["pid"] == os.getpid() and record["started"] and lock.previous is None
    with pytest.raises(tio.FolderLocked, match=rf"in use by process {os.getpid()} \(started {re.escape(record['started'])}\)"):
        tio.FolderLock.acquire(tmp_path)
    lock.release()
    assert not (tmp_path / tio.FolderLock.NAME).exists()
    # what kill -9 leaves: the file, its holder's record, no flock (the kernel dropped it)
    (tmp_path / tio.FolderLock.NAME).write_text(json.dumps({"pid": 999999999, "started": "2026-01-01T00:00:00"}))
    lock = tio.FolderLock.acquire(tmp_path)
    assert lock.previous == {"pid": 999999999, "started": "2026-01-01T00:00:00"}
    assert tio.FolderLock.describe(lock.previous) == "process 999999999 (started 2026-01-01T00:00:00)"
    lock.release()


# ----------------------------------------------------------------------- faults that name the culprit
CHECKPOINT_FAULTS = [
    ("checkpoint-missing", lambda tmp: tio.load_checkpoint(tmp / "none.npz"), tio.CheckpointError, r"no such checkpoint file"),
    ("checkpoint-not-zip", lambda tmp: (tmp.joinpath("a.npz").write_text("hello"), tio.load_checkpoint(tmp / "a.npz")),
     tio.CheckpointError, r"unreadable or truncated"),
    ("checkpoint-npy", lambda tmp: (np.save(tmp / "a.npy", np.ones(2)), tio.load_checkpoint(tmp / "a.npy")),
     tio.CheckpointError, r"an .npy array"),
    ("checkpoint-plain-npz", lambda tmp: (np.savez(tmp / "p.npz", w=np.ones(2)), tio.load_checkpoint(tmp / "p.npz")),
     tio.CheckpointError, r"not a tinygen checkpoint"),
    ("checkpoint-sample-file", lambda tmp: (tio.save_checkpoint(tmp / "s.npz", {"images": np.zeros((1, 1, 2, 2))},
                                                               {"kind": "tinygen-samples", "model": "vae"}),
                                            __import__("tinygen.models").models.load_model(tmp / "s.npz", "vae")),
     tio.CheckpointError, r"not a training checkpoint"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in CHECKPOINT_FAULTS], ids=[c[0] for c in CHECKPOINT_FAULTS])
def test_library_faults_name_the_culprit(tmp_path, call, error, culprit):
    with pytest.raises(error, match=culprit):
        call(tmp_path)


def test_stale_temporaries_are_found_by_their_pattern_only(tmp_path):
    (tmp_path / ".last.npz.0123456789ab.tmp").write_bytes(b"x")
    (tmp_path / ".last.npz.tmp").write_bytes(b"keep")          # not a name atomic_open gives
    (tmp_path / "last.npz").write_bytes(b"keep")
    assert [p.name for p in tio.remove_stale_temporaries(tmp_path)] == [".last.npz.0123456789ab.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.npz.tmp", "last.npz"]


def test_line_plots_with_a_log_y_panel(tmp_path):
    """log_y puts a panel's y on a log scale: a curve 10x above another no longer flattens it, and
    values <= 0 are left out of that panel (not drawn, no error)."""
    from PIL import Image
    xs = [10, 20, 50]
    panels = [("FID", {"works": (xs, [20.0, 19.0, 18.0]), "fails": (xs, [1600.0, 1650.0, 0.0])}),
              ("accuracy", {"works": (xs, [0.9, 0.95, 0.96]), "fails": (xs, [0.1, 0.1, 0.1])})]
    linear, log = tmp_path / "linear.png", tmp_path / "log.png"
    tio.save_line_plots(panels, linear, log_x=True, text={"tinygen": "test"})
    tio.save_line_plots(panels, log, log_x=True, text={"tinygen": "test"}, log_y=(0,))
    a, b = np.asarray(Image.open(linear)), np.asarray(Image.open(log))
    assert a.shape == b.shape
    half = a.shape[1] // 2
    assert (a[:, :half] != b[:, :half]).any()          # the FID panel changed
    np.testing.assert_array_equal(a[:, half:], b[:, half:])   # the accuracy panel did not
    assert Image.open(log).text["tinygen"] == "test"
