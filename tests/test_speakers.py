"""Corpora without speaker labels and speakers who show one emotion (issue 27): encoder pseudo-speakers, the
normalisation guard, and how both are recorded. Generated voices only; they differ in pitch and formants by
construction."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from spectro.config import ExperimentConfig, FeatureConfig, from_dict
from spectro.corpora import Utterance, scan_corpus
from spectro.errors import ConfigError
from spectro.images import build_image_dataset
from spectro.normalise import BandStatistics, GroupStatistics, intraclass_correlation
from spectro.synth import generate_corpus

CLASSES = ("neutral", "happy", "sad", "angry")
STATS = {"feature": "stats", "audio": {"duration": None}, "normalise": {"mode": "speaker"}}


def _confounded(utterances):
    """Each speaker (the i-th, sorted) keeps the recordings of the i-th of the 4 classes (round robin)."""
    speakers = sorted({u.speaker for u in utterances})
    return [u for u in utterances if CLASSES[speakers.index(u.speaker) % 4] == u.emotion]


def _link(utterances, root, folder=lambda u: os.path.basename(os.path.dirname(u.path))):
    """A corpus folder of symlinks to `utterances`, each in its `folder` (by default its speaker's, as the
    generated corpus lays them out below a language folder)."""
    for u in utterances:
        link = root / folder(u) / os.path.basename(u.path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(u.path)
    return root


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Language synth-a (6 voices) to train on and synth-b (4 voices) to test on, 4 classes x 3 takes; a
    stats tree of synth-a with speaker normalisation and a model trained on it."""
    from spectro.training import Trainer

    root = tmp_path_factory.mktemp("voices")
    for language, speakers in (("synth-a", 6), ("synth-b", 4)):
        generate_corpus(root / language, languages=(language,), speakers_per_language=speakers,
                        utterances_per_emotion=3, seed=4)
    train = sorted(scan_corpus("synth", root / "synth-a").utterances, key=lambda u: u.path)
    tree = build_image_dataset(train, root / "tree", from_dict(FeatureConfig, STATS), workers=2, progress=False).out_dir
    config = from_dict(ExperimentConfig, {
        "data": {"train": [str(tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "logistic_regression", "pretrained": False},
        "run": {"name": "lr", "checkpoint_dir": str(root / "ck"), "log_dir": str(root / "runs")}})
    Trainer(config, progress=False).fit()
    test = sorted(scan_corpus("synth", root / "synth-b").utterances, key=lambda u: u.path)
    return root, tree, root / "ck" / "lr" / "best.pt", test


def test_intraclass_correlation_is_the_share_of_variance_between_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 20)
    noise = rng.standard_normal((160, 30))
    assert abs(intraclass_correlation(noise, groups)) < 0.05  # no group effect
    offsets = rng.standard_normal((8, 30))  # between-group variance 1, within 1: half the variance
    assert intraclass_correlation(noise + offsets[groups], groups) == pytest.approx(0.5, abs=0.12)
    assert intraclass_correlation(noise, np.zeros(160)) is None  # one group: undefined


def _guard_on(profiles, speakers, **settings):
    utterances = [Utterance(f"r{i}", "c", s, "unknown", "und") for i, s in enumerate(speakers)]
    statistics = {u.path: BandStatistics.of(p[:, None]) for u, p in zip(utterances, profiles)}
    features = from_dict(FeatureConfig, {**STATS, "normalise": {"mode": "speaker", **settings}})
    return GroupStatistics("speaker", {}, {}).extended(utterances, statistics, features)


def test_the_guard_falls_back_to_corpus_statistics_where_groups_are_speaker_emotion_cells():
    rng = np.random.default_rng(1)
    speaker, emotion = rng.standard_normal((6, 40)) * 0.4, rng.standard_normal((4, 40))
    cells = [(s, e) for s in range(6) for e in range(4) for _ in range(5)]
    profiles = np.stack([speaker[s] + emotion[e] + 0.5 * rng.standard_normal(40) for s, e in cells])
    balanced = _guard_on(profiles, [f"s{s}" for s, _ in cells])
    assert not balanced.guard["c"]["fired"] and len(balanced.groups) == 6
    confounded = [i for i, (s, e) in enumerate(cells) if e == s % 4]
    fired = _guard_on(profiles[confounded], [f"s{cells[i][0]}" for i in confounded])
    assert fired.guard["c"]["fired"] and fired.guard["c"]["value"] > fired.guard["c"]["threshold"]
    assert set(fired.assignment.values()) == {"corpus:c"} and list(fired.groups) == ["corpus:c"]
    off = _guard_on(profiles[confounded], [f"s{cells[i][0]}" for i in confounded], guard="none")
    assert off.guard == {} and len(off.groups) == 6


def test_the_encoder_pseudo_speakers_separate_generated_voices(voices, tmp_path):
    root, _, _, _ = voices
    train = scan_corpus("synth", root / "synth-a").utterances
    hidden = _link(train, tmp_path / "hidden", folder=lambda u: u.emotion)  # a folder corpus: no speaker folders
    utterances = scan_corpus("folder", hidden).utterances
    # Generated voices sit closer together for the encoder than real ones (cosine distance to the same voice
    # 0.15-0.26, to another 0.28-0.33; on RAVDESS 0.23-0.32 and 0.45-0.49), so this test cuts at 0.3 instead of
    # the 0.375 calibrated on real speech (where all six merge into two groups); their emotions move the
    # embedding about as much as their voices do.
    config = from_dict(FeatureConfig, {**STATS, "normalise": {
        "mode": "speaker", "unknown_speakers": "encoder", "encoder_threshold": 0.3, "guard": "none"}})
    # one process: the encoder is loaded once for the session, not once per worker
    tree = build_image_dataset(utterances, tmp_path / "tree", config, workers=1, progress=False).out_dir
    assignment = json.loads((tree / "normalisation.json").read_text())["assignment"]
    true = [os.path.basename(os.path.dirname(os.path.realpath(p))) for p in assignment]
    found = list(assignment.values())
    ari = adjusted_rand_score(true, found)
    chance = max(adjusted_rand_score(true, np.random.default_rng(seed).permutation(found)) for seed in range(20))
    assert ari > 0.18 > 0.1 > chance  # measured 0.25 (4 groups for 6 voices); shuffled groupings stay below 0.1


def test_a_confounded_test_corpus_is_guarded_and_the_choice_is_recorded(voices, tmp_path):
    from spectro.checkpoint_file import load_checkpoint
    from spectro.evaluate import evaluate_checkpoint

    root, tree, checkpoint, test = voices
    state = load_checkpoint(checkpoint)
    record = state["normalisation"]["image"][str(tree)]
    assert record["guard"]["synth"]["fired"] is False and record["guard"]["synth"]["value"] < 0.1
    reports = {}
    for name, chosen in (("balanced", test), ("confounded", _confounded(test))):
        corpus = _link(chosen, tmp_path / name)
        reports[name] = evaluate_checkpoint(checkpoint, tmp_path / f"report_{name}", corpora=[("synth", str(corpus))],
                                            workers=2, progress=False)
    guard = {n: r["corpora"]["synth"]["normalisation"]["image"]["guard"]["synth"] for n, r in reports.items()}
    assert not guard["balanced"]["fired"] and guard["confounded"]["fired"]
    threshold = 1.72 * record["guard"]["synth"]["value"]  # relative to the training corpus's own value
    assert guard["confounded"]["threshold"] == pytest.approx(threshold, abs=1e-3)
    assert any("fired on synth" in t for t in reports["confounded"]["transductive"])
    assert any("did not fire" in t for t in reports["balanced"]["transductive"])
    assert "**fired**: corpus statistics used" in (tmp_path / "report_confounded" / "report.md").read_text()


def test_evaluate_groups_a_corpus_without_speakers_by_encoder_when_asked_and_says_so(voices, tmp_path):
    from spectro.evaluate import evaluate_checkpoint

    root, _, checkpoint, test = voices
    hidden = _link(test, tmp_path / "hidden", folder=lambda u: u.emotion)
    report = evaluate_checkpoint(checkpoint, tmp_path / "report", corpora=[("folder", str(hidden))],
                                 normalise=["normalise.unknown_speakers=encoder"], workers=1, progress=False)
    grouping = report["corpora"]["folder"]["normalisation"]["image"]
    assert grouping["unknown_speakers"] == "encoder" and grouping["found_without_labels"] >= 1
    assert report["normalisation_overrides"] == ["normalise.unknown_speakers=encoder"]
    assert any("found in their unlabelled audio (encoder)" in t for t in report["transductive"])
    with pytest.raises(ConfigError, match="normalise"):
        evaluate_checkpoint(checkpoint, tmp_path / "bad", corpora=[("folder", str(hidden))],
                            normalise=["audio.duration=3"], progress=False)


def test_predict_normalises_a_batch_as_one_speaker_or_as_pseudo_speakers_and_records_it(voices, tmp_path, capsys):
    from spectro.cli import main
    from spectro.inference import Predictor

    _, _, checkpoint, test = voices
    paths = [u.path for u in test if u.speaker == "synth-b01f"]
    predictor = Predictor.load(checkpoint)
    one = list(predictor.predict_files(paths, speakers="one"))
    assert {p.normalisation["inputs"]["image"]["group"] for p in one} == {"speaker:inputs"}
    files = list(predictor.predict_files(paths))
    assert files[0].normalisation == {"speakers": "files", "statistics": "the recording's own"}
    referenced = Predictor.load(checkpoint, reference=paths)  # the same pooled statistics, given as a reference
    for a, b in zip(one, referenced.predict_files(paths)):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    with pytest.raises(ConfigError, match="reference"):
        list(referenced.predict_files(paths, speakers="pseudo"))
    assert main(["predict", str(checkpoint), *[u.path for u in test], "--speakers", "pseudo", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    grouping = records[0]["normalisation"]
    assert grouping["speakers"] == "pseudo" and grouping["inputs"]["image"]["recordings"] == len(test)
    reference = predictor.inputs["image"].normalise.guard_reference  # the training corpus's value, from the checkpoint
    assert grouping["inputs"]["image"]["guard"]["threshold"] == pytest.approx(1.15 * reference, abs=1e-3)


def test_the_new_settings_read_from_the_command_line_and_are_checked():
    from spectro.config import apply_overrides

    settings = from_dict(FeatureConfig, apply_overrides({}, ["normalise.guard=none", "normalise.guard_threshold=0.3",
                                                             "normalise.unknown_speakers=encoder"])).normalise
    assert (settings.guard, settings.guard_threshold, settings.unknown_speakers) == ("none", 0.3, "encoder")
    with pytest.raises(ConfigError, match="encoder_threshold"):
        from_dict(FeatureConfig, {"normalise": {"encoder_threshold": 2.5}})


def test_the_threshold_is_relative_to_the_training_corpora_and_stricter_for_groups_found_in_the_audio():
    from spectro.normalise import GUARD_THRESHOLDS, guard_threshold, relative_guard

    features = from_dict(FeatureConfig, STATS)
    assert guard_threshold(features.normalise, "stats")[0] == GUARD_THRESHOLDS["stats"]  # no model: calibrated value
    training = [{"guard": {"a": {"value": 0.2, "fired": False}, "b": {"value": 0.5, "fired": True}}}]
    relative = relative_guard(features, training).normalise  # a corpus where the guard fired is no reference
    assert relative.guard_reference == 0.2
    labelled, found = guard_threshold(relative, "stats")[0], guard_threshold(relative, "stats", found=True)[0]
    assert found < labelled and labelled == pytest.approx(0.344) and found == pytest.approx(0.23)
    explicit = dataclasses.replace(relative, guard_threshold=0.4)
    assert guard_threshold(explicit, "stats", found=True)[0] == 0.4
