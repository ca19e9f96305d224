"""One job per image tree or run folder: an advisory lock held for the whole job.

The lock is ``flock`` on a ``.lock`` file in the folder, which the kernel releases when its holder
exits, however it exits; so a lock left by a killed job is simply taken by the next one. The file
names the holder's PID, so a refused job can say who is working there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import DataError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def job_lock(folder: str | os.PathLike, job: str, *, wait: bool = False) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; refuse (DataError) if another live job holds it,
    or, with `wait`, wait for it to finish.

    `job` names this job in the lock file, e.g. "spectro images".
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DataError(f"{str(folder)!r} is in use by {holder}; wait for it to finish, or stop it, "
                            "and run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{job} (PID {os.getpid()})\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
