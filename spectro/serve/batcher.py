"""The micro-batcher: the windows of concurrent requests are scored together, in one forward pass.

A forward pass over 16 windows costs far less than 16 passes over one, so under load the server
gathers the windows that arrive within a few milliseconds and scores them at once: throughput rises
with the number of clients. Alone, a request is not held back: the worker waits only while other
admitted requests are still turning their audio into pictures (and so will want the model soon), and
never longer than `max_wait` seconds.

A micro-batch is scored in passes of power-of-two sizes, largest first (13 windows: 8 + 4 + 1), so the
model only ever sees a handful of batch shapes: every new shape makes oneDNN and the allocator keep another
set of buffers, and memory grew by 140% over 60 passes of random sizes (EfficientNet-Lite0 on the CPU),
where powers of two stay level once each has run (see `pass_sizes`).

Admission bounds the work in hand: at most `max_requests` recordings are between their upload and
their answer; one more is refused at once (`QueueFull`, HTTP 503), so memory stays bounded however
many clients push.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..errors import SpectroError

log = logging.getLogger(__name__)


class QueueFull(SpectroError):
    """Too many recordings are waiting already; the client should come back after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass
class _Job:
    member: int  # which model of an ensemble scores it (0 for one model)
    inputs: Sequence[dict[str, np.ndarray]]  # windows of one recording, all of one shape
    future: concurrent.futures.Future

    @property
    def key(self) -> tuple:
        """Jobs of one key stack into one batch: the same model, windows of the same shapes (never padded)."""
        return self.member, tuple((name, a.shape) for name, a in self.inputs[0].items())


class MicroBatcher:
    """Scores jobs (windows of one recording, for one model) on a worker thread, several jobs per forward pass.

    Parameters
    ----------
    score : callable
        ``score(member, inputs)``: the class probabilities, (windows, classes), of windows of one shape; here
        ``Predictor.score_inputs`` of that member, so a served answer is what `Predictor` gives.
    max_windows : int
        The most windows in one forward pass (memory and latency per pass).
    max_wait : float
        Seconds the worker waits at most for requests still preparing their windows.
    max_requests : int
        Recordings admitted at once (see `admit`).
    """

    def __init__(self, score: Callable[[int, Sequence[dict[str, np.ndarray]]], np.ndarray], *, max_windows: int = 32,
                 max_wait: float = 0.005, max_requests: int = 64):
        if max_windows < 1 or max_requests < 1 or max_wait < 0:
            raise ValueError(f"max_windows={max_windows} and max_requests={max_requests} must be positive and "
                             f"max_wait={max_wait} not negative")
        self.score, self.max_windows, self.max_wait, self.max_requests = score, max_windows, max_wait, max_requests
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._admitted = 0  # recordings between upload and answer
        self._submitted = 0  # of those, jobs queued or being scored
        self._thread: threading.Thread | None = None
        self.batches = collections.Counter()  # micro-batches by number of windows, for tests and logs
        self.passes = collections.Counter()  # forward passes by number of windows

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="spectro-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the pass in hand, then fail what is still queued; the worker thread ends."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join()
        self._thread = None
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(SpectroError("the server is stopping"))

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextlib.contextmanager
    def admit(self, count: int = 1) -> Iterator[None]:
        """Hold `count` places for recordings from upload to answer; `QueueFull` when they are not free."""
        with self._lock:
            if self._admitted + count > self.max_requests:
                raise QueueFull(f"the server is busy: {self._admitted} recording(s) in hand, at most "
                                f"{self.max_requests}; try again shortly", retry_after=1)
            self._admitted += count
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= count

    def submit(self, member: int, inputs: Sequence[dict[str, np.ndarray]]) -> concurrent.futures.Future:
        """Queue windows of one recording (at most `max_windows`, of one shape); the future gives their
        probabilities, (windows, classes), or the scoring's exception."""
        if not 0 < len(inputs) <= self.max_windows:
            raise ValueError(f"a job holds 1 to {self.max_windows} windows, not {len(inputs)}")
        if self._thread is None:
            raise SpectroError("the batcher is not running")
        job = _Job(member, inputs, concurrent.futures.Future())
        with self._lock:
            self._submitted += 1
        job.future.add_done_callback(self._release)
        self._jobs.put(job)
        return job.future

    def _release(self, _future) -> None:
        with self._lock:
            self._submitted -= 1

    def _preparing(self) -> bool:
        """Whether an admitted recording has no job queued yet (it is decoding or drawing its pictures)."""
        with self._lock:
            return self._admitted > self._submitted

    def _work(self) -> None:
        carried: _Job | None = None  # a job that did not fit the last pass opens the next
        while True:
            job = carried or self._jobs.get()
            if job is None:
                return
            batch, carried, stop = self._gather(job)
            self._run(batch)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """Jobs for one pass: those queued, and those arriving within `max_wait` while requests prepare.
        Returns the batch, a job that would overfill it (for the next pass), and whether to stop after it."""
        batch, windows = [first], len(first.inputs)
        deadline = time.monotonic() + self.max_wait
        while windows < self.max_windows:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._preparing():
                    break
                try:
                    job = self._jobs.get(timeout=min(remaining, 0.001))  # look again at who is preparing
                except queue.Empty:
                    continue
            if job is None:
                return batch, None, True
            if windows + len(job.inputs) > self.max_windows:
                return batch, job, False
            batch.append(job)
            windows += len(job.inputs)
        return batch, None, False

    def _run(self, batch: list[_Job]) -> None:
        """One forward pass per model and window shape among the batch's live jobs; each job gets its rows."""
        groups: dict[tuple, list[_Job]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():  # a client that went away is not scored
                groups.setdefault(job.key, []).append(job)
        for jobs in groups.values():
            inputs = [arrays for job in jobs for arrays in job.inputs]
            self.batches[len(inputs)] += 1
            try:
                probabilities = np.concatenate([self._pass(jobs[0].member, inputs[start:start + size])
                                                for start, size in pass_sizes(len(inputs))])
            except Exception as error:  # one bad pass fails its own jobs, never the worker
                log.exception("scoring %d window(s) failed", len(inputs))
                for job in jobs:
                    job.future.set_exception(error)
                continue
            offsets = np.cumsum([0] + [len(job.inputs) for job in jobs])
            for job, start, end in zip(jobs, offsets[:-1], offsets[1:]):
                job.future.set_result(probabilities[start:end])

    def _pass(self, member: int, inputs: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        self.passes[len(inputs)] += 1
        return self.score(member, inputs)


def pass_sizes(windows: int) -> list[tuple[int, int]]:
    """(start, size) of the forward passes over a micro-batch of `windows`: its binary digits, largest first."""
    sizes = [1 << bit for bit in reversed(range(windows.bit_length())) if windows >> bit & 1]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]
