"""Datasets: MNIST and Fashion-MNIST, batching, transforms and class names.

Loading
    ``load_dataset("mnist", "test")`` returns ``(images, labels)``: images are uint8 of
    shape (N, 1, 28, 28) with values 0..255, labels are int64 of shape (N,) with values
    0..9. The files are looked for in a few folders (see ``search_dirs``), downloaded
    into a cache folder if they are nowhere to be found, and checked against the
    SHA-256 of their decompressed bytes before use. Loaded arrays are kept in memory,
    so loading the same split twice in one process costs nothing; they are read-only
    so that no caller can change them for everybody else (copy first to edit).

Labels
    ``N_CLASSES`` (10 for both datasets); ``check_labels`` refuses labels outside 0..9 by value.

Batching
    ``DataLoader`` cuts arrays into shuffled mini-batches. The order of every epoch is
    a pure function of ``(seed, epoch)``, so training can be resumed mid-epoch exactly.

Transforms
    Pure, vectorised functions on NumPy arrays (``to_float``, ``to_signed``,
    ``binarize``, ``pad_to_32``, ``edges``, ``mask_center``, ...). Each docstring states
    the value range it expects and the one it returns.

Class names
    ``CLASS_NAMES[dataset][label]``. The captions built from labels and measured image
    attributes, and the word-level tokenizer, are in ``tinygen.text``.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes

try:  # tqdm only draws a progress bar during downloads; everything works without it
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


# --------------------------------------------------------------------------- errors


class DatasetError(Exception):
    """A dataset could not be loaded: missing, corrupt, or failing its checksum."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset files were found nowhere and could not be downloaded."""


# ---------------------------------------------------------------- dataset registry

#: Public names accepted by ``load_dataset`` -> canonical name.
DATASET_ALIASES = {
    "mnist": "mnist",
    "fashion": "fashion",
    "fashion-mnist": "fashion",
    "fashion_mnist": "fashion",
}

#: Canonical name -> folder name used on disk and on the mirrors.
DATASET_DIRS = {"mnist": "mnist", "fashion": "fashion-mnist"}

SPLITS = ("train", "test")

#: Split -> (images file, labels file), without the optional ``.gz`` suffix.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: SHA-256 of the *decompressed* IDX files. Different gzip archives of the same data
#: have different bytes, so the checksum is taken after decompression.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

#: Base URLs of the public mirrors; ``<base><file>.gz`` is downloaded.
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

#: System-wide folders searched last (Debian's ``dataset-fashion-mnist`` installs here).
SYSTEM_DIRS = [Path("/usr/share/datasets")]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"

# (folder name, split, file identities) -> (images, labels)
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def clear_cache():
    """Forget every dataset loaded so far in this process."""
    _CACHE.clear()


# ------------------------------------------------------------------------- finding


def cache_dir() -> Path:
    """The download cache: ``$TINYGEN_CACHE`` if set, else ``~/.cache/tinygen``."""
    override = os.environ.get("TINYGEN_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "tinygen"


def search_dirs(dirname: str, root=None) -> list[Path]:
    """The folders searched for dataset ``dirname`` ("mnist" or "fashion-mnist"), in order.

    1. ``root/<dirname>`` and ``root`` itself, if ``root`` is given;
    2. ``$TINYGEN_DATA/<dirname>``, if the variable is set;
    3. ``<cache_dir()>/<dirname>`` (where downloads go);
    4. ``<d>/<dirname>`` for each ``d`` in ``SYSTEM_DIRS`` (``/usr/share/datasets``).
    """
    places = []
    if root is not None:
        root = Path(root).expanduser()
        places += [root / dirname, root]
    if os.environ.get("TINYGEN_DATA"):
        places.append(Path(os.environ["TINYGEN_DATA"]).expanduser() / dirname)
    places.append(cache_dir() / dirname)
    places += [Path(d) / dirname for d in SYSTEM_DIRS]
    return list(dict.fromkeys(places))  # drop duplicates, keep the order


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (uncompressed first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(places: list[Path], split: str) -> list[Path] | None:
    """The (images, labels) paths in the first folder that holds both, else None."""
    for folder in places:
        paths = [_find_file(folder, name) for name in SPLIT_FILES[split]]
        if all(paths):
            return paths
    return None


# ------------------------------------------------------------------------- reading


def _decompress(data: bytes, source) -> bytes:
    """Gunzip ``data`` if it is gzip (detected by its magic bytes), else return it as is."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise DatasetError(f"{source}: corrupt or truncated gzip data ({error})") from error


def _check_sha256(raw: bytes, source, expected: str):
    """Raise DatasetError unless the SHA-256 of ``raw`` equals ``expected``."""
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DatasetError(
            f"{source}: checksum mismatch, the file is corrupt or not the expected one "
            f"(sha256 of the decompressed bytes: expected {expected}, got {actual}); "
            "delete it so that a good copy is found or downloaded"
        )


def parse_idx(raw: bytes, magic: int, source="<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes into a uint8 array.

    Layout: a big-endian int32 magic number (2051 for images, 2049 for labels; its low
    byte is the number of dimensions), one big-endian int32 per dimension, then the
    data, one byte per value in C order.
    """
    ndim = magic & 0xFF
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DatasetError(f"{source}: bad IDX header, file is only {len(raw)} bytes long")
    header = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if header[0] != magic:
        raise DatasetError(
            f"{source}: bad IDX header, magic number {int(header[0])} (expected {magic})"
        )
    shape = tuple(int(d) for d in header[1:])
    expected_size = header_size + math.prod(shape)
    if min(shape) < 0 or len(raw) != expected_size:
        raise DatasetError(
            f"{source}: bad IDX header, dimensions {shape} need {expected_size} bytes "
            f"but the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_idx(path: Path, expected_sha256: str, magic: int) -> np.ndarray:
    """Read, decompress, parse and checksum one IDX file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error})") from error
    raw = _decompress(data, path)
    array = parse_idx(raw, magic, path)
    _check_sha256(raw, path, expected_sha256)
    return array


def _file_identity(path: Path) -> tuple:
    """What makes a loaded file reusable from the cache: its path, size and mtime."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _read_split(dirname: str, split: str, paths: list[Path]):
    """Read and cross-check the images and labels files of one split."""
    images_name, labels_name = SPLIT_FILES[split]
    images = _read_idx(paths[0], SHA256[dirname][images_name], IDX_IMAGES_MAGIC)
    labels = _read_idx(paths[1], SHA256[dirname][labels_name], IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels"
        )
    images = images.reshape(len(images), 1, *images.shape[1:])
    labels = labels.astype(np.int64)
    for array in (images, labels):
        array.flags.writeable = False
    return images, labels


# --------------------------------------------------------------------- downloading


class _NoProgress:
    """Stand-in for a tqdm bar when tqdm is not installed."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def _progress_bar(total, desc):
    if _tqdm is None:
        return _NoProgress()
    # disable=None: draw only when writing to a terminal
    return _tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, disable=None)


def _fetch(url: str, timeout: float) -> bytes:
    """The body of ``url``, with a progress bar when tqdm is installed."""
    chunks = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with _progress_bar(total, url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def _download_file(url: str, dest: Path, expected_sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, after checking the SHA-256 of its decompressed bytes.

    The file is verified in memory and then written atomically, so an interrupted or
    wrong download never leaves behind a file that a later run would trust.
    """
    data = _fetch(url, timeout)
    _check_sha256(_decompress(data, url), url, expected_sha256)
    atomic_write_bytes(dest, data)
    return dest


def _offline() -> bool:
    return os.environ.get("TINYGEN_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _not_found_message(dirname: str, split: str, places: list[Path], reason: str) -> str:
    """A DatasetNotFoundError message: what was searched, why no download, how to fix it."""
    wanted = ", ".join(f"{name}[.gz]" for name in SPLIT_FILES[split])
    target = cache_dir() / dirname
    all_files = [name for pair in SPLIT_FILES.values() for name in pair]
    lines = [f"Could not find the {dirname} {split} split ({wanted}).", "Searched:"]
    lines += [f"  - {place}" for place in places]
    lines += [f"Download: {reason}.", "To fix, do one of:"]
    lines.append(f"  * set TINYGEN_DATA to a folder that contains '{dirname}/' with the IDX files;")
    if dirname == "fashion-mnist":
        lines.append("  * apt-get install dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist);")
    lines.append(f"  * download these 4 files by hand into {target}:")
    lines += [f"      {MIRRORS[dirname]}{name}.gz" for name in all_files]
    return "\n".join(lines)


def _download_split(dirname: str, split: str, places: list[Path]) -> list[Path]:
    """Download the two files of ``split`` into the cache, or explain why not."""
    if _offline():
        reason = "disabled by TINYGEN_OFFLINE"
        raise DatasetNotFoundError(_not_found_message(dirname, split, places, reason))
    paths = []
    for name in SPLIT_FILES[split]:
        url = f"{MIRRORS[dirname]}{name}.gz"
        dest = cache_dir() / dirname / f"{name}.gz"
        try:
            paths.append(_download_file(url, dest, SHA256[dirname][name]))
        except OSError as error:  # urllib.error.URLError is an OSError
            reason = f"fetching {url} failed ({error})"
            message = _not_found_message(dirname, split, places, reason)
            raise DatasetNotFoundError(message) from error
    return paths


# ------------------------------------------------------------------------- loading


def _canonical_name(name: str) -> str:
    key = str(name).lower()
    if key not in DATASET_ALIASES:
        valid = ", ".join(repr(n) for n in DATASET_ALIASES)
        raise ValueError(f"unknown dataset {name!r}; valid names are {valid}")
    return DATASET_ALIASES[key]


def load_dataset(name: str, split: str = "train", root=None) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST as ``(images, labels)``.

    Args:
        name: "mnist", or "fashion" (also "fashion-mnist", "fashion_mnist").
        split: "train" (60,000 examples) or "test" (10,000 examples).
        root: optional folder searched first; either the dataset folder itself or its
            parent (see ``search_dirs`` for the full search order).

    Returns:
        images: read-only uint8 array (N, 1, 28, 28), values 0..255 (0 = background).
        labels: read-only int64 array (N,), values 0..9 (see ``CLASS_NAMES``).

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the files are nowhere and downloading is disabled or fails.
        DatasetError: a file is corrupt, truncated, or fails its SHA-256 check.
    """
    dirname = DATASET_DIRS[_canonical_name(name)]
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(map(repr, SPLITS))}")
    places = search_dirs(dirname, root)
    paths = _locate(places, split) or _download_split(dirname, split, places)
    key = (dirname, split, tuple(_file_identity(p) for p in paths))
    if key not in _CACHE:
        _CACHE[key] = _read_split(dirname, split, paths)
    return _CACHE[key]


def load_mnist(split: str = "train", root=None):
    """``load_dataset("mnist", split, root)``: handwritten digits."""
    return load_dataset("mnist", split, root)


def load_fashion_mnist(split: str = "train", root=None):
    """``load_dataset("fashion", split, root)``: Zalando clothing articles."""
    return load_dataset("fashion", split, root)


# -------------------------------------------------------------------------- labels

#: The number of classes of both datasets (digits 0..9, ten kinds of article).
N_CLASSES = 10


def train_subset(images, labels, n: int, seed: int = 0):
    """The first n images (and labels) of one fixed shuffle of a split, in their original order: the same
    subset whatever the training seed, and a smaller n a part of a larger one, so that runs over n differ
    in the amount of data alone. A ValueError names --train-size when n is not in 1..len(images)."""
    if not 1 <= n <= len(images):
        raise ValueError(f"--train-size {n}: the train split has {len(images)} images; give 1..{len(images)}")
    pick = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return images[pick], labels[pick]


def check_labels(labels, n=None, num_classes: int = N_CLASSES, name: str = "label") -> np.ndarray:
    """Class labels as an int64 array, refused with a message naming ``name`` unless every one is an
    integer in 0..num_classes-1. With ``n``, one label is repeated n times and an array must have n."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise ValueError(f"{name}: class labels must be integers in 0..{num_classes - 1}, got {labels!r}")
    y = y.astype(np.int64)
    if n is not None:
        if y.ndim > 1 or (y.ndim == 1 and len(y) != n):
            raise ValueError(f"{name}: expected one label or {n} labels, got shape {y.shape}")
        y = np.broadcast_to(y, (n,))
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = np.unique(y[(y < 0) | (y >= num_classes)])
        raise ValueError(f"{name}: class labels must lie in 0..{num_classes - 1}, got {bad.tolist()}")
    return y


# ------------------------------------------------------------------------ batching


class DataLoader:
    """Iterate over mini-batches of equally long arrays, in a reproducible order.

    The order of epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)``
    (or ``0..n-1`` without shuffling), so any batch of any epoch can be recomputed
    from ``(seed, epoch, batch index)`` alone: ``batches(epoch, start)`` resumes an
    interrupted epoch exactly.

    Iterating over the loader yields the batches of epoch ``self.epoch`` and then
    increments ``self.epoch``; a loop that stops early does not advance it.

    Example:
        >>> loader = DataLoader((images, labels), batch_size=128)
        >>> for x, y in loader:  # one epoch
        ...     pass
    """

    def __init__(self, arrays, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True):
        if isinstance(arrays, np.ndarray):
            arrays = (arrays,)
        self.arrays = tuple(arrays)
        if not self.arrays:
            raise ValueError("DataLoader needs at least one array")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"all arrays must have the same first dimension, got lengths {lengths}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n = lengths[0]
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(
                f"no batches: {self.n} examples are fewer than batch_size={self.batch_size} "
                "with drop_last=True"
            )

    def __len__(self) -> int:
        """The number of batches per epoch."""
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)  # ceiling division

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of ``epoch``, in the order they are served."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)

    def batches(self, epoch: int, start: int = 0):
        """Yield the batches of ``epoch`` from batch index ``start`` on, as tuples of arrays."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in 0..{len(self)}, got {start}")
        return self._generate(self.order(epoch), start)

    def _generate(self, order: np.ndarray, start: int):
        size = self.batch_size
        for b in range(start, len(self)):
            index = order[b * size:(b + 1) * size]
            yield tuple(a[index] for a in self.arrays)

    def __iter__(self):
        yield from self.batches(self.epoch)
        self.epoch += 1


# ---------------------------------------------------------------------- transforms


def _unit_float(x) -> np.ndarray:
    """Images as float32 in [0, 1]: uint8 is divided by 255, floats are taken as they are."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise TypeError(f"expected uint8 images (0..255) or float images in [0, 1], got dtype {x.dtype}")


def to_float(x) -> np.ndarray:
    """uint8 images (0..255) -> float32 in [0, 1]. Float input is assumed in [0, 1]."""
    return _unit_float(x)


def to_signed(x) -> np.ndarray:
    """uint8 images (0..255) or floats in [0, 1] -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return _unit_float(x) * np.float32(2) - np.float32(1)


def binarize(x, rng: np.random.Generator) -> np.ndarray:
    """Dynamic binarisation: each pixel is 1 with probability pixel/255, else 0.

    Input uint8 (0..255) or float in [0, 1]; output float32 in {0, 1}. A fresh sample is
    drawn at every call, which acts as data augmentation for Bernoulli-likelihood models.
    """
    p = _unit_float(x)
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)


def binarize_fixed(x, threshold: float = 0.5) -> np.ndarray:
    """Deterministic binarisation: 1 where pixel > threshold (on the [0, 1] scale), else 0.

    Input uint8 (0..255) or float in [0, 1]; output float32 in {0, 1}.
    """
    return (_unit_float(x) > threshold).astype(np.float32)


def pad_to_32(x) -> np.ndarray:
    """Pad (..., 28, 28) images with 2 zero pixels per side to (..., 32, 32).

    Keeps the dtype (works for uint8 and floats). 32 = 2**5 halves cleanly five times,
    which convolutional encoders and U-Nets like.
    """
    x = np.asarray(x)
    if x.shape[-2:] != (28, 28):
        raise ValueError(f"expected images of size 28x28 in the last two axes, got shape {x.shape}")
    widths = [(0, 0)] * (x.ndim - 2) + [(2, 2), (2, 2)]
    return np.pad(x, widths)


def edges(x) -> np.ndarray:
    """Sobel edge magnitude of float images in [0, 1], as float32 in [0, 1].

    Works on (..., H, W). The borders are extended by replicating the outermost pixels,
    so a constant image has no edges anywhere. The magnitude is divided by 4, the
    response of a full-contrast (0 -> 1) straight edge, and clipped to [0, 1].
    """
    x = _unit_float(x)
    widths = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(x, widths, mode="edge")
    H, W = x.shape[-2:]

    def shifted(dy, dx):  # p shifted by (dy, dx) in -1..1, cropped back to H x W
        return p[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    # right minus left and bottom minus top, weighted 1-2-1 across; pairing the
    # differences first makes a flat region exactly 0 in floating point
    gx = ((shifted(-1, 1) - shifted(-1, -1)) + 2 * (shifted(0, 1) - shifted(0, -1))
          + (shifted(1, 1) - shifted(1, -1)))
    gy = ((shifted(1, -1) - shifted(-1, -1)) + 2 * (shifted(1, 0) - shifted(-1, 0))
          + (shifted(1, 1) - shifted(-1, 1)))
    return np.clip(np.sqrt(gx * gx + gy * gy) / 4, 0, 1).astype(np.float32)


def mask_center(x, size: int = 14, value=0) -> np.ndarray:
    """A copy of (..., H, W) images with a centred ``size`` x ``size`` square set to ``value``.

    Keeps the dtype and value range of the input (``value`` 0 is black in [0, 1], in
    0..255, and is the middle grey in [-1, 1]; pass -1 for black there).
    """
    x = np.array(x, copy=True)
    H, W = x.shape[-2:]
    if not 0 <= size <= min(H, W):
        raise ValueError(f"mask size must be in 0..{min(H, W)}, got {size}")
    top, left = (H - size) // 2, (W - size) // 2
    x[..., top:top + size, left:left + size] = value
    return x


# --------------------------------------------------------------------- class names

#: The words for labels 0..9 (the captions and prompts of ``tinygen.text`` use them). Fashion-MNIST's
#: official "T-shirt/top" is written "t-shirt".
CLASS_NAMES = {
    "mnist": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fashion": ["t-shirt", "trouser", "pullover", "dress", "coat",
                "sandal", "shirt", "sneaker", "bag", "ankle boot"],
}
