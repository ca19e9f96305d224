"""Atomic file writes: a reader never sees a half-written output, and an interrupted job leaves none."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, durable: bool = True, **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds.

    The rename alone protects against killed processes; `durable` also fsyncs, against power loss,
    at a cost that matters only when writing thousands of small files. The file's permissions follow
    the umask, as with ``open()``, so colleagues can read shared outputs.
    """
    path = Path(path)
    if "b" not in mode:  # text: UTF-8, with file names that are not valid UTF-8 kept byte for byte
        kwargs = {"encoding": "utf-8", "errors": "surrogateescape", **kwargs}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what a plain open() would give
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries left by writes that were killed; returns how many were removed."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def describe_path(path: str | os.PathLike) -> str:
    """`path` as given, plus the folder it was resolved against when it is relative, for error messages."""
    path = Path(path)
    return repr(str(path)) if path.is_absolute() else f"{str(path)!r} (looked for in {os.getcwd()})"
