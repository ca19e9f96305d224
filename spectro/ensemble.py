"""`spectro ensemble`: the weights of checkpoints of any family (CNN, scikit-learn, sequence), chosen by UAR
on validation recordings that no member trained on, and written as an ensemble file
(``spectro.ensemble_file``).

Each member reads its own features; a recording's probabilities are the weighted mean of the members'
probabilities for it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .checkpoint_file import load_checkpoint
from .ensemble_file import Member, combine, write_ensemble
from .errors import ConfigError, DataError
from .evaluate import Options, combined, require_adapted, score_member
from .leakage import TrainingRecord


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


def common_validation_speakers(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """The validation speakers every member held out of its training (from the checkpoints' records)."""
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
    if not apply_to:
        return [str(c) for c in checkpoints]
    if len(apply_to) != len(checkpoints):
        raise ConfigError(f"{len(apply_to)} final member(s) for {len(checkpoints)} stand-in(s); give one for each")
    for stand_in, final in zip(checkpoints, apply_to):
        classes = [list(load_checkpoint(path)["classes"]) for path in (stand_in, final)]
        if classes[0] != classes[1]:
            raise ConfigError(f"{final} decides among {classes[1]}, its stand-in {stand_in} among {classes[0]}")
    return [str(c) for c in apply_to]
