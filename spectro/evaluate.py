"""`spectro evaluate`: score a checkpoint on test corpora with its own feature settings.

Recordings are scored as `spectro predict` scores them: every window through the model, and a
recording's probabilities the mean of its windows'.

Writes ``report.json`` and ``report.md`` (accuracy, UAR, macro-F1, kappa, MCC, per-class scores,
confusion matrices, bootstrap intervals), ``confusion_<corpus>.png`` and ``predictions_<corpus>.csv``,
from which every number can be recomputed.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Sequence

from .checkpoint import load_trained_model
from .config import FeatureConfig, from_dict
from .corpora import Utterance
from .data import SINGLE_INPUT, ImageSet, as_sources, check_disjoint
from .errors import ConfigError
from .fileio import atomic_open
from .images import build_image_dataset, image_relpath, read_augmentation, read_feature_settings, read_image_manifest
from .inference import predict_proba, resolve_device
from .manifest import scan_corpora, select_classes
from .metrics import confusion_figure, detailed_metrics

log = logging.getLogger(__name__)


def _training_utterances(state: dict) -> list[Utterance]:
    """The training run's utterances, where its image trees are still on this machine."""
    rows = []
    for entry in state["config"]["data"]["train"]:
        tree = next(iter(as_sources(entry).values()))  # every input of an entry holds the same utterances
        if (Path(tree) / "manifest.csv").is_file():
            rows += [u for _, u in read_image_manifest(tree)]
    return rows


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, corpora: Sequence[tuple[str, str]] = (),
                        image_trees: dict[str, str] | None = None, corpus_options: dict | None = None,
                        workers: int | None = None, device: str = "auto", n_bootstrap: int = 1000,
                        progress: bool = True) -> dict:
    """Score `checkpoint` on each corpus (rendered into ``out_dir/images``) and each existing tree."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    model, state = load_trained_model(checkpoint, device=torch_device)
    inputs = {name: from_dict(FeatureConfig, f) for name, f in state["inputs"].items()}
    single = list(inputs) == [SINGLE_INPUT]
    classes = list(state["classes"])
    sets: dict[str, tuple[list, dict, dict]] = {}
    for scan in scan_corpora(list(corpora), corpus_options):
        kept, dropped = select_classes(scan.utterances, len(classes))
        rejected, paths = set(), {}
        for name, features in inputs.items():
            tree = out_dir / "images" / scan.corpus if single else out_dir / "images" / name / scan.corpus
            result = build_image_dataset(kept, tree, features, workers=workers, progress=progress)
            rejected |= {u.path for u, _ in result.rejected}
            paths[name] = {u.path: tree / image_relpath(u, features.feature) for u in kept}
        rows = [({name: paths[name][u.path] for name in inputs}, u) for u in kept if u.path not in rejected]
        sets[scan.corpus] = (rows, {e: n for (_, e), n in dropped.items()},
                             {"unmatched": len(scan.unmatched), "rejected": len(rejected)})
    for name, tree in (image_trees or {}).items():
        if not single:
            raise ConfigError(f"{checkpoint} reads several inputs {list(inputs)}; pass the corpus itself (--corpus) "
                              "so each input is rendered with its settings")
        if read_augmentation(tree) is not None:
            raise ConfigError(f"image tree {tree!r} holds augmented training copies; test on the recordings themselves")
        if read_feature_settings(tree) != inputs[SINGLE_INPUT]:
            raise ConfigError(f"image tree {tree!r} was made with other feature settings than {checkpoint}; "
                              f"pass the corpus itself (--corpus) so it is rendered with the checkpoint's settings")
        rows = read_image_manifest(tree)
        image_of = {u.path: p for p, u in rows}
        kept, dropped = select_classes([u for _, u in rows], len(classes))
        sets[name] = ([({SINGLE_INPUT: image_of[u.path]}, u) for u in kept], {e: n for (_, e), n in dropped.items()},
                      {"unmatched": 0, "rejected": 0})
    if not sets:
        raise ConfigError("nothing to evaluate: pass --corpus NAME=PATH or --images NAME=DIR")
    check_disjoint(_training_utterances(state), {f"test {n}": [u for _, u in rows] for n, (rows, _, _) in sets.items()})

    best = state.get("best", {})
    history = {h["epoch"]: h for h in state.get("history", [])}
    audio = next(iter(inputs.values())).audio
    report = {
        "checkpoint": str(checkpoint), "run": state["config"]["run"]["name"], "model": state["model_name"],
        "classes": classes, "feature": ",".join(f.feature for f in inputs.values()),
        "channels": next(iter(inputs.values())).image.channels,
        "train_corpora": state.get("train_corpora", []), "epoch": state["epoch"],
        "validation": history.get(best.get("epoch"), {}).get("val"),
        "windows": {"duration": audio.duration, "hop": audio.window_hop, "scoring": "mean of window probabilities"},
        "corpora": {},
    }
    batch_size = 2 * state["config"]["train"]["batch_size"]
    for name, (rows, dropped, skipped) in sets.items():
        if not rows:
            raise ConfigError(f"corpus {name}: no utterance of the classes {classes}")
        images = ImageSet([p for p, _ in rows], [u for _, u in rows], classes, desc=f"{name} images", progress=progress)
        probs = predict_proba(model, images, device=torch_device, batch_size=batch_size)
        predicted = probs.argmax(1).tolist()
        metrics = detailed_metrics(images.labels.tolist(), predicted, class_names=classes, n_bootstrap=n_bootstrap)
        report["corpora"][name] = {**metrics, "dropped": dropped, **skipped}
        _write_predictions(out_dir / f"predictions_{name}.csv", images.utterances, predicted, probs.tolist(), classes)
        figure = confusion_figure(metrics["confusion"], classes, title=f"{report['run']} on {name}")
        figure.savefig(out_dir / f"confusion_{name}.png", dpi=120)
        plt.close(figure)
        log.info("%s: accuracy %.3f, UAR %.3f (n=%d)", name, metrics["accuracy"], metrics["uar"], metrics["n"])
    with atomic_open(out_dir / "report.json") as handle:
        json.dump(report, handle, indent=2)
    from .report import render_evaluation

    with atomic_open(out_dir / "report.md") as handle:
        handle.write(render_evaluation(report))
    return report


def _write_predictions(path: Path, utterances, predicted, probs, classes) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "predicted", *(f"p_{c}" for c in classes)])
        for utt, pred, p in zip(utterances, predicted, probs):
            writer.writerow([utt.path, utt.corpus, utt.speaker, utt.emotion, classes[pred], *(f"{v:.6f}" for v in p)])
