"""Emotion labels: the canonical names, the numbered class setups, user class lists and mappings.

Corpora are read onto canonical names. An experiment then picks its classes: a numbered setup
(4 = neutral, happy, sad, angry; 5 = +fear; ...), or its own list such as EMO-DB's seven with
boredom; an optional mapping relabels first, e.g. valence groups. Nothing is relabelled silently:
every utterance left out is counted by corpus and label.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ..errors import ConfigError

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise", "boredom")

# Each setup extends the one before it, as in the published 4/5/6-class experiments.
CLASS_SETUPS = {
    4: ("neutral", "happy", "sad", "angry"),
    5: ("neutral", "happy", "sad", "angry", "fear"),
    6: ("neutral", "happy", "sad", "angry", "fear", "disgust"),
    7: ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"),
    8: ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "calm"),
}
LABEL_RULE = re.compile(r"[a-z0-9][a-z0-9_+-]*")


def check_label(label: str, *, what: str = "label") -> str:
    """`label` if it is a usable class name (lowercase letters, digits, '_', '+', '-'), else a ConfigError."""
    if not isinstance(label, str) or not LABEL_RULE.fullmatch(label):
        raise ConfigError(f"{what}={label!r} must be lowercase letters, digits, '_', '+' or '-' (e.g. 'boredom', "
                          "'positive')")
    return label


def class_names(classes: int | Sequence[str]) -> tuple[str, ...]:
    """The ordered class names of a setup number or a class list; their index is the class id."""
    if isinstance(classes, (list, tuple)):
        names = tuple(check_label(c, what="class") for c in classes)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"classes={list(classes)} must name at least two different classes")
        return names
    try:
        return CLASS_SETUPS[int(classes)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"classes={classes!r} is not a class setup; choose one of {sorted(CLASS_SETUPS)} or give a list of class "
            "names"
        ) from None


def check_emotion(emotion: str) -> str:
    """Return `emotion` if it is canonical, else raise naming the valid ones."""
    if emotion not in EMOTIONS:
        raise ConfigError(f"emotion={emotion!r} is not canonical; expected one of {EMOTIONS}")
    return emotion


class LabelSelection:
    """Relabel through `mapping`, then keep labels that are `classes`.

    Without `classes`, canonical labels and the targets of `mapping` are kept: a label that no
    corpus convention, class list or mapping names (from a CSV manifest, say) is never used unasked.
    What is left out is counted in `dropped` by (corpus, original label).
    """

    def __init__(self, classes: int | Sequence[str] | None = None, mapping: Mapping[str, str] | None = None):
        self.mapping = dict(mapping or {})
        for source, target in self.mapping.items():
            check_label(source, what="labels.map key")
            check_label(target, what=f"labels.map.{source}")
        self.wanted = set(class_names(classes)) if classes is not None else set(EMOTIONS) | set(self.mapping.values())
        self.dropped: Counter = Counter()

    def __call__(self, utt):
        """`utt` with its class label, or None (and counted) when it is not one of the classes."""
        label = self.mapping.get(utt.emotion, utt.emotion)
        if label not in self.wanted:
            self.dropped[(utt.corpus, utt.emotion)] += 1
            return None
        return utt if label == utt.emotion else dataclasses.replace(utt, emotion=label)


def select_labels(utterances: Iterable, classes: int | Sequence[str] | None = None,
                  mapping: Mapping[str, str] | None = None) -> tuple[list, Counter]:
    """The utterances a `LabelSelection` keeps (relabelled), and the count of the others."""
    selection = LabelSelection(classes, mapping)
    kept = [u for u in map(selection, utterances) if u is not None]
    return kept, selection.dropped


def check_names(utterances: Sequence, classes: int | Sequence[str] | None = None,
                mapping: Mapping[str, str] | None = None) -> list[str]:
    """Refuse (ConfigError) a class of a named list, or a `mapping` source, that matches no label of
    `utterances`, naming the labels that exist: a misspelt class would silently select nothing. A numbered
    setup's classes are standard names that a corpus may lack; those are returned, for a warning."""
    mapping = dict(mapping or {})
    labels = sorted({u.emotion for u in utterances})
    relabelled = {mapping.get(label, label) for label in labels}
    unknown_sources = [source for source in mapping if source not in labels]
    if unknown_sources:
        raise ConfigError(f"--map source(s) {unknown_sources} match no label of the corpora; their labels are {labels}")
    if classes is None:
        return []
    missing = [c for c in class_names(classes) if c not in relabelled]
    if missing and isinstance(classes, (list, tuple)):
        raise ConfigError(f"class(es) {missing} match no label of the corpora; their labels are "
                          f"{sorted(relabelled)}" + (" (after --map)" if mapping else ""))
    return missing


def describe_drops(dropped: Counter) -> str:
    """'ravdess/calm 192, tess/fear 400': what a selection left out, per corpus and label."""
    return ", ".join(f"{corpus}/{label} {n}" for (corpus, label), n in sorted(dropped.items()))
