"""Reading recordings and bringing them to one sample rate, level and length."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from .config import AudioConfig
from .errors import ConfigError, DataError


def load_audio(path, *, sr: int = 16000) -> np.ndarray:
    """Read any sample rate and channel count as mono float32 at `sr`.

    Parameters
    ----------
    path : str or path-like
        A file soundfile can read (WAV, FLAC, OGG, ...); other formats go through librosa/audioread.
    sr : int > 0
        Target sample rate in Hz.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    DataError
        If the file cannot be decoded, is empty, silent, or holds non-finite samples.
    """
    import soundfile

    if sr <= 0:
        raise ConfigError(f"sr={sr} must be a positive integer")
    if not os.path.isfile(path):
        raise DataError(f"cannot read {path}: no such file")
    try:
        data, native_sr = soundfile.read(path, dtype="float32", always_2d=True)
        y = data.mean(axis=1)
    except soundfile.LibsndfileError as sf_error:
        y, native_sr = _load_with_librosa(path, sf_error)
    if y.size == 0:
        raise DataError(f"cannot use {path}: the file holds no samples")
    if not np.all(np.isfinite(y)):
        raise DataError(f"cannot use {path}: it holds NaN or infinite samples")
    if not np.any(y):
        raise DataError(f"cannot use {path}: the recording is silent (all samples are zero)")
    if native_sr != sr:
        import librosa

        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _load_with_librosa(path, sf_error: Exception) -> tuple[np.ndarray, int]:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, native_sr = librosa.load(path, sr=None, mono=True)
    except Exception as error:  # audioread raises many unrelated types
        raise DataError(f"cannot decode {path}: {sf_error}; fallback decoder: {str(error) or type(error).__name__}") from None
    return y.astype(np.float32), int(native_sr)


def silence_bounds(y: np.ndarray, *, top_db: float = 30.0) -> tuple[int, int]:
    """Sample range left after cutting leading and trailing frames quieter than `top_db` below the peak."""
    import librosa

    _, (start, end) = librosa.effects.trim(y, top_db=top_db, frame_length=512, hop_length=128)
    return (int(start), int(end)) if end > start else (0, y.size)


def trim_silence(y: np.ndarray, *, top_db: float = 30.0) -> np.ndarray:
    """`y` without its leading and trailing silence; all of `y` if nothing would be left."""
    start, end = silence_bounds(y, top_db=top_db)
    return y[start:end]


def peak_normalise(y: np.ndarray, *, peak: float = 0.95) -> np.ndarray:
    """Scale so that the largest absolute sample equals `peak`."""
    if not 0 < peak <= 1:
        raise ConfigError(f"peak={peak} must be in (0, 1]")
    top = float(np.max(np.abs(y)))
    return y if top == 0 else (y * (peak / top)).astype(np.float32)


def fix_duration(y: np.ndarray, *, sr: int, duration: float, align: str = "center") -> np.ndarray:
    """Crop or zero-pad to exactly `duration` seconds, keeping the `align` part of the signal."""
    if duration <= 0:
        raise ConfigError(f"duration={duration} must be positive")
    if align not in ("center", "start"):
        raise ConfigError(f"align={align!r} must be 'center' or 'start'")
    target = int(round(duration * sr))
    excess = y.size - target
    if excess > 0:
        start = excess // 2 if align == "center" else 0
        return y[start:start + target]
    before = -excess // 2 if align == "center" else 0
    return np.pad(y, (before, -excess - before))


def prepare_audio(path, config: AudioConfig, *, augment: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Load and condition one recording exactly as every spectro stage does."""
    return condition_audio(load_audio(path, sr=config.sample_rate), config, augment=augment)


def condition_audio(y: np.ndarray, config: AudioConfig, *,
                    augment: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Trim, normalise and crop/pad a signal already at ``config.sample_rate``.

    `augment` (training copies only) changes the trimmed, normalised speech before the crop, so
    a fixed-length picture is still filled the same way.
    """
    if config.trim:
        y = trim_silence(y, top_db=config.trim_top_db)
    if config.normalise:
        y = peak_normalise(y, peak=config.peak)
    if augment is not None:
        y = augment(y)
        if y.size == 0:
            raise DataError("augmentation left no samples")
    if config.duration is not None:
        y = fix_duration(y, sr=config.sample_rate, duration=config.duration, align=config.align)
    return y


def split_windows(y: np.ndarray, *, sr: int, duration: float, hop: float) -> list[tuple[float, np.ndarray]]:
    """(start second, window) pairs of exactly `duration` seconds every `hop` seconds.

    The last window ends at the end of `y`, so no audio is left unscored; a signal shorter than
    `duration` gives one zero-padded window.
    """
    if duration <= 0 or hop <= 0:
        raise ConfigError(f"duration={duration} and hop={hop} must be positive")
    size, step = int(round(duration * sr)), max(1, int(round(hop * sr)))
    if y.size <= size:
        return [(0.0, fix_duration(y, sr=sr, duration=duration, align="start"))]
    starts = list(range(0, y.size - size + 1, step))
    if starts[-1] != y.size - size:
        starts.append(y.size - size)
    return [(start / sr, y[start:start + size]) for start in starts]
