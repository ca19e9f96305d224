"""What a corpus parser returns, and the registry that finds parsers by name."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError, DataError
from ..registry import Registry

# What a corpus folder's audio may be: soundfile decodes WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF and AU;
# the rest go through librosa/audioread where a decoder is installed, and are rejected with the reason if not.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".m4a",
                  ".aac", ".wma")


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled recording. `speaker` is unique across corpora (prefixed with the corpus)."""

    path: str
    corpus: str
    speaker: str
    emotion: str
    language: str
    gender: str = ""  # "female", "male", or "" where the corpus does not say

    @property
    def stem(self) -> str:
        return Path(self.path).stem


@dataclasses.dataclass
class CorpusScan:
    """A parser's findings: utterances with canonical emotions, plus everything it did not keep.

    `unmatched` holds (path, reason) for audio files that follow none of the corpus's naming
    conventions; they are reported, never guessed. `dropped` counts recognised utterances whose
    corpus label has no canonical emotion (e.g. IEMOCAP "frustrated"), keyed by that label.
    """

    corpus: str
    utterances: list[Utterance] = dataclasses.field(default_factory=list)
    unmatched: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dropped: Counter = dataclasses.field(default_factory=Counter)


CorpusParser = Callable[..., CorpusScan]
CORPORA = Registry("corpus")


def register_corpus(name: str) -> Callable[[CorpusParser], CorpusParser]:
    """Decorator: make `parser(root, *, option=...)` available as corpus `name`."""
    return CORPORA.register(name)


def list_corpora() -> list[str]:
    return CORPORA.names()


def scan_corpus(name: str, root: str | Path, /, **options) -> CorpusScan:
    """Parse the corpus distribution at `root` with the parser registered as `name`."""
    parser = CORPORA.get(name)
    accepted = [p.name for p in inspect.signature(parser).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"corpus option {name}.{key} is unknown; {name} accepts {accepted or 'no options'}")
    root = Path(root).expanduser()
    if not root.is_dir():
        from ..fileio import describe_path

        raise DataError(f"corpus {name}: path {describe_path(root)} is not a folder")
    scan = parser(root.resolve(), **options)
    if not scan.utterances and not scan.unmatched:
        raise DataError(f"corpus {name}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {str(root)!r}")
    return scan


def iter_audio_files(root: Path, skipped: list[tuple[str, str]] | None = None) -> Iterator[Path]:
    """Every audio file below `root` (by suffix, any case), in a stable order.

    Symlinked folders are followed, once: a folder reached again (a symlink loop) and a symlink to
    nothing are not silently passed over but appended to `skipped` as (path, reason).
    """
    skipped = [] if skipped is None else skipped
    visited: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            skipped.append((folder, f"symlink loop: the folder {real} was already read"))
            subfolders.clear()
            continue
        visited.add(real)
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            if not path.exists():
                skipped.append((str(path), "broken symlink: it points to nothing"))
                continue
            yield path
