"""Hand-crafted descriptors for the baselines: utterance statistics and per-frame vectors.

Both share one STFT with the spectrogram images (same window, hop and mel scale), so a baseline
and a CNN see the same analysis of a recording.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def _spectra(y: np.ndarray, *, sr: int, n_fft: int, hop_length: int, win_length: int | None, n_mels: int,
             fmin: float, fmax: float | None, top_db: float, n_mfcc: int):
    import librosa

    from .mel import mel_power, mfcc_from_log_mel, power_spectrogram, power_to_db

    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"y.shape={y.shape} must be a non-empty 1-D signal")
    y = np.asarray(y, dtype=np.float32)
    power = power_spectrogram(y=y, n_fft=n_fft, hop_length=hop_length, win_length=win_length)
    S = np.sqrt(power)
    mel_db = power_to_db(mel_power(power, sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax), top_db=top_db)
    mfcc = mfcc_from_log_mel(mel_db, n_mfcc=n_mfcc)
    # time-domain frames of the analysis window's length, centred like the STFT's (same frame count)
    frame = dict(frame_length=win_length or n_fft, hop_length=hop_length)
    zcr = librosa.feature.zero_crossing_rate(y, **frame)[:, : S.shape[1]]
    rms = librosa.feature.rms(y=y, pad_mode="constant", **frame)[:, : S.shape[1]]
    return S, mel_db, mfcc, zcr, rms


def utterance_statistics(*, y: np.ndarray, sr: int, n_fft: int = 1024, hop_length: int = 160,
                         win_length: int | None = 400, n_mels: int = 128, fmin: float = 20.0,
                         fmax: float | None = None, top_db: float = 80.0, n_mfcc: int = 40,
                         std: bool = False) -> np.ndarray:
    """The utterance-level descriptor vector of SER notebooks: per-frame descriptors averaged over time.

    RMS (1), spectral centroid (1), 85% roll-off (1), zero-crossing rate (1), chroma (12),
    MFCC (`n_mfcc`) and log-mel bands (`n_mels`): 184 values with the defaults. Mel bands are
    averaged in dB (as the images show them), not as raw power, whose means span ten decades.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal at `sr`.
    n_fft, hop_length, win_length, n_mels, fmin, fmax, top_db, n_mfcc
        Analysis settings, as for the log-mel images.
    std : bool
        Append each descriptor's standard deviation over frames (doubling the length).

    Returns
    -------
    stats : np.ndarray [shape=(d,) with d = 16 + n_mfcc + n_mels, or twice that with `std`; float32]
        RMS, centroid, roll-off, ZCR, chroma, MFCC, mel, in that order; means first, then standard deviations.
    """
    import librosa

    S, mel_db, mfcc, zcr, rms = _spectra(y, sr=sr, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                         n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db, n_mfcc=n_mfcc)
    frames = np.vstack([
        rms,
        librosa.feature.spectral_centroid(S=S, sr=sr, n_fft=n_fft),
        librosa.feature.spectral_rolloff(S=S, sr=sr, n_fft=n_fft, roll_percent=0.85),
        zcr,
        librosa.feature.chroma_stft(S=S**2, sr=sr, n_fft=n_fft, tuning=0.0),  # speech: no tuning to estimate
        mfcc,
        mel_db,
    ])
    parts = [frames.mean(axis=1)] + ([frames.std(axis=1)] if std else [])
    return np.concatenate(parts).astype(np.float32)


def frame_descriptors(*, y: np.ndarray, sr: int, n_fft: int = 1024, hop_length: int = 160,
                      win_length: int | None = 400, n_mels: int = 128, fmin: float = 20.0,
                      fmax: float | None = None, top_db: float = 80.0, n_mfcc: int = 13) -> np.ndarray:
    """Per-frame zero-crossing rate, RMS and `n_mfcc` MFCCs: the input of the LSTM baselines.

    Returns
    -------
    frames : np.ndarray [shape=(2 + n_mfcc, 1 + len(y) // hop_length), dtype=float32]
        Rows: ZCR, RMS, MFCC 0..n_mfcc-1.
    """

    _, _, mfcc, zcr, rms = _spectra(y, sr=sr, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                    n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db, n_mfcc=n_mfcc)
    return np.vstack([zcr, rms, mfcc]).astype(np.float32)
