"""What a rendering worker does with one recording: decode it, check it, cut it into windows, draw each
window, and store them: a PNG (or .npy) file per window, or rows of the tree's packed store.

Workers are forked processes (or the job's own process); each reads its settings from this module's
state, set once by `init_worker`, so that a task carries only what differs between recordings.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .allocator import keep_freed_memory
from .audio import audio_digest, audio_problems, audio_windows, load_audio
from .config import FeatureConfig, WaveformAugmentConfig
from .errors import DataError
from .features import recording_statistics, window_arrays
from .image_tree import save_window, window_file
from .normalise import BandStatistics
from .packed import write_all
from .speakers import embed
from .waveform_augment import augment_waveform, copy_rng


@dataclasses.dataclass(frozen=True)
class Task:
    index: int
    source: str
    key: str  # the recording key in the tree
    copy: int  # augmented copy number; 0 for the recording itself
    kind: str = "render"  # or "statistics": the recording's band statistics only
    statistics: BandStatistics | None = None  # of the recording's group, to render with domain normalisation
    embed: bool = False  # a "statistics" task: also the recording's speaker embedding (spectro.speakers)


@dataclasses.dataclass(frozen=True)
class Outcome:
    index: int
    digest: str | None = None
    windows: tuple[tuple[float, float], ...] = ()  # (start, end) of each window, in the recording's clock
    first_row: int = -1  # packed storage: where its windows went
    warnings: tuple[str, ...] = ()
    statistics: BandStatistics | None = None  # a "statistics" task's answer
    embedding: np.ndarray | None = None  # and, if asked, the speaker embedding
    rejected: str | None = None  # the input cannot be used: why
    fault: str | None = None  # the machine stopped the job: disk full, read-only output, ...


@dataclasses.dataclass
class Storage:
    """Where rendered windows go: files under `root`, or rows of `part` (packed storage) from the row
    that `next_row` holds, which the workers share."""

    root: Path
    picture: bool
    part: Path | None = None
    next_row: object = None  # multiprocessing.Value("q"), shared by forked workers

    @classmethod
    def files(cls, root: Path, picture: bool) -> Storage:
        return cls(root, picture)

    @classmethod
    def packed(cls, root: Path, part: Path, first_free_row: int) -> Storage:
        part.parent.mkdir(parents=True, exist_ok=True)
        return cls(root, True, part, multiprocessing.get_context("fork").Value("q", first_free_row))

    def store(self, key: str, arrays: np.ndarray, fd: int | None) -> int:
        """Write a recording's windows; returns the first row they took (-1 for files)."""
        if self.part is None:
            for k, array in enumerate(arrays):
                save_window(array, self.root / window_file(key, k, self.picture))
            return -1
        with self.next_row.get_lock():  # rows are reserved by one worker at a time, then written at leisure
            first = self.next_row.value
            self.next_row.value += len(arrays)
        write_all(fd, arrays, first * arrays[0].nbytes)
        return first


_config: FeatureConfig | None = None
_augmentation: WaveformAugmentConfig | None = None
_storage: Storage | None = None
_fd: int | None = None  # this worker's handle on the packed part


def init_worker(config: FeatureConfig, augmentation: WaveformAugmentConfig | None, storage: Storage) -> None:
    """A worker's settings. It ignores Ctrl-C: the job's own process stops the workers and says how to go on."""
    global _config, _augmentation, _storage, _fd
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)  # one process per core; nested BLAS threads would only fight
    keep_freed_memory()
    _config, _augmentation, _storage = config, augmentation, storage
    _fd = os.open(storage.part, os.O_WRONLY | os.O_CREAT, 0o666) if storage.part is not None else None


def close_worker() -> None:
    global _fd
    if _fd is not None:
        os.close(_fd)
        _fd = None


def warm_up(config: FeatureConfig) -> None:
    """Render one short noise burst before forking: the workers then inherit the imported libraries and
    the cached filter bank and colour map instead of each paying for them (about a second)."""
    noise = np.random.default_rng(0).standard_normal(config.audio.sample_rate // 10).astype(np.float32)
    windows = audio_windows(noise, config.audio)
    window_arrays(windows, config, recording_statistics(windows, config) if config.normalise.mode != "none" else None)


def render(task: Task) -> Outcome:
    """Carry out one task; never raises for what one input provokes."""
    config = _config
    try:
        y = load_audio(task.source, sr=config.audio.sample_rate)
        problems = tuple(audio_problems(y, config.audio, config.quality))
        if problems and config.quality.action == "reject":
            return Outcome(task.index, rejected=f"{task.source}: {'; '.join(problems)}")
        if task.kind == "statistics":
            return Outcome(task.index, statistics=recording_statistics(audio_windows(y, config.audio), config),
                           embedding=embed(y, config.audio.sample_rate) if task.embed else None)
        augment = None
        if task.copy:
            rng = copy_rng(task.key.split("/", 1)[1].removesuffix(f"__aug{task.copy}"), task.copy, _augmentation.seed)
            augment = lambda y: augment_waveform(y, sr=config.audio.sample_rate,  # noqa: E731
                                                 config=_augmentation, rng=rng)
        windows = audio_windows(y, config.audio, augment=augment)
        first = _storage.store(task.key, window_arrays(windows, config, task.statistics), _fd)
        return Outcome(task.index, digest=audio_digest(y), windows=tuple((w.start, w.end) for w in windows),
                       first_row=first, warnings=problems)
    except DataError as error:  # the input's fault: recorded, and the job goes on
        return Outcome(task.index, rejected=str(error))
    except OSError as error:  # the machine's fault: the job stops, and nothing is held against the input
        where = error.filename or (_storage.part if _storage.part is not None else task.key)
        return Outcome(task.index, fault=f"cannot write {where}: {error.strerror or error}")
    except Exception as error:  # anything else that one input provokes must not stop the job either
        return Outcome(task.index, rejected=f"{task.source}: {type(error).__name__}: {error}")
