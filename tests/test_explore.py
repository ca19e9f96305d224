"""`spectro explore`: embeddings mapped to the plane, and how separable corpora are in them."""

import csv
import json
import sys

import numpy as np
import pytest
import soundfile
import torch
from conftest import SMALL_IMAGES

from spectro.checkpoint_file import load_checkpoint, save_checkpoint
from spectro.cli import main
from spectro.config import FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.data import ImageSet
from spectro.errors import ConfigError
from spectro.explore import explore_checkpoint, plane_coordinates
from spectro.image_tree import read_image_manifest
from spectro.images import build_image_dataset
from spectro.models import create_model
from spectro.scoring import recording_embeddings
from spectro.synth import generate_corpus

OUTPUTS = {"embedding.csv", "by_corpus.png", "by_emotion.png", "separability.json", "separability.png"}


def render(utterances, tree):
    build_image_dataset(utterances, tree, from_dict(FeatureConfig, SMALL_IMAGES), workers=1, progress=False)
    return tree


@pytest.fixture(scope="module")
def lowpassed(trained, tmp_path_factory):
    """The unheard synth-b corpus through an 8th-order 800 Hz low-pass filter (most of each picture dark):
    the same speakers and words, a corpus that differs from synth-b by construction, as a rendered tree."""
    from scipy.signal import butter, sosfilt

    root, _ = trained
    out = tmp_path_factory.mktemp("lowpass")
    filter_ = butter(8, 800, fs=16000, output="sos")
    for path in sorted((root / "b").rglob("*.wav")):
        samples, rate = soundfile.read(path)
        target = out / "audio" / path.relative_to(root / "b")
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(target, sosfilt(filter_, samples), rate)
    return render(scan_corpus("synth", out / "audio").utterances, out / "tree")


def test_explore_writes_its_pictures_and_csv_and_tells_apart_corpora_that_differ_by_construction(
        trained, lowpassed, tmp_path, capsys):
    root, checkpoint = trained
    out = tmp_path / "explore"
    assert main(["explore", str(checkpoint), "--corpus", f"synth={root / 'b'}", "--images", f"lowpass={lowpassed}",
                 "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert (out / "images" / "synth" / "manifest.csv").is_file()  # --corpus is rendered with the checkpoint's settings
    for picture in ("by_corpus.png", "by_emotion.png", "separability.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG") and (out / picture).stat().st_size > 5000
    with open(out / "embedding.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "corpus", "speaker", "emotion", "x", "y"]
    assert [r["corpus"] for r in rows] == ["synth"] * 24 + ["lowpass"] * 24
    assert {r["path"] for r in rows[:24]} == {u.path for _, u in read_image_manifest(out / "images" / "synth")}
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert np.isfinite(xy).all() and xy.std(axis=0).min() > 0.1
    report = json.loads((out / "separability.json").read_text())
    overall = report["domain"]["all"]
    assert overall["chance"] == 0.5 and overall["folds"] == 2  # two speakers, each held out once
    assert overall["balanced_accuracy"] >= 0.95  # measured 1.000
    assert overall["silhouette"] > 0.2  # measured 0.41
    assert all(m["recall"] >= 0.95 for m in overall["per_corpus"].values())
    assert all(m["balanced_accuracy"] >= 0.9 for m in report["domain"]["by_emotion"].values())
    assert report["domain"]["pairs"]["synth vs lowpass"]["n"] == 48
    assert report["corpora"]["synth"] == {"recordings": 24, "speakers": 2, "speakers_heard_in_training": 0,
                                          "dropped": {}, "unmatched": 0, "rejected": 0}
    printed = capsys.readouterr().out
    assert "synth vs lowpass" in printed and "within angry" in printed and "separability.json" in printed


def test_two_halves_of_one_corpus_are_near_chance(trained, tmp_path):
    """Sixteen synth-b speakers split into two gender-balanced halves of eight: nothing but speakers tells
    them apart, and speaker-grouped folds hold the test speakers out, so the domain classifier is at
    chance. Measured 0.422 (0.42-0.59 over corpus seeds 7-10) and silhouette -0.009; scored on the
    recordings it was fitted on (no held-out folds) the same classifier reaches 0.86-0.95."""
    _, checkpoint = trained
    generate_corpus(tmp_path / "audio", languages=("synth-b",), speakers_per_language=16, utterances_per_emotion=1,
                    seed=7)
    utterances = scan_corpus("synth", tmp_path / "audio").utterances
    speakers = sorted({u.speaker for u in utterances})  # b01f, b02m, ...: pairs of one female and one male
    first = {s for i, s in enumerate(speakers) if i // 2 % 2 == 0}
    halves = {"first": render([u for u in utterances if u.speaker in first], tmp_path / "first"),
              "second": render([u for u in utterances if u.speaker not in first], tmp_path / "second")}
    report = explore_checkpoint(checkpoint, tmp_path / "out", image_trees=halves, method="pca", progress=False)
    overall = report["domain"]["all"]
    assert overall["n"] == 64 and overall["speakers"] == 16 and overall["folds"] == 5
    assert abs(overall["balanced_accuracy"] - overall["chance"]) <= 0.15
    assert abs(overall["silhouette"]) < 0.05


def test_the_same_inputs_give_the_same_coordinates_numbers_and_figures(trained, lowpassed, tmp_path):
    root, checkpoint = trained
    trees = {"synth": str(render(scan_corpus("synth", root / "b").utterances, tmp_path / "synth")),
             "lowpass": str(lowpassed)}
    for out in ("one", "two"):
        explore_checkpoint(checkpoint, tmp_path / out, image_trees=trees, progress=False)
    for name in OUTPUTS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_recordings_embedding_is_the_mean_of_its_windows_pooled_features(trained, tmp_path):
    root, checkpoint = trained
    from spectro.checkpoint_file import load_trained_model

    model, state = load_trained_model(checkpoint)
    tree = tmp_path / "long"
    utterances = scan_corpus("synth", root / "b").utterances[:3]
    build_image_dataset(utterances, tree, from_dict(FeatureConfig, {**SMALL_IMAGES, "audio": {"duration": 0.5}}),
                        workers=1, progress=False)
    rows = read_image_manifest(tree)
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], state["classes"], progress=False)
    assert images.n_windows > len(images)  # several windows per recording
    embedded = recording_embeddings(model, images, device=torch.device("cpu"), batch_size=4)
    inputs, _, _ = images.batch(torch.arange(images.n_windows))
    with torch.no_grad():
        pooled = model.eval().pooled_and_logits(inputs["image"])[0]
    expected = torch.stack([pooled[images.owner == i].mean(0) for i in range(len(images))])
    assert embedded.shape == (3, model.num_features)
    torch.testing.assert_close(embedded, expected, rtol=1e-4, atol=1e-5)


def test_models_without_pooled_features_are_refused_before_anything_is_rendered(trained, tmp_path):
    root, checkpoint = trained
    state = load_checkpoint(checkpoint)
    state |= {"model_name": "mfcc_cnn1", "model": create_model("mfcc_cnn1", 4).state_dict()}
    save_checkpoint(state, tmp_path / "mfcc.pt")
    with pytest.raises(ConfigError, match="mfcc_cnn1 has no pooled features to embed"):
        explore_checkpoint(tmp_path / "mfcc.pt", tmp_path / "out", corpora=[("synth", str(root / "b"))],
                           progress=False)
    assert not (tmp_path / "out" / "images").exists()
    with pytest.raises(ConfigError, match="MfccCnn has no pooled features"):
        recording_embeddings(create_model("mfcc_cnn1", 4), None, device=torch.device("cpu"))


def test_the_map_is_seeded_and_says_what_it_needs(monkeypatch):
    vectors = np.random.default_rng(0).normal(size=(40, 16))
    for method in ("tsne", "pca"):
        first = plane_coordinates(vectors, method=method)
        assert first.shape == (40, 2) and np.array_equal(first, plane_coordinates(vectors, method=method))
    monkeypatch.setitem(sys.modules, "umap", None)  # as where umap-learn is not installed
    with pytest.raises(ConfigError, match=r"method umap needs umap-learn \(pip install umap-learn\)"):
        plane_coordinates(vectors, method="umap")
    with pytest.raises(ConfigError, match="3 recording.s. are too few to map"):
        plane_coordinates(vectors[:3])


@pytest.mark.parametrize("extra, message", [
    (["--images", "b=X", "--images", "b=Y"], "--images names 'b' twice"),
    (["--corpus", "synth={b}", "--images", "synth={b}"], "corpus name(s) ['synth'] given more than once"),
    (["--corpus", "synth={b}", "--method", "pca", "--folds", "1"], "folds=1 must be at least 2"),
    (["--method", "pca"], "nothing to explore"),
])
def test_explore_refuses_ambiguous_or_impossible_requests(trained, tmp_path, capsys, extra, message):
    root, checkpoint = trained
    argv = ["explore", str(checkpoint), *[a.format(b=root / "b") for a in extra], "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
