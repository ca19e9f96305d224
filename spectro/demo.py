"""`spectro demo`: the whole pipeline on the built-in synthetic corpus, no downloads needed."""

from __future__ import annotations

from pathlib import Path

from .config import FeatureConfig
from .corpora import scan_corpus
from .images import build_image_dataset
from .manifest import count_table, write_manifest
from .synth import generate_corpus


def run_demo(out: Path, *, workers: int | None = None) -> None:
    """Synthesise the demo corpus and render its images into `out` (resumes if rerun)."""
    corpus_dir = out / "corpus"
    generate_corpus(corpus_dir)
    utterances = scan_corpus("synth", corpus_dir).utterances
    write_manifest(utterances, out / "manifest.csv")
    print(count_table(utterances))
    result = build_image_dataset(utterances, out / "images", FeatureConfig(), workers=workers)
    print(f"images: {result.written} written, {result.skipped} already present, {len(result.rejected)} rejected "
          f"-> {result.out_dir}")
