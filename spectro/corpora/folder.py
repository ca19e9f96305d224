"""Generic folder-per-label corpus: ``<root>/<label>/[<speaker>/]<file>.(wav|flac)``.

Label folder names map case-insensitively onto canonical emotions through common aliases
(anger, happiness, joy, fearful, surprised, ps, bored, ...). An optional subfolder under the
label folder names the speaker. Without one there is no speaker information, so every file
becomes its own speaker and speaker-independent splits are impossible; a warning says so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import ConfigError
from .base import CorpusScan, Utterance, iter_audio_files, list_corpora, register_corpus

logger = logging.getLogger(__name__)

LABEL_ALIASES = {
    "neutral": "neutral", "calm": "calm",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry",
    "fear": "fear", "fearful": "fear",
    "disgust": "disgust", "disgusted": "disgust",
    "surprise": "surprise", "surprised": "surprise", "ps": "surprise",
    "boredom": "boredom", "bored": "boredom",
}
NAME_RULE = re.compile(r"[a-z0-9-]+")
LANGUAGE_RULE = re.compile(r"[a-z]{2}|und")


@register_corpus("folder")
def scan_folder(root: Path, *, language: str = "und", name: str = "folder") -> CorpusScan:
    """Parse a folder-per-label tree.

    Parameters
    ----------
    root : Path
        Folder holding one folder per emotion label.
    language : str
        ISO 639-1 code of the speech, or "und" (undetermined).
    name : str
        Corpus name recorded on every utterance and prefixed to speakers, so that two
        folder corpora can be combined; lowercase letters, digits and "-".

    Returns
    -------
    CorpusScan
        Utterances with gender ""; files in unknown label folders, directly in `root` or
        nested deeper than ``<label>/<speaker>/`` are unmatched.

    Raises
    ------
    ConfigError
        If `name` or `language` breaks its rule, or `name` is another registered corpus.
    """
    if not NAME_RULE.fullmatch(name) or (name != "folder" and name in list_corpora()):
        raise ConfigError(
            f"corpus option folder.name={name!r} must be lowercase letters, digits and '-', "
            f"and not another corpus ({list_corpora()})"
        )
    if not LANGUAGE_RULE.fullmatch(language):
        raise ConfigError(f"corpus option folder.language={language!r} must be an ISO 639-1 code or 'und'")
    scan = CorpusScan(name)
    without_speaker = 0
    for path in iter_audio_files(root, scan.unmatched):
        folders = path.relative_to(root).parent.parts
        emotion = LABEL_ALIASES.get(folders[0].lower()) if folders else None
        if not folders:
            scan.unmatched.append((str(path), "not in a label folder"))
        elif emotion is None:
            scan.unmatched.append((str(path), f"unknown label {folders[0]!r}"))
        elif len(folders) > 2:
            scan.unmatched.append((str(path), "nested deeper than <label>/<speaker>/"))
        else:
            without_speaker += len(folders) == 1
            speaker = folders[1] if len(folders) == 2 else f"{folders[0]}-{path.stem}"
            scan.utterances.append(Utterance(
                path=str(path), corpus=name, speaker=f"{name}-{_safe(speaker)}", emotion=emotion, language=language,
            ))
    if without_speaker:
        logger.warning(
            "corpus %s: %d files sit directly in their label folder, with no speaker subfolder; each is "
            "taken as its own speaker, so speaker-independent splits are not possible", name, without_speaker,
        )
    return scan


def _safe(text: str) -> str:
    """`text` with every run of characters other than letters and digits replaced by "-"."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "x"
