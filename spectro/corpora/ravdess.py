"""RAVDESS speech, audio-only: ``Actor_NN/03-01-EE-II-SS-RR-NN.(wav|flac)``.

The seven two-digit fields are modality (03 audio-only; 01, 02 are video), vocal channel
(01 speech; 02 song), emotion EE, intensity, statement, repetition and actor NN. Odd actors
are male, even actors female. Only audio-only speech is kept; everything else is unmatched.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "ravdess"
EMOTION_CODES = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}
NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
ACTOR_FOLDER = re.compile(r"actor_(\d+)", re.IGNORECASE)


@register_corpus(CORPUS)
def scan_ravdess(root: Path) -> CorpusScan:
    """Parse a RAVDESS tree.

    Parameters
    ----------
    root : Path
        Folder holding the ``Actor_NN`` folders (or the files themselves).

    Returns
    -------
    CorpusScan
        Speech utterances; song, video and misnamed files are unmatched with the reason.
    """
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        reason = _reject_reason(path)
        if reason:
            scan.unmatched.append((str(path), reason))
            continue
        fields = NAME.fullmatch(path.stem).groups()
        actor = fields[6]
        scan.utterances.append(Utterance(
            path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{actor}", emotion=EMOTION_CODES[fields[2]],
            language="en", gender="male" if int(actor) % 2 else "female",
        ))
    return scan


def _reject_reason(path: Path) -> str:
    """Why `path` is not a RAVDESS audio-only speech file, or "" when it is one."""
    match = NAME.fullmatch(path.stem)
    if not match:
        return "name does not match MM-VV-EE-II-SS-RR-AA"
    modality, channel, emotion, *_, actor = match.groups()
    if modality in ("01", "02"):
        return f"RAVDESS video (modality {modality}), not audio-only"
    if modality != "03":
        return f"unknown modality {modality}"
    if channel == "02":
        return "RAVDESS song (vocal channel 02), not speech"
    if channel != "01":
        return f"unknown vocal channel {channel}"
    if emotion not in EMOTION_CODES:
        return f"unknown emotion code {emotion}"
    folder = ACTOR_FOLDER.fullmatch(path.parent.name)
    if folder and int(folder.group(1)) != int(actor):
        return f"actor {actor} in the name disagrees with folder {path.parent.name}"
    return ""
