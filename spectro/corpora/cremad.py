"""CREMA-D: ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` in any folder, e.g. ``1001_DFA_ANG_XX``.

Actors are 1001-1091, sentences three letters, EMO one of ANG, DIS, FEA, HAP, NEU, SAD and
level one of LO, MD, HI, XX. Genders come from ``VideoDemographics.csv`` (column Sex) when it
sits in the root or one folder below; without it gender is unknown. All speech is English.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "cremad"
EMOTION_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_(LO|MD|HI|XX)")
DEMOGRAPHICS = "videodemographics.csv"


@register_corpus(CORPUS)
def scan_cremad(root: Path) -> CorpusScan:
    """Parse a CREMA-D tree.

    Parameters
    ----------
    root : Path
        Folder holding the audio (usually in ``AudioWAV``) and optionally ``VideoDemographics.csv``.

    Returns
    -------
    CorpusScan
        Utterances of actors 1001-1091; misnamed files are unmatched with the reason.
    """
    scan = CorpusScan(CORPUS)
    genders = _read_genders(root)
    for path in iter_audio_files(root, scan.unmatched):
        match = NAME.fullmatch(path.stem)
        if not match:
            scan.unmatched.append((str(path), "name does not match <actor>_<sentence>_<EMO>_<LO|MD|HI|XX>"))
        elif not 1001 <= int(match.group(1)) <= 1091:
            scan.unmatched.append((str(path), f"actor {match.group(1)} is outside 1001-1091"))
        elif match.group(3) not in EMOTION_CODES:
            scan.unmatched.append((str(path), f"unknown emotion code {match.group(3)}"))
        else:
            actor = match.group(1)
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{actor}",
                emotion=EMOTION_CODES[match.group(3)], language="en", gender=genders.get(actor, ""),
            ))
    return scan


def _read_genders(root: Path) -> dict[str, str]:
    """Map actor id to "female"/"male" from the first ``VideoDemographics.csv`` found, else {}."""
    candidates = [*root.iterdir(), *(p for d in root.iterdir() if d.is_dir() for p in d.iterdir())]
    for path in sorted(p for p in candidates if p.name.lower() == DEMOGRAPHICS and p.is_file()):
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return {
                row["ActorID"].strip(): row["Sex"].strip().lower()
                for row in csv.DictReader(handle)
                if (row.get("Sex") or "").strip().lower() in ("female", "male") and row.get("ActorID")
            }
    return {}
