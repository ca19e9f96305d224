"""A run's folders and the files in them: one home for their names.

``checkpoints/<run>/`` holds last.pt (everything to resume), best.pt (what predicting needs), lp.pt
(with train.lp_ft: the model after its LP stage),
config.yaml (the resolved settings), summary.json (the final scores) and the run's lock;
``runs/<run>/`` holds its TensorBoard logs. Only the main process of a distributed run writes.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..checkpoint_file import load_checkpoint, save_checkpoint
from ..config import RunConfig
from ..errors import ConfigError

OWNER_FILE = ".run"  # in the TensorBoard folder: the checkpoint folder whose logs it holds


class RunFolder:
    def __init__(self, run: RunConfig, *, main: bool = True, recovery_minutes: float = 0.0):
        self.root = Path(run.checkpoint_dir) / run.name
        self.logs = Path(run.log_dir) / run.name
        self.last, self.best = self.root / "last.pt", self.root / "best.pt"
        self.lp = self.root / "lp.pt"  # LP-FT: the model after its LP stage
        self.summary, self.config = self.root / "summary.json", self.root / "config.yaml"
        self.main, self.recovery_seconds = main, 60.0 * recovery_minutes
        self._saved_at = time.monotonic()

    def check_logs(self) -> None:
        """The TensorBoard folder is keyed to its run's checkpoint folder: two runs of one name in different
        checkpoint_dirs must not write their curves into one folder."""
        owner, mine = self.logs / OWNER_FILE, str(self.root.resolve())
        if owner.is_file() and owner.read_text().strip() != mine:
            raise ConfigError(f"the TensorBoard folder {self.logs} holds the logs of the run "
                              f"{owner.read_text().strip()}"
                              f", not {mine}; name this run differently (--run-name) or give it its own run.log_dir")

    def claim_logs(self) -> None:
        self.check_logs()
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.logs / OWNER_FILE).write_text(str(self.root.resolve()) + "\n")

    def load_last(self) -> dict | None:
        return load_checkpoint(self.last) if self.last.exists() else None

    def save_last(self, state: dict) -> None:
        if self.main:
            save_checkpoint(state, self.last)
        self._saved_at = time.monotonic()

    def save_best(self, state: dict) -> None:
        if self.main:
            save_checkpoint(state, self.best)

    def save_lp(self, state: dict) -> None:
        if self.main:
            save_checkpoint(state, self.lp)

    def recovery_due(self) -> bool:
        """A mid-epoch last.pt is due: the run has gone `recovery_minutes` without one."""
        return bool(self.recovery_seconds) and time.monotonic() - self._saved_at >= self.recovery_seconds
