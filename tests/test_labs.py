"""A shared lab machine: readable outputs, one CLI, user-defined labels."""

import csv
import json
import os
import re
import stat

import numpy as np
import pytest
import yaml
from conftest import tone, write_audio

from spectro.cli import main
from spectro.synth import generate_corpus


def _modes(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def _pipeline(root, synth_corpus) -> None:
    """Every kind of output: an image tree, a run, an evaluation, a report, a slim export."""
    assert main(["images", "--corpus", f"synth={synth_corpus / 'synth-a'}", "--out", str(root / "tree"),
                 "--set", "image.size=32", "--workers", "1", "--quiet"]) == 0
    (root / "c.yaml").write_text(yaml.safe_dump({
        "data": {"train": [str(root / "tree")], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1, "batch_size": 8},
        "run": {"name": "r", "checkpoint_dir": str(root / "ck"), "log_dir": str(root / "runs")}}))
    assert main(["train", str(root / "c.yaml"), "--quiet", "--device", "cpu"]) == 0
    assert main(["evaluate", str(root / "ck" / "r" / "best.pt"), "--corpus", f"synth={synth_corpus / 'synth-b'}",
                 "--out", str(root / "eval"), "--workers", "1", "--quiet"]) == 0
    assert main(["report", str(root / "ck" / "r"), str(root / "eval"), "--out", str(root / "cmp")]) == 0
    assert main(["export", str(root / "ck" / "r" / "best.pt"), "--format", "slim", "--out", str(root / "slim.pt")]) == 0


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_output_follows_the_umask(synth_corpus, tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        _pipeline(tmp_path, synth_corpus)
    finally:
        os.umask(previous)
    modes = _modes(tmp_path)
    for name in ("tree/manifest.csv", "tree/features.json", "tree/rejected.csv", "ck/r/best.pt", "ck/r/last.pt",
                 "ck/r/config.yaml", "ck/r/summary.json", "eval/report.json", "eval/report.md",
                 "eval/predictions_synth.csv", "eval/confusion_synth.png", "cmp/comparison.md", "cmp/comparison.csv",
                 "slim.pt"):
        assert modes.pop(name) == mode, name
    modes.pop("c.yaml")  # written by the test itself
    assert modes and set(modes.values()) == {mode}, modes  # the images, TensorBoard logs, locks too


def test_version_and_train_device(capsys, synth_corpus, tmp_path):
    from spectro import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"spectro {__version__}"
    _pipeline(tmp_path, synth_corpus)
    assert yaml.safe_load((tmp_path / "ck" / "r" / "config.yaml").read_text())["train"]["device"] == "cpu"


@pytest.mark.parametrize("argv", [["-v", "synth", "--out", "{tmp}/s1", "--speakers", "1", "--utterances", "1"],
                                  ["synth", "-v", "--out", "{tmp}/s2", "--speakers", "1", "--utterances", "1"]])
def test_verbose_works_before_and_after_the_command(argv, tmp_path):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 0


def test_config_show_round_trips(tmp_path, capsys):
    from spectro.config import load_experiment, to_dict

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"extends": "base.yaml", "data": {"train": ["images/a"], "classes": [
        "neutral", "happy", "sad", "angry", "boredom"]}, "labels": {"map": {"joy": "happy"}}}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3},
                                                        "model": {"name": "tiny_efficientnet"}}))
    assert main(["config", "show", str(config), "--set", "optim.lr=0.01"]) == 0
    shown = capsys.readouterr().out
    assert "epochs: 3" in shown and "lr: 0.01" in shown and "label_smoothing: 0.1" in shown  # defaults included
    (tmp_path / "again.yaml").write_text(shown)
    assert to_dict(load_experiment(tmp_path / "again.yaml")) == to_dict(load_experiment(config, ["optim.lr=0.01"]))


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"train": ["images/nowhere"]}}))
    assert main(["train", "c.yaml"]) == 2
    assert f"'images/nowhere' (looked for in {tmp_path})" in capsys.readouterr().err


def _emodb_style(root):
    """Two speakers, one file per EMO-DB emotion letter (W anger, L boredom, E disgust, A fear, F happiness,
    T sadness, N neutral)."""
    for speaker in ("03", "08"):
        for i, letter in enumerate("WLEAFTN"):
            write_audio(root / f"{speaker}a0{i}{letter}a.wav", tone(150 + 40 * i, seconds=1.0))


def test_emodb_at_seven_classes_keeps_boredom(tmp_path, capsys):
    _emodb_style(tmp_path / "emodb")
    seven = "neutral,happy,sad,angry,fear,disgust,boredom"
    assert main(["manifest", "--corpus", f"emodb={tmp_path / 'emodb'}", "--classes", seven,
                 "--out", str(tmp_path / "m.csv")]) == 0
    with open(tmp_path / "m.csv", newline="") as handle:
        emotions = sorted(r["emotion"] for r in csv.DictReader(handle))
    assert emotions.count("boredom") == 2 and len(set(emotions)) == 7
    assert main(["manifest", "--corpus", f"emodb={tmp_path / 'emodb'}", "--classes", "6",
                 "--out", str(tmp_path / "m6.csv")]) == 0
    assert "dropped 2 utterance(s) outside the classes: emodb/boredom 2" in capsys.readouterr().err


def test_a_valence_mapping_gives_three_classes_and_counts_what_it_drops(tmp_path, capsys):
    generate_corpus(tmp_path / "c", emotions=("neutral", "happy", "sad", "angry", "fear"), languages=("synth-a",),
                    speakers_per_language=1, utterances_per_emotion=2)
    assert main(["manifest", "--corpus", f"synth={tmp_path / 'c'}", "--map",
                 "happy=positive,angry=negative,sad=negative",
                 "--classes", "negative,neutral,positive", "--out", str(tmp_path / "m.csv")]) == 0
    assert "dropped 2 utterance(s) outside the classes: synth/fear 2" in capsys.readouterr().err
    with open(tmp_path / "m.csv", newline="") as handle:
        emotions = [r["emotion"] for r in csv.DictReader(handle)]
    assert sorted(set(emotions)) == ["negative", "neutral", "positive"] and emotions.count("negative") == 4


def test_a_mapping_in_the_config_trains_and_evaluates_on_canonical_trees(synth_corpus, tmp_path):
    assert main(["images", "--corpus", f"synth={synth_corpus / 'synth-a'}", "--out", str(tmp_path / "tree"),
                 "--set", "image.size=32", "--workers", "1", "--quiet"]) == 0
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({
        "data": {"train": [str(tmp_path / "tree")], "classes": ["negative", "neutral", "positive"],
                 "val_speakers": ["synth-a02m"]},
        "labels": {"map": {"happy": "positive", "angry": "negative", "sad": "negative"}},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1, "batch_size": 8},
        "run": {"name": "v", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}}))
    assert main(["train", str(tmp_path / "v.yaml"), "--quiet"]) == 0
    assert main(["evaluate", str(tmp_path / "ck" / "v" / "best.pt"), "--corpus", f"synth={synth_corpus / 'synth-b'}",
                 "--out", str(tmp_path / "eval"), "--workers", "1", "--quiet"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["classes"] == ["negative", "neutral", "positive"]
    support = {c: s["support"] for c, s in report["corpora"]["synth"]["per_class"].items()}
    assert support == {"negative": 8, "neutral": 4, "positive": 4}


def test_a_custom_label_from_a_csv_trains_when_a_class_list_names_it(synth_corpus, tmp_path, capsys):
    from spectro.corpora import scan_corpus

    utterances = scan_corpus("synth", synth_corpus / "synth-a").utterances
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "language", "gender"])
        for u in utterances:  # angry speech relabelled by an annotator as "frustrated"
            writer.writerow([u.path, "lab", u.speaker, "frustrated" if u.emotion == "angry" else u.emotion, "xx", ""])
    images = ["images", "--manifest", str(manifest), "--set", "image.size=32", "--workers", "1", "--quiet"]
    assert main(images + ["--out", str(tmp_path / "plain")]) == 0
    assert "lab/frustrated 4" in capsys.readouterr().err  # not named by any class list: dropped and counted
    assert main(images + ["--classes", "neutral,happy,sad,frustrated", "--out", str(tmp_path / "tree")]) == 0
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "data": {"train": [str(tmp_path / "tree")], "classes": ["neutral", "happy", "sad", "frustrated"],
                 "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1, "batch_size": 8},
        "run": {"name": "t", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}}))
    assert main(["train", str(tmp_path / "t.yaml"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "ck" / "t" / "summary.json").read_text())
    assert summary["classes"] == ["neutral", "happy", "sad", "frustrated"]
    assert sum(summary["validation"]["confusion"][3]) == 2  # the held-out speaker's frustrated utterances


def test_predict_plots_one_chart_per_input_and_warns_about_a_synthetic_model(trained, tmp_path, capsys):
    root, checkpoint = trained
    for folder in ("a", "b"):
        write_audio(tmp_path / "in" / folder / "take.wav", tone(200 if folder == "a" else 300, seconds=1.0))
    plots = tmp_path / "new" / "plots"
    assert main(["predict", str(checkpoint), str(tmp_path / "in"), "--plot", str(plots), "--segments"]) == 0
    out, err = capsys.readouterr()
    assert sorted(str(p.relative_to(plots)) for p in plots.rglob("*.png")) == ["a/take.png", "b/take.png"]
    assert "synthetic demo corpus only" in err
    segment = next(line for line in out.splitlines() if line.startswith("  "))
    start, end = (float(x) for x in re.match(r"\s*([\d.]+)-\s*([\d.]+) s", segment).groups())
    assert 0 <= start < end <= 1.0  # a 1 s file: the window's end is clipped to the file
    (tmp_path / "a_file").write_text("")
    assert main(["predict", str(checkpoint), str(tmp_path / "in"), "--plot", str(tmp_path / "a_file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_tensorboard_hparams_show_counts_as_integers_and_name_the_corpora(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    root, _ = trained
    events = EventAccumulator(str(root / "runs" / "tiny")).Reload()
    content = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["batch_size"].string_value == "8" and hparams["epochs"].string_value == "2"
    assert hparams["lr"].number_value == pytest.approx(1e-3) and hparams["training corpora"].string_value == "synth"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.summary_metadata["_hparams_/experiment"].plugin_data.content).experiment
    assert "hparam/val_macro_f1" in {m.name.tag for m in experiment.metric_infos}
    assert np.isfinite(events.Scalars("hparam/val_macro_f1")[0].value)
