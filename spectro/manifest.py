"""Utterance manifests: the CSV that every later stage reads, and the class-setup filter."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .corpora import EMOTIONS, CorpusScan, Utterance, check_label, scan_corpus
from .errors import ConfigError, DataError
from .fileio import atomic_open, describe_path

COLUMNS = tuple(f.name for f in dataclasses.fields(Utterance))
PSEUDO_COLUMNS = ("path", "label", "confidence", "kept")  # a pseudo-label file (spectro pseudo-label)


def open_csv(path: str | Path):
    """A CSV file of spectro's for reading. File names that are not valid UTF-8 (a Latin-1 byte, say) are
    kept byte for byte as surrogate escapes, as Python reads them from the disk, so that a path written
    to a manifest reads back as the same path."""
    return open(path, newline="", encoding="utf-8", errors="surrogateescape")


def scan_corpora(specs: Sequence[tuple[str, str]], options: dict[str, dict] | None = None) -> list[CorpusScan]:
    """Scan each (corpus name, path); `options` maps a corpus name to its parser options."""
    options = options or {}
    return [scan_corpus(name, path, **options.get(name, {})) for name, path in specs]


def write_manifest(utterances: Iterable[Utterance], path: str | Path) -> None:
    """Write one CSV row per utterance."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for utt in utterances:
            writer.writerow([getattr(utt, c) for c in COLUMNS])


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest CSV, checking its columns and that each label is a usable class name (labels
    outside the canonical emotions are kept here; a class list or mapping must name them to use them)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {describe_path(path)} does not exist")
    with open_csv(path) as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"manifest {str(path)!r} lacks column(s) {missing}; it needs {list(COLUMNS)}")
        rows = list(reader)
    utterances = []
    for line, row in enumerate(rows, start=2):
        try:
            check_label(row["emotion"], what="emotion")
        except ConfigError as error:
            raise DataError(f"manifest {str(path)!r} line {line}: {error}") from None
        utterances.append(Utterance(**{c: row[c] for c in COLUMNS}))
    return utterances


def count_table(utterances: Sequence[Utterance]) -> str:
    """A plain-text table of utterance counts per corpus (rows) and emotion (columns)."""
    counts = Counter((u.corpus, u.emotion) for u in utterances)
    corpora = sorted({u.corpus for u in utterances})
    present = {u.emotion for u in utterances}
    emotions = [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))
    speakers = {c: len({u.speaker for u in utterances if u.corpus == c}) for c in corpora}
    header = ["corpus", "speakers", *emotions, "total"]
    rows = [[c, str(speakers[c]), *(str(counts[(c, e)]) for e in emotions),
             str(sum(counts[(c, e)] for e in emotions))] for c in corpora]
    rows.append(["all", str(sum(speakers.values())), *(str(sum(counts[(c, e)] for c in corpora)) for e in emotions),
                 str(len(utterances))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


def scan_report(scan: CorpusScan, *, examples: int = 5) -> str:
    """Lines that tell the user what a scan did not keep, with examples; empty if it kept everything."""
    lines = []
    if scan.unmatched:
        lines.append(f"{scan.corpus}: {len(scan.unmatched)} file(s) match no {scan.corpus} naming convention, e.g.")
        lines += [f"  {path}: {reason}" for path, reason in scan.unmatched[:examples]]
    if scan.dropped:
        labels = ", ".join(f"{label} {n}" for label, n in sorted(scan.dropped.items()))
        lines.append(f"{scan.corpus}: {sum(scan.dropped.values())} utterance(s) with no canonical emotion dropped "
                     f"({labels})")
    return "\n".join(lines)


def read_pseudo_labels(path: str | Path) -> dict[str, str]:
    """Source path -> pseudo-label of the kept recordings of a CSV that `pseudo_label` wrote."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pseudo-label file {path} does not exist; write it with spectro pseudo-label")
    with open_csv(path) as handle:
        reader = csv.DictReader(handle)
        if list(reader.fieldnames or []) != list(PSEUDO_COLUMNS):
            raise DataError(f"{path} is not a pseudo-label file (columns {reader.fieldnames}, expected "
                            f"{list(PSEUDO_COLUMNS)})")
        return {row["path"]: row["label"] for row in reader if row["kept"] == "1"}
