"""Stopping a run cleanly: Ctrl-C or SIGTERM (a cluster's pre-emption) ends it between optimiser steps."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a state from which --resume continues exactly."""


class GracefulStop:
    """Turns Ctrl-C and SIGTERM into a request that the loop honours after the step in hand, so the
    state it saves is whole; a second Ctrl-C stops at once, saving nothing more."""

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(number).name
        log.warning("%s: finishing the step in hand, then saving and stopping (Ctrl-C again stops at once)",
                    self.signal)
