"""The image-generation job: a manifest in, an ImageFolder tree of 224x224x3 PNGs out.

One file per recording holds all of its windows (``spectro.audio.audio_windows``): a PNG stacks
them top to bottom, a .npy matrix file along its first axis. Uses every core, resumes (finished
images are never redone or touched), writes atomically, and records every file it cannot use in
``rejected.csv`` instead of stopping.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import __version__
from .audio import audio_windows, prepare_windows
from .config import FeatureConfig, WaveformAugmentConfig, from_dict, to_dict
from .corpora import Utterance
from .errors import DataError
from .features import is_image_feature, window_arrays
from .fileio import atomic_open, remove_stale_temporaries
from .manifest import COLUMNS, write_manifest
from .waveform_augment import augment_waveform, copy_rng

log = logging.getLogger(__name__)

SETTINGS_FILE = "features.json"
MANIFEST_FILE = "manifest.csv"
REJECTED_FILE = "rejected.csv"
# 2: one file per recording holding every window. Trees of format 1 held one centre crop of a long
# recording, which evaluation could not score as prediction does.
TREE_FORMAT = 2


@dataclasses.dataclass
class ImageJobResult:
    out_dir: Path
    written: int
    skipped: int
    rejected: list[tuple[Utterance, str]]


def image_relpath(utt: Utterance, feature: str = "mel", copy: int = 0) -> str:
    """Where an utterance's picture (or, for matrix features, its .npy) lives in a tree (ImageFolder layout).

    Augmented copies 1, 2, ... of a recording get the suffix ``__aug1``, ``__aug2``, ...
    """
    suffix = ".png" if is_image_feature(feature) else ".npy"
    return f"{utt.emotion}/{utt.corpus}__{utt.speaker}__{utt.stem}{f'__aug{copy}' if copy else ''}{suffix}"


def save_array(windows: np.ndarray, path: Path) -> None:
    """A recording's model inputs, (windows, channels, ...), atomically: images as one viewable PNG
    with the windows stacked top to bottom, matrices as a .npy file."""
    with atomic_open(path, "wb", durable=False) as handle:
        if path.suffix == ".npy":
            np.save(handle, windows)
        else:  # fast zlib level with run-length strategy: lossless, ~25% faster and smaller than the default
            k, c, h, w = windows.shape
            Image.fromarray(windows.transpose(0, 2, 3, 1).reshape(k * h, w, c)).save(
                handle, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)


def load_array(path: Path) -> np.ndarray:
    """What `save_array` wrote, (windows, channels, ...); a PNG's windows are square."""
    if path.suffix == ".npy":
        return np.load(path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    h, w, c = pixels.shape
    return pixels.reshape(h // w, w, w, c).transpose(0, 3, 1, 2)


def read_feature_settings(image_dir: str | Path) -> FeatureConfig:
    """The feature settings an image tree was made with, so training and prediction reuse them."""
    path = Path(image_dir) / SETTINGS_FILE
    if not path.is_file():
        raise DataError(f"{str(image_dir)!r} is not a spectro image tree: {SETTINGS_FILE} is missing")
    saved = json.loads(path.read_text())
    if saved.get("tree_format", 1) != TREE_FORMAT:
        raise DataError(f"{str(image_dir)!r} was made by an older spectro (one centre crop per recording, not "
                        "every window); render it again with `spectro images` into a new folder, or remove this one first")
    return from_dict(FeatureConfig, saved["features"])


def read_augmentation(image_dir: str | Path) -> WaveformAugmentConfig | None:
    """The waveform augmentation a tree of training copies was made with; None for a plain tree."""
    read_feature_settings(image_dir)  # the same check that it is a tree at all
    saved = json.loads((Path(image_dir) / SETTINGS_FILE).read_text()).get("augmentation")
    return None if saved is None else from_dict(WaveformAugmentConfig, saved)


def _claim_settings(out_dir: Path, config: FeatureConfig, augmentation: WaveformAugmentConfig | None) -> None:
    # One tree, one set of feature settings: mixing them would silently corrupt training data.
    path = out_dir / SETTINGS_FILE
    wanted = {"features": to_dict(config), "augmentation": augmentation and to_dict(augmentation)}
    if path.is_file():
        read_feature_settings(out_dir)  # refuses trees of an older format
        saved = json.loads(path.read_text())
        existing = {"features": to_dict(from_dict(FeatureConfig, saved["features"])),  # fills in newer defaults
                    "augmentation": saved.get("augmentation") and to_dict(from_dict(WaveformAugmentConfig,
                                                                                    saved["augmentation"]))}
        if existing != wanted:
            raise DataError(f"{str(out_dir)!r} holds images made with other feature settings "
                            f"({_first_difference(existing, wanted)}); choose another --out or remove it")
        return
    with atomic_open(path) as handle:
        json.dump({**wanted, "tree_format": TREE_FORMAT, "spectro_version": __version__}, handle, indent=2)


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return ""


_worker_config: FeatureConfig | None = None
_worker_augmentation: WaveformAugmentConfig | None = None


def _init_worker(config: FeatureConfig, augmentation: WaveformAugmentConfig | None) -> None:
    global _worker_config, _worker_augmentation
    threadpool_limits(1)  # one process per core; nested BLAS threads would only fight
    _worker_config, _worker_augmentation = config, augmentation


def _warm_up(config: FeatureConfig) -> None:
    # Render one short noise burst before forking: the workers then inherit the imported libraries
    # and the cached filter bank and colour map instead of each paying for them (about a second).
    noise = np.random.default_rng(0).standard_normal(config.audio.sample_rate // 10).astype(np.float32)
    window_arrays(audio_windows(noise, config.audio), config)


def _render(task: tuple[int, str, str, int]) -> tuple[int, str | None]:
    index, source, target, copy = task
    try:
        augment = None
        if copy:
            recording = Path(target).stem.removesuffix(f"__aug{copy}")  # corpus__speaker__stem: any folder, any feature
            rng = copy_rng(recording, copy, _worker_augmentation.seed)
            augment = lambda y: augment_waveform(y, sr=_worker_config.audio.sample_rate,  # noqa: E731
                                                 config=_worker_augmentation, rng=rng)
        windows = prepare_windows(source, _worker_config.audio, augment=augment)
        save_array(window_arrays(windows, _worker_config), Path(target))
        return index, None
    except Exception as error:  # one bad file must never stop the job
        return index, str(error) if isinstance(error, DataError) else f"{type(error).__name__}: {error}"


def build_image_dataset(utterances: Sequence[Utterance], out_dir: str | Path, config: FeatureConfig, *,
                        augmentation: WaveformAugmentConfig | None = None, workers: int | None = None,
                        progress: bool = True) -> ImageJobResult:
    """Render every utterance's image into `out_dir`, skipping those already there.

    Parameters
    ----------
    utterances : sequence of Utterance
        What to render; the emotion names the class folder.
    out_dir : path
        The image tree. It may hold images from earlier runs with the same settings.
    config : FeatureConfig
        Audio conditioning, spectrogram and image settings; saved as ``features.json``.
    augmentation : WaveformAugmentConfig, optional
        Render ``augmentation.copies`` randomly augmented copies of each recording instead of the
        recording itself: a tree for training speakers only (see ``data.train_augmented``).
    workers : int, optional
        Processes to use; all cores by default.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_settings(out_dir, config, augmentation)
    remove_stale_temporaries(out_dir)
    copies = range(1, augmentation.copies + 1) if augmentation else [0]
    sources = [(utt, copy) for utt in utterances for copy in copies]
    targets = [image_relpath(u, config.feature, copy) for u, copy in sources]
    seen: dict[str, Utterance] = {}
    for (utt, _), rel in zip(sources, targets):
        if rel in seen and seen[rel].path != utt.path:
            raise DataError(f"{seen[rel].path} and {utt.path} would both be written to {rel}")
        seen[rel] = utt
    known_bad = _still_rejected(out_dir / REJECTED_FILE)
    todo, failures = [], {}
    for i, ((utt, copy), rel) in enumerate(zip(sources, targets)):
        if utt.path in known_bad:
            failures[i] = known_bad[utt.path]
        elif not (out_dir / rel).exists():
            todo.append((i, utt.path, str(out_dir / rel), copy))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    present, known_bad_count = len(sources) - len(todo) - len(failures), len(failures)
    log.info("%d image(s) to render, %d already present, %d rejected before and unchanged, %d worker(s)",
             len(todo), present, known_bad_count, workers)
    bar = tqdm(total=len(todo), unit="file", desc="images", disable=not progress or not todo)
    if workers == 1:
        with threadpool_limits(1):  # the workers' single-threaded maths; the caller's limits come back after
            _init_worker(config, augmentation)
            _collect(map(_render, todo), failures, bar)
    else:
        _warm_up(config)
        with multiprocessing.get_context("fork").Pool(workers, _init_worker, (config, augmentation)) as pool:
            _collect(pool.imap_unordered(_render, todo, chunksize=4), failures, bar)
    bar.close()

    rejected = list({sources[i][0].path: (sources[i][0], reason) for i, reason in sorted(failures.items())}.values())
    _write_rejected(out_dir / REJECTED_FILE, rejected)
    _update_manifest(out_dir, [u for u, _ in sources], targets)
    written = len(todo) - (len(failures) - known_bad_count)
    return ImageJobResult(out_dir, written=written, skipped=present, rejected=rejected)


def _collect(results, failures: dict[int, str], bar) -> None:
    for index, reason in results:
        if reason is not None:
            failures[index] = reason
            log.warning("rejected %s", reason)
        bar.update()


def _still_rejected(path: Path) -> dict[str, str]:
    """Sources rejected by an earlier run and not modified since: retrying them would fail again."""
    if not path.is_file():
        return {}
    verdict_time = path.stat().st_mtime
    with path.open(newline="") as handle:
        rows = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    return {source: reason for source, reason in rows.items()
            if not os.path.exists(source) or os.path.getmtime(source) <= verdict_time}


def _write_rejected(path: Path, rejected: list[tuple[Utterance, str]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, "reason"])
        for utt, reason in rejected:
            writer.writerow([*(getattr(utt, c) for c in COLUMNS), reason])


def _update_manifest(out_dir: Path, utterances: Sequence[Utterance], targets: list[str]) -> None:
    # Keep rows of earlier runs (another corpus rendered into the same tree) whose images still exist.
    rows: dict[str, Utterance] = {}
    if (out_dir / MANIFEST_FILE).is_file():
        rows = {str(p.relative_to(out_dir)): utt for p, utt in read_image_manifest(out_dir)}
    rows.update(zip(targets, utterances))
    present = sorted(rel for rel in rows if (out_dir / rel).is_file())
    write_manifest([rows[rel] for rel in present], out_dir / MANIFEST_FILE, extra={"image": present})


def read_image_manifest(image_dir: str | Path) -> list[tuple[Path, Utterance]]:
    """(image path, utterance) for every image listed in an image tree's manifest."""
    image_dir = Path(image_dir)
    path = image_dir / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{str(image_dir)!r} is not a spectro image tree: {MANIFEST_FILE} is missing")
    with path.open(newline="") as handle:
        return [(image_dir / row["image"], Utterance(**{c: row[c] for c in COLUMNS})) for row in csv.DictReader(handle)]
