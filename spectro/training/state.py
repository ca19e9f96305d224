"""A run's progress and random state, saved whole in last.pt so that --resume replays exactly."""

from __future__ import annotations

import dataclasses
import random

import torch


def seed_for(seed: int, epoch: int, stream: int) -> int:
    """The seed of one random stream of one epoch (0: draw order, 1: augmentation, 2: torch, 3: python)."""
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63)


@dataclasses.dataclass
class RunState:
    """Where a run is: the next epoch and batch, the running metrics of a part-done epoch, the best
    validation score so far, and every finished epoch's record."""

    epoch: int = 0
    batch: int = 0
    partial: dict | None = None
    best: dict = dataclasses.field(default_factory=lambda: {"uar": -1.0, "epoch": 0})
    bad_epochs: int = 0
    history: list = dataclasses.field(default_factory=list)
    finished: bool = False
    linear_probe: dict | None = None  # LP-FT: the fitted head's strength and validation UAR

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for field in dataclasses.fields(self):
            default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
            setattr(self, field.name, state.get(field.name, default))  # a key newer than the checkpoint


def seed_epoch(seed: int, epoch: int, augment_rng: torch.Generator) -> None:
    """This epoch's randomness, from (seed, epoch): augmentation, dropout and python's generator."""
    augment_rng.manual_seed(seed_for(seed, epoch, 1))
    torch.manual_seed(seed_for(seed, epoch, 2))
    random.seed(seed_for(seed, epoch, 3))


def capture_rng(augment_rng: torch.Generator, *, cuda: bool) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "augment": augment_rng.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else []}


def restore_rng(saved: dict, augment_rng: torch.Generator, *, cuda: bool) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    augment_rng.set_state(saved["augment"])
    if cuda and saved["cuda"]:
        torch.cuda.set_rng_state_all(saved["cuda"])
