"""`spectro evaluate`: score a checkpoint on test corpora with its own feature settings.

Recordings are scored as `spectro predict` scores them: every window through the model, and a
recording's probabilities the mean of its windows'.

Writes ``report.json`` and ``report.md`` (accuracy, UAR, macro-F1, kappa, MCC, per-class scores,
confusion matrices, bootstrap intervals), ``confusion_<corpus>.png`` and ``predictions_<corpus>.csv``,
from which every number can be recomputed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

from .checkpoint import load_trained_model
from .config import FeatureConfig, from_dict
from .corpora import Utterance
from .data import SINGLE_INPUT, ImageSet, as_sources, tree_digests
from .errors import ConfigError
from .fileio import atomic_open
from .images import (build_image_dataset, image_relpath, read_augmentation, read_feature_settings, read_image_manifest,
                     read_tree_digests)
from .inference import predict_proba, resolve_device
from .leakage import TrainingRecord
from .locks import job_lock
from .corpora import LabelSelection, select_labels
from .manifest import scan_corpora
from .metrics import confusion_figure, detailed_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TestSet:
    """One corpus to score: its rows (inputs -> files, utterance), what was left out, and the digests of
    its recordings' audio (source path -> digest) for the leakage check."""

    rows: list[tuple[dict[str, Path], Utterance]]
    dropped: dict[str, int]
    skipped: dict[str, int]
    digests: dict[str, str]


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, corpora: Sequence[tuple[str, str]] = (),
                        image_trees: dict[str, str] | None = None, corpus_options: dict | None = None,
                        workers: int | None = None, device: str = "auto", n_bootstrap: int = 1000,
                        progress: bool = True) -> dict:
    """Score `checkpoint` on each corpus (rendered into ``out_dir/images``) and each existing tree."""
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    model, state = load_trained_model(checkpoint, device=torch_device)
    inputs = {name: from_dict(FeatureConfig, f) for name, f in state["inputs"].items()}
    classes = list(state["classes"])
    with job_lock(out_dir, "spectro evaluate"):
        mapping = state["config"].get("labels", {}).get("map", {})  # the training's relabelling, e.g. valence
        sets = _render_corpora(corpora, corpus_options, inputs, classes, mapping, out_dir, workers=workers,
                               progress=progress)
        sets |= _read_trees(image_trees or {}, inputs, classes, mapping, checkpoint)
        if not sets:
            raise ConfigError("nothing to evaluate: pass --corpus NAME=PATH or --images NAME=DIR")
        warnings = check_held_out(state, sets)
        report = _report_header(checkpoint, state, inputs, warnings)
        batch_size = 2 * state["config"]["train"]["batch_size"]
        for name, test in sets.items():
            report["corpora"][name] = _score(model, test, name, classes, out_dir, title=report["run"],
                                             device=torch_device, batch_size=batch_size, n_bootstrap=n_bootstrap,
                                             progress=progress)
        with atomic_open(out_dir / "report.json") as handle:
            json.dump(report, handle, indent=2)
        from .report import render_evaluation

        with atomic_open(out_dir / "report.md") as handle:
            handle.write(render_evaluation(report))
    return report


def _render_corpora(corpora, corpus_options, inputs: dict[str, FeatureConfig], classes: list[str], mapping: dict,
                    out_dir: Path, *, workers: int | None, progress: bool) -> dict[str, TestSet]:
    """Each corpus rendered with every input's settings into ``out_dir/images`` (resumable)."""
    single = list(inputs) == [SINGLE_INPUT]
    sets = {}
    for scan in scan_corpora(list(corpora), corpus_options):
        kept, dropped = select_labels(scan.utterances, classes, mapping)
        rejected, paths, digests = set(), {}, {}
        for name, features in inputs.items():
            tree = out_dir / "images" / scan.corpus if single else out_dir / "images" / name / scan.corpus
            result = build_image_dataset(kept, tree, features, workers=workers, progress=progress)
            rejected |= {u.path for u, _ in result.rejected}
            paths[name] = {u.path: tree / image_relpath(u, features.feature) for u in kept}
            digests |= read_tree_digests(tree)
        rows = [({name: paths[name][u.path] for name in inputs}, u) for u in kept if u.path not in rejected]
        sets[scan.corpus] = TestSet(rows, {e: n for (_, e), n in dropped.items()},
                                    {"unmatched": len(scan.unmatched), "rejected": len(rejected)}, digests)
    return sets


def _read_trees(image_trees: dict[str, str], inputs: dict[str, FeatureConfig], classes: list[str], mapping: dict,
                checkpoint) -> dict[str, TestSet]:
    """Existing image trees made with the checkpoint's settings (single-input models only)."""
    sets = {}
    for name, tree in image_trees.items():
        if list(inputs) != [SINGLE_INPUT]:
            raise ConfigError(f"{checkpoint} reads several inputs {list(inputs)}; pass the corpus itself (--corpus) "
                              "so each input is rendered with its settings")
        if read_augmentation(tree) is not None:
            raise ConfigError(f"image tree {tree!r} holds augmented training copies; test on the recordings themselves")
        if read_feature_settings(tree) != inputs[SINGLE_INPUT]:
            raise ConfigError(f"image tree {tree!r} was made with other feature settings than {checkpoint}; "
                              f"pass the corpus itself (--corpus) so it is rendered with the checkpoint's settings")
        rows = read_image_manifest(tree)
        selection = LabelSelection(classes, mapping)
        kept = [(path, utt) for path, utt in ((p, selection(u)) for p, u in rows) if utt is not None]
        dropped = selection.dropped
        sets[name] = TestSet([({SINGLE_INPUT: path}, u) for path, u in kept],
                             {e: n for (_, e), n in dropped.items()}, {"unmatched": 0, "rejected": 0},
                             read_tree_digests(tree))
    return sets


def check_held_out(state: dict, sets: dict[str, TestSet]) -> list[str]:
    """Refuse test sets that share speakers or audio with the checkpoint's training (its record);
    returns warnings for what could not be checked."""
    record = TrainingRecord.from_checkpoint(state)
    warnings = []
    if record is None:
        record, found = _record_from_training_trees(state)
        warnings.append("LEAKAGE NOT CHECKED IN FULL: this checkpoint predates spectro's record of training speakers "
                        "and recordings; " + ("its training trees were found and their speakers checked, but not "
                                              "validation speakers or the audio itself" if found else
                                              "its training image trees are not on this machine, so nothing was "
                                              "checked") + ". Retrain to get a checked evaluation.")
        log.warning(warnings[-1])
    for name, test in sets.items():
        record.check(f"test {name}", [u for _, u in test.rows], test.digests)
    return warnings


def _record_from_training_trees(state: dict) -> tuple[TrainingRecord, bool]:
    """For checkpoints without a record: the speakers and audio of the training trees still on this machine."""
    trees = [as_sources(entry) for entry in state["config"]["data"]["train"]]
    found = [e for e in trees if (Path(next(iter(e.values()))) / "manifest.csv").is_file()]
    utterances = [u for e in found for _, u in read_image_manifest(next(iter(e.values())))]
    return TrainingRecord.of(utterances, [], tree_digests(found).values()), bool(found)


def _report_header(checkpoint, state: dict, inputs: dict[str, FeatureConfig], warnings: list[str]) -> dict:
    best = state.get("best", {})
    history = {h["epoch"]: h for h in state.get("history", [])}
    audio = next(iter(inputs.values())).audio
    return {
        "checkpoint": str(checkpoint), "run": state["config"]["run"]["name"], "model": state["model_name"],
        "classes": list(state["classes"]), "feature": ",".join(f.feature for f in inputs.values()),
        "channels": next(iter(inputs.values())).image.channels,
        "train_corpora": state.get("train_corpora", []), "epoch": state["epoch"],
        "validation": history.get(best.get("epoch"), {}).get("val"),
        "windows": {"duration": audio.duration, "hop": audio.window_hop, "scoring": "mean of window probabilities"},
        "warnings": warnings, "corpora": {},
    }


def _score(model, test: TestSet, name: str, classes: list[str], out_dir: Path, *, title: str, device, batch_size: int,
           n_bootstrap: int, progress: bool) -> dict:
    """Metrics of one test set; writes its per-file predictions and confusion figure."""
    import matplotlib.pyplot as plt

    if not test.rows:
        raise ConfigError(f"corpus {name}: no utterance of the classes {classes}")
    images = ImageSet([p for p, _ in test.rows], [u for _, u in test.rows], classes, desc=f"{name} images",
                      progress=progress)
    probs = predict_proba(model, images, device=device, batch_size=batch_size)
    predicted = probs.argmax(1).tolist()
    metrics = detailed_metrics(images.labels.tolist(), predicted, class_names=classes, n_bootstrap=n_bootstrap,
                               groups=[u.speaker for u in images.utterances])
    _write_predictions(out_dir / f"predictions_{name}.csv", images.utterances, predicted, probs.tolist(), classes)
    figure = confusion_figure(metrics["confusion"], classes, title=f"{title} on {name}")
    with atomic_open(out_dir / f"confusion_{name}.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    log.info("%s: accuracy %.3f, UAR %.3f (n=%d)", name, metrics["accuracy"], metrics["uar"], metrics["n"])
    return {**metrics, "speakers": len({u.speaker for u in images.utterances}), "dropped": test.dropped, **test.skipped}


def _write_predictions(path: Path, utterances, predicted, probs, classes) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "predicted", *(f"p_{c}" for c in classes)])
        for utt, pred, p in zip(utterances, predicted, probs):
            writer.writerow([utt.path, utt.corpus, utt.speaker, utt.emotion, classes[pred], *(f"{v:.6f}" for v in p)])
