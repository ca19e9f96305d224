"""One job per image tree or run folder: an advisory lock held for the whole job.

The lock is ``flock`` on a ``.lock`` file in the folder, which the kernel releases when its holder
exits, however it exits; so a lock left by a killed job is simply taken by the next one. The file
names the holder's PID, so a refused job can say who is working there. Shards of one job (several
machines rendering parts of one tree) share the folder's lock and each holds its own part's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def job_lock(folder: str | os.PathLike, job: str, *, wait: bool = False, shared: bool = False,
             name: str = LOCK_FILE) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; refuse (DataError) if another live job holds it,
    or, with `wait`, wait for it to finish.

    `job` names this job in the lock file, e.g. "spectro images". A `shared` lock may be held by
    several jobs at once (the shards of one tree), and keeps out the exclusive ones. A folder that
    this job created is removed again if the job fails having written nothing into it.
    """
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / name, "a+")
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DataError(f"{str(folder)!r} is in use by {_holders(folder, handle)}; wait for it to finish, or stop "
                            "it, and run again") from None
        if not shared:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{job} (PID {os.getpid()})\n")
            handle.flush()
        yield
    except BaseException:
        handle.close()
        if created:
            _remove_if_empty(folder, name)
        raise
    finally:
        handle.close()  # releases the lock


def _holders(folder: Path, handle) -> str:
    handle.seek(0)
    text = handle.read().strip()
    shards = sorted(p.read_text().strip() for p in folder.glob(f"{LOCK_FILE}.shard-*") if p.read_text().strip())
    return text or (", ".join(shards) if shards else "another process")


def _remove_if_empty(folder: Path, lock_name: str) -> None:
    """Remove `folder` if only its lock and empty folders are left in it."""
    leftovers = [p for p in folder.rglob("*") if p.is_file() and p.name != lock_name]
    if leftovers:
        return
    with contextlib.suppress(OSError):
        (folder / lock_name).unlink()
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            path.rmdir()
        folder.rmdir()
