"""Waveform augmentation for training recordings: noise, pitch, tempo, gain and trimming, and acoustic domain
randomisation (speed perturbation, simulated rooms, band-limited channels).

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
    # the domain randomisation draws after the others, so that copies made before it existed stay the same
    if rng.random() < config.speed_p:
        y = change_speed(y, sr=sr, factor=float(rng.choice(config.speeds)))
    if rng.random() < config.reverb_p:
        y = reverberate(y, sr=sr, rt60=float(rng.uniform(*config.rt60)), rng=rng)
    if rng.random() < config.channel_p:
        y = band_limit(y, sr=sr, bandwidth_hz=config.bandwidth_hz, rng=rng)
    return np.asarray(y, dtype=np.float32)


def change_speed(y: np.ndarray, *, sr: int, factor: float) -> np.ndarray:
    """`y` played `factor` times as fast: tempo, pitch and formants scaled together (Ko et al. 2015)."""
    import soxr

    if factor <= 0:
        raise ConfigError(f"factor={factor} must be positive")
    return y if factor == 1 else soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def _same_level(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`y` scaled to the RMS of `like`, so that a gain drawn before is kept."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return (y * (float(np.sqrt(np.mean(np.square(like, dtype=np.float64)))) / max(rms, 1e-12))).astype(np.float32)


def reverberate(y: np.ndarray, *, sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """`y` in a simulated room: convolved with a generated impulse response, the direct sound followed by
    Gaussian noise decaying by 60 dB over `rt60` seconds (a diffuse tail), at the input's level."""
    from scipy.signal import fftconvolve

    if rt60 <= 0:
        raise ConfigError(f"rt60={rt60} must be positive seconds")
    t = np.arange(int(min(1.2 * rt60, 1.5) * sr)) / sr
    response = rng.standard_normal(t.size) * 10.0 ** (-3.0 * t / rt60) * 0.3
    response[0] = 1.0
    return _same_level(fftconvolve(y, response)[: y.size], y)


def band_limit(y: np.ndarray, *, sr: int, bandwidth_hz: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """`y` through a narrower channel: half the time a telephone line (300-3400 Hz, 8-bit mu-law), else a
    low-pass at a cutoff drawn from `bandwidth_hz`; at the input's level."""
    from scipy.signal import butter, sosfiltfilt

    nyquist = sr / 2
    if rng.random() < 0.5:
        sos = butter(6, [300 / nyquist, min(3400, 0.95 * nyquist) / nyquist], btype="bandpass", output="sos")
        out = sosfiltfilt(sos, y)
        peak = max(float(np.max(np.abs(out))), 1e-12)
        mu = np.sign(out / peak) * np.log1p(255 * np.abs(out / peak)) / np.log1p(255)
        out = peak * np.sign(mu) * np.expm1(np.abs(np.round(mu * 127) / 127) * np.log1p(255)) / 255
    else:
        cutoff = min(float(rng.uniform(*bandwidth_hz)), 0.95 * nyquist)
        out = sosfiltfilt(butter(8, cutoff / nyquist, output="sos"), y)
    return _same_level(np.ascontiguousarray(out), y)


def copy_rng(recording: str, copy: int, seed: int) -> np.random.Generator:
    """The generator of one augmented copy: fixed by the recording's name, the copy number and the
    seed, so a copy is the same wherever the corpus lies and for every feature rendered from it."""
    return np.random.default_rng([zlib.crc32(recording.encode("utf-8", "surrogateescape")), copy, seed])
