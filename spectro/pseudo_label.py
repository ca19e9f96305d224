"""`spectro pseudo-label`: a model's (or an ensemble's) confident predictions on unlabelled audio, as training labels.

Self-training on the corpus to be scored is transductive: the target's audio is used, its labels never.
Every recording of the target corpus is scored, whatever emotion its files are named for, because an
unlabelled corpus says nothing about which recordings belong to the classes; those whose top probability
reaches `threshold` (or, with `fraction`, the most confident share of those predicted as each class) are kept,
the same number per class (the most confident ones), so that the student
is not taught the teacher's bias towards one class. The CSV that is written names each recording's
source path, its pseudo-label and its confidence; ``data.pseudo`` in a training config adds those
recordings, from a tree of the target rendered with the student's own settings, to its training data.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .checkpoint_file import load_trained_model
from .config import FeatureConfig, from_dict
from .corpora import Utterance
from .data import ImageSet
from .ensemble_file import combine, read_ensemble
from .errors import ConfigError
from .fileio import atomic_open
from .image_tree import read_feature_settings, read_image_manifest
from .images import build_image_dataset
from .manifest import PSEUDO_COLUMNS as COLUMNS, scan_corpora
from .normalise import relative_guard
from .scoring import adapt_batchnorm, batchnorm_layers, predict_proba, resolve_device, scoring_autocast


def target_recordings(checkpoint: str | Path, state: dict, image_dir: Path, *, corpora: Sequence[tuple[str, str]],
                      image_trees: dict[str, str], corpus_options: dict | None, workers: int | None,
                      progress: bool) -> list[tuple[Path, Utterance]]:
    """Every recording of the target corpora as (picture key, utterance) for this member's one input: the
    corpora rendered with its feature settings, with no label selection, and trees made with them."""
    if len(state["inputs"]) != 1:
        raise ConfigError(f"{checkpoint} reads several inputs; pseudo-labelling scores single-input members")
    ((name, settings),) = state["inputs"].items()
    # the target's speakers judged by the guard against the training corpora's, as evaluate judges them
    features = relative_guard(from_dict(FeatureConfig, settings), state.get("normalisation", {}).get(name, {}).values())
    rows = []
    for scan in scan_corpora(list(corpora), corpus_options):
        tree = image_dir / scan.corpus
        result = build_image_dataset(scan.utterances, tree, features, workers=workers, progress=progress)
        rejected = {u.path for u, _ in result.rejected}
        rows += [(p, u) for p, u in read_image_manifest(tree) if u.path not in rejected]
    for tree in image_trees.values():
        if read_feature_settings(tree) != features:
            raise ConfigError(f"image tree {tree!r} was made with other feature settings than {checkpoint}; pass the "
                              "corpus itself (--corpus) so that it is rendered with the checkpoint's settings")
        rows += read_image_manifest(tree)
    if not rows:
        raise ConfigError("nothing to pseudo-label: pass --corpus NAME=PATH or --images NAME=DIR")
    return rows


def member_probabilities(checkpoint: str | Path, image_dir: Path, *, adabn: bool = False, device: str = "auto",
                         **sources) -> tuple[dict[str, np.ndarray], list[str]]:
    """One member's class probabilities by recording (source path), and its classes; labels are not read
    (the set is built without classes), with AdaBN on the target's audio if asked."""
    torch_device = resolve_device(device)
    model, state = load_trained_model(checkpoint, device=torch_device)
    rows = target_recordings(checkpoint, state, image_dir, **sources)
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], None, desc="target images",
                      progress=sources.get("progress", True))
    batch_size = 2 * state["config"]["train"]["batch_size"]
    if adabn and batchnorm_layers(model):
        adapt_batchnorm(model, images, device=torch_device, batch_size=batch_size)
    probabilities = predict_proba(model, images, device=torch_device, batch_size=batch_size,
                                  autocast=scoring_autocast(state, torch_device)).numpy()
    return {u.path: p for (_, u), p in zip(rows, probabilities)}, list(state["classes"])


def choose(probabilities: np.ndarray, *, threshold: float | None = None, fraction: float | None = None,
           balanced: bool = True) -> np.ndarray:
    """Which recordings to keep: top probability >= `threshold`, or, with `fraction`, the most confident
    `fraction` of the recordings predicted as each class (class-balanced self-training, Zou et al., ECCV 2018:
    a per-class confidence quantile, which needs no calibrated teacher: an ensemble under domain shift may
    never reach 0.5); then, `balanced`, the most confident n of each class, n the smallest count among the
    classes with any (a class none reaches is left without)."""
    if (threshold is None) == (fraction is None):
        raise ConfigError("give one of threshold and fraction")
    if threshold is not None and not 0 <= threshold <= 1:
        raise ConfigError(f"threshold={threshold} must be in [0, 1]")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"fraction={fraction} must be in (0, 1]")
    label, confidence = probabilities.argmax(1), probabilities.max(1)
    if fraction is None:
        keep = confidence >= threshold
        per_class = None
    else:
        keep, per_class = np.ones_like(confidence, dtype=bool), {c: int(np.ceil(fraction * n))
                                                                 for c, n in Counter(label.tolist()).items()}
    if balanced and keep.any():
        per_class = dict.fromkeys(np.unique(label[keep]).tolist(), min(
            (per_class or Counter(label[keep].tolist())).values()))
    if per_class:
        kept = np.zeros_like(keep)
        for c, n in per_class.items():
            ranked = np.flatnonzero(keep & (label == c))
            kept[ranked[np.argsort(-confidence[ranked], kind="stable")[:n]]] = True
        keep = kept
    return keep


def pseudo_label(models: Sequence[str | Path], out: str | Path, *, threshold: float | None = None,
                 fraction: float | None = None, balanced: bool = True, adabn: bool = False, device: str = "auto",
                 **sources) -> dict:
    """Score every target recording with the model or ensemble, choose (`choose`) and write the CSV and its
    record (``<out>.json``); returns the record."""
    out = Path(out)
    ensemble = read_ensemble(models)
    scored = [member_probabilities(m.checkpoint, out.parent / f"{out.stem}.images" / f"member{i + 1}",
                                   adabn=adabn, device=device, **sources) for i, m in enumerate(ensemble.members)]
    ensemble.check_classes([classes for _, classes in scored], ", ".join(map(str, models)))
    classes = scored[0][1]
    paths = [p for p in scored[0][0] if all(p in s for s, _ in scored)]
    probabilities = combine([np.stack([s[p] for p in paths]) for s, _ in scored], [m.weight for m in ensemble.members])
    keep = choose(probabilities, threshold=threshold, fraction=fraction, balanced=balanced)
    with atomic_open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for path, p, k in zip(paths, probabilities, keep):
            writer.writerow([path, classes[int(p.argmax())], f"{p.max():.6f}", int(k)])
    counts = Counter(classes[int(p.argmax())] for p, k in zip(probabilities, keep) if k)
    record = {"models": [str(m) for m in models], "threshold": threshold, "fraction": fraction,
              "balanced": balanced, "adabn": adabn,
              "scored": len(paths), "kept": int(keep.sum()), "per_class": {c: counts.get(c, 0) for c in classes}}
    with atomic_open(out.with_suffix(".json")) as handle:
        json.dump(record, handle, indent=2)
    return record
