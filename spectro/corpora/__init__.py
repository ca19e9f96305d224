"""Corpus catalogue: one parser module per distribution, found by name through a registry."""

from .base import AUDIO_SUFFIXES, CorpusScan, Utterance, iter_audio_files, list_corpora, register_corpus, scan_corpus
from .labels import (CLASS_SETUPS, EMOTIONS, LabelSelection, check_emotion, check_label, class_names, describe_drops,
                     select_labels)

# Importing the parser modules registers them.
from . import cremad, emodb, folder, iemocap, ravdess, savee, synth, tess  # noqa: E402,F401

__all__ = [
    "AUDIO_SUFFIXES", "CLASS_SETUPS", "EMOTIONS", "CorpusScan", "LabelSelection", "Utterance", "check_emotion", "check_label",
    "class_names", "describe_drops", "iter_audio_files", "list_corpora", "register_corpus", "scan_corpus",
    "select_labels",
]
