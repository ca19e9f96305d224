import json

import numpy as np
import pytest
import torch

from spectro.cli import main
from spectro.config import ExperimentConfig, FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.errors import ConfigError
from spectro.image_tree import load_recording, read_image_manifest
from spectro.images import build_image_dataset
from spectro.models import create_model
from spectro.training import Trainer


@pytest.fixture(scope="module")
def mfcc_tree(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("mfcc") / "synth"
    build_image_dataset(scan_corpus("synth", synth_corpus).utterances, out, FeatureConfig(feature="mfcc"),
                        workers=2, progress=False)
    return out


def test_mfcc_trees_hold_standardised_float16_matrices(mfcc_tree):
    rows = read_image_manifest(mfcc_tree)
    assert len(rows) == 32 and all(path.with_name(path.name + "__w000.npy").is_file() for path, _ in rows)
    (matrix,) = load_recording(rows[0][0])  # 3 s recordings: one window
    assert matrix.dtype == np.float16 and matrix.shape == (40, 301)
    np.testing.assert_allclose(matrix.astype(np.float32).mean(axis=1), 0, atol=1e-2)
    np.testing.assert_allclose(matrix.astype(np.float32).std(axis=1), 1, atol=1e-2)


@pytest.mark.parametrize("name", ["mfcc_cnn1", "mfcc_cnn2"])
def test_mfcc_cnns_classify_any_fixed_length_and_refuse_images(name):
    model = create_model(name, 8, drop_rate=0.1).eval()
    assert model(torch.randn(2, 40, 301)).shape == (2, 8)
    assert model(torch.randn(2, 40, 120)).shape == (2, 8)
    with pytest.raises(ConfigError, match="must be \\(batch, 40, frames\\)"):
        model(torch.rand(2, 3, 224, 224))
    with pytest.raises(ConfigError, match="no ImageNet pretraining"):
        create_model(name, 8, pretrained=True)


def test_model_two_is_the_larger_batch_normalised_one():
    one, two = create_model("mfcc_cnn1", 8), create_model("mfcc_cnn2", 8)
    assert sum(p.numel() for p in two.parameters()) > 3 * sum(p.numel() for p in one.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in two.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in one.modules())


def test_an_mfcc_cnn_trains_checkpoints_and_predicts(mfcc_tree, tmp_path, synth_corpus, capsys):
    config = from_dict(ExperimentConfig, {
        "data": {"train": [str(mfcc_tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "mfcc_cnn1", "pretrained": False, "drop_rate": 0.1},
        "train": {"epochs": 2, "batch_size": 8, "freeze_epochs": 1},
        "run": {"name": "cnn", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}})
    summary = Trainer(config, progress=False).fit()
    assert summary["feature"] == "mfcc" and summary["epochs_run"] == 2
    wav = sorted(synth_corpus.rglob("*.wav"))[0]
    assert main(["predict", str(tmp_path / "ck" / "cnn" / "best.pt"), str(wav), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["label"] in ("neutral", "happy", "sad", "angry")
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
