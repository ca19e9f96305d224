import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import write_audio
from spectro import Predictor
from spectro.errors import DataError
from spectro.synth import generate_corpus


def speech_like(seconds: float, *, seed: int = 0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(size=t.size)
    return ((0.3 + 0.2 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 170 * t) + 0.02 * noise).astype(np.float32)


def test_samples_and_files_of_the_same_audio_predict_the_same(trained, tmp_path):
    _, checkpoint = trained
    predictor = Predictor.load(checkpoint, device="cpu", batch_size=3)
    y = speech_like(5.0)
    from_samples = predictor.predict(y, 16000)
    assert from_samples.label == max(from_samples.probabilities, key=from_samples.probabilities.get)
    assert sum(from_samples.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert [(round(w.start, 2), round(w.end, 2)) for w in from_samples.windows] == [(0.0, 3.0), (1.5, 4.5), (2.0, 5.0)]
    # the recording's probabilities are the mean of its windows'
    for c, p in from_samples.probabilities.items():
        assert p == pytest.approx(np.mean([w.probabilities[c] for w in from_samples.windows]), abs=1e-6)

    stereo_44k = tmp_path / "stereo.wav"
    import librosa

    resampled = librosa.resample(y, orig_sr=16000, target_sr=44100)
    soundfile.write(stereo_44k, np.stack([resampled, resampled], axis=1), 44100, subtype="FLOAT")
    write_audio(tmp_path / "same.wav", y)
    files = [tmp_path / "same.wav", tmp_path / "missing.wav", stereo_44k, tmp_path / "same.wav"]
    results = list(predictor.predict_files(files))  # windows of several files share batches of 3
    assert [r.path for r in results] == [str(f) for f in files]
    assert "no such file" in results[1].error and results[1].label is None
    for r in (results[0], results[3]):
        assert r.probabilities == pytest.approx(from_samples.probabilities, abs=1e-6)
    assert results[2].probabilities == pytest.approx(from_samples.probabilities, abs=0.05)  # resampled twice
    with pytest.raises(DataError, match="silent"):
        predictor.predict(np.zeros(16000), 16000)


def test_batch_size_does_not_change_predictions(trained, tmp_path):
    _, checkpoint = trained
    paths = [write_audio(tmp_path / f"{i}.wav", speech_like(s, seed=i)) for i, s in enumerate([1.0, 7.0, 3.0, 4.2])]
    one = list(Predictor.load(checkpoint, batch_size=1).predict_files(paths))
    many = list(Predictor.load(checkpoint, batch_size=5).predict_files(paths))
    for a, b in zip(one, many):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert [w.label for w in a.windows] == [w.label for w in b.windows]


def test_the_readme_api_example_runs_as_written(trained, tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = re.search(r"<!-- api example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    _, checkpoint = trained
    monkeypatch.chdir(tmp_path)  # where `make demo` leaves its outputs
    demo = Path("checkpoints/demo")
    (demo / "checkpoints" / "demo").mkdir(parents=True)
    shutil.copy(checkpoint, demo / "checkpoints" / "demo" / "best.pt")
    generate_corpus(demo / "corpus", languages=("synth-b",), speakers_per_language=1, utterances_per_emotion=2)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed and printed[0].split()[0] in ("neutral", "happy", "sad", "angry")


def _peak_rss_kb(command: list[str]) -> int:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, process.stderr.read().decode()
    return usage.ru_maxrss


def test_a_ten_minute_recording_needs_little_more_memory_than_a_short_one(trained, tmp_path):
    _, checkpoint = trained
    long = speech_like(600.0)
    write_audio(tmp_path / "long.wav", long)
    write_audio(tmp_path / "short.wav", long[:48000])
    predict = [sys.executable, "-m", "spectro", "predict", str(checkpoint)]
    short_kb = _peak_rss_kb(predict + [str(tmp_path / "short.wav")])
    long_kb = _peak_rss_kb(predict + [str(tmp_path / "long.wav")])
    assert long_kb <= 1.3 * short_kb, (short_kb, long_kb)
