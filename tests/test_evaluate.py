import csv
import json

import numpy as np
import pytest
import soundfile
from conftest import write_audio
from sklearn.metrics import cohen_kappa_score, matthews_corrcoef

from spectro.cli import main
from spectro.config import FeatureConfig, ImageConfig
from spectro.corpora import scan_corpus
from spectro.errors import ConfigError
from spectro.evaluate import evaluate_checkpoint
from spectro.images import build_image_dataset


def test_report_numbers_equal_an_independent_computation_from_the_predictions(trained, tmp_path):
    root, checkpoint = trained
    report = evaluate_checkpoint(checkpoint, tmp_path, corpora=[("synth", str(root / "b"))], workers=1,
                                 n_bootstrap=200, progress=False)
    assert {"report.json", "report.md", "confusion_synth.png",
            "predictions_synth.csv"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "report.json").read_text()) == report
    with open(tmp_path / "predictions_synth.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = report["classes"]
    truth = np.array([classes.index(r["emotion"]) for r in rows])
    guess = np.array([classes.index(r["predicted"]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    assert (probs.argmax(1) == guess).all()
    m = report["corpora"]["synth"]
    assert m["n"] == len(rows) == 24
    assert m["accuracy"] == pytest.approx((truth == guess).mean())
    recalls = [(guess[truth == c] == c).mean() for c in range(4) if (truth == c).any()]
    assert m["uar"] == pytest.approx(np.mean(recalls))
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (truth, guess), 1)
    assert m["confusion"] == confusion.tolist()
    f1 = []
    for c in range(4):
        tp, fp, fn = confusion[c, c], confusion[:, c].sum() - confusion[c, c], confusion[c].sum() - confusion[c, c]
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(truth, guess))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(truth, guess))
    assert m["ci95"]["accuracy"][0] <= m["accuracy"] <= m["ci95"]["accuracy"][1]
    assert "| synth | 24 |" in (tmp_path / "report.md").read_text()


def test_evaluating_on_training_speakers_is_refused(trained, tmp_path):
    root, checkpoint = trained
    with pytest.raises(ConfigError, match=r"speaker\(s\) \[.synth-a01f.\] of test synth took part in the model.s "
                                          r"training data"):
        evaluate_checkpoint(checkpoint, tmp_path, corpora=[("synth", str(root / "a"))], workers=1, progress=False)


def test_a_moved_evaluation_without_the_training_trees_still_refuses_training_speakers(tmp_path, monkeypatch):
    """Shipped configs name trees by relative paths: evaluating elsewhere, or after the trees are gone, must
    still refuse the training speakers and recordings (the checkpoint carries them)."""
    import shutil

    from spectro.config import ExperimentConfig, from_dict
    from spectro.synth import generate_corpus
    from spectro.training import Trainer

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    generate_corpus("corpus", languages=("synth-a",), speakers_per_language=3, utterances_per_emotion=2, seed=2)
    build_image_dataset(scan_corpus("synth", "corpus").utterances, "images/a",
                        FeatureConfig(image=ImageConfig(size=32)),
                        workers=1, progress=False)
    Trainer(from_dict(ExperimentConfig, {
        "data": {"train": ["images/a"], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1, "batch_size": 8},
        "run": {"name": "tiny", "checkpoint_dir": "checkpoints", "log_dir": "runs"}}), progress=False).fit()
    shutil.rmtree("images")
    checkpoint = project / "checkpoints" / "tiny" / "best.pt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    corpus = project / "corpus" / "synth-a"
    with pytest.raises(ConfigError, match=r"\['synth-a01f'\] of test synth took part in the model's training"):
        evaluate_checkpoint(checkpoint, "out1", corpora=[("synth", str(corpus / "a01f"))], workers=1, progress=False)
    with pytest.raises(ConfigError, match="synth-a02m.*took part in the model's validation data"):
        evaluate_checkpoint(checkpoint, "out2", corpora=[("synth", str(corpus / "a02m"))], workers=1, progress=False)
    # the same audio under another name, speaker and corpus is caught by its digest
    renamed = elsewhere / "other" / "happy" / "newcomer"
    renamed.mkdir(parents=True)
    shutil.copy(next((corpus / "a01f").glob("*happy*.wav")), renamed / "take1.wav")
    with pytest.raises(ConfigError, match="take1.wav.* hold the same audio as training recordings"):
        evaluate_checkpoint(checkpoint, "out3", corpora=[("folder", str(elsewhere / "other"))], workers=1,
                            progress=False)


def test_a_checkpoint_without_a_training_record_is_evaluated_with_a_loud_warning(trained, tmp_path, caplog):
    root, checkpoint = trained
    import torch

    state = torch.load(checkpoint, weights_only=True)
    del state["training_record"]
    state["config"]["data"]["train"] = [str(tmp_path / "gone")]
    torch.save(state, tmp_path / "old.pt")
    report = evaluate_checkpoint(tmp_path / "old.pt", tmp_path / "eval", corpora=[("synth", str(root / "b"))],
                                 workers=1, n_bootstrap=10, progress=False)
    assert "LEAKAGE NOT CHECKED" in report["warnings"][0] and "nothing was checked" in report["warnings"][0]
    assert "LEAKAGE NOT CHECKED" in caplog.text
    assert "> **Warning:** LEAKAGE NOT CHECKED" in (tmp_path / "eval" / "report.md").read_text()


def test_an_image_tree_with_other_settings_is_refused(trained, tmp_path):
    root, checkpoint = trained
    other = FeatureConfig(image=ImageConfig(size=32, channels="grey"))
    build_image_dataset(scan_corpus("synth", root / "b").utterances[:4], tmp_path / "grey", other, workers=1,
                        progress=False)
    with pytest.raises(ConfigError, match="other feature settings"):
        evaluate_checkpoint(checkpoint, tmp_path / "out", image_trees={"b": str(tmp_path / "grey")}, progress=False)


def test_report_keeps_runs_and_evaluations_apart_with_n_intervals_and_published_numbers(trained, tmp_path, capsys):
    root, checkpoint = trained
    evaluate_checkpoint(checkpoint, tmp_path / "eval", corpora=[("synth", str(root / "b"))], workers=1,
                        n_bootstrap=50, progress=False)
    resnet_run = tmp_path / "resnet50_run"
    resnet_run.mkdir()
    (resnet_run / "summary.json").write_text(json.dumps({
        "run": "resnet50_mel_4class", "model": "resnet50", "classes": ["neutral", "happy", "sad", "angry"],
        "feature": "mel", "train_corpora": ["ravdess", "tess"], "best_epoch": 3, "epochs_run": 5,
        "validation": {"accuracy": 0.8, "uar": 0.79, "n": 160},
        "test": {"emodb": {"accuracy": 0.6, "uar": 0.55, "macro_f1": 0.5, "n": 339,
                           "ci95": {"accuracy": [0.55, 0.65], "uar": [0.5, 0.6]}}}}))
    assert main(["report", str(tmp_path / "eval"), str(resnet_run), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert printed.index("Training runs") < printed.index("Evaluations")
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    runs, evaluations = text.split("## Evaluations")
    assert "## Training runs" in runs and "resnet50_mel_4class" in runs and "| tiny" not in runs
    assert "| tiny" in evaluations and "resnet50" not in evaluations
    resnet_line = next(line for line in runs.splitlines() if line.startswith("| resnet50_mel_4class"))
    assert "| 3 of 5 | 160 | 80.00 | 79.00 |" in resnet_line
    assert "| 339 | 60.00 (55.00-65.00) | 55.00 (50.00-60.00) | 50.00 |" in resnet_line
    assert resnet_line.endswith("| 75.76 | +4.24 | 64.60 | -4.60 |")
    # the tiny model matches no published row: its table has no published columns at all
    assert "published" not in evaluations.split("n: utterances scored")[0]
    tiny_line = next(line for line in evaluations.splitlines() if line.startswith("| tiny"))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    n, ci = report["corpora"]["synth"]["n"], report["corpora"]["synth"]["ci95"]["uar"]
    assert f"| {n} |" in tiny_line and f"({100 * ci[0]:.2f}-{100 * ci[1]:.2f})" in tiny_line
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["table"] for r in rows] == ["Training runs", "Evaluations"]
    assert rows[0]["emodb n"] == "339" and rows[1]["synth n"] == str(n) and rows[1]["emodb n"] == ""
    with pytest.raises(Exception, match="neither a training summary.json nor an evaluation report.json"):
        from spectro.report import collect_results

        collect_results([tmp_path])


def test_predict_scores_good_files_and_names_broken_ones(trained, tmp_path, capsys):
    root, checkpoint = trained
    folder = tmp_path / "incoming"
    sources = sorted((root / "b").rglob("*.wav"))
    long = np.concatenate([soundfile.read(p)[0] for p in sources[:4]])  # ~8 s, several windows
    write_audio(folder / "long.wav", long)
    import librosa

    mono = librosa.resample(soundfile.read(sources[5])[0], orig_sr=16000, target_sr=44100)
    soundfile.write(folder / "stereo44k.wav", np.stack([mono, 0.5 * mono], axis=1), 44100)
    (folder / "broken.wav").write_bytes(b"RIFF garbage")
    soundfile.write(folder / "empty.wav", np.zeros((0,), np.float32), 16000)

    code = main(["predict", str(checkpoint), str(folder), "--json", "--segments", "--plot", str(tmp_path / "plots")])
    assert code == 1  # some files failed
    lines = capsys.readouterr().out.splitlines()
    records = {json.loads(line)["path"].split("/")[-1]: json.loads(line) for line in lines}
    assert set(records) == {"long.wav", "stereo44k.wav", "broken.wav", "empty.wav"}
    assert "cannot decode" in records["broken.wav"]["error"] and "no samples" in records["empty.wav"]["error"]
    good = records["long.wav"]
    assert good["label"] in good["probabilities"] and sum(good["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    seconds = len(long) / 16000
    assert len(good["windows"]) > 1
    # window times are in the file's clock: they start after leading silence and end before the file does
    assert 0 < good["windows"][0]["start"] < 0.5 and seconds - 0.5 < good["windows"][-1]["end"] <= seconds
    assert "label" in records["stereo44k.wav"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["long.png", "stereo44k.png"]

    assert main(["predict", str(checkpoint), str(folder / "long.wav")]) == 0
    assert "long.wav: " in capsys.readouterr().out


def test_evaluate_scores_each_file_exactly_as_predict_does(trained, tmp_path, capsys):
    """Short, exact-length and long recordings: the same windows, features and mean, so the same numbers."""
    _, checkpoint = trained
    rng = np.random.default_rng(0)
    seconds = {"short": 1.5, "exact": 3.0, "long": 7.3}
    files = {}
    for i, (name, length) in enumerate(seconds.items()):
        t = np.arange(int(length * 16000)) / 16000
        y = (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * (150 + 60 * i) * t)
        y += 0.02 * rng.normal(size=t.size)
        files[name] = write_audio(tmp_path / "corpus" / ("happy", "sad", "angry")[i] / "spk1" / f"{name}.wav",
                                  y.astype(np.float32))
    evaluate_checkpoint(checkpoint, tmp_path / "eval", corpora=[("folder", str(tmp_path / "corpus"))], workers=1,
                        n_bootstrap=10, progress=False)
    with open(tmp_path / "eval" / "predictions_folder.csv", newline="") as handle:
        evaluated = {row["path"]: row for row in csv.DictReader(handle)}

    capsys.readouterr()
    assert main(["predict", str(checkpoint), *files.values(), "--json", "--segments", "--batch-size", "2"]) == 0
    predicted = {r["path"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [len(predicted[files[n]]["windows"]) for n in seconds] == [1, 1, 4]  # 7.3 s: windows at 0, 1.5, 3 and 4.3 s
    for name, path in files.items():
        row, record = evaluated[path], predicted[path]
        assert row["predicted"] == record["label"]
        for c, p in record["probabilities"].items():
            assert float(row[f"p_{c}"]) == pytest.approx(p, abs=1e-5), (name, c)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["windows"] == {"duration": 3.0, "hop": 1.5, "scoring": "mean of window probabilities"}
    assert "windows of 3 s every 1.5 s" in (tmp_path / "eval" / "report.md").read_text()


def test_speaker_bootstrap_is_wider_than_file_bootstrap_when_speakers_differ():
    """Files of one speaker are not independent: ten speakers, each right or wrong as a block."""
    from spectro.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)
    speakers = np.repeat([f"s{i}" for i in range(10)], 40)
    y_true = rng.integers(0, 4, speakers.size)
    skill = rng.uniform(0.2, 0.95, 10)[np.repeat(np.arange(10), 40)]  # each speaker recognised at their own rate
    y_pred = np.where(rng.random(speakers.size) < skill, y_true, (y_true + 1) % 4)
    by_file = bootstrap_intervals(y_true, y_pred, labels=range(4), n_bootstrap=300)
    by_speaker = bootstrap_intervals(y_true, y_pred, labels=range(4), groups=speakers, n_bootstrap=300)
    for metric in ("accuracy", "uar", "macro_f1"):
        width = lambda ci, metric=metric: ci[metric][1] - ci[metric][0]
        assert width(by_speaker) > 1.5 * width(by_file), metric
