"""Packed image trees: every window of a tree's files in one memory-mapped array beside its PNGs.

Decoding every PNG of a split into memory for each run does not scale: 200k utterances are 30 GB
of pixels, and each process would hold its own copy. A tree's packed copy (``.packed/``) is
written once, by `spectro images` or on first use, and read through the page cache, so a training
run, its loader workers and other runs on the machine share one copy and memory stays flat however
large the corpus. It is rebuilt whenever the tree changes: its settings, its manifest, or the size or
time of any of its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .fileio import atomic_open
from .locks import job_lock

PACKED_DIR = ".packed"
PACKED_FORMAT = 2  # 2: matrices stored frame-major, so that a window is one contiguous read


@dataclasses.dataclass
class PackedTree:
    """The windows of one tree in `data.npy`: (rows, 3, H, W) uint8 pictures, one row per window, or
    (frames, features) float16 for matrices, whose windows lie one after another as `spans` (first
    frame, length) say. Windows are read with ``pread`` rather than through a memory map: the pages
    stay in the page cache, shared by every process, instead of adding to each one's resident memory."""

    root: Path
    windows: dict[str, tuple[int, int]]  # image path relative to the tree -> (first row, number of windows)
    spans: np.ndarray | None
    rows: int  # pictures, or frames of all matrices
    item_shape: tuple[int, ...]  # of one row: (3, H, W), or (features,)
    dtype: np.dtype
    offset: int  # bytes before the first row
    fd: int

    @property
    def matrices(self) -> bool:
        return self.spans is not None

    def read_into(self, first: int, out: np.ndarray) -> None:
        """Fill `out` (C-contiguous, whole rows) with the rows from `first` on."""
        row_bytes = self.dtype.itemsize * int(np.prod(self.item_shape))
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):  # pread may return less than asked
            got = os.preadv(self.fd, [view[done:]], self.offset + first * row_bytes + done)
            if got <= 0:
                raise DataError(f"{self.root / PACKED_DIR / 'data.npy'} is shorter than its header says; remove "
                                f"{self.root / PACKED_DIR} and it is rebuilt")
            done += got


_open: dict[tuple[str, str], PackedTree] = {}  # one copy per tree and version, shared by every split


def packed_tree(root: str | os.PathLike) -> PackedTree:
    """The tree's packed copy, built first if it is missing or stale."""
    root = Path(root).resolve()
    signature = tree_signature(root)
    key = (str(root), signature)
    if key not in _open:
        if not _current(saved := _meta(root), signature):
            with job_lock(root / PACKED_DIR, "packing the tree", wait=True):  # e.g. torchrun's processes
                saved = _meta(root)  # the copy another process just built, or still stale
                if not _current(saved, signature):
                    saved = _build(root, signature)
        data = np.load(root / PACKED_DIR / "data.npy", mmap_mode="r")  # for its header only
        _open[key] = PackedTree(root, {rel: (start, count) for rel, start, count in saved["windows"]},
                                np.load(root / PACKED_DIR / "spans.npy") if saved["matrices"] else None,
                                data.shape[0], tuple(data.shape[1:]), data.dtype, data.offset,
                                os.open(root / PACKED_DIR / "data.npy", os.O_RDONLY))
        del data
    return _open[key]


def _current(meta: dict, signature: str) -> bool:
    return meta.get("signature") == signature and meta.get("format") == PACKED_FORMAT


def _meta(root: Path) -> dict:
    meta = root / PACKED_DIR / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def tree_signature(root: Path) -> str:
    """What a packed copy must match: the tree's settings and manifest, and each listed file's size and time."""
    from .images import MANIFEST_FILE, SETTINGS_FILE

    digest = hashlib.blake2b(digest_size=16)
    for name in (SETTINGS_FILE, MANIFEST_FILE):
        digest.update((root / name).read_bytes())
    for rel in _listed(root):
        try:
            stat = (root / rel).stat()
        except FileNotFoundError:
            raise DataError(f"{root / rel} is listed in its tree's manifest but missing; rerun `spectro images` to "
                            "restore it") from None
        digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _listed(root: Path) -> list[str]:
    import csv

    from .images import MANIFEST_FILE

    with (root / MANIFEST_FILE).open(newline="") as handle:
        return [row["image"] for row in csv.DictReader(handle)]


def _shape(path: Path) -> tuple[int, tuple[int, ...]]:
    """Windows in a file and each window's shape, from its header alone."""
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        return shape[0], tuple(shape[1:])
    with Image.open(path) as image:
        width, height = image.size
    return height // width, (3, width, width)


def _build(root: Path, signature: str) -> dict:
    """Write `data.npy` (and `spans.npy` for matrices) from the tree's files, then `meta.json`."""
    from .images import load_array

    rels = _listed(root)
    try:
        shapes = [_shape(root / rel) for rel in rels]
    except Exception as error:
        raise DataError(f"cannot read {root}: {error}; repair the tree with `spectro images ... --verify`") from None
    counts = np.array([count for count, _ in shapes], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    matrices = bool(rels) and rels[0].endswith(".npy")
    folder = root / PACKED_DIR
    if matrices:
        lengths = np.repeat([shape[-1] for _, shape in shapes], counts)
        spans = np.stack([np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], axis=1).astype(np.int64)
        layout = (int(lengths.sum()), shapes[0][1][0]), np.float16
    else:
        spans = None
        layout = ((int(counts.sum()), *shapes[0][1]) if rels else (0, 3, 1, 1)), np.uint8
    tmp = folder / f".data.{os.getpid()}.npy"
    header = np.lib.format.open_memmap(tmp, mode="w+", dtype=layout[1], shape=layout[0])  # a sparse file
    offset, row_bytes = header.offset, header.itemsize * int(np.prod(header.shape[1:]))
    del header
    fd = os.open(tmp, os.O_WRONLY)

    def copy(i: int) -> None:
        try:
            windows = load_array(root / rels[i])
        except Exception as error:  # truncated PNG, damaged .npy
            raise DataError(f"cannot read {root / rels[i]} ({type(error).__name__}: {error}); repair the tree with "
                            "the same `spectro images ...` command plus --verify") from None
        if matrices:  # each window's frames, one after another
            for k in range(counts[i]):
                _write_all(fd, np.ascontiguousarray(windows[k].T, dtype=np.float16),
                           offset + int(spans[starts[i] + k, 0]) * row_bytes)
        else:
            _write_all(fd, np.ascontiguousarray(windows, dtype=np.uint8), offset + int(starts[i]) * row_bytes)

    try:
        with ThreadPoolExecutor() as pool:  # decoding PNGs releases the GIL
            list(pool.map(copy, range(len(rels))))
    finally:
        os.close(fd)
    os.replace(tmp, folder / "data.npy")
    if matrices:
        with atomic_open(folder / "spans.npy", "wb", durable=False) as handle:
            np.save(handle, spans)
    meta = {"signature": signature, "format": PACKED_FORMAT, "matrices": matrices,
            "windows": [[rel, int(s), int(c)] for rel, s, c in zip(rels, starts, counts)]}
    with atomic_open(folder / "meta.json") as handle:
        json.dump(meta, handle)
    return meta


def _write_all(fd: int, array: np.ndarray, offset: int) -> None:
    view = memoryview(array).cast("B")
    while len(view):  # pwrite may write less than asked
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
