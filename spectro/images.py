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
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import __version__
from .allocator import keep_freed_memory
from .audio import audio_digest, audio_problems, audio_windows, load_audio
from .config import FeatureConfig, WaveformAugmentConfig, from_dict, to_dict
from .corpora import Utterance
from .errors import DataError, StorageError
from .features import is_image_feature, recording_statistics, window_arrays
from .fileio import atomic_open, describe_path, remove_stale_temporaries
from .locks import job_lock
from .manifest import COLUMNS, write_manifest
from .normalise import BandStatistics, GroupStatistics
from .waveform_augment import augment_waveform, copy_rng

log = logging.getLogger(__name__)

SETTINGS_FILE = "features.json"
MANIFEST_FILE = "manifest.csv"
REJECTED_FILE = "rejected.csv"
NORMALISATION_FILE = "normalisation.json"  # group statistics, with normalise.mode speaker or corpus
DIGEST_COLUMN = "audio_digest"  # of the decoded recording: the leakage checks find it under any name
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

    Augmented copies 1, 2, ... of a recording get the suffix ``__aug1``, ``__aug2``, ... Every name
    part is one safe path component, whatever a manifest says (no separators, no leading dots).
    """
    suffix = ".png" if is_image_feature(feature) else ".npy"
    name = "__".join(path_component(part) for part in (utt.corpus, utt.speaker, utt.stem))
    return f"{path_component(utt.emotion)}/{name}{f'__aug{copy}' if copy else ''}{suffix}"


def path_component(text: str) -> str:
    """`text` as one file-name component: runs of characters other than letters, digits, '.', '-', '+'
    and '_', and runs of dots, become '_'; leading and trailing '.' and '_' go (no '..', no hidden files)."""
    return re.sub(r"[^\w.+-]+|\.{2,}", "_", text).strip("._") or "_"


def save_array(windows: np.ndarray, path: Path) -> None:
    """A recording's model inputs, (windows, channels, ...), atomically: images as one viewable PNG
    with the windows stacked top to bottom, matrices as a .npy file."""
    with atomic_open(path, "wb", durable=False) as handle:
        if path.suffix == ".npy":
            np.save(handle, windows)
        else:  # libpng, one filter for every row, fastest zlib level, run-length matching: lossless, and
            # 2.7x faster than Pillow's best setting (which tries five filters per row) at the same size
            from imagecodecs import PNG, png_encode

            k, c, h, w = windows.shape
            pixels = np.ascontiguousarray(windows.transpose(0, 2, 3, 1).reshape(k * h, w, c))
            handle.write(png_encode(pixels, level=PNG.COMPRESSION.SPEED, strategy=PNG.STRATEGY.RLE,
                                    filter=PNG.FILTER.SUB))


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
        raise DataError(f"{describe_path(image_dir)} " + ("is not a spectro image tree: " + SETTINGS_FILE + " is missing"
                                                          if Path(image_dir).is_dir() else "does not exist"))
    try:
        saved = json.loads(path.read_text())
        saved["features"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} cannot be read ({type(error).__name__}: {error}); it records the settings the tree "
                        "was made with, so the tree cannot be trusted without it: remove the folder and render it "
                        "again with `spectro images`") from None
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
    keep_freed_memory()
    _worker_config, _worker_augmentation = config, augmentation


def _warm_up(config: FeatureConfig) -> None:
    # Render one short noise burst before forking: the workers then inherit the imported libraries
    # and the cached filter bank and colour map instead of each paying for them (about a second).
    noise = np.random.default_rng(0).standard_normal(config.audio.sample_rate // 10).astype(np.float32)
    windows = audio_windows(noise, config.audio)
    window_arrays(windows, config, recording_statistics(windows, config) if config.normalise.mode != "none" else None)


@dataclasses.dataclass(frozen=True)
class _Task:
    index: int
    source: str
    target: str
    copy: int  # augmented copy number; 0 for the recording itself
    kind: str = "render"  # or "digest" (the picture is there, the audio's digest is not), or "statistics"
    statistics: BandStatistics | None = None  # of the recording's group, to render with domain normalisation


@dataclasses.dataclass(frozen=True)
class _Outcome:
    index: int
    digest: str | None = None
    warnings: tuple[str, ...] = ()
    statistics: BandStatistics | None = None  # a "statistics" task's answer
    rejected: str | None = None  # the input cannot be used: why
    fault: str | None = None  # the machine stopped the job: disk full, read-only output, ...


def _render(task: _Task) -> _Outcome:
    config = _worker_config
    try:
        y = load_audio(task.source, sr=config.audio.sample_rate)
        problems = tuple(audio_problems(y, config.audio, config.quality))
        if problems and config.quality.action == "reject":
            return _Outcome(task.index, rejected=f"{task.source}: {'; '.join(problems)}")
        if task.kind == "statistics":
            return _Outcome(task.index, statistics=recording_statistics(audio_windows(y, config.audio), config))
        if task.kind == "render":
            augment = None
            if task.copy:
                recording = Path(task.target).stem.removesuffix(f"__aug{task.copy}")  # corpus__speaker__stem
                rng = copy_rng(recording, task.copy, _worker_augmentation.seed)
                augment = lambda y: augment_waveform(y, sr=config.audio.sample_rate,  # noqa: E731
                                                     config=_worker_augmentation, rng=rng)
            windows = audio_windows(y, config.audio, augment=augment)
            save_array(window_arrays(windows, config, task.statistics), Path(task.target))
        return _Outcome(task.index, digest=audio_digest(y), warnings=problems)
    except DataError as error:  # the input's fault: recorded, and the job goes on
        return _Outcome(task.index, rejected=str(error))
    except OSError as error:  # the machine's fault: the job stops, and nothing is held against the input
        return _Outcome(task.index, fault=f"cannot write {error.filename or task.target}: {error.strerror or error}")
    except Exception as error:  # anything else that one input provokes must not stop the job either
        return _Outcome(task.index, rejected=f"{task.source}: {type(error).__name__}: {error}")


def build_image_dataset(utterances: Sequence[Utterance], out_dir: str | Path, config: FeatureConfig, *,
                        augmentation: WaveformAugmentConfig | None = None, workers: int | None = None,
                        progress: bool = True, verify: bool = False) -> ImageJobResult:
    """Render every utterance's image into `out_dir`, skipping those already there.

    Parameters
    ----------
    utterances : sequence of Utterance
        What to render; the emotion names the class folder.
    out_dir : path
        The image tree. It may hold images from earlier runs with the same settings. The job holds
        the tree's lock: a second job on the same tree is refused.
    config : FeatureConfig
        Audio conditioning, spectrogram and image settings; saved as ``features.json``. With
        ``normalise.mode`` speaker or corpus, a first pass gathers each group's band statistics
        (kept in ``normalisation.json``) from the audio alone.
    augmentation : WaveformAugmentConfig, optional
        Render ``augmentation.copies`` randomly augmented copies of each recording instead of the
        recording itself: a tree for training speakers only (see ``data.train_augmented``).
    workers : int, optional
        Processes to use; all cores by default.
    verify : bool
        Open every finished file first and render the unreadable ones (e.g. truncated) again.

    Raises
    ------
    StorageError
        When the machine stops the job (disk full, read-only output): what was finished is kept in the
        manifest, and the same call renders the rest once the cause is fixed.
    """
    out_dir = Path(out_dir)
    with job_lock(out_dir, "spectro images"):
        _claim_settings(out_dir, config, augmentation)
        remove_stale_temporaries(out_dir)
        copies = range(1, augmentation.copies + 1) if augmentation else [0]
        sources = [(utt, copy) for utt in utterances for copy in copies]
        targets = _targets(out_dir, sources, config.feature)
        if verify:
            _remove_unreadable(out_dir, targets, progress=progress)
        job = _Job(out_dir, config, augmentation, workers, progress, sources, targets)
        groups = job.group_statistics()
        for i, ((utt, copy), rel) in enumerate(zip(sources, targets)):
            if utt.path in job.known_bad:
                job.failures[i] = job.known_bad[utt.path]
            elif not (out_dir / rel).exists() or rel not in job.digests:
                kind = "digest" if (out_dir / rel).exists() else "render"
                job.tasks.append(_Task(i, utt.path, str(out_dir / rel), copy, kind,
                                       groups.of_recording(utt.path) if groups and kind == "render" else None))
        return job.finish()


def _targets(out_dir: Path, sources: list[tuple[Utterance, int]], feature: str) -> list[str]:
    """Each source's file in the tree, refusing two sources on one file and any path outside the tree."""
    targets = [image_relpath(u, feature, copy) for u, copy in sources]
    seen: dict[str, Utterance] = {}
    root = out_dir.resolve()
    for (utt, _), rel in zip(sources, targets):
        if rel in seen and seen[rel].path != utt.path:
            raise DataError(f"{seen[rel].path} and {utt.path} would both be written to {rel}")
        seen[rel] = utt
        if not (root / rel).resolve().is_relative_to(root):
            raise DataError(f"{utt.path} would be written outside {str(out_dir)!r}, to {rel}")
    return targets


class _Job:
    """One run of the image job: its tasks, what they found, and what is written at the end."""

    def __init__(self, out_dir: Path, config: FeatureConfig, augmentation, workers: int | None, progress: bool,
                 sources: list[tuple[Utterance, int]], targets: list[str]):
        self.out_dir, self.config, self.augmentation = out_dir, config, augmentation
        self.workers, self.progress, self.sources, self.targets = workers, progress, sources, targets
        self.digests = _manifest_digests(out_dir)
        self.known_bad = _still_rejected(out_dir / REJECTED_FILE)
        self.tasks: list[_Task] = []
        self.failures: dict[int, str] = {}

    def group_statistics(self) -> GroupStatistics | None:
        """Band statistics of every recording's speaker or corpus: from the tree, or from a first pass
        over the recordings it has not seen (which may only form new groups)."""
        settings = self.config.normalise
        if settings.mode not in ("speaker", "corpus"):
            return None
        path = self.out_dir / NORMALISATION_FILE
        saved = (GroupStatistics.from_dict(json.loads(path.read_text())) if path.is_file()
                 else GroupStatistics(settings.mode, {}, {}))
        recordings = list({u.path: u for u, _ in self.sources}.values())
        new = [i for i, (u, copy) in enumerate(self.sources) if u.path not in saved.assignment and copy <= 1
               and u.path not in self.known_bad]
        if not new:
            return saved
        found: dict[str, BandStatistics] = {}
        for outcome in self._run([_Task(i, self.sources[i][0].path, "", 0, "statistics") for i in new], "statistics"):
            if outcome.statistics is not None:
                found[self.sources[outcome.index][0].path] = outcome.statistics
        saved = saved.extended([u for u in recordings if u.path in found], found, settings)
        with atomic_open(path) as handle:
            json.dump(saved.as_dict(), handle)
        return saved

    def finish(self) -> ImageJobResult:
        rendering = sum(t.kind == "render" for t in self.tasks)
        known_bad = len(self.failures)
        log.info("%d image(s) to render, %d already present, %d rejected before and unchanged",
                 rendering, len(self.sources) - rendering - known_bad, known_bad)
        fault = self._collect(self._run(self.tasks, "images"))
        rejected = list({self.sources[i][0].path: (self.sources[i][0], reason)
                         for i, reason in sorted(self.failures.items())}.values())
        _write_rejected(self.out_dir / REJECTED_FILE, rejected)
        _update_manifest(self.out_dir, [u for u, _ in self.sources], self.targets, self.digests)
        if fault:
            raise StorageError(f"{fault}; the images finished so far are kept; free space or fix the permissions "
                               "and run the same command again to render the rest")
        written = rendering - (len(self.failures) - known_bad)
        return ImageJobResult(self.out_dir, written=written, skipped=len(self.sources) - rendering - known_bad,
                              rejected=rejected)

    def _run(self, tasks: list[_Task], desc: str) -> Iterator[_Outcome]:
        """Carry out `tasks` on every core, yielding outcomes as they arrive."""
        workers = max(1, min(self.workers or os.cpu_count() or 1, len(tasks)))
        with tqdm(total=len(tasks), unit="file", desc=desc, disable=not self.progress or not tasks) as bar:
            if workers == 1:
                with threadpool_limits(1):  # the workers' single-threaded maths; the caller's limits come back after
                    _init_worker(self.config, self.augmentation)
                    for outcome in map(_render, tasks):
                        bar.update()
                        yield outcome
                return
            _warm_up(self.config)
            with multiprocessing.get_context("fork").Pool(workers, _init_worker, (self.config, self.augmentation)) as pool:
                for outcome in pool.imap_unordered(_render, tasks, chunksize=4):
                    bar.update()
                    yield outcome

    def _collect(self, outcomes: Iterable[_Outcome]) -> str | None:
        """Record each outcome as it arrives; stop at the first fault of the machine and return it."""
        for outcome in outcomes:
            if outcome.fault:
                return outcome.fault
            if outcome.rejected:
                self.failures[outcome.index] = outcome.rejected
                log.warning("rejected %s", outcome.rejected)
                continue
            self.digests[self.targets[outcome.index]] = outcome.digest
            for problem in outcome.warnings:
                log.warning("%s: %s (kept; quality.action=reject would leave it out)", self.sources[outcome.index][0].path,
                            problem)
        return None


def _remove_unreadable(out_dir: Path, targets: list[str], *, progress: bool) -> None:
    """Delete finished files that cannot be read back whole, so that the job renders them again."""
    present = [out_dir / rel for rel in targets if (out_dir / rel).exists()]
    for path in tqdm(present, unit="file", desc="verifying", disable=not progress, leave=False):
        try:
            load_array(path)
        except Exception as error:  # truncated or otherwise broken: PIL and numpy raise many kinds
            log.warning("%s cannot be read (%s); rendering it again", path, error)
            path.unlink()


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


def _update_manifest(out_dir: Path, utterances: Sequence[Utterance], targets: list[str], digests: dict[str, str]) -> None:
    # Keep rows of earlier runs (another corpus rendered into the same tree) whose images still exist.
    rows: dict[str, Utterance] = {}
    if (out_dir / MANIFEST_FILE).is_file():
        rows = {str(p.relative_to(out_dir)): utt for p, utt in read_image_manifest(out_dir)}
    rows.update(zip(targets, utterances))
    present = sorted(rel for rel in rows if (out_dir / rel).is_file())
    write_manifest([rows[rel] for rel in present], out_dir / MANIFEST_FILE,
                   extra={"image": present, DIGEST_COLUMN: [digests.get(rel, "") for rel in present]})


def _manifest_digests(out_dir: Path) -> dict[str, str]:
    """Image (relative path) -> audio digest, from the tree's manifest."""
    return {row["image"]: row[DIGEST_COLUMN] for row in _manifest_rows(out_dir) if row.get(DIGEST_COLUMN)}


def read_tree_digests(image_dir: str | Path) -> dict[str, str]:
    """Recording (source path) -> the digest of its decoded audio (``spectro.audio.audio_digest``)."""
    return {row["path"]: row[DIGEST_COLUMN] for row in _manifest_rows(Path(image_dir)) if row.get(DIGEST_COLUMN)}


def _manifest_rows(image_dir: Path) -> list[dict[str, str]]:
    path = image_dir / MANIFEST_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_image_manifest(image_dir: str | Path) -> list[tuple[Path, Utterance]]:
    """(image path, utterance) for every image listed in an image tree's manifest."""
    image_dir = Path(image_dir)
    if not (image_dir / MANIFEST_FILE).is_file():
        raise DataError(f"{describe_path(image_dir)} " + ("is not a spectro image tree: " + MANIFEST_FILE + " is missing"
                                                          if image_dir.is_dir() else "does not exist"))
    return [(image_dir / row["image"], Utterance(**{c: row[c] for c in COLUMNS})) for row in _manifest_rows(image_dir)]
