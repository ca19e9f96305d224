"""Shared fixtures: every test makes its own small audio; none reads a real corpus."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import soundfile

# Traced model copies (spectro.graph) go to a scratch folder, never the user's cache; subprocesses inherit it.
os.environ["SPECTRO_CACHE_DIR"] = tempfile.mkdtemp(prefix="spectro-test-cache-")


def tone(freq: float = 440.0, *, seconds: float = 1.0, sr: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path, y: np.ndarray, sr: int = 16000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, y, sr)
    return str(path)


def run_config(trees: list, tmp_path, *, name: str = "r", model: str = "tiny_efficientnet", **sections) -> dict:
    """A tiny run on `trees` (2 epochs of batch 4, validation speaker synth-a02m, outputs under `tmp_path`);
    each of `sections` updates that section."""
    data = {"data": {"train": trees, "classes": 4, "val_speakers": ["synth-a02m"]},
            "model": {"name": model, "pretrained": False},
            "train": {"epochs": 2, "batch_size": 4, "freeze_epochs": 0},
            "run": {"name": name, "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def fit(data: dict, **kwargs) -> dict:
    from spectro.config import ExperimentConfig, from_dict
    from spectro.training import Trainer

    return Trainer(from_dict(ExperimentConfig, data), progress=False).fit(**kwargs)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small deterministic synthetic corpus: 4 emotions x 2 languages x 2 speakers x 2 utterances."""
    from spectro.synth import generate_corpus

    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root, speakers_per_language=2, utterances_per_emotion=2, seed=3)
    return root


SMALL_IMAGES = {"image": {"size": 32}}  # feature settings of the tiny models: quick to render and to train


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model trained on language synth-a, and a synth-b corpus it has never heard."""
    from spectro.config import ExperimentConfig, FeatureConfig, from_dict
    from spectro.corpora import scan_corpus
    from spectro.images import build_image_dataset
    from spectro.synth import generate_corpus
    from spectro.training import Trainer

    root = tmp_path_factory.mktemp("evaluate")
    generate_corpus(root / "a", languages=("synth-a",), speakers_per_language=2, utterances_per_emotion=3, seed=5)
    generate_corpus(root / "b", languages=("synth-b",), speakers_per_language=2, utterances_per_emotion=3, seed=5)
    build_image_dataset(scan_corpus("synth", root / "a").utterances, root / "tree_a", from_dict(FeatureConfig,
                                                                                                SMALL_IMAGES),
                        workers=1, progress=False)
    config = from_dict(ExperimentConfig, {
        "data": {"train": [str(root / "tree_a")], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False},
        "train": {"epochs": 2, "batch_size": 8},
        "run": {"name": "tiny", "checkpoint_dir": str(root / "checkpoints"), "log_dir": str(root / "runs")}})
    Trainer(config, progress=False).fit()
    return root, root / "checkpoints" / "tiny" / "best.pt"


@pytest.fixture(scope="session")
def sharp(trained, tmp_path_factory):
    """The `trained` checkpoint with its classifier's weights x1000. The trained model's probabilities are
    nearly uniform (they move by 1e-4 between recordings); these move by tenths, so a test comparing answers
    with `Predictor` catches an answer that is another recording's, or a constant."""
    from spectro.checkpoint_file import load_checkpoint, save_checkpoint

    state = load_checkpoint(trained[1])
    state["model"] = {**state["model"], "net.classifier.weight": state["model"]["net.classifier.weight"] * 1000}
    path = tmp_path_factory.mktemp("sharp") / "sharp.pt"
    save_checkpoint(state, path)
    return path
