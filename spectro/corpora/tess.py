"""TESS: ``<SPK>_<emotion>/<SPK>_<word>_<emotion>.(wav|flac)``, speakers OAF and YAF.

The emotion is the file name's last token (``ps`` or ``pleasant_surprise(d)`` means surprise),
the speaker its first token; one upstream file is named ``OA_bite_neutral`` and belongs to OAF.
Folder names vary in case and spelling between copies and are not read. Both speakers are
female English speakers.
"""

from __future__ import annotations

from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "tess"
SPEAKERS = {"OAF": "OAF", "OA": "OAF", "YAF": "YAF"}
EMOTION_LABELS = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "neutral": "neutral", "sad": "sad", "ps": "surprise", "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise", "surprise": "surprise", "surprised": "surprise",
}


@register_corpus(CORPUS)
def scan_tess(root: Path) -> CorpusScan:
    """Parse a TESS tree.

    Parameters
    ----------
    root : Path
        Folder holding the ``<SPK>_<emotion>`` folders.

    Returns
    -------
    CorpusScan
        Utterances of OAF and YAF; files with another speaker or emotion token are unmatched.
    """
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        tokens = path.stem.split("_")
        label_len = 2 if len(tokens) >= 4 and tokens[-2].lower() == "pleasant" else 1
        label = "_".join(tokens[-label_len:]).lower()
        speaker = SPEAKERS.get(tokens[0].upper())
        if len(tokens) < 2 + label_len:
            scan.unmatched.append((str(path), "name does not match <SPK>_<word>_<emotion>"))
        elif speaker is None:
            scan.unmatched.append((str(path), f"unknown speaker {tokens[0]!r}; TESS has OAF and YAF"))
        elif label not in EMOTION_LABELS:
            scan.unmatched.append((str(path), f"unknown emotion {label!r}"))
        else:
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{speaker}",
                emotion=EMOTION_LABELS[label], language="en", gender="female",
            ))
    return scan
