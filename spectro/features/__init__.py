"""Feature registry: each feature maps a conditioned signal to a (frequency, time) matrix in [0, 1]."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Registry
from .image import CHANNEL_MAPPINGS, to_image
from .descriptors import frame_descriptors, utterance_statistics
from .group_delay import modified_group_delay
from .mel import log_mel_spectrogram, mfcc

FeatureFn = Callable[[np.ndarray, "FeatureConfig"], np.ndarray]  # noqa: F821
FEATURES = Registry("feature")


MATRIX_FEATURES: set[str] = set()  # fed to models as float matrices, not rendered as pictures


def register_feature(name: str, *, image: bool = True) -> Callable[[FeatureFn], FeatureFn]:
    if not image:
        MATRIX_FEATURES.add(name)
    return FEATURES.register(name)


def is_image_feature(name: str) -> bool:
    return name not in MATRIX_FEATURES


def list_features() -> list[str]:
    return FEATURES.names()


def feature_matrix(y: np.ndarray, config) -> np.ndarray:
    """The matrix of feature `config.feature` for one window `y` (from ``spectro.audio.audio_windows``)."""
    return FEATURES.get(config.feature)(y, config)


def feature_image(y: np.ndarray, config) -> np.ndarray:
    """The uint8 RGB image that CNNs see for signal `y`, as set by a `FeatureConfig`."""
    return to_image(feature_matrix(y, config), size=config.image.size, channels=config.image.channels,
                    colormap=config.image.colormap)


def feature_array(y: np.ndarray, config) -> np.ndarray:
    """What a model reads for one window `y`, channels first: a uint8 (3, H, W) image, or a float16 matrix."""
    if is_image_feature(config.feature):
        return feature_image(y, config).transpose(2, 0, 1)
    return feature_matrix(y, config).astype(np.float16)


def window_arrays(windows, config) -> np.ndarray:
    """`feature_array` of each window (``spectro.audio.Window``), stacked: (windows, ...)."""
    return np.stack([feature_array(w.samples, config) for w in windows])


def _analysis(config) -> dict:
    """The short-time analysis settings shared by every feature, as keyword arguments."""
    s = config.spectrogram
    return dict(sr=config.audio.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, win_length=s.win_length,
                n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax, top_db=s.top_db)


def mfcc_matrix(y: np.ndarray, config) -> np.ndarray:
    """MFCCs (``spectrogram.n_mfcc`` x frames) with the same analysis settings as the images."""
    return mfcc(y=y, n_mfcc=config.spectrogram.n_mfcc, **_analysis(config))


def _standardise_rows(m: np.ndarray) -> np.ndarray:
    return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-5)


@register_feature("mel")
def mel_feature(y: np.ndarray, config) -> np.ndarray:
    """Log-mel spectrogram scaled from [-top_db, 0] dB onto [0, 1]."""
    top_db = config.spectrogram.top_db
    return (log_mel_spectrogram(y=y, **_analysis(config)) + top_db) / top_db


@register_feature("gd")
def group_delay_feature(y: np.ndarray, config) -> np.ndarray:
    """Modified group-delay gram scaled onto [0, 1] between its 1st and 99th percentiles.

    Unlike dB, group delay has no natural reference level, so each utterance sets its own range.
    """
    g = config.group_delay
    tau = modified_group_delay(y=y, sr=config.audio.sample_rate, n_fft=g.n_fft, win_length=g.win_length,
                               hop_length=config.spectrogram.hop_length, alpha=g.alpha, gamma=g.gamma,
                               lifter=g.lifter, preemphasis=g.preemphasis)
    low, high = np.percentile(tau, [1, 99])
    return np.clip((tau - low) / max(high - low, 1e-6), 0.0, 1.0)


@register_feature("mel+gd")
def mel_and_group_delay_feature(y: np.ndarray, config) -> np.ndarray:
    """Log-mel and group delay stacked framewise along frequency (mel below), resized as one image."""
    return np.vstack([mel_feature(y, config), group_delay_feature(y, config)])


@register_feature("mfcc", image=False)
def mfcc_feature(y: np.ndarray, config) -> np.ndarray:
    """MFCC matrix (n_mfcc x frames), each coefficient standardised over the utterance (CMVN),
    which removes channel and level differences between recordings."""
    return _standardise_rows(mfcc_matrix(y, config))


@register_feature("frames", image=False)
def frame_feature(y: np.ndarray, config) -> np.ndarray:
    """Per-frame ZCR, RMS and ``descriptors.frame_mfcc`` MFCCs, each row standardised over the utterance."""
    return _standardise_rows(frame_descriptors(y=y, n_mfcc=config.descriptors.frame_mfcc, **_analysis(config)))


@register_feature("stats", image=False)
def statistics_feature(y: np.ndarray, config) -> np.ndarray:
    """The utterance statistics of the classical baselines as a one-column matrix (d x 1)."""
    return utterance_statistics(y=y, n_mfcc=config.spectrogram.n_mfcc, std=config.descriptors.std,
                                **_analysis(config))[:, None]


__all__ = [
    "CHANNEL_MAPPINGS", "feature_array", "window_arrays", "frame_descriptors", "utterance_statistics", "feature_image", "is_image_feature", "feature_matrix", "list_features", "log_mel_spectrogram", "modified_group_delay",
    "mel_feature", "mfcc", "mfcc_matrix", "register_feature", "to_image",
]
