"""The synthetic demo corpus: deterministic, resumable, valid audio, parseable, and learnable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spectro.corpora import CLASS_SETUPS, scan_corpus
from spectro.errors import ConfigError
from spectro.synth import LANGUAGES, generate_corpus, make_speaker, synthesize_utterance

SMALL = dict(emotions=("neutral", "angry"), speakers_per_language=2, utterances_per_emotion=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return root, generate_corpus(root)


@pytest.fixture(scope="module")
def scan(corpus):
    return scan_corpus("synth", corpus[0])


def _utterance(seed):
    speaker = make_speaker(language="synth-a", index=1, seed=0)
    rng = np.random.default_rng(seed)
    return synthesize_utterance(emotion="happy", speaker=speaker, language="synth-a", rng=rng)


def _snapshot(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*.wav")}


def test_utterance_depends_only_on_the_generator():
    y = _utterance(7)
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, _utterance(7))
    other = _utterance(8)
    assert y.shape != other.shape or not np.array_equal(y, other)


def test_corpus_files_are_16k_mono_pcm_of_plausible_length_and_unclipped(corpus):
    root, paths = corpus
    assert len(paths) == 4 * 2 * 4 * 8 and all(p.is_file() for p in paths)
    assert (root / "README.txt").read_text().startswith("spectro synthetic")
    for path in paths:
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.5 <= info.duration <= 3.0, path
        y, _ = soundfile.read(path)
        peak = np.abs(y).max()
        assert 0.1 < peak < 0.95, path
        edge = int(0.09 * 16000)
        for silence in (y[:edge], y[-edge:]):
            assert np.sqrt(np.mean(silence**2)) < 0.05 * peak, path


def test_same_seed_gives_identical_files_whatever_else_is_generated(corpus, tmp_path):
    paths = generate_corpus(tmp_path / "small", **SMALL)
    for path in paths:
        big = corpus[0] / path.relative_to(tmp_path / "small")
        assert path.read_bytes() == big.read_bytes()
    other = generate_corpus(tmp_path / "other", **SMALL, seed=1)
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(paths, other))


def test_rerun_keeps_existing_files_and_regenerates_missing_ones(tmp_path):
    paths = generate_corpus(tmp_path, **SMALL)
    before = _snapshot(tmp_path)
    paths[3].unlink()
    assert generate_corpus(tmp_path, **SMALL) == paths
    after = _snapshot(tmp_path)
    missing = paths[3].relative_to(tmp_path)
    assert after[missing][0] == before[missing][0]
    assert {k: v for k, v in after.items() if k != missing} == {k: v for k, v in before.items() if k != missing}
    assert not list(tmp_path.rglob("*.tmp"))


def test_parser_recovers_labels_of_every_file(corpus, scan):
    assert not scan.unmatched and len(scan.utterances) == len(corpus[1])
    cells = Counter((u.language, u.speaker, u.gender, u.emotion) for u in scan.utterances)
    genders = {1: "female", 2: "male", 3: "female", 4: "male"}
    expected = {
        (language, f"synth-{language[-1]}{i:02d}{gender[0]}", gender, emotion): 8
        for language in LANGUAGES for i, gender in genders.items() for emotion in CLASS_SETUPS[4]
    }
    assert cells == expected
    for u in scan.utterances:
        assert u.corpus == "synth" and u.path.endswith(f"_{u.speaker[6:]}_{u.emotion}_{u.stem[-2:]}.wav")


def test_parser_reports_foreign_names(tmp_path):
    y = np.zeros(1600, np.float32)
    for name in ("notes.wav", "synth_synth-a_b01f_happy_01.wav", "synth_synth-a_a01f_joy_01.wav"):
        soundfile.write(tmp_path / name, y, 16000)
    scan = scan_corpus("synth", tmp_path)
    reasons = {Path(path).name: reason for path, reason in scan.unmatched}
    assert not scan.utterances and len(reasons) == 3
    assert "does not belong" in reasons["synth_synth-a_b01f_happy_01.wav"]
    assert "joy" in reasons["synth_synth-a_a01f_joy_01.wav"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(emotions=("joy",)), "emotions='joy'"),
    (dict(emotions=()), "emotions=()"),
    (dict(languages=("synth-c",)), "languages='synth-c'"),
    (dict(speakers_per_language=0), "speakers_per_language=0"),
    (dict(utterances_per_emotion=100), "utterances_per_emotion=100"),
    (dict(sr=4000), "sr=4000"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=1.5), "seed=1.5"),
])
def test_bad_arguments_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate_corpus(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_bad_utterance_arguments_raise_config_error():
    speaker = make_speaker(language="synth-b", index=2)
    with pytest.raises(ConfigError, match="emotion='joy'"):
        synthesize_utterance(emotion="joy", speaker=speaker, language="synth-b", rng=np.random.default_rng())
    with pytest.raises(ConfigError, match="index=0"):
        make_speaker(language="synth-b", index=0)


def test_emotions_shift_pitch_and_energy_in_the_documented_direction(scan):
    for speaker in ("synth-a01f", "synth-b02m"):
        f0, rms = {}, {}
        for emotion in CLASS_SETUPS[4]:
            values = []
            for u in scan.utterances:
                if u.speaker == speaker and u.emotion == emotion:
                    y, sr = soundfile.read(u.path)
                    frames = librosa.yin(y, fmin=60, fmax=500, sr=sr)
                    energy = librosa.feature.rms(y=y)[0][: frames.size]
                    values.append((np.median(frames[energy > 0.1 * energy.max()]), np.sqrt(np.mean(y**2))))
            f0[emotion], rms[emotion] = np.mean(values, axis=0)
        assert f0["angry"] > f0["neutral"] > f0["sad"] and f0["happy"] > f0["neutral"], (speaker, f0)
        assert rms["angry"] > rms["neutral"] > rms["sad"], (speaker, rms)


def test_emotion_is_learnable_across_speakers_and_languages(scan):
    features, duration = [], []
    for u in scan.utterances:
        y, sr = soundfile.read(u.path)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
        features.append(np.r_[mfcc.mean(axis=1), mfcc.std(axis=1)])
        duration.append([y.size / sr])
    emotion = np.array([u.emotion for u in scan.utterances])
    train = np.array([u.language == "synth-a" for u in scan.utterances])

    def accuracy(x):
        x = np.asarray(x)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))
        return model.fit(x[train], emotion[train]).score(x[~train], emotion[~train])

    assert accuracy(features) > 0.6  # chance is 0.25
    assert accuracy(duration) < 0.4  # length alone gives nothing away


def test_resume_refuses_a_different_seed_or_rate(tmp_path):
    generate_corpus(tmp_path, languages=("synth-a",), speakers_per_language=1, utterances_per_emotion=1, seed=1)
    for kwargs in ({"seed": 2}, {"sr": 22050, "seed": 1}):
        with pytest.raises(ConfigError, match="holds a synthetic corpus made with"):
            generate_corpus(tmp_path, languages=("synth-a",), speakers_per_language=1, utterances_per_emotion=1,
                            **kwargs)
