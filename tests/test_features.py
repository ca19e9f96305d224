import librosa
import numpy as np
import pytest
from conftest import tone

from spectro.config import FeatureConfig, ImageConfig
from spectro.errors import ConfigError
from spectro.features import feature_image, log_mel_spectrogram, mfcc, mfcc_matrix, to_image


def test_log_mel_range_shape_and_peak_band():
    sr = 16000
    S = log_mel_spectrogram(y=tone(1000, seconds=1.0, sr=sr), sr=sr, n_mels=64, top_db=80)
    assert S.shape == (64, 1 + sr // 160)
    assert S.max() == pytest.approx(0.0) and S.min() >= -80.0
    centres = librosa.mel_frequencies(n_mels=64 + 2, fmin=20.0, fmax=sr / 2)[1:-1]
    peak_band = int(np.argmax(S[:, 50]))
    assert abs(centres[peak_band] - 1000) < 80


def test_log_mel_accepts_float64_signals():
    y = tone(440, seconds=0.5).astype(np.float64)
    np.testing.assert_allclose(log_mel_spectrogram(y=y, sr=16000), log_mel_spectrogram(y=y.astype(np.float32),
                                                                                       sr=16000))


def test_log_mel_gives_the_dense_filter_bank_product_in_float64_within_1e_4_db():
    """The filter bank is applied as a sparse matrix for speed; the numbers must not move."""
    from spectro.features.mel import mel_filterbank, power_spectrogram, power_to_db

    rng = np.random.default_rng(1)
    y = (tone(300, seconds=1.0) * np.linspace(0, 1, 16000) + 1e-4 * rng.normal(size=16000)).astype(np.float32)
    for n_mels, fmin in ((128, 20.0), (40, 300.0)):
        basis = mel_filterbank(sr=16000, n_fft=1024, n_mels=n_mels, fmin=fmin).astype(np.float64)
        dense = power_to_db(basis @ power_spectrogram(y=y).astype(np.float64), top_db=80)
        sparse = log_mel_spectrogram(y=y, sr=16000, n_mels=n_mels, fmin=fmin)
        assert dense.min() == -80.0  # the quiet end, where rounding shows most, is in the test
        np.testing.assert_allclose(sparse, dense, atol=1e-4, rtol=0)


def test_mfcc_matches_librosa_computed_independently():
    y, sr = tone(220, seconds=0.8) + 0.1 * tone(1700, seconds=0.8), 16000
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=160, win_length=400, n_mels=128,
                                         fmin=20.0, center=True, pad_mode="constant")
    expected = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=np.max, top_db=80), n_mfcc=40)
    np.testing.assert_allclose(mfcc(y=y, sr=sr), expected, rtol=1e-3, atol=1e-2)
    assert mfcc_matrix(y, FeatureConfig()).shape == (40, 1 + y.size // 160)


def test_spectrogram_pieces_match_librosa():
    """The numpy/scipy.fft spectrogram (kept off librosa for start-up time) gives librosa's numbers."""
    from spectro.features.image import delta
    from spectro.features.mel import mel_filterbank, power_spectrogram, power_to_db

    rng = np.random.default_rng(0)
    y = (tone(220, seconds=1.3) + 0.05 * rng.normal(size=20800)).astype(np.float32)
    for n_fft, hop, win in ((1024, 160, 400), (512, 128, None), (400, 100, 399)):
        expected = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True,
                                       pad_mode="constant")) ** 2
        np.testing.assert_allclose(power_spectrogram(y=y, n_fft=n_fft, hop_length=hop, win_length=win), expected,
                                   rtol=1e-4, atol=1e-6 * expected.max())
    for sr, n_fft, n_mels, fmin, fmax in ((16000, 1024, 128, 20.0, None), (22050, 2048, 40, 0.0, 8000.0)):
        np.testing.assert_allclose(mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax),
                                   librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                                       fmax=fmax), atol=1e-7)
    S = rng.gamma(0.5, size=(64, 90)) ** 4
    np.testing.assert_allclose(power_to_db(S, top_db=60), librosa.power_to_db(S, ref=np.max, top_db=60), atol=1e-4)
    reference = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=1024, hop_length=160, win_length=400, n_mels=128, fmin=20.0, center=True,
        pad_mode="constant"), ref=np.max, top_db=80)
    np.testing.assert_allclose(log_mel_spectrogram(y=y, sr=16000), reference, atol=1e-3)
    matrix = rng.random((20, 50)).astype(np.float32)
    for order in (1, 2):
        np.testing.assert_allclose(delta(matrix, order=order), librosa.feature.delta(matrix, width=9, order=order,
                                                                                     mode="nearest"), atol=1e-5)


def test_image_puts_low_frequencies_at_the_bottom():
    matrix = np.zeros((64, 100))
    matrix[:8] = 1.0  # energy in the lowest bands only
    image = to_image(matrix, channels="grey")
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert image[-10:].mean() > 200 and image[:100].mean() < 5
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_colormap_image_uses_the_colour_map():
    import matplotlib

    image = to_image(np.full((10, 10), 1.0), channels="colormap", colormap="magma")
    expected = np.round(np.array(matplotlib.colormaps["magma"](1.0)[:3]) * 255)
    np.testing.assert_allclose(image[100, 100], expected, atol=1)


def test_delta_channels_are_neutral_for_a_steady_matrix():
    image = to_image(np.tile(np.linspace(0, 1, 40)[:, None], (1, 50)), channels="deltas")
    assert abs(int(image[..., 1].mean()) - 128) <= 1 and abs(int(image[..., 2].mean()) - 128) <= 1
    assert image[..., 0].std() > 50


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": "rgb"}, "channels='rgb'"),
    ({"size": 8}, "size=8"),
    ({"channels": "colormap", "colormap": "no-such-map"}, "colormap='no-such-map'"),
])
def test_to_image_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        to_image(np.zeros((4, 4)), **kwargs)


def test_feature_image_is_deterministic_and_sized_by_config():
    y = tone(330, seconds=3.0)
    config = FeatureConfig(image=ImageConfig(size=96))
    first = feature_image(y, config)
    assert first.shape == (96, 96, 3)
    np.testing.assert_array_equal(first, feature_image(y, config))


def test_group_delay_features_render_and_stack_framewise_under_mel():
    from spectro.features import feature_matrix

    y = tone(220, seconds=3.0) + 0.3 * tone(1400, seconds=3.0)
    mel = feature_matrix(y, FeatureConfig(feature="mel"))
    gd = feature_matrix(y, FeatureConfig(feature="gd"))
    both = feature_matrix(y, FeatureConfig(feature="mel+gd"))
    assert gd.shape == (257, mel.shape[1]) and 0 <= gd.min() and gd.max() <= 1
    np.testing.assert_array_equal(both, np.vstack([mel, gd]))
    for feature in ("gd", "mel+gd"):
        assert feature_image(y, FeatureConfig(feature=feature)).shape == (224, 224, 3)
