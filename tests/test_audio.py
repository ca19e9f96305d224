import numpy as np
import pytest
import soundfile

from conftest import tone, write_audio
from spectro.audio import fix_duration, load_audio, peak_normalise, prepare_audio, trim_silence
from spectro.config import AudioConfig
from spectro.errors import ConfigError, DataError


def test_load_mixes_channels_and_resamples(tmp_path):
    left = tone(440, seconds=1.0, sr=44100)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, 0.5 * left], axis=1), 44100)
    y = load_audio(path, sr=16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 16000) <= 1
    # the mono mix of x and x/2 has peak 0.75 * 0.5
    assert np.max(np.abs(y)) == pytest.approx(0.375, rel=0.02)


def test_load_reads_flac_at_native_rate(tmp_path):
    path = tmp_path / "a.FLAC"
    soundfile.write(path, tone(300, seconds=0.5), 16000, format="FLAC")
    assert load_audio(path, sr=16000).size == 8000


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"RIFF\x00\x00not really audio"), "cannot decode"),
    (lambda p: soundfile.write(p, np.zeros((0,), np.float32), 16000), "no samples"),
    (lambda p: soundfile.write(p, np.zeros(1600, np.float32), 16000), "silent"),
])
def test_unusable_files_raise_data_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        load_audio(path)
    assert "bad.wav" in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_fix_duration_crops_and_pads_by_alignment():
    y = np.arange(10, dtype=np.float32) + 1
    np.testing.assert_array_equal(fix_duration(y, sr=1, duration=4, align="center"), [4, 5, 6, 7])
    np.testing.assert_array_equal(fix_duration(y, sr=1, duration=4, align="start"), [1, 2, 3, 4])
    padded = fix_duration(y[:2], sr=1, duration=6, align="center")
    np.testing.assert_array_equal(padded, [0, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(fix_duration(y[:2], sr=1, duration=4, align="start"), [1, 2, 0, 0])
    with pytest.raises(ConfigError, match="align='end'"):
        fix_duration(y, sr=1, duration=4, align="end")


def test_trim_removes_surrounding_silence():
    sr = 16000
    y = np.concatenate([np.zeros(sr), tone(500, seconds=0.5), np.zeros(sr)])
    trimmed = trim_silence(y, top_db=30)
    assert 0.45 * sr < trimmed.size < 0.6 * sr


def test_peak_normalise():
    assert np.max(np.abs(peak_normalise(tone(amplitude=0.1), peak=0.9))) == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="peak=2"):
        peak_normalise(tone(), peak=2)


def test_prepare_audio_gives_fixed_length_normalised_signal(tmp_path):
    path = write_audio(tmp_path / "x.wav", np.concatenate([np.zeros(8000), tone(seconds=5.0, amplitude=0.2)]))
    y = prepare_audio(path, AudioConfig(duration=3.0))
    assert y.size == 48000
    assert np.max(np.abs(y)) == pytest.approx(0.95, rel=1e-3)
    assert prepare_audio(path, AudioConfig(duration=None, trim=False)).size == 88000
