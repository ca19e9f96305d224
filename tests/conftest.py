"""Shared fixtures: every test makes its own small audio; none reads a real corpus."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile


def tone(freq: float = 440.0, *, seconds: float = 1.0, sr: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path, y: np.ndarray, sr: int = 16000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, y, sr)
    return str(path)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small deterministic synthetic corpus: 4 emotions x 2 languages x 2 speakers x 2 utterances."""
    from spectro.synth import generate_corpus

    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root, speakers_per_language=2, utterances_per_emotion=2, seed=3)
    return root
