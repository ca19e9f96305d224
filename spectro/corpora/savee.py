"""SAVEE: four male English speakers DC, JE, JK, KL, in either published layout.

``AudioData/<SPK>/<prefix><NN>.wav`` (e.g. ``AudioData/DC/a01.wav``) or flat
``<SPK>_<prefix><NN>.wav`` (e.g. ``DC_a01.wav``). Prefixes: a anger, d disgust, f fear,
h happy, n neutral, sa sad, su surprise.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "savee"
SPEAKERS = ("DC", "JE", "JK", "KL")
PREFIXES = {
    "a": "angry", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprise",
}
FLAT_NAME = re.compile(r"([A-Za-z]{2})_([a-z]{1,2})(\d\d)")
NESTED_NAME = re.compile(r"([a-z]{1,2})(\d\d)")


@register_corpus(CORPUS)
def scan_savee(root: Path) -> CorpusScan:
    """Parse a SAVEE tree in the ``AudioData/<SPK>/`` or the flat ``<SPK>_`` layout.

    Parameters
    ----------
    root : Path
        Folder holding ``AudioData`` (or the speaker folders, or the flat files).

    Returns
    -------
    CorpusScan
        Utterances of the four speakers; anything else is unmatched with the reason.
    """
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        flat, nested = FLAT_NAME.fullmatch(path.stem), NESTED_NAME.fullmatch(path.stem)
        if flat:
            speaker, prefix, origin = flat.group(1).upper(), flat.group(2), "name"
        elif nested:
            speaker, prefix, origin = path.parent.name.upper(), nested.group(1), "folder"
        else:
            scan.unmatched.append((str(path), "name matches neither <SPK>_<prefix><NN> nor <prefix><NN>"))
            continue
        if speaker not in SPEAKERS:
            scan.unmatched.append((str(path), f"{origin} speaker {speaker!r} is not one of {', '.join(SPEAKERS)}"))
        elif prefix not in PREFIXES:
            scan.unmatched.append((str(path), f"unknown emotion prefix {prefix!r}"))
        else:
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{speaker}",
                emotion=PREFIXES[prefix], language="en", gender="male",
            ))
    return scan
