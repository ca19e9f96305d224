"""Waveform augmentation for training recordings: noise, pitch, tempo, gain and trimming.

Only the image job applies it, into trees of extra copies that training uses for its training
speakers alone; validation and test data are never augmented.
"""

from __future__ import annotations

import zlib

import numpy as np

from .config import WaveformAugmentConfig
from .errors import ConfigError


def add_noise(y: np.ndarray, *, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`y` plus white Gaussian noise `snr_db` decibels below the signal's mean power."""
    power = float(np.mean(y.astype(np.float64) ** 2))
    noise = rng.standard_normal(y.size) * np.sqrt(power / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def random_trim(y: np.ndarray, *, max_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Cut up to `max_fraction` of the samples from each end (independently drawn)."""
    if not 0 <= max_fraction < 0.5:
        raise ConfigError(f"max_fraction={max_fraction} must be in [0, 0.5)")
    cut = (rng.uniform(0, max_fraction, size=2) * y.size).astype(int)
    return y[cut[0]: y.size - cut[1]]


def augment_waveform(y: np.ndarray, *, sr: int, config: WaveformAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random variant of `y`: each transform of `config` fires with its probability.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal at `sr` (after silence trimming and normalisation).
    config : WaveformAugmentConfig
        Probabilities and ranges.
    rng : np.random.Generator
        The only source of randomness, so a copy is the same every time it is rendered.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if rng.random() < config.trim_p:
        y = random_trim(y, max_fraction=config.trim_max, rng=rng)
    if rng.random() < config.stretch_p:
        y = librosa.effects.time_stretch(y, rate=float(rng.uniform(*config.rate)))
    if rng.random() < config.pitch_p:
        y = librosa.effects.pitch_shift(y, sr=sr, n_steps=float(rng.uniform(*config.semitones)))
    if rng.random() < config.gain_p:
        y = y * np.float32(10 ** (rng.uniform(*config.gain_db) / 20))
    if rng.random() < config.noise_p:
        y = add_noise(y, snr_db=float(rng.uniform(*config.snr_db)), rng=rng)
    return np.asarray(y, dtype=np.float32)


def copy_rng(recording: str, copy: int, seed: int) -> np.random.Generator:
    """The generator of one augmented copy: fixed by the recording's name, the copy number and the
    seed, so a copy is the same wherever the corpus lies and for every feature rendered from it."""
    return np.random.default_rng([zlib.crc32(recording.encode()), copy, seed])
