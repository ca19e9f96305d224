import numpy as np
import pytest
from scipy.signal import lfilter

from spectro.errors import ConfigError
from spectro.features.group_delay import modified_group_delay, modified_group_delay_frames
from spectro.features.mel import log_mel_spectrogram


@pytest.mark.parametrize("shift", [3, 17, 60])
def test_a_delayed_impulse_has_a_flat_delay_equal_to_the_shift(shift):
    frame = np.zeros((256, 1))
    frame[shift] = 1.0
    tau = modified_group_delay_frames(frame, n_fft=512, alpha=1.0, gamma=1.0, lifter=8)
    np.testing.assert_allclose(tau[:, 0], shift, rtol=1e-6)
    # with compression the delay is still flat, at shift ** alpha
    np.testing.assert_allclose(modified_group_delay_frames(frame, alpha=0.4, gamma=0.9)[:, 0], shift ** 0.4, rtol=1e-5)


@pytest.mark.parametrize("freq", [500.0, 1200.0, 2500.0])
def test_a_single_resonance_peaks_at_its_frequency(freq):
    sr, r = 16000, 0.97
    theta = 2 * np.pi * freq / sr
    impulse = np.zeros(400)
    impulse[0] = 1.0
    response = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], impulse)
    tau = modified_group_delay_frames(response[:, None] * np.hamming(400)[:, None], n_fft=512)
    peak_hz = np.argmax(tau[:, 0]) * sr / 512
    assert abs(peak_hz - freq) <= 2 * sr / 512


def direct_mgd(frame: np.ndarray, n_fft: int, alpha: float, gamma: float, lifter: int) -> np.ndarray:
    """Straight from the definition, one frame, full complex DFTs and an explicit lifter window."""
    padded = np.zeros(n_fft)
    padded[: frame.size] = frame
    X = np.fft.fft(padded)
    Y = np.fft.fft(np.arange(n_fft) * padded)
    cepstrum = np.fft.ifft(np.log(np.abs(X))).real
    window = np.zeros(n_fft)
    window[:lifter] = 1.0
    window[n_fft - lifter + 1:] = 1.0
    S = np.exp(np.fft.fft(cepstrum * window).real)
    tau = (X.real * Y.real + X.imag * Y.imag) / S ** (2 * gamma)
    return (np.sign(tau) * np.abs(tau) ** alpha)[: n_fft // 2 + 1]


def test_matches_an_independent_direct_computation():
    rng = np.random.default_rng(0)
    y = lfilter([1.0], [1.0, -1.3, 0.8], rng.standard_normal(4000))
    gram = modified_group_delay(y=y, sr=16000, preemphasis=0.97)
    emphasised = np.append(y[:1], y[1:] - 0.97 * y[:-1])
    padded = np.pad(emphasised, 200)
    for t in (0, 7, 20):
        frame = padded[t * 160: t * 160 + 400] * np.hamming(400)
        np.testing.assert_allclose(gram[:, t], direct_mgd(frame, 512, 0.4, 0.9, 8), rtol=1e-4, atol=1e-4)


def test_frames_line_up_with_the_mel_spectrogram():
    y = np.random.default_rng(1).standard_normal(16000 * 2 + 37)
    assert modified_group_delay(y=y, sr=16000).shape == (257, log_mel_spectrogram(y=y, sr=16000).shape[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "alpha=0.0"), ({"gamma": 1.5}, "gamma=1.5"), ({"lifter": 0}, "lifter=0"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        modified_group_delay_frames(np.ones((8, 2)), **kwargs)
