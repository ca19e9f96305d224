"""Feature registry: each feature maps a conditioned signal to a (frequency, time) matrix in [0, 1]."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Registry
from .image import CHANNEL_MAPPINGS, to_image
from .mel import log_mel_spectrogram, mfcc

FeatureFn = Callable[[np.ndarray, "FeatureConfig"], np.ndarray]  # noqa: F821
FEATURES = Registry("feature")


def register_feature(name: str) -> Callable[[FeatureFn], FeatureFn]:
    return FEATURES.register(name)


def list_features() -> list[str]:
    return FEATURES.names()


def feature_matrix(y: np.ndarray, config) -> np.ndarray:
    """The matrix of feature `config.feature` for signal `y` (already conditioned by `prepare_audio`)."""
    return FEATURES.get(config.feature)(y, config)


def feature_image(y: np.ndarray, config) -> np.ndarray:
    """The uint8 RGB image that CNNs see for signal `y`, as set by a `FeatureConfig`."""
    return to_image(feature_matrix(y, config), size=config.image.size, channels=config.image.channels,
                    colormap=config.image.colormap)


def mfcc_matrix(y: np.ndarray, config) -> np.ndarray:
    """MFCCs (``spectrogram.n_mfcc`` x frames) with the same analysis settings as the images."""
    s = config.spectrogram
    return mfcc(y=y, sr=config.audio.sample_rate, n_mfcc=s.n_mfcc, n_fft=s.n_fft, hop_length=s.hop_length,
                win_length=s.win_length, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax, top_db=s.top_db)


@register_feature("mel")
def mel_feature(y: np.ndarray, config) -> np.ndarray:
    """Log-mel spectrogram scaled from [-top_db, 0] dB onto [0, 1]."""
    s = config.spectrogram
    S_db = log_mel_spectrogram(y=y, sr=config.audio.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length,
                               win_length=s.win_length, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax,
                               top_db=s.top_db)
    return (S_db + s.top_db) / s.top_db


__all__ = [
    "CHANNEL_MAPPINGS", "feature_image", "feature_matrix", "list_features", "log_mel_spectrogram",
    "mel_feature", "mfcc", "mfcc_matrix", "register_feature", "to_image",
]
