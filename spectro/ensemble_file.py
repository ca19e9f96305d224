"""Ensemble files: which checkpoints, with which weights, and the weighted mean of their probabilities.

An ensemble file is a small JSON file (``spectro ensemble`` writes it) that `evaluate`, `predict`
and ``load_predictor`` accept wherever a checkpoint goes. Member paths are relative to the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .fileio import atomic_open

ENSEMBLE_KEY = "spectro_ensemble"


@dataclasses.dataclass
class Member:
    checkpoint: str
    weight: float


@dataclasses.dataclass
class Ensemble:
    """The members to score and their weights, and the classes an ensemble file says they decide among
    (None for checkpoints given as a list)."""

    members: list[Member]
    classes: list[str] | None = None

    def check_classes(self, member_classes: Sequence[Sequence[str]], where: str) -> None:
        """Refuse members that decide among other classes than each other, or than the file says."""
        first = list(member_classes[0])
        if any(list(c) != first for c in member_classes):
            raise ConfigError(f"{where}: the members decide among different classes "
                              f"({[list(c) for c in member_classes]})")
        if self.classes is not None and list(self.classes) != first:
            raise DataError(f"{where}: the file names the classes {self.classes}, but its members decide among "
                            f"{first}; it was edited or its members replaced; choose the weights again with "
                            "spectro ensemble")


def is_ensemble_file(path: str | os.PathLike) -> bool:
    """A JSON file: an ensemble file, or a damaged one (which `read_ensemble` then refuses, saying why)."""
    path = Path(path)
    return path.suffix.lower() == ".json" and path.is_file()


def read_ensemble(specs: Sequence[str | os.PathLike]) -> Ensemble:
    """The members named: checkpoints with equal weights, or the members, weights and classes of one
    ensemble file (its checkpoint paths are relative to the file), checked field by field."""
    specs = [Path(s) for s in specs]
    files = [s for s in specs if is_ensemble_file(s)]
    if files and len(specs) > 1:
        raise ConfigError(f"{files[0]} is an ensemble file; give it alone, or list checkpoints instead")
    if not files:
        if not specs:
            raise ConfigError("no checkpoint given")
        return Ensemble([Member(str(s), 1.0 / len(specs)) for s in specs])
    path = files[0]
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"ensemble file {str(path)!r} is not valid JSON ({error}); it was cut short or edited: "
                        "write it again with spectro ensemble") from None
    members = _members(saved, path)
    for m in members:
        if not Path(m.checkpoint).is_file():
            raise DataError(f"ensemble {path}: member {m.checkpoint} does not exist")
    return Ensemble(members, list(saved["classes"]))


def _members(saved, path: Path) -> list[Member]:
    """The members of a parsed ensemble file, or a DataError saying which field is wrong."""
    def wrong(what: str) -> DataError:
        return DataError(f"ensemble file {str(path)!r}: {what}; write it again with spectro ensemble")

    if not isinstance(saved, dict) or saved.get(ENSEMBLE_KEY) != 1:
        raise wrong(f"it is not an ensemble file (no \"{ENSEMBLE_KEY}\": 1)")
    classes, members = saved.get("classes"), saved.get("members")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise wrong(f"'classes' must list at least two class names, not {classes!r}")
    if not isinstance(members, list) or not members:
        raise wrong(f"'members' must list at least one member, not {members!r}")
    found = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("checkpoint"), str) or not m["checkpoint"]:
            raise wrong(f"member {i + 1} must be {{\"checkpoint\": PATH, \"weight\": NUMBER}}, not {m!r}")
        weight = m.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise wrong(f"member {i + 1} ({m['checkpoint']}) must have a weight >= 0, not {weight!r}")
        found.append(Member(str((path.parent / m["checkpoint"]).resolve()), float(weight)))
    if sum(m.weight for m in found) <= 0:
        raise wrong("the weights are all zero")
    return found


def combine(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' (N, C) probabilities (weights need not sum to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(probabilities) != len(w) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights={list(w)} must be one non-negative weight per member, not all zero")
    return np.tensordot(w / w.sum(), np.stack(probabilities), axes=1)


def write_ensemble(path: str | os.PathLike, members: Sequence[Member], *, classes: Sequence[str],
                   chosen_by: dict) -> Path:
    """The ensemble file: members (paths relative to the file), weights, classes and how they were chosen."""
    path = Path(path)
    root = path.resolve().parent
    data = {ENSEMBLE_KEY: 1, "classes": list(classes), "chosen_by": chosen_by,
            "members": [{"checkpoint": os.path.relpath(Path(m.checkpoint).resolve(), root), "weight": m.weight}
                        for m in members]}
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2)
    return path
