"""EMO-DB (Berlin): ``SSTTTEV.(wav|flac)`` under ``wav/`` or the root, e.g. ``03a01Fa``.

SS is the speaker (two digits), TTT the text (letter and two digits), E the emotion letter
(W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral) and V the version
letter. The ten speakers are German; their genders are listed in SPEAKER_GENDERS.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "emodb"
EMOTION_LETTERS = {
    "W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral",
}
SPEAKER_GENDERS = {
    "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
    "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
}
NAME = re.compile(r"(\d\d)([a-z]\d\d)([A-Z])([a-z])")


@register_corpus(CORPUS)
def scan_emodb(root: Path) -> CorpusScan:
    """Parse an EMO-DB tree.

    Parameters
    ----------
    root : Path
        Folder holding the audio, directly or in ``wav/``.

    Returns
    -------
    CorpusScan
        Utterances of the ten speakers; misnamed files are unmatched with the reason.
    """
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        match = NAME.fullmatch(path.stem)
        if not match:
            scan.unmatched.append((str(path), "name does not match SSTTTEV (e.g. 03a01Fa)"))
            continue
        speaker, _, letter, _ = match.groups()
        if speaker not in SPEAKER_GENDERS:
            scan.unmatched.append((str(path), f"unknown speaker {speaker}; EMO-DB has {', '.join(SPEAKER_GENDERS)}"))
        elif letter not in EMOTION_LETTERS:
            scan.unmatched.append((str(path), f"unknown emotion letter {letter}"))
        else:
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{speaker}",
                emotion=EMOTION_LETTERS[letter], language="de", gender=SPEAKER_GENDERS[speaker],
            ))
    return scan
