"""The built-in synthetic corpus (``spectro.synth.generate_corpus``).

Files are named ``synth_<language>_<speaker>_<emotion>_<NN>.wav``, e.g.
``synth_synth-a_a01f_happy_03.wav``: the speaker id is the language letter, an index and a
gender letter (``f`` or ``m``). Folders are not read.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusScan, Utterance, iter_audio_files, register_corpus
from .labels import EMOTIONS

CORPUS = "synth"
NAME = re.compile(r"synth_(synth-([a-z]))_(([a-z])\d{2}([fm]))_([a-z]+)_\d{2,}")
GENDERS = {"f": "female", "m": "male"}


@register_corpus(CORPUS)
def scan_synth(root: Path) -> CorpusScan:
    """Parse a synthetic corpus tree.

    Parameters
    ----------
    root : Path
        The folder `generate_corpus` wrote to (or any folder above the WAV files).

    Returns
    -------
    CorpusScan
        Utterances with speaker ``synth-<speaker id>``; other names are unmatched.
    """
    scan = CorpusScan(CORPUS)
    for path in iter_audio_files(root, scan.unmatched):
        match = NAME.fullmatch(path.stem)
        if match is None:
            scan.unmatched.append((str(path), "name does not match synth_<language>_<speaker>_<emotion>_<NN>"))
            continue
        language, letter, speaker, speaker_letter, gender, emotion = match.groups()
        if speaker_letter != letter:
            scan.unmatched.append((str(path), f"speaker {speaker!r} does not belong to language {language!r}"))
        elif emotion not in EMOTIONS:
            scan.unmatched.append((str(path), f"unknown emotion {emotion!r}"))
        else:
            scan.utterances.append(Utterance(
                path=str(path), corpus=CORPUS, speaker=f"{CORPUS}-{speaker}",
                emotion=emotion, language=language, gender=GENDERS[gender],
            ))
    return scan
