"""Recipe options of the trainer: held-out-corpus selection, mixup, weight averaging, domain-adversarial training."""

import signal

import pytest
import torch
from conftest import fit, run_config
from test_train import _signal_on_call

from spectro.checkpoint_file import load_checkpoint
from spectro.config import FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.errors import ConfigError
from spectro.evaluate import evaluate_checkpoint
from spectro.images import build_image_dataset
from spectro.training import TrainingStopped

SMALL = from_dict(FeatureConfig, {"image": {"size": 32}})


@pytest.fixture(scope="module")
def trees(synth_corpus, tmp_path_factory):
    """Two training corpora (synth-a as "synth", synth-b as folder corpus "other") and an unlabelled target."""
    import shutil

    root = tmp_path_factory.mktemp("recipe")
    utterances = scan_corpus("synth", synth_corpus).utterances
    build_image_dataset([u for u in utterances if u.language == "synth-a"], root / "a", SMALL, workers=1,
                        progress=False)
    other = root / "other_corpus"
    for u in utterances:
        if u.language == "synth-b":
            target = other / u.emotion / u.speaker / f"{u.stem}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(u.path, target)
    build_image_dataset(scan_corpus("folder", other, name="other").utterances, root / "b", SMALL, workers=1,
                        progress=False)
    return root


def config(trees, tmp_path, name="r", *, corpora=("a",), **sections) -> dict:
    sections["train"] = {"batch_size": 8, **sections.get("train", {})}
    return run_config([str(trees / t) for t in corpora], tmp_path, name=name, **sections)


def test_a_held_out_corpus_chooses_the_checkpoint(trees, tmp_path):
    data = config(trees, tmp_path, corpora=("a", "b"), data={"val_speakers": [], "val_corpus": "other"})
    summary = fit(data)
    assert summary["train_corpora"] == ["synth"] and summary["validation"]["n"] == 16  # all of "other"
    record = load_checkpoint(tmp_path / "ck" / "r" / "best.pt")["training_record"]
    assert record["val_speakers"] == ["other-synth-b01f", "other-synth-b02m"] and record["train_speakers"] == [
        "synth-a01f", "synth-a02m"]
    with pytest.raises(ConfigError, match="must be one of several training corpora"):
        fit(config(trees, tmp_path, "x", data={"val_speakers": [], "val_corpus": "emodb"}))


def test_mixup_blends_inputs_and_resumes_exactly(trees, tmp_path, monkeypatch):
    plain = fit(config(trees, tmp_path / "plain"))
    reference = fit(config(trees, tmp_path / "a", train={"mixup": 0.4}))
    assert reference["validation"] != plain["validation"] or reference["epochs_run"] != plain["epochs_run"] or \
        load_checkpoint(tmp_path / "a" / "ck" / "r" / "last.pt")["history"] != \
        load_checkpoint(tmp_path / "plain" / "ck" / "r" / "last.pt")["history"]
    restore = _signal_on_call(monkeypatch, call=2, signals=[signal.SIGINT])  # one batch per epoch: inside epoch 2
    with pytest.raises(TrainingStopped):
        fit(config(trees, tmp_path / "b", train={"mixup": 0.4}))
    restore()
    assert fit(config(trees, tmp_path / "b", train={"mixup": 0.4}), resume=True) == reference


def test_weight_averaging_is_what_validation_and_best_pt_use_and_resumes_exactly(trees, tmp_path, monkeypatch):
    reference = fit(config(trees, tmp_path / "a", train={"ema": 0.9}))
    last = load_checkpoint(tmp_path / "a" / "ck" / "r" / "last.pt")
    best = load_checkpoint(tmp_path / "a" / "ck" / "r" / "best.pt")
    averaged = {k[len("module."):]: v for k, v in last["ema"].items() if k.startswith("module.")}
    assert "ema" not in best and set(averaged) == set(last["model"])
    if best["epoch"] == last["epoch"]:
        assert all(torch.equal(best["model"][k], averaged[k]) for k in best["model"])
        assert any(not torch.equal(last["model"][k], averaged[k]) for k in last["model"])
    restore = _signal_on_call(monkeypatch, call=2, signals=[signal.SIGTERM])
    with pytest.raises(TrainingStopped):
        fit(config(trees, tmp_path / "b", train={"ema": 0.9}))
    restore()
    assert fit(config(trees, tmp_path / "b", train={"ema": 0.9}), resume=True) == reference


def test_domain_adversarial_training_with_an_unlabelled_target_is_recorded_as_transductive(trees, tmp_path,
                                                                                           synth_corpus):
    adversarial = {"weight": 0.5, "target": [str(trees / "b")]}
    data = config(trees, tmp_path, adversarial=adversarial)
    fit(data)
    last = load_checkpoint(tmp_path / "ck" / "r" / "last.pt")
    assert last["domain_head"] is not None and "domain_head" not in load_checkpoint(tmp_path / "ck" / "r" / "best.pt")
    assert last["transductive"] == ["domain-adversarial training with the unlabelled audio of other"]
    report = evaluate_checkpoint(tmp_path / "ck" / "r" / "best.pt", tmp_path / "eval",
                                 corpora=[("folder",
                                           str(trees / "other_corpus"))], corpus_options={"folder": {"name": "other"}},
                                 workers=1, progress=False, n_bootstrap=10)
    assert "domain-adversarial training with the unlabelled audio of other" in report["transductive"]
    with pytest.raises(ConfigError, match="at least two domains"):  # one corpus and no target: nothing to hide
        fit(config(trees, tmp_path / "x", adversarial={"weight": 0.5}))


def test_the_domain_branch_reverses_its_gradient():
    from spectro.adversarial import DomainHead, reversal_strength

    pooled = torch.randn(6, 8, requires_grad=True)
    head = DomainHead(8, 3, hidden=4).eval()  # no dropout: both passes see the same network
    domains = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.nn.functional.cross_entropy(head(pooled, 1.0), domains).backward()
    reversed_grad = pooled.grad.clone()
    pooled.grad = None
    torch.nn.functional.cross_entropy(head.layers(pooled), domains).backward()
    torch.testing.assert_close(reversed_grad, -pooled.grad)
    assert reversal_strength(0.0) == 0 and 0.99 < reversal_strength(1.0) < 1
