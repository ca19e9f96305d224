"""What a corpus parser returns, and the registry that finds parsers by name."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

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

    Symlinked folders are followed, as often as they are linked. A folder that leads back to one of its
    own ancestors (a symlink loop), a link to a filesystem root (``/``, a mount point) and a symlink to
    nothing are not followed, and not passed over silently: each is appended to `skipped` as (path, reason).
    """
    skipped = [] if skipped is None else skipped
    yield from _walk(Path(root), (os.path.realpath(root),), skipped)


def _walk(folder: Path, ancestors: tuple[str, ...], skipped: list[tuple[str, str]]) -> Iterator[Path]:
    """The audio files of `folder` and its subfolders; `ancestors` are the real paths of the folders above
    it on this branch, itself included."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        skipped.append((str(folder), f"cannot be read: {error.strerror or error}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not path.exists():
            skipped.append((str(path), "broken symlink: it points to nothing"))
        elif entry.is_dir():
            real = os.path.realpath(path)
            if entry.is_symlink() and (real in ancestors):
                skipped.append((str(path), f"symlink loop: it leads back to {real}, a folder above it"))
            elif entry.is_symlink() and os.path.ismount(real):
                skipped.append((str(path), f"symlink to the filesystem root {real}: not followed; give that folder "
                                           "as a corpus of its own if it is one"))
            else:
                yield from _walk(path, (*ancestors, real), skipped)
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            yield path
