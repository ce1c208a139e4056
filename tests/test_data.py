"""Tests for tinygen.data: loading, integrity checks, downloads, batching, transforms (captions: test_text.py)."""
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tinygen import data
from tinygen.data import DataLoader, DatasetError, DatasetNotFoundError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def fresh_cache():
    """Every test starts and ends with an empty in-memory dataset cache."""
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real data anywhere: empty cache dir, no TINYGEN_DATA, no system folders."""
    monkeypatch.delenv("TINYGEN_DATA", raising=False)
    monkeypatch.delenv("TINYGEN_OFFLINE", raising=False)
    monkeypatch.setenv("TINYGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DIRS", [tmp_path / "system"])
    return tmp_path


def _real_data_root():
    """A folder holding real mnist/ and fashion-mnist/ IDX files, or None."""
    candidates = [os.environ.get("TINYGEN_DATA"), REPO / "shared" / "datasets",
                  REPO.parent / "shared" / "datasets"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def real_root():
    root = _real_data_root()
    if root is None:
        pytest.skip("real MNIST not found: set TINYGEN_DATA to a folder containing mnist/ "
                    "and fashion-mnist/ with the IDX files")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an uncompressed IDX file."""
    magic = 0x0800 | array.ndim
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fake_split(folder: Path, monkeypatch, n=12, split="test", dirname="mnist", seed=0):
    """Write a small synthetic split as .gz files and register their checksums."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(data.SPLIT_FILES[split], (images, labels)):
        raw = idx_bytes(array)
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        monkeypatch.setitem(data.SHA256[dirname], name, hashlib.sha256(raw).hexdigest())
    return images, labels


# --------------------------------------------------------------------- real data


def test_real_test_splits(real_root):
    for name in ("mnist", "fashion"):
        images, labels = data.load_dataset(name, "test", root=real_root)
        assert images.shape == (10000, 1, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (10000,) and labels.dtype == np.int64
        assert labels.min() == 0 and labels.max() == 9
        counts = np.bincount(labels, minlength=10)
        assert counts.min() > 800 and counts.max() < 1200
        assert 20 < images.mean() < 100  # mostly dark background, some ink


def test_real_train_split_and_memory_cache(real_root, monkeypatch):
    monkeypatch.setenv("TINYGEN_DATA", str(real_root))
    images, labels = data.load_mnist("train")
    assert images.shape == (60000, 1, 28, 28) and labels.shape == (60000,)
    again = data.load_dataset("mnist", "train")
    assert again[0] is images and again[1] is labels  # served from memory
    assert not images.flags.writeable


def test_aliases_and_bad_names(real_root):
    a = data.load_dataset("fashion-mnist", "test", root=real_root)
    b = data.load_fashion_mnist("test", root=real_root)
    assert a[0] is b[0]
    with pytest.raises(ValueError, match="mnist"):
        data.load_dataset("cifar10")
    with pytest.raises(ValueError, match="train"):
        data.load_dataset("mnist", "valid")


def test_real_file_with_flipped_byte_fails_checksum(real_root, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in data.SPLIT_FILES["test"]:
        raw = gzip.decompress((real_root / "mnist" / f"{name}.gz").read_bytes())
        (folder / name).write_bytes(raw)  # uncompressed files are accepted too
    labels_file = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels_file.read_bytes())
    raw[100] ^= 0xFF
    labels_file.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*checksum.*expected"):
        data.load_dataset("mnist", "test", root=tmp_path)


# ------------------------------------------------------------- corruption checks


def test_synthetic_split_loads_from_root(tmp_path, monkeypatch, isolated):
    images, labels = write_fake_split(tmp_path / "data" / "mnist", monkeypatch)
    got_images, got_labels = data.load_dataset("mnist", "test", root=tmp_path / "data")
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)


def test_truncated_gzip_is_refused(tmp_path, monkeypatch, isolated):
    folder = tmp_path / "data" / "mnist"
    write_fake_split(folder, monkeypatch)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz.*(truncated|corrupt)"):
        data.load_dataset("mnist", "test", root=folder)


def test_bad_idx_header_is_refused(tmp_path, monkeypatch, isolated):
    folder = tmp_path / "mnist"
    write_fake_split(folder, monkeypatch)
    raw = bytearray(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[3] = 0x01  # magic 2049 (labels) in an images file
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz.*magic number 2049"):
        data.load_dataset("mnist", "test", root=tmp_path)


def test_idx_size_mismatch_is_refused():
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="dimensions"):
        data.parse_idx(raw[:-1], data.IDX_IMAGES_MAGIC)
    with pytest.raises(DatasetError, match="only 5 bytes"):
        data.parse_idx(raw[:5], data.IDX_IMAGES_MAGIC)


# ------------------------------------------------------------ missing / download


def test_missing_everywhere_offline_lists_places(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv("TINYGEN_OFFLINE", "1")
    monkeypatch.setenv("TINYGEN_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        data.load_dataset("fashion", "train", root=tmp_path / "given")
    message = str(info.value)
    for place in (tmp_path / "given" / "fashion-mnist", tmp_path / "env" / "fashion-mnist",
                  tmp_path / "cache" / "fashion-mnist", tmp_path / "system" / "fashion-mnist"):
        assert str(place) in message
    assert "TINYGEN_DATA" in message and "apt-get install dataset-fashion-mnist" in message
    assert "TINYGEN_OFFLINE" in message
    assert isinstance(info.value, FileNotFoundError)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving the folder tmp_path/served; yields its URL."""
    for variable in ("no_proxy", "NO_PROXY"):  # never send local requests through a proxy
        monkeypatch.setenv(variable, "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("progress_bar", [True, False], ids=["tqdm", "no-tqdm"])
def test_download_into_cache(isolated, monkeypatch, http_mirror, progress_bar):
    served, url = http_mirror
    if not progress_bar:
        monkeypatch.setattr(data, "_tqdm", None)  # as if tqdm were not installed
    images, labels = write_fake_split(served, monkeypatch)
    monkeypatch.setitem(data.MIRRORS, "mnist", url)
    got_images, got_labels = data.load_dataset("mnist", "test")
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)
    cached = sorted(p.name for p in (isolated / "cache" / "mnist").iterdir())
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_with_wrong_hash_is_refused(isolated, monkeypatch, http_mirror):
    served, url = http_mirror
    write_fake_split(served, monkeypatch)
    monkeypatch.setitem(data.MIRRORS, "mnist", url)
    monkeypatch.setitem(data.SHA256["mnist"], "t10k-images-idx3-ubyte", "0" * 64)
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz.*expected 0{64}"):
        data.load_dataset("mnist", "test")
    cache = isolated / "cache" / "mnist"
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-trusted left behind


def test_failed_download_explains_how_to_fix(isolated, monkeypatch, http_mirror):
    served, url = http_mirror  # serves an empty folder: every file is a 404
    monkeypatch.setitem(data.MIRRORS, "mnist", url)
    with pytest.raises(DatasetNotFoundError, match="(?s)404.*TINYGEN_DATA.*by hand"):
        data.load_dataset("mnist", "test")


# ---------------------------------------------------------------------- batching


def _loader(n=10, **kwargs):
    x = np.arange(n)
    return DataLoader((x, x * 10), **kwargs)


def test_loader_is_deterministic_and_reshuffles_each_epoch():
    first = [b[0].tolist() for b in _loader(batch_size=3).batches(0)]
    again = [b[0].tolist() for b in _loader(batch_size=3).batches(0)]
    later = [b[0].tolist() for b in _loader(batch_size=3).batches(1)]
    other_seed = [b[0].tolist() for b in _loader(batch_size=3, seed=1).batches(0)]
    assert first == again
    assert first != later and first != other_seed
    expected = np.random.default_rng([0, 0]).permutation(10)[:9].reshape(3, 3)
    assert first == expected.tolist()


def test_loader_iteration_advances_epoch_and_keeps_arrays_aligned():
    loader = _loader(batch_size=4)
    epoch0 = [(x.copy(), y.copy()) for x, y in loader]
    assert loader.epoch == 1 and len(epoch0) == len(loader) == 2
    for x, y in epoch0:
        np.testing.assert_array_equal(y, x * 10)
    epoch1 = [x.tolist() for x, _ in loader]
    assert loader.epoch == 2 and epoch1 == [b[0].tolist() for b in loader.batches(1)]


def test_batches_from_start_is_the_tail_of_the_epoch():
    loader = _loader(n=23, batch_size=4)
    full = [b[0].tolist() for b in loader.batches(5)]
    assert [b[0].tolist() for b in loader.batches(5, start=3)] == full[3:]
    with pytest.raises(ValueError, match="start"):
        loader.batches(0, start=99)


def test_drop_last_both_ways():
    kept = _loader(n=10, batch_size=4, drop_last=False, shuffle=False)
    assert len(kept) == 3
    assert [len(b[0]) for b in kept] == [4, 4, 2]
    assert sorted(np.concatenate([b[0] for b in kept.batches(0)])) == list(range(10))
    dropped = _loader(n=10, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(b[0]) for b in dropped] == [4, 4]


def test_loader_input_errors():
    with pytest.raises(ValueError, match=r"\[5, 6\]"):
        DataLoader((np.zeros(5), np.zeros(6)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader((np.zeros(5),), batch_size=0)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        DataLoader((np.zeros(5),), batch_size=8)


# -------------------------------------------------------------------- transforms


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(64, 1, 28, 28), dtype=np.uint8)


def test_value_ranges(pixels):
    f = data.to_float(pixels)
    s = data.to_signed(pixels)
    assert f.dtype == s.dtype == np.float32
    assert f.min() >= 0 and f.max() <= 1 and s.min() >= -1 and s.max() <= 1
    np.testing.assert_allclose(data.to_signed(np.array([0, 255], np.uint8)), [-1, 1])
    np.testing.assert_allclose(s, data.to_signed(f), atol=1e-6)  # floats in [0, 1] work too
    with pytest.raises(TypeError, match="uint8"):
        data.to_float(np.zeros(3, np.int32))


def test_binarize(pixels):
    b = data.binarize(pixels, np.random.default_rng(1))
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - pixels.mean() / 255) < 0.01
    assert not np.array_equal(b, data.binarize(pixels, np.random.default_rng(2)))
    fixed = data.binarize_fixed(pixels)
    np.testing.assert_array_equal(fixed, (pixels > 127.5).astype(np.float32))


def test_pad_to_32_keeps_dtype(pixels):
    for x in (pixels, data.to_float(pixels)):
        padded = data.pad_to_32(x)
        assert padded.shape == (64, 1, 32, 32) and padded.dtype == x.dtype
        assert padded[..., :2, :].max() == 0 and padded[..., -2:].max() == 0
        np.testing.assert_array_equal(padded[..., 2:30, 2:30], x)


def test_edges():
    constant = np.full((3, 1, 28, 28), 0.7, np.float32)
    np.testing.assert_array_equal(data.edges(constant), 0)
    step = np.zeros((1, 1, 28, 28), np.float32)
    step[..., 14:] = 1.0  # a vertical edge
    e = data.edges(step)
    assert e.shape == step.shape and e.min() >= 0 and e.max() <= 1
    assert e[0, 0, :, 13:15].min() == 1.0 and e[0, 0, :, :12].max() == 0


def test_mask_center(pixels):
    masked = data.mask_center(pixels, size=14)
    assert masked.dtype == pixels.dtype
    assert masked[..., 7:21, 7:21].max() == 0
    np.testing.assert_array_equal(masked[..., :7, :], pixels[..., :7, :])
    assert pixels[..., 7:21, 7:21].max() > 0  # the input is untouched


# ---------------------------------------------------------------------- labels
def test_check_labels():
    np.testing.assert_array_equal(data.check_labels([0, 9]), [0, 9])
    y = data.check_labels(3, n=4)
    assert y.dtype == np.int64 and y.tolist() == [3, 3, 3, 3]
    assert data.check_labels(np.array([2.0, 5.0])).dtype == np.int64  # whole floats are labels too
    with pytest.raises(ValueError, match=r"label: class labels must lie in 0..9, got \[-1, 10\]"):
        data.check_labels([10, 0, -1])
    with pytest.raises(ValueError, match="y: class labels must be integers"):
        data.check_labels([0.5], name="y")
    with pytest.raises(ValueError, match=r"expected one label or 2 labels, got shape \(3,\)"):
        data.check_labels([1, 2, 3], n=2)
    with pytest.raises(ValueError, match=r"0..3"):
        data.check_labels(4, num_classes=4)
    assert data.N_CLASSES == 10


# ------------------------------------------------------------------------ faults that name the culprit
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


DATA_FAULTS = [
    ("dataset-name", lambda tmp: data.load_dataset("cifar"), ValueError, r"unknown dataset 'cifar'"),
    ("dataset-split", lambda tmp: data.load_dataset("mnist", "validation"), ValueError, r"unknown split 'validation'"),
    ("loader-batch-0", lambda tmp: data.DataLoader((np.zeros((4, 1)),), 0), ValueError, r"batch_size must be a positive"),
    ("loader-lengths", lambda tmp: data.DataLoader((np.zeros((4, 1)), np.zeros(3)), 2), ValueError, r"same first dimension"),
    ("dataset-truncated-gzip", lambda tmp: data.load_dataset("mnist", "train", root=_dataset_folder(tmp, _real_images()[:5000])),
     data.DatasetError, r"train-images-idx3-ubyte.gz"),
    ("dataset-garbage-idx", lambda tmp: data.load_dataset("mnist", "train", root=_dataset_folder(tmp, _gzip_of(b"\x00" * 64))),
     data.DatasetError, r"train-images-idx3-ubyte"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in DATA_FAULTS], ids=[c[0] for c in DATA_FAULTS])
def test_library_faults_name_the_culprit(tmp_path, call, error, culprit):
    with pytest.raises(error, match=culprit):
        call(tmp_path)
