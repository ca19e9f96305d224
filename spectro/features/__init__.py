"""Feature registry: each feature turns a window of conditioned signal into the matrix a model reads.

A feature has two steps: `values`, its raw (band, frame) quantities (log-mel dB, group delay,
MFCCs, descriptors), and `finish`, its own scaling for a model (dB onto [0, 1], CMVN, ...). With
domain normalisation (``normalise.mode``) the values are instead standardised per band with the
statistics of a recording, speaker or corpus (``spectro.normalise``), and pictures map mean
-/+ ``normalise.range_sd`` standard deviations onto [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry
from .descriptors import frame_descriptors, utterance_statistics
from .group_delay import modified_group_delay
from .image import CHANNEL_MAPPINGS, to_image
from .mel import log_mel_spectrogram, mfcc

FEATURES = Registry("feature")


KINDS = ("picture", "matrix", "vector")


@dataclasses.dataclass(frozen=True)
class Feature:
    """A feature, and what it makes of a window: a `picture` (a 224x224x3 image for ImageNet CNNs), a
    `matrix` (bands x frames, as long as the window) or a `vector` (one column, whatever the length)."""

    values: Callable  # (window samples, FeatureConfig) -> (bands, frames)
    finish: Callable  # (values, FeatureConfig) -> model matrix, without domain normalisation
    kind: str

    @property
    def picture(self) -> bool:
        return self.kind == "picture"


def register_feature(name: str, *, finish: Callable, kind: str = "picture") -> Callable:
    """Decorator: the function computes the feature's values; `finish` scales them for a model."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")

    def decorator(values: Callable) -> Callable:
        FEATURES.register(name)(Feature(values, finish, kind))
        return values

    return decorator


def is_image_feature(name: str) -> bool:
    """Whether feature `name` makes pictures (else float matrices or vectors)."""
    return FEATURES.get(name).picture


def feature_kind(name: str) -> str:
    return FEATURES.get(name).kind


def list_features() -> list[str]:
    return FEATURES.names()


def feature_values(y: np.ndarray, config) -> np.ndarray:
    """The raw (band, frame) values of feature `config.feature` for one window `y`."""
    return FEATURES.get(config.feature).values(y, config)


def feature_matrix(y: np.ndarray, config, statistics=None) -> np.ndarray:
    """What feature `config.feature` makes of one window `y`: its own scaling, or, with domain
    normalisation, its values standardised with `statistics` (``spectro.normalise.BandStatistics``)."""
    feature = FEATURES.get(config.feature)
    values = feature.values(y, config)
    if config.normalise.mode == "none":
        return feature.finish(values, config)
    if statistics is None:
        raise ConfigError(f"normalise.mode={config.normalise.mode!r} needs the band statistics of the window's group")
    z = statistics.standardise(values)
    return np.clip(0.5 + z / (2 * config.normalise.range_sd), 0.0, 1.0) if feature.picture else z


def feature_image(y: np.ndarray, config, statistics=None) -> np.ndarray:
    """The uint8 RGB image that CNNs see for signal `y`, as set by a `FeatureConfig`."""
    return to_image(feature_matrix(y, config, statistics), size=config.image.size, channels=config.image.channels,
                    colormap=config.image.colormap)


def feature_array(y: np.ndarray, config, statistics=None) -> np.ndarray:
    """What a model reads for one window `y`, channels first: a uint8 (3, H, W) image, or a float16 matrix."""
    if is_image_feature(config.feature):
        return feature_image(y, config, statistics).transpose(2, 0, 1)
    return feature_matrix(y, config, statistics).astype(np.float16)


def recording_statistics(windows, config):
    """Band statistics of a recording, over the frames of its windows that hold real audio (not padding)."""
    from ..normalise import BandStatistics, pooled, valid_frames

    parts = []
    for window in windows:
        values = feature_values(window.samples, config)
        kept = valid_frames(window, hop_length=config.spectrogram.hop_length, n_frames=values.shape[1])
        parts.append(BandStatistics.of(values[:, kept]))
    return pooled(parts)


def window_arrays(windows, config, statistics=None) -> np.ndarray:
    """`feature_array` of each window (``spectro.audio.Window``), stacked: (windows, ...).

    With ``normalise.mode: utterance`` the recording's own statistics are taken from `windows`; with
    speaker or corpus, `statistics` must be those of the group.
    """
    if config.normalise.mode == "utterance" and statistics is None:
        statistics = recording_statistics(windows, config)
    return np.stack([feature_array(w.samples, config, statistics) for w in windows])


def _analysis(config) -> dict:
    """The short-time analysis settings shared by every feature, as keyword arguments."""
    s = config.spectrogram
    return dict(sr=config.audio.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, win_length=s.win_length,
                n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax, top_db=s.top_db)


def mfcc_matrix(y: np.ndarray, config) -> np.ndarray:
    """MFCCs (``spectrogram.n_mfcc`` x frames) with the same analysis settings as the images."""
    return mfcc(y=y, n_mfcc=config.spectrogram.n_mfcc, **_analysis(config))


def _standardise_rows(m: np.ndarray, config=None) -> np.ndarray:
    return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-5)


def _db_to_unit(values: np.ndarray, config) -> np.ndarray:
    top_db = config.spectrogram.top_db
    return (values + top_db) / top_db


def _percentile_to_unit(tau: np.ndarray, config) -> np.ndarray:
    # Unlike dB, group delay has no natural reference level, so each window sets its own range.
    low, high = np.percentile(tau, [1, 99])
    return np.clip((tau - low) / max(high - low, 1e-6), 0.0, 1.0)


def _mel_then_gd_to_unit(values: np.ndarray, config) -> np.ndarray:
    n_mels = config.spectrogram.n_mels
    return np.vstack([_db_to_unit(values[:n_mels], config), _percentile_to_unit(values[n_mels:], config)])


@register_feature("mel", finish=_db_to_unit)
def mel_feature(y: np.ndarray, config) -> np.ndarray:
    """Log-mel spectrogram in dB below the window's maximum (to ``-top_db``); finished onto [0, 1]."""
    return log_mel_spectrogram(y=y, **_analysis(config))


@register_feature("gd", finish=_percentile_to_unit)
def group_delay_feature(y: np.ndarray, config) -> np.ndarray:
    """Modified group-delay gram; finished onto [0, 1] between its 1st and 99th percentiles."""
    g = config.group_delay
    return modified_group_delay(y=y, sr=config.audio.sample_rate, n_fft=g.n_fft, win_length=g.win_length,
                                hop_length=config.spectrogram.hop_length, alpha=g.alpha, gamma=g.gamma,
                                lifter=g.lifter, preemphasis=g.preemphasis)


@register_feature("mel+gd", finish=_mel_then_gd_to_unit)
def mel_and_group_delay_feature(y: np.ndarray, config) -> np.ndarray:
    """Log-mel and group delay stacked framewise along frequency (mel below), resized as one image."""
    return np.vstack([mel_feature(y, config), group_delay_feature(y, config)])


@register_feature("mfcc", finish=_standardise_rows, kind="matrix")
def mfcc_feature(y: np.ndarray, config) -> np.ndarray:
    """MFCC matrix (n_mfcc x frames); finished by standardising each coefficient over the window (CMVN),
    which removes channel and level differences between recordings."""
    return mfcc_matrix(y, config)


@register_feature("frames", finish=_standardise_rows, kind="matrix")
def frame_feature(y: np.ndarray, config) -> np.ndarray:
    """Per-frame ZCR, RMS and ``descriptors.frame_mfcc`` MFCCs; each row standardised over the window."""
    return frame_descriptors(y=y, n_mfcc=config.descriptors.frame_mfcc, **_analysis(config))


@register_feature("stats", finish=lambda values, config: values, kind="vector")
def statistics_feature(y: np.ndarray, config) -> np.ndarray:
    """The utterance statistics of the classical baselines as a one-column matrix (d x 1)."""
    return utterance_statistics(y=y, n_mfcc=config.spectrogram.n_mfcc, std=config.descriptors.std,
                                **_analysis(config))[:, None]


__all__ = [
    "CHANNEL_MAPPINGS", "FEATURES", "Feature", "feature_array", "feature_kind", "feature_image", "feature_matrix",
    "feature_values",
    "frame_descriptors", "is_image_feature", "list_features", "log_mel_spectrogram", "mel_feature", "mfcc",
    "mfcc_matrix", "modified_group_delay", "recording_statistics", "register_feature", "to_image",
    "utterance_statistics", "window_arrays",
]
