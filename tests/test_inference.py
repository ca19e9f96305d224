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


# Peak memory of `python -m spectro ...` as getrusage reports it, measured from a small launcher: a child
# forked straight from this test process would also count the test process's own memory.
LAUNCHER = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.executable, [sys.executable, "
            "*sys.argv[1:]])\n"
            "_, status, usage = os.wait4(pid, 0)\nprint('PEAK_KB', usage.ru_maxrss, file=sys.stderr)\n"
            "sys.exit(os.waitstatus_to_exitcode(status))")


def _peak_rss_kb(arguments: list[str]) -> int:
    done = subprocess.run([sys.executable, "-c", LAUNCHER, "-m", "spectro", *arguments], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("PEAK_KB")[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="measures a forked child")
def test_a_ten_minute_recording_needs_little_more_memory_than_a_short_one(trained, tmp_path):
    _, checkpoint = trained
    long = speech_like(600.0)
    write_audio(tmp_path / "long.wav", long)
    write_audio(tmp_path / "short.wav", long[:48000])
    short_kb = _peak_rss_kb(["predict", "--no-cache", str(checkpoint), str(tmp_path / "short.wav")])
    long_kb = _peak_rss_kb(["predict", "--no-cache", str(checkpoint), str(tmp_path / "long.wav")])
    assert long_kb <= 1.3 * short_kb, (short_kb, long_kb)


def test_a_cached_traced_copy_predicts_the_same_without_building_the_model(trained, tmp_path):
    """The second load of a checkpoint starts from its traced copy: no timm import, the same numbers."""
    import json

    _, checkpoint = trained
    wav = write_audio(tmp_path / "x.wav", speech_like(7.0))
    script = ("import json, sys; from spectro import Predictor; "
              "p = Predictor.load(sys.argv[1], batch_size=int(sys.argv[3])); r = next(p.predict_files([sys.argv[2]])); "
              "print(json.dumps({'built': 'timm' in sys.modules, 'p': r.probabilities}))")
    env = {**os.environ, "SPECTRO_CACHE_DIR": str(tmp_path / "cache")}

    def run(batch_size: int) -> dict:
        out = subprocess.run([sys.executable, "-c", script, str(checkpoint), wav, str(batch_size)], env=env,
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.splitlines()[-1])

    first = run(2)
    (copy,) = (tmp_path / "cache" / "traced").iterdir()
    second = run(1)
    assert first["built"] and not second["built"]
    assert second["p"] == pytest.approx(first["p"], abs=1e-6)
    copy.write_bytes(b"not a TorchScript archive")  # a broken copy: built again, and replaced
    third = run(3)
    assert third["built"] and third["p"] == pytest.approx(first["p"], abs=1e-6)
    assert not run(2)["built"]
