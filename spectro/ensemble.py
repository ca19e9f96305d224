"""Ensembles: checkpoints of any family (CNN, scikit-learn, sequence) whose class probabilities are
averaged, with weights chosen on validation data and kept in a small JSON file.

`spectro evaluate` and `spectro predict` take several checkpoints (equal weights) or an ensemble
file like a checkpoint. Each member reads its own features; a recording's probabilities are the
weighted mean of the members' probabilities for it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, DataError
from .fileio import atomic_open

ENSEMBLE_KEY = "spectro_ensemble"


@dataclasses.dataclass
class Member:
    checkpoint: str
    weight: float


def is_ensemble_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        return ENSEMBLE_KEY in json.loads(path.read_text())
    except ValueError:
        return False


def read_members(specs: Sequence[str | os.PathLike]) -> list[Member]:
    """The members named: checkpoints with equal weights, or the members and weights of one ensemble
    file (its checkpoint paths are relative to the file)."""
    specs = [Path(s) for s in specs]
    files = [s for s in specs if is_ensemble_file(s)]
    if files and len(specs) > 1:
        raise ConfigError(f"{files[0]} is an ensemble file; give it alone, or list checkpoints instead")
    if not files:
        if not specs:
            raise ConfigError("no checkpoint given")
        return [Member(str(s), 1.0 / len(specs)) for s in specs]
    saved = json.loads(files[0].read_text())
    members = [Member(str((files[0].parent / m["checkpoint"]).resolve()), float(m["weight"])) for m in saved["members"]]
    for m in members:
        if not Path(m.checkpoint).is_file():
            raise DataError(f"ensemble {files[0]}: member {m.checkpoint} does not exist")
    return members


def combine(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' (N, C) probabilities (weights need not sum to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(probabilities) != len(w) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights={list(w)} must be one non-negative weight per member, not all zero")
    return np.tensordot(w / w.sum(), np.stack(probabilities), axes=1)


def choose_weights(probabilities: Sequence[np.ndarray], labels: np.ndarray, *, step: float = 0.1
                   ) -> tuple[list[float], float]:
    """Weights on a grid over the simplex (multiples of `step`) that give the best UAR on validation
    `labels`; among equal scores the most even weights win. Returns (weights, that UAR)."""
    from sklearn.metrics import balanced_accuracy_score

    n, units = len(probabilities), round(1 / step)
    best: tuple[float, float, tuple] | None = None
    for split in itertools.product(range(units + 1), repeat=n - 1):
        if sum(split) > units:
            continue
        weights = (*split, units - sum(split))
        uar = balanced_accuracy_score(labels, combine(probabilities, weights).argmax(1))
        key = (uar, -float(np.var(weights)), weights)
        if best is None or key[:2] > best[:2]:
            best = key
    return [w / units for w in best[2]], float(best[0])


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


def common_validation_speakers(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """The validation speakers every member held out of its training (from the checkpoints' records)."""
    from .checkpoint import load_checkpoint
    from .leakage import TrainingRecord

    shared: set[str] | None = None
    for path in checkpoints:
        record = TrainingRecord.from_checkpoint(load_checkpoint(path))
        if record is None:
            raise DataError(f"{path} keeps no record of its validation speakers; name them with --speakers")
        shared = set(record.val_speakers) if shared is None else shared & set(record.val_speakers)
    if not shared:
        raise ConfigError("the members share no validation speaker; name held-out speakers with --speakers")
    return sorted(shared)


def build_ensemble(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   validation: Sequence[tuple[str, str]], speakers: Sequence[str] = (), step: float = 0.1,
                   apply_to: Sequence[str | os.PathLike] = (), **options) -> tuple[Path, list[float], float]:
    """Choose the members' weights by UAR on validation recordings that no member trained on (by default
    the validation speakers they share, in the `validation` corpora) and write the ensemble file.

    With `apply_to`, the file's members are these instead, one for one: weights chosen for stand-ins (the
    same recipes trained with a training corpus held out, ``data.val_corpus``) go to the final models
    trained on every corpus, so that the weights are chosen by transfer to a corpus never seen.
    `options` are those of ``spectro.evaluate.Options``; returns (file, weights, validation UAR)."""
    from .evaluate import Options, combined, require_adapted, score_member

    out = Path(out)
    final = _final_members(checkpoints, apply_to)
    speakers = list(speakers) or common_validation_speakers(checkpoints)
    opts = Options(corpora=list(validation), speakers=speakers, **options)
    members = [Member(str(c), 1.0 / len(checkpoints)) for c in checkpoints]
    scored = [score_member(m.checkpoint, out.parent / f"{out.stem}.validation" / f"member{i + 1}", opts)
              for i, m in enumerate(members)]
    require_adapted(scored, opts)
    classes = list(scored[0].state["classes"])
    sets = [combined(name, members, scored, separate=True) for name, test in scored[0].tests.items() if test.rows]
    parts = [np.concatenate([p[k] for _, p in sets]) for k in range(len(members))]
    labels = np.array([classes.index(u.emotion) for test, _ in sets for _, u in test.rows])
    weights, uar = choose_weights(parts, labels, step=step)
    chosen_by = {"criterion": "UAR on validation recordings", "corpora": [n for n, _ in validation],
                 "speakers": speakers, "recordings": len(labels), "uar": uar, "grid_step": step}
    if opts.adabn:
        chosen_by["adabn"] = True
    if apply_to:
        chosen_by["stand_ins"] = [os.path.relpath(Path(m.checkpoint).resolve(), out.parent.resolve()) for m in members]
    write_ensemble(out, [Member(c, w) for c, w in zip(final, weights)], classes=classes, chosen_by=chosen_by)
    return out, weights, uar


def _final_members(checkpoints: Sequence[str | os.PathLike], apply_to: Sequence[str | os.PathLike]) -> list[str]:
    """The checkpoints the ensemble file will name: `apply_to` where given, each deciding among the same
    classes as its stand-in."""
    from .checkpoint import load_checkpoint

    if not apply_to:
        return [str(c) for c in checkpoints]
    if len(apply_to) != len(checkpoints):
        raise ConfigError(f"{len(apply_to)} final member(s) for {len(checkpoints)} stand-in(s); give one for each")
    for stand_in, final in zip(checkpoints, apply_to):
        classes = [list(load_checkpoint(path)["classes"]) for path in (stand_in, final)]
        if classes[0] != classes[1]:
            raise ConfigError(f"{final} decides among {classes[1]}, its stand-in {stand_in} among {classes[0]}")
    return [str(c) for c in apply_to]


class EnsemblePredictor:
    """Several `Predictor`s, one per member; a recording's probabilities are their weighted mean.

    Members may read different features and windows, so an ensemble's predictions carry no
    per-window results.
    """

    def __init__(self, predictors: Sequence, weights: Sequence[float]):
        classes = {p.classes for p in predictors}
        if len(classes) > 1:
            raise ConfigError(f"ensemble members decide among different classes: {sorted(classes)}")
        self.predictors, self.weights = list(predictors), list(weights)
        self.classes = predictors[0].classes
        self.checkpoint = {"train_corpora": sorted({c for p in predictors for c in p.checkpoint.get("train_corpora", [])})}

    def predict(self, samples, sample_rate: int):
        return self._combine([p.predict(samples, sample_rate) for p in self.predictors])

    def predict_files(self, paths):
        paths = list(paths)
        return map(lambda results: self._combine(list(results)), zip(*(p.predict_files(paths) for p in self.predictors)))

    def _combine(self, results: list):
        from .inference import Prediction

        failed = next((r for r in results if r.error is not None), None)
        if failed is not None:
            return Prediction(failed.path, error=failed.error)
        mean = combine([np.array([r.probabilities[c] for c in self.classes]) for r in results], self.weights)
        return Prediction(results[0].path, label=self.classes[int(mean.argmax())],
                          probabilities={c: float(v) for c, v in zip(self.classes, mean)})


def load_predictor(specs: Sequence[str | os.PathLike], **options):
    """A `Predictor` for one checkpoint, or an `EnsemblePredictor` for several or for an ensemble file;
    `options` go to ``Predictor.load``."""
    from .inference import Predictor

    members = read_members(specs)
    if len(members) == 1:
        return Predictor.load(members[0].checkpoint, **options)
    return EnsemblePredictor([Predictor.load(m.checkpoint, **options) for m in members], [m.weight for m in members])
