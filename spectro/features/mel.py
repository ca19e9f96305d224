"""Power and log-mel spectrograms and MFCCs, with librosa's conventions and parameter names.

Written with numpy and ``scipy.fft`` rather than called from librosa: the numbers agree with
``librosa.stft``, ``librosa.filters.mel`` (Slaney), ``librosa.power_to_db`` and
``librosa.feature.mfcc`` (tests check them against librosa), but importing librosa's spectral
modules costs about a second (scipy.signal, numba), which every `spectro predict` would pay.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ConfigError

_MEL_BREAK_HZ, _MEL_LINEAR_STEP = 1000.0, 200.0 / 3  # Slaney: linear below 1 kHz, logarithmic above
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's default, ``htk=False``)."""
    f = np.asarray(frequencies, dtype=np.float64)
    logarithmic = np.log(np.maximum(f, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(f >= _MEL_BREAK_HZ, _MEL_BREAK_HZ / _MEL_LINEAR_STEP + logarithmic, f / _MEL_LINEAR_STEP)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    break_mel = _MEL_BREAK_HZ / _MEL_LINEAR_STEP
    return np.where(m >= break_mel, _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (m - break_mel)), m * _MEL_LINEAR_STEP)


@functools.lru_cache(maxsize=16)
def mel_filterbank(*, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters, Slaney-normalised (constant energy per band), as ``librosa.filters.mel``.

    Returns
    -------
    weights : np.ndarray [shape=(n_mels, 1 + n_fft // 2), dtype=float32], cached per setting
    """
    fmax = sr / 2 if fmax is None else fmax
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    ramps = edges[:, None] - bin_hz[None, :]
    widths = np.diff(edges)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    slaney = 2.0 / (edges[2:] - edges[:-2])  # each band's area normalised
    weights = (np.maximum(0.0, np.minimum(rising, falling)) * slaney[:, None]).astype(np.float32)
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights


@functools.lru_cache(maxsize=16)
def _hann(win_length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)  # periodic, as for an STFT


def power_spectrogram(*, y: np.ndarray, n_fft: int = 1024, hop_length: int = 160,
                      win_length: int | None = 400) -> np.ndarray:
    """|STFT|^2 with a Hann window centred in each `n_fft` frame and frames centred on ``t * hop_length``
    (zero padding at the edges), as ``np.abs(librosa.stft(..., center=True, pad_mode="constant"))**2``.

    Returns
    -------
    S : np.ndarray [shape=(1 + n_fft // 2, 1 + len(y) // hop_length), dtype=float32]
    """
    return _power_frames(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length).T.astype(np.float32)


def _power_frames(y: np.ndarray, *, n_fft: int, hop_length: int, win_length: int | None) -> np.ndarray:
    """`power_spectrogram` as float64 (frames, bins), the layout the FFT leaves: computed in float64
    because float32 FFTs drift by up to 7.5e-4 dB at the quiet end of an 80 dB range."""
    import scipy.fft

    win_length = win_length or n_fft
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"y.shape={y.shape} must be a non-empty 1-D signal")
    if not 0 < win_length <= n_fft or hop_length <= 0:
        raise ConfigError(f"win_length={win_length} must be in (0, n_fft={n_fft}] and hop_length={hop_length} positive")
    # Only the window's own span of each frame is non-zero: frame that span, and let the FFT zero-pad
    # it to n_fft (the shift inside the frame changes phases only, not power).
    offset = (n_fft - win_length) // 2
    padded = np.pad(np.asarray(y, dtype=np.float64), n_fft // 2)[offset:]
    frames = sliding_window_view(padded, win_length)[::hop_length][: 1 + y.size // hop_length]
    spectrum = scipy.fft.rfft(frames * _hann(win_length), n=n_fft, axis=1)
    return spectrum.real ** 2 + spectrum.imag ** 2


def mel_power(power: np.ndarray, *, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
              fmax: float | None = None) -> np.ndarray:
    """Power in mel bands, ``mel_filterbank(...) @ power`` for a (bins, frames) `power`: each band
    covers a few bins, so the filter bank is applied as a sparse matrix (a tenth of a dense product's time)."""
    return _sparse_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=float(fmin),
                              fmax=None if fmax is None else float(fmax)) @ power


@functools.lru_cache(maxsize=16)
def _sparse_filterbank(**setting):
    import scipy.sparse

    return scipy.sparse.csr_array(mel_filterbank(**setting))


def power_to_db(S: np.ndarray, *, top_db: float = 80.0, amin: float = 1e-10) -> np.ndarray:
    """Power in dB relative to the largest value of `S`, floored at ``-top_db`` (``librosa.power_to_db``
    with ``ref=np.max``)."""
    if top_db <= 0:
        raise ConfigError(f"top_db={top_db} must be positive")
    S = np.asarray(S, dtype=np.float64)
    db = 10.0 * np.log10(np.maximum(S, amin)) - 10.0 * np.log10(max(S.max(), amin))
    return np.maximum(db, db.max() - top_db).astype(np.float32)


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
    power = _power_frames(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length)
    return power_to_db(mel_power(power.T, sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax), top_db=top_db)


def mfcc_from_log_mel(S_db: np.ndarray, *, n_mfcc: int) -> np.ndarray:
    """The first `n_mfcc` orthonormal DCT-II coefficients of each frame (``librosa.feature.mfcc(S=...)``)."""
    import scipy.fft

    if not 0 < n_mfcc <= S_db.shape[0]:
        raise ConfigError(f"n_mfcc={n_mfcc} must be in (0, n_mels={S_db.shape[0]}]")
    return scipy.fft.dct(S_db, axis=0, type=2, norm="ortho")[:n_mfcc].astype(np.float32)


def mfcc(*, y: np.ndarray, sr: int, n_mfcc: int = 40, n_fft: int = 1024, hop_length: int = 160,
         win_length: int | None = 400, n_mels: int = 128, fmin: float = 20.0, fmax: float | None = None,
         top_db: float = 80.0) -> np.ndarray:
    """Mel-frequency cepstral coefficients (DCT-II, orthonormal) of the log-mel spectrogram.

    Returns
    -------
    M : np.ndarray [shape=(n_mfcc, 1 + len(y) // hop_length), dtype=float32]
    """
    if not 0 < n_mfcc <= n_mels:
        raise ConfigError(f"n_mfcc={n_mfcc} must be in (0, n_mels={n_mels}]")
    S_db = log_mel_spectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                               n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db)
    return mfcc_from_log_mel(S_db, n_mfcc=n_mfcc)
