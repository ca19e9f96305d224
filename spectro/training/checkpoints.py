"""Where a run's checkpoints go: last.pt (everything to resume), best.pt (what predicting needs), and
timed recovery points; only the main process of a distributed run writes them."""

from __future__ import annotations

import time
from pathlib import Path

from ..checkpoint import load_checkpoint, save_checkpoint


class CheckpointManager:
    def __init__(self, run_dir: Path, *, main: bool = True, recovery_minutes: float = 0.0):
        self.last, self.best = run_dir / "last.pt", run_dir / "best.pt"
        self.main, self.recovery_seconds = main, 60.0 * recovery_minutes
        self._saved_at = time.monotonic()

    def load_last(self) -> dict | None:
        return load_checkpoint(self.last) if self.last.exists() else None

    def save_last(self, state: dict) -> None:
        if self.main:
            save_checkpoint(state, self.last)
        self._saved_at = time.monotonic()

    def save_best(self, state: dict) -> None:
        if self.main:
            save_checkpoint(state, self.best)

    def recovery_due(self) -> bool:
        """A mid-epoch last.pt is due: the run has gone `recovery_minutes` without one."""
        return bool(self.recovery_seconds) and time.monotonic() - self._saved_at >= self.recovery_seconds
