"""Files: checkpoints, atomic writes, and pictures (image grids, GIFs, scatter plots).

Checkpoints
    ``save_checkpoint`` stores named arrays and a JSON-able ``meta`` dict in one
    ``.npz`` file (a zip of ``.npy`` files) plus a ``__meta__`` entry holding JSON text
    as uint8 bytes, so loading never needs ``allow_pickle``. The stored JSON carries a
    format version and a SHA-256 over every array, so ``load_checkpoint`` can refuse a
    corrupt file instead of returning wrong weights.

Atomic writes
    Every file here is written to a temporary file in the target folder, flushed to
    disk, and renamed over the target with ``os.replace``. A crash (or a full disk)
    mid-write leaves the previous version untouched: readers see the old file or the
    new one, never half of one.

Run-folder locks
    ``FolderLock.acquire(folder)`` makes one process at a time the writer of a run folder: two trainers
    in one folder delete each other's temporary files and send the checkpoint backwards. The lock file
    names its holder (pid, start time, command); the kernel drops the lock when its holder dies, so a
    lock left by kill -9 is taken over (the caller says so).

Pictures
    ``make_grid`` tiles a batch of images into one uint8 picture; ``save_image_grid``,
    ``save_gif``, ``save_scatter`` and ``save_line_plots`` write PNG and GIF files with Pillow.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import sys
import zipfile
import zlib
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to an exclusive create and a pid check
    fcntl = None

import numpy as np

CHECKPOINT_FORMAT = "tinygen-checkpoint"
CHECKPOINT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or fails its integrity check."""


# --------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_open(path):
    """Open a temporary binary file that replaces ``path`` when the block succeeds.

    The temporary file lives in the same folder (``os.replace`` is only atomic within
    one file system) and is flushed and fsynced before the rename. On an exception it
    is deleted and ``path`` is left as it was. Missing parent folders are created.

    Example:
        >>> with atomic_open("metrics.json") as f:
        ...     f.write(b"{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    # O_EXCL: never reuse an existing file; mode 0o666 minus the umask, like open() does
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_path(path) -> Path:
    """The temporary file atomic_open writes before renaming it to `path`: .<name>.<12 hex digits>.tmp"""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def unwritable_reason(path) -> str | None:
    """Why atomic_open(path) would fail, found before any work is done (None: it would succeed). The
    folders it would make must be makeable, the file must be a regular file or absent (opening a FIFO
    blocks), and the name with its temporary suffix must fit the file system's NAME_MAX. Where the folder
    exists, a temporary file of that very name is made and deleted at once, which also finds read-only
    file systems and folders only the kernel writes to."""
    path = Path(path)
    folder, missing = path.parent, []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder.name)
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if os.path.lexists(path) and not (path.exists() and stat.S_ISREG(os.stat(path).st_mode)):
        return "is not a regular file (a FIFO, a device, a socket or a broken link); give a file name"
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows): the common limit
        name_max = 255
    temporary = temporary_path(path)
    for name in [*missing, temporary.name]:
        if len(name.encode()) > name_max:
            return (f"the name {name[:24]}... is {len(name.encode())} bytes long (with the temporary file's "
                    f"suffix, where it applies), more than the {name_max} this file system takes")
    if missing:
        return None if os.access(folder, os.W_OK | os.X_OK) else f"the folder {folder} is not writable"
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(temporary)
    except OSError as error:
        return f"cannot write in {folder} ({error.strerror})"
    return None


_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # the names atomic_open gives its temporary files


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files that ``atomic_open`` left in ``folder`` when its process was killed
    mid-write (kill -9 skips the clean-up); returns them. Call it only on a folder this process owns
    (a run folder at the start of a run), never while another process may be writing there."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if p.is_file() and _TEMPORARY.match(p.name)] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` atomically (old content survives a failed write)."""
    with atomic_open(path) as file:
        file.write(data)


def atomic_write_text(path, text: str, encoding: str = "utf-8"):
    """Write ``text`` to ``path`` atomically (old content survives a failed write)."""
    atomic_write_bytes(path, text.encode(encoding))


# ------------------------------------------------------------------------- run-folder locks


class FolderLocked(RuntimeError):
    """Another process holds the lock of a run folder (the message names it)."""


class FolderLock:
    """The lock of a run folder: the file ``<folder>/.tinygen.lock``, locked with flock(2) while held and
    holding the holder's pid, start time and command (JSON) for the message a second process gets.

        lock = FolderLock.acquire(folder)    # FolderLocked if another live process holds it
        lock.previous                        # the record of a dead holder it took over, or None
        lock.release()
    """
    NAME = ".tinygen.lock"

    def __init__(self, path, fd, previous):
        self.path, self.fd, self.previous = path, fd, previous

    @classmethod
    def acquire(cls, folder):
        path = Path(folder) / cls.NAME
        if fcntl is None:
            return cls._acquire_without_flock(path)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: by a live process, since the kernel drops the locks of dead ones
                holder = cls._read(fd)
                os.close(fd)
                raise FolderLocked(f"{folder} is in use by {cls.describe(holder)}; wait for it to finish or "
                                   f"stop it (kill -INT {holder.get('pid', '?')} saves and stops), or "
                                   f"choose another --out") from None
            # the holder may have released (and deleted) the file between our open and flock: then we
            # locked a file no longer in the folder, so try again with the one there now
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = cls._read(fd) or None  # a holder that died without releasing (kill -9, power cut)
        cls._write(fd)
        return cls(path, fd, previous)

    @classmethod
    def _acquire_without_flock(cls, path):
        previous = None
        for _ in range(2):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = json.loads(path.read_text() or "{}")
                if _pid_alive(holder.get("pid")):
                    raise FolderLocked(f"{path.parent} is in use by {cls.describe(holder)}; choose another "
                                       f"--out or wait for it to finish") from None
                previous = holder
                path.unlink(missing_ok=True)
                continue
            cls._write(fd)
            return cls(path, fd, previous)
        raise FolderLocked(f"{path.parent}: could not take the lock {path}")

    @staticmethod
    def _read(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {"pid": "?", "note": "unreadable lock file"}

    @staticmethod
    def _write(fd):
        record = {"pid": os.getpid(), "started": datetime.datetime.now(datetime.timezone.utc)
                  .isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)

    @staticmethod
    def describe(record):
        return f"process {record.get('pid', '?')} (started {record.get('started', '?')})"

    def release(self):
        """Delete the lock file, then drop the lock (in that order: see acquire's inode check)."""
        if self.fd is None:
            return
        Path(self.path).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def _pid_alive(pid):
    """Whether a process `pid` exists (without flock, the only sign that a lock is held)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True


# ----------------------------------------------------------------------- checkpoints


def _to_numpy(array) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (CuPy arrays have ``.get()``)."""
    if hasattr(array, "get") and not isinstance(array, np.ndarray):
        array = array.get()
    return np.asarray(array)


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays``, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _json_default(value):
    """Let ``json`` store NumPy scalars and small arrays found in ``meta``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _prepare_arrays(arrays: dict) -> dict[str, np.ndarray]:
    """Check names and dtypes, and bring every array to the CPU."""
    prepared = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name or name == META_KEY:
            raise ValueError(f"invalid array name {name!r} (names are non-empty strings, not {META_KEY!r})")
        array = _to_numpy(array)
        if array.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which cannot be stored without pickle")
        prepared[name] = array
    return prepared


def save_checkpoint(path, arrays: dict, meta: dict | None = None):
    """Save named arrays and a JSON-able ``meta`` dict to one ``.npz`` file, atomically.

    ``path`` is used exactly as given (no ``.npz`` is appended). Arrays may be NumPy or
    CuPy arrays; ``meta`` may hold anything ``json`` can write, plus NumPy scalars.
    """
    arrays = _prepare_arrays(arrays)
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "sha256": _arrays_sha256(arrays),
        "meta": dict(meta or {}),
    }
    meta_bytes = json.dumps(header, default=_json_default, sort_keys=True).encode()
    entries = {**arrays, META_KEY: np.frombuffer(meta_bytes, dtype=np.uint8)}
    with atomic_open(path) as file, zipfile.ZipFile(file, "w") as archive:
        # the same layout as np.savez: one "<name>.npy" member per array
        for name, array in entries.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, or CheckpointError if it cannot be read whole."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise CheckpointError(f"{path}: not a checkpoint (an .npy array, not an .npz archive)")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError,
            NotImplementedError, RuntimeError) as error:  # the last two: garbled zip flags
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({error})") from error


def _parse_header(path: Path, raw: np.ndarray | None) -> dict:
    """Decode and validate the ``__meta__`` entry of a checkpoint."""
    if raw is None:
        raise CheckpointError(f"{path}: not a tinygen checkpoint (no {META_KEY} entry)")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: corrupt {META_KEY} entry ({error})") from error
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a tinygen checkpoint (unknown {META_KEY} format)")
    if header.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint version {header.get('version')!r} "
            f"(this code reads version {CHECKPOINT_VERSION})"
        )
    return header


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Load ``(arrays, meta)`` saved by ``save_checkpoint``.

    Raises CheckpointError, naming the file and the reason, if the file is missing, not
    a zip archive, truncated, lacks its metadata, has an unsupported version, or if the
    arrays do not match their stored SHA-256. Nothing is returned unless all is well.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    arrays = _read_npz(path)
    header = _parse_header(path, arrays.pop(META_KEY, None))
    actual = _arrays_sha256(arrays)
    if actual != header.get("sha256"):
        raise CheckpointError(
            f"{path}: checksum mismatch, the arrays are corrupt "
            f"(expected sha256 {header.get('sha256')}, got {actual})"
        )
    return arrays, header["meta"]


def flatten_state(prefix: str, obj, arrays: dict, scalars: dict):
    """Split a nested state dict (model, optimiser, EMA) into ``arrays`` (for the .npz) and JSON-able
    ``scalars``, under keys "<prefix>/<key>/<key>..."; lists and tuples record their length."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten_state(f"{prefix}/{k}", v, arrays, scalars)
    elif isinstance(obj, (list, tuple)):
        scalars[prefix + "/__len__"] = len(obj)
        for i, v in enumerate(obj):
            flatten_state(f"{prefix}/{i}", v, arrays, scalars)
    elif hasattr(obj, "shape") and getattr(obj, "ndim", 0) > 0:
        arrays[prefix] = obj
    else:
        scalars[prefix] = obj.item() if hasattr(obj, "item") else obj


def unflatten_state(prefix: str, arrays: dict, scalars: dict):
    """Rebuild the nested state dict that ``flatten_state`` split (lists come back as lists)."""
    tree = {}
    start = len(prefix) + 1
    for key, value in list(arrays.items()) + list(scalars.items()):
        if not key.startswith(prefix + "/"):
            continue
        parts = key[start:].split("/")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def rebuild(node):
        if not isinstance(node, dict):
            return node
        if "__len__" in node:
            return [rebuild(node[str(i)]) for i in range(node["__len__"])]
        return {k: rebuild(v) for k, v in node.items()}
    return rebuild(tree)


# ----------------------------------------------------------------------- image grids


def _as_image_batch(images) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) images -> float32 (N, C, H, W) with C in {1, 3}."""
    x = _to_numpy(images).astype(np.float32, copy=False)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W) or (N, C, H, W) with C in {{1, 3}}, got {x.shape}")
    if len(x) == 0:
        raise ValueError("cannot make a grid of zero images")
    return x


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch of images into one picture.

    Args:
        images: floats in [0, 1] (values outside are clipped), shape (N, H, W) or
            (N, C, H, W) with C = 1 (grey) or 3 (RGB).
        nrow: images per row; default ``ceil(sqrt(N))``, a near-square grid.
        padding: pixels of ``pad_value`` between images and around the border.
        pad_value: colour of the padding, in [0, 1] (1 = white).

    Returns:
        uint8 array (H_grid, W_grid) for grey images or (H_grid, W_grid, 3) for RGB, with
        H_grid = rows * (H + padding) + padding, W_grid = nrow * (W + padding) + padding.
    """
    x = _as_image_batch(images)
    N, C, H, W = x.shape
    nrow = nrow or math.ceil(math.sqrt(N))
    rows = math.ceil(N / nrow)
    p = padding
    # fill the last row with blank images, then give each image a right and bottom margin
    x = np.concatenate([x, np.full((rows * nrow - N, C, H, W), pad_value, np.float32)])
    x = np.pad(x, ((0, 0), (0, 0), (0, p), (0, p)), constant_values=pad_value)
    # (rows, nrow, C, H+p, W+p) -> (C, rows, H+p, nrow, W+p) -> (C, rows*(H+p), nrow*(W+p))
    grid = x.reshape(rows, nrow, C, H + p, W + p).transpose(2, 0, 3, 1, 4)
    grid = grid.reshape(C, rows * (H + p), nrow * (W + p))
    grid = np.pad(grid, ((0, 0), (p, 0), (p, 0)), constant_values=pad_value)  # top, left border
    grid = np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)
    return grid[0] if C == 1 else grid.transpose(1, 2, 0)


def _upscale(picture: np.ndarray, scale: int) -> np.ndarray:
    """Enlarge a (H, W) or (H, W, 3) picture ``scale`` times, nearest neighbour."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


def _encode(pictures: list[np.ndarray], fmt: str, text: dict | None = None, **options) -> bytes:
    """Encode uint8 pictures with Pillow; several pictures make an animation; ``text`` becomes PNG
    tEXt chunks (key -> string)."""
    from PIL import Image  # imported here so the rest of tinygen works without Pillow

    frames = [Image.fromarray(p) for p in pictures]
    buffer = io.BytesIO()
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
    if text:
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    frames[0].save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save_image_grid(images, path, nrow: int | None = None, scale: int = 1, padding: int = 2,
                    text: dict | None = None, pad_value: float = 1.0):
    """Save a batch of images in [0, 1] as one PNG grid (see ``make_grid``; ``pad_value`` the colour
    between the images), atomically.

    ``scale`` enlarges every pixel into a ``scale`` x ``scale`` block for visibility; ``text``
    (key -> string) is stored in the PNG's tEXt chunks.
    """
    picture = _upscale(make_grid(images, nrow, padding, pad_value), scale)
    atomic_write_bytes(path, _encode([picture], "PNG", text))


def png_text(path) -> dict:
    """The tEXt chunks of a PNG file ({} for a file that is not a readable PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {})) if image.format == "PNG" else {}
    except (OSError, ValueError, SyntaxError):  # not an image, truncated, or garbled
        return {}


def save_gif(frames, path, nrow: int | None = None, duration_ms: int = 60, scale: int = 1,
             padding: int = 2, loop: int = 0):
    """Save an animated GIF whose frames are image grids, atomically.

    Args:
        frames: a sequence of image batches in [0, 1], e.g. the samples of a diffusion
            model at successive steps; each batch becomes one grid frame.
        duration_ms: how long each frame is shown.
        loop: number of repetitions, 0 = forever.
    """
    pictures = [_upscale(make_grid(batch, nrow, padding), scale) for batch in frames]
    if not pictures:
        raise ValueError("save_gif needs at least one frame")
    atomic_write_bytes(path, _encode(pictures, "GIF", duration=duration_ms, loop=loop))


# ---------------------------------------------------------------------- scatter plot

#: Ten colours that are easy to tell apart (the "tab10" palette), RGB.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], dtype=np.uint8)


def _disc_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels of a filled disc."""
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    inside = dy * dy + dx * dx <= radius * radius + radius
    return dy[inside], dx[inside]


def _to_pixels(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Map ``values`` linearly onto pixel positions lo..hi (all to lo if they are equal)."""
    low, high = values.min(), values.max()
    span = high - low if high > low else 1.0
    return np.round(lo + (values - low) / span * (hi - lo)).astype(np.int64)


def save_scatter(points, labels, path, size: int = 400, radius: int = 2):
    """Save a ``size`` x ``size`` scatter plot of 2-D points coloured by label, as a PNG.

    Used for 2-D latent spaces. Points are scaled to fill the plot area; they are
    painted with NumPy (a disc stencil per point, all points at once), the frame and
    the legend (one swatch per label present, colour ``PALETTE[label % 10]``, on the
    right) with Pillow's ImageDraw. Non-finite points are skipped; ``labels=None``
    draws every point in the first colour. Written atomically.
    """
    from PIL import Image, ImageDraw

    points = _to_numpy(points).astype(np.float64)
    labels = np.zeros(len(points), np.int64) if labels is None else _to_numpy(labels).astype(np.int64)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(f"expected points (N, 2) and labels (N,), got {points.shape} and {labels.shape}")
    margin, legend_width = 8, 48
    if size < 4 * (margin + radius) + legend_width:
        raise ValueError(f"size {size} is too small for a scatter plot")
    keep = np.isfinite(points).all(axis=1)
    points, labels = points[keep], labels[keep]

    # plot area: columns margin..right, rows margin..bottom (y axis pointing up)
    right, bottom = size - legend_width - margin, size - margin
    canvas = np.full((size, size, 3), 255, np.uint8)
    if len(points):
        cols = _to_pixels(points[:, 0], margin + radius, right - radius)
        rows = bottom - (_to_pixels(points[:, 1], margin + radius, bottom - radius) - margin)
        dy, dx = _disc_offsets(radius)
        canvas[rows[:, None] + dy, cols[:, None] + dx] = PALETTE[labels % 10][:, None]

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin - 1, margin - 1, right + 1, bottom + 1], outline=(0, 0, 0))
    for i, label in enumerate(np.unique(labels)):
        top = margin + 14 * i
        if top + 10 > size:  # no room for more entries
            break
        colour = tuple(int(c) for c in PALETTE[label % 10])
        draw.rectangle([right + 10, top, right + 18, top + 8], fill=colour)
        draw.text((right + 22, top - 2), str(label), fill=(0, 0, 0))
    atomic_write_bytes(path, _encode([np.asarray(image)], "PNG"))


def save_labeled_grid(images, titles, path, wrong=None, scale=3, nrow=None):
    """A grid of images, each with a short title under it (red where `wrong` is True).

    For classifier predictions: titles are the predicted labels, `wrong` marks the mistakes."""
    from PIL import Image, ImageDraw

    raw = _to_numpy(images)
    batch = _as_image_batch(raw) / (255.0 if raw.dtype == np.uint8 else 1.0)
    n = len(batch)
    nrow = nrow or math.ceil(math.sqrt(n))
    h, w = batch.shape[-2] * scale, batch.shape[-1] * scale
    cell_w, cell_h = w + 4, h + 14
    rows = math.ceil(n / nrow)
    canvas = Image.new("RGB", (nrow * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):  # one title per image: drawing text is per item by nature
        r, c = divmod(i, nrow)
        picture = _upscale(make_grid(batch[i:i + 1], 1, 0), scale)
        canvas.paste(Image.fromarray(picture), (c * cell_w + 2, r * cell_h + 2))
        colour = (200, 0, 0) if wrong is not None and wrong[i] else (0, 0, 0)
        draw.text((c * cell_w + 2, r * cell_h + h + 2), str(titles[i]), fill=colour)
    atomic_write_bytes(path, _encode([np.asarray(canvas)], "PNG"))


def save_similarity_matrix(sims, images, texts, path, scale=2):
    """A table of similarities (CLIP's cosine similarities of a batch): `images` (N, 1, H, W) along the
    top, `texts` (M strings) down the left, a cell per pair shaded by `sims` (M, N) (brighter: more
    similar), the value written in it, the best image of each text framed in red. Written atomically."""
    from PIL import Image, ImageDraw

    sims = _to_numpy(sims)
    raw = _to_numpy(images)
    x = _as_image_batch(raw) / (255.0 if raw.dtype == np.uint8 else 1.0)
    cell = x.shape[-1] * scale + 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(probe.textlength(t) for t in texts)) + 8
    canvas = Image.new("RGB", (left + cell * len(x), cell * (len(texts) + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    lo, hi = sims.min(), sims.max()
    shade = np.round(255 * (sims - lo) / max(hi - lo, 1e-6)).astype(int)   # (texts, images)
    best = sims.argmax(axis=1)
    for j in range(len(x)):  # drawing is per item by nature
        picture = _upscale(make_grid(x[j:j + 1], 1, 0), scale)
        canvas.paste(Image.fromarray(picture), (left + j * cell + 2, 2))
    for i, caption in enumerate(texts):
        top = cell * (i + 1)
        draw.text((4, top + cell // 2 - 5), caption, fill=(0, 0, 0))
        for j in range(len(x)):
            g = int(shade[i, j])
            box = (left + j * cell + 1, top + 1, left + (j + 1) * cell - 2, top + cell - 2)
            draw.rectangle(box, fill=(g, g, g), outline=(220, 0, 0) if j == best[i] else None, width=2)
            draw.text((box[0] + 6, box[1] + cell // 2 - 7), f"{sims[i, j]:.2f}",
                      fill=(0, 0, 0) if g > 128 else (255, 255, 255))
    atomic_write_bytes(path, _encode([np.asarray(canvas)], "PNG"))


# ---------------------------------------------------------------------- line plots

def _nice(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def save_line_plots(panels, path, xlabel: str = "", log_x: bool = False, size=(360, 260), text: dict | None = None,
                    log_y=()):
    """Save panels of curves side by side as one PNG, atomically.

    ``panels`` is a list of (title, {label: (xs, ys)}): each panel draws one line with dots per label,
    colour ``PALETTE[k % 10]`` for the k-th label (the same label keeps its colour in every panel), with
    its own y range, the x values of the points as ticks (log scale with ``log_x``), and a legend on its
    right. Non-finite points are left out. ``size`` is one panel's. ``text`` goes to the PNG's tEXt chunks.
    ``log_y``: the indices of the panels whose y axis is a log scale (positive values only).
    """
    from PIL import Image, ImageDraw

    labels = list(dict.fromkeys(label for _, curves in panels for label in curves))
    width, height = size
    canvas = Image.new("RGB", (width * len(panels), height), "white")
    draw = ImageDraw.Draw(canvas)
    legend = int(max([draw.textlength(str(label)) for label in labels] or [0])) + 24
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    for p, (title, curves) in enumerate(panels):
        left, right, top, bottom = p * width + 48, (p + 1) * width - 12 - legend, 22, height - 40
        ly = p in log_y
        ty = (lambda v: math.log10(v)) if ly else (lambda v: v)
        shown = lambda x, y: (y is not None and math.isfinite(y) and x is not None and math.isfinite(x)
                              and (x > 0 or not log_x) and (y > 0 or not ly))
        curves = {label: ([x for x, y in zip(xs, ys) if shown(x, y)], [ty(y) for x, y in zip(xs, ys) if shown(x, y)])
                  for label, (xs, ys) in curves.items()}   # y in plot units from here on (log10 y with log_y)
        points = [(x, y) for xs, ys in curves.values() for x, y in zip(xs, ys)]
        draw.text((left, 4), title + (" (log scale)" if ly else ""), fill=(0, 0, 0))
        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        draw.text((left, height - 16), xlabel + (" (log scale)" if log_x else ""), fill=(0, 0, 0))
        if not points:
            continue
        x_lo, x_hi = min(tx(x) for x, _ in points), max(tx(x) for x, _ in points)
        y_lo, y_hi = min(y for _, y in points), max(y for _, y in points)
        x_pad, y_pad = (x_hi - x_lo) * 0.05 or 0.5, (y_hi - y_lo) * 0.08 or max(abs(y_hi) * 0.1, 0.5)
        x_lo, x_hi, y_lo, y_hi = x_lo - x_pad, x_hi + x_pad, y_lo - y_pad, y_hi + y_pad

        def xy(x, y):
            return (left + (tx(x) - x_lo) / (x_hi - x_lo) * (right - left),
                    bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))
        for x in sorted({x for x, _ in points}):
            px = xy(x, y_lo)[0]
            draw.line([px, bottom, px, bottom + 3], fill=(0, 0, 0))
            draw.text((px - 3 * len(_nice(x)), bottom + 5), _nice(x), fill=(0, 0, 0))
        for k in (0.0, 0.5, 1.0):
            y = y_lo + y_pad + k * (y_hi - y_lo - 2 * y_pad)
            py = bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)
            draw.text((p * width + 4, py - 6), _nice(10 ** y if ly else y), fill=(0, 0, 0))
        for label, (xs, ys) in curves.items():
            colour = tuple(int(c) for c in PALETTE[labels.index(label) % 10])
            line = [xy(x, y) for x, y in zip(xs, ys)]   # the points shown (filtered above)
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for px, py in line:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        for k, label in enumerate(curves):  # the legend, one row per curve
            colour = tuple(int(c) for c in PALETTE[labels.index(label) % 10])
            ly, lx = top + 4 + 12 * k, right + 8
            draw.rectangle([lx, ly + 2, lx + 8, ly + 8], fill=colour)
            draw.text((lx + 12, ly), label, fill=(0, 0, 0))
    atomic_write_bytes(path, _encode([np.asarray(canvas)], "PNG", text))
