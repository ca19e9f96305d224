"""The image-tree format: file names, the manifest's columns, and reading a tree back.

`spectro images` writes an ImageFolder tree, one 224x224 RGB picture per window of each recording
(a ``.npy`` matrix per window for matrix features)::

    DIR/<emotion>/<corpus>__<speaker>__<stem>__w000.png    the recording's first window, then __w001, ...
    DIR/manifest.csv       one row per window: image, recording, window, start, end (seconds in the
                           recording's own clock), the utterance's columns, and the digest of its audio
    DIR/features.json      the settings the tree was made with, its format and its storage
    DIR/rejected.csv       files that could not be used, and why
    DIR/normalisation.json group statistics, for normalise.mode speaker or corpus
    DIR/.packed/           the windows in one store that training reads (``spectro.packed``)

A *recording key* (``<emotion>/<corpus>__<speaker>__<stem>``, plus ``__aug1`` ... for augmented copies)
names a recording's windows together; training and evaluation group windows by it. A tree whose
storage is ``packed`` holds the same manifest, but its windows live in the store alone until
`spectro unpack` writes their PNGs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from .config import FeatureConfig, WaveformAugmentConfig, from_dict
from .corpora import Utterance
from .errors import DataError
from .fileio import atomic_open, describe_path
from .manifest import COLUMNS, open_csv
from .normalise import FOUND_WITHOUT_LABELS

SETTINGS_FILE = "features.json"
MANIFEST_FILE = "manifest.csv"
REJECTED_FILE = "rejected.csv"
NORMALISATION_FILE = "normalisation.json"  # group statistics, with normalise.mode speaker or corpus
DIGEST_COLUMN = "audio_digest"  # of the decoded recording: the leakage checks find it under any name
WINDOW_COLUMNS = ("image", "recording", "window", "start", "end")
STORAGES = ("png", "packed")
# 3: one file per window (a 224x224 picture), the manifest one row per window. Format 2 stacked a
# recording's windows into one tall PNG, which ImageFolder readers took for one squashed picture.
TREE_FORMAT = 3


def path_component(text: str) -> str:
    """`text` as one file-name component: runs of characters other than letters, digits, '.', '-', '+'
    and '_', and runs of dots, become '_'; leading and trailing '.' and '_' go (no '..', no hidden files).
    Undecodable bytes of a file name (surrogate escapes) are not letters, so they become '_' too."""
    return re.sub(r"[^\w.+-]+|\.{2,}", "_", text).strip("._") or "_"


def recording_key(utt: Utterance, copy: int = 0) -> str:
    """The name of a recording's windows in a tree: ``<emotion>/<corpus>__<speaker>__<stem>``, with
    ``__aug1``, ``__aug2``, ... for augmented copies; every part one safe path component."""
    name = "__".join(path_component(part) for part in (utt.corpus, utt.speaker, utt.stem))
    return f"{path_component(utt.emotion)}/{name}{f'__aug{copy}' if copy else ''}"


def window_file(key: str, index: int, picture: bool) -> str:
    """Window `index` of recording `key`: a PNG for pictures, a .npy for matrices."""
    return f"{key}__w{index:03d}{'.png' if picture else '.npy'}"


def save_window(array: np.ndarray, path: Path) -> None:
    """One window as stored: a (3, H, W) uint8 picture as a PNG, a matrix as a .npy file; atomically."""
    with atomic_open(path, "wb", durable=False) as handle:
        if path.suffix == ".npy":
            np.save(handle, array)
        else:
            handle.write(encode_png(array))


def encode_png(picture: np.ndarray) -> bytes:
    """A (3, H, W) uint8 picture as PNG bytes: libpng, one filter for every row, the fastest zlib level and
    run-length matching; lossless, and 2.7x faster than Pillow's best setting at the same size."""
    from imagecodecs import PNG, png_encode

    return png_encode(np.ascontiguousarray(picture.transpose(1, 2, 0)), level=PNG.COMPRESSION.SPEED,
                      strategy=PNG.STRATEGY.RLE, filter=PNG.FILTER.SUB)


def load_window(path: Path) -> np.ndarray:
    """What `save_window` wrote: (3, H, W) uint8, or the matrix."""
    if path.suffix == ".npy":
        return np.load(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


@dataclasses.dataclass
class Recording:
    """One recording of a tree: its key, utterance, audio digest, and its windows as
    (file relative to the tree, start, end) in order."""

    key: str
    utterance: Utterance
    digest: str
    windows: list[tuple[str, float, float]]


def read_settings_file(image_dir: str | Path) -> dict:
    """``features.json`` as saved, checked to be a tree of this format."""
    path = Path(image_dir) / SETTINGS_FILE
    if not path.is_file():
        raise DataError(_not_a_tree(image_dir, SETTINGS_FILE))
    try:
        saved = json.loads(path.read_text())
        saved["features"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} cannot be read ({type(error).__name__}: {error}); it records the settings the tree "
                        "was made with, so the tree cannot be trusted without it: remove the folder and render it "
                        "again with `spectro images`") from None
    if saved.get("tree_format", 1) != TREE_FORMAT:
        raise DataError(f"{str(image_dir)!r} was made by an older spectro (format {saved.get('tree_format', 1)}: "
                        "a recording's windows in one file); render it again with `spectro images` into a new folder, "
                        "or remove this one first")
    return saved


def _not_a_tree(image_dir: str | Path, missing: str) -> str:
    state = f"is not a spectro image tree: {missing} is missing" if Path(image_dir).is_dir() else "does not exist"
    return f"{describe_path(image_dir)} {state}"


def read_feature_settings(image_dir: str | Path) -> FeatureConfig:
    """The feature settings an image tree was made with, so training and prediction reuse them."""
    return from_dict(FeatureConfig, read_settings_file(image_dir)["features"])


def read_normalisation(image_dir: str | Path) -> dict | None:
    """How a tree's groups were formed: the settings that decide it (mode, unknown speakers, guard), the
    number of groups and of those found without labels (pseudo-speakers, clusters), and the guard's record
    per corpus; None for a tree without group statistics."""
    path = Path(image_dir) / NORMALISATION_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    settings = read_feature_settings(image_dir).normalise
    return {"mode": saved["mode"], "unknown_speakers": settings.unknown_speakers, "guard_setting": settings.guard,
            "groups": len(saved["groups"]), "guard": saved.get("guard", {}),
            "found_without_labels": sum(g.startswith(FOUND_WITHOUT_LABELS) for g in saved["groups"])}


def read_storage(image_dir: str | Path) -> str:
    """``png`` (a file per window) or ``packed`` (the windows in the store alone)."""
    return read_settings_file(image_dir).get("storage", "png")


def read_augmentation(image_dir: str | Path) -> WaveformAugmentConfig | None:
    """The waveform augmentation a tree of training copies was made with; None for a plain tree."""
    saved = read_settings_file(image_dir).get("augmentation")
    return None if saved is None else from_dict(WaveformAugmentConfig, saved)


def manifest_rows(image_dir: str | Path) -> list[dict[str, str]]:
    """The rows of a tree's manifest (one per window); none if it has no manifest yet."""
    path = Path(image_dir) / MANIFEST_FILE
    if not path.is_file():
        return []
    with open_csv(path) as handle:
        return list(csv.DictReader(handle))


def recordings_of_rows(rows: list[dict[str, str]]) -> list[Recording]:
    """Manifest rows grouped by recording, in the order of each recording's first row."""
    found: dict[str, Recording] = {}
    order: dict[str, list[int]] = {}
    for row in rows:
        key = row["recording"]
        if key not in found:
            utterance = Utterance(**{c: row[c] for c in COLUMNS})
            found[key], order[key] = Recording(key, utterance, row[DIGEST_COLUMN], []), []
        found[key].windows.append((row["image"], float(row["start"]), float(row["end"])))
        order[key].append(int(row["window"]))
    for key, recording in found.items():
        recording.windows = [w for _, w in sorted(zip(order[key], recording.windows))]
    return list(found.values())


def read_recordings(image_dir: str | Path) -> list[Recording]:
    """Every recording of a tree, with its windows; a DataError if the folder is not a tree."""
    image_dir = Path(image_dir)
    if not (image_dir / MANIFEST_FILE).is_file():
        raise DataError(_not_a_tree(image_dir, MANIFEST_FILE))
    return recordings_of_rows(manifest_rows(image_dir))


def read_image_manifest(image_dir: str | Path) -> list[tuple[Path, Utterance]]:
    """(``DIR/<recording key>``, utterance) for every recording of a tree: what training and evaluation
    read, each recording's windows found through its key."""
    image_dir = Path(image_dir)
    return [(image_dir / r.key, r.utterance) for r in read_recordings(image_dir)]


def read_tree_digests(image_dir: str | Path) -> dict[str, str]:
    """Recording (source path) -> the digest of its decoded audio (``spectro.audio.audio_digest``)."""
    return {row["path"]: row[DIGEST_COLUMN] for row in manifest_rows(image_dir) if row.get(DIGEST_COLUMN)}


def load_recording(path: str | Path) -> np.ndarray:
    """Every window of the recording ``DIR/<recording key>`` stacked, (windows, ...), from its files."""
    path = Path(path)
    root = path.parent.parent
    key = path.relative_to(root).as_posix()
    recording = next((r for r in read_recordings(root) if r.key == key), None)
    if recording is None:
        raise DataError(f"{path} is not a recording of the tree {root}")
    return np.stack([load_window(root / image) for image, _, _ in recording.windows])


def write_tree_manifest(image_dir: Path, recordings: list[Recording]) -> None:
    """``manifest.csv``: one row per window, the windows of a recording together and in order."""
    with atomic_open(image_dir / MANIFEST_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*WINDOW_COLUMNS, *COLUMNS, DIGEST_COLUMN])
        for r in recordings:
            for index, (image, start, end) in enumerate(r.windows):
                writer.writerow([image, r.key, index, f"{start:.3f}", f"{end:.3f}",
                                 *(getattr(r.utterance, c) for c in COLUMNS), r.digest])
