"""Reports: one evaluation as Markdown, and `spectro report`'s table across runs beside published numbers."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from .errors import DataError
from .fileio import atomic_open
from .metrics import METRIC_NAMES, METRICS


@dataclasses.dataclass(frozen=True)
class PublishedRow:
    """A published transfer-learning result: accuracies in %, None where not reported."""

    label: str
    model: str
    classes: int
    feature: str
    val_accuracy: float
    emodb_accuracy: float | None


# Validation and EMO-DB accuracy (%) from Table 1 of the README of the public GitHub repository
# KanikeSaiPrakash/Speech-Emotion-Recognition ("Speech-Emotion-Recognition: Deep Learning"), which trained on
# RAVDESS, TESS, CREMA-D, IEMOCAP and SAVEE and tested on EMO-DB. No paper is known for it.
PUBLISHED_SOURCE = ("Table 1 of the README of github.com/KanikeSaiPrakash/Speech-Emotion-Recognition (trained on "
                    "RAVDESS, TESS, CREMA-D, IEMOCAP and SAVEE; tested on EMO-DB)")
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
    lines = [f"# Evaluation of `{report['run']}`", ""]
    lines += [f"> **Warning:** {w}" for w in report.get("warnings", [])] + ([""] if report.get("warnings") else [])
    lines += _evaluation_settings(report)
    headline = " | ".join(f"{METRIC_NAMES[k]} % (95% CI)" for k in METRICS)
    lines += ["", f"| corpus | n | speakers | {headline} | kappa | MCC |", "|---" * (5 + len(METRICS)) + "|"]
    for name, m in report["corpora"].items():
        scores = " | ".join(_with_ci(m, k) for k in METRICS)
        lines.append(f"| {name} | {m['n']} | {m.get('speakers', '')} | {scores} | {m['kappa']:.3f} | {m['mcc']:.3f} |")
    lines.append("\nIntervals: 95% percentile bootstrap, resampling whole speakers (their utterances are not "
                 "independent).")
    for name, m in report["corpora"].items():
        lines += _corpus_section(name, m, report["classes"])
    return "\n".join(lines) + "\n"


def _evaluation_settings(report: dict) -> list[str]:
    """The bullet list under the title: what was scored, and how."""
    epoch = f" (epoch {report['epoch']})" if report.get("epoch") is not None else ""
    lines = [f"- checkpoint: `{report['checkpoint']}`{epoch}"]
    lines += [f"  - member `{m['checkpoint']}` ({m['model']}), weight {m['weight']:.2f}"
              for m in report.get("members", [])]
    lines += [f"- model: {report['model']}; features: {report['feature']} ({report['channels']}); "
              f"classes: {', '.join(report['classes'])}",
              f"- trained on: {', '.join(report['train_corpora']) or 'unknown'}"]
    windows = report.get("windows")
    if windows:
        lines.append("- scoring: " + ("each recording whole" if windows["duration"] is None else
                     f"windows of {windows['duration']:g} s every {windows['hop']:g} s over each recording; "
                     "its probabilities are the mean of its windows' (as `spectro predict`)"))
    lines += [f"- **transductive:** {t}; test labels were read only to score" for t in report.get("transductive", [])]
    if report.get("training_guard_fired"):
        lines.append("- normalisation guard at training: fired on " + ", ".join(report["training_guard_fired"])
                     + " (corpus statistics used there)")
    if report.get("normalisation_overrides"):
        lines.append(f"- test corpora rendered with {', '.join(report['normalisation_overrides'])} (the checkpoint's "
                     "other settings unchanged)")
    if report.get("decision", "").startswith("among the classes present"):
        lines.append(f"- decision: {report['decision']} (probabilities renormalised over them)")
    val = report.get("validation")
    if val:
        lines.append(f"- validation (held-out speakers): accuracy {_pct(val['accuracy'])}%, UAR {_pct(val['uar'])}%")
    return lines


def _grouping_note(name: str, input_name: str, record: dict) -> str:
    """One line on how a test corpus's recordings were grouped for normalisation, and what the guard did."""
    found = record["found_without_labels"]
    note = (f"Normalisation ({input_name}): {record['mode']}, {record['groups']} group(s)"
            + (f", {found} found without labels ({record['unknown_speakers']})" if found else ""))
    for corpus, g in record["guard"].items():
        value = "undefined" if g["value"] is None else f"{g['value']:.3f}"
        note += (f"; guard on {corpus}: {g['statistic']} {value} against {g['threshold']:.3f}, "
                 + ("**fired**: corpus statistics used" if g["fired"] else "quiet"))
    return note + "."


def _corpus_section(name: str, m: dict, classes: list[str]) -> list[str]:
    lines = ["", f"## {name}", "", "| class | precision % | recall % | F1 % | support |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['f1'])} | {s['support']} |"
              for c, s in m["per_class"].items()]
    lines += ["", "Confusion matrix (rows: true, columns: predicted; count and row %):", "",
              "| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for c, counts, rates in zip(classes, m["confusion"], m["confusion_normalised"]):
        lines.append(f"| {c} | " + " | ".join(f"{n} ({100 * r:.0f}%)" for n, r in zip(counts, rates)) + " |")
    notes = [f"{n} {e}" for e, n in sorted(m["dropped"].items())]
    if notes:
        lines.append(f"\nLeft out (outside the classes): {', '.join(notes)}.")
    if m.get("classes_excluded"):
        lines.append(f"\nClasses absent from {name} and left out of the decision: {', '.join(m['classes_excluded'])}.")
    if m.get("rejected"):
        lines.append(f"\n{m['rejected']} unreadable file(s) rejected; see images/{name}/rejected.csv.")
    lines += [f"\n{_grouping_note(name, inp, r)}" for inp, r in m.get("normalisation", {}).items()]
    lines.append(f"\n![confusion matrix](confusion_{name}.png)")
    return lines


def collect_results(paths: Sequence[str | Path]) -> list[dict]:
    """One row per training run (``summary.json``) or evaluation (``report.json``) folder.

    Each row: kind ("run" or "evaluation"), run, model, classes (names), feature, train_corpora,
    validation (metrics or None), tests (corpus -> metrics with n and, where known, ci95), and
    epochs (runs) or checkpoint (evaluations).
    """
    rows = []
    for path in map(Path, paths):
        if (path / "report.json").is_file():
            report = json.loads((path / "report.json").read_text())
            rows.append({"kind": "evaluation", "run": report["run"], "model": report["model"],
                         "classes": report["classes"], "feature": report["feature"],
                         "train_corpora": report["train_corpora"], "validation": report.get("validation"),
                         "tests": report["corpora"], "checkpoint": report["checkpoint"],
                         "warnings": report.get("warnings", [])})
        elif (path / "summary.json").is_file():
            summary = json.loads((path / "summary.json").read_text())
            rows.append({"kind": "run", "run": summary["run"], "model": summary["model"], "classes": summary["classes"],
                         "feature": summary["feature"], "train_corpora": summary.get("train_corpora", []),
                         "validation": summary["validation"], "tests": summary["test"],
                         "epochs": f"{summary.get('best_epoch', '')} of {summary.get('epochs_run', '')}"})
        else:
            raise DataError(f"{str(path)!r} holds neither a training summary.json nor an evaluation report.json")
    return rows


TABLES = (("run", "Training runs"), ("evaluation", "Evaluations"))


def comparison_tables(rows: list[dict]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """For each kind of row present, its title -> (header, cells): validation scores, then each test
    corpus's n, accuracy, UAR and macro-F1 (% with 95% intervals), then, only where a row matches a
    published one, the published accuracies and our difference."""
    tables = {}
    for kind, title in TABLES:
        chosen = [r for r in rows if r["kind"] == kind]
        if chosen:
            tables[title] = _table(chosen, extra="epochs (best of)" if kind == "run" else "checkpoint")
    return tables


def _table(rows: list[dict], *, extra: str) -> tuple[list[str], list[list[str]]]:
    tests = sorted({name for row in rows for name in row["tests"]})
    published = [published_row(r["model"], len(r["classes"]), r["feature"]) for r in rows]
    header = ["run", "model", "classes", "features", "training corpora", extra, "val n",
              *(f"val {METRIC_NAMES[k]} %" for k in METRICS)]
    header += [f"{t} {k}" for t in tests for k in ("n", *(f"{METRIC_NAMES[k]} % (95% CI)" for k in METRICS))]
    if any(published):
        header += ["published val acc %", "Δ val acc", "published EMO-DB acc %", "Δ EMO-DB acc"]
    cells = []
    for row, match in zip(rows, published):
        val = row["validation"] or {}
        line = [row["run"], row["model"], str(len(row["classes"])), row["feature"], ", ".join(row["train_corpora"]),
                str(row.get("epochs", row.get("checkpoint", ""))), str(val.get("n", "")),
                *(_pct(val.get(k)) for k in METRICS)]
        for t in tests:
            m = row["tests"].get(t)
            line += ([""] * (1 + len(METRICS)) if m is None
                     else [str(m.get("n", "")), *(_with_ci(m, k) for k in METRICS)])
        if any(published):
            line += _published_cells(match, val, row["tests"].get("emodb", {}))
        cells.append(line)
    return header, cells


def _with_ci(metrics: dict, key: str) -> str:
    ci = (metrics.get("ci95") or {}).get(key)
    return _pct(metrics.get(key)) + (f" ({_pct(ci[0])}-{_pct(ci[1])})" if ci else "")


def _published_cells(match: PublishedRow | None, val: dict, emodb: dict) -> list[str]:
    if match is None:
        return ["", "", "", ""]
    return [f"{match.val_accuracy:.2f}", _delta(val.get("accuracy"), match.val_accuracy),
            "" if match.emodb_accuracy is None else f"{match.emodb_accuracy:.2f}",
            _delta(emodb.get("accuracy"), match.emodb_accuracy)]


def _delta(ours: float | None, published: float | None) -> str:
    return "" if ours is None or published is None else f"{100 * ours - published:+.2f}"


def write_comparison(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``comparison.md`` (one table per kind of row) and ``comparison.csv`` (the same rows, one header,
    a `table` column) in `out_dir`."""
    out_dir = Path(out_dir)
    tables = comparison_tables(rows)
    md = []
    for title, (header, cells) in tables.items():
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c or "–" for c in line) + " |" for line in cells] + [""]
    md.append("n: utterances scored. Intervals: 95% bootstrap. UAR = unweighted average recall (balanced accuracy).")
    if any("Δ val acc" in h for h, _ in tables.values()):
        md.append(f"Published: validation and EMO-DB accuracy from {PUBLISHED_SOURCE}; Δ = ours − published "
                  "(percentage points).")
    with atomic_open(out_dir / "comparison.md") as handle:
        handle.write("\n".join(md) + "\n")
    columns = list(dict.fromkeys(c for header, _ in tables.values() for c in header))
    with atomic_open(out_dir / "comparison.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", *columns])
        for title, (header, cells) in tables.items():
            for line in cells:
                values = dict(zip(header, line))
                writer.writerow([title, *(values.get(c, "") for c in columns)])
    return out_dir / "comparison.md", out_dir / "comparison.csv"
