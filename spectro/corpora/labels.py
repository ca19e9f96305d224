"""Canonical emotion names and the nested class setups every corpus is mapped onto."""

from __future__ import annotations

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


def class_names(num_classes: int) -> tuple[str, ...]:
    """The ordered emotion names of a class setup; their index is the class id."""
    try:
        return CLASS_SETUPS[int(num_classes)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"classes={num_classes!r} is not a class setup; choose one of {sorted(CLASS_SETUPS)}"
        ) from None


def check_emotion(emotion: str) -> str:
    """Return `emotion` if it is canonical, else raise naming the valid ones."""
    if emotion not in EMOTIONS:
        raise ConfigError(f"emotion={emotion!r} is not canonical; expected one of {EMOTIONS}")
    return emotion
