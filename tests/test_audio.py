import numpy as np
import pytest
import soundfile
from conftest import tone, write_audio

from spectro.audio import (
    audio_windows,
    fix_duration,
    load_audio,
    peak_normalise,
    prepare_windows,
    silence_bounds,
    to_mono,
    window_starts,
)
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
    start, end = silence_bounds(y, top_db=30)
    trimmed = y[start:end]
    assert 0.45 * sr < trimmed.size < 0.6 * sr


def test_peak_normalise():
    assert np.max(np.abs(peak_normalise(tone(amplitude=0.1), peak=0.9))) == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="peak=2"):
        peak_normalise(tone(), peak=2)


def test_a_long_recording_gives_windows_every_hop_covering_all_of_it(tmp_path):
    path = write_audio(tmp_path / "x.wav", np.concatenate([np.zeros(8000), tone(seconds=5.0, amplitude=0.2)]))
    windows = prepare_windows(path, AudioConfig(duration=3.0))  # hop: half the duration
    assert [w.samples.size for w in windows] == [48000] * 3
    # times are in the file's clock: the leading half second of silence is trimmed, not forgotten;
    # windows start every 1.5 s, and the last one ends where the speech does
    assert [w.start for w in windows] == pytest.approx([0.5, 2.0, 2.5], abs=0.02)
    assert [w.end for w in windows] == pytest.approx([3.5, 5.0, 5.5], abs=0.02)
    assert max(np.max(np.abs(w.samples)) for w in windows) == pytest.approx(0.95, rel=1e-3)
    (whole,) = prepare_windows(path, AudioConfig(duration=None, trim=False))
    assert whole.samples.size == 88000 and (whole.start, whole.end) == (0.0, 5.5)
    assert len(prepare_windows(path, AudioConfig(duration=3.0, hop=0.5, trim=False))) == 6  # 5.5 s: starts 0-2.5 s


def test_a_short_recording_is_one_padded_window_whose_times_cover_only_the_audio():
    y = np.concatenate([np.zeros(1600), tone(seconds=1.0), np.zeros(1600)])
    (centred,) = audio_windows(y, AudioConfig(duration=3.0))
    (first,) = audio_windows(y, AudioConfig(duration=3.0, align="start"))
    assert centred.samples.size == first.samples.size == 48000
    speech = np.flatnonzero(centred.samples)
    assert speech[0] == pytest.approx(16000, abs=300) and speech[-1] == pytest.approx(32000, abs=300)
    assert np.flatnonzero(first.samples)[0] < 512  # trimming works in 512-sample frames
    assert centred.start == pytest.approx(0.1, abs=0.035) and centred.end == pytest.approx(1.1, abs=0.035)


def test_window_starts_leave_no_sample_out():
    assert window_starts(100, size=30, step=15) == [0, 15, 30, 45, 60, 70]
    assert window_starts(30, size=30, step=15) == [0]
    assert window_starts(12, size=30, step=15) == [0]
    with pytest.raises(ConfigError, match="step=0"):
        window_starts(100, size=30, step=0)


def test_samples_are_mixed_to_mono_and_checked_like_files():
    stereo = np.stack([tone(seconds=0.5, sr=8000), np.zeros(4000, np.float32)], axis=1)
    y = to_mono(stereo, orig_sr=8000, sr=16000)
    assert y.shape == (8000,) and np.max(np.abs(y)) == pytest.approx(0.25, rel=0.05)
    with pytest.raises(ConfigError, match="transpose"):
        to_mono(stereo.T, orig_sr=8000, sr=16000)
    with pytest.raises(DataError, match="samples: the recording is silent"):
        to_mono(np.zeros(100), orig_sr=16000, sr=16000, source="samples")


def test_hop_must_fit_the_window():
    from spectro.config import from_dict

    with pytest.raises(ConfigError, match="audio.hop=4"):
        from_dict(AudioConfig, {"duration": 3.0, "hop": 4})
    with pytest.raises(ConfigError, match="audio.hop=1"):
        from_dict(AudioConfig, {"duration": None, "hop": 1})


@pytest.mark.parametrize("n, quiet", [(1, 0), (129, 0), (1000, 333), (5000, 1600), (48000, 9000)])
def test_silence_bounds_follow_librosa_trim(n, quiet):
    import librosa

    from spectro.audio import silence_bounds

    rng = np.random.default_rng(n)
    y = (rng.normal(size=n) * np.r_[np.full(quiet, 1e-3), np.ones(n - quiet - quiet // 2), np.full(quiet // 2, 1e-3)])
    y = y.astype(np.float32)
    _, expected = librosa.effects.trim(y, top_db=30, frame_length=512, hop_length=128)
    assert silence_bounds(y, top_db=30) == tuple(int(i) for i in expected)
