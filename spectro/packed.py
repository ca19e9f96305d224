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


@dataclasses.dataclass
class PackedTree:
    """The windows of one tree. `data` is (rows, 3, H, W) uint8 for pictures, or (features, frames)
    float16 for matrices, whose windows lie side by side along time as `spans` (first frame, length) say."""

    root: Path
    windows: dict[str, tuple[int, int]]  # image path relative to the tree -> (first row, number of windows)
    data: np.ndarray
    spans: np.ndarray | None

    @property
    def matrices(self) -> bool:
        return self.spans is not None


_open: dict[tuple[str, str], PackedTree] = {}  # one mapping per tree and version, shared by every split


def packed_tree(root: str | os.PathLike) -> PackedTree:
    """The tree's packed copy, built first if it is missing or stale."""
    root = Path(root).resolve()
    signature = tree_signature(root)
    key = (str(root), signature)
    if key not in _open:
        saved = _meta(root)
        if saved.get("signature") != signature:
            with job_lock(root / PACKED_DIR, "packing the tree", wait=True):  # e.g. torchrun's processes
                saved = _meta(root)  # the copy another process just built, or still stale
                if saved.get("signature") != signature:
                    saved = _build(root, signature)
        spans = root / PACKED_DIR / "spans.npy"
        _open[key] = PackedTree(root, {rel: (start, count) for rel, start, count in saved["windows"]},
                                np.load(root / PACKED_DIR / "data.npy", mmap_mode="r"),
                                np.load(spans) if saved["matrices"] else None)
    return _open[key]


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
        layout = (shapes[0][1][0], int(lengths.sum())), np.float16
    else:
        spans = None
        layout = ((int(counts.sum()), *shapes[0][1]) if rels else (0, 3, 1, 1)), np.uint8
    tmp = folder / f".data.{os.getpid()}.npy"
    data = np.lib.format.open_memmap(tmp, mode="w+", dtype=layout[1], shape=layout[0])

    def copy(i: int) -> None:
        try:
            windows = load_array(root / rels[i])
        except Exception as error:  # truncated PNG, damaged .npy
            raise DataError(f"cannot read {root / rels[i]} ({type(error).__name__}: {error}); repair the tree with "
                            "the same `spectro images ...` command plus --verify") from None
        if matrices:
            for k in range(counts[i]):
                first, length = spans[starts[i] + k]
                data[:, first:first + length] = windows[k]
        else:
            data[starts[i]:starts[i] + counts[i]] = windows

    with ThreadPoolExecutor() as pool:  # decoding PNGs releases the GIL
        list(pool.map(copy, range(len(rels))))
    data.flush()
    del data
    os.replace(tmp, folder / "data.npy")
    if matrices:
        with atomic_open(folder / "spans.npy", "wb", durable=False) as handle:
            np.save(handle, spans)
    meta = {"signature": signature, "matrices": matrices,
            "windows": [[rel, int(s), int(c)] for rel, s, c in zip(rels, starts, counts)]}
    with atomic_open(folder / "meta.json") as handle:
        json.dump(meta, handle)
    return meta
