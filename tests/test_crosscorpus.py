"""The cross-corpus levers: domain normalisation, AdaBN, ensembles, decisions among present classes."""

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone, write_audio

from spectro.cli import main
from spectro.config import ExperimentConfig, FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.errors import ConfigError
from spectro.evaluate import evaluate_checkpoint
from spectro.image_tree import load_recording, recording_key
from spectro.images import build_image_dataset

SPEAKER_NORM = {"image": {"size": 32}, "normalise": {"mode": "speaker"}}


def _predictions(folder, corpus="synth") -> dict[str, list[float]]:
    with open(folder / f"predictions_{corpus}.csv", newline="") as handle:
        return {r["path"]: [float(v) for k, v in r.items() if k.startswith("p_")] for r in csv.DictReader(handle)}


# --------------------------------------------------------------------------- domain normalisation
def test_normalisation_statistics_never_read_labels(synth_corpus, tmp_path):
    utterances = scan_corpus("synth", synth_corpus / "synth-a").utterances
    relabelled = [dataclasses.replace(u, emotion=("neutral", "happy", "sad", "angry")[i % 4])
                  for i, u in enumerate(reversed(utterances))][::-1]
    assert [u.emotion for u in relabelled] != [u.emotion for u in utterances]
    for mode in ("utterance", "speaker", "corpus"):
        config = from_dict(FeatureConfig, {"image": {"size": 32}, "normalise": {"mode": mode}})
        trees = [build_image_dataset(us, tmp_path / f"{mode}{i}", config, workers=1 + i, progress=False).out_dir
                 for i, us in enumerate((utterances, relabelled))]  # one process, then two: the same pictures
        for original, other in zip(utterances, relabelled):
            np.testing.assert_array_equal(load_recording(trees[0] / recording_key(original)),
                                          load_recording(trees[1] / recording_key(other)), err_msg=mode)


def test_speaker_normalisation_removes_a_speakers_channel(tmp_path):
    """Two speakers saying the same things through different channels (one dull, one quiet and bright)
    look alike once each band is standardised over its speaker."""
    from spectro.audio import audio_windows
    from spectro.features import feature_matrix, recording_statistics
    from spectro.normalise import pooled

    rng = np.random.default_rng(0)
    sources = [sum(tone(f, seconds=1.5, amplitude=a) for f, a in ((200 + 30 * i, 0.3), (900 + 50 * i, 0.1)))
               + 0.01 * rng.normal(size=24000).astype(np.float32) for i in range(4)]
    lowpass = lambda y: np.convolve(y, np.ones(8) / 8, mode="same").astype(np.float32)  # noqa: E731
    speakers = {"dull": [lowpass(y) for y in sources],
                "bright": [np.diff(y, prepend=0).astype(np.float32) for y in sources]}
    config = from_dict(FeatureConfig, {"normalise": {"mode": "speaker"}})
    plain = from_dict(FeatureConfig, {})
    mean_spectra = {}
    for settings in (plain, config):
        for name, recordings in speakers.items():
            windows = [audio_windows(y, settings.audio) for y in recordings]
            stats = pooled(recording_statistics(w, settings) for w in windows)
            mean_spectra[settings.normalise.mode, name] = np.mean(
                [feature_matrix(w[0].samples, settings, stats).mean(axis=1) for w in windows], axis=0)
    gap = lambda mode: np.abs(mean_spectra[mode, "dull"] - mean_spectra[mode, "bright"]).mean()  # noqa: E731
    assert gap("speaker") < 0.25 * gap("none")


def test_a_corpus_without_speakers_is_normalised_by_corpus_or_by_clusters(tmp_path):
    for i in range(12):  # a folder corpus without speaker folders: each file its own "speaker"
        write_audio(tmp_path / "corpus" / ("happy", "sad")[i % 2] / f"take{i}.wav",
                    tone(150 + 25 * i, seconds=1.0, amplitude=0.1 + 0.05 * (i % 3)))
    utterances = scan_corpus("folder", tmp_path / "corpus").utterances
    # k-means groups of band means hold most of the band means' variance by construction, so the guard against
    # speaker x emotion cells (normalise.guard) takes them for such cells and falls back to the corpus
    for fallback, guard, expected in (("corpus", "fallback", 1), ("clusters", "none", 3), ("clusters", "fallback", 1)):
        config = from_dict(FeatureConfig, {"image": {"size": 32}, "normalise": {
            "mode": "speaker", "unknown_speakers": fallback, "clusters": 3, "guard": guard}})
        tree = build_image_dataset(utterances, tmp_path / f"{fallback}-{guard}", config, workers=1,
                                   progress=False).out_dir
        saved = json.loads((tree / "normalisation.json").read_text())
        assert len(saved["groups"]) == expected and len(saved["assignment"]) == 12


def test_a_tree_keeps_its_statistics_and_refuses_to_change_them(synth_corpus, tmp_path):
    config = from_dict(FeatureConfig, SPEAKER_NORM)
    utterances = scan_corpus("synth", synth_corpus / "synth-a").utterances
    first_speaker = [u for u in utterances if u.speaker == "synth-a01f"]
    tree = tmp_path / "tree"
    build_image_dataset(first_speaker[:3], tree, config, workers=1, progress=False)
    with pytest.raises(ConfigError, match="would change normalisation statistics"):
        build_image_dataset(first_speaker, tree, config, workers=1, progress=False)
    others = [u for u in utterances if u.speaker != "synth-a01f"]
    assert build_image_dataset(first_speaker[:3] + others, tree, config, workers=1,
                               progress=False).written == len(others)


def _train(tree, tmp_path, name, *, model="tiny_efficientnet", seed=0):
    from spectro.training import Trainer

    return Trainer(from_dict(ExperimentConfig, {
        "data": {"train": [str(tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": model, "pretrained": False}, "train": {"epochs": 1, "batch_size": 8, "seed": seed},
        "run": {"name": name, "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}}),
        progress=False).fit()


def test_a_normalised_model_is_evaluated_transductively_and_says_so(synth_corpus, tmp_path):
    config = from_dict(FeatureConfig, SPEAKER_NORM)
    build_image_dataset(scan_corpus("synth", synth_corpus / "synth-a").utterances, tmp_path / "tree", config,
                        workers=1, progress=False)
    _train(tmp_path / "tree", tmp_path, "norm")
    checkpoint = tmp_path / "ck" / "norm" / "best.pt"
    assert torch.load(checkpoint, weights_only=True)["inputs"]["image"]["normalise"]["mode"] == "speaker"
    report = evaluate_checkpoint(checkpoint, tmp_path / "eval", corpora=[("synth", str(synth_corpus / "synth-b"))],
                                 workers=1, progress=False, n_bootstrap=10)
    assert report["normalisation"] == ["speaker"]
    said = "speaker normalisation with statistics from each test corpus's own unlabelled audio"
    assert said in report["transductive"][0]
    assert "**transductive:** speaker normalisation" in (tmp_path / "eval" / "report.md").read_text()
    statistics = json.loads((tmp_path / "eval" / "images" / "synth" / "normalisation.json").read_text())
    assert sorted(statistics["groups"]) == ["speaker:synth-b01f", "speaker:synth-b02m"]  # the test speakers' own
    from spectro.pseudo_label import pseudo_label

    pseudo_label([checkpoint], tmp_path / "pseudo.csv", fraction=0.5, image_trees={}, corpus_options=None,
                 corpora=[("synth", str(synth_corpus / "synth-b"))], workers=1, progress=False)
    pseudo = json.loads((tmp_path / "pseudo.images" / "member1" / "synth" / "normalisation.json").read_text())
    assert pseudo["guard"] == statistics["guard"]  # the teacher judges the target's speakers as evaluate does


def test_a_model_of_fewer_classes_normalises_a_corpus_with_all_its_recordings(synth_corpus, tmp_path):
    """A 3-class model scores a 4-emotion corpus: the speakers' statistics still pool every recording, as a tree
    from `spectro images` does, so the labels of the recordings it leaves out never choose the statistics."""
    config = from_dict(FeatureConfig, SPEAKER_NORM)
    build_image_dataset(scan_corpus("synth", synth_corpus / "synth-a").utterances, tmp_path / "tree", config,
                        workers=1, progress=False)
    from spectro.training import Trainer

    Trainer(from_dict(ExperimentConfig, {
        "data": {"train": [str(tmp_path / "tree")], "classes": ["neutral", "happy", "sad"],
                 "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1, "batch_size": 8},
        "run": {"name": "three", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}}),
        progress=False).fit()
    checkpoint = tmp_path / "ck" / "three" / "best.pt"
    whole = build_image_dataset(scan_corpus("synth", synth_corpus / "synth-b").utterances, tmp_path / "whole",
                                config, workers=1, progress=False).out_dir
    rendered = evaluate_checkpoint(checkpoint, tmp_path / "eval", corpora=[("synth", str(synth_corpus / "synth-b"))],
                                   workers=1, progress=False, n_bootstrap=10)
    read = evaluate_checkpoint(checkpoint, tmp_path / "eval_tree", image_trees={"synth": str(whole)}, workers=1,
                               progress=False, n_bootstrap=10)
    assert rendered["corpora"]["synth"]["n"] == read["corpora"]["synth"]["n"] == 12  # angry is not scored...
    statistics = [json.loads((tree / "normalisation.json").read_text())
                  for tree in (tmp_path / "eval" / "images" / "synth", whole)]
    assert statistics[0]["groups"] == statistics[1]["groups"]  # ...but their audio joins their speakers' statistics
    by_tree = _predictions(tmp_path / "eval_tree")
    for path, probabilities in _predictions(tmp_path / "eval").items():
        np.testing.assert_allclose(probabilities, by_tree[path], atol=1e-6)


# --------------------------------------------------------------------------- ensembles
@pytest.fixture(scope="module")
def two_models(tmp_path_factory, synth_corpus):
    root = tmp_path_factory.mktemp("ensemble")
    build_image_dataset(scan_corpus("synth", synth_corpus / "synth-a").utterances, root / "tree",
                        from_dict(FeatureConfig, {"image": {"size": 32}}), workers=1, progress=False)
    _train(root / "tree", root, "one", seed=1)
    _train(root / "tree", root, "two", seed=2)
    return root, root / "ck" / "one" / "best.pt", root / "ck" / "two" / "best.pt"


def test_an_ensemble_of_one_model_or_of_copies_equals_the_model(two_models, synth_corpus, tmp_path):
    from spectro.ensemble_file import Member, write_ensemble

    root, one, _ = two_models
    test = [("synth", str(synth_corpus / "synth-b"))]
    alone = evaluate_checkpoint(one, tmp_path / "alone", corpora=test, workers=1, progress=False, n_bootstrap=10)
    copies = evaluate_checkpoint([one, one, one], tmp_path / "copies", corpora=test, workers=1, progress=False,
                                 n_bootstrap=10)
    ensemble = write_ensemble(tmp_path / "e.json", [Member(str(one), 0.3), Member(str(one), 0.7)],
                              classes=alone["classes"], chosen_by={})
    weighted = evaluate_checkpoint(ensemble, tmp_path / "weighted", corpora=test, workers=1, progress=False,
                                   n_bootstrap=10)
    for other in (copies, weighted):
        for key in ("accuracy", "uar", "macro_f1", "confusion"):
            assert other["corpora"]["synth"][key] == alone["corpora"]["synth"][key]
    for folder in ("copies", "weighted"):
        for path, p in _predictions(tmp_path / folder).items():
            assert p == pytest.approx(_predictions(tmp_path / "alone")[path], abs=2e-6)


def test_ensemble_probabilities_are_the_weighted_mean_and_predict_agrees(two_models, synth_corpus, tmp_path, capsys):
    from spectro.ensemble_file import Member, write_ensemble

    root, one, two = two_models
    test = [("synth", str(synth_corpus / "synth-b"))]
    for name, checkpoint in (("one", one), ("two", two)):
        evaluate_checkpoint(checkpoint, tmp_path / name, corpora=test, workers=1, progress=False, n_bootstrap=10)
    ensemble = write_ensemble(tmp_path / "e.json", [Member(str(one), 0.25), Member(str(two), 0.75)],
                              classes=["neutral", "happy", "sad", "angry"], chosen_by={})
    report = evaluate_checkpoint(ensemble, tmp_path / "both", corpora=test, workers=1, progress=False, n_bootstrap=10)
    assert [m["weight"] for m in report["members"]] == [0.25, 0.75]
    a, b, both = (_predictions(tmp_path / n) for n in ("one", "two", "both"))
    for path in both:
        assert both[path] == pytest.approx(0.25 * np.array(a[path]) + 0.75 * np.array(b[path]), abs=2e-6)
    wav = next(iter(both))
    capsys.readouterr()
    assert main(["predict", str(ensemble), wav, "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["probabilities"]
    assert list(predicted.values()) == pytest.approx(both[wav], abs=1e-5)


def test_ensemble_weights_are_chosen_on_validation_speakers(two_models, synth_corpus, tmp_path):
    from spectro.ensemble import build_ensemble, choose_weights

    labels = np.repeat(np.arange(4), 10)
    good = np.eye(4)[labels] * 0.7 + 0.075
    misled = np.eye(4)[(labels + 1) % 4] * 0.9 + 0.025  # confidently wrong
    weights, uar = choose_weights([misled, good], labels, step=0.25)
    assert weights == [0.25, 0.75] and uar == 1.0  # the most even weights that get every recording right
    root, one, two = two_models
    path, weights, uar = build_ensemble([one, two], tmp_path / "ens.json",
                                        validation=[("synth",
                                                     str(synth_corpus / "synth-a"))], workers=1, progress=False)
    saved = json.loads(path.read_text())
    assert saved["chosen_by"]["speakers"] == ["synth-a02m"] and saved["chosen_by"]["recordings"] == 8
    assert sum(m["weight"] for m in saved["members"]) == pytest.approx(1) and saved["chosen_by"]["uar"] == uar
    applied, same, _ = build_ensemble([one, two], tmp_path / "applied.json", apply_to=[two, one],
                                      validation=[("synth", str(synth_corpus / "synth-a"))], workers=1, progress=False)
    saved = json.loads(applied.read_text())  # stand-ins choose, the final members are written
    assert same == weights and [m["weight"] for m in saved["members"]] == weights
    assert [Path(m["checkpoint"]).parent.name for m in saved["members"]] == ["two", "one"]
    assert [Path(p).parent.name for p in saved["chosen_by"]["stand_ins"]] == ["one", "two"]
    adapted, _, _ = build_ensemble([one, two], tmp_path / "adapted.json", adabn=True,
                                   validation=[("synth", str(synth_corpus / "synth-a"))], workers=1, progress=False)
    assert json.loads(adapted.read_text())["chosen_by"]["adabn"] and "adabn" not in saved["chosen_by"]
    with pytest.raises(ConfigError, match="give one for each"):
        build_ensemble([one, two], tmp_path / "odd.json", apply_to=[one], validation=[], workers=1, progress=False)
    with pytest.raises(ConfigError, match="took part in the model's training data"):  # never training speakers
        build_ensemble([one, two], tmp_path / "bad.json", validation=[("synth", str(synth_corpus / "synth-a"))],
                       speakers=["synth-a01f"], workers=1, progress=False)


# --------------------------------------------------------------------------- AdaBN and decisions
def test_adabn_adapts_batchnorm_statistics_only_and_is_recorded(two_models, synth_corpus, tmp_path):
    from spectro.checkpoint_file import load_trained_model
    from spectro.data import ImageSet
    from spectro.scoring import adapt_batchnorm

    root, one, _ = two_models
    model, _ = load_trained_model(one)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [(p, u) for p, u in __import__("spectro.image_tree", fromlist=["x"]).read_image_manifest(root / "tree")]
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], ["neutral", "happy", "sad", "angry"], progress=False)
    assert adapt_batchnorm(model, images, device=torch.device("cpu")) > 0
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running_" in k or "num_batches" in k for k in changed)
    report = evaluate_checkpoint(one, tmp_path / "eval", corpora=[("synth", str(synth_corpus / "synth-b"))], workers=1,
                                 progress=False, n_bootstrap=10, adabn=True)
    assert any(t.startswith("AdaBN") for t in report["transductive"])


def test_adabn_in_an_ensemble_needs_one_member_with_batchnorm():
    from spectro.evaluate import MemberScores, Options, require_adapted

    svm = MemberScores({"model_name": "svm"}, [], {}, {}, adapted=False)
    cnn = MemberScores({"model_name": "efficientnet_lite0"}, [], {}, {}, adapted=True)
    require_adapted([cnn, svm], Options(adabn=True))  # the SVM scores as trained
    require_adapted([svm], Options())
    with pytest.raises(ConfigError, match="svm: no BatchNorm layer to adapt"):
        require_adapted([svm, svm], Options(adabn=True))


def test_present_classes_decide_among_the_classes_a_corpus_has(two_models, synth_corpus, tmp_path):
    root, one, _ = two_models
    three = [u for u in scan_corpus("synth", synth_corpus / "synth-b").utterances if u.emotion != "neutral"]
    corpus = tmp_path / "corpus"
    for u in three:  # a corpus that has no neutral speech
        write_audio(corpus / u.emotion / u.speaker / f"{u.stem}.wav", __import__("soundfile").read(u.path)[0])
    report = evaluate_checkpoint(one, tmp_path / "eval", corpora=[("folder", str(corpus))], workers=1,
                                 progress=False, n_bootstrap=10, present_classes=True)
    m = report["corpora"]["folder"]
    assert m["classes_excluded"] == ["neutral"] and m["confusion"][0] == [0, 0, 0, 0]
    assert all(row[0] == 0 for row in m["confusion"])  # nothing decided as neutral
    for p in _predictions(tmp_path / "eval", "folder").values():
        assert p[0] == 0 and sum(p) == pytest.approx(1, abs=1e-5)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Classes absent from folder and left out of the decision: neutral" in report


# --------------------------------------------------------------------------- the one-command recipe
def _recipe_corpora(root: Path) -> tuple[Path, Path, Path]:
    """A synth corpus, a TESS-layout corpus and a folder-per-label test corpus in another 'language'."""
    import shutil

    from spectro.synth import generate_corpus

    generate_corpus(root / "a", languages=("synth-a",), speakers_per_language=3, utterances_per_emotion=3, seed=1)
    generate_corpus(root / "b", languages=("synth-a",), speakers_per_language=2, utterances_per_emotion=4, seed=2)
    generate_corpus(root / "c", languages=("synth-b",), speakers_per_language=2, utterances_per_emotion=4, seed=3)
    for wav in (root / "b").rglob("*.wav"):  # synth_<language>_<speaker>_<emotion>_<NN>.wav
        speaker, emotion, number = wav.stem.split("_")[2:]
        who = "OAF" if speaker.endswith("01f") else "YAF"
        (root / "tess" / f"{who}_{emotion}").mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, root / "tess" / f"{who}_{emotion}" / f"{who}_w{number}_{emotion}.wav")
    for wav in (root / "c").rglob("*.wav"):
        label_folder = root / "test" / wav.stem.split("_")[3]
        label_folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, label_folder / wav.name)
    return root / "a", root / "tess", root / "test"


def test_the_recipe_script_runs_from_corpus_folders_to_a_report_and_a_rerun_redoes_nothing(tmp_path):
    import os
    import subprocess
    import sys

    synth, tess, test = _recipe_corpora(tmp_path)
    script = Path(__file__).parents[1] / "scripts" / "crosscorpus.sh"
    command = [str(script), "4", "--train", f"synth={synth}", f"tess={tess}", "--test", f"folder={test}",
               "--corpus-option", "folder.name=german", "--set", "train.epochs=1", "--set", "train.batch_size=8",
               "--cnn-set", "model.name=tiny_efficientnet", "--cnn-set", "model.pretrained=false",
               "--work", "out"]
    env = {**os.environ, "SPECTRO": str(Path(sys.executable).parent / "spectro")}
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    report = tmp_path / "out" / "report" / "report.md"
    assert first.stdout.strip().splitlines()[-1] == "report: out/report/report.md"
    scores = json.loads((report.parent / "report.json").read_text())
    assert scores["corpora"]["german"]["uar"] > 0.5  # four classes: a constant answer scores 0.25
    text = report.read_text()
    assert "transductive" in text and "speaker" in text  # the test corpus's own statistics, said in the report
    guards = {name: json.loads((tmp_path / "out" / "images" / "mel" / name / "normalisation.json").read_text())[
        "guard"] for name in ("synth", "tess", "folder")}
    reference = max(g["value"] for name in ("synth", "tess") for g in guards[name].values())
    # the test corpus's speakers are judged against the training corpora's, as evaluate judges them
    assert guards["folder"]["german"]["threshold"] == round(1.72 * round(reference, 4), 4)
    ensemble = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert [Path(m["checkpoint"]).parent.name for m in ensemble["members"]] == ["cnn", "svm"]  # not the stand-ins
    assert ensemble["chosen_by"]["corpora"] == ["tess"]  # weights chosen on the held-out training corpus
    models = {run: json.loads((tmp_path / "out" / "checkpoints" / run / "summary.json").read_text())["model"]
              for run in ("cnn", "cnn_stand_in", "svm", "svm_stand_in")}
    assert models["cnn"] == models["cnn_stand_in"] == "tiny_efficientnet"  # --cnn-set reaches both CNNs
    assert "tiny_efficientnet" not in (models["svm"], models["svm_stand_in"])  # and only them

    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.pt")}
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.pt")} == written
    assert json.loads((report.parent / "report.json").read_text())["corpora"]["german"]["uar"] == \
        scores["corpora"]["german"]["uar"]
