"""IEMOCAP: labels in ``Session*/dialog/EmoEvaluation/*.txt``, audio in ``Session*/sentences/wav/``.

Label lines read ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, ...]``; other
lines are ignored. Audio is ``Session*/sentences/wav/<dialog>/<utterance>.wav``; folder names
match in any case. The speaker is the session plus the gender letter of the utterance's last
field (``Ses01F_impro01_M003`` is speaker Ses01M, male). Codes without a canonical emotion
(fru, oth, xxx, and exc unless merged into happy) are counted in ``dropped``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus

CORPUS = "iemocap"
EMOTION_CODES = {
    "neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry",
    "fea": "fear", "dis": "disgust", "sur": "surprise",
}
LABEL_LINE = re.compile(r"\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t\[.*")
UTTERANCE = re.compile(r"(Ses\d+)[FM]_\w+_([FM])\d+")
SESSION_FOLDER = re.compile(r"session\d+", re.IGNORECASE)


@register_corpus(CORPUS)
def scan_iemocap(root: Path, *, merge_excited: bool = True) -> CorpusScan:
    """Parse an IEMOCAP release.

    Parameters
    ----------
    root : Path
        Folder holding the ``Session1`` ... ``Session5`` folders.
    merge_excited : bool
        Count "exc" (excited) as happy, as most published 4-class results do; when False,
        excited utterances are counted in ``dropped`` under "exc".

    Returns
    -------
    CorpusScan
        Labelled utterances; audio outside ``sentences/wav/<dialog>/`` or without a label
        line is unmatched.
    """
    codes = {**EMOTION_CODES, "exc": "happy"} if merge_excited else EMOTION_CODES
    labels = _read_labels(root)
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        folders, utterance = _folders(root, path), UTTERANCE.fullmatch(path.stem)
        if len(folders) != 4 or folders[:3] != ["session", "sentences", "wav"]:
            scan.unmatched.append((str(path), "not in Session*/sentences/wav/<dialog>/"))
        elif not utterance:
            scan.unmatched.append((str(path), "name is not an utterance id like Ses01F_impro01_F000"))
        elif path.stem not in labels:
            scan.unmatched.append((str(path), "no label in EmoEvaluation"))
        elif labels[path.stem] not in codes:
            scan.dropped[labels[path.stem]] += 1
        else:
            session, letter = utterance.groups()
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{session}{letter}",
                emotion=codes[labels[path.stem]], language="en", gender="female" if letter == "F" else "male",
            ))
    return scan


def _read_labels(root: Path) -> dict[str, str]:
    """Map utterance id to its raw category code from every ``Session*/dialog/EmoEvaluation/*.txt``."""
    labels = {}
    for path in sorted(root.glob("*/*/*/*")):
        if _folders(root, path) == ["session", "dialog", "emoevaluation"] and path.suffix.lower() == ".txt":
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                match = LABEL_LINE.fullmatch(line.strip())
                if match:
                    labels[match.group(1)] = match.group(2)
    return labels


def _folders(root: Path, path: Path) -> list[str]:
    """The lower-cased folders from `root` down to `path`, with ``Session<N>`` written "session"."""
    folders = [part.lower() for part in path.relative_to(root).parent.parts]
    if folders and SESSION_FOLDER.fullmatch(folders[0]):
        folders[0] = "session"
    return folders
