import json
import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from spectro import Predictor
from spectro.checkpoint_file import load_trained_model
from spectro.cli import main
from spectro.errors import ConfigError
from spectro.evaluate import evaluate_checkpoint
from spectro.export import export_checkpoint


def feature_batch(n=5, size=32, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torch_probabilities(checkpoint, x) -> np.ndarray:
    model, _ = load_trained_model(checkpoint)
    with torch.no_grad():
        return torch.softmax(model(x), 1).numpy()


def test_onnx_graph_gives_torchs_probabilities_and_describes_its_inputs(trained, tmp_path, capsys):
    _, checkpoint = trained
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    assert "onnx" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out))
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "image" and graph_input.shape[1:] == [3, 32, 32]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["spectro"])
    assert meta["classes"] == ["neutral", "happy", "sad", "angry"] and meta["inputs"]["image"]["image"]["size"] == 32
    for n in (1, 7):  # any batch size
        x = feature_batch(n)
        (probabilities,) = session.run(None, {"image": x.numpy()})
        np.testing.assert_allclose(probabilities, torch_probabilities(checkpoint, x), atol=1e-4)


def test_torchscript_module_gives_torchs_probabilities(trained, tmp_path):
    _, checkpoint = trained
    out = export_checkpoint(checkpoint, tmp_path / "model.ts", format="torchscript")
    extra = {"spectro.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        module = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["spectro.json"])["classes"] == ["neutral", "happy", "sad", "angry"]
    x = feature_batch(4)
    np.testing.assert_allclose(module(x).detach().numpy(), torch_probabilities(checkpoint, x), atol=1e-5)


def test_a_slim_checkpoint_is_smaller_and_predicts_and_evaluates_like_the_full_one(trained, tmp_path):
    root, best = trained
    full = best.parent / "last.pt"  # carries the optimiser and RNG state
    slim = export_checkpoint(full, tmp_path / "slim.pt", format="slim")
    assert slim.stat().st_size < 0.6 * full.stat().st_size
    assert not {"optimizer", "scheduler", "rng"} & set(torch.load(slim, weights_only=True))
    wavs = sorted((root / "b").rglob("*.wav"))[:3]
    for a, b in zip(Predictor.load(full).predict_files(wavs), Predictor.load(slim).predict_files(wavs)):
        assert a.probabilities == b.probabilities and a.label == b.label
    reports = [evaluate_checkpoint(c, tmp_path / name, corpora=[("synth", str(root / "b"))], workers=1,
                                   n_bootstrap=10, progress=False) for c, name in ((full, "full"), (slim, "slim"))]
    assert reports[0]["corpora"] == reports[1]["corpora"]


def test_models_without_a_graph_are_refused_with_the_alternative(tmp_path):
    from spectro.checkpoint_file import save_checkpoint
    from spectro.models import create_model

    model = create_model("lstm", 4, in_channels=15)
    save_checkpoint({"model": model.state_dict(), "classes": ["a", "b", "c", "d"], "config": {}, "model_name": "lstm",
                     "in_channels": 15, "inputs": {"image": {"feature": "frames"}}}, tmp_path / "lstm.pt")
    with pytest.raises(ConfigError, match="packed sequences.*--format slim"):
        export_checkpoint(tmp_path / "lstm.pt", tmp_path / "lstm.onnx", format="onnx")
    with pytest.raises(ConfigError, match="format='tflite' must be one of"):
        export_checkpoint(tmp_path / "lstm.pt", tmp_path / "x", format="tflite")
