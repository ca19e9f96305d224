"""Modified group-delay (MGD) gram: the phase-derived spectrum of Yegnanarayana & Murthy (1992)
and Hegde, Murthy & Gadde (2004, 2007).

For each windowed frame x[n]: X = DFT(x[n]), Y = DFT(n x[n]), S = the cepstrally smoothed |X|,
tau = (X_R Y_R + X_I Y_I) / S^(2 gamma), and tau_m = sign(tau) |tau|^alpha.
Dividing by the smoothed rather than the raw magnitude keeps the zeros of X near the unit circle
from producing spikes, which is what makes the group delay usable on speech.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ConfigError


def modified_group_delay_frames(frames: np.ndarray, *, n_fft: int = 512, alpha: float = 0.4, gamma: float = 0.9,
                                lifter: int = 8) -> np.ndarray:
    """MGD of frames that are already windowed.

    Parameters
    ----------
    frames : np.ndarray [shape=(frame_length, n_frames)]
        One windowed frame per column; ``frame_length <= n_fft``.
    n_fft : int
        DFT size; the output has ``n_fft // 2 + 1`` frequency bins.
    alpha, gamma : float in (0, 1]
        Compression of the group delay and of the smoothed magnitude.
    lifter : int >= 1
        Cepstral coefficients kept (quefrencies 0 .. lifter-1) to smooth the magnitude.

    Returns
    -------
    tau_m : np.ndarray [shape=(n_fft // 2 + 1, n_frames), dtype=float32]
        In samples of delay when ``alpha = gamma = 1``.
    """
    if frames.ndim != 2 or frames.shape[0] > n_fft:
        raise ConfigError(f"frames.shape={frames.shape} must be (frame_length <= n_fft={n_fft}, n_frames)")
    for name, value in (("alpha", alpha), ("gamma", gamma)):
        if not 0 < value <= 1:
            raise ConfigError(f"{name}={value} must be in (0, 1]")
    if not 1 <= lifter <= n_fft // 2:
        raise ConfigError(f"lifter={lifter} must be in [1, n_fft // 2 = {n_fft // 2}]")
    frames = frames.astype(np.float64)
    n = np.arange(frames.shape[0], dtype=np.float64)[:, None]
    X = np.fft.rfft(frames, n=n_fft, axis=0)
    Y = np.fft.rfft(n * frames, n=n_fft, axis=0)
    log_magnitude = np.log(np.maximum(np.abs(X), 1e-10))
    cepstrum = np.fft.irfft(log_magnitude, n=n_fft, axis=0)
    cepstrum[lifter:n_fft - lifter + 1] = 0.0  # keep the low quefrencies, symmetric about zero
    smoothed = np.exp(np.fft.rfft(cepstrum, n=n_fft, axis=0).real)
    tau = (X.real * Y.real + X.imag * Y.imag) / smoothed ** (2 * gamma)
    return (np.sign(tau) * np.abs(tau) ** alpha).astype(np.float32)


def modified_group_delay(*, y: np.ndarray, sr: int, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                         alpha: float = 0.4, gamma: float = 0.9, lifter: int = 8,
                         preemphasis: float = 0.97) -> np.ndarray:
    """Framewise MGD gram of a signal: pre-emphasis, centred Hamming frames, then
    `modified_group_delay_frames`. Frames line up with `log_mel_spectrogram` of the same hop.

    Returns
    -------
    tau_m : np.ndarray [shape=(n_fft // 2 + 1, 1 + len(y) // hop_length), dtype=float32]
    """
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"y.shape={y.shape} must be a non-empty 1-D signal")
    if not 0 < win_length <= n_fft:
        raise ConfigError(f"win_length={win_length} must be in (0, n_fft={n_fft}]")
    if not 0 <= preemphasis < 1:
        raise ConfigError(f"preemphasis={preemphasis} must be in [0, 1)")
    if sr <= 0 or hop_length <= 0:
        raise ConfigError(f"sr={sr} and hop_length={hop_length} must be positive")
    emphasised = np.append(y[:1], y[1:] - preemphasis * y[:-1])
    padded = np.pad(emphasised, win_length // 2)
    # center=True convention: frame t is centred on sample t * hop_length
    padded = np.pad(padded, (0, max(0, win_length - padded.size)))
    frames = sliding_window_view(padded, win_length)[::hop_length].T  # (win_length, frames), as librosa.util.frame
    frames = frames[:, : 1 + y.size // hop_length] * np.hamming(win_length)[:, None]
    return modified_group_delay_frames(frames, n_fft=n_fft, alpha=alpha, gamma=gamma, lifter=lifter)
