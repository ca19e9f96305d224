"""Reports: one evaluation as Markdown, and `spectro report`'s table across runs beside published numbers."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Sequence

from .errors import DataError
from .fileio import atomic_open


@dataclasses.dataclass(frozen=True)
class PublishedRow:
    """A published transfer-learning result: accuracies in %, None where not reported."""

    label: str
    model: str
    classes: int
    feature: str
    val_accuracy: float
    emodb_accuracy: float | None


# Validation and EMO-DB accuracy (%) of the published transfer-learning study this toolkit reproduces.
PUBLISHED = (
    PublishedRow("ResNet-50 mel, 4 classes", "resnet50", 4, "mel", 75.76, 64.60),
    PublishedRow("ResNet-50 mel, 5 classes", "resnet50", 5, "mel", 66.86, 46.57),
    PublishedRow("ResNet-50 mel, 6 classes", "resnet50", 6, "mel", 62.18, 35.46),
    PublishedRow("ResNet-34 mel, 6 classes", "resnet34", 6, "mel", 68.15, 48.33),
    PublishedRow("ResNet-18 mel, 6 classes", "resnet18", 6, "mel", 67.62, None),
    PublishedRow("ResNet-50 mel+GD framewise, 6 classes", "resnet50", 6, "mel+gd", 65.67, 32.82),
    PublishedRow("ResNet-50 mel + VGG-16 GD, 6 classes", "resnet50_mel+vgg16_gd", 6, "mel,gd", 65.01, 31.72),
    PublishedRow("ResNet-50 mel + MFCC CNN, 6 classes", "resnet50_mel+mfcc_cnn", 6, "mel,mfcc", 73.14, 39.65),
    PublishedRow("MFCC CNN model 1, 8 classes", "mfcc_cnn1", 8, "mfcc", 85.82, None),
    PublishedRow("MFCC CNN model 2, 8 classes", "mfcc_cnn2", 8, "mfcc", 82.05, None),
)


def published_row(model: str, classes: int, feature: str) -> PublishedRow | None:
    return next((r for r in PUBLISHED if (r.model, r.classes, r.feature) == (model, classes, feature)), None)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def render_evaluation(report: dict) -> str:
    """Markdown for one `spectro evaluate` report."""
    lines = [f"# Evaluation of `{report['run']}`", "",
             f"- checkpoint: `{report['checkpoint']}` (epoch {report['epoch']})",
             f"- model: {report['model']}; features: {report['feature']} ({report['channels']}); "
             f"classes: {', '.join(report['classes'])}",
             f"- trained on: {', '.join(report['train_corpora']) or 'unknown'}"]
    lines[1:1] = [f"> **Warning:** {w}" for w in report.get("warnings", [])] + ([""] if report.get("warnings") else [])
    windows = report.get("windows")
    if windows:
        lines.append("- scoring: " + ("each recording whole" if windows["duration"] is None else
                     f"windows of {windows['duration']:g} s every {windows['hop']:g} s over each recording; "
                     "its probabilities are the mean of its windows' (as `spectro predict`)"))
    val = report.get("validation")
    if val:
        lines.append(f"- validation (held-out speakers): accuracy {_pct(val['accuracy'])}%, UAR {_pct(val['uar'])}%")
    lines += ["", "| corpus | n | accuracy % (95% CI) | UAR % (95% CI) | macro-F1 % | kappa | MCC |",
              "|---|---|---|---|---|---|---|"]
    for name, m in report["corpora"].items():
        ci = m["ci95"]
        lines.append(f"| {name} | {m['n']} | {_pct(m['accuracy'])} ({_pct(ci['accuracy'][0])}-{_pct(ci['accuracy'][1])}) "
                     f"| {_pct(m['uar'])} ({_pct(ci['uar'][0])}-{_pct(ci['uar'][1])}) | {_pct(m['macro_f1'])} "
                     f"| {m['kappa']:.3f} | {m['mcc']:.3f} |")
    for name, m in report["corpora"].items():
        classes = report["classes"]
        lines += ["", f"## {name}", "", "| class | precision % | recall % | F1 % | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['f1'])} | {s['support']} |"
                  for c, s in m["per_class"].items()]
        lines += ["", "Confusion matrix (rows: true, columns: predicted; count and row %):", "",
                  "| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        for c, counts, rates in zip(classes, m["confusion"], m["confusion_normalised"]):
            lines.append(f"| {c} | " + " | ".join(f"{n} ({100 * r:.0f}%)" for n, r in zip(counts, rates)) + " |")
        notes = [f"{n} {e}" for e, n in sorted(m["dropped"].items())]
        if notes:
            lines.append(f"\nLeft out (outside the classes): {', '.join(notes)}.")
        if m.get("rejected"):
            lines.append(f"\n{m['rejected']} unreadable file(s) rejected; see images/{name}/rejected.csv.")
        lines.append(f"\n![confusion matrix](confusion_{name}.png)")
    return "\n".join(lines) + "\n"


def collect_results(paths: Sequence[str | Path]) -> list[dict]:
    """One row per training run (``summary.json``) or evaluation (``report.json``) folder."""
    rows = []
    for path in map(Path, paths):
        if (path / "report.json").is_file():
            report = json.loads((path / "report.json").read_text())
            val = report.get("validation") or {}
            rows.append({"run": report["run"], "model": report["model"], "classes": len(report["classes"]),
                         "feature": report["feature"], "train_corpora": report["train_corpora"],
                         "val_accuracy": val.get("accuracy"), "val_uar": val.get("uar"), "val_macro_f1": val.get("macro_f1"),
                         "test": {n: _scores(m) for n, m in report["corpora"].items()}})
        elif (path / "summary.json").is_file():
            summary = json.loads((path / "summary.json").read_text())
            rows.append({"run": summary["run"], "model": summary["model"], "classes": len(summary["classes"]),
                         "feature": summary["feature"], "train_corpora": summary.get("train_corpora", []),
                         "val_accuracy": summary["validation"]["accuracy"], "val_uar": summary["validation"]["uar"],
                         "val_macro_f1": summary["validation"].get("macro_f1"),
                         "test": {n: _scores(m) for n, m in summary["test"].items()}})
        else:
            raise DataError(f"{str(path)!r} holds neither a training summary.json nor an evaluation report.json")
    return rows


def _scores(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("accuracy", "uar", "macro_f1")}


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: our numbers per test corpus, then the published ones and our difference."""
    tests = sorted({name for row in rows for name in row["test"]})
    header = ["run", "model", "classes", "features", "training corpora", "val acc %", "val UAR %", "val macro-F1 %"]
    header += [f"{t} {k} %" for t in tests for k in ("acc", "UAR", "macro-F1")]
    header += ["published val acc %", "Δ val acc", "published EMO-DB acc %", "Δ EMO-DB acc"]
    cells = []
    for row in rows:
        line = [row["run"], row["model"], str(row["classes"]), row["feature"], ", ".join(row["train_corpora"]),
                _pct(row["val_accuracy"]), _pct(row["val_uar"]), _pct(row.get("val_macro_f1"))]
        for t in tests:
            line += [_pct(row["test"].get(t, {}).get(k)) for k in ("accuracy", "uar", "macro_f1")]
        published = published_row(row["model"], row["classes"], row["feature"])
        ours_emodb = row["test"].get("emodb", {}).get("accuracy")
        if published:
            line += [f"{published.val_accuracy:.2f}", _delta(row["val_accuracy"], published.val_accuracy),
                     "" if published.emodb_accuracy is None else f"{published.emodb_accuracy:.2f}",
                     _delta(ours_emodb, published.emodb_accuracy)]
        else:
            line += ["", "", "", ""]
        cells.append(line)
    return header, cells


def _delta(ours: float | None, published: float | None) -> str:
    return "" if ours is None or published is None else f"{100 * ours - published:+.2f}"


def write_comparison(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``comparison.md`` and ``comparison.csv`` in `out_dir`."""
    out_dir = Path(out_dir)
    header, cells = comparison_table(rows)
    with atomic_open(out_dir / "comparison.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *cells])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c or "–" for c in line) + " |" for line in cells]
    md += ["", "Published: validation and EMO-DB accuracy of the transfer-learning study; Δ = ours − published "
               "(percentage points). UAR = unweighted average recall (balanced accuracy)."]
    with atomic_open(out_dir / "comparison.md") as handle:
        handle.write("\n".join(md) + "\n")
    return out_dir / "comparison.md", out_dir / "comparison.csv"
