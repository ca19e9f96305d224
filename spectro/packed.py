"""The packed store of an image tree: every window of the tree in one array of rows, which training reads.

Decoding every PNG of a split into memory for each run does not scale: 200k utterances are 30 GB
of pixels, and each process would hold its own copy. A tree's store (``.packed/``) is read through
the page cache, so a training run, its loader workers and other runs on the machine share one copy
and memory stays flat however large the corpus.

A tree of PNG files gets its store on first use (`packed_tree`), rebuilt whenever the tree changes:
its settings, its manifest, or the size or time of any of its files. A tree rendered with
``--format packed`` is its store: `spectro images` writes the windows straight into one part file per
job (``.packed/parts/``, rows without a header) and the store's index at the end, and no PNG is ever
encoded or decoded; `unpack_tree` writes the PNGs later, for people to look at.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import atomic_open
from .image_tree import MANIFEST_FILE, SETTINGS_FILE, Recording, load_window, read_recordings, read_storage, save_window
from .locks import job_lock
from .manifest import open_csv

PACKED_DIR = ".packed"
PARTS_DIR = "parts"
# 3: the windows of one recording key; a store in parts (one per rendering job). 2: matrices frame-major.
PACKED_FORMAT = 3


@dataclasses.dataclass
class Part:
    """One file of rows: `rows` of them from `offset` bytes on, rows `first` onwards of the store."""

    fd: int
    offset: int
    first: int
    rows: int


@dataclasses.dataclass
class PackedTree:
    """The windows of one tree as rows: (3, H, W) uint8 pictures, one row per window, or (frames,
    features) float16 for matrices, whose windows lie one after another as `spans` (first frame, length)
    say. The rows of all parts are numbered one after another; a window never spans two parts. Rows are
    read with ``pread`` rather than through a memory map: the pages stay in the page cache, shared by
    every process, instead of adding to each one's resident memory."""

    root: Path
    windows: dict[str, tuple[int, int]]  # recording key -> (first window, number of windows)
    spans: np.ndarray | None
    item_shape: tuple[int, ...]  # of one row: (3, H, W), or (features,)
    dtype: np.dtype
    parts: list[Part]

    @property
    def matrices(self) -> bool:
        return self.spans is not None

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.item_shape))

    def read_into(self, first: int, out: np.ndarray) -> None:
        """Fill `out` (C-contiguous, whole rows of one part) with the rows from `first` on."""
        part = self.parts[bisect.bisect_right([p.first for p in self.parts], first) - 1]
        view = memoryview(out).cast("B")
        position = part.offset + (first - part.first) * self.row_bytes
        done = 0
        while done < len(view):  # pread may return less than asked
            got = os.preadv(part.fd, [view[done:]], position + done)
            if got <= 0:
                raise DataError(f"the packed store of {self.root} is shorter than its index says; render the tree "
                                f"again (a store rendered with --format packed), or remove {self.root / PACKED_DIR} "
                                "and it is rebuilt (a tree of PNGs)")
            done += got


_open: dict[tuple[str, str], PackedTree] = {}  # one copy per tree and version, shared by every split


def packed_tree(root: str | os.PathLike) -> PackedTree:
    """The tree's store: for a tree of PNG files, built first if it is missing or stale."""
    root = Path(root).resolve()
    rendered = read_storage(root) == "packed"
    signature = tree_signature(root, files=not rendered)
    key = (str(root), signature)
    if key not in _open:
        meta = _meta(root)
        if rendered and not _current(meta, signature):
            raise DataError(f"the packed store of {root} does not match its manifest (a job was stopped before it "
                            "finished, or the manifest was edited); run the same `spectro images` command again")
        if not _current(meta, signature):
            with job_lock(root / PACKED_DIR, "packing the tree", wait=True):  # e.g. torchrun's processes
                meta = _meta(root)  # the copy another process just built, or still stale
                if not _current(meta, signature):
                    meta = _build(root, signature)
        _open[key] = _opened(root, meta)
    return _open[key]


def _opened(root: Path, meta: dict) -> PackedTree:
    dtype, shape = np.dtype(meta["dtype"]), tuple(meta["item_shape"])
    row_bytes = dtype.itemsize * int(np.prod(shape))
    parts, first = [], 0
    for name, offset in meta["parts"]:
        path = root / PACKED_DIR / name
        fd = os.open(path, os.O_RDONLY)
        rows = (os.fstat(fd).st_size - offset) // row_bytes
        parts.append(Part(fd, offset, first, rows))
        first += rows
    bases = [p.first for p in parts]
    windows = {k: (bases[part] + start, count) for k, part, start, count in meta["windows"]}
    spans = np.load(root / PACKED_DIR / "spans.npy") if meta["matrices"] else None
    return PackedTree(root, windows, spans, shape, dtype, parts)


def _current(meta: dict, signature: str) -> bool:
    return meta.get("signature") == signature and meta.get("format") == PACKED_FORMAT


def _meta(root: Path) -> dict:
    meta = root / PACKED_DIR / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def tree_signature(root: Path, *, files: bool = True) -> str:
    """What a store must match: the tree's settings and manifest, and (`files`) each listed file's size and time."""
    digest = hashlib.blake2b(digest_size=16)
    for name in (SETTINGS_FILE, MANIFEST_FILE):
        digest.update((root / name).read_bytes())
    for rel in _listed(root) if files else []:
        try:
            stat = (root / rel).stat()
        except FileNotFoundError:
            raise DataError(f"{root / rel} is listed in its tree's manifest but missing; rerun `spectro images` to "
                            "restore it") from None
        digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _listed(root: Path) -> list[str]:
    with open_csv(root / MANIFEST_FILE) as handle:
        return [row["image"] for row in csv.DictReader(handle)]


def write_rendered_index(root: Path, recordings: list[tuple[Recording, str, int]], item_shape: tuple[int, ...]) -> None:
    """The index of a store that `spectro images --format packed` wrote: each recording's part and first row
    (`recordings` in manifest order), against the manifest just written."""
    parts = sorted({part for _, part, _ in recordings})
    meta = {"signature": tree_signature(root, files=False), "format": PACKED_FORMAT, "matrices": False,
            "dtype": "uint8", "item_shape": list(item_shape), "parts": [[f"{PARTS_DIR}/{p}", 0] for p in parts],
            "windows": [[r.key, parts.index(part), first, len(r.windows)] for r, part, first in recordings]}
    with atomic_open(root / PACKED_DIR / "meta.json") as handle:
        json.dump(meta, handle)


def _build(root: Path, signature: str) -> dict:
    """Write `data.npy` (and `spans.npy` for matrices) from the tree's files, then `meta.json`."""
    recordings = read_recordings(root)
    files = [image for r in recordings for image, _, _ in r.windows]
    try:
        shapes = [_shape(root / image) for image in files]
    except Exception as error:
        raise DataError(f"cannot read {root}: {error}; repair the tree with `spectro images ... --verify`") from None
    matrices = bool(files) and files[0].endswith(".npy")
    if matrices:
        lengths = np.array([shape[-1] for shape in shapes], dtype=np.int64)
        spans = np.stack([np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], axis=1).astype(np.int64)
        layout = (int(lengths.sum()), shapes[0][0]), np.float16
        positions = spans[:, 0]
    else:
        spans = None
        layout = ((len(files), *shapes[0]) if files else (0, 3, 1, 1)), np.uint8
        positions = np.arange(len(files))
    folder = root / PACKED_DIR
    tmp = folder / f".data.{os.getpid()}.npy"
    header = np.lib.format.open_memmap(tmp, mode="w+", dtype=layout[1], shape=layout[0])  # a sparse file
    offset, row_bytes = header.offset, header.itemsize * int(np.prod(header.shape[1:]))
    del header
    fd = os.open(tmp, os.O_WRONLY)

    def copy(i: int) -> None:
        try:
            window = load_window(root / files[i])
        except Exception as error:  # truncated PNG, damaged .npy
            raise DataError(f"cannot read {root / files[i]} ({type(error).__name__}: {error}); repair the tree with "
                            "the same `spectro images ...` command plus --verify") from None
        stored = np.ascontiguousarray(window.T if matrices else window, dtype=layout[1])  # matrices frame-major
        write_all(fd, stored, offset + int(positions[i]) * row_bytes)

    try:
        with ThreadPoolExecutor() as pool:  # decoding PNGs releases the GIL
            list(pool.map(copy, range(len(files))))
    finally:
        os.close(fd)
    os.replace(tmp, folder / "data.npy")
    if matrices:
        with atomic_open(folder / "spans.npy", "wb", durable=False) as handle:
            np.save(handle, spans)
    starts = np.concatenate([[0], np.cumsum([len(r.windows) for r in recordings])[:-1]]).astype(int)
    meta = {"signature": signature, "format": PACKED_FORMAT, "matrices": matrices, "dtype": np.dtype(layout[1]).str,
            "item_shape": list(layout[0][1:]), "parts": [["data.npy", offset]],
            "windows": [[r.key, 0, int(s), len(r.windows)] for r, s in zip(recordings, starts)]}
    with atomic_open(folder / "meta.json") as handle:
        json.dump(meta, handle)
    return meta


def _shape(path: Path) -> tuple[int, ...]:
    """A window's shape from its file's header alone."""
    if path.suffix == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return (3, height, width)


def write_all(fd: int, array: np.ndarray, offset: int) -> None:
    """Write all of `array` at `offset` (pwrite may write less than asked)."""
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while len(view):
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def unpack_tree(root: str | os.PathLike) -> int:
    """Write the PNG of every window of a tree rendered with ``--format packed``, from its store; the
    tree stays a packed tree (its PNGs are for people to look at). Returns the number written."""
    root = Path(root)
    if read_storage(root) != "packed":
        raise DataError(f"{root} is a tree of PNG files already; unpack applies to trees rendered with --format packed")
    store = packed_tree(root)
    picture = np.empty(store.item_shape, dtype=np.uint8)
    written = 0
    for recording in read_recordings(root):
        first, _ = store.windows[recording.key]
        for k, (image, _, _) in enumerate(recording.windows):
            if not (root / image).is_file():
                store.read_into(first + k, picture)
                save_window(picture, root / image)
                written += 1
    return written
