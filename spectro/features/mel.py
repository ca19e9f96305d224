"""Log-mel spectrogram and MFCC, with librosa's conventions and parameter names."""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ConfigError


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    # Building the filter bank costs more than applying it; every file of a job shares one.
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def log_mel_spectrogram(*, y: np.ndarray, sr: int, n_fft: int = 1024, hop_length: int = 160,
                        win_length: int | None = 400, n_mels: int = 128, fmin: float = 20.0,
                        fmax: float | None = None, top_db: float = 80.0) -> np.ndarray:
    """Power mel spectrogram in dB relative to its maximum, floored at ``-top_db``.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal.
    sr : int > 0
        Sample rate of `y` in Hz.
    n_fft, hop_length, win_length, n_mels, fmin, fmax
        As in ``librosa.feature.melspectrogram`` (Hann window, centred frames).
    top_db : float > 0
        Dynamic range kept below the maximum.

    Returns
    -------
    S_db : np.ndarray [shape=(n_mels, 1 + len(y) // hop_length), dtype=float32]
        Values in ``[-top_db, 0]``; row 0 is the lowest mel band.
    """
    import librosa

    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"y.shape={y.shape} must be a non-empty 1-D signal")
    if top_db <= 0:
        raise ConfigError(f"top_db={top_db} must be positive")
    y = np.asarray(y, dtype=np.float32)  # float64 input would double the cost for no gain
    stft = librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window="hann",
                        center=True, pad_mode="constant")
    power = np.abs(stft, dtype=np.float32) ** 2
    mel = _mel_basis(sr, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax)) @ power
    return librosa.power_to_db(mel, ref=np.max, top_db=top_db).astype(np.float32)


def mfcc(*, y: np.ndarray, sr: int, n_mfcc: int = 40, n_fft: int = 1024, hop_length: int = 160,
         win_length: int | None = 400, n_mels: int = 128, fmin: float = 20.0, fmax: float | None = None,
         top_db: float = 80.0) -> np.ndarray:
    """Mel-frequency cepstral coefficients (DCT-II, orthonormal) of the log-mel spectrogram.

    Returns
    -------
    M : np.ndarray [shape=(n_mfcc, 1 + len(y) // hop_length), dtype=float32]
    """
    import librosa

    if not 0 < n_mfcc <= n_mels:
        raise ConfigError(f"n_mfcc={n_mfcc} must be in (0, n_mels={n_mels}]")
    S_db = log_mel_spectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                               n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db)
    return librosa.feature.mfcc(S=S_db, n_mfcc=n_mfcc).astype(np.float32)
