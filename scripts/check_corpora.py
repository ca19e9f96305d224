#!/usr/bin/env python
"""Integration check of the corpus parsers against real distributions (not part of the test suite).

Decodes every file name independently of spectro's parsers and compares emotion and speaker,
then checks the per-emotion counts the distributions document.

    python scripts/check_corpora.py --ravdess ../shared/data/RAVDESS --tess ../shared/data/TESS \
        --emodb ../shared/data/EMO-DB
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from spectro.corpora import scan_corpus

RAVDESS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fear", 7: "disgust", 8: "surprise"}
EMODB = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
TESS = {"ps": "surprise", "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
        "neutral": "neutral", "sad": "sad"}
EXPECTED = {
    "ravdess": (1440, 24, {"neutral": 96, **{e: 192 for e in RAVDESS.values() if e != "neutral"}}),
    "tess": (2798, 2, {"angry": 399, "sad": 399, "disgust": 400, "fear": 400, "happy": 400, "neutral": 400,
                       "surprise": 400}),
    "emodb": (535, 10, {"angry": 127, "boredom": 81, "neutral": 79, "happy": 71, "fear": 69, "sad": 62,
                        "disgust": 46}),
}


def expected_labels(corpus: str, path: Path) -> tuple[str, str]:
    stem = path.stem
    if corpus == "ravdess":
        fields = [int(f) for f in stem.split("-")]
        return RAVDESS[fields[2]], f"ravdess-{fields[6]:02d}"
    if corpus == "emodb":
        return EMODB[stem[5]], f"emodb-{stem[:2]}"
    speaker = stem.split("_")[0].replace("OA", "OAF").replace("OAFF", "OAF")
    return TESS[stem.split("_")[-1].lower()], f"tess-{speaker}"


def check(corpus: str, root: str) -> list[str]:
    scan = scan_corpus(corpus, root)
    problems = [f"{corpus}: unmatched {path}: {reason}" for path, reason in scan.unmatched]
    for utt in scan.utterances:
        expected = expected_labels(corpus, Path(utt.path))
        if (utt.emotion, utt.speaker) != expected:
            problems.append(f"{corpus}: {utt.path}: got {(utt.emotion, utt.speaker)}, expected {expected}")
    files, speakers, counts = EXPECTED[corpus]
    got = (len(scan.utterances), len({u.speaker for u in scan.utterances}),
           dict(Counter(u.emotion for u in scan.utterances)))
    if got != (files, speakers, counts):
        problems.append(f"{corpus}: got (files, speakers, counts) {got}, expected {(files, speakers, counts)}")
    print(f"{corpus:8} {len(scan.utterances):5} utterances, {got[1]:2} speakers, {len(scan.unmatched)} unmatched, "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for corpus in EXPECTED:
        parser.add_argument(f"--{corpus}", metavar="PATH")
    args = parser.parse_args()
    problems = [p for corpus in EXPECTED if getattr(args, corpus) for p in check(corpus, getattr(args, corpus))]
    for problem in problems[:50]:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
