import json

import pytest
import timm
import torch

from spectro.cli import main
from spectro.config import ExperimentConfig, FeatureConfig, ImageConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.errors import ConfigError
from spectro.evaluate import evaluate_checkpoint
from spectro.images import build_image_dataset
from spectro.models import create_model
from spectro.synth import generate_corpus
from spectro.training import Trainer


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """Mel-image and MFCC trees of a synth-a corpus, and a separate synth-b corpus for testing."""
    root = tmp_path_factory.mktemp("fusion")
    generate_corpus(root / "a", languages=("synth-a",), speakers_per_language=2, utterances_per_emotion=2, seed=9)
    generate_corpus(root / "b", languages=("synth-b",), speakers_per_language=1, utterances_per_emotion=2, seed=9)
    utterances = scan_corpus("synth", root / "a").utterances
    build_image_dataset(utterances, root / "mel", FeatureConfig(image=ImageConfig(size=32)), workers=1, progress=False)
    build_image_dataset(utterances, root / "mfcc", FeatureConfig(feature="mfcc"), workers=1, progress=False)
    return root


def fusion_config(root, tmp_path, **model) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "data": {"train": [{"mel": str(root / "mel"), "mfcc": str(root / "mfcc")}], "classes": 4,
                 "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_fusion", "pretrained": False, **model},
        "train": {"epochs": 2, "batch_size": 4},
        "run": {"name": "fusion", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}})


def test_a_multi_input_model_trains_evaluates_and_predicts(two_inputs, tmp_path, capsys):
    summary = Trainer(fusion_config(two_inputs, tmp_path), progress=False).fit()
    assert summary["feature"] == "mel,mfcc" and summary["epochs_run"] == 2
    checkpoint = tmp_path / "ck" / "fusion" / "best.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert set(state["inputs"]) == {"mel", "mfcc"} and state["inputs"]["mfcc"]["feature"] == "mfcc"

    report = evaluate_checkpoint(checkpoint, tmp_path / "eval", corpora=[("synth", str(two_inputs / "b"))],
                                 workers=1, n_bootstrap=20, progress=False)
    assert report["feature"] == "mel,mfcc" and report["corpora"]["synth"]["n"] == 8
    assert (tmp_path / "eval" / "images" / "mfcc" / "synth" / "manifest.csv").is_file()

    wav = sorted((two_inputs / "b").rglob("*.wav"))[0]
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(wav), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in state["classes"]


def test_inputs_must_match_the_model(two_inputs, tmp_path):
    config = fusion_config(two_inputs, tmp_path)
    config.data.train = [str(two_inputs / "mel")]
    with pytest.raises(ConfigError, match=r"reads inputs \['mel', 'mfcc'\]"):
        Trainer(config, progress=False).fit()
    config = fusion_config(two_inputs, tmp_path)
    config.model.name = "tiny_efficientnet"
    with pytest.raises(ConfigError, match="reads one input"):
        Trainer(config, progress=False).fit()


def test_branch_weights_load_per_input(tmp_path):
    path = tmp_path / "tiny.pth"
    source = timm.create_model("test_efficientnet")
    torch.save(source.state_dict(), path)
    model = create_model("tiny_fusion", 4, weights={"mel": str(path)})
    assert torch.equal(model.branches["mel"].net.conv_stem.weight, source.conv_stem.weight)
    with pytest.raises(ConfigError, match="one branch per input"):
        create_model("tiny_fusion", 4, weights=str(path))
    with pytest.raises(ConfigError, match=r"names branch\(es\) \['gd'\]"):
        create_model("tiny_fusion", 4, weights={"gd": str(path)})
