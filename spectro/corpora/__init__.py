"""Corpus catalogue: one parser module per distribution, found by name through a registry."""

# Importing the parser modules registers them.
from . import cremad, emodb, folder, iemocap, ravdess, savee, synth, tess  # noqa: F401
from .base import AUDIO_SUFFIXES, CorpusScan, Utterance, iter_audio_files, list_corpora, register_corpus, scan_corpus
from .labels import (
    CLASS_SETUPS,
    EMOTIONS,
    LabelSelection,
    check_emotion,
    check_label,
    check_names,
    class_names,
    describe_drops,
    select_labels,
)

__all__ = [
    "AUDIO_SUFFIXES", "CLASS_SETUPS", "EMOTIONS", "CorpusScan", "LabelSelection", "Utterance", "check_emotion",
    "check_label", "check_names", "class_names", "describe_drops", "iter_audio_files", "list_corpora",
    "register_corpus", "scan_corpus", "select_labels",
]
