"""The image-generation job: utterances in, an image tree out (``spectro.image_tree``: one 224x224
picture per window of each recording, and a manifest).

Uses every core, resumes (finished recordings are never redone or touched), writes atomically, and
records every file it cannot use in ``rejected.csv`` instead of stopping. Each finished recording is
noted at once in the job's journal (``.journal.<part>.csv``), so a killed job loses nothing it
finished; the manifest is written when the job ends. Shards (``--shard K/N``) split one job over
machines: each renders its share of the recordings into the same tree under a shared lock, and a
final plain run merges their journals into the manifest. Storage is a file per window (``png``), or
rows of the packed store that training reads (``packed``), with no PNG encoded at all.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import __version__, rendering
from .config import FeatureConfig, WaveformAugmentConfig, from_dict, to_dict
from .corpora import Utterance
from .errors import ConfigError, DataError, StorageError
from .features import FEATURES
from .fileio import atomic_open, remove_stale_temporaries
from .image_tree import (
    COLUMNS,
    NORMALISATION_FILE,
    REJECTED_FILE,
    SETTINGS_FILE,
    STORAGES,
    TREE_FORMAT,
    Recording,
    load_window,
    manifest_rows,
    read_settings_file,
    recording_key,
    recordings_of_rows,
    window_file,
    write_tree_manifest,
)
from .locks import LOCK_FILE, job_lock
from .manifest import open_csv
from .normalise import BandStatistics, GroupStatistics, corpora_without_speakers
from .packed import PACKED_DIR, PARTS_DIR, write_rendered_index

log = logging.getLogger(__name__)

JOURNAL_COLUMNS = ("status", "recording", "first_row", "windows", "reason", *COLUMNS, "audio_digest")


@dataclasses.dataclass
class ImageJobResult:
    out_dir: Path
    written: int
    skipped: int
    rejected: list[tuple[Utterance, str]]


@dataclasses.dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`: the recordings whose key hashes there, whatever order or
    machine lists them."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        k, sep, n = text.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise ConfigError(f"--shard {text!r} must look like K/N with 1 <= K <= N, e.g. 2/8")
        return cls(int(k), int(n))

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def holds(self, key: str) -> bool:
        value = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")
        return value % self.count == self.index - 1


def build_image_dataset(utterances: Sequence[Utterance], out_dir: str | Path, config: FeatureConfig, *,
                        augmentation: WaveformAugmentConfig | None = None, workers: int | None = None,
                        progress: bool = True, verify: bool = False, storage: str = "png",
                        shard: Shard | None = None) -> ImageJobResult:
    """Render every utterance's windows into `out_dir`, skipping recordings already there.

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
        Open every finished file first and render the recordings with unreadable ones again.
    storage : {"png", "packed"}
        A file per window, or rows of the tree's packed store (pictures only); a tree keeps one.
    shard : Shard, optional
        Render only this shard's recordings, beside other shards' jobs; a later plain run merges them.

    Raises
    ------
    StorageError
        When the machine stops the job (disk full, read-only output): what was finished is kept, and the
        same call renders the rest once the cause is fixed.
    """
    out_dir = Path(out_dir)
    picture = FEATURES.get(config.feature).picture
    _check_job(config, storage, shard, picture)
    part = shard.name if shard else "all"
    tree_lock = job_lock(out_dir, "spectro images", shared=shard is not None)
    part_lock = (job_lock(out_dir, f"spectro images --shard {shard.index}/{shard.count}", name=f"{LOCK_FILE}.{part}")
                 if shard else contextlib.nullcontext())
    with tree_lock, part_lock:
        _claim_settings(out_dir, config, augmentation, storage)
        if shard is None:  # no other job can be writing here
            remove_stale_temporaries(out_dir)
        copies = range(1, augmentation.copies + 1) if augmentation else [0]
        sources = [(utt, copy) for utt in utterances for copy in copies]
        keys = _keys(out_dir, sources)
        mine = [i for i, key in enumerate(keys) if shard is None or shard.holds(key)]
        job = _Job(out_dir, config, augmentation, workers, progress, sources, keys, storage, part, picture)
        if verify:
            job.drop_unreadable(progress=progress)
        groups = job.group_statistics()
        for i in mine:
            utt, copy = sources[i]
            if keys[i] in job.done:
                continue
            if utt.path in job.known_bad:
                job.failures[i] = job.known_bad[utt.path]
            else:
                job.tasks.append(rendering.Task(i, utt.path, keys[i], copy,
                                                statistics=groups.of_recording(utt.path) if groups else None))
        return job.finish(merge=shard is None, mine=len(mine))


def _check_job(config: FeatureConfig, storage: str, shard: Shard | None, picture: bool) -> None:
    if storage not in STORAGES:
        raise ConfigError(f"--format {storage!r} must be one of {list(STORAGES)}")
    if storage == "packed" and not picture:
        raise ConfigError(f"--format packed stores pictures; feature {config.feature!r} makes matrices, which are "
                          ".npy files that training reads as they are")
    if shard is not None and config.normalise.grouped:
        raise ConfigError(f"--shard cannot render normalise.mode={config.normalise.mode!r}: the statistics of a group "
                          "need all of its recordings in one job; render such a tree without --shard (or one tree "
                          "per corpus on each machine)")


def _claim_settings(out_dir: Path, config: FeatureConfig, augmentation: WaveformAugmentConfig | None,
                    storage: str) -> None:
    """One tree, one set of settings and one storage: mixing them would silently corrupt training data.
    The first job to claim a new tree wins, even against a shard starting at the same moment."""
    path = out_dir / SETTINGS_FILE
    wanted = {"features": to_dict(config), "augmentation": augmentation and to_dict(augmentation), "storage": storage}
    if not path.is_file():
        tmp = out_dir / f".{SETTINGS_FILE}.{os.getpid()}.claim"
        tmp.write_text(json.dumps({**wanted, "tree_format": TREE_FORMAT, "spectro_version": __version__}, indent=2))
        try:
            os.link(tmp, path)  # fails if another job claimed the tree first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    saved = read_settings_file(out_dir)  # refuses trees of an older format
    existing = {"features": to_dict(from_dict(FeatureConfig, saved["features"])),  # fills in newer defaults
                "augmentation": saved.get("augmentation") and to_dict(from_dict(WaveformAugmentConfig,
                                                                                saved["augmentation"])),
                "storage": saved.get("storage", "png")}
    if existing != wanted:
        raise DataError(f"{str(out_dir)!r} holds images made with other settings "
                        f"({_first_difference(existing, wanted)}); choose another --out or remove it")


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


def _keys(out_dir: Path, sources: list[tuple[Utterance, int]]) -> list[str]:
    """Each source's recording key, refusing two sources on one key and any path outside the tree."""
    keys = [recording_key(u, copy) for u, copy in sources]
    seen: dict[str, Utterance] = {}
    root = out_dir.resolve()
    for (utt, _), key in zip(sources, keys):
        if key in seen and seen[key].path != utt.path:
            raise DataError(f"{seen[key].path} and {utt.path} would both be written to {key}")
        seen[key] = utt
        if not (root / key).resolve().is_relative_to(root):
            raise DataError(f"{utt.path} would be written outside {str(out_dir)!r}, to {key}")
    return keys


class _Journal:
    """A job's record of each recording it finished or rejected, appended as outcomes arrive."""

    def __init__(self, out_dir: Path, part: str):
        self.path = out_dir / f".journal.{part}.csv"
        self._handle = None

    def note(self, status: str, utt: Utterance, key: str, *, first_row: int = -1,
             windows: Sequence[tuple[float, float]] = (), reason: str = "", digest: str = "") -> None:
        if self._handle is None:
            new = not self.path.is_file()
            self._handle = open(self.path, "a", newline="", encoding="utf-8", errors="surrogateescape")
            if new:
                csv.writer(self._handle).writerow(JOURNAL_COLUMNS)
        spans = ";".join(f"{start:.3f}:{end:.3f}" for start, end in windows)
        csv.writer(self._handle).writerow([status, key, first_row, spans, reason, *(getattr(utt, c) for c in COLUMNS),
                                           digest])
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_journals(out_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """(part, row) for the whole rows of every journal in the tree (a torn last line is left out)."""
    found = []
    for path in sorted(out_dir.glob(".journal.*.csv")):
        part = path.name.removeprefix(".journal.").removesuffix(".csv")
        with open_csv(path) as handle:
            found += [(part, r) for r in csv.DictReader(handle) if len(r) == len(JOURNAL_COLUMNS)
                      and None not in r.values() and (r["status"] != "done" or len(r["audio_digest"]) == 32)]
    return found


def _journal_recording(row: dict[str, str], picture: bool) -> Recording:
    spans = [tuple(map(float, s.split(":"))) for s in row["windows"].split(";") if s]
    windows = [(window_file(row["recording"], k, picture), start, end) for k, (start, end) in enumerate(spans)]
    return Recording(row["recording"], Utterance(**{c: row[c] for c in COLUMNS}), row["audio_digest"], windows)


def _store_index(out_dir: Path) -> dict[str, tuple[str, int]]:
    """Recording key -> (part, first row) in a packed store's index."""
    meta = out_dir / PACKED_DIR / "meta.json"
    saved = json.loads(meta.read_text()) if meta.is_file() else {}
    parts = [name.removeprefix(f"{PARTS_DIR}/") for name, _ in saved.get("parts", [])]
    return {key: (parts[p], first) for key, p, first, _ in saved.get("windows", [])}


class _Job:
    """One run of the image job: what earlier runs finished, its tasks, what they found, and what is
    written at the end."""

    def __init__(self, out_dir: Path, config: FeatureConfig, augmentation, workers: int | None, progress: bool,
                 sources: list[tuple[Utterance, int]], keys: list[str], storage: str, part: str, picture: bool):
        self.out_dir, self.config, self.augmentation = out_dir, config, augmentation
        self.workers, self.progress, self.sources, self.keys = workers, progress, sources, keys
        self.storage, self.part, self.picture = storage, part, picture
        self.journal = _Journal(out_dir, part)
        index = _store_index(out_dir) if storage == "packed" else {}
        # recording key -> (recording, part, first row): the manifest's, then what journals add
        self.done = {r.key: (r, *index.get(r.key, ("", -1))) for r in recordings_of_rows(manifest_rows(out_dir))}
        self.known_bad = _still_rejected(out_dir / REJECTED_FILE)
        for journal_part, row in read_journals(out_dir):
            if row["status"] == "done":
                self.done[row["recording"]] = (_journal_recording(row, picture), journal_part, int(row["first_row"]))
            elif _unchanged_since(row["path"], out_dir / f".journal.{journal_part}.csv"):
                self.known_bad[row["path"]] = row["reason"]
        self.done = {k: v for k, v in self.done.items() if (v[1] if storage == "packed" else self._present(v[0]))}
        self.tasks: list[rendering.Task] = []
        self.failures: dict[int, str] = {}

    def _present(self, recording: Recording) -> bool:
        return all((self.out_dir / image).is_file() for image, _, _ in recording.windows)

    def drop_unreadable(self, *, progress: bool) -> None:
        """Forget finished recordings with a window file that cannot be read back whole (and delete those
        files), so that the job renders them again."""
        if self.storage == "packed":
            return
        files = [(key, self.out_dir / image) for key, (r, _, _) in self.done.items() for image, _, _ in r.windows]
        for key, path in tqdm(files, unit="file", desc="verifying", disable=not progress, leave=False):
            try:
                load_window(path)
            except Exception as error:  # truncated or otherwise broken: PIL and numpy raise many kinds
                log.warning("%s cannot be read (%s); rendering its recording again", path, error)
                path.unlink()
                self.done.pop(key, None)

    def group_statistics(self) -> GroupStatistics | None:
        """Band statistics of every recording's speaker or corpus: from the tree, or from a first pass
        over the recordings it has not seen (which may only form new groups)."""
        settings = self.config.normalise
        if not settings.grouped:
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
        embeddings: dict[str, np.ndarray] = {}
        unknown = corpora_without_speakers(recordings) if settings.unknown_speakers == "encoder" else set()
        tasks = [rendering.Task(i, self.sources[i][0].path, self.keys[i], 0, "statistics",
                                embed=settings.mode == "speaker" and self.sources[i][0].corpus in unknown)
                 for i in new]
        for outcome in self._run(tasks, "statistics"):
            if outcome.statistics is not None:
                found[self.sources[outcome.index][0].path] = outcome.statistics
            if outcome.embedding is not None:
                embeddings[self.sources[outcome.index][0].path] = outcome.embedding
        saved = saved.extended([u for u in recordings if u.path in found], found, self.config, embeddings)
        with atomic_open(path) as handle:
            json.dump(saved.as_dict(), handle)
        return saved

    def finish(self, *, merge: bool, mine: int) -> ImageJobResult:
        """Render the tasks, noting each outcome in the journal; then, for a plain run, write the rejects,
        the manifest (and a packed store's index) and drop the journals they now hold."""
        known_bad = len(self.failures)
        log.info("%d recording(s) to render, %d already present, %d rejected before and unchanged",
                 len(self.tasks), mine - len(self.tasks) - known_bad, known_bad)
        try:
            fault, written = self._collect(self._run(self.tasks, "images"))
        finally:
            self.journal.close()
        rejected = list({self.sources[i][0].path: (self.sources[i][0], reason)
                         for i, reason in sorted(self.failures.items())}.values())
        if merge:
            self._write_tree(rejected)
        if fault:
            raise StorageError(f"{fault}; the images finished so far are kept; free space or fix the permissions "
                               "and run the same command again to render the rest")
        return ImageJobResult(self.out_dir, written=written, skipped=mine - len(self.tasks) - known_bad,
                              rejected=rejected)

    def _write_tree(self, rejected: list[tuple[Utterance, str]]) -> None:
        """rejected.csv, manifest.csv and a packed store's index from everything done; then the journals go."""
        journals = sorted(self.out_dir.glob(".journal.*.csv"))
        bad = {u.path for u, _ in rejected}
        earlier = [(u, reason) for u, reason in _rejected_rows(self.out_dir / REJECTED_FILE)
                   if u.path not in bad and u.path in self.known_bad]
        earlier += [(Utterance(**{c: row[c] for c in COLUMNS}), row["reason"]) for _, row in read_journals(self.out_dir)
                    if row["status"] == "rejected" and row["path"] not in bad]
        _write_rejected(self.out_dir / REJECTED_FILE, list({u.path: (u, r) for u, r in earlier + rejected}.values()))
        done = sorted(self.done.values(), key=lambda entry: entry[0].key)
        write_tree_manifest(self.out_dir, [r for r, _, _ in done])
        if self.storage == "packed":
            write_rendered_index(self.out_dir, done, (3, self.config.image.size, self.config.image.size))
        for journal in journals:
            journal.unlink()

    def _storage(self) -> rendering.Storage:
        if self.storage == "png":
            return rendering.Storage.files(self.out_dir, self.picture)
        part = self.out_dir / PACKED_DIR / PARTS_DIR / self.part
        row_bytes = 3 * self.config.image.size ** 2
        return rendering.Storage.packed(self.out_dir, part, part.stat().st_size // row_bytes if part.is_file() else 0)

    def _run(self, tasks: list[rendering.Task], desc: str) -> Iterator[rendering.Outcome]:
        """Carry out `tasks` on every core, yielding outcomes as they arrive."""
        import multiprocessing

        if not tasks:
            return
        workers = max(1, min(self.workers or os.cpu_count() or 1, len(tasks)))
        storage = self._storage()
        with tqdm(total=len(tasks), unit="file", desc=desc, disable=not self.progress or not tasks) as bar:
            if workers == 1:
                with threadpool_limits(1):  # the workers' single-threaded maths; the caller's limits come back after
                    rendering.init_worker(self.config, self.augmentation, storage)
                    try:
                        for outcome in map(rendering.render, tasks):
                            bar.update()
                            yield outcome
                    finally:
                        rendering.close_worker()
                return
            rendering.warm_up(self.config)
            with multiprocessing.get_context("fork").Pool(workers, rendering.init_worker,
                                                          (self.config, self.augmentation, storage)) as pool:
                for outcome in pool.imap_unordered(rendering.render, tasks, chunksize=4):
                    bar.update()
                    yield outcome

    def _collect(self, outcomes: Iterable[rendering.Outcome]) -> tuple[str | None, int]:
        """Note each outcome as it arrives; stop at the first fault of the machine and return it, with
        the number of recordings rendered."""
        written = 0
        for outcome in outcomes:
            if outcome.fault:
                return outcome.fault, written
            utt, key = self.sources[outcome.index][0], self.keys[outcome.index]
            if outcome.rejected:
                self.failures[outcome.index] = outcome.rejected
                self.journal.note("rejected", utt, key, reason=outcome.rejected)
                log.warning("rejected %s", outcome.rejected)
                continue
            windows = [(window_file(key, k, self.picture), s, e) for k, (s, e) in enumerate(outcome.windows)]
            self.done[key] = (Recording(key, utt, outcome.digest, windows), self.part, outcome.first_row)
            self.journal.note("done", utt, key, first_row=outcome.first_row, windows=outcome.windows,
                              digest=outcome.digest)
            written += 1
            for problem in outcome.warnings:
                log.warning("%s: %s (kept; quality.action=reject would leave it out)", utt.path, problem)
        return None, written


def _still_rejected(path: Path) -> dict[str, str]:
    """Sources rejected by an earlier run and not modified since: retrying them would fail again."""
    return {u.path: reason for u, reason in _rejected_rows(path) if _unchanged_since(u.path, path)}


def _unchanged_since(source: str, verdict: Path) -> bool:
    """`source` has not changed since the file that holds a verdict on it was written."""
    return not os.path.exists(source) or os.path.getmtime(source) <= verdict.stat().st_mtime


def _rejected_rows(path: Path) -> list[tuple[Utterance, str]]:
    if not path.is_file():
        return []
    with open_csv(path) as handle:
        return [(Utterance(**{c: row[c] for c in COLUMNS}), row["reason"]) for row in csv.DictReader(handle)]


def _write_rejected(path: Path, rejected: list[tuple[Utterance, str]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, "reason"])
        for utt, reason in rejected:
            writer.writerow([*(getattr(utt, c) for c in COLUMNS), reason])
